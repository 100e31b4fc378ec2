"""Robot B: a second robot that differs from A by a fixed frame error (multi-robot runs, paper RQ5).

:class:`RobotShift` is the frame error; :class:`ShiftedEnv` is any :class:`~dual_actor.runtime.env.RobotEnv`
seen through it; :class:`ShiftedOperator` wraps robot B's operator (it watches and steers in the world);
:func:`shifted_factory` turns an env factory into robot B's. The operator wrapper needs nothing from
:mod:`dual_actor.runtime.operators`: it passes the wrapped operator's input on with the action turned.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


POSITION_SLICES = (slice(0, 3), slice(4, 7), slice(11, 14), slice(18, 21), slice(22, 25), slice(29, 32), slice(36, 39))
"""The xyz positions inside Metaworld's 39-d state: hand, object 1, object 2 (this frame and the previous
one) and the goal. Quaternions and the gripper opening are left as they are."""


def _rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class RobotShift:
    """A fixed frame error between robot A (the bench as is) and robot B.

    Robot B reports every position in a frame rotated by ``obs_rotate_deg`` about the vertical axis through
    ``pivot`` and translated by ``obs_offset`` (metres; a miscalibrated base / camera extrinsic), and its
    controller turns every commanded xy motion by ``action_rotate_deg`` (a rotated mounting). A state policy
    trained on A reads B's object positions a few centimetres off and moves in turned directions.
    """

    def __init__(self, obs_rotate_deg: float = 0.0, obs_offset: Sequence[float] = (0.0, 0.0, 0.0),
                 action_rotate_deg: float = 0.0, pivot: Sequence[float] = (0.0, 0.6, 0.0)):
        self.obs_rotate_deg, self.action_rotate_deg = float(obs_rotate_deg), float(action_rotate_deg)
        self.offset = np.asarray(obs_offset, dtype=np.float64).reshape(3)
        self.pivot = np.asarray(pivot, dtype=np.float64).reshape(3)
        self._R_obs, self._R_act = _rot_z(self.obs_rotate_deg), _rot_z(self.action_rotate_deg)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        """World-frame state -> what robot B reports."""
        out = np.array(obs, dtype=np.float64, copy=True)
        for sl in POSITION_SLICES:
            if sl.stop <= out.shape[-1]:
                out[..., sl] = (out[..., sl] - self.pivot) @ self._R_obs.T + self.pivot + self.offset
        return out.astype(np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        """Robot B's commanded action -> the motion it makes in the world (xyz turned; gripper as is)."""
        a = np.array(action, dtype=np.float64, copy=True)
        a[:3] = self._R_act @ a[:3]
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def command_for(self, world_action: np.ndarray) -> np.ndarray:
        """The command robot B must receive to make ``world_action`` (the operator steers in the world)."""
        a = np.array(world_action, dtype=np.float64, copy=True)
        a[:3] = self._R_act.T @ a[:3]
        return np.clip(a, -1.0, 1.0).astype(np.float32)


class ShiftedEnv:
    """A :class:`RobotEnv` seen through a :class:`RobotShift` (robot B). ``world_observation`` is the true state
    (what a human operator sees in the room)."""

    def __init__(self, env, shift: RobotShift):
        self.env, self.shift = env, shift
        self.cameras = env.cameras
        self.world_observation: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        self.world_observation = np.asarray(self.env.reset(), dtype=np.float32)
        return self.shift.observation(self.world_observation)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self.shift.action(np.asarray(action)))
        self.world_observation = np.asarray(obs, dtype=np.float32)
        return self.shift.observation(self.world_observation), reward, terminated, truncated, info

    def images(self) -> dict[str, np.ndarray]:
        return self.env.images()

    @property
    def elapsed_steps(self) -> int:
        return self.env.elapsed_steps

    def rng_state(self) -> dict:
        return self.env.rng_state()

    def load_rng_state(self, state: dict) -> None:
        self.env.load_rng_state(state)

    def close(self) -> None:
        self.env.close()

    def observe(self) -> np.ndarray:
        self.world_observation = np.asarray(self.env.observe(), dtype=np.float32)
        return self.shift.observation(self.world_observation)

    def hold(self) -> None:
        self.env.hold()

    def __getattr__(self, name: str):
        """The rest of the robot (the Arm members the safety layer and the tools read, counters) is the wrapped
        env's; what is in the world frame (ee_position) is B's own frame only through the observation."""
        return getattr(self.env, name)


class ShiftedOperator:
    """The operator of robot B: watches the world (not B's miscalibrated state) and steers in the world;
    its take-over actions are turned into B's command frame, spoken commands pass unchanged (the wrapped operator's
    input, an :class:`~dual_actor.runtime.operators.base.OperatorInput`, is passed on with only its action replaced)."""

    def __init__(self, operator, env: ShiftedEnv):
        self.operator, self.env = operator, env

    def reset(self, task: str) -> None:
        self.operator.reset(task)

    def observe(self, obs, policy_action, info):
        world = self.env.world_observation if self.env.world_observation is not None else obs
        human = self.operator.observe(world, self.env.shift.action(policy_action), info)
        if not human.intervening:
            return human
        return dataclasses.replace(human, action=self.env.shift.command_for(human.action))

    def rng_state(self) -> dict:
        return self.operator.rng_state() if hasattr(self.operator, "rng_state") else {}

    def load_rng_state(self, state: dict) -> None:
        if hasattr(self.operator, "load_rng_state"):
            self.operator.load_rng_state(state)

    def close(self) -> None:
        self.operator.close()


def shifted_factory(make_env, shift: RobotShift | None):
    """``make_env`` for robot B: every env it makes seen through ``shift`` (None: ``make_env`` itself)."""
    if shift is None:
        return make_env

    def make(*args, **kwargs):
        return ShiftedEnv(make_env(*args, **kwargs), shift)

    return make
