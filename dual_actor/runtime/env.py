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
class RandomStateful(Protocol):
    """A part of a robot (its env, its operator) with a random state that a resumed run must continue."""

    def rng_state(self) -> dict: ...

    def load_rng_state(self, state: dict) -> None: ...


class EnvFactory(Protocol):
    def __call__(self, task: str, seed: int, max_episode_steps: int, cameras: Sequence[str] = (),
                 image_size: int = 128) -> RobotEnv: ...
