"""Operators: the human in the loop (SpaceMouse, keyboard) or a simulated one, behind one interface.

The control loop calls, once per control step and BEFORE the action is executed::

    op_input = operator.observe(obs, policy_action, info)   # is the human intervening? with what?
    action, intervened = apply_intervention(policy_action, op_input, low, high)

:class:`OperatorInput` says whether the operator intervenes at this step, the action that then
overrides the policy's, and a spoken refinement command (a sentence of the talk-and-tweak
vocabulary, :func:`data_tools.talk_tweak.command_vocabulary`) that is in force at this step.
:func:`apply_intervention` is the pure intervention step (LeRobot's ``processor/hil_processor.py``
style): the executed action is the operator's where it intervenes, else the policy's, clipped to
the action limits either way.

Operators:

- :class:`SpaceMouseOperator`: a 3Dconnexion SpaceMouse through ``pyspacemouse`` (2.x API:
  ``pyspacemouse.open()`` returns a device whose ``read()`` returns a ``SpaceMouseState`` with
  ``.x .y .z .roll .pitch .yaw`` in about [-1, 1] and ``.buttons``). Intervenes while the puck is
  displaced beyond the deadzone on a mapped axis or a button is held.
- :class:`KeyboardOperator`: keys -> axes for people without a SpaceMouse, fed by a
  ``queue.Queue`` of key names (a terminal reader thread in cbreak mode fills it by default).
- :class:`SimulatedOperator`: Metaworld's scripted expert watches the rollout, takes over when the
  policy goes astray and hands back; or, with ``speak_commands``, speaks refinement commands.
- :class:`NullOperator`: never intervenes (evaluation without a human).

The mappings and the simulated operator's rule are documented in ``docs/operators.md``.
"""

from __future__ import annotations

import abc
import atexit
import os
import queue
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from data_tools.talk_tweak import NULL_COMMAND, command_vocabulary, refinement_command

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


# --------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorInput:
    """What the operator does at one control step.

    Attributes:
        intervening: the operator overrides the policy at this step.
        action: (A,) float32, the operator's action; set exactly when ``intervening``.
        command: the spoken refinement command in force at this step (a talk-and-tweak sentence
            such as "move left"), or None. "[null]" and "" are stored as None.
    """

    intervening: bool = False
    action: np.ndarray | None = None
    command: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "intervening", bool(self.intervening))
        if self.intervening:
            if self.action is None:
                raise ValueError("OperatorInput: an intervening input needs an action")
            a = np.array(self.action, dtype=np.float32).reshape(-1)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"OperatorInput: action contains NaN or inf: {a}")
            a.flags.writeable = False
            object.__setattr__(self, "action", a)
        elif self.action is not None:
            raise ValueError("OperatorInput: action given but not intervening")
        if self.command in ("", NULL_COMMAND):
            object.__setattr__(self, "command", None)
        elif self.command is not None and not isinstance(self.command, str):
            raise TypeError(f"OperatorInput: command must be a str or None, got {type(self.command)}")


NO_INPUT = OperatorInput()
"""The operator watches and says nothing."""


def apply_intervention(
    policy_action: np.ndarray,
    op_input: OperatorInput,
    low: float | np.ndarray = -1.0,
    high: float | np.ndarray = 1.0,
) -> tuple[np.ndarray, bool]:
    """The intervention step: ``(executed action (A,) float32, intervened)``.

    The executed action is ``clip(op_input.action, low, high)`` where the operator intervenes,
    else ``clip(policy_action, low, high)``. ``low`` / ``high`` are scalars or (A,) arrays.
    Raises ValueError on a shape mismatch, non-finite actions or ``low > high``.
    """
    policy = np.asarray(policy_action, dtype=np.float32).reshape(-1)
    lo = np.broadcast_to(np.asarray(low, dtype=np.float32), policy.shape)
    hi = np.broadcast_to(np.asarray(high, dtype=np.float32), policy.shape)
    if np.any(lo > hi):
        raise ValueError(f"apply_intervention: low > high ({lo} > {hi})")
    if op_input.intervening:
        action = op_input.action
        if action.shape != policy.shape:
            raise ValueError(
                f"apply_intervention: operator action shape {action.shape} != policy action shape {policy.shape}"
            )
    else:
        action = policy
        if not np.all(np.isfinite(action)):
            raise ValueError(f"apply_intervention: policy action contains NaN or inf: {action}")
    return np.clip(action, lo, hi).astype(np.float32), op_input.intervening


class Operator(abc.ABC):
    """A human (or simulated) operator watching the robot.

    ``reset(task)`` at the start of every episode; ``observe(obs, policy_action, info)`` once per
    control step, before the action is executed (``info`` is the last ``env.step`` info, ``{}``
    at the first step); ``close()`` releases devices. Usable as a context manager.
    """

    action_dim: int

    @abc.abstractmethod
    def reset(self, task: str) -> None:
        """A new episode of ``task`` starts."""

    @abc.abstractmethod
    def observe(self, obs: np.ndarray, policy_action: np.ndarray, info: Mapping[str, Any]) -> OperatorInput:
        """The operator's input for this step, given the observation and the policy's action."""

    def close(self) -> None:
        """Release devices (default: nothing to release)."""

    def __enter__(self) -> "Operator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_action(self, policy_action: np.ndarray | None) -> np.ndarray | None:
        if policy_action is None:
            return None
        a = np.asarray(policy_action, dtype=np.float32).reshape(-1)
        if a.shape != (self.action_dim,):
            raise ValueError(
                f"{type(self).__name__}: policy action must have shape ({self.action_dim},), got {a.shape}"
            )
        return a


class NullOperator(Operator):
    """Never intervenes, never speaks (evaluation without a human)."""

    def __init__(self, action_dim: int = 4) -> None:
        self.action_dim = int(action_dim)

    def reset(self, task: str) -> None:
        pass

    def observe(self, obs, policy_action, info) -> OperatorInput:
        return NO_INPUT


# --------------------------------------------------------------------------------------------
# Teleoperation devices: shared action layout and gripper handling
# --------------------------------------------------------------------------------------------


class _TeleopOperator(Operator):
    """Action layout of a delta-action arm: dims 0..2 translation, 3..5 rotation (``action_dim``
    7 only), the remaining dim the gripper (+1 close, -1 open).

    The gripper command is held: while the operator does not intervene it follows the policy's
    gripper command, so taking over mid-grasp keeps the object; a close / open input sets it.
    """

    def __init__(self, action_dim: int, translation_scale: float, rotation_scale: float, gripper_index: int) -> None:
        if action_dim not in (4, 7):
            raise ValueError(f"action_dim must be 4 (xyz + gripper) or 7 (xyz + rpy + gripper), got {action_dim}")
        self.action_dim = int(action_dim)
        self.n_motion = 3 if action_dim == 4 else 6
        g = int(gripper_index) % self.action_dim
        if g < self.n_motion:
            raise ValueError(
                f"gripper_index {gripper_index} collides with the motion dims 0..{self.n_motion - 1} "
                f"of action_dim {action_dim}"
            )
        self.gripper_index = g
        self.translation_scale = float(translation_scale)
        self.rotation_scale = float(rotation_scale)
        self.task: str | None = None
        self._gripper: float | None = None

    def reset(self, task: str) -> None:
        self.task = task
        self._gripper = None

    def _scale(self) -> np.ndarray:
        s = np.full(self.n_motion, self.rotation_scale, dtype=np.float64)
        s[:3] = self.translation_scale
        return s

    def _finish(self, policy: np.ndarray | None, intervening: bool, motion: np.ndarray, gripper: float | None,
                command: str | None) -> OperatorInput:
        """Build the step's input; ``gripper`` is a new close/open command or None (hold)."""
        if gripper is not None:
            self._gripper = float(gripper)
        if not intervening:
            if policy is not None and gripper is None:
                self._gripper = float(policy[self.gripper_index])
            return OperatorInput(False, None, command)
        if self._gripper is None:
            self._gripper = float(policy[self.gripper_index]) if policy is not None else -1.0
        action = np.zeros(self.action_dim, dtype=np.float32)
        action[: self.n_motion] = motion * self._scale()
        action[self.gripper_index] = self._gripper
        return OperatorInput(True, action, command)


# --------------------------------------------------------------------------------------------
# SpaceMouse
# --------------------------------------------------------------------------------------------


class SpaceMouseOperator(_TeleopOperator):
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
        close_button, open_button: button indices: close sets the gripper to +1, open to -1
            (both held, or neither: the gripper command is held).
        device_name: pyspacemouse device name (e.g. "SpaceMouseCompact"); None: the first found.
        axis_convention: pyspacemouse ``AxisConvention`` value used when opening ("hid_z_up").
        max_reads: HID reports drained per control step (the device sends one report per
            channel per read; draining keeps the state current at 10 Hz).

    Intervening: a mapped axis beyond the deadzone, or any button held.
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
        gripper = 1.0 if close and not open_ else -1.0 if open_ and not close else None
        intervening = bool(np.any(v != 0.0) or any(buttons))
        return self._finish(policy, intervening, v, gripper, None)

    def close(self) -> None:
        if self._owns_device and self._device is not None:
            self._device.close()
            self._device = None
            self._owns_device = False


# --------------------------------------------------------------------------------------------
# Keyboard
# --------------------------------------------------------------------------------------------


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


class KeyboardOperator(_TeleopOperator):
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
        special = [gripper_key, intervention_key, clear_command_key]
        clashes = (set(self.key_map) & set(self.commands)) | (set(special) & (set(self.key_map) | set(self.commands)))
        if clashes or len(set(special)) != 3:
            raise ValueError(f"KeyboardOperator: keys bound twice: {sorted(clashes) or special}")
        self.gripper_key, self.intervention_key, self.clear_command_key = special
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
        gripper = None
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
        command = None
        if self._command_left > 0:
            command = self._command
            self._command_left -= 1
        return self._finish(policy, self.latched or pressed, np.clip(motion, -1.0, 1.0), gripper, command)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
            self._keys = None


# --------------------------------------------------------------------------------------------
# Simulated operator
# --------------------------------------------------------------------------------------------


class SimulatedOperator(Operator):
    """A simulated human: Metaworld's scripted expert watching the rollout (bench tasks only).

    Each step it computes the noise-free expert action ``a*`` for ``obs`` and, while watching:

    - disagreement: ``||policy[:3] - a*[:3]||_2 > disagree_threshold`` (both clipped to
      [-1, 1]) for ``patience`` consecutive steps, or
    - no progress: the hand (``obs[:3]``) stays within ``progress_eps`` metres of where it was
      when it last moved that far, for ``no_progress_steps`` steps,

    triggers it. ``reaction_delay`` steps after the triggering step it takes over for
    ``correction_steps`` steps, executing ``clip(a* + N(0, expert_noise^2), -1, 1)`` (all action
    dims), then hands back and watches afresh (streak and progress reset).

    With ``speak_commands`` it never takes over: during the same segments it speaks
    ``refinement_command(sum of the last command_window (a*[:3] - policy[:3]) * translation_scale_m)``
    (recomputed every step; "[null]" is silence). Used at evaluation time.

    With ``talk_then_tweak`` (the default; the paper's online phase: language interventions first, physical
    ones when they do not help) a segment speaks as above, unless the previous segment spoke and
    ended at most ``escalate_window`` steps before this trigger: then it takes over (and the
    segment after a take-over speaks again). ``segment_counts`` counts both kinds.

    Args:
        task: the first task (``reset(task)`` may switch; experts are built per task).
        expert_noise, reaction_delay, disagree_threshold, patience, correction_steps,
        no_progress_steps, progress_eps: the rule above.
        speak_commands, command_window, translation_scale_m (metres per action unit, Metaworld
        0.01), sigma, words: the speaking rule (``sigma`` / ``words`` as ``data_tools.talk_tweak``).
        seed: seeds the correction noise (one generator for the operator's lifetime).
        expert: the scripted expert's variant (``dual_actor.runtime.sim.EXPERTS``): ``corrected`` (default: its known
            loops fixed, ``sim._corrected_policy``; docs/operators.md) or ``metaworld`` as shipped.
    """

    action_dim = 4

    def __init__(
        self,
        task: str,
        expert_noise: float = 0.1,
        reaction_delay: int = 2,
        disagree_threshold: float = 0.5,
        patience: int = 3,
        correction_steps: int = 10,
        no_progress_steps: int = 30,
        progress_eps: float = 0.01,
        speak_commands: bool = False,
        talk_then_tweak: bool = True,
        escalate_window: int = 20,
        command_window: int = 5,
        translation_scale_m: float = 0.01,
        sigma: float = 0.001,
        words: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
        expert: str = "corrected",
    ) -> None:
        from dual_actor.runtime.sim import EXPERTS

        if expert not in EXPERTS:
            raise ValueError(f"expert must be one of {EXPERTS}, got {expert!r}")
        self.expert_variant = expert
        for name, value, lo in (
            ("reaction_delay", reaction_delay, 0), ("patience", patience, 1),
            ("correction_steps", correction_steps, 1), ("no_progress_steps", no_progress_steps, 1),
            ("command_window", command_window, 1),
        ):
            if int(value) < lo:
                raise ValueError(f"{name} must be >= {lo}, got {value}")
        if expert_noise < 0 or disagree_threshold < 0 or progress_eps < 0:
            raise ValueError("expert_noise, disagree_threshold and progress_eps must be >= 0")
        self.expert_noise = float(expert_noise)
        self.reaction_delay = int(reaction_delay)
        self.disagree_threshold = float(disagree_threshold)
        self.patience = int(patience)
        self.correction_steps = int(correction_steps)
        self.no_progress_steps = int(no_progress_steps)
        self.progress_eps = float(progress_eps)
        self.speak_commands = bool(speak_commands)
        self.talk_then_tweak = bool(talk_then_tweak)
        self.escalate_window = int(escalate_window)
        self.segment_counts = {"speak": 0, "takeover": 0}
        """Correction segments so far, by kind (the operator's lifetime)."""
        self.command_window = int(command_window)
        self.translation_scale_m = float(translation_scale_m)
        self.sigma = float(sigma)
        self.words = words
        self.rng = np.random.default_rng(seed)
        self._experts: dict[str, Any] = {}
        self.trigger_counts = {"disagree": 0, "no_progress": 0}
        """Triggers so far, by reason (the operator's lifetime)."""
        self.reset(task)

    def rng_state(self) -> dict:
        """The correction-noise generator's state (saved with a run so that a resumed run does not replay it)."""
        return {"rng": self.rng.bit_generator.state}

    def load_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def _expert(self, task: str):
        from dual_actor.runtime.sim import ScriptedExpert, resolve_task

        key = resolve_task(task)[0]
        if key not in self._experts:
            self._experts[key] = ScriptedExpert(key, noise=0.0, variant=self.expert_variant)
        return self._experts[key]

    def reset(self, task: str) -> None:
        self.task = task
        self.expert = self._expert(task)
        self.phase = "watch"  # "watch" -> "react" (reaction delay) -> "act" (correct / speak) -> "watch"
        self._countdown = 0
        self._streak = 0
        self._ref_hand: np.ndarray | None = None
        self._still = 0
        self._diffs: deque[np.ndarray] = deque(maxlen=self.command_window)
        self.last_trigger: str | None = None
        self._segment_speaks = self.speak_commands
        self._last_spoke = False  # the previous segment of this episode spoke
        self._since_segment = None  # steps since the previous segment ended (None: none yet)

    def _watch(self, disagree: bool, hand: np.ndarray) -> str | None:
        self._streak = self._streak + 1 if disagree else 0
        if self._ref_hand is None or np.linalg.norm(hand - self._ref_hand) > self.progress_eps:
            self._ref_hand, self._still = hand, 0
        else:
            self._still += 1
        if self._streak >= self.patience:
            return "disagree"
        if self._still >= self.no_progress_steps:
            return "no_progress"
        return None

    def _next_segment_speaks(self) -> bool:
        if self.speak_commands:
            return True
        if not self.talk_then_tweak:
            return False
        recent = self._since_segment is not None and self._since_segment <= self.escalate_window
        return not (self._last_spoke and recent)  # speaking did not help -> take over

    def observe(self, obs, policy_action, info) -> OperatorInput:
        policy = self._check_action(policy_action)
        obs = np.asarray(obs, dtype=np.float64)
        expert = self.expert.act(obs).astype(np.float64)
        policy = np.clip(policy, -1.0, 1.0) if policy is not None else np.zeros(self.action_dim)
        diff = expert[:3] - policy[:3]
        self._diffs.append(diff)
        hand = obs[:3].copy()

        if self.phase == "watch":
            if self._since_segment is not None:
                self._since_segment += 1
            reason = self._watch(float(np.linalg.norm(diff)) > self.disagree_threshold, hand)
            if reason is not None:
                self.trigger_counts[reason] += 1
                self.last_trigger = reason
                self.phase, self._countdown = "react", self.reaction_delay
        if self.phase == "react":
            if self._countdown == 0:
                self.phase, self._countdown = "act", self.correction_steps
                self._segment_speaks = self._next_segment_speaks()
                self.segment_counts["speak" if self._segment_speaks else "takeover"] += 1
            else:
                self._countdown -= 1
        if self.phase != "act":
            return NO_INPUT

        self._countdown -= 1
        if self._countdown == 0:  # last step of the segment: watch afresh from the next step
            self.phase, self._streak, self._ref_hand, self._still = "watch", 0, hand, 0
            self._last_spoke, self._since_segment = self._segment_speaks, 0
        if self._segment_speaks:
            window = np.stack(self._diffs) * self.translation_scale_m
            return OperatorInput(False, None, refinement_command(window, self.sigma, self.words))
        action = expert + self.rng.normal(0.0, self.expert_noise, size=expert.shape) if self.expert_noise else expert
        return OperatorInput(True, np.clip(action, -1.0, 1.0), None)
