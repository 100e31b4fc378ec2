"""LeRobotDataset v3.0 export of a talk-and-tweak HDF5 dataset (lerobot 0.4.4, images not video).

:func:`export_lerobot` writes a folder that ``LeRobotDataset(repo_id, root=DIR)`` loads offline, with
per-frame ``intervention`` and ``refinement_command_id`` (vocabulary in ``DIR/meta/refinement_commands.json``,
read back by :func:`read_lerobot_commands`). The destination is checked with
:func:`data_tools.outputs.check_output` and the folder is built beside it and renamed into place on
success (:func:`data_tools.atomic.atomic_dir`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from data_tools.atomic import atomic_dir
from data_tools.errors import DataToolsError
from data_tools.export_common import CARD_TAGS, episodes_with_images, export_summary, progress_bar
from data_tools.hdf5_format import Episode
from data_tools.hub import check_repo_id
from data_tools.outputs import check_output
from data_tools.stats import DatasetSummary, format_markdown
from data_tools.talk_tweak import NULL_COMMAND, command_vocabulary

COMMANDS_FILE = "meta/refinement_commands.json"


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
        for ep, ep_images in episodes_with_images(path, s):
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
    check_repo_id(repo_id)
    check_output(out_dir, [path], force=force, folder=True)
    s = export_summary(path)
    fps = _lerobot_fps(s)
    vocab = lerobot_command_vocabulary(s)
    with _quiet_libraries():
        from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401 -- first import, noise hidden

    with (
        atomic_dir(out_dir, force) as tmp,
        _quiet_libraries(),
        progress_bar(s.steps, "export-lerobot", progress) as bar,
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


def is_lerobot_dataset(folder: str | os.PathLike) -> bool:
    """True when ``folder/meta/info.json`` declares a LeRobot ``codebase_version``."""
    p = Path(folder) / "meta" / "info.json"
    try:
        return "codebase_version" in json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False

