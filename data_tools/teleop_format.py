"""Teleoperation log format, version 1: the layout's names and the validation writer and reader share.

Layout (``docs/teleop-log-format.md``)::

    <session>/session.json   {"format": "dual-actor-teleop-log", "version": 1, "fps": 10,
                              "robot": "...", "action_dim": 7, "translation_scale_m": 1.0,
                              "cameras": ["wrist", "head"]}
    <session>/episodes/<episode_id>/steps.jsonl        one JSON object per control step
    <session>/episodes/<episode_id>/<camera>/<step:06d>.png

A step line holds exactly the keys ``step, t, task, obs, action, policy_action, intervention,
command, reward, done``. :func:`validate_meta` checks the content of ``session.json`` and
:class:`StepChecker` the step lines of one episode in order; both raise
:class:`~data_tools.errors.TeleopLogError` naming the file (and the 1-based line). The writer
(:mod:`data_tools.teleop_writer`) runs them before it writes, the reader
(:mod:`data_tools.teleop_reader`) on what it reads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TeleopLogError

FORMAT = "dual-actor-teleop-log"
VERSION = 1
SESSION_FILE = "session.json"
EPISODES_DIR = "episodes"
STEPS_FILE = "steps.jsonl"
STAGING_DIR = ".staging"  # episodes being written (SessionWriter(staging=True)); never read
DISCARDED_DIR = "discarded"  # episodes the operator asked to re-record: kept, never converted
PROPRIO_KEY = "proprio"
STEP_KEYS = ("step", "t", "task", "obs", "action", "policy_action", "intervention", "command", "reward", "done")
SESSION_KEYS = ("format", "version", "fps", "robot", "action_dim", "translation_scale_m", "cameras")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_F32_MAX = float(np.finfo(np.float32).max)


def png_name(step: int) -> str:
    """File name of a step's image inside ``<episode>/<camera>/``: ``000042.png``."""
    return f"{step:06d}.png"


def check_name(value: Any, what: str, path: Path, line: int | None = None) -> str:
    """``value`` if it is a valid camera / obs key / episode name (:data:`NAME_RE`), else TeleopLogError."""
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


def validate_meta(raw: Any, path: Path) -> SessionMeta:
    """The parsed JSON of ``session.json`` (file ``path``, named in errors) as a :class:`SessionMeta`."""
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
        check_name(c, "camera", path)
    if len(set(cams)) != len(cams):
        raise TeleopLogError(path, f"'cameras' lists a camera twice: {cams!r}")
    extra = {k: v for k, v in raw.items() if k not in SESSION_KEYS}
    return SessionMeta(float(fps), robot, adim, float(scale), tuple(cams), extra)


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


class StepChecker:
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
                check_name(key, "obs key", path, line)
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

