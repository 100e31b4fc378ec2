"""Curation of HDF5 talk-and-tweak datasets: ``filter``, ``merge``, ``split`` and ``relabel``.

Every function reads datasets through :mod:`data_tools.hdf5_format` (which validates them) and
writes new ones with :func:`data_tools.hdf5_format.write_dataset`: a temporary file in the
destination folder renamed on success, so an error never leaves a partial output behind. An
existing output is never replaced unless ``force`` is given, and inputs are opened read-only
and never modified (the one exception is ``split(..., in_place=True)``, which asks for it).

Episodes written to a new file are renumbered ``demo_0..`` in order; their ``episode_id``
attribute is kept, so an episode can always be traced back to the session it came from.
Masks (``/mask/<split>``) are carried over with the episode names remapped. Images stored as
this package writes them (one gzip chunk per frame) are read as
:class:`data_tools.hdf5_format.StoredImages` and copied chunk by chunk, byte for byte (each
chunk checked to hold one frame), instead of being decompressed and recompressed; images
stored otherwise are decoded and written in that layout.

Errors on bad arguments or data raise :class:`CurateError` (a
:class:`data_tools.errors.DataToolsError`); malformed files raise
:class:`data_tools.hdf5_format.DatasetFormatError`. Non-fatal surprises (a ``--task`` that is
not in the file, masks dropped by ``merge``, ...) are :class:`CurateWarning` warnings; the
command-line front end (:mod:`data_tools.cli`) prints them as ``warning: ...`` lines on stderr.

``info`` / ``format_info`` (:mod:`data_tools.stats`) and ``preview`` (:mod:`data_tools.preview`)
are importable from here too. The subcommands are :func:`data_tools.cli.add_curate_subcommands`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
import zlib
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from data_tools.errors import CurateError, CurateWarning
from data_tools.hdf5_format import EPISODE_KINDS, Episode, dataset_info, read_episodes, write_dataset
from data_tools.outputs import check_output
from data_tools.preview import preview
from data_tools.stats import format_info, info
from data_tools.talk_tweak import (
    DEFAULT_LABEL,
    DEFAULT_WORDS,
    SIGMA_M,
    WINDOW,
    MissingProposalError,
    check_label,
    label_episode,
    recorded_rule,
    refinement_command,
)

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
]

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------
# helpers


def _check_output(out: PathLike, inputs: Sequence[PathLike], force: bool) -> Path:
    """:func:`data_tools.outputs.check_output` raising :class:`CurateError`."""
    return check_output(out, inputs, force=force, error=CurateError, exists_error=CurateError)


def _progress(total: int, desc: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit="episode", file=sys.stderr, disable=not progress, leave=False)


def _stream(src: Path, names: set[str] | None, desc: str, progress: bool) -> Iterator[Episode]:
    """Episodes of ``src`` (those named in ``names``, or all) in file order, images as stored
    chunks, with a progress bar."""
    total = len(names) if names is not None else len(dataset_info(src).episode_names)
    bar = _progress(total, desc, progress)
    try:
        for ep in read_episodes(src, stored_images=True):
            if names is None or ep.name in names:
                yield ep
                bar.update()
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# filter


def _filter_criteria(
    task: Sequence[str] | str | None, kind: str | None, min_length: int | None, max_length: int | None
) -> list[str] | None:
    """Validate the criteria of :func:`filter_dataset`; return the task list (or None)."""
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
    return tasks


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
    tasks = _filter_criteria(task, kind, min_length, max_length)

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


# env_args keys that say how to read the actions and commands (what relabel and convert --append read): inputs
# that record one must agree on it, and the merged file records it
_CARRIED = {
    "translation_scale_m": "actions would mean different things in one dataset",
    "talk_tweak": "their commands were labelled by different rules; relabel the inputs with the same --window / "
                  "--sigma / --words / --label first",
}


def _describe(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)


def _disagreement(recorded: list[tuple[Path, object]]) -> str:
    """``a.hdf5: 0.01, b.hdf5: 1.0``; for a labelling rule only its fields that differ from the first file's."""
    ref = recorded[0][1]
    if isinstance(ref, dict) and all(isinstance(v, dict) for _, v in recorded):
        fields = sorted({k for _, v in recorded for k in set(v) | set(ref) if v.get(k) != ref.get(k)})
        return "; ".join(f"{s}: " + ", ".join(f"{k} {_describe(v.get(k))}" for k in fields) for s, v in recorded)
    return ", ".join(f"{s}: {_describe(v)}" for s, v in recorded)


def _merge_env_args(srcs: Sequence[Path], env_args: Sequence[dict]) -> dict:
    """The keys equal in every input, the :data:`_CARRIED` keys of the inputs that record them (which must agree),
    and ``"sources"``. Raises :class:`CurateError` naming the files and values that disagree."""
    carried = {}
    for key, why in _CARRIED.items():
        recorded = [(s, recorded_rule(a[key]) if key == "talk_tweak" and isinstance(a[key], dict) else a[key])
                    for s, a in zip(srcs, env_args) if key in a]
        if any(v != recorded[0][1] for _, v in recorded[1:]):
            raise CurateError(f"merge: env_args {key} differs between inputs ({_disagreement(recorded)}); "
                              f"{why}; nothing written")
        if recorded:
            carried[key] = recorded[0][1]
    first = env_args[0]
    common = {
        k: v for k, v in first.items()
        if k != "sources" and all(k in a and a[k] == v for a in env_args[1:])
    }
    return {**common, **carried, "sources": [{"file": s.name, "env_args": a} for s, a in zip(srcs, env_args)]}


def _warn_unrecorded(srcs: Sequence[Path], env_args: Sequence[dict], merged: dict, intervened: dict) -> None:
    """A carried key that some input does not record now covers that input's intervened steps too: say so."""
    for key in _CARRIED:
        if key not in merged:
            continue
        origin = next(s for s, a in zip(srcs, env_args) if key in a)
        for s, a in zip(srcs, env_args):
            if key not in a and intervened.get(s):
                warnings.warn(f"merge: {s} records no env_args {key}; the merged file's (from {origin}) now covers "
                              f"its {intervened[s]} intervened step(s)", CurateWarning, stacklevel=3)


def _merged_episodes(srcs: Sequence[Path], total: int, progress: bool, intervened: dict) -> Iterator[Episode]:
    """The episodes of every input in order; each must have the first one's signature. ``intervened`` gets the
    number of intervened steps per input."""
    ref: tuple[Path, str, dict] | None = None
    bar = _progress(total, "merge", progress)
    try:
        for s in srcs:
            for ep in read_episodes(s, stored_images=True):
                sig = _signature(ep)
                if ref is None:
                    ref = (s, ep.name, sig)
                elif sig != ref[2]:
                    raise CurateError(
                        f"merge: {s}:/data/{ep.name} does not match {ref[0]}:/data/{ref[1]}: "
                        f"{_signature_diff(ref[2], sig)}"
                    )
                intervened[s] = intervened.get(s, 0) + int(np.count_nonzero(ep.intervention))
                yield ep
                bar.update()
    finally:
        bar.close()


def merge(srcs: Sequence[PathLike], out: PathLike, force: bool = False, progress: bool = False) -> int:
    """Concatenate the episodes of several datasets into ``out``; return the number of episodes.

    Episodes are renumbered ``demo_0..`` in input order. fps must agree. Every episode must have
    the same action shape and the same observation keys, shapes and dtypes as the first one
    (otherwise a learner would silently read different things). ``env_args`` becomes
    ``{<keys equal in every input>, "sources": [{"file": <file name>, "env_args": {...}}, ...]}``, plus what
    relabel and ``convert --append`` read, ``translation_scale_m`` and the labelling rule ``talk_tweak``, from
    the inputs that record them: those must agree (a rule recorded before the ``label`` option counts as label
    "action"); an input that records none but has intervened steps is named in a warning. A mask present in every
    input is carried over (names remapped, concatenated); other masks are dropped with a warning.

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
    intervened: dict[Path, int] = {}
    write_dataset(out, _merged_episodes(srcs, offset, progress, intervened), fps=metas[0].fps, env_args=env_args,
                  masks=masks, force=force)
    _warn_unrecorded(srcs, [m.env_args for m in metas], env_args, intervened)
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


def _relabel_words(window: int, sigma: float, words: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """Validate the labelling parameters; return the full word table (defaults filled in)."""
    if int(window) != window or window < 1:
        raise CurateError(f"relabel: window must be an integer >= 1, got {window}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise CurateError(f"relabel: sigma must be a finite number >= 0 (metres), got {sigma}")
    try:
        refinement_command(np.zeros((1, 3)), sigma, words)
    except ValueError as e:
        raise CurateError(f"relabel: {e}") from None
    table = {axis: list(pair) for axis, pair in DEFAULT_WORDS.items()}
    table.update({axis: [str(p) for p in pair] for axis, pair in (words or {}).items()})
    return table


def _relabel_scale(src: Path, env_args: dict, translation_scale_m: float | None) -> float:
    """Metres per action unit: the file's env_args value, else ``translation_scale_m`` (then
    recorded in ``env_args``); an error when neither is there or they disagree."""
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
        return float(file_scale)
    if translation_scale_m is not None:
        if not (math.isfinite(translation_scale_m) and translation_scale_m > 0):
            raise CurateError(f"relabel: translation_scale_m must be > 0, got {translation_scale_m}")
        env_args["translation_scale_m"] = float(translation_scale_m)
        return float(translation_scale_m)
    raise CurateError(
        f"{src}: env_args has no translation_scale_m (action units of dims 0..2 -> metres); "
        "pass --translation-scale-m (e.g. 0.01 for the Metaworld bench, 1.0 if actions are in metres)"
    )


def _relabelled(
    src: Path, window: int, sigma: float, scale: float, words: Mapping[str, Sequence[str]] | None,
    stats: dict, progress: bool, label: str,
) -> Iterator[Episode]:
    """The episodes of ``src`` with new commands on intervened steps; counts go to ``stats``."""
    for ep in _stream(src, None, "relabel", progress):
        if ep.actions.shape[1] < 3:
            raise CurateError(f"{src}:/data/{ep.name}/actions: {ep.actions.shape[1]} dims, "
                              "talk-and-tweak needs 3 translation dims")
        try:
            derived = label_episode(ep.actions, ep.intervention, window, sigma, scale, words,
                                    policy_actions=ep.policy_actions, label=label)
        except MissingProposalError as e:  # label "correction" on an intervened step without a policy action
            default = " (the default)" if label == DEFAULT_LABEL else ""
            raise CurateError(
                f"{src}:/data/{ep.name}: relabel --label {label}{default}: step {e.step} is intervened but its "
                f"policy_actions row is not finite ({e.count} such step(s) in this episode), and label {label!r} "
                "sums executed - proposed; for a dataset without the policy's proposals (e.g. converted from "
                "another runtime's log) pass --label action") from None
        new = [d if iv else old for d, iv, old in zip(derived, ep.intervention, ep.refinement_command)]
        stats["episodes"] += 1
        stats["steps"] += ep.num_samples
        stats["intervened_steps"] += int(np.count_nonzero(ep.intervention))
        stats["changed"] += sum(a != b for a, b in zip(new, ep.refinement_command))
        ep.refinement_command = new
        yield ep


def relabel(
    src: PathLike,
    out: PathLike,
    window: int = WINDOW,
    sigma: float = SIGMA_M,
    words: Mapping[str, Sequence[str]] | None = None,
    translation_scale_m: float | None = None,
    force: bool = False,
    progress: bool = False,
    label: str = DEFAULT_LABEL,
) -> dict:
    """Recompute ``refinement_command`` of every intervened step with other J / sigma / words / label.

    Uses :func:`data_tools.talk_tweak.label_episode` (windows of ``window`` steps cut at the end
    of each intervention segment; ``words`` maps an axis "x"|"y"|"z" to (positive, negative)
    words, defaults for axes not given; ``label``: what Eq. 12 sums, ``"correction"`` (the default,
    :data:`~data_tools.talk_tweak.DEFAULT_LABEL`, as a training run labels online: actions - policy_actions;
    every intervened step needs a finite policy action) or ``"action"`` (the executed actions, Eq. 12 as
    printed; for datasets without proposals). Commands of non-intervened steps are copied unchanged
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
    table = _relabel_words(window, sigma, words)
    try:
        check_label(label)
    except ValueError as e:
        raise CurateError(f"relabel: {e}") from None
    window = int(window)
    meta = dataset_info(src)
    env_args = dict(meta.env_args)
    scale = _relabel_scale(src, env_args, translation_scale_m)
    env_args["talk_tweak"] = {"window": window, "sigma": float(sigma), "label": label,
                              "translation_scale_m": scale, "words": table}
    stats = {"episodes": 0, "steps": 0, "intervened_steps": 0, "changed": 0, "translation_scale_m": scale}
    episodes = _relabelled(src, window, sigma, scale, words, stats, progress, label)
    write_dataset(out, episodes, fps=meta.fps, env_args=env_args, masks=meta.masks, force=force)
    return stats
