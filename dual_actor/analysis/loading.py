"""Reading what the notebooks analyse: run folders, TensorBoard scalars and HDF5 datasets. Files in, plain dicts,
lists and arrays out (no tables, no figures).

Runs: :func:`load_run` reads one run folder (``eval.json``, ``eval_commands.json``, ``eval_B.json``,
``summary.json``, ``learning_curve.json``, ``authority.json``, ``chain.json``, ``chain_commands.json``; a missing
file is None), :func:`load_arms` the ``<arm>-s<seed>`` folders of a run root, :func:`read_scalars` one TensorBoard
scalar, :func:`run_scalars` one scalar of a run (its ``tb/`` or its record's ``scalars.json``). :func:`keep_record`
copies what a run's results are (its JSON files, config and chosen scalars, no checkpoints or policies) into a small
folder to keep with the repository (docs/runs/): the notebooks read a record like a run folder. Datasets: :func:`load_episodes` (low-dimensional arrays), :func:`read_frames` (a strip of camera frames),
and what a dataset records about its labelling (:func:`translation_scale`, :func:`labelling_params`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from data_tools.hdf5_format import Episode, dataset_info, read_episodes


REPO_ROOT = Path(__file__).resolve().parents[2]
"""Relative paths in the notebooks' parameters are relative to this folder (as ``run_root=checkpoints`` is)."""


def repo_path(path: str | os.PathLike) -> Path:
    """``path`` itself if absolute, else relative to :data:`REPO_ROOT`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def load_run(run: str | os.PathLike) -> dict:
    """One run folder's results (missing files are None; no curve: ``[]``; no probes: ``[]``)."""
    run = Path(run)
    curve = _load(run / "learning_curve.json")
    return {"name": run.name, "path": run, "eval": _load(run / "eval.json"), "eval_warmup": _load(run / "eval_warmup.json"),
            "eval_commands": _load(run / "eval_commands.json"), "eval_B": _load(run / "eval_B.json"),
            "summary": _load(run / "summary.json"), "curve": curve["points"] if curve else [],
            "fps": (curve or {}).get("fps", 10.0), "authority": _load(run / "authority.json") or [],
            "chain": _load(run / "chain.json"), "chain_commands": _load(run / "chain_commands.json")}


RECORD_FILES: tuple[str, ...] = ("config.yaml", "eval.json", "eval_warmup.json", "eval_commands.json", "eval_B.json",
                                  "summary.json", "learning_curve.json", "authority.json", "chain.json",
                                  "chain_commands.json")
"""What :func:`keep_record` keeps of a run folder (those present; ``eval.json`` is required)."""
SCALARS_FILE = "scalars.json"
"""A record's TensorBoard scalars, ``{tag: [[step, value], ...]}``."""


def keep_record(run: str | os.PathLike, dest: str | os.PathLike,
                scalars: Iterable[str] = ("rollout/intervention_rate",)) -> Path:
    """Copy run folder ``run``'s results into ``dest/<run name>`` (created; an existing record is replaced whole):
    the :data:`RECORD_FILES` it holds and the TensorBoard ``scalars`` of its ``tb/`` as :data:`SCALARS_FILE`. A
    record is tens of kilobytes (a run folder tens of megabytes: checkpoint, policies, teleop log), and
    :func:`load_run` / :func:`run_scalars` read it as they read the run. Returns the record's folder.

    Raises:
        FileNotFoundError: ``run`` has no ``eval.json`` or no ``summary.json`` (the last file a run writes, after
            ``eval_commands.json``: not finished, or still writing; nothing is written).
    """
    import shutil
    import tempfile

    run, dest = Path(run), Path(dest)
    for name in ("eval.json", "summary.json"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run}: no {name} (a finished run's folder is needed; summary.json is the "
                                    f"last file a run writes)")
    out = dest / run.name
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run.name}.", dir=dest))
    try:
        for name in RECORD_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)
        series = {tag: read_scalars(run / "tb", tag) for tag in scalars} if (run / "tb").is_dir() else {}
        (tmp / SCALARS_FILE).write_text(json.dumps({t: [list(p) for p in v] for t, v in series.items() if v}))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def run_scalars(run: Mapping[str, Any] | str | os.PathLike, tag: str) -> list[tuple[int, float]]:
    """Scalar ``tag`` of a run (a :func:`load_run` dict or a folder): from its ``tb/`` when it has one, else from a
    record's :data:`SCALARS_FILE` (``[]`` when neither holds it)."""
    path = Path(run["path"] if isinstance(run, Mapping) else run)
    if (path / "tb").is_dir():
        return read_scalars(path / "tb", tag)
    kept = _load(path / SCALARS_FILE) or {}
    return [(int(s), float(v)) for s, v in kept.get(tag, [])]


def find_runs(run_root: str | os.PathLike, arm: str, seeds: Iterable[int] | None = None) -> list[Path]:
    """The folders ``run_root/<arm>-s<seed>`` (every seed found, or those of ``seeds`` that exist), by seed."""
    root = Path(run_root)
    pat = re.compile(rf"^{re.escape(arm)}-s(\d+)$")
    found = {int(m.group(1)): p for p in (root.iterdir() if root.is_dir() else []) if p.is_dir() and (m := pat.match(p.name))}
    wanted = sorted(found) if seeds is None else [int(s) for s in seeds if int(s) in found]
    return [found[s] for s in wanted]


def load_arms(run_root: str | os.PathLike, arms: Iterable[str], seeds: Iterable[int] | None = None) -> dict[str, list[dict]]:
    """``{arm: [load_run(folder) for its seeds]}``; an arm with no folder maps to ``[]``."""
    seeds = None if seeds is None else list(seeds)
    return {arm: [load_run(p) for p in find_runs(run_root, arm, seeds)] for arm in arms}


def read_scalars(tb_dir: str | os.PathLike, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every event of scalar ``tag`` in a TensorBoard folder (``[]`` when absent)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0}).Reload()
    if tag not in ea.Tags()["scalars"]:
        return []
    return [(int(e.step), float(e.value)) for e in ea.Scalars(tag)]


def load_episodes(path: str | os.PathLike) -> list[Episode]:
    """Every episode of a dataset, low-dimensional arrays only (no images)."""
    return list(read_episodes(path, load_images=False))


@dataclass
class Frames:
    """Evenly spaced frames of one episode (:func:`read_frames`), what :func:`dual_actor.analysis.plots.plot_frames`
    draws. ``images[camera][i]``, ``intervened[i]`` and ``commands[i]`` belong to step ``steps[i]``."""

    episode: str
    task: str
    kind: str
    steps: list[int]
    images: dict[str, list[np.ndarray]]  # camera -> uint8 (H, W, 3) per step
    intervened: list[bool]
    commands: list[str]  # refinement commands, "[null]" included


def read_frames(path: str | os.PathLike, episode: str | int | None = None, frames: int = 8,
                camera: str | None = None) -> Frames | None:
    """``frames`` evenly spaced frames of one episode (``demo_K`` or K; default: the first) for each camera (or
    ``camera``), with the steps' intervention flags and commands. None when the dataset has no episode or no
    images (state-only)."""
    import h5py

    info = dataset_info(path)
    if not info.episode_names:
        return None
    name = info.episode_names[0] if episode is None else episode if isinstance(episode, str) else f"demo_{episode}"
    with h5py.File(path, "r") as f:
        g = f["data"][name]
        cams = [k for k, ds in g["obs"].items() if ds.dtype == np.uint8 and ds.ndim == 4]
        if camera is not None:
            cams = [c for c in cams if c == camera]
        if not cams:
            return None
        n = int(g.attrs["num_samples"])
        idx = [int(t) for t in np.unique(np.linspace(0, n - 1, min(frames, n)).round().astype(int))]
        intervened = g["intervention"][()]
        commands = [c.decode() if isinstance(c, bytes) else str(c) for c in g["refinement_command"][()]]
        return Frames(episode=name, task=str(g.attrs["task"]), kind=str(g.attrs.get("kind", "demo")), steps=idx,
                      images={cam: [g["obs"][cam][t] for t in idx] for cam in cams},
                      intervened=[bool(intervened[t]) for t in idx], commands=[commands[t] for t in idx])


def translation_scale(path: str | os.PathLike) -> float | None:
    """Metres per action unit from the dataset's env_args (``translation_scale_m``, the ``talk_tweak`` record, or the
    one value all merged ``sources`` agree on); None when the file does not record it."""
    args = dataset_info(path).env_args
    own = _scale_of(args)
    if own is not None:
        return own
    found = {_scale_of(s.get("env_args") or {}) for s in args.get("sources") or []} - {None}
    return found.pop() if len(found) == 1 else None


def _scale_of(args: Mapping[str, Any]) -> float | None:
    for v in (args.get("translation_scale_m"), (args.get("talk_tweak") or {}).get("translation_scale_m")):
        if v is not None:
            return float(v)
    return None


def labelling_params(path: str | os.PathLike) -> dict | None:
    """The talk-and-tweak parameters a dataset records (env_args ``talk_tweak``, or the one record all merged
    ``sources`` share): ``{"window", "sigma", "label", ...}`` (``label`` "action" in records from before the
    option: :func:`data_tools.talk_tweak.recorded_rule`), or None."""
    from data_tools.talk_tweak import recorded_rule

    args = dataset_info(path).env_args
    if args.get("talk_tweak"):
        return recorded_rule(args["talk_tweak"])
    found = [json.dumps((s.get("env_args") or {}).get("talk_tweak"), sort_keys=True) for s in args.get("sources") or []]
    found = sorted({f for f in found if f != "null"})
    return recorded_rule(json.loads(found[0])) if len(found) == 1 else None
