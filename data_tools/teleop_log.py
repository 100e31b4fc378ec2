"""Teleoperation log format, version 1: writer (used by the robot runtime) and validating reader.

Layout (``docs/teleop-log-format.md``; DESIGN.md "Teleoperation log format")::

    <session>/session.json   {"format": "dual-actor-teleop-log", "version": 1, "fps": 10,
                              "robot": "...", "action_dim": 7, "translation_scale_m": 1.0,
                              "cameras": ["wrist", "head"]}
    <session>/episodes/<episode_id>/steps.jsonl        one JSON object per control step
    <session>/episodes/<episode_id>/<camera>/<step:06d>.png

A step line holds exactly the keys ``step, t, task, obs, action, policy_action, intervention,
command, reward, done``. The writer appends one line per step and flushes it (optionally
``fsync``), after the step's PNGs are in place, so a crash loses at most the last, partial line.
The reader validates everything and raises :class:`~data_tools.errors.TeleopLogError` naming the
file and the 1-based line; the one recoverable defect is a truncated final line (no trailing
newline and not valid JSON): it is dropped with a :class:`TeleopLogWarning` naming file and line.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from .atomic import atomic_write_bytes
from .errors import DataToolsWarning, TeleopLogError

FORMAT = "dual-actor-teleop-log"
VERSION = 1
SESSION_FILE = "session.json"
EPISODES_DIR = "episodes"
STEPS_FILE = "steps.jsonl"
STAGING_DIR = ".staging"  # episodes being written (SessionWriter(staging=True)); never read
PROPRIO_KEY = "proprio"
STEP_KEYS = ("step", "t", "task", "obs", "action", "policy_action", "intervention", "command", "reward", "done")
SESSION_KEYS = ("format", "version", "fps", "robot", "action_dim", "translation_scale_m", "cameras")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_F32_MAX = float(np.finfo(np.float32).max)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale + alpha", 6: "RGBA"}


class TeleopLogWarning(DataToolsWarning):
    """A recoverable defect in a log (a truncated final line); the message names file and line."""


def png_name(step: int) -> str:
    """File name of a step's image inside ``<episode>/<camera>/``: ``000042.png``."""
    return f"{step:06d}.png"


def _check_name(value: Any, what: str, path: Path, line: int | None = None) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise TeleopLogError(
            path, f"{what} {value!r} is not a valid name (letters, digits, '_', '.', '-'; no leading '.')", line
        )
    return value


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


# --------------------------------------------------------------------------------------------
# session.json
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionMeta:
    """The validated content of ``session.json``; ``extra`` keeps any further keys verbatim."""

    fps: float
    robot: str
    action_dim: int
    translation_scale_m: float
    cameras: tuple[str, ...]
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "fps": int(self.fps) if float(self.fps).is_integer() else self.fps,
            "robot": self.robot,
            "action_dim": self.action_dim,
            "translation_scale_m": self.translation_scale_m,
            "cameras": list(self.cameras),
            **self.extra,
        }


def _validate_meta(raw: Any, path: Path) -> SessionMeta:
    if not isinstance(raw, dict):
        raise TeleopLogError(path, f"expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in SESSION_KEYS if k not in raw]
    if "format" not in missing and raw["format"] != FORMAT:
        raise TeleopLogError(path, f"'format' is {raw['format']!r}, expected {FORMAT!r}")
    if "version" not in missing and not (type(raw["version"]) is int and raw["version"] == VERSION):
        raise TeleopLogError(
            path, f"format version {raw['version']!r} is not supported (this reader reads version {VERSION})"
        )
    if missing:
        raise TeleopLogError(path, f"missing key(s) {', '.join(map(repr, missing))}")
    fps = raw["fps"]
    if not _is_number(fps) or not math.isfinite(fps) or fps <= 0:
        raise TeleopLogError(path, f"'fps' must be a positive number, got {fps!r}")
    robot = raw["robot"]
    if not isinstance(robot, str) or not robot:
        raise TeleopLogError(path, f"'robot' must be a non-empty string, got {robot!r}")
    adim = raw["action_dim"]
    if type(adim) is not int or adim < 1:
        raise TeleopLogError(path, f"'action_dim' must be a positive integer, got {adim!r}")
    scale = raw["translation_scale_m"]
    if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
        raise TeleopLogError(path, f"'translation_scale_m' must be a positive number, got {scale!r}")
    cams = raw["cameras"]
    if not isinstance(cams, list):
        raise TeleopLogError(path, f"'cameras' must be a list of names, got {cams!r}")
    for c in cams:
        _check_name(c, "camera", path)
    if len(set(cams)) != len(cams):
        raise TeleopLogError(path, f"'cameras' lists a camera twice: {cams!r}")
    extra = {k: v for k, v in raw.items() if k not in SESSION_KEYS}
    return SessionMeta(float(fps), robot, adim, float(scale), tuple(cams), extra)


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
    return _validate_meta(raw, path)


# --------------------------------------------------------------------------------------------
# one step line: shared by the writer (before writing) and the reader
# --------------------------------------------------------------------------------------------


def _numbers(value: Any, what: str, path: Path, line: int, length: int | None, why: str = "") -> list:
    if not isinstance(value, list):
        raise TeleopLogError(path, f"{what} must be a list of numbers, got {type(value).__name__}", line)
    if length is not None and len(value) != length:
        raise TeleopLogError(path, f"{what} has {len(value)} values, expected {length}{why}", line)
    for i, v in enumerate(value):
        if not _is_number(v):
            raise TeleopLogError(path, f"{what}[{i}] is {v!r}, not a number", line)
        if not math.isfinite(v):
            raise TeleopLogError(path, f"{what}[{i}] is {v!r} (values must be finite)", line)
        if abs(v) > _F32_MAX:
            raise TeleopLogError(path, f"{what}[{i}] = {v!r} is out of float32 range", line)
    return value


def _text(value: Any, what: str, path: Path, line: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TeleopLogError(path, f"{what} must be a non-empty string, got {value!r}", line)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TeleopLogError(path, f"{what} is not valid Unicode text (lone surrogate escape)", line) from None
    return value


class _StepChecker:
    """Validates the step records of one episode in order; remembers what the first step fixed."""

    def __init__(self, meta: SessionMeta, path: Path):
        self.meta = meta
        self.path = path
        self.expected_step = 0
        self.last_t = -math.inf
        self.obs_dims: dict[str, int] | None = None
        self.done_at: int | None = None

    def check(self, rec: Any, line: int) -> dict:
        """Validate step record ``rec`` (1-based ``line``) and advance; return ``rec``."""
        self._check_keys(rec, line)
        self._check_order(rec["step"], rec["t"], line)
        _text(rec["task"], "'task'", self.path, line)
        self._check_obs(rec["obs"], line)
        self._check_values(rec, line)
        self.expected_step += 1
        self.last_t = rec["t"]
        if rec["done"]:
            self.done_at = rec["step"]
        return rec

    def _check_keys(self, rec: Any, line: int) -> None:
        path = self.path
        if not isinstance(rec, dict):
            raise TeleopLogError(path, f"expected a JSON object, got {type(rec).__name__}", line)
        missing = [k for k in STEP_KEYS if k not in rec]
        if missing:
            raise TeleopLogError(path, f"missing key(s) {', '.join(map(repr, missing))}", line)
        unknown = sorted(k for k in rec if k not in STEP_KEYS)
        if unknown:
            raise TeleopLogError(path, f"unknown key(s) {', '.join(map(repr, unknown))}", line)

    def _check_order(self, step: Any, t: Any, line: int) -> None:
        """Steps count 0, 1, 2, ... and stop after done; ``t`` never goes back."""
        path = self.path
        if type(step) is not int:
            raise TeleopLogError(path, f"'step' must be an integer, got {step!r}", line)
        if step != self.expected_step:
            if step < self.expected_step:
                kind = "duplicated" if step == self.expected_step - 1 else "out of order"
                raise TeleopLogError(
                    path, f"step {step} is {kind} (previous step was {self.expected_step - 1})", line
                )
            raise TeleopLogError(path, f"step {step} found, expected {self.expected_step} (steps are 0, 1, 2, ...)",
                                 line)
        if self.done_at is not None:
            raise TeleopLogError(path, f"step {step} follows step {self.done_at}, which had done = true", line)
        if not _is_number(t) or not math.isfinite(t):
            raise TeleopLogError(path, f"'t' must be a finite number, got {t!r}", line)
        if t < self.last_t:
            raise TeleopLogError(path, f"'t' = {t!r} goes back in time (previous step: {self.last_t!r})", line)

    def _check_obs(self, obs: Any, line: int) -> None:
        """``obs`` holds ``proprio``; keys and sizes are those of the first step."""
        path = self.path
        if not isinstance(obs, dict):
            raise TeleopLogError(path, f"'obs' must be an object of key -> list of numbers, got {obs!r:.60}", line)
        if PROPRIO_KEY not in obs:
            raise TeleopLogError(path, f"'obs' has no '{PROPRIO_KEY}' entry", line)
        if self.obs_dims is None:
            for key in obs:
                _check_name(key, "obs key", path, line)
                if key in self.meta.cameras:
                    raise TeleopLogError(path, f"obs key {key!r} clashes with a camera of the same name", line)
            dims = {k: None for k in obs}
        else:
            if set(obs) != set(self.obs_dims):
                raise TeleopLogError(
                    path, f"'obs' keys {sorted(obs)} differ from the first step's {sorted(self.obs_dims)}", line
                )
            dims = self.obs_dims
        for key, val in obs.items():
            _numbers(val, f"obs[{key!r}]", path, line, dims[key])
        if self.obs_dims is None:
            for key, val in obs.items():
                if not val:
                    raise TeleopLogError(path, f"obs[{key!r}] is empty", line)
            self.obs_dims = {k: len(v) for k, v in obs.items()}

    def _check_values(self, rec: dict, line: int) -> None:
        """``action``, ``policy_action``, ``intervention``, ``done``, ``command``, ``reward``."""
        path = self.path
        adim = self.meta.action_dim
        why = " (action_dim in session.json)"
        _numbers(rec["action"], "action", path, line, adim, why)
        if rec["policy_action"] is not None:
            _numbers(rec["policy_action"], "policy_action", path, line, adim, why)
        for key in ("intervention", "done"):
            if type(rec[key]) is not bool:
                raise TeleopLogError(path, f"'{key}' must be true or false, got {rec[key]!r}", line)
        if rec["command"] is not None:
            _text(rec["command"], "'command'", path, line)
        r = rec["reward"]
        if not _is_number(r) or not math.isfinite(r) or abs(r) > _F32_MAX:
            raise TeleopLogError(path, f"'reward' must be a finite number, got {r!r}", line)


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------


def _as_list(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [v.item() if isinstance(v, np.generic) else v for v in x]
    return x


def _as_scalar(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard_staging(session_root: str | os.PathLike) -> int:
    """Remove the episodes left unfinished in a session's ``.staging/`` (a robot process that died mid-episode);
    returns how many. Recorded (``episodes/``) data is never touched."""
    import shutil

    sdir = Path(session_root) / STAGING_DIR
    if not sdir.is_dir():
        return 0
    n = sum(1 for p in sdir.iterdir() if p.is_dir())
    shutil.rmtree(sdir)
    return n


class SessionWriter:
    """Creates a session folder and its ``session.json``; hands out :class:`EpisodeWriter` s.

    ``cameras`` names the image streams every step must provide (uint8 (H, W, 3) arrays).
    An existing ``session.json`` is not replaced unless ``force``; recorded episodes are never
    overwritten. ``fsync=True`` makes every step durable (os.fsync) at some cost per step.
    ``png_compress_level`` (0-9) trades PNG size for write time (1: fast, fine for a 10 Hz loop).
    Extra JSON-serialisable ``metadata`` goes into ``session.json`` next to the required keys.
    ``staging=True``: an episode is written under ``.staging/<id>/`` and moved to ``episodes/<id>/`` (one
    rename) when it is closed, so ``episodes/`` only ever holds whole episodes; an episode whose process died
    stays in ``.staging/``, which readers ignore and :func:`discard_staging` removes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        fps: float = 10,
        robot: str = "unknown",
        action_dim: int,
        translation_scale_m: float = 1.0,
        cameras: Sequence[str] = (),
        force: bool = False,
        fsync: bool = False,
        png_compress_level: int = 1,
        metadata: Mapping[str, Any] | None = None,
        staging: bool = False,
    ):
        self.root = Path(root)
        self.staging = bool(staging)
        meta_path = self.root / SESSION_FILE
        clash = set(metadata or {}) & set(SESSION_KEYS)
        if clash:
            raise ValueError(f"metadata may not redefine {sorted(clash)}")
        raw = {
            "format": FORMAT, "version": VERSION, "fps": fps, "robot": robot, "action_dim": action_dim,
            "translation_scale_m": translation_scale_m, "cameras": list(cameras), **dict(metadata or {}),
        }
        self.meta = _validate_meta(raw, meta_path)
        if meta_path.exists() and not force:
            raise FileExistsError(f"{meta_path}: exists (pass force=True to replace session.json)")
        (self.root / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.meta.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        atomic_write_bytes(meta_path, text.encode("utf-8"), fsync)
        self.fsync = fsync
        self.png_compress_level = int(png_compress_level)
        self._open: list[EpisodeWriter] = []

    def episode(self, episode_id: str | None = None) -> "EpisodeWriter":
        """Start a new episode folder; ``episode_id`` defaults to the next free ``000000``-style id."""
        edir = self.root / EPISODES_DIR
        sdir = self.root / STAGING_DIR
        if episode_id is None:
            k = sum(1 for p in edir.iterdir() if p.is_dir())
            while (edir / f"{k:06d}").exists() or (sdir / f"{k:06d}").exists():
                k += 1
            episode_id = f"{k:06d}"
        _check_name(episode_id, "episode id", edir)
        if self.staging:
            if (edir / episode_id).exists():
                raise FileExistsError(f"{edir / episode_id}: episode exists (recorded data is never overwritten)")
            sdir.mkdir(exist_ok=True)
            ew = EpisodeWriter(self, sdir / episode_id, final=edir / episode_id)
        else:
            ew = EpisodeWriter(self, edir / episode_id)
        self._open.append(ew)
        return ew

    def close(self) -> None:
        """Close every episode still open."""
        for ew in self._open:
            ew.close()
        self._open.clear()

    def __enter__(self) -> "SessionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EpisodeWriter:
    """Appends steps to ``episodes/<id>/steps.jsonl`` (one line per step, flushed) and PNGs.

    Each step's PNGs are written (atomically, via rename) before its line, so every line on
    disk has its images. Closing an episode that received no step removes its empty folder.
    """

    def __init__(self, session: SessionWriter, path: Path, final: Path | None = None):
        if path.exists():
            raise FileExistsError(f"{path}: episode exists (recorded data is never overwritten)")
        self.session = session
        self.meta = session.meta
        self.path = path
        self.final = final
        self.episode_id = path.name
        path.mkdir(parents=True)
        for cam in self.meta.cameras:
            (path / cam).mkdir()
        self.steps_path = path / STEPS_FILE
        self._file = open(self.steps_path, "ab")
        self._checker = _StepChecker(self.meta, self.steps_path)
        self._image_shapes: dict[str, tuple] = {}
        self._t0: float | None = None
        self.num_steps = 0

    def step(
        self,
        step: int | None = None,
        t: float | None = None,
        *,
        task: str,
        obs: Mapping[str, Any],
        action: Any,
        policy_action: Any = None,
        intervention: bool = False,
        command: str | None = None,
        reward: float = 0.0,
        done: bool = False,
        images: Mapping[str, np.ndarray] | None = None,
    ) -> int:
        """Append one control step; returns its index.

        ``step`` defaults to the next index (0, 1, ...); ``t`` to seconds since the first step
        (monotonic clock). ``obs`` maps key -> 1-D numbers and must hold ``"proprio"``;
        ``action`` / ``policy_action`` have ``action_dim`` values (``policy_action`` None when the
        policy did not act); ``images`` maps every session camera to a uint8 (H, W, 3) array
        whose size stays fixed for the episode. Invalid input raises
        :class:`~data_tools.errors.TeleopLogError` (naming the line it would have been) and
        writes nothing.
        """
        if self._file is None:
            raise ValueError(f"{self.steps_path}: episode is closed")
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        rec = {
            "step": self.num_steps if step is None else _as_scalar(step),
            "t": round(now - self._t0, 6) if t is None else _as_scalar(t),
            "task": task,
            "obs": {str(k): _as_list(v) for k, v in obs.items()} if isinstance(obs, Mapping) else obs,
            "action": _as_list(action),
            "policy_action": None if policy_action is None else _as_list(policy_action),
            "intervention": bool(intervention) if isinstance(intervention, (bool, np.bool_)) else intervention,
            "command": command,
            "reward": _as_scalar(reward),
            "done": bool(done) if isinstance(done, (bool, np.bool_)) else done,
        }
        line = self.num_steps + 1
        checker_state = dict(self._checker.__dict__)
        try:
            self._checker.check(rec, line)
            pngs = self._encode_images(images or {}, line)
        except BaseException:
            self._checker.__dict__.update(checker_state)
            raise
        for cam, data in pngs:
            atomic_write_bytes(self.path / cam / png_name(rec["step"]), data, self.session.fsync)
        text = json.dumps(rec, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
        self._file.write(text.encode("utf-8"))
        self._file.flush()
        if self.session.fsync:
            os.fsync(self._file.fileno())
        self.num_steps += 1
        return rec["step"]

    def _encode_images(self, images: Mapping[str, np.ndarray], line: int) -> list[tuple[str, bytes]]:
        cams = self.meta.cameras
        unknown = sorted(set(images) - set(cams))
        if unknown:
            raise TeleopLogError(self.steps_path, f"images for camera(s) {unknown} not listed in session.json", line)
        out = []
        for cam in cams:
            if cam not in images:
                raise TeleopLogError(self.steps_path, f"no image for camera {cam!r}", line)
            img = np.asarray(images[cam])
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise TeleopLogError(
                    self.steps_path, f"camera {cam!r}: image must be uint8 (H, W, 3), got {img.dtype} {img.shape}",
                    line,
                )
            first = self._image_shapes.get(cam, img.shape)
            if img.shape != first:
                raise TeleopLogError(
                    self.steps_path, f"camera {cam!r}: image shape {img.shape} differs from the first {first}", line
                )
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(img), "RGB").save(
                buf, format="PNG", compress_level=self.session.png_compress_level
            )
            out.append((cam, buf.getvalue()))
        for cam in cams:
            self._image_shapes.setdefault(cam, np.shape(images[cam]))
        return out

    def close(self) -> None:
        """Close the steps file; an episode without any step leaves no folder behind."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if self.final is not None and self.num_steps > 0:  # staged: the whole episode appears at once
            if self.session.fsync:
                _fsync_dir(self.path)
            os.rename(self.path, self.final)
            self.path = self.final
            self.steps_path = self.final / STEPS_FILE
            if self.session.fsync:
                _fsync_dir(self.final.parent)
            return
        if self.num_steps == 0:
            self.steps_path.unlink(missing_ok=True)
            for cam in self.meta.cameras:
                try:
                    (self.path / cam).rmdir()
                except OSError:
                    pass
            try:
                self.path.rmdir()
            except OSError:
                pass

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------


class _StepReader:
    """Iterates the validated records of one steps.jsonl; ``truncated`` is set once seen."""

    def __init__(self, path: Path, meta: SessionMeta):
        self.path = path
        self.meta = meta
        self.truncated = False

    def __iter__(self) -> Iterator[dict]:
        path = self.path
        checker = _StepChecker(self.meta, path)
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
            _check_name(entry.name, "episode folder", edir)
            ids.append(entry.name)
    elif edir.exists():
        raise TeleopLogError(edir, "not a folder")
    ids.sort(key=_natural_key)
    return Session(path, meta, tuple(ids))
