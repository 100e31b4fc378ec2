"""Teleoperation log reader (format v1, :mod:`data_tools.teleop_format`): what ``convert`` reads.

:func:`read_session` validates ``session.json`` and lists the episodes; :meth:`Session.read_episode`
validates one episode and returns it as arrays (:class:`LogEpisode`). Errors raise
:class:`~data_tools.errors.TeleopLogError` naming the file and the 1-based line; the one
recoverable defect is a truncated final line (no trailing newline and not valid JSON): it is
dropped with a :class:`~data_tools.errors.TeleopLogWarning` naming file and line.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .errors import TeleopLogError, TeleopLogWarning
from .teleop_format import (
    EPISODES_DIR,
    SESSION_FILE,
    STEPS_FILE,
    SessionMeta,
    StepChecker,
    check_name,
    png_name,
    validate_meta,
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale + alpha", 6: "RGBA"}


def _read_meta(session_dir: Path) -> SessionMeta:
    path = session_dir / SESSION_FILE
    if not session_dir.exists():
        raise TeleopLogError(session_dir, "not a session folder (no such directory)")
    if not session_dir.is_dir():
        raise TeleopLogError(session_dir, "not a session folder (give the folder that holds session.json)")
    if not path.is_file():
        raise TeleopLogError(path, "missing: a session folder must hold session.json")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise TeleopLogError(path, f"not valid UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise TeleopLogError(path, f"cannot be read ({e.strerror})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise TeleopLogError(path, f"not valid JSON: {e.msg} (column {e.colno})", e.lineno) from None
    return validate_meta(raw, path)


class _StepReader:
    """Iterates the validated records of one steps.jsonl; ``truncated`` is set once seen."""

    def __init__(self, path: Path, meta: SessionMeta):
        self.path = path
        self.meta = meta
        self.truncated = False

    def __iter__(self) -> Iterator[dict]:
        path = self.path
        checker = StepChecker(self.meta, path)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise TeleopLogError(path, "missing: every episode folder must hold steps.jsonl") from None
        except OSError as e:
            raise TeleopLogError(path, f"cannot be read ({e.strerror})") from None
        n = 0
        with f:
            for lineno, raw in enumerate(f, start=1):
                complete = raw.endswith(b"\n")
                try:
                    text = raw.decode("utf-8")
                    rec = json.loads(text)
                except UnicodeDecodeError as e:
                    if not complete:
                        self._truncated(lineno, n)
                        break
                    raise TeleopLogError(
                        path, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})", lineno
                    ) from None
                except json.JSONDecodeError as e:
                    if not complete:
                        self._truncated(lineno, n)
                        break
                    if not text.strip():
                        raise TeleopLogError(path, "empty line", lineno) from None
                    raise TeleopLogError(path, f"not valid JSON: {e.msg} (column {e.colno})", lineno) from None
                yield checker.check(rec, lineno)
                n += 1
        if n == 0:
            raise TeleopLogError(path, "empty episode: no complete step")

    def _truncated(self, lineno: int, kept: int) -> None:
        self.truncated = True
        warnings.warn(
            f"{self.path}:{lineno}: truncated final line (no newline, not valid JSON; a crash while "
            f"writing?) dropped; kept the {kept} complete step(s) before it",
            TeleopLogWarning,
            stacklevel=2,
        )


def iter_step_records(steps_path: str | os.PathLike, meta: SessionMeta) -> Iterator[dict]:
    """Stream the validated step records (dicts) of one ``steps.jsonl``, in order.

    Raises :class:`TeleopLogError` ``"<file>:<line>: ..."`` at the first invalid line; a final
    line without newline that is not valid JSON (a crash mid-write) is dropped with a
    :class:`TeleopLogWarning`. An episode without any complete step is an error.
    """
    return iter(_StepReader(Path(steps_path), meta))


def png_header(path: Path) -> tuple[int, int]:
    """(height, width) of an 8-bit RGB PNG from its IHDR chunk; ValueError if it is not one."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError("unreadable PNG (not a PNG file)")
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    bit_depth, color_type = head[24], head[25]
    if bit_depth != 8 or color_type != 2:
        kind = _PNG_COLOUR_TYPES.get(color_type, f"colour type {color_type}")
        raise ValueError(f"not an 8-bit RGB PNG ({bit_depth}-bit {kind})")
    return height, width


def decode_png(path: str | os.PathLike, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Decode an 8-bit RGB PNG to uint8 (H, W, 3); ValueError if unreadable or not ``shape``."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                raise ValueError(f"mode {im.mode}, expected RGB")
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"unreadable PNG ({e})") from None
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"image is {arr.shape[1]}x{arr.shape[0]}, expected {shape[1]}x{shape[0]}")
    return arr


@dataclass
class LogEpisode:
    """One episode of a log as arrays (N steps, A = action_dim).

    ``steps`` (N,) int64; ``t`` (N,) float64; ``tasks``: N strings; ``obs[key]``: (N, d)
    float32; ``actions`` (N, A) float32; ``policy_actions`` (N, A) float32, NaN rows where the
    log has null; ``intervention`` / ``dones`` (N,) bool; ``commands``: N items, the spoken
    command or None; ``rewards`` (N,) float32. ``image_paths[camera]``: N PNG paths;
    ``image_shapes[camera]``: (H, W, 3); ``images[camera]``: (N, H, W, 3) uint8 once loaded
    (eagerly by ``Session.episodes(load_images=True)`` or by :meth:`load_images`).
    ``truncated`` is True when a partial final line was dropped.
    """

    episode_id: str
    path: Path
    steps: np.ndarray
    t: np.ndarray
    tasks: list[str]
    obs: dict[str, np.ndarray]
    actions: np.ndarray
    policy_actions: np.ndarray
    intervention: np.ndarray
    commands: list[str | None]
    rewards: np.ndarray
    dones: np.ndarray
    image_paths: dict[str, list[Path]]
    image_shapes: dict[str, tuple[int, int, int]]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def steps_path(self) -> Path:
        return self.path / STEPS_FILE

    @property
    def has_policy_action(self) -> np.ndarray:
        """(N,) bool: the log holds a policy action for the step."""
        return ~np.isnan(self.policy_actions).any(axis=1)

    def load_images(self, workers: int | None = None, executor: ThreadPoolExecutor | None = None
                    ) -> dict[str, np.ndarray]:
        """Decode every PNG into ``self.images`` ((N, H, W, 3) uint8 per camera) and return it.

        Decoding runs on ``executor`` (or a pool of ``workers`` threads; PIL releases the GIL).
        Raises :class:`TeleopLogError` naming the PNG, the steps file and the step's line.
        """
        out = {cam: np.empty((len(self), *shape), np.uint8) for cam, shape in self.image_shapes.items()}
        jobs = [(cam, i) for cam in self.image_paths for i in range(len(self))]
        if not jobs:
            return self.images

        def one(job):
            cam, i = job
            try:
                out[cam][i] = decode_png(self.image_paths[cam][i], self.image_shapes[cam])
            except ValueError as e:
                raise TeleopLogError(self.steps_path, f"camera {cam!r}: {self.image_paths[cam][i]}: {e}",
                                     i + 1) from None

        own = executor is None and (workers or 1) > 1
        pool = ThreadPoolExecutor(workers) if own else executor
        try:
            if pool is None:
                for job in jobs:
                    one(job)
            else:
                for fut in [pool.submit(one, job) for job in jobs]:
                    fut.result()
        finally:
            if own:
                pool.shutdown(cancel_futures=True)
        self.images = out
        return out


@dataclass(frozen=True)
class Session:
    """A validated session: ``session.json`` content and the episode ids found on disk.

    Episode ids are the sub-folders of ``episodes/`` (hidden entries and plain files are
    ignored), in natural order (``ep2`` before ``ep10``).
    """

    path: Path
    meta: SessionMeta
    episode_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name

    fps = property(lambda self: self.meta.fps)
    robot = property(lambda self: self.meta.robot)
    action_dim = property(lambda self: self.meta.action_dim)
    translation_scale_m = property(lambda self: self.meta.translation_scale_m)
    cameras = property(lambda self: self.meta.cameras)

    def episode_path(self, episode_id: str) -> Path:
        return self.path / EPISODES_DIR / episode_id

    def iter_steps(self, episode_id: str) -> Iterator[dict]:
        """Stream the validated step records of one episode (see :func:`iter_step_records`)."""
        return iter_step_records(self.episode_path(episode_id) / STEPS_FILE, self.meta)

    def read_episode(self, episode_id: str, load_images: bool = True, check_images: bool = True,
                     workers: int | None = None) -> LogEpisode:
        """Read and validate one episode (see :class:`LogEpisode`).

        ``check_images``: every step's PNG exists and its header says 8-bit RGB of the size of
        the episode's first frame of that camera (cheap; the pixels are decoded only when
        ``load_images``). Errors name the steps file and the 1-based line of the step.
        """
        epath = self.episode_path(episode_id)
        if not epath.is_dir():
            raise TeleopLogError(epath, "no such episode folder")
        steps_path = epath / STEPS_FILE
        self._check_folders(epath)
        reader = _StepReader(steps_path, self.meta)
        recs = list(reader)
        truncated = reader.truncated
        n = len(recs)
        adim = self.meta.action_dim
        keys = list(recs[0]["obs"])
        obs = {k: np.array([r["obs"][k] for r in recs], dtype=np.float32) for k in keys}
        policy = np.full((n, adim), np.nan, np.float32)
        for i, r in enumerate(recs):
            if r["policy_action"] is not None:
                policy[i] = r["policy_action"]
        paths, shapes = self._image_paths(epath, recs, check_images)
        ep = LogEpisode(
            episode_id=episode_id,
            path=epath,
            steps=np.array([r["step"] for r in recs], np.int64),
            t=np.array([r["t"] for r in recs], np.float64),
            tasks=[r["task"] for r in recs],
            obs=obs,
            actions=np.array([r["action"] for r in recs], np.float32).reshape(n, adim),
            policy_actions=policy,
            intervention=np.array([r["intervention"] for r in recs], bool),
            commands=[r["command"] for r in recs],
            rewards=np.array([r["reward"] for r in recs], np.float32),
            dones=np.array([r["done"] for r in recs], bool),
            image_paths=paths,
            image_shapes=shapes,
            truncated=truncated,
        )
        if load_images:
            if not check_images:
                for cam in self.meta.cameras:
                    ep.image_shapes[cam] = decode_png(paths[cam][0]).shape
            ep.load_images(workers)
        return ep

    def _image_paths(
        self, epath: Path, recs: list[dict], check_images: bool
    ) -> tuple[dict[str, list[Path]], dict[str, tuple[int, int, int]]]:
        """Every step's PNG per camera (must exist); with ``check_images`` their headers must say
        8-bit RGB of the first frame's size, which goes into the returned shapes."""
        steps_path = epath / STEPS_FILE
        paths: dict[str, list[Path]] = {}
        shapes: dict[str, tuple[int, int, int]] = {}
        for cam in self.meta.cameras:
            cdir = epath / cam
            names = set(os.listdir(cdir))
            plist = []
            for i, r in enumerate(recs):
                name = png_name(r["step"])
                p = cdir / name
                if name not in names:
                    raise TeleopLogError(steps_path, f"camera {cam!r}: image {p} is missing", i + 1)
                if check_images:
                    try:
                        hw = png_header(p)
                    except (OSError, ValueError) as e:
                        raise TeleopLogError(steps_path, f"camera {cam!r}: {p}: {e}", i + 1) from None
                    if cam not in shapes:
                        shapes[cam] = (*hw, 3)
                    elif shapes[cam][:2] != hw:
                        raise TeleopLogError(
                            steps_path,
                            f"camera {cam!r}: {p}: image is {hw[1]}x{hw[0]}, expected "
                            f"{shapes[cam][1]}x{shapes[cam][0]} (the episode's first frame)",
                            i + 1,
                        )
                plist.append(p)
            paths[cam] = plist
        return paths, shapes

    def _check_folders(self, epath: Path) -> None:
        for cam in self.meta.cameras:
            if not (epath / cam).is_dir():
                raise TeleopLogError(
                    epath / cam, f"camera {cam!r} is listed in {self.path / SESSION_FILE} but its folder is missing"
                )
        for entry in os.scandir(epath):
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in self.meta.cameras:
                raise TeleopLogError(
                    entry.path,
                    f"folder {entry.name!r} is not a camera listed in {self.path / SESSION_FILE} "
                    f"(cameras: {list(self.meta.cameras)})",
                )

    def episodes(self, load_images: bool = True, workers: int | None = None) -> Iterator[LogEpisode]:
        """Yield every episode (validated), images decoded when ``load_images``."""
        for eid in self.episode_ids:
            yield self.read_episode(eid, load_images=load_images, workers=workers)


def _natural_key(s: str):
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s) if p]


def read_session(path: str | os.PathLike) -> Session:
    """Open a session folder: validate ``session.json`` and list its episodes.

    ``session.json`` must have ``format`` = "dual-actor-teleop-log", ``version`` = 1, ``fps`` > 0,
    a non-empty ``robot``, an integer ``action_dim`` >= 1, ``translation_scale_m`` > 0 and
    ``cameras`` (unique names). Episodes are validated when read (:meth:`Session.episodes`).
    Raises :class:`TeleopLogError` naming the file (and line for JSON syntax errors).
    """
    path = Path(path)
    meta = _read_meta(path)
    edir = path / EPISODES_DIR
    ids: list[str] = []
    if edir.is_dir():
        for entry in os.scandir(edir):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            check_name(entry.name, "episode folder", edir)
            ids.append(entry.name)
    elif edir.exists():
        raise TeleopLogError(edir, "not a folder")
    ids.sort(key=_natural_key)
    return Session(path, meta, tuple(ids))
