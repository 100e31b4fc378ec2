"""Teleoperation log format, version 1 (``docs/teleop-log-format.md``): the one import for its three parts.

* :mod:`data_tools.teleop_format` -- the layout's names (``session.json``, ``episodes/<id>/steps.jsonl``,
  ``<camera>/<step:06d>.png``) and the validation the writer and the reader share;
* :mod:`data_tools.teleop_writer` -- :class:`SessionWriter` / :class:`EpisodeWriter`, used by the robot
  runtime (one flushed line per step, PNGs first, so a crash loses at most the last, partial line);
* :mod:`data_tools.teleop_reader` -- :func:`read_session`, the validating reader ``convert`` uses
  (:class:`~data_tools.errors.TeleopLogError` naming file and line; a truncated final line is dropped
  with a :class:`TeleopLogWarning`).
"""

from __future__ import annotations

from .errors import TeleopLogWarning
from .teleop_format import (
    EPISODES_DIR,
    FORMAT,
    NAME_RE,
    PROPRIO_KEY,
    SESSION_FILE,
    SESSION_KEYS,
    STAGING_DIR,
    STEP_KEYS,
    STEPS_FILE,
    VERSION,
    SessionMeta,
    StepChecker,
    check_name,
    png_name,
    validate_meta,
)
from .teleop_reader import LogEpisode, Session, decode_png, iter_step_records, png_header, read_session
from .teleop_writer import EpisodeWriter, SessionWriter, discard_staging

__all__ = [
    "EPISODES_DIR",
    "FORMAT",
    "NAME_RE",
    "PROPRIO_KEY",
    "SESSION_FILE",
    "SESSION_KEYS",
    "STAGING_DIR",
    "STEP_KEYS",
    "STEPS_FILE",
    "VERSION",
    "EpisodeWriter",
    "LogEpisode",
    "Session",
    "SessionMeta",
    "SessionWriter",
    "StepChecker",
    "TeleopLogWarning",
    "check_name",
    "decode_png",
    "discard_staging",
    "iter_step_records",
    "png_header",
    "png_name",
    "read_session",
    "validate_meta",
]
