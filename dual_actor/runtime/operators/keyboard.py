"""The keyboard operator: keys -> axes for people without a SpaceMouse.

:class:`KeyboardOperator` is fed by a ``queue.Queue`` of key names; by default a
:class:`TerminalKeyReader` (a reader thread with the terminal in cbreak mode) fills it from stdin.
The key bindings (:data:`DEFAULT_KEY_MAP`, :data:`DEFAULT_KEY_COMMANDS`) are documented in
``docs/operators.md``.
"""

from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from data_tools.talk_tweak import NULL_COMMAND, command_vocabulary
from dual_actor.runtime.operators.base import EVENTS, OperatorInput
from dual_actor.runtime.operators.teleop import TeleopOperator

DEFAULT_KEY_MAP: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0),  # +x / -x  (forward / backward)
    "a": (1, 1.0), "d": (1, -1.0),  # +y / -y  (left / right)
    "r": (2, 1.0), "f": (2, -1.0),  # +z / -z  (up / down)
    "z": (3, 1.0), "x": (3, -1.0),  # roll     (action_dim 7 only)
    "c": (4, 1.0), "v": (4, -1.0),  # pitch
    "q": (5, 1.0), "e": (5, -1.0),  # yaw
}
"""Keyboard motion keys: key -> (action dim, sign)."""

DEFAULT_KEY_COMMANDS: dict[str, str] = {
    "1": "move left", "2": "move right", "3": "move forward",
    "4": "move backward", "5": "move up", "6": "move down",
}
"""Keyboard command keys: key -> spoken refinement command."""

DEFAULT_EVENT_KEYS: dict[str, str] = {"g": "success", "b": "failure", "n": "rerecord", "p": "pause"}
"""Keyboard episode-control keys: key -> event (``OperatorInput.event``)."""
ESTOP_KEY = "k"
"""The e-stop key: engages the emergency stop; pressed again, releases it."""


def _isatty(stream: Any) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


class TerminalKeyReader:
    """Puts the keys typed in a terminal into a queue (a daemon thread; the terminal in cbreak mode).

    Key names: the typed character, ``"space"`` for the space bar. ``close()`` restores the
    terminal (also registered with ``atexit``). Raises RuntimeError when ``stream`` is not a TTY.
    """

    def __init__(self, keys: queue.Queue, stream: Any = None) -> None:
        import termios
        import tty

        self.keys = keys
        self.stream = stream if stream is not None else sys.stdin
        try:
            self.fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError) as e:
            raise RuntimeError(f"TerminalKeyReader: no terminal to read keys from ({e}); inject a key queue") from e
        if not os.isatty(self.fd):
            raise RuntimeError("TerminalKeyReader: stdin is not a terminal; run interactively or inject a key queue")
        self._termios = termios
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keyboard-operator", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                ch = os.read(self.fd, 1).decode(errors="ignore")
                if ch:
                    self.keys.put("space" if ch == " " else ch)

    def close(self) -> None:
        if self._saved is None:
            return
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._termios.tcsetattr(self.fd, self._termios.TCSADRAIN, self._saved)
        self._saved = None


class KeyboardOperator(TeleopOperator):
    """Keys -> delta actions, for people without a SpaceMouse.

    Every ``observe`` drains the key queue (key names: characters, ``"space"``), in order:
    a motion key adds its sign to its axis (the step's axis value is clipped to [-1, 1], times the
    scale); the gripper key toggles the gripper (+1 close <-> -1 open); the intervention key
    toggles a latch; a command key speaks its command, held for ``command_steps`` steps (another
    command key replaces it, the clear key ends it). Intervening at a step: the latch is on, or a
    motion or gripper key was pressed during it. With the latch on and no key pressed the
    operator commands a hold (zero motion, gripper held).

    Args:
        keys: the key queue; None: a :class:`TerminalKeyReader` on stdin is started at the first
            ``reset`` / ``observe`` (stopped by ``close()``).
        action_dim, translation_scale, rotation_scale, gripper_index: as :class:`SpaceMouseOperator`.
        key_map: key -> (action dim, sign); default ``DEFAULT_KEY_MAP`` (keys of rotation dims
            are dropped when ``action_dim`` is 4).
        commands: key -> command; default ``DEFAULT_KEY_COMMANDS``; each must be in the
            talk-and-tweak vocabulary for ``words``.
        gripper_key, intervention_key, clear_command_key: "space", "i", "0".
        command_steps: steps a spoken command stays in force.
        words: talk-and-tweak axis words (see ``data_tools.talk_tweak``), for the vocabulary check.
        event_keys: key -> episode event (success, failure, rerecord, pause); default ``DEFAULT_EVENT_KEYS``.
        estop_key: toggles the e-stop (engaged: every input says ``estop``, no action): ``ESTOP_KEY``.
    """

    def __init__(
        self,
        keys: queue.Queue | None = None,
        action_dim: int = 4,
        translation_scale: float = 1.0,
        rotation_scale: float = 1.0,
        gripper_index: int = -1,
        key_map: Mapping[str, Sequence[float]] | None = None,
        commands: Mapping[str, str] | None = None,
        gripper_key: str = "space",
        intervention_key: str = "i",
        clear_command_key: str = "0",
        command_steps: int = 5,
        words: Mapping[str, Sequence[str]] | None = None,
        event_keys: Mapping[str, str] | None = None,
        estop_key: str = ESTOP_KEY,
    ) -> None:
        super().__init__(action_dim, translation_scale, rotation_scale, gripper_index)
        if command_steps < 1:
            raise ValueError(f"command_steps must be >= 1, got {command_steps}")
        if key_map is None:
            key_map = {k: v for k, v in DEFAULT_KEY_MAP.items() if v[0] < self.n_motion}
        self.key_map: dict[str, tuple[int, float]] = {}
        for key, (dim, sign) in key_map.items():
            if not 0 <= int(dim) < self.n_motion or float(sign) not in (1.0, -1.0):
                raise ValueError(
                    f"key_map[{key!r}] = ({dim}, {sign}): need a motion dim < {self.n_motion} and sign +-1"
                )
            self.key_map[key] = (int(dim), float(sign))
        self.commands = dict(DEFAULT_KEY_COMMANDS if commands is None else commands)
        vocab = set(command_vocabulary(words)) - {NULL_COMMAND}
        for key, cmd in self.commands.items():
            if cmd not in vocab:
                raise ValueError(f"commands[{key!r}] = {cmd!r} is not a talk-and-tweak command")
        self.event_keys = dict(DEFAULT_EVENT_KEYS if event_keys is None else event_keys)
        for key, event in self.event_keys.items():
            if event not in EVENTS:
                raise ValueError(f"event_keys[{key!r}] = {event!r}: events are {EVENTS}")
        special = [gripper_key, intervention_key, clear_command_key, estop_key]
        bound = [*self.key_map, *self.commands, *self.event_keys, *special]
        clashes = sorted({k for k in bound if bound.count(k) > 1})
        if clashes:
            raise ValueError(f"KeyboardOperator: keys bound twice: {clashes}")
        self.estop_key = estop_key
        self.gripper_key, self.intervention_key, self.clear_command_key = special[:3]
        self.command_steps = int(command_steps)
        self._keys = keys
        self._reader: TerminalKeyReader | None = None
        self.latched = False
        self._command: str | None = None
        self._command_left = 0

    def _queue(self) -> queue.Queue:
        if self._keys is None:
            self._keys = queue.Queue()
            self._reader = TerminalKeyReader(self._keys)
        return self._keys

    def reset(self, task: str) -> None:
        super().reset(task)
        self._queue()
        self.latched = False
        self._command, self._command_left = None, 0

    def observe(self, obs, policy_action, info) -> OperatorInput:
        policy = self._check_action(policy_action)
        q = self._queue()
        motion = np.zeros(self.n_motion, dtype=np.float64)
        pressed = False
        gripper = event = None
        later: list[str] = []
        while True:
            try:
                key = q.get_nowait()
            except queue.Empty:
                break
            if key in self.key_map:
                dim, sign = self.key_map[key]
                motion[dim] += sign
                pressed = True
            elif key == self.gripper_key:
                current = gripper if gripper is not None else self._gripper
                if current is None and policy is not None:
                    current = float(policy[self.gripper_index])
                gripper = -1.0 if current is not None and current > 0 else 1.0
                pressed = True
            elif key == self.intervention_key:
                self.latched = not self.latched
            elif key in self.commands:
                self._command, self._command_left = self.commands[key], self.command_steps
            elif key == self.clear_command_key:
                self._command, self._command_left = None, 0
            elif key == self.estop_key:
                self.estop = not self.estop
            elif key in self.event_keys and event is None:  # one event per step; a later one waits for the next
                event = self.event_keys[key]
            elif key in self.event_keys:
                later.append(key)
        for key in later:
            q.put(key)
        command = None
        if self._command_left > 0:
            command = self._command
            self._command_left -= 1
        return self._finish(policy, self.latched or pressed, np.clip(motion, -1.0, 1.0), gripper, command, event)

    def check_ready(self) -> None:
        """Keys come from an injected queue, or stdin is a terminal."""
        if self._keys is None and not (hasattr(sys.stdin, "fileno") and _isatty(sys.stdin)):
            raise RuntimeError("KeyboardOperator: stdin is not a terminal; run interactively (keys are read from it)")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
            self._keys = None
