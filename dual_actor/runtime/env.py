"""The robot environment protocol: what the control loop, the online phase and the evaluator need of a robot.

The Metaworld bench (:class:`dual_actor.runtime.sim.MetaworldTaskEnv`) implements it; a real robot implements
the same few methods (a ``gymnasium.Env`` whose ``reset`` / ``step`` are wrapped to these shapes does too).
An environment is chosen by config: ``env.robot`` is a Hydra ``_target_`` with ``_partial_: true`` whose
call ``make_env(task=..., seed=..., max_episode_steps=..., cameras=..., image_size=...)`` returns one
:class:`RobotEnv` for one task (``env.robot: null`` for a dataset-only setting: no online phase, no evaluation).

A factory (or the class it builds) may name its robot with a ``robot_name`` attribute: the name teleop logs and
datasets record (``env.name`` otherwise).

Observation: a flat float32 state ``(obs_dim,)`` whose first ``proprio_dim`` entries are the proprioception;
actions ``(action_dim,)`` in [-1, 1]; reward 1 at success, ``terminated`` at success, ``truncated`` at the
time limit.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class RobotEnv(Protocol):
    cameras: Sequence[str]
    """Camera names :meth:`images` renders (empty: none)."""

    def reset(self) -> np.ndarray:
        """Start an episode; the first observation (obs_dim,)."""

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """(observation, reward, terminated, truncated, info) after ``action``."""

    def images(self) -> dict[str, np.ndarray]:
        """``{camera: uint8 (H, W, 3)}`` of the current state."""

    @property
    def elapsed_steps(self) -> int:
        """Steps since the last reset."""

    def close(self) -> None:
        """Free the simulator / the hardware connection."""


@runtime_checkable
class Arm(Protocol):
    """What the safety layer (:mod:`dual_actor.runtime.safety`) reads from and commands to an arm, beside
    :class:`RobotEnv`: every real-robot adapter (``dual_actor.robots``) and the bench implement it.

    Actions are deltas in [-1, 1]: dims 0..2 the end effector's translation, ``translation_scale_m`` metres per
    unit; with 7-d actions dims 3..5 its rotation (roll, pitch, yaw), ``rotation_scale_rad`` radians per unit; the
    last dim the gripper (absolute: -1 open .. 1 closed, or as the adapter documents)."""

    translation_scale_m: float
    """Metres the end effector moves per action unit of dims 0..2."""
    rotation_scale_rad: float
    """Radians per action unit of dims 3..5 (7-d actions; 0 where the arm takes no rotation)."""

    def observe(self) -> np.ndarray:
        """The current observation (as ``reset`` / ``step`` return it), read without moving anything
        (``python -m dual_actor.check_robot`` reads only this and ``images()``)."""

    def ee_position(self) -> np.ndarray:
        """(3,) the end effector's position in metres, in the frame of ``safety.workspace_*`` (the robot base)."""

    def joint_positions(self) -> np.ndarray | None:
        """The joint positions (radians; lerobot arms: the units of their calibration), or None where unknown."""

    def hold(self) -> None:
        """Stop moving now and keep the current pose (the gripper as it is); callable at any time."""


@runtime_checkable
class RandomStateful(Protocol):
    """A part of a robot (its env, its operator) with a random state that a resumed run must continue."""

    def rng_state(self) -> dict: ...

    def load_rng_state(self, state: dict) -> None: ...


class EnvFactory(Protocol):
    def __call__(self, task: str, seed: int, max_episode_steps: int, cameras: Sequence[str] = (),
                 image_size: int = 128) -> RobotEnv: ...
