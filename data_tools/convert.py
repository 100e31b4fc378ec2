"""Teleoperation logs (format v1) -> HDF5 talk-and-tweak dataset (``hdf5_format``).

Per episode the dataset gets ``obs/<key>`` for every low-dim obs key of the log (float32),
``obs/<camera>`` (uint8 (N, H, W, 3), chunked per frame + compressed), ``actions``,
``policy_actions`` (NaN where the log has null), ``intervention``, ``rewards``, ``dones`` and
``refinement_command``: on an intervened step the command the operator spoke where the log has one, else
the talk-and-tweak label of :func:`data_tools.talk_tweak.label_episode`; ``"[null]"`` on steps without
intervention (a command spoken without a take-over is in the log, not a label): what the robot runtime stores
in its buffers for the same steps. Attributes: ``task`` (one task per episode), ``robot``, ``kind`` and
``episode_id`` = ``"<session folder>/<episode id>"``, plus ``session`` and
``translation_scale_m``.

Episode kind: a session in which any step has a ``policy_action`` or an intervention was
recorded with a policy acting, so all its episodes are ``"online"``; a session without either
is pure teleoperation, so all its episodes are ``"demo"``.

Safety: every input is validated before anything is written (JSON lines, values, PNG
presence, headers and sizes, cross-session consistency). A new dataset is written to a
temporary file renamed on success; the pixels are decoded while writing, so a PNG whose body
is corrupt aborts the write and the temporary file is deleted. ``append`` decodes every PNG
once before it touches the dataset, then adds groups in place (rolled back on failure).
Inputs are only ever opened for reading.

Speed: decoding the PNGs (PIL) is most of the work and runs in a thread pool, one episode ahead
of the writer. PIL releases the GIL while it inflates and unfilters (measured with ``py-spy
--gil``: the GIL is held for ~17% of ``decode_png``, in PIL's Python chunk handling and
``tobytes``), so threads keep every core busy; a process pool would add ~0.1 s of imports per
worker and a copy of every frame between processes. Chunk compression (``hdf5_format``) runs in
threads too.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from . import talk_tweak
from .errors import DataToolsError, TeleopLogError
from .hdf5_format import DatasetInfo, Episode, append_episodes, dataset_info, read_episodes, write_dataset
from .outputs import check_output
from .teleop_format import FORMAT, SESSION_FILE
from .teleop_reader import LogEpisode, Session, decode_png, read_session

SOURCE = FORMAT  # env_args "source": the log format the episodes were converted from


@dataclass
class ConvertSummary:
    """What :func:`convert` wrote. ``input_bytes``: size of the session trees read."""

    out: Path
    sessions: int
    episodes: int
    steps: int
    kinds: dict[str, int]
    episode_names: list[str]
    truncated: list[str] = field(default_factory=list)
    input_bytes: int = 0
    seconds: float = 0.0
    appended: bool = False

    def __str__(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items()))
        verb = "appended to" if self.appended else "wrote"
        return (
            f"{verb} {self.out}: {self.episodes} episodes ({kinds}), {self.steps} steps from "
            f"{self.sessions} session(s) in {self.seconds:.1f} s"
        )


@dataclass
class _Planned:
    session: Session
    log: LogEpisode
    kind: str
    commands: list[str]


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _check_options(window: int, sigma: float, words, label: str) -> None:
    try:
        talk_tweak.check_label(label)
    except ValueError as e:
        raise DataToolsError(str(e)) from None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise DataToolsError(f"window must be an integer >= 1, got {window!r}")
    if not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise DataToolsError(f"sigma must be a finite number >= 0 (metres), got {sigma!r}")
    try:
        talk_tweak.command_vocabulary(words)
    except (ValueError, TypeError) as e:
        raise DataToolsError(f"words: {e}") from None


def _missing_proposal(label: str, e: talk_tweak.MissingProposalError) -> str:
    """The error for an intervened step without a logged ``policy_action`` under label "correction"."""
    default = " (the default)" if label == talk_tweak.DEFAULT_LABEL else ""
    return (f"--label {label}{default}: step {e.step} is intervened but has no policy_action "
            f"({e.count} such step(s) in this episode), and label {label!r} sums executed - proposed; "
            "for a log without the policy's proposals (e.g. from another runtime) pass --label action")


def _layout(log: LogEpisode) -> tuple:
    return {k: v.shape[1] for k, v in log.obs.items()}, dict(log.image_shapes)


def _plan(
    sessions: Sequence[Session], window: int, sigma: float, words, progress: bool, label: str
) -> tuple[list[_Planned], list[str]]:
    """Pass 1: read and validate every episode (low-dim data, PNG presence/headers), label."""
    planned: list[_Planned] = []
    truncated: list[str] = []
    ref_layout = ref_where = None
    n_eps = sum(len(s.episode_ids) for s in sessions)
    with tqdm(total=n_eps, desc="checking", unit="ep", disable=not progress, leave=False) as bar:
        for s in sessions:
            if not s.episode_ids:
                raise TeleopLogError(s.path / "episodes", "no episodes in this session")
            logs = []
            for eid in s.episode_ids:
                log = s.read_episode(eid, load_images=False, check_images=True)
                first_task = log.tasks[0]
                for i, task in enumerate(log.tasks):
                    if task != first_task:
                        raise TeleopLogError(
                            log.steps_path,
                            f"task changes from {first_task!r} to {task!r} (one task per episode)",
                            i + 1,
                        )
                layout = _layout(log)
                if ref_layout is None:
                    ref_layout, ref_where = layout, log.steps_path
                elif layout != ref_layout:
                    raise TeleopLogError(
                        log.steps_path,
                        f"observation layout (obs dims {layout[0]}, image shapes {layout[1]}) differs from "
                        f"{ref_where} (obs dims {ref_layout[0]}, image shapes {ref_layout[1]})",
                        1,
                    )
                if log.truncated:
                    truncated.append(str(log.steps_path))
                logs.append(log)
                bar.update(1)
            online = any(lg.intervention.any() or lg.has_policy_action.any() for lg in logs)
            needs_label = any(lg.intervention.any() for lg in logs)
            if needs_label and s.action_dim < 3:
                raise TeleopLogError(
                    s.path / SESSION_FILE,
                    f"action_dim {s.action_dim}: talk-and-tweak labelling needs action dims 0..2 to be "
                    "the translation",
                )
            for lg in logs:
                try:
                    derived = talk_tweak.label_episode(
                        lg.actions, lg.intervention, window, sigma, s.translation_scale_m, words,
                        policy_actions=lg.policy_actions, label=label,
                    )
                except talk_tweak.MissingProposalError as e:  # line L holds step L-1
                    raise TeleopLogError(lg.steps_path, _missing_proposal(label, e), e.step + 1) from None
                # the command the operator spoke on an intervened step, else the rule's label: what the robot
                # runtime stores (a command spoken without a take-over labels no step: "[null]", Eq. 13)
                commands = [spoken if (spoken is not None and intv) else d
                            for spoken, intv, d in zip(lg.commands, lg.intervention, derived)]
                planned.append(_Planned(s, lg, "online" if online else "demo", commands))
    return planned, truncated


def _start_decoding(log: LogEpisode, pool: ThreadPoolExecutor) -> tuple[dict[str, np.ndarray], list[Future]]:
    n = len(log)
    arrays = {cam: np.empty((n, *shape), np.uint8) for cam, shape in log.image_shapes.items()}

    def one(cam: str, i: int) -> None:
        try:
            arrays[cam][i] = decode_png(log.image_paths[cam][i], log.image_shapes[cam])
        except ValueError as e:
            raise TeleopLogError(log.steps_path, f"camera {cam!r}: {log.image_paths[cam][i]}: {e}", i + 1) from None

    futures = [pool.submit(one, cam, i) for cam in arrays for i in range(n)]
    return arrays, futures


def _verify_pixels(planned: list[_Planned], pool: ThreadPoolExecutor, progress: bool) -> None:
    """Decode every PNG once without keeping it (append mode: the file is touched only after)."""

    def one(log: LogEpisode, cam: str, i: int) -> None:
        try:
            decode_png(log.image_paths[cam][i], log.image_shapes[cam])
        except ValueError as e:
            raise TeleopLogError(log.steps_path, f"camera {cam!r}: {log.image_paths[cam][i]}: {e}", i + 1) from None

    n = sum(len(p.log) for p in planned)
    with tqdm(total=n, desc="checking images", unit="step", disable=not progress, leave=False) as bar:
        for p in planned:
            futures = [pool.submit(one, p.log, cam, i) for cam in p.log.image_paths for i in range(len(p.log))]
            try:
                for fut in futures:
                    fut.result()
            finally:
                for fut in futures:
                    fut.cancel()
            bar.update(len(p.log))


def _episodes(planned: list[_Planned], pool: ThreadPoolExecutor, bar: tqdm, prefetch: int = 1) -> Iterator[Episode]:
    """Pass 2: decode the PNGs (threads, ``prefetch`` episodes ahead) and yield HDF5 episodes."""
    queue: deque = deque()
    nxt = 0

    def fill() -> None:
        nonlocal nxt
        while nxt < len(planned) and len(queue) <= prefetch:
            queue.append((planned[nxt], *_start_decoding(planned[nxt].log, pool)))
            nxt += 1

    try:
        fill()
        while queue:
            p, images, futures = queue.popleft()
            for fut in futures:
                fut.result()
            fill()
            log = p.log
            yield Episode(
                obs={**log.obs, **images},
                actions=log.actions,
                rewards=log.rewards,
                dones=log.dones,
                task=log.tasks[0],
                robot=p.session.robot,
                kind=p.kind,
                episode_id=f"{p.session.name}/{log.episode_id}",
                policy_actions=log.policy_actions,
                intervention=log.intervention,
                refinement_command=p.commands,
                extra_attrs={"session": p.session.name, "translation_scale_m": p.session.translation_scale_m},
            )
            bar.update(len(log))
    finally:
        for _, _, futures in queue:
            for fut in futures:
                fut.cancel()


def _check_arguments(paths: list[Path], out: Path, append: bool, force: bool) -> None:
    """Validate: sessions given once each, the output not inside one, of the right kind and
    (unless appending) not existing without ``force``."""
    if not paths:
        raise DataToolsError("no session given")
    if append and force:
        raise DataToolsError("--append and --force exclude each other")
    seen: set[Path] = set()
    for p in paths:
        if p.resolve() in seen:
            raise DataToolsError(f"{p}: session given twice")
        seen.add(p.resolve())
    check_output(out, paths, force=force or append, noun="session", exists_hint=", or --append")
    if append and not out.exists():
        raise DataToolsError(f"{out}: --append needs an existing dataset (leave it out to create one)")


def _check_sessions_agree(opened: Sequence[Session]) -> None:
    """One dataset holds one fps, action layout, action scale and camera set."""
    ref = opened[0]
    for s in opened[1:]:
        for attr in ("fps", "action_dim", "translation_scale_m"):
            if getattr(s, attr) != getattr(ref, attr):
                raise TeleopLogError(
                    s.path / SESSION_FILE,
                    f"{attr} {getattr(s, attr)!r} differs from {getattr(ref, attr)!r} in {ref.path / SESSION_FILE} "
                    "(one dataset holds one fps, action layout and action scale)",
                )
        if set(s.cameras) != set(ref.cameras):
            raise TeleopLogError(
                s.path / SESSION_FILE,
                f"cameras {list(s.cameras)} differ from {list(ref.cameras)} in {ref.path / SESSION_FILE}",
            )


def _check_append_target(out: Path, info: DatasetInfo, ref: Session) -> None:
    """The dataset appended to must have the sessions' fps and action scale."""
    if float(info.fps) != float(ref.fps):
        raise DataToolsError(f"{out}: dataset fps {info.fps:g} differs from the sessions' fps {ref.fps:g}")
    if info.env_args.get("translation_scale_m", ref.translation_scale_m) != ref.translation_scale_m:
        raise DataToolsError(
            f"{out}: dataset translation_scale_m {info.env_args['translation_scale_m']!r} differs from the "
            f"sessions' {ref.translation_scale_m!r}"
        )


def _check_append_labelling(out: Path, info: DatasetInfo, labelling: dict) -> None:
    """Commands appended must follow the rule the dataset's commands were labelled with."""
    if "talk_tweak" in info.env_args:
        stored = talk_tweak.recorded_rule(info.env_args["talk_tweak"])
        differ = {k: (stored.get(k), v) for k, v in labelling.items() if stored.get(k) != v}
        if differ:
            listed = ", ".join(f"{k} {a!r} (now {b!r})" for k, (a, b) in differ.items())
            raise DataToolsError(
                f"{out}: its commands were labelled with {listed}; append with the same --window / --sigma / "
                "--words / --label, or relabel the dataset afterwards"
            )


def _check_episode_ids(planned: Sequence[_Planned], existing_ids: set[str], out: Path) -> None:
    ids = Counter(f"{p.session.name}/{p.log.episode_id}" for p in planned)
    dup = sorted(k for k, c in ids.items() if c > 1)
    if dup:
        raise DataToolsError(f"episode id(s) {dup[:3]} come from two sessions with the same folder name")
    clash = sorted(set(ids) & existing_ids)
    if clash:
        raise DataToolsError(f"{out}: already holds episode(s) {clash[:3]} (appending the same session twice?)")


def _labelling(window: int, sigma: float, words, translation_scale_m: float, label: str) -> dict:
    """The talk-and-tweak parameters recorded in env_args ``"talk_tweak"``."""
    return {
        "window": window,
        "sigma": float(sigma),
        "label": label,
        "translation_scale_m": translation_scale_m,
        "words": {k: list(v) for k, v in {**talk_tweak.DEFAULT_WORDS, **dict(words or {})}.items()},
    }


def _write(
    planned: list[_Planned], out: Path, append: bool, force: bool, fps: float, env_args: dict,
    workers: int | None, progress: bool,
) -> list[str]:
    """Pass 2: decode the PNGs and write (or append) the episodes; return their names."""
    n_steps = sum(len(p.log) for p in planned)
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        if append:
            _verify_pixels(planned, pool, progress)
        with tqdm(total=n_steps, desc="converting", unit="step", disable=not progress) as bar:
            episodes = _episodes(planned, pool, bar)
            try:
                if append:
                    return append_episodes(out, episodes)
                write_dataset(out, episodes, fps=fps, env_args=env_args, force=force)
                return [f"demo_{k}" for k in range(len(planned))]
            finally:
                episodes.close()


def convert(
    sessions: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    append: bool = False,
    force: bool = False,
    window: int = talk_tweak.WINDOW,
    sigma: float = talk_tweak.SIGMA_M,
    words: Mapping[str, Sequence[str]] | None = None,
    progress: bool = True,
    workers: int | None = None,
    label: str = talk_tweak.DEFAULT_LABEL,
) -> ConvertSummary:
    """Convert teleoperation log sessions into one HDF5 talk-and-tweak dataset at ``out``.

    ``window`` (J) / ``sigma`` (metres) / ``words``: the talk-and-tweak rule for steps where the
    operator intervened without speaking; ``label``: what Eq. 12 sums, ``"correction"`` (the default,
    :data:`~data_tools.talk_tweak.DEFAULT_LABEL`, as the training run labels online: executed minus the
    logged ``policy_action``, which every intervened step must then have) or ``"action"`` (the executed
    actions, Eq. 12 as printed; for logs without proposals). ``append``: add the episodes to the existing dataset
    ``out`` in place (same fps and layout required; an episode already in it, by
    ``episode_id``, is refused). Otherwise ``out`` must not exist unless ``force``.
    ``workers``: PNG decoding threads (default ``min(8, cpu count)``; see the module docstring
    for why threads). ``progress``: tqdm bars on stderr.

    Raises :class:`~data_tools.errors.TeleopLogError` (file and line) for a bad log,
    :class:`~data_tools.errors.DataToolsError` for bad arguments / incompatible inputs,
    :class:`~data_tools.errors.OutputExistsError` (a ``FileExistsError``) when ``out`` exists
    without ``force``, and :class:`~data_tools.hdf5_format.DatasetFormatError` for a bad
    dataset to append to. On any error no output file is left (append: the file is as before).
    """
    t0 = time.perf_counter()
    _check_options(window, sigma, words, label)
    out, paths = Path(out), [Path(s) for s in sessions]
    _check_arguments(paths, out, append, force)
    info = dataset_info(out) if append else None
    existing_ids = {ep.episode_id for ep in read_episodes(out, load_images=False)} if append else set()

    opened = [read_session(p) for p in paths]
    planned, truncated = _plan(opened, window, sigma, words, progress, label)  # each session on its own
    _check_sessions_agree(opened)
    ref = opened[0]
    if append:
        _check_append_target(out, info, ref)
    _check_episode_ids(planned, existing_ids, out)
    labelling = _labelling(window, sigma, words, ref.translation_scale_m, label)
    if append:
        _check_append_labelling(out, info, labelling)
    env_args = {
        "source": SOURCE,
        "robots": sorted({s.robot for s in opened}),
        "cameras": list(ref.cameras),
        "sessions": [s.name for s in opened],
        "translation_scale_m": ref.translation_scale_m,
        "talk_tweak": labelling,
    }
    names = _write(planned, out, append, force, ref.fps, env_args, workers, progress)
    return ConvertSummary(
        out=out,
        sessions=len(opened),
        episodes=len(planned),
        steps=sum(len(p.log) for p in planned),
        kinds=dict(Counter(p.kind for p in planned)),
        episode_names=names,
        truncated=truncated,
        input_bytes=sum(_tree_bytes(s.path) for s in opened),
        seconds=time.perf_counter() - t0,
        appended=append,
    )
