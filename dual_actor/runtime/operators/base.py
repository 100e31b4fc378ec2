"""The operator interface and the pure intervention step.

The control loop calls, once per control step and BEFORE the action is executed::

    op_input = operator.observe(obs, policy_action, info)   # is the human intervening? with what?
    action, intervened = apply_intervention(policy_action, op_input, low, high)

:class:`OperatorInput` says whether the operator intervenes at this step, the action that then
overrides the policy's, and a spoken refinement command (a sentence of the talk-and-tweak
vocabulary, :func:`data_tools.talk_tweak.command_vocabulary`) that is in force at this step.
:func:`apply_intervention` is the pure intervention step (LeRobot's ``processor/hil_processor.py``
style): the executed action is the operator's where it intervenes, else the policy's, clipped to
the action limits either way. :class:`Operator` is the interface every operator implements;
:class:`NullOperator` never intervenes (evaluation without a human).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from data_tools.talk_tweak import NULL_COMMAND


EVENTS = ("success", "failure", "rerecord", "pause")
"""Episode control an operator can give (:attr:`OperatorInput.event`)."""


@dataclass(frozen=True)
class OperatorInput:
    """What the operator does at one control step.

    Attributes:
        intervening: the operator overrides the policy at this step.
        action: (A,) float32, the operator's action; set exactly when ``intervening``.
        command: the spoken refinement command in force at this step (a talk-and-tweak sentence
            such as "move left"), or None. "[null]" and "" are stored as None.
        event: episode control given at this step (:data:`EVENTS`): "success" / "failure" end the episode with
            reward 1 / 0, "rerecord" drops it (nothing is learned from it) and starts it again, "pause" holds the
            robot until the operator resumes (a second "pause"); None: nothing.
        estop: the emergency stop is engaged: the robot holds, whatever the policy or the operator's action, until
            it is released (``estop`` False again).
    """

    intervening: bool = False
    action: np.ndarray | None = None
    command: str | None = None
    event: str | None = None
    estop: bool = False

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
        if self.event is not None and self.event not in EVENTS:
            raise ValueError(f"OperatorInput: event must be one of {EVENTS} or None, got {self.event!r}")
        object.__setattr__(self, "estop", bool(self.estop))
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

    def check_ready(self) -> None:
        """Raise RuntimeError, naming what is missing, if the device this operator reads is not there (a run calls
        it before it writes anything). Default: nothing to check."""

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
