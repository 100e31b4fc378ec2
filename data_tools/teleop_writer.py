"""Teleoperation log writer (format v1, :mod:`data_tools.teleop_format`), used by the robot runtime.

:class:`SessionWriter` creates a session folder and its ``session.json``; its :class:`EpisodeWriter` s
append one line per step to ``steps.jsonl`` and flush it (optionally ``fsync``), after the step's PNGs
are in place, so a crash loses at most the last, partial line. Every step is validated
(:class:`~data_tools.teleop_format.StepChecker`) before anything of it is written.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from .atomic import atomic_write_bytes
from .errors import TeleopLogError
from .teleop_format import (
    DISCARDED_DIR,
    EPISODES_DIR,
    FORMAT,
    SESSION_FILE,
    SESSION_KEYS,
    STAGING_DIR,
    STEPS_FILE,
    VERSION,
    StepChecker,
    check_name,
    png_name,
    validate_meta,
)


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
        self.meta = validate_meta(raw, meta_path)
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
        check_name(episode_id, "episode id", edir)
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
        self._checker = StepChecker(self.meta, self.steps_path)
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

    def discard(self, reason: str) -> Path | None:
        """Close the episode and move it to ``<session>/discarded/<id>/`` with ``reason.txt``: an episode the operator
        asked to re-record is kept (robot data is never deleted) but never converted. Returns its new folder (None for
        an episode without a step, which leaves nothing)."""
        self.final = None  # a staged episode must not appear under episodes/
        if self._file is not None and self.num_steps == 0:
            self.close()
            return None
        if self._file is not None:
            self._file.close()
            self._file = None
        dest = self.session.root / DISCARDED_DIR / self.episode_id
        k = 1
        while dest.exists():  # the same id re-recorded again: keep every take
            dest = self.session.root / DISCARDED_DIR / f"{self.episode_id}.{k}"
            k += 1
        dest.parent.mkdir(exist_ok=True)
        os.rename(self.path, dest)
        (dest / "reason.txt").write_text(reason + "\n")
        self.path, self.steps_path = dest, dest / STEPS_FILE
        return dest

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

