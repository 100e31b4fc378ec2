"""Hugging Face ``datasets`` export of a talk-and-tweak HDF5 dataset: :func:`export_hf`.

One row per step, parquet shards under ``DIR/data/`` and a dataset card ``DIR/README.md`` (YAML front
matter with ``configs``/``dataset_info``), loadable offline with ``datasets.load_dataset(DIR)``. The
destination is checked with :func:`data_tools.outputs.check_output` and the folder is built beside it
and renamed into place on success (:func:`data_tools.atomic.atomic_dir`).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from data_tools.atomic import atomic_dir
from data_tools.export_common import CARD_TAGS, episodes_with_images, export_summary, progress_bar
from data_tools.hdf5_format import Episode
from data_tools.outputs import check_output
from data_tools.stats import DatasetSummary, format_markdown
from data_tools.talk_tweak import NULL_COMMAND

HF_SPLIT = "train"
_SHARD_BYTES = 256 * 2**20  # raw bytes buffered per parquet shard


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M" if n > 10_000_000 else "1M<n<10M"


def _front_matter(meta: dict) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _hf_features(s: DatasetSummary, image_keys: list[str]):
    import datasets

    f: dict[str, Any] = {
        "episode": datasets.Value("string"),
        "episode_id": datasets.Value("string"),
        "task": datasets.Value("string"),
        "kind": datasets.Value("string"),
        "robot": datasets.Value("string"),
        "step": datasets.Value("int64"),
    }
    for key, d in s.lowdim.items():
        f[f"observation.{key}"] = datasets.List(datasets.Value("float32"), length=d)
    for key in image_keys:
        f[f"observation.{key}"] = datasets.Image()
    f["action"] = datasets.List(datasets.Value("float32"), length=s.action_dim)
    f["policy_action"] = datasets.List(datasets.Value("float32"), length=s.action_dim)
    f["reward"] = datasets.Value("float32")
    f["done"] = datasets.Value("bool")
    f["intervention"] = datasets.Value("bool")
    f["refinement_command"] = datasets.Value("string")
    return datasets.Features(f)


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _fixed_list(arr: np.ndarray):
    import pyarrow as pa

    arr = np.ascontiguousarray(arr, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), type=pa.float32()), arr.shape[1])


def _episode_columns(ep: Episode, s: DatasetSummary, image_keys: list[str], pool=None) -> dict[str, Any]:
    """One episode as pyarrow arrays, one entry per step; PNG encoding on ``pool`` if given."""
    import pyarrow as pa

    n = ep.num_samples
    cols: dict[str, Any] = {
        "episode": pa.array([ep.name] * n, pa.string()),
        "episode_id": pa.array([ep.episode_id] * n, pa.string()),
        "task": pa.array([ep.task] * n, pa.string()),
        "kind": pa.array([ep.kind] * n, pa.string()),
        "robot": pa.array([ep.robot] * n, pa.string()),
        "step": pa.array(np.arange(n, dtype=np.int64)),
    }
    for key in s.lowdim:
        cols[f"observation.{key}"] = _fixed_list(ep.obs[key])
    for key in image_keys:
        frames = ep.obs[key]
        cols[f"observation.{key}"] = pa.StructArray.from_arrays(
            [pa.array(list(pool.map(_png, frames) if pool else map(_png, frames)), pa.binary()),
             pa.array([None] * n, pa.string())],
            names=["bytes", "path"],
        )
    cols["action"] = _fixed_list(ep.actions)
    cols["policy_action"] = _fixed_list(ep.policy_actions)
    cols["reward"] = pa.array(ep.rewards.astype(np.float32))
    cols["done"] = pa.array(ep.dones.astype(bool))
    cols["intervention"] = pa.array(ep.intervention.astype(bool))
    cols["refinement_command"] = pa.array(list(ep.refinement_command), pa.string())
    return cols


def _hf_card(s: DatasetSummary, features, image_keys: list[str], shards: int, source_name: str) -> str:
    meta = {
        "tags": list(CARD_TAGS),
        "task_categories": ["robotics"],
        "size_categories": [_size_category(s.steps)],
        "configs": [{"config_name": "default", "data_files": [{"split": HF_SPLIT, "path": "data/train-*"}]}],
        "dataset_info": {
            "features": features._to_yaml_list(),
            "splits": [{"name": HF_SPLIT, "num_examples": s.steps}],
        },
    }
    rows = [
        ("episode", "string", "", "episode name in the source HDF5 (`demo_<k>`)"),
        ("episode_id", "string", "", "episode id recorded by the runtime"),
        ("task", "string", "", "task instruction"),
        ("kind", "string", "", "`demo` (offline demonstration) or `online` (policy rollout)"),
        ("robot", "string", "", "robot name"),
        ("step", "int64", "", "step index within the episode, from 0"),
    ]
    for key, d in s.lowdim.items():
        rows.append((f"observation.{key}", "list<float32>", f"({d},)", "low-dim observation"))
    for key in image_keys:
        rows.append((f"observation.{key}", "Image (PNG)", "H x W x 3 uint8", "camera image"))
    rows += [
        ("action", "list<float32>", f"({s.action_dim},)", "executed action (the human's where intervened)"),
        ("policy_action", "list<float32>", f"({s.action_dim},)", "the policy's proposal; NaN where there was none"),
        ("reward", "float32", "", "reward"),
        ("done", "bool", "", "episode end"),
        ("intervention", "bool", "", "a human operator overrode the policy at this step"),
        ("refinement_command", "string", "", f"talk-and-tweak refinement command, `{NULL_COMMAND}` where none"),
    ]
    body = [
        "# Dual-actor talk-and-tweak dataset",
        "",
        f"Exported from `{source_name}` by `python -m data_tools export-hf`: one row per step, "
        f"{shards} parquet shard(s) under `data/`, split `{HF_SPLIT}`.",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("<this folder or repo id>", split="train")',
        "```",
        "",
        "## Schema",
        "",
        "| column | type | shape | meaning |",
        "|---|---|---|---|",
        *[f"| `{c}` | {t} | {sh} | {m} |" for c, t, sh, m in rows],
        "",
    ]
    return _front_matter(meta) + "\n" + "\n".join(body) + "\n" + format_markdown(s)


def export_hf(
    path: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False, progress: bool = True
) -> Path:
    """Export the HDF5 dataset ``path`` as a Hugging Face ``datasets`` folder ``out_dir``.

    One row per step, columns: ``episode``, ``episode_id``, ``task``, ``kind``, ``robot``,
    ``step`` (int64), ``observation.<key>`` (fixed-length float32 lists for low-dim keys,
    ``datasets.Image()`` PNG for uint8 image keys), ``action`` / ``policy_action`` (float32 (A,),
    NaN kept), ``reward`` (float32), ``done`` / ``intervention`` (bool), ``refinement_command``
    (string). Writes ``out_dir/data/train-XXXXX-of-YYYYY.parquet`` and a dataset card
    ``out_dir/README.md`` (configs, features, schema, counts, command histogram), so that
    ``datasets.load_dataset(str(out_dir))`` loads it offline. Values round-trip exactly.

    Refuses an existing ``out_dir`` unless ``force``. Raises :class:`DataToolsError` (bad
    destination, empty dataset, episodes with different schemas) or ``DatasetFormatError``.
    Returns ``out_dir``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path, out_dir = Path(path), Path(out_dir)
    check_output(out_dir, [path], force=force, folder=True)
    s = export_summary(path)
    with (
        atomic_dir(out_dir, force) as tmp,
        progress_bar(s.steps, "export-hf", progress) as bar,
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,  # PIL releases the GIL
    ):
        data_dir = tmp / "data"
        data_dir.mkdir()
        features = schema = image_keys = None
        buf: list[pa.Table] = []
        buf_bytes = 0
        shard_paths: list[Path] = []

        def flush() -> None:
            nonlocal buf, buf_bytes
            if not buf:
                return
            shard = data_dir / f"train-{len(shard_paths):05d}.parquet"
            pq.write_table(pa.concat_tables(buf), shard)
            shard_paths.append(shard)
            buf, buf_bytes = [], 0

        for ep, ep_images in episodes_with_images(path, s):
            if features is None:
                image_keys = list(ep_images)
                features = _hf_features(s, image_keys)
                schema = features.arrow_schema
            cols = _episode_columns(ep, s, image_keys, pool)
            buf.append(pa.Table.from_arrays([cols[name] for name in schema.names], schema=schema))
            buf_bytes += buf[-1].nbytes
            if buf_bytes >= _SHARD_BYTES:
                flush()
            bar.update(ep.num_samples)
        flush()
        for i, shard in enumerate(shard_paths):
            shard.rename(data_dir / f"train-{i:05d}-of-{len(shard_paths):05d}.parquet")
        card = _hf_card(s, features, image_keys, len(shard_paths), path.name)
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return out_dir
