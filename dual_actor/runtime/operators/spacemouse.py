"""The SpaceMouse operator: a 3Dconnexion SpaceMouse through ``pyspacemouse``.

``pyspacemouse`` 2.x API: ``pyspacemouse.open()`` returns a device whose ``read()`` returns a
``SpaceMouseState`` with ``.x .y .z .roll .pitch .yaw`` in about [-1, 1] and ``.buttons``.
:class:`SpaceMouseOperator` intervenes while the puck is displaced beyond the deadzone on a mapped
axis or a button is held. The axis mappings (:data:`ROBOT_FRAME_AXIS_MAP`, :data:`METAWORLD_AXIS_MAP`)
are documented in ``docs/operators.md``.
"""

from __future__ import annotations

import queue
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from data_tools.talk_tweak import NULL_COMMAND, command_vocabulary
from dual_actor.runtime.operators.base import EVENTS, OperatorInput
from dual_actor.runtime.operators.teleop import TeleopOperator

SPACEMOUSE_AXES = ("x", "y", "z", "roll", "pitch", "yaw")
"""Axis names of a ``pyspacemouse.SpaceMouseState``."""

ROBOT_FRAME_AXIS_MAP = ("y", "x", "z", "pitch", "roll", "yaw")
ROBOT_FRAME_AXIS_SIGN = (1.0, -1.0, 1.0, 1.0, -1.0, 1.0)
"""Default SpaceMouse mapping, action dims 0..5 <- sign * puck axis. Puck frame: pyspacemouse's
``AxisConvention.HID_Z_UP`` (x right, y away from the operator, z up, right-handed rotations).
Action frame: the talk-and-tweak frame (x forward, y left, z up), for an operator standing behind
the robot, facing the way it faces: push away -> +x "forward", push left -> +y "left", lift -> +z."""

METAWORLD_AXIS_MAP = ("x", "y", "z", "roll", "pitch", "yaw")
METAWORLD_AXIS_SIGN = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
"""SpaceMouse mapping for the Metaworld Sawyer (world x = the robot's right, y = away from its
base, z up) with the operator standing behind the robot: the identity in ``HID_Z_UP``."""


class SpaceMouseOperator(TeleopOperator):
    """A 3Dconnexion SpaceMouse through ``pyspacemouse``.

    Args:
        device: an object with ``read() -> state`` (``state.x .y .z .roll .pitch .yaw`` in about
            [-1, 1], ``state.buttons`` a list of 0/1), e.g. an opened ``pyspacemouse`` device or a
            test fake. None: ``pyspacemouse.open(device=device_name, axis_convention=...)`` at the
            first ``reset`` / ``observe``, closed by ``close()``.
        action_dim: 4 (xyz + gripper) or 7 (xyz + roll pitch yaw + gripper).
        translation_scale, rotation_scale: action = mapped axis value * scale (translation dims
            0..2, rotation dims 3..5).
        deadzone: a mapped axis value with ``|v| <= deadzone`` counts as 0 (no rescaling beyond it).
        axis_map: puck axis (``SPACEMOUSE_AXES``) read by each action motion dim (3 or 6 names; a
            6-name map with ``action_dim`` 4 uses its first 3). Default ``ROBOT_FRAME_AXIS_MAP``.
        axis_sign: +-1 per entry of ``axis_map``. Default ``ROBOT_FRAME_AXIS_SIGN`` with the default
            map, all +1 with a given map.
        gripper_index: the gripper's action dim (must be the dim after the motion dims).
        close_button, open_button: button indices: close sets the gripper to +1, open to -1 (neither: the
            gripper command is held).
        estop_buttons: the buttons that, pressed together, toggle the e-stop (engaged: every input says
            ``estop``, no action; pressed together again: released). Default (0, 1): both buttons of a two-button
            SpaceMouse; a device with a spare button can give it alone, e.g. (2,).
        event_buttons: button index -> episode event (success, failure, rerecord, pause), given when the button
            is pressed, for devices with more than two buttons (e.g. a SpaceMouse Pro); default none.
        event_keys: terminal key -> episode event, or "estop" (toggles the e-stop), typed while the other hand is on
            the puck (a two-button SpaceMouse has no spare button): default the keyboard operator's
            (``DEFAULT_EVENT_KEYS`` and ``ESTOP_KEY``: g success, b failure, n rerecord, p pause, k e-stop); an empty
            mapping turns them off. Read by a :class:`TerminalKeyReader` started with the device; a process
            without a terminal (a Ray robot actor) says once that only the buttons remain.
        command_keys, clear_command_key, command_steps: terminal keys that speak a refinement command, held for
            ``command_steps`` steps (the keyboard operator's: ``1``..``6`` "move left" .. "move down", ``0`` ends it,
            5 steps): the talk of talk-and-tweak with a hand on the puck ({}: off).
        keys: the key queue (tests, a GUI); None: the terminal's.
        device_name: pyspacemouse device name (e.g. "SpaceMouseCompact"); None: the first found.
        axis_convention: pyspacemouse ``AxisConvention`` value used when opening ("hid_z_up").
        max_reads: HID reports drained per control step (the device sends one report per
            channel per read; draining keeps the state current at 10 Hz).

    Intervening: a mapped axis beyond the deadzone, or a button held (not the e-stop's together, nor an event's).
    """

    def __init__(
        self,
        device: Any = None,
        action_dim: int = 4,
        translation_scale: float = 1.0,
        rotation_scale: float = 1.0,
        deadzone: float = 0.05,
        axis_map: Sequence[str] | None = None,
        axis_sign: Sequence[float] | None = None,
        gripper_index: int = -1,
        close_button: int = 0,
        open_button: int = 1,
        device_name: str | None = None,
        axis_convention: str = "hid_z_up",
        max_reads: int = 64,
        event_buttons: Mapping[int, str] | None = None,
        estop_buttons: Sequence[int] = (0, 1),
        event_keys: Mapping[str, str] | None = None,
        command_keys: Mapping[str, str] | None = None,
        clear_command_key: str = "0",
        command_steps: int = 5,
        keys: queue.Queue | None = None,
    ) -> None:
        super().__init__(action_dim, translation_scale, rotation_scale, gripper_index)
        if not 0.0 <= deadzone < 1.0:
            raise ValueError(f"deadzone must be in [0, 1), got {deadzone}")
        if axis_map is None:
            axis_map = ROBOT_FRAME_AXIS_MAP if axis_sign is None else ROBOT_FRAME_AXIS_MAP[: len(axis_sign)]
            axis_sign = ROBOT_FRAME_AXIS_SIGN if axis_sign is None else axis_sign
        elif axis_sign is None:
            axis_sign = (1.0,) * len(axis_map)
        axis_map, axis_sign = tuple(axis_map), tuple(axis_sign)
        if len(axis_map) not in (self.n_motion, 6) or len(axis_sign) != len(axis_map):
            raise ValueError(
                f"axis_map / axis_sign need {self.n_motion} (or 6) entries each for action_dim "
                f"{action_dim}, got {len(axis_map)} / {len(axis_sign)}"
            )
        for name in axis_map:
            if name not in SPACEMOUSE_AXES:
                raise ValueError(f"axis_map: unknown SpaceMouse axis {name!r}; expected one of {SPACEMOUSE_AXES}")
        for s in axis_sign:
            if float(s) not in (1.0, -1.0):
                raise ValueError(f"axis_sign entries must be +1 or -1, got {s}")
        if close_button == open_button or min(close_button, open_button) < 0:
            raise ValueError(
                f"close_button and open_button must be distinct indices >= 0, got {close_button}, {open_button}"
            )
        if max_reads < 1:
            raise ValueError(f"max_reads must be >= 1, got {max_reads}")
        self.axis_map = axis_map[: self.n_motion]
        self.axis_sign = np.asarray(axis_sign[: self.n_motion], dtype=np.float64)
        self.deadzone = float(deadzone)
        self.close_button = int(close_button)
        self.open_button = int(open_button)
        self.device_name = device_name
        self.axis_convention = axis_convention
        self.max_reads = int(max_reads)
        self._device = device
        self._owns_device = False
        self.event_buttons = {int(i): e for i, e in (event_buttons or {}).items()}
        for i, e in self.event_buttons.items():
            if e not in EVENTS or i in (self.close_button, self.open_button) or i < 0:
                raise ValueError(f"event_buttons[{i}] = {e!r}: an event of {EVENTS} on a button other than the "
                                 f"gripper's ({self.close_button}, {self.open_button})")
        self.estop_buttons = tuple(int(i) for i in estop_buttons)
        if not self.estop_buttons or min(self.estop_buttons) < 0:
            raise ValueError(f"estop_buttons must name at least one button index >= 0, got {estop_buttons}")
        if set(self.estop_buttons) & set(self.event_buttons):
            raise ValueError(f"estop_buttons {self.estop_buttons} overlap event_buttons {sorted(self.event_buttons)}")
        self._both_held = False
        self._pressed: dict[int, bool] = {}
        from dual_actor.runtime.operators.keyboard import DEFAULT_EVENT_KEYS, DEFAULT_KEY_COMMANDS, ESTOP_KEY

        self.event_keys = dict({**DEFAULT_EVENT_KEYS, ESTOP_KEY: "estop"} if event_keys is None else event_keys)
        bad = {k: e for k, e in self.event_keys.items() if e not in (*EVENTS, "estop")}
        if bad:
            raise ValueError(f"event_keys {bad}: each key gives one of {(*EVENTS, 'estop')}")
        self.command_keys = dict(DEFAULT_KEY_COMMANDS if command_keys is None else command_keys)
        vocab = set(command_vocabulary()) - {NULL_COMMAND}
        bound = [*self.event_keys, *self.command_keys, clear_command_key]
        if [c for c in self.command_keys.values() if c not in vocab] or len(set(bound)) < len(bound) or command_steps < 1:
            raise ValueError(f"command_keys {self.command_keys}: talk-and-tweak commands, on keys not bound twice "
                             f"(event_keys {sorted(self.event_keys)}, clear {clear_command_key!r}), command_steps >= 1")
        self.clear_command_key, self.command_steps = clear_command_key, int(command_steps)
        self._command, self._command_left = None, 0
        self._keys, self._key_reader = keys, None

    def _open_keys(self) -> None:
        """The terminal's key reader, once, when event keys are wanted and none were injected."""
        if self._keys is not None or not self.event_keys:
            return
        from dual_actor.runtime.operators.keyboard import TerminalKeyReader

        self._keys = queue.Queue()
        try:
            self._key_reader = TerminalKeyReader(self._keys)
        except RuntimeError:
            print("[operator] SpaceMouse: no terminal in this process, so the episode keys "
                  f"({', '.join(f'{k} {e}' for k, e in self.event_keys.items())}) are off; the buttons remain "
                  f"(e-stop: buttons {self.estop_buttons} together; operator.event_buttons)", file=sys.stderr,
                  flush=True)

    def _key_events(self) -> tuple[str | None, bool, str | None]:
        """The keys typed since the last step: (the first episode event, whether the e-stop key was typed an odd
        number of times, the spoken command now in force). As the keyboard operator: one event per step, a later
        one waits for the next step."""
        event, toggles, later = None, 0, []
        while self._keys is not None:
            try:
                key = self._keys.get_nowait()
            except queue.Empty:
                break
            name = self.event_keys.get(key)
            if name == "estop":
                toggles += 1
            elif name is not None and event is None:
                event = name
            elif name is not None:
                later.append(key)
            elif key in self.command_keys:
                self._command, self._command_left = self.command_keys[key], self.command_steps
            elif key == self.clear_command_key:
                self._command, self._command_left = None, 0
        for key in later:
            self._keys.put(key)
        command = None
        if self._command_left > 0:
            command, self._command_left = self._command, self._command_left - 1
        return event, bool(toggles % 2), command

    def _open(self) -> Any:
        if self._device is not None:
            return self._device
        hint = (
            "connect a SpaceMouse, install the HID library (e.g. `apt install libhidapi-hidraw0`), "
            "allow access to /dev/hidraw* (udev rule), or use KeyboardOperator"
        )
        try:
            import pyspacemouse
        except ImportError as e:  # pyspacemouse, or easyhid / cffi it imports
            raise RuntimeError(f"SpaceMouseOperator: cannot import pyspacemouse ({e}); {hint}") from e
        try:
            self._device = pyspacemouse.open(
                device=self.device_name, axis_convention=pyspacemouse.AxisConvention(self.axis_convention)
            )
        except (RuntimeError, OSError, ValueError, AttributeError) as e:
            raise RuntimeError(f"SpaceMouseOperator: no SpaceMouse opened through pyspacemouse ({e}); {hint}") from e
        self._owns_device = True
        return self._device

    def check_ready(self) -> None:
        """The SpaceMouse opens (then it is closed again if this operator opened it)."""
        self._open()
        self.close()

    def read_state(self) -> tuple[np.ndarray, list[int]]:
        """Drain the device; return (the 6 axis values in ``SPACEMOUSE_AXES`` order, buttons)."""
        device = self._open()
        state = device.read()
        # pyspacemouse processes one HID report per read and returns the same mutable state
        # object, stamping ``t`` when a report was processed: read until nothing new arrives.
        last_t = getattr(state, "t", None)
        for _ in range(self.max_reads - 1):
            if last_t is None:
                break
            state = device.read()
            t = getattr(state, "t", None)
            if t == last_t:
                break
            last_t = t
        axes = np.array([float(getattr(state, name)) for name in SPACEMOUSE_AXES], dtype=np.float64)
        buttons = [int(b) for b in getattr(state, "buttons", [])]
        return axes, buttons

    def reset(self, task: str) -> None:
        super().reset(task)
        self._open()
        self._open_keys()
        self._command, self._command_left = None, 0

    def observe(self, obs, policy_action, info) -> OperatorInput:
        policy = self._check_action(policy_action)
        axes, buttons = self.read_state()
        needed = max(self.close_button, self.open_button)
        if len(buttons) <= needed:
            raise ValueError(
                f"SpaceMouseOperator: the device reports {len(buttons)} buttons; close_button/open_button "
                f"= {self.close_button}/{self.open_button} do not exist"
            )
        raw = dict(zip(SPACEMOUSE_AXES, axes))
        v = np.clip(np.array([raw[name] for name in self.axis_map]), -1.0, 1.0) * self.axis_sign
        v[np.abs(v) <= self.deadzone] = 0.0
        close, open_ = bool(buttons[self.close_button]), bool(buttons[self.open_button])
        both = all(i < len(buttons) and bool(buttons[i]) for i in self.estop_buttons)
        self._open_keys()
        event, key_estop, command = self._key_events()
        if (both and not self._both_held) != key_estop:  # the e-stop buttons pressed together, or its key
            self.estop = not self.estop
        self._both_held = both
        for index, name in self.event_buttons.items():  # devices with more buttons: episode events, on the press
            pressed = index < len(buttons) and bool(buttons[index])
            if pressed and not self._pressed.get(index) and event is None:
                event = name
            self._pressed[index] = pressed
        if both or event is not None:
            return self._finish(policy, False, v, None, command, event)
        gripper = 1.0 if close and not open_ else -1.0 if open_ and not close else None
        intervening = bool(np.any(v != 0.0) or any(buttons))
        return self._finish(policy, intervening, v, gripper, command)

    def close(self) -> None:
        if self._key_reader is not None:
            self._key_reader.close()
            self._key_reader, self._keys = None, None
        if self._owns_device and self._device is not None:
            self._device.close()
            self._device = None
            self._owns_device = False
