"""Publishing a talk-and-tweak HDF5 dataset: Hugging Face ``datasets``, LeRobotDataset v3.0, the Hub.

* :func:`export_hf` -- one row per step, parquet shards under ``DIR/data/`` and a dataset card
  ``DIR/README.md`` (YAML front matter with ``configs``/``dataset_info``), loadable offline with
  ``datasets.load_dataset(DIR)``.
* :func:`export_lerobot` -- a LeRobotDataset v3.0 (lerobot 0.4.4, images not video) that
  ``LeRobotDataset(repo_id, root=DIR)`` loads offline; per-frame ``intervention`` and
  ``refinement_command_id`` (vocabulary in ``DIR/meta/refinement_commands.json``).
* :func:`push` -- upload an exported folder to a Hub dataset repo through ``huggingface_hub``.
  The token is resolved by ``huggingface_hub`` (``HF_TOKEN``, ``hf auth login``) and is never
  printed or logged.

Both exporters check the destination with :func:`data_tools.outputs.check_output`, build the
whole folder in a temporary directory beside ``out_dir`` (:func:`data_tools.atomic.atomic_dir`)
and rename it into place on success: a failure never leaves a half-written export behind. The
HDF5 layout is read only through :mod:`data_tools.hdf5_format`; the counts come from
:func:`data_tools.stats.summarize` (``summarize`` and ``DatasetSummary`` are importable from
here too). The command line is in :mod:`data_tools.cli`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from data_tools.atomic import atomic_dir
from data_tools.errors import DataToolsError
from data_tools.hdf5_format import Episode, read_episodes
from data_tools.outputs import check_output
from data_tools.stats import DatasetSummary, format_markdown, summarize
from data_tools.talk_tweak import NULL_COMMAND, command_vocabulary

log = logging.getLogger(__name__)

CARD_TAGS = ("dual-actor", "talk-and-tweak", "robotics")
LEROBOT_TAG = "LeRobot"
COMMANDS_FILE = "meta/refinement_commands.json"
HF_SPLIT = "train"
_SHARD_BYTES = 256 * 2**20  # raw bytes buffered per parquet shard


class HubUnreachableError(DataToolsError):
    """The Hub cannot be used: offline mode is on, or it cannot be reached."""


# --------------------------------------------------------------------------------------------
# Reading the source: one pass without images (data_tools.stats), then the episodes with images.


def _export_summary(path: Path) -> DatasetSummary:
    """:func:`data_tools.stats.summarize` with one schema required and at least one episode.

    Raises :class:`DataToolsError` when the dataset has no episodes or its episodes disagree on
    the low-dim observation keys / sizes or the action size, and
    :class:`~data_tools.hdf5_format.DatasetFormatError` when the file does not follow the layout.
    """
    s = summarize(path, one_schema=True)
    if s.episodes == 0:
        raise DataToolsError(f"{path}: the dataset has no episodes; nothing to export")
    return s


def _episodes_with_images(path: Path, s: DatasetSummary) -> Iterator[tuple[Episode, dict[str, tuple]]]:
    """Stream episodes with images; check every episode has the first one's image keys/shapes."""
    images: dict[str, tuple] | None = None
    for ep in read_episodes(path, load_images=True):
        ep_images = {k: tuple(v.shape[1:]) for k, v in ep.obs.items() if k not in s.lowdim}
        if images is None:
            images = ep_images
        elif set(ep_images) != set(images):
            raise DataToolsError(
                f"{path}:/data/{ep.name}/obs: image keys {sorted(ep_images)} differ from the first "
                f"episode's {sorted(images)}; an export needs one schema"
            )
        yield ep, ep_images


# --------------------------------------------------------------------------------------------
# Library noise and progress.


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Hide the ``datasets`` per-episode progress bars and lerobot's bool-histogram warning."""
    import datasets

    was_enabled = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Converting input from bool", category=RuntimeWarning)
            yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _progress(total: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not progress, dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# Dataset cards.


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "n>10M" if n > 10_000_000 else "1M<n<10M"


def _front_matter(meta: dict) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


# --------------------------------------------------------------------------------------------
# Hugging Face datasets export.


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
    s = _export_summary(path)
    with (
        atomic_dir(out_dir, force) as tmp,
        _progress(s.steps, "export-hf", progress) as bar,
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

        for ep, ep_images in _episodes_with_images(path, s):
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


# --------------------------------------------------------------------------------------------
# LeRobotDataset v3.0 export.


def _lerobot_features(s: DatasetSummary, images: dict[str, tuple]) -> dict:
    names = [f"{key}_{i}" for key, d in s.lowdim.items() for i in range(d)]
    feats: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
    }
    for key, shape in images.items():
        feats[f"observation.images.{key}"] = {
            "dtype": "image", "shape": tuple(int(x) for x in shape), "names": ["height", "width", "channels"],
        }
    feats["action"] = {
        "dtype": "float32", "shape": (s.action_dim,), "names": [f"action_{i}" for i in range(s.action_dim)],
    }
    feats["next.reward"] = {"dtype": "float32", "shape": (1,), "names": None}
    feats["next.done"] = {"dtype": "bool", "shape": (1,), "names": None}
    feats["intervention"] = {"dtype": "int64", "shape": (1,), "names": None}
    feats["refinement_command_id"] = {"dtype": "int64", "shape": (1,), "names": None}
    return feats


def lerobot_command_vocabulary(s: DatasetSummary) -> list[str]:
    """``command_vocabulary()`` (``"[null]"`` first) followed by any other command in ``s``."""
    vocab = command_vocabulary()
    known = set(vocab)
    vocab += [c for c in s.command_order if c not in known]
    return vocab


def _lerobot_fps(s: DatasetSummary) -> int:
    fps = int(round(s.fps))
    if fps <= 0 or not math.isclose(s.fps, fps, abs_tol=1e-6):
        raise DataToolsError(f"{s.path}: fps {s.fps:g} is not a positive integer, which LeRobotDataset requires")
    return fps


def _lerobot_card(s: DatasetSummary, info: dict, repo_id: str, source_name: str) -> str:
    from lerobot.datasets.utils import create_lerobot_dataset_card

    card = create_lerobot_dataset_card(tags=list(CARD_TAGS), dataset_info=info, repo_id=repo_id)
    extra = [
        "",
        "## Talk-and-tweak",
        "",
        f"Exported from `{source_name}` by `python -m data_tools export-lerobot`. Per frame, "
        "`intervention` (int64, 1 where a human operator overrode the policy) and "
        "`refinement_command_id` (int64, an index into `commands` of "
        f"[`{COMMANDS_FILE}`]({COMMANDS_FILE}); 0 is `{NULL_COMMAND}`). `observation.state` concatenates "
        f"the low-dim observations {', '.join(f'`{k}` ({d})' for k, d in s.lowdim.items())} in that order.",
        "",
        format_markdown(s),
    ]
    return str(card) + "\n" + "\n".join(extra)


def _lerobot_frame(ep: Episode, t: int, state: np.ndarray, index: dict[str, int], images) -> dict:
    """Step ``t`` of ``ep`` as a LeRobotDataset frame."""
    frame = {
        "observation.state": state[t],
        "action": ep.actions[t],
        "next.reward": ep.rewards[t : t + 1],
        "next.done": ep.dones[t : t + 1],
        "intervention": np.array([int(ep.intervention[t])], dtype=np.int64),
        "refinement_command_id": np.array([index[ep.refinement_command[t]]], dtype=np.int64),
        "task": ep.task,
    }
    for key in images:
        frame[f"observation.images.{key}"] = ep.obs[key][t]
    return frame


def _lerobot_write(
    path: Path, s: DatasetSummary, root: Path, repo_id: str, fps: int, index: dict[str, int], bar
) -> None:
    """Create the LeRobotDataset at ``root`` and add every episode, frame by frame; finalize it."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    robot_type = s.robots[0] if len(s.robots) == 1 and s.robots[0] != "unknown" else None
    ds = None
    images: dict[str, tuple] = {}
    try:
        for ep, ep_images in _episodes_with_images(path, s):
            if ds is None:
                images = ep_images
                ds = LeRobotDataset.create(
                    repo_id=repo_id, fps=fps, root=root, features=_lerobot_features(s, images),
                    robot_type=robot_type, use_videos=False,
                )
            elif ep_images != images:
                raise DataToolsError(
                    f"{path}:/data/{ep.name}/obs: image shapes {ep_images} differ from the first "
                    f"episode's {images}; LeRobotDataset needs one shape per camera"
                )
            state = np.concatenate([ep.obs[k] for k in s.lowdim], axis=1).astype(np.float32)
            for t in range(ep.num_samples):
                ds.add_frame(_lerobot_frame(ep, t, state, index, images))
                bar.update(1)
            ds.save_episode()
    except BaseException:
        if ds is not None:  # close lerobot's parquet writers; the staging folder is deleted
            with contextlib.suppress(Exception):
                ds.finalize()
        raise
    ds.finalize()


def _lerobot_finalize(
    root: Path, tmp: Path, s: DatasetSummary, vocab: list[str], repo_id: str, source_name: str
) -> None:
    """Add the command vocabulary and the card, drop lerobot's empty image scratch folder and
    move the dataset from ``root`` up into the staging folder ``tmp``."""
    info = json.loads((root / "meta" / "info.json").read_text())
    (root / COMMANDS_FILE).write_text(
        json.dumps({"feature": "refinement_command_id", "null_command": NULL_COMMAND, "commands": vocab},
                   indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    (root / "README.md").write_text(_lerobot_card(s, info, repo_id, source_name), encoding="utf-8")
    images_dir = root / "images"  # lerobot's per-frame PNG scratch space, emptied by save_episode
    if images_dir.is_dir() and not any(p.is_file() for p in images_dir.rglob("*")):
        shutil.rmtree(images_dir)
    for child in root.iterdir():
        os.replace(child, tmp / child.name)
    root.rmdir()


def export_lerobot(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    repo_id: str,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Export the HDF5 dataset ``path`` as a LeRobotDataset v3.0 in ``out_dir`` (lerobot 0.4.4).

    ``LeRobotDataset.create(use_videos=False) -> add_frame per step -> save_episode -> finalize``.
    Features: ``observation.state`` float32 (D,) = the low-dim observation keys concatenated in
    file order (names ``<key>_<i>``), ``observation.images.<key>`` ("image", (H, W, 3)),
    ``action`` float32 (A,), ``next.reward`` float32 (1,), ``next.done`` bool (1,),
    ``intervention`` int64 (1,) (0/1) and ``refinement_command_id`` int64 (1,), an index into the
    vocabulary written to ``out_dir/meta/refinement_commands.json``
    (``{"feature", "null_command", "commands": [...]}``; ``commands`` is
    :func:`~data_tools.talk_tweak.command_vocabulary` followed by any other command present).
    ``policy_actions`` are not exported (LeRobot statistics do not allow NaN). Also writes the
    dataset card ``out_dir/README.md``. ``LeRobotDataset(repo_id, root=out_dir)`` loads it with
    ``HF_HUB_OFFLINE=1``.

    Raises :class:`DataToolsError` (existing ``out_dir`` without ``force``, empty dataset,
    non-integer fps, episodes with different schemas or image sizes) or ``DatasetFormatError``.
    Returns ``out_dir``.
    """
    path, out_dir = Path(path), Path(out_dir)
    if not repo_id or "/" not in repo_id:
        raise DataToolsError(f"repo id {repo_id!r}: expected '<user or org>/<name>'")
    check_output(out_dir, [path], force=force, folder=True)
    s = _export_summary(path)
    fps = _lerobot_fps(s)
    vocab = lerobot_command_vocabulary(s)
    with _quiet_libraries():
        from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401 -- first import, noise hidden

    with (
        atomic_dir(out_dir, force) as tmp,
        _quiet_libraries(),
        _progress(s.steps, "export-lerobot", progress) as bar,
    ):
        root = tmp / "dataset"
        _lerobot_write(path, s, root, repo_id, fps, {c: i for i, c in enumerate(vocab)}, bar)
        _lerobot_finalize(root, tmp, s, vocab, repo_id, path.name)
    return out_dir


def read_lerobot_commands(out_dir: str | os.PathLike) -> list[str]:
    """The refinement-command vocabulary of an :func:`export_lerobot` folder (index = id)."""
    p = Path(out_dir) / COMMANDS_FILE
    try:
        return list(json.loads(p.read_text(encoding="utf-8"))["commands"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataToolsError(f"{p}: not a refinement-command vocabulary ({e})") from None


# --------------------------------------------------------------------------------------------
# Hub upload.

_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")
_TRUE = {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().upper() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _redact(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_RE.sub("hf_***", text)


def _unreachable_types() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import OfflineModeIsEnabled

    types: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        import requests

        types += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    with contextlib.suppress(ImportError):
        import httpx

        types += [httpx.TransportError]
    return tuple(types)


def is_lerobot_dataset(folder: str | os.PathLike) -> bool:
    """True when ``folder/meta/info.json`` declares a LeRobot ``codebase_version``."""
    p = Path(folder) / "meta" / "info.json"
    try:
        return "codebase_version" in json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _card_text(folder: Path, lerobot: bool, repo_id: str) -> tuple[str, bool]:
    """The README to publish (tags ensured) and whether it differs from the one on disk."""
    from huggingface_hub import DatasetCard

    readme = folder / "README.md"
    wanted = ([LEROBOT_TAG] if lerobot else []) + list(CARD_TAGS)
    if readme.is_file():
        original = readme.read_text(encoding="utf-8")
        card = DatasetCard(original)
    elif lerobot:
        from lerobot.datasets.utils import create_lerobot_dataset_card

        original = None
        info = json.loads((folder / "meta" / "info.json").read_text(encoding="utf-8"))
        card = create_lerobot_dataset_card(tags=list(CARD_TAGS), dataset_info=info, repo_id=repo_id)
    else:
        raise DataToolsError(f"{folder}: no README.md dataset card (export with export-hf / export-lerobot)")
    tags = list(card.data.tags or [])
    missing = [t for t in wanted if t not in tags]
    if missing or original is None:
        card.data.tags = tags + missing
        return str(card), True
    return original, False


def _check_push(folder: Path, repo_id: str, kind: str) -> bool:
    """Validate the arguments and the folder; return whether it is a LeRobotDataset."""
    if kind != "dataset":
        raise DataToolsError(f"kind {kind!r}: only 'dataset' repositories are supported")
    if not repo_id or "/" not in repo_id:
        raise DataToolsError(f"repo id {repo_id!r}: expected '<user or org>/<name>'")
    if not folder.is_dir():
        raise DataToolsError(f"{folder}: no such folder")
    lerobot = is_lerobot_dataset(folder)
    if not lerobot and not (folder / "README.md").is_file():
        raise DataToolsError(
            f"{folder}: neither a LeRobotDataset (meta/info.json) nor a datasets export (README.md)"
        )
    check_online()
    return lerobot


def check_online() -> None:
    """Raise :class:`HubUnreachableError` when ``HF_HUB_OFFLINE`` is on (before any Hub call)."""
    if _hub_offline():
        raise HubUnreachableError(
            "Hugging Face Hub is unreachable / offline mode is on: HF_HUB_OFFLINE is set; "
            "unset it (or set HF_HUB_OFFLINE=0) to push"
        )


@contextlib.contextmanager
def hub_errors(repo_id: str, token: str | None) -> Iterator[None]:
    """Hub calls inside the block: an unreachable Hub -> :class:`HubUnreachableError`, a refusal ->
    :class:`DataToolsError`, both with every token redacted from the message (datasets and models alike)."""
    from huggingface_hub.errors import HfHubHTTPError

    secrets = (token, os.environ.get("HF_TOKEN"))
    try:
        yield
    except _unreachable_types() as e:
        raise HubUnreachableError(
            f"Hugging Face Hub is unreachable / offline mode is on: {_redact(str(e), *secrets)}"
        ) from None
    except HfHubHTTPError as e:
        raise DataToolsError(f"the Hub refused the push to {repo_id}: {_redact(str(e), *secrets)}") from None


def hub_api(token: str | None):
    """An ``HfApi``; refuse early when ``huggingface_hub`` cannot find any token."""
    import huggingface_hub

    if token is None and huggingface_hub.get_token() is None:
        raise DataToolsError("no Hugging Face token: set HF_TOKEN or run `hf auth login` before pushing")
    return huggingface_hub.HfApi(token=token)


def _upload(
    api: Any, folder: Path, repo_id: str, private: bool, token: str | None, lerobot: bool,
    card_text: str, card_changed: bool,
) -> Any:
    """create_repo, upload_folder, the tagged card if it changed, and LeRobot's version tag."""
    from huggingface_hub.errors import RevisionNotFoundError

    ignore = [".*.tmp", ".*.tmp/**"]
    if lerobot:
        ignore.append("images/**")
    if card_changed:
        ignore.append("README.md")
    url = api.create_repo(repo_id, token=token, private=private, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="dataset", token=token,
        ignore_patterns=ignore, commit_message="Upload dataset with data_tools",
    )
    if card_changed:
        api.upload_file(
            path_or_fileobj=card_text.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
            repo_type="dataset", token=token, commit_message="Add dataset card",
        )
    if lerobot:
        version = json.loads((folder / "meta" / "info.json").read_text(encoding="utf-8"))["codebase_version"]
        with contextlib.suppress(RevisionNotFoundError):
            api.delete_tag(repo_id, tag=version, token=token, repo_type="dataset")
        api.create_tag(repo_id, tag=version, token=token, repo_type="dataset")
    return url


def push(
    dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    kind: str = "dataset",
    token: str | None = None,
    api: Any = None,
) -> str:
    """Upload an exported folder ``dir`` to the Hub dataset repo ``repo_id``; return its URL.

    ``create_repo(repo_type="dataset", private=private, exist_ok=True)`` then ``upload_folder``.
    The card ``README.md`` gets the tags "dual-actor", "talk-and-tweak", "robotics" (and
    "LeRobot" for a LeRobotDataset, whose ``images/`` scratch folder is skipped and whose repo
    gets the codebase-version tag, e.g. ``v3.0``, that ``LeRobotDataset`` looks for). When the
    card on disk lacks tags, the folder is uploaded without it and the tagged card separately; the
    folder itself is never modified. ``kind`` is the Hub repo type (only "dataset").

    ``token``: None lets ``huggingface_hub`` resolve it (``HF_TOKEN``, ``hf auth login``); it is
    never printed, logged or put in an error message. ``api``: an ``HfApi``-like object (tests).

    Raises :class:`HubUnreachableError` when ``HF_HUB_OFFLINE`` is on or the Hub cannot be
    reached, :class:`DataToolsError` for a bad folder, no token, or a refusal by the Hub.
    """
    folder = Path(dir)
    lerobot = _check_push(folder, repo_id, kind)
    card_text, card_changed = _card_text(folder, lerobot, repo_id)

    if api is None:
        api = hub_api(token)
    log.info("pushing %s to dataset repo %s (private=%s)", folder, repo_id, private)
    with hub_errors(repo_id, token):
        url = _upload(api, folder, repo_id, private, token, lerobot, card_text, card_changed)
    url = str(url) if url else f"https://huggingface.co/datasets/{repo_id}"
    log.info("pushed %s to %s", folder, url)
    return url


# --------------------------------------------------------------------------------------------
# Command line.


def add_subcommands(subparsers) -> None:
    """Register ``export-hf``, ``export-lerobot`` and ``push`` on an ``argparse`` subparsers
    object (see :func:`data_tools.cli.add_publish_subcommands`)."""
    from data_tools.cli import add_publish_subcommands

    add_publish_subcommands(subparsers)
