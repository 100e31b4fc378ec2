"""Curation of HDF5 talk-and-tweak datasets: ``info``, ``filter``, ``merge``, ``split``,
``relabel`` and ``preview``.

Every function reads datasets through :mod:`data_tools.hdf5_format` (which validates them) and
writes new ones with :func:`data_tools.hdf5_format.write_dataset`: a temporary file in the
destination folder renamed on success, so an error never leaves a partial output behind. An
existing output is never replaced unless ``force`` is given, and inputs are opened read-only
and never modified (the one exception is ``split(..., in_place=True)``, which asks for it).

Episodes written to a new file are renumbered ``demo_0..`` in order; their ``episode_id``
attribute is kept, so an episode can always be traced back to the session it came from.
Masks (``/mask/<split>``) are carried over with the episode names remapped.

Errors on bad arguments or data raise :class:`CurateError` (a
:class:`data_tools.errors.DataToolsError`); malformed files raise
:class:`data_tools.hdf5_format.DatasetFormatError`. Non-fatal surprises (a ``--task`` that is
not in the file, masks dropped by ``merge``, ...) are :class:`CurateWarning` warnings; the
command-line front end prints them as ``warning: ...`` lines on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from data_tools.errors import DataToolsError
from data_tools.hdf5_format import (
    EPISODE_KINDS,
    NULL_COMMAND,
    DatasetFormatError,
    Episode,
    dataset_info,
    read_episodes,
    write_dataset,
)
from data_tools.talk_tweak import DEFAULT_WORDS, label_episode, refinement_command

__all__ = [
    "CurateError",
    "CurateWarning",
    "info",
    "format_info",
    "filter_dataset",
    "merge",
    "split",
    "relabel",
    "preview",
    "add_subcommands",
]

PathLike = str | os.PathLike


class CurateError(DataToolsError):
    """Bad arguments or data for a curation command; the message names the file (and key)."""


class CurateWarning(UserWarning):
    """Something the user probably wants to know about, that does not stop the command."""


# --------------------------------------------------------------------------------------------
# helpers


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_output(out: PathLike, inputs: Iterable[PathLike], force: bool) -> Path:
    """Refuse an output that is one of the inputs, a directory, or exists without ``force``."""
    out = Path(out)
    for src in inputs:
        if _same_file(out, Path(src)):
            raise CurateError(f"{out}: is the input file {src}; write the result to another path")
    if out.is_dir():
        raise CurateError(f"{out}: is a directory, expected a file path")
    if out.exists() and not force:
        raise CurateError(f"{out}: exists (pass force=True / --force to overwrite)")
    return out


def _progress(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="episode", file=sys.stderr, disable=not progress, leave=False)


def _stream(
    src: Path, names: set[str] | None, desc: str, progress: bool, load_images: bool = True
) -> Iterator[Episode]:
    """Episodes of ``src`` (those named in ``names``, or all) in file order, with a progress bar."""
    total = len(names) if names is not None else len(dataset_info(src).episode_names)
    bar = _progress(total, desc, progress)
    try:
        for ep in read_episodes(src, load_images=load_images):
            if names is None or ep.name in names:
                yield ep
                bar.update()
    finally:
        bar.close()


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _histogram(counter: Counter) -> dict[str, int]:
    """Counts sorted by decreasing count, then alphabetically."""
    return {k: v for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))}


# --------------------------------------------------------------------------------------------
# info


def info(path: PathLike) -> dict:
    """Summary of a dataset, per (task, kind) and in total. Reads low-dim arrays only.

    Returns a JSON-serialisable dict::

        {"path", "fps", "env_args", "masks": {split: n_episodes},
         "groups": [{"task", "kind", "episodes", "steps", "successes", "success_rate",
                     "intervened_steps", "intervention_ratio", "commands": {command: count}}, ...],
         "total": {same keys without task/kind}}

    An episode succeeded when any reward is > 0; ``intervention_ratio`` is intervened steps /
    steps; ``commands`` counts ``refinement_command`` strings other than ``"[null]"`` (most
    frequent first). Rates are ``None`` when there is nothing to divide by. Groups are sorted by
    task, then kind. Raises :class:`DatasetFormatError` on a malformed file.
    """
    path = Path(path)
    meta = dataset_info(path)

    def empty() -> dict:
        return {"episodes": 0, "steps": 0, "successes": 0, "intervened_steps": 0, "commands": Counter()}

    groups: dict[tuple[str, str], dict] = {}
    total = empty()
    for ep in read_episodes(path, load_images=False):
        g = groups.setdefault((ep.task, ep.kind), empty())
        commands = Counter(c for c in ep.refinement_command if c != NULL_COMMAND)
        for acc in (g, total):
            acc["episodes"] += 1
            acc["steps"] += ep.num_samples
            acc["successes"] += int(ep.success)
            acc["intervened_steps"] += int(np.count_nonzero(ep.intervention))
            acc["commands"].update(commands)

    def finish(acc: dict) -> dict:
        return {
            "episodes": acc["episodes"],
            "steps": acc["steps"],
            "successes": acc["successes"],
            "success_rate": _rate(acc["successes"], acc["episodes"]),
            "intervened_steps": acc["intervened_steps"],
            "intervention_ratio": _rate(acc["intervened_steps"], acc["steps"]),
            "commands": _histogram(acc["commands"]),
        }

    return {
        "path": str(path),
        "fps": meta.fps,
        "env_args": meta.env_args,
        "masks": {split: len(names) for split, names in sorted(meta.masks.items())},
        "groups": [{"task": t, "kind": k, **finish(groups[(t, k)])} for t, k in sorted(groups)],
        "total": finish(total),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_info(summary: Mapping) -> str:
    """The output of :func:`info` as a plain-text table (what ``info`` prints)."""
    tot = summary["total"]
    masks = ", ".join(f"{k} {v}" for k, v in summary["masks"].items()) or "none"
    lines = [
        f"{summary['path']}: {tot['episodes']} episodes, {tot['steps']} steps, "
        f"fps {summary['fps']:g}, masks: {masks}",
        "",
    ]
    header = ("task", "kind", "episodes", "steps", "success", "intervention")
    rows = [
        (g["task"], g["kind"], str(g["episodes"]), str(g["steps"]), _pct(g["success_rate"]),
         _pct(g["intervention_ratio"]))
        for g in summary["groups"]
    ]
    total_row = ("total", "", str(tot["episodes"]), str(tot["steps"]), _pct(tot["success_rate"]),
                 _pct(tot["intervention_ratio"]))
    widths = [max(len(r[i]) for r in [header, *rows, total_row]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        return "  ".join(cells).rstrip()

    lines.append(fmt(header))
    lines += [fmt(r) for r in rows]
    lines.append("-" * len(fmt(header)))
    lines.append(fmt(total_row))
    lines += ["", f'refinement commands (excluding "{NULL_COMMAND}"):']

    def hist(title: str, commands: Mapping[str, int]) -> None:
        lines.append(f"  {title}:")
        if not commands:
            lines.append("    (none)")
        width = max((len(str(v)) for v in commands.values()), default=1)
        lines.extend(f"    {str(v).rjust(width)}  {k}" for k, v in commands.items())

    hist("all", tot["commands"])
    for g in summary["groups"]:
        if g["commands"]:
            hist(f"{g['task']} / {g['kind']}", g["commands"])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# filter


def filter_dataset(
    src: PathLike,
    out: PathLike,
    task: Sequence[str] | str | None = None,
    success: bool | None = None,
    kind: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    has_intervention: bool | None = None,
    force: bool = False,
    progress: bool = False,
) -> int:
    """Write the episodes of ``src`` that pass every given criterion to ``out``; return how many.

    Criteria (``None`` = not applied): ``task`` — episode task in this list; ``success`` —
    episode succeeded (any reward > 0) or not; ``kind`` — "demo" or "online"; ``min_length`` /
    ``max_length`` — inclusive bounds on the number of steps; ``has_intervention`` — at least one
    intervened step, or none. Kept episodes are renumbered ``demo_0..`` in order, masks are
    remapped (episodes dropped from them), fps and env_args are copied.

    Raises :class:`CurateError` when no episode passes (nothing is written), on invalid criteria,
    or when ``out`` exists without ``force`` / is the input. Warns (:class:`CurateWarning`) for a
    requested task that the file does not contain.
    """
    src = Path(src)
    out = _check_output(out, [src], force)
    tasks = [task] if isinstance(task, str) else (list(task) if task is not None else None)
    if tasks is not None and not tasks:
        raise CurateError("filter: empty task list")
    if kind is not None and kind not in EPISODE_KINDS:
        raise CurateError(f"filter: kind {kind!r} is not one of {', '.join(EPISODE_KINDS)}")
    for label, value in (("min_length", min_length), ("max_length", max_length)):
        if value is not None and value < 1:
            raise CurateError(f"filter: {label} must be >= 1, got {value}")
    if min_length is not None and max_length is not None and min_length > max_length:
        raise CurateError(f"filter: min_length {min_length} > max_length {max_length}")

    def keep(ep: Episode) -> bool:
        n = ep.num_samples
        return (
            (tasks is None or ep.task in tasks)
            and (success is None or ep.success == bool(success))
            and (kind is None or ep.kind == kind)
            and (min_length is None or n >= min_length)
            and (max_length is None or n <= max_length)
            and (has_intervention is None or bool(np.any(ep.intervention)) == bool(has_intervention))
        )

    meta = dataset_info(src)
    seen_tasks: set[str] = set()
    kept: list[str] = []
    for ep in read_episodes(src, load_images=False):
        seen_tasks.add(ep.task)
        if keep(ep):
            kept.append(ep.name)
    for t in tasks or []:
        if t not in seen_tasks:
            warnings.warn(
                f"{src}: no episode has task {t!r} (tasks: {', '.join(map(repr, sorted(seen_tasks)))})",
                CurateWarning,
                stacklevel=2,
            )
    if not kept:
        raise CurateError(
            f"{src}: no episode matches the filter (of {len(meta.episode_names)}); nothing written"
        )
    rename = {old: f"demo_{i}" for i, old in enumerate(kept)}
    masks = {s: [rename[n] for n in names if n in rename] for s, names in meta.masks.items()}
    write_dataset(out, _stream(src, set(kept), "filter", progress), fps=meta.fps, env_args=meta.env_args,
                  masks=masks, force=force)
    return len(kept)


# --------------------------------------------------------------------------------------------
# merge


def _signature(ep: Episode) -> dict[str, tuple]:
    sig = {"actions": (ep.actions.shape[1:], ep.actions.dtype.str)}
    for key, arr in ep.obs.items():
        sig[f"obs/{key}"] = (arr.shape[1:], arr.dtype.str)
    return sig


def _signature_diff(a: dict[str, tuple], b: dict[str, tuple]) -> str:
    parts = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            parts.append(f"{key} only in the second")
        elif key not in b:
            parts.append(f"{key} only in the first")
        elif a[key] != b[key]:
            parts.append(f"{key} {a[key][0]} {a[key][1]} vs {b[key][0]} {b[key][1]}")
    return "; ".join(parts)


def _merge_env_args(srcs: Sequence[Path], env_args: Sequence[dict]) -> dict:
    scales = {str(s): a["translation_scale_m"] for s, a in zip(srcs, env_args) if "translation_scale_m" in a}
    if len({json.dumps(v) for v in scales.values()}) > 1:
        listed = ", ".join(f"{s}: {v}" for s, v in scales.items())
        raise CurateError(f"merge: env_args translation_scale_m differs between inputs ({listed}); "
                          "actions would mean different things in one dataset")
    first = env_args[0]
    common = {
        k: v for k, v in first.items()
        if k != "sources" and all(k in a and a[k] == v for a in env_args[1:])
    }
    return {**common, "sources": [{"file": s.name, "env_args": a} for s, a in zip(srcs, env_args)]}


def merge(srcs: Sequence[PathLike], out: PathLike, force: bool = False, progress: bool = False) -> int:
    """Concatenate the episodes of several datasets into ``out``; return the number of episodes.

    Episodes are renumbered ``demo_0..`` in input order. fps must agree. Every episode must have
    the same action shape and the same observation keys, shapes and dtypes as the first one
    (otherwise a learner would silently read different things). ``env_args`` becomes
    ``{<keys equal in every input>, "sources": [{"file": <file name>, "env_args": {...}}, ...]}``;
    ``translation_scale_m`` must not differ between inputs. A mask present in every input is
    carried over (names remapped, concatenated); other masks are dropped with a warning.

    Raises :class:`CurateError` (naming both files) on any disagreement, with nothing written.
    """
    srcs = [Path(s) for s in srcs]
    if not srcs:
        raise CurateError("merge: no input files")
    out = _check_output(out, srcs, force)
    metas = [dataset_info(s) for s in srcs]
    for s, m in zip(srcs[1:], metas[1:]):
        if not math.isclose(m.fps, metas[0].fps, rel_tol=1e-9):
            raise CurateError(
                f"merge: fps differ: {srcs[0]} has {metas[0].fps:g} fps, {s} has {m.fps:g} fps"
            )
    env_args = _merge_env_args(srcs, [m.env_args for m in metas])

    renames, offset = [], 0
    for m in metas:
        renames.append({old: f"demo_{offset + j}" for j, old in enumerate(m.episode_names)})
        offset += len(m.episode_names)
    if offset == 0:
        raise CurateError(f"merge: the inputs hold no episodes ({', '.join(map(str, srcs))}); nothing written")
    all_splits = set().union(*(m.masks for m in metas))
    common_splits = [s for s in sorted(all_splits) if all(s in m.masks for m in metas)]
    masks = {
        split_name: [r[n] for m, r in zip(metas, renames) for n in m.masks[split_name] if n in r]
        for split_name in common_splits
    }

    def episodes() -> Iterator[Episode]:
        ref: tuple[Path, str, dict] | None = None
        bar = _progress(offset, "merge", progress)
        try:
            for s in srcs:
                for ep in read_episodes(s):
                    sig = _signature(ep)
                    if ref is None:
                        ref = (s, ep.name, sig)
                    elif sig != ref[2]:
                        raise CurateError(
                            f"merge: {s}:/data/{ep.name} does not match {ref[0]}:/data/{ref[1]}: "
                            f"{_signature_diff(ref[2], sig)}"
                        )
                    yield ep
                    bar.update()
        finally:
            bar.close()

    write_dataset(out, episodes(), fps=metas[0].fps, env_args=env_args, masks=masks, force=force)
    for split_name in sorted(all_splits - set(common_splits)):
        missing = [str(s) for s, m in zip(srcs, metas) if split_name not in m.masks]
        warnings.warn(f"merge: mask '{split_name}' dropped: missing in {', '.join(missing)}", CurateWarning,
                      stacklevel=2)
    return offset


# --------------------------------------------------------------------------------------------
# split


def _n_valid(n: int, fraction: float) -> int:
    """round(fraction * n), at least 1 when n >= 2, and always leaving one training episode."""
    k = int(math.floor(fraction * n + 0.5))
    if n >= 2:
        k = max(k, 1)
    return min(k, n - 1) if n >= 1 else 0


def split(
    path: PathLike,
    out: PathLike | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    by_task: bool = True,
    in_place: bool = False,
    force: bool = False,
    progress: bool = False,
) -> dict[str, list[str]]:
    """Write ``/mask/train`` and ``/mask/valid`` (episode names); return ``{"train", "valid"}``.

    With ``by_task`` (default) the split is stratified: each task's episodes are split on their
    own, ``round(valid_fraction * n)`` of them to ``valid`` but at least one when the task has
    two or more episodes, and never all of them (a task with one episode goes to ``train``).
    Which episodes go to ``valid`` is a deterministic function of ``seed`` and the task string
    (adding a task does not reshuffle the others). Names in each mask are in file order.

    The result goes to a new file ``out`` (a copy of ``path`` with the masks) or, with
    ``in_place=True``, replaces ``path`` through a temporary file and a rename. Other masks of
    the file are kept; existing train/valid masks are replaced.

    Raises :class:`CurateError` on a fraction outside (0, 1), a negative seed, both or neither
    of ``out`` / ``in_place``, an empty dataset, or ``out`` existing without ``force``.
    """
    path = Path(path)
    if (out is None) == (not in_place):
        raise CurateError("split: give exactly one of an output file (-o) or in_place (--in-place)")
    if not (0.0 < valid_fraction < 1.0):
        raise CurateError(f"split: valid_fraction must be in (0, 1), got {valid_fraction}")
    if int(seed) != seed or seed < 0:
        raise CurateError(f"split: seed must be a non-negative integer, got {seed}")
    target = path.resolve() if in_place else _check_output(out, [path], force)
    meta = dataset_info(path)
    if not meta.episode_names:
        raise CurateError(f"{path}: no episodes to split")

    groups: dict[str, list[str]] = {}
    for ep in read_episodes(path, load_images=False):
        groups.setdefault(ep.task if by_task else "", []).append(ep.name)
    valid: set[str] = set()
    for task in sorted(groups):
        names = groups[task]
        rng = np.random.default_rng([int(seed), zlib.crc32(task.encode("utf-8"))])
        chosen = rng.permutation(len(names))[: _n_valid(len(names), valid_fraction)]
        valid.update(names[i] for i in chosen)
    result = {
        "train": [n for n in meta.episode_names if n not in valid],
        "valid": [n for n in meta.episode_names if n in valid],
    }
    masks = {**meta.masks, **result}
    write_dataset(target, _stream(path, None, "split", progress), fps=meta.fps, env_args=meta.env_args,
                  masks=masks, force=True if in_place else force)
    return result


# --------------------------------------------------------------------------------------------
# relabel


def relabel(
    src: PathLike,
    out: PathLike,
    window: int = 5,
    sigma: float = 0.001,
    words: Mapping[str, Sequence[str]] | None = None,
    translation_scale_m: float | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Recompute ``refinement_command`` of every intervened step with other J / sigma / words.

    Uses :func:`data_tools.talk_tweak.label_episode` (windows of ``window`` steps cut at the end
    of each intervention segment; ``words`` maps an axis "x"|"y"|"z" to (positive, negative)
    words, defaults for axes not given). Commands of non-intervened steps are copied unchanged
    (they are "[null]" unless an operator spoke one). Note: the dataset does not record which
    commands were spoken, so a spoken command on an intervened step is replaced too.

    The action-unit-to-metre scale comes from the file's ``/data`` env_args
    ``translation_scale_m``; ``translation_scale_m`` is used when the file has none (and then
    recorded in the output's env_args), an error when neither is there or they disagree.
    The labelling parameters are recorded in env_args ``"talk_tweak"``.

    Returns ``{"episodes", "steps", "intervened_steps", "changed", "translation_scale_m"}``
    where ``changed`` counts steps whose command differs from the input's.
    """
    src = Path(src)
    out = _check_output(out, [src], force)
    if int(window) != window or window < 1:
        raise CurateError(f"relabel: window must be an integer >= 1, got {window}")
    window = int(window)
    if not (math.isfinite(sigma) and sigma >= 0):
        raise CurateError(f"relabel: sigma must be a finite number >= 0 (metres), got {sigma}")
    try:
        refinement_command(np.zeros((1, 3)), sigma, words)
    except ValueError as e:
        raise CurateError(f"relabel: {e}") from None
    table = {axis: list(pair) for axis, pair in DEFAULT_WORDS.items()}
    table.update({axis: [str(p) for p in pair] for axis, pair in (words or {}).items()})

    meta = dataset_info(src)
    env_args = dict(meta.env_args)
    file_scale = env_args.get("translation_scale_m")
    if file_scale is not None:
        if not isinstance(file_scale, (int, float)) or isinstance(file_scale, bool) \
                or not math.isfinite(file_scale) or file_scale <= 0:
            raise CurateError(f"{src}:/data attrs env_args translation_scale_m: expected a positive number, "
                              f"got {file_scale!r}")
        if translation_scale_m is not None and not math.isclose(translation_scale_m, file_scale):
            raise CurateError(
                f"{src}: env_args says translation_scale_m = {file_scale:g} but {translation_scale_m:g} was given; "
                "the file's value is used, drop --translation-scale-m"
            )
        scale = float(file_scale)
    elif translation_scale_m is not None:
        if not (math.isfinite(translation_scale_m) and translation_scale_m > 0):
            raise CurateError(f"relabel: translation_scale_m must be > 0, got {translation_scale_m}")
        scale = float(translation_scale_m)
        env_args["translation_scale_m"] = scale
    else:
        raise CurateError(
            f"{src}: env_args has no translation_scale_m (action units of dims 0..2 -> metres); "
            "pass --translation-scale-m (e.g. 0.01 for the Metaworld bench, 1.0 if actions are in metres)"
        )
    env_args["talk_tweak"] = {"window": window, "sigma": float(sigma), "translation_scale_m": scale,
                              "words": table}

    stats = {"episodes": 0, "steps": 0, "intervened_steps": 0, "changed": 0, "translation_scale_m": scale}

    def episodes() -> Iterator[Episode]:
        for ep in _stream(src, None, "relabel", progress):
            if ep.actions.shape[1] < 3:
                raise CurateError(f"{src}:/data/{ep.name}/actions: {ep.actions.shape[1]} dims, "
                                  "talk-and-tweak needs 3 translation dims")
            derived = label_episode(ep.actions, ep.intervention, window, sigma, scale, words)
            new = [d if iv else old for d, iv, old in zip(derived, ep.intervention, ep.refinement_command)]
            stats["episodes"] += 1
            stats["steps"] += ep.num_samples
            stats["intervened_steps"] += int(np.count_nonzero(ep.intervention))
            stats["changed"] += sum(a != b for a, b in zip(new, ep.refinement_command))
            ep.refinement_command = new
            yield ep

    write_dataset(out, episodes(), fps=meta.fps, env_args=env_args, masks=meta.masks, force=force)
    return stats


# --------------------------------------------------------------------------------------------
# preview

_PANEL_BG = (24, 24, 24)
_TEXT = (235, 235, 235)
_DIM_TEXT = (150, 150, 150)
_RED = (220, 30, 30)
_FONT_SIZE = 14
_MIN_WIDTH = 400


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=_FONT_SIZE)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: bitmap font
        return ImageFont.load_default()


def _load_images(path: Path, name: str, keys: Sequence[str], frames: slice) -> dict[str, np.ndarray]:
    """Only the frames ``frames`` of ``/data/<name>/obs/<key>`` (images are chunked per frame)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        obs = f["data"][name]["obs"]
        for k in keys:
            ds = obs[k]
            # one read per frame: h5py's strided selection is ~50x slower than this
            out[k] = np.stack([ds[i] for i in range(*frames.indices(len(ds)))])
    return out


def _image_keys(path: Path, name: str) -> list[str]:
    import h5py

    with h5py.File(path, "r") as f:
        obs = f["data"][name]["obs"]
        return [k for k, ds in obs.items() if ds.dtype == np.uint8 and ds.ndim == 4]


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _vector(v: np.ndarray) -> str:
    if not np.all(np.isfinite(v)):
        return "-"
    return " ".join(f"{x:+.3f}" for x in v)


class _Renderer:
    """Draws one preview frame: picture (camera tiles or plot) + a text panel + a timeline."""

    def __init__(self, ep: Episode, picture_size: tuple[int, int]):
        from PIL import Image, ImageDraw

        self.ep = ep
        self.font = _font()
        probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
        self.line_h = int(probe.textbbox((0, 0), "Ag|[", font=self.font)[3]) + 5
        pw, ph = picture_size
        widest_action = f"action  {_vector(np.full(ep.actions.shape[1], -0.5))}"
        self.width = max(pw, _MIN_WIDTH, int(probe.textlength(widest_action, font=self.font)) + 20)
        self.picture_x = (self.width - pw) // 2
        self.picture_h = ph
        self.panel_h = 5 * self.line_h + 20
        self.height = ph + self.panel_h

    def frame(self, t: int, picture):
        from PIL import Image, ImageDraw

        ep, n = self.ep, self.ep.num_samples
        img = Image.new("RGB", (self.width, self.height), _PANEL_BG)
        img.paste(picture, (self.picture_x, 0))
        d = ImageDraw.Draw(img)
        x, y, w, f = 8, self.picture_h + 6, self.width - 16, self.font
        intervened = bool(ep.intervention[t])
        status = f"{ep.name}  step {t}/{n - 1}  reward {ep.rewards[t]:g}" + ("  done" if ep.dones[t] else "")
        d.text((x, y), _fit(d, status, f, w), font=f, fill=_TEXT)
        y += self.line_h
        d.text((x, y), _fit(d, f"task    {ep.task}  ({ep.kind})", f, w), font=f, fill=_TEXT)
        y += self.line_h
        d.text((x, y), _fit(d, f"action  {_vector(ep.actions[t])}", f, w), font=f, fill=_TEXT)
        y += self.line_h
        d.text((x, y), _fit(d, f"policy  {_vector(ep.policy_actions[t])}", f, w), font=f, fill=_DIM_TEXT)
        y += self.line_h
        if intervened:
            label = "INTERVENTION"
            box = d.textbbox((x, y), label, font=f)
            d.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=_RED)
            d.text((x, y), label, font=f, fill=(255, 255, 255))
            cx = box[2] + 12
        else:
            d.text((x, y), "policy acting", font=f, fill=_DIM_TEXT)
            cx = x + int(d.textlength("INTERVENTION", font=f)) + 12
        command = ep.refinement_command[t]
        d.text((cx, y), _fit(d, f"command: {command}", f, self.width - cx - 8), font=f,
               fill=_TEXT if command != NULL_COMMAND else _DIM_TEXT)
        # timeline: the episode, intervened steps in red, a cursor at t
        ty, th = self.height - 8, 5
        d.rectangle((x, ty, x + w, ty + th), fill=(70, 70, 70))
        for s in np.flatnonzero(ep.intervention):
            x0 = x + int(w * s / n)
            d.rectangle((x0, ty, max(x0, x + int(w * (s + 1) / n) - 1), ty + th), fill=_RED)
        cursor = x + int(w * (t + 0.5) / n)
        d.rectangle((cursor - 1, ty - 3, cursor + 1, ty + th + 2), fill=(255, 255, 255))
        if intervened:
            d.rectangle((0, 0, self.width - 1, self.height - 1), outline=_RED, width=3)
        return img


def _camera_tiles(images: dict[str, np.ndarray]) -> tuple[list, tuple[int, int]]:
    """One picture per selected frame: the cameras side by side at a common, legible height."""
    from PIL import Image, ImageDraw

    font = _font()
    max_h = max(a.shape[1] for a in images.values())
    target_h = min(max(max_h, 192), 360)
    sizes = {k: (max(1, round(a.shape[2] * target_h / a.shape[1])), target_h) for k, a in images.items()}
    width = sum(s[0] for s in sizes.values())
    frames = []
    for i in range(len(next(iter(images.values())))):
        pic = Image.new("RGB", (width, target_h))
        x = 0
        for key, arr in images.items():
            tile = Image.fromarray(arr[i])
            resample = Image.Resampling.NEAREST if sizes[key][1] >= arr.shape[1] else Image.Resampling.BILINEAR
            pic.paste(tile.resize(sizes[key], resample), (x, 0))
            if len(images) > 1:
                d = ImageDraw.Draw(pic)
                box = d.textbbox((x + 4, 3), key, font=font)
                d.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
                d.text((x + 4, 3), key, font=font, fill=(255, 255, 255))
            x += sizes[key][0]
        frames.append(pic)
    return frames, (width, target_h)


def _trajectory_plot(ep: Episode, indices: np.ndarray) -> tuple[list, tuple[int, int]]:
    """No images in the file: the action trajectory plotted once, a cursor drawn per frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image, ImageDraw

    n, a = ep.actions.shape
    fig = Figure(figsize=(5.0, 2.6), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(n)
    for s in np.flatnonzero(ep.intervention):
        ax.axvspan(s - 0.5, s + 0.5, color="tab:red", alpha=0.15, linewidth=0)
    for j in range(a):
        ax.plot(steps, ep.actions[:, j], label=f"a[{j}]", linewidth=1.2)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("step")
    ax.set_title("actions (no camera images in this dataset; red: intervention)", fontsize=8)
    ax.legend(fontsize=7, ncol=min(a, 7), loc="upper left", frameon=False)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    canvas.draw()
    background = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    height = background.height
    y0, y1 = ax.bbox.y0, ax.bbox.y1
    frames = []
    for t in indices:
        xpix = float(ax.transData.transform((t, 0.0))[0])
        pic = background.copy()
        ImageDraw.Draw(pic).line((xpix, height - y1, xpix, height - y0), fill=(0, 0, 0), width=2)
        frames.append(pic)
    return frames, background.size


def _episode_name(episode: str | int) -> str:
    text = str(episode)
    return f"demo_{text}" if text.isdigit() else text


def preview(
    path: PathLike,
    episode: str | int,
    out: PathLike,
    camera: str | None = None,
    every: int = 1,
    max_frames: int = 200,
    force: bool = False,
) -> dict:
    """Render one episode for a person to look at: an animated GIF (``out`` ends with ``.gif``)
    or a PNG contact sheet (``.png``, frames in rows of up to 8).

    Each frame shows the camera image(s) (``camera`` = one ``obs`` image key, default all side
    by side, upscaled to a legible size) or, when the file has no images, a plot of the action
    trajectory with a cursor; under it the step, reward, task, executed action, policy action,
    a red ``INTERVENTION`` marker (and red border) on intervened steps, the refinement command,
    and a timeline with the intervened steps in red. ``episode`` is ``"demo_3"`` or ``3``.

    Every ``every``-th step is drawn; when that gives more than ``max_frames`` frames the stride
    is raised to fit (with a :class:`CurateWarning`). Returns
    ``{"path", "episode", "frames", "stride", "cameras"}``.
    """
    from PIL import Image

    path, out = Path(path), Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".gif", ".png"):
        raise CurateError(f"{out}: preview writes .gif (animation) or .png (contact sheet), not {out.suffix!r}")
    out = _check_output(out, [path], force)
    if int(every) != every or every < 1:
        raise CurateError(f"preview: every must be an integer >= 1, got {every}")
    if int(max_frames) != max_frames or max_frames < 1:
        raise CurateError(f"preview: max_frames must be an integer >= 1, got {max_frames}")
    name = _episode_name(episode)
    meta = dataset_info(path)
    if name not in meta.episode_names:
        shown = ", ".join(meta.episode_names[:5]) + (", ..." if len(meta.episode_names) > 5 else "")
        raise CurateError(f"{path}: no episode {name!r} (the file has {len(meta.episode_names)}: {shown or 'none'})")
    ep = next(e for e in read_episodes(path, load_images=False) if e.name == name)

    n = ep.num_samples
    stride = int(every)
    if math.ceil(n / stride) > max_frames:
        stride = math.ceil(n / max_frames)
        warnings.warn(f"preview: {name} has {n} steps; drawing one step in {stride} to stay within "
                      f"{max_frames} frames", CurateWarning, stacklevel=2)
    indices = np.arange(0, n, stride)

    available = _image_keys(path, name)
    if camera is not None and camera not in available:
        raise CurateError(f"{path}:/data/{name}/obs: no camera {camera!r} "
                          f"(image keys: {', '.join(available) or 'none'})")
    cameras = [camera] if camera is not None else available
    if cameras:
        pictures, size = _camera_tiles(_load_images(path, name, cameras, slice(0, n, stride)))
    else:
        pictures, size = _trajectory_plot(ep, indices)
    renderer = _Renderer(ep, size)
    frames = [renderer.frame(int(t), pic) for t, pic in zip(indices, pictures)]

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        if suffix == ".gif":
            ms = max(20, int(round(1000.0 * stride / meta.fps))) if meta.fps > 0 else 100
            # fast octree palettes: PIL's default median cut takes ~0.15 s per frame
            paletted = [fr.quantize(256, method=Image.Quantize.FASTOCTREE) for fr in frames]
            paletted[0].save(tmp, format="GIF", save_all=True, append_images=paletted[1:], duration=ms, loop=0)
        else:
            cols = min(len(frames), 8)
            rows = math.ceil(len(frames) / cols)
            fw, fh = frames[0].size
            gap = 4
            sheet = Image.new("RGB", (cols * fw + (cols - 1) * gap, rows * fh + (rows - 1) * gap), (255, 255, 255))
            for i, fr in enumerate(frames):
                sheet.paste(fr, ((i % cols) * (fw + gap), (i // cols) * (fh + gap)))
            sheet.save(tmp, format="PNG", compress_level=3)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(out), "episode": name, "frames": len(frames), "stride": stride, "cameras": cameras}


# --------------------------------------------------------------------------------------------
# command line


def _cli(fn):
    """Run a command: library errors become one ``error: ...`` line and exit code 2; our
    warnings become ``warning: ...`` lines on stderr."""

    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CurateWarning)
            try:
                code = fn(args)
            except (DataToolsError, DatasetFormatError, FileExistsError, OSError) as e:
                code = 2
                message = str(e)
            else:
                message = None
        for w in caught:
            if issubclass(w.category, CurateWarning):
                print(f"warning: {w.message}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
        return code

    run.__name__ = fn.__name__
    return run


def _progress_on(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False)


@_cli
def _cmd_info(args: argparse.Namespace) -> int:
    summary = info(args.path)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_info(summary))
    return 0


@_cli
def _cmd_filter(args: argparse.Namespace) -> int:
    total = len(dataset_info(args.src).episode_names)
    kept = filter_dataset(
        args.src, args.out, task=args.task, success=args.success, kind=args.kind, min_length=args.min_length,
        max_length=args.max_length, has_intervention=args.has_intervention, force=args.force,
        progress=_progress_on(args),
    )
    print(f"kept {kept} of {total} episodes -> {args.out}")
    return 0


@_cli
def _cmd_merge(args: argparse.Namespace) -> int:
    n = merge(args.srcs, args.out, force=args.force, progress=_progress_on(args))
    print(f"merged {n} episodes from {len(args.srcs)} files -> {args.out}")
    return 0


@_cli
def _cmd_split(args: argparse.Namespace) -> int:
    masks = split(args.path, out=args.out, valid_fraction=args.valid_fraction, seed=args.seed,
                  by_task=not args.no_stratify, in_place=args.in_place, force=args.force,
                  progress=_progress_on(args))
    target = args.path if args.in_place else args.out
    print(f"train {len(masks['train'])} / valid {len(masks['valid'])} episodes -> {target}:/mask")
    return 0


def _parse_words(items: Sequence[str] | None) -> dict[str, tuple[str, str]] | None:
    """``--words`` values: ``AXIS=POS,NEG`` (repeatable) or a JSON object as ``convert`` takes."""
    if not items:
        return None
    words = {}
    for item in items:
        if item.lstrip().startswith("{"):
            try:
                obj = json.loads(item)
            except json.JSONDecodeError as e:
                raise CurateError(f"--words: not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not all(isinstance(v, list) and len(v) == 2 for v in obj.values()):
                raise CurateError('--words: expected a JSON object such as {"y": ["right", "left"]}')
            words.update({str(k): (str(v[0]), str(v[1])) for k, v in obj.items()})
            continue
        axis, sep, pair = item.partition("=")
        parts = [p.strip() for p in pair.split(",")]
        if not sep or axis.strip() not in ("x", "y", "z") or len(parts) != 2 or not all(parts):
            raise CurateError(f"--words {item!r}: expected AXIS=POSITIVE,NEGATIVE with AXIS x, y or z "
                              "(e.g. y=left,right)")
        words[axis.strip()] = (parts[0], parts[1])
    return words


@_cli
def _cmd_relabel(args: argparse.Namespace) -> int:
    stats = relabel(args.src, args.out, window=args.window, sigma=args.sigma, words=_parse_words(args.words),
                    translation_scale_m=args.translation_scale_m, force=args.force, progress=_progress_on(args))
    print(f"relabelled {stats['intervened_steps']} intervened steps in {stats['episodes']} episodes: "
          f"{stats['changed']} commands changed -> {args.out}")
    return 0


@_cli
def _cmd_preview(args: argparse.Namespace) -> int:
    result = preview(args.path, args.episode, args.out, camera=args.camera, every=args.every,
                     max_frames=args.max_frames, force=args.force)
    source = ", ".join(result["cameras"]) or "action plot"
    print(f"{result['episode']}: {result['frames']} frames (every {result['stride']} step(s), {source}) "
          f"-> {result['path']}")
    return 0


def add_subcommands(subparsers) -> None:
    """Register ``info``, ``filter``, ``merge``, ``split``, ``relabel`` and ``preview`` on an
    ``argparse`` subparsers object; each sets ``func(args) -> int`` (0 ok, 2 on an error)."""

    def common(p: argparse.ArgumentParser, force: bool = True, quiet: bool = True) -> None:
        if force:
            p.add_argument("--force", action="store_true", help="overwrite an existing output file")
        if quiet:
            # SUPPRESS: do not clobber a global --quiet of the parent parser
            p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                           help="no progress bar")

    p = subparsers.add_parser("info", help="summary per task and kind",
                              description="Episodes, steps, success rate, intervention ratio and "
                                          "refinement-command histogram per task and kind, and in total.")
    p.add_argument("path", help="HDF5 talk-and-tweak dataset")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_info)

    p = subparsers.add_parser("filter", help="keep the episodes that match",
                              description="Write the episodes that pass every given criterion to a new file.")
    p.add_argument("src", help="input dataset")
    p.add_argument("-o", "--out", required=True, help="output dataset (new file)")
    p.add_argument("--task", action="extend", nargs="+", metavar="TASK",
                   help="keep these tasks (repeatable; quote tasks with spaces)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--success", dest="success", action="store_const", const=True, default=None,
                   help="only successful episodes (a reward > 0)")
    g.add_argument("--failure", dest="success", action="store_const", const=False, help="only failed episodes")
    p.add_argument("--kind", choices=EPISODE_KINDS, help="only demos or only online episodes")
    p.add_argument("--min-length", type=int, metavar="N", help="at least N steps")
    p.add_argument("--max-length", type=int, metavar="N", help="at most N steps")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--has-intervention", dest="has_intervention", action="store_const", const=True, default=None,
                   help="only episodes with an intervened step")
    g.add_argument("--no-intervention", dest="has_intervention", action="store_const", const=False,
                   help="only episodes without intervention")
    common(p)
    p.set_defaults(func=_cmd_filter)

    p = subparsers.add_parser("merge", help="concatenate datasets",
                              description="Concatenate the episodes of several datasets (same fps, actions "
                                          "and observations) into a new file.")
    p.add_argument("srcs", nargs="+", metavar="SRC", help="input datasets, in order")
    p.add_argument("-o", "--out", required=True, help="output dataset (new file)")
    common(p)
    p.set_defaults(func=_cmd_merge)

    p = subparsers.add_parser("split", help="train/valid masks",
                              description="Write /mask/train and /mask/valid (stratified per task, "
                                          "deterministic from --seed).")
    p.add_argument("path", help="input dataset")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("-o", "--out", help="write a copy with the masks here")
    g.add_argument("--in-place", action="store_true", help="rewrite PATH with the masks (temp file + rename)")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="fraction of each task's episodes (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-stratify", action="store_true", help="split all episodes together, not per task")
    common(p)
    p.set_defaults(func=_cmd_split)

    p = subparsers.add_parser("relabel", help="recompute refinement commands",
                              description="Recompute the talk-and-tweak command of every intervened step "
                                          "with another window J, threshold sigma or words.")
    p.add_argument("src", help="input dataset")
    p.add_argument("-o", "--out", required=True, help="output dataset (new file)")
    p.add_argument("--window", type=int, default=5, metavar="J", help="window length in steps (default 5)")
    p.add_argument("--sigma", type=float, default=0.001, help="threshold in metres (default 0.001)")
    p.add_argument("--words", action="append", metavar="AXIS=POS,NEG",
                   help="direction words of an axis, positive then negative, e.g. y=right,left (repeatable), "
                        'or a JSON object as convert takes: \'{"y": ["right", "left"]}\'')
    p.add_argument("--translation-scale-m", type=float, metavar="X",
                   help="metres per action unit, when the file's env_args does not say")
    common(p)
    p.set_defaults(func=_cmd_relabel)

    p = subparsers.add_parser("preview", help="GIF / PNG of one episode",
                              description="Draw an episode's frames with action, intervention and command "
                                          "as an animated GIF (.gif) or a PNG contact sheet (.png).")
    p.add_argument("path", help="input dataset")
    p.add_argument("--episode", required=True, help="episode name (demo_3) or index (3)")
    p.add_argument("-o", "--out", required=True, help="output .gif or .png")
    p.add_argument("--camera", help="one image key of obs/ (default: all cameras side by side)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="draw every N-th step (default 1)")
    p.add_argument("--max-frames", type=int, default=200, help="at most this many frames (default 200)")
    common(p, quiet=False)
    p.set_defaults(func=_cmd_preview)
