"""Malformed teleoperation-log sessions, built on demand in a temporary folder (no binary fixtures).

``make_session`` writes a valid session with the real :class:`SessionWriter`; each entry of
``CASES`` then damages a copy in one specific way and says where the error must point:
the file (relative to the session folder) and the 1-based line (None where the defect is not
about one line, e.g. a missing file or folder). ``recoverable`` cases (a truncated final line)
must convert with a warning, keeping every complete step.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from data_tools.teleop_log import SessionWriter

CAMERAS = {"wrist": (8, 8), "head": (6, 10)}  # (H, W): tiny, but two different sizes
ACTION_DIM = 7
STEPS = 6
EPISODES = 2
TASK = "pick up the bolt"
EP = "episodes/000001"  # the episode the cases damage (the second one)
STEPS_FILE = f"{EP}/steps.jsonl"


def make_session(root: Path, episodes: int = EPISODES, steps: int = STEPS, seed: int = 0,
                 online: bool = True) -> Path:
    """A valid session: ``episodes`` x ``steps`` steps, 2 cameras, 7-d action, obs proprio (3) + state (4)."""
    rng = np.random.default_rng(seed)
    with SessionWriter(root, fps=10, robot="test-arm", action_dim=ACTION_DIM, translation_scale_m=0.01,
                       cameras=tuple(CAMERAS)) as w:
        for _ in range(episodes):
            with w.episode() as ep:
                for t in range(steps):
                    ep.step(
                        t=0.1 * t,
                        task=TASK,
                        obs={"proprio": rng.normal(size=3), "state": rng.normal(size=4)},
                        action=rng.uniform(-1, 1, ACTION_DIM),
                        policy_action=rng.uniform(-1, 1, ACTION_DIM) if online else None,
                        intervention=online and t >= 2,
                        reward=float(t == steps - 1),
                        done=t == steps - 1,
                        images={c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c, hw in CAMERAS.items()},
                    )
    return root


def tree_hash(root: Path) -> str:
    """SHA-256 over every path (relative) and file content under ``root``."""
    h = hashlib.sha256()
    for dirpath, dirnames, files in sorted(os.walk(root)):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        h.update(f"D {rel}\n".encode())
        for name in sorted(files):
            h.update(f"F {rel}/{name}\n".encode())
            h.update(hashlib.sha256(Path(dirpath, name).read_bytes()).digest())
    return h.hexdigest()


# ---------------------------------------------------------------- editing helpers


def _lines(s: Path) -> list[bytes]:
    return (s / STEPS_FILE).read_bytes().splitlines(keepends=True)


def _write_lines(s: Path, lines: list[bytes]) -> None:
    (s / STEPS_FILE).write_bytes(b"".join(lines))


def _edit_step(s: Path, line: int, fn: Callable[[dict], None]) -> None:
    lines = _lines(s)
    rec = json.loads(lines[line - 1])
    fn(rec)
    lines[line - 1] = json.dumps(rec).encode() + b"\n"
    _write_lines(s, lines)


def _edit_meta(s: Path, fn: Callable[[dict], None]) -> None:
    meta = json.loads((s / "session.json").read_text())
    fn(meta)
    (s / "session.json").write_text(json.dumps(meta, indent=2) + "\n")


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _truncate_last_line(s: Path) -> None:
    lines = _lines(s)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    _write_lines(s, lines)


def _set(key, value):
    def fn(rec):
        rec[key] = value
    return fn


def _set_obs(key, index, value):
    def fn(rec):
        rec["obs"][key][index] = value
    return fn


def _set_item(key, index, value):
    def fn(rec):
        rec[key][index] = value
    return fn


def _replace_bytes(s: Path, line: int, old: bytes, new: bytes) -> None:
    lines = _lines(s)
    assert old in lines[line - 1]
    lines[line - 1] = lines[line - 1].replace(old, new)
    _write_lines(s, lines)


# ---------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    """One malformed session: ``damage(session_dir)`` edits a valid session in place."""

    damage: Callable[[Path], None]
    file: str  # relative to the session folder
    line: int | None
    words: tuple[str, ...] = ()  # further substrings the message must contain (lower-case)
    recoverable: bool = False


CASES: dict[str, Case] = {
    "truncated_last_line": Case(_truncate_last_line, STEPS_FILE, STEPS, ("truncated",), recoverable=True),
    "line_not_json": Case(
        lambda s: _write_lines(s, [*_lines(s)[:2], b"this is not json\n", *_lines(s)[3:]]), STEPS_FILE, 3, ("json",)
    ),
    "empty_line": Case(lambda s: _write_lines(s, [*_lines(s)[:3], b"\n", *_lines(s)[3:]]), STEPS_FILE, 4, ("empty",)),
    "line_not_object": Case(lambda s: _write_lines(s, [*_lines(s)[:1], b"[1, 2, 3]\n", *_lines(s)[2:]]), STEPS_FILE,
                            2, ("object",)),
    "missing_key": Case(lambda s: _edit_step(s, 2, lambda r: r.pop("action")), STEPS_FILE, 2, ("action", "missing")),
    "unknown_key": Case(lambda s: _edit_step(s, 2, _set("comand", "move up")), STEPS_FILE, 2, ("comand",)),
    "missing_proprio": Case(lambda s: _edit_step(s, 1, lambda r: r["obs"].pop("proprio")), STEPS_FILE, 1,
                            ("proprio",)),
    "wrong_action_length": Case(lambda s: _edit_step(s, 4, lambda r: r["action"].pop()), STEPS_FILE, 4,
                                ("action", "6 values", "expected 7")),
    "wrong_policy_action_length": Case(lambda s: _edit_step(s, 3, lambda r: r["policy_action"].append(0.0)),
                                       STEPS_FILE, 3, ("policy_action",)),
    "nan_in_action": Case(lambda s: _edit_step(s, 2, _set_item("action", 1, float("nan"))), STEPS_FILE, 2,
                          ("action[1]", "nan")),
    "inf_in_action": Case(lambda s: _edit_step(s, 5, _set_item("action", 0, float("inf"))), STEPS_FILE, 5,
                          ("action[0]", "inf")),
    "action_overflows_float32": Case(lambda s: _edit_step(s, 5, _set_item("action", 0, 1e300)), STEPS_FILE, 5,
                                     ("float32",)),
    "nan_in_obs": Case(lambda s: _edit_step(s, 5, _set_obs("proprio", 2, float("nan"))), STEPS_FILE, 5,
                       ("proprio", "nan")),
    "string_in_obs": Case(lambda s: _edit_step(s, 3, _set_obs("state", 0, "0.5")), STEPS_FILE, 3, ("state",)),
    "obs_dim_changes": Case(lambda s: _edit_step(s, 4, lambda r: r["obs"]["state"].append(1.0)), STEPS_FILE, 4,
                            ("state",)),
    "intervention_not_bool": Case(lambda s: _edit_step(s, 2, _set("intervention", 1)), STEPS_FILE, 2,
                                  ("intervention",)),
    "reward_not_number": Case(lambda s: _edit_step(s, 2, _set("reward", None)), STEPS_FILE, 2, ("reward",)),
    "missing_png": Case(lambda s: (s / EP / "head" / "000002.png").unlink(), STEPS_FILE, 3,
                        ("head", "000002.png", "missing")),
    "unreadable_png": Case(lambda s: (s / EP / "wrist" / "000001.png").write_bytes(b"not a png at all"), STEPS_FILE, 2,
                           ("wrist", "000001.png")),
    "truncated_png": Case(
        lambda s: (s / EP / "head" / "000003.png").write_bytes((s / EP / "head" / "000003.png").read_bytes()[:60]),
        STEPS_FILE, 4, ("head", "000003.png")),
    "grayscale_png": Case(lambda s: (s / EP / "wrist" / "000004.png").write_bytes(_png(np.zeros((8, 8), np.uint8))),
                          STEPS_FILE, 5, ("wrist", "000004.png", "rgb")),
    "image_wrong_size": Case(
        lambda s: (s / EP / "head" / "000003.png").write_bytes(_png(np.zeros((6, 9, 3), np.uint8))),
        STEPS_FILE, 4, ("head", "000003.png", "9x6", "10x6")),
    "steps_out_of_order": Case(lambda s: _write_lines(s, [*_lines(s)[:2], _lines(s)[3], _lines(s)[2],
                                                          *_lines(s)[4:]]), STEPS_FILE, 3, ("step 3",)),
    "duplicated_step": Case(lambda s: _write_lines(s, [*_lines(s)[:3], _lines(s)[2], *_lines(s)[3:]]), STEPS_FILE,
                            4, ("step 2", "duplicated")),
    "step_after_done": Case(lambda s: _edit_step(s, 3, _set("done", True)), STEPS_FILE, 4, ("done",)),
    "time_goes_back": Case(lambda s: _edit_step(s, 4, _set("t", 0.05)), STEPS_FILE, 4, ("'t'",)),
    "task_changes": Case(lambda s: _edit_step(s, 4, _set("task", "place the bolt")), STEPS_FILE, 4,
                         ("task", "place the bolt")),
    "non_utf8_task": Case(lambda s: _replace_bytes(s, 2, TASK.encode(), b"pick up the b\xf6lt"), STEPS_FILE, 2,
                          ("utf-8",)),
    "lone_surrogate_task": Case(lambda s: _replace_bytes(s, 2, TASK.encode(), b"pick up \\udc80"), STEPS_FILE, 2,
                                ("task",)),
    "empty_episode": Case(lambda s: _write_lines(s, []), STEPS_FILE, None, ("empty",)),
    "missing_steps_file": Case(lambda s: (s / STEPS_FILE).unlink(), STEPS_FILE, None, ("missing",)),
    "unknown_format_version": Case(lambda s: _edit_meta(s, _set("version", 2)), "session.json", None,
                                   ("version 2",)),
    "wrong_format_name": Case(lambda s: _edit_meta(s, _set("format", "rosbag")), "session.json", None, ("rosbag",)),
    "session_json_missing": Case(lambda s: (s / "session.json").unlink(), "session.json", None, ("missing",)),
    "session_json_not_json": Case(lambda s: (s / "session.json").write_text('{\n  "format": "dual-actor-teleop-log",\n'
                                                                             '  "version": 1,,\n}\n'),
                                  "session.json", 3, ("json",)),
    "session_missing_key": Case(lambda s: _edit_meta(s, lambda m: m.pop("fps")), "session.json", None, ("fps",)),
    "action_dim_mismatch": Case(lambda s: _edit_meta(s, _set("action_dim", 6)), "episodes/000000/steps.jsonl", 1,
                                ("action", "expected 6")),
    "camera_folder_missing": Case(lambda s: shutil.rmtree(s / EP / "head"), f"{EP}/head", None, ("head",)),
    "camera_not_listed": Case(lambda s: _edit_meta(s, _set("cameras", ["wrist"])), f"episodes/000000/head", None,
                              ("head", "not a camera")),
}
