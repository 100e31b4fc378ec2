"""gym-hil's Panda pick-cube world (LeRobot's HIL-SERL sim, ``gym_hil`` 0.1.14) as a :class:`RobotEnv`.

``GymHilTaskEnv`` wraps ``gym_hil.envs.PandaPickCubeGymEnv`` (MuJoCo, a Franka Panda with a Robotiq gripper,
operational-space control at 10 Hz) the way LeRobot's ``gym_manipulator`` drives it through gym-hil's
``EEActionWrapper``: a 4-d action in [-1, 1] whose xyz moves the end effector by 0.025 m per unit
(``DEFAULT_EE_STEP_SIZE``) and whose last entry is the gripper's change per step (-1 opens, +1 closes; gym-hil's
[0, 2] gripper action less 1), no rotation. Its own reward and success: reward 1 when the block is lifted 0.1 m
above where it started, which ends the episode (``terminated``); a block pushed out of the sampling area also
ends it, as gym-hil does, but as ``truncated`` (a failure: on this project's robots ``terminated`` means success).

Seeding: gym-hil draws the block's position from NumPy's global generator (``np.random.uniform``), which no
trial can own; here it comes from the env's own generator (``np.random.default_rng(seed)``, one position per
reset, uniform over gym-hil's sampling area ``[0.3, 0.5] x [-0.15, 0.15]``), so a trial is reproducible from its
env seed and evaluation trials (:func:`dual_actor.eval.trial_seeds`) are distinct from training episodes.

Observation (``obs_mode="state"``, 21-d float32): the proprioception first (TCP position xyz, the gripper's
closure in [0, 1]), then the 7 joint positions and 7 joint velocities (the rest of gym-hil's ``agent_pos``), then
the block's position (gym-hil's ``environment_state``). :class:`PickCubeExpert` is a scripted expert that acts from
that observation alone (approach, descend, grasp, lift), for demos and for the simulated operator.

Cameras (``env.obs_mode=pixels``: ``front`` and ``wrist``, :data:`CAMERAS`): gym-hil's own two cameras (its
``front`` and ``handcam_rgb``), rendered here by one ``mujoco.Renderer`` at ``image_size`` with shadows and
reflections off (``render_effects=False``; gym-hil's ``image_obs=True`` renders both with them, ~380 ms a step on
this CPU). With ``render_effects=True`` the frames are gym-hil's own, pixel for pixel (tests/test_gym_hil.py). The
observation vector stays the 21-d state (the simulated operator sees the scene); what the policy reads of it is the
env's ``state_dims`` (pixels: the 18 entries of gym-hil's ``agent_pos``, no block position).
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any, Sequence

import numpy as np

from dual_actor.runtime.sim.rendering import SceneCameras

EE_STEP_M = 0.025
"""Metres of end-effector motion per action unit (gym-hil's ``DEFAULT_EE_STEP_SIZE``)."""
SAMPLING_BOUNDS = np.asarray([[0.3, -0.15], [0.5, 0.15]])
"""The block's xy sampling area (gym-hil's ``_SAMPLING_BOUNDS``)."""
MAX_GRIPPER = 255.0
"""gym-hil's ``MAX_GRIPPER_COMMAND``: the gripper actuator's range."""
OBS_DIM, PROPRIO_DIM, ACTION_DIM = 21, 4, 4
BLOCK = slice(18, 21)
"""The block's position in the observation."""
TASK = "pick up the cube"
MAX_EPISODE_STEPS = 100
"""gym-hil registers its Panda tasks with 100 steps (10 s at 10 Hz)."""
ENV_NAME = "PandaPickCube"
CAMERAS = {"front": "front", "wrist": "handcam_rgb"}
"""Our camera names -> gym-hil's MuJoCo cameras (its ``pixels`` keys are ``front`` and ``wrist``)."""
AGENT_POS_DIMS = 18
"""The leading entries of the observation that gym-hil's ``agent_pos`` holds (what pixel runs' policies read)."""

_OPEN: "weakref.WeakSet[GymHilTaskEnv]" = weakref.WeakSet()
_HOOKED: list[bool] = []


def _close_open_envs() -> None:
    """Free every live env's renderer (gym-hil builds one even without cameras) before MuJoCo's own atexit hook
    terminates the EGL display: registered once MuJoCo is imported (after its hook, so it runs before it)."""
    for env in list(_OPEN):
        env.close()


def resolve_task(task: str) -> tuple[str, str]:
    """``(task, env name)`` for gym-hil's one task; KeyError for anything else."""
    if task != TASK:
        raise KeyError(f"gym-hil's PandaPickCube task is {TASK!r}, got {task!r}")
    return task, ENV_NAME


class GymHilTaskEnv:
    """One gym-hil PandaPickCube episode stream (module docstring). ``task`` must be :data:`TASK`; ``cameras`` a
    subset of :data:`CAMERAS`, rendered at ``image_size`` by :meth:`images`."""

    robot_name = "gym-hil-panda"
    translation_scale_m = EE_STEP_M
    rotation_scale_rad = 0.0

    def __init__(self, task: str = TASK, seed: int = 0, max_episode_steps: int = MAX_EPISODE_STEPS,
                 cameras: Sequence[str] = (), image_size: int = 128, render_effects: bool = False) -> None:
        self.task, self.env_name = resolve_task(task)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"gym-hil's cameras are {sorted(CAMERAS)}, got {unknown} (env.cameras)")
        from gym_hil.envs import PandaPickCubeGymEnv

        self.max_episode_steps, self.cameras = int(max_episode_steps), [str(c) for c in cameras]
        self.image_size, self.render_effects = int(image_size), bool(render_effects)
        self._cams = SceneCameras({c: CAMERAS[c] for c in self.cameras}, self.image_size, self.render_effects)
        self._env = PandaPickCubeGymEnv(seed=int(seed), reward_type="sparse", random_block_position=False)
        if not _HOOKED:  # after the env's renderer imported MuJoCo's GL: runs before its teardown
            atexit.register(_close_open_envs)
            _HOOKED.append(True)
        self._steps = self.episodes_started = 0
        self._closed = False
        _OPEN.add(self)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """The block positions of a fresh env of ``seed`` from the next reset on."""
        self._rng = np.random.default_rng(int(seed))

    @property
    def elapsed_steps(self) -> int:
        return self._steps

    def rng_state(self) -> dict:
        """Where the block-position stream stands (a resumed run continues it instead of replaying it)."""
        return {"rng": self._rng.bit_generator.state, "episodes_started": self.episodes_started}

    def load_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self.episodes_started = int(state["episodes_started"])

    def _observe(self) -> np.ndarray:
        e = self._env
        d = e.data
        tcp = d.sensor("2f85/pinch_pos").data
        grip = e.get_gripper_pose() / MAX_GRIPPER
        block = d.sensor("block_pos").data
        return np.concatenate([tcp, grip, d.qpos[e._panda_dof_ids], d.qvel[e._panda_dof_ids], block]).astype(np.float32)

    def observe(self) -> np.ndarray:
        return self._observe()

    def ee_position(self) -> np.ndarray:
        """The TCP (pinch site) position, metres (dual_actor.runtime.env.Arm)."""
        return np.array(self._env.data.sensor("2f85/pinch_pos").data, dtype=np.float64)

    def joint_positions(self) -> np.ndarray:
        return np.array(self._env.data.qpos[self._env._panda_dof_ids], dtype=np.float64)

    def hold(self) -> None:
        """Keep the current pose: the operational-space target moves to where the TCP is (the gripper as it is)."""
        self._env.data.mocap_pos[0] = self.ee_position()

    def reset(self) -> np.ndarray:
        import mujoco

        e = self._env
        e.reset()  # home pose, the block at gym-hil's fixed position
        xy = self._rng.uniform(*SAMPLING_BOUNDS)
        e.data.jnt("block").qpos[:3] = (*xy, e._block_z)
        mujoco.mj_forward(e.model, e.data)
        e._z_init = float(e.data.sensor("block_pos").data[2])
        e._z_success = e._z_init + 0.1
        self._steps = 0
        self.episodes_started += 1
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"gym-hil actions are {ACTION_DIM}-d (xyz, gripper), got shape {a.shape}")
        _, reward, ended, _, info = self._env.step(np.concatenate([a[:3] * EE_STEP_M, np.zeros(3), a[3:]]))
        self._steps += 1
        success = float(reward) >= 1.0
        truncated = (ended and not success) or self._steps >= self.max_episode_steps
        return self._observe(), float(success), bool(success), bool(truncated and not success), dict(info)

    def images(self) -> dict[str, np.ndarray]:
        """The current frame of every camera: ``{camera: uint8 (image_size, image_size, 3)}`` RGB."""
        if not self.cameras:
            return {}
        if self._closed:
            raise RuntimeError(f"{self.env_name}: env is closed")
        return self._cams.frames(self._env.model, self._env.data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cams.close()
            self._env.close()

    def __enter__(self) -> "GymHilTaskEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PickCubeExpert:
    """A scripted pick from :class:`GymHilTaskEnv`'s observation alone (stateless: it acts from any state, so the
    simulated operator can take over mid-episode): open and go above the block, descend to it, close, lift; a
    closed gripper far from the block opens again. ``act(obs) -> (4,)`` in [-1, 1], plus Gaussian ``noise`` from
    ``rng``."""

    action_dim = ACTION_DIM
    hover_m, reach_m, lift_m = 0.06, 0.012, 0.2

    def __init__(self, task: str = TASK, noise: float = 0.0, rng: np.random.Generator | None = None,
                 variant: str = "scripted") -> None:
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        self.task, self.noise, self.rng, self.variant = task, float(noise), rng, variant

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        tcp, grip, block = obs[:3], float(obs[3]), obs[BLOCK]
        gap = block - tcp
        xy_far = float(np.linalg.norm(gap[:2])) > self.reach_m
        if grip > 0.6:  # closed (or closing)
            if float(np.linalg.norm(gap)) < 0.03:  # holding it: lift
                target, g = np.array([tcp[0], tcp[1], block[2] + self.lift_m]), 1.0
            else:  # missed: open, back up
                target, g = tcp + np.array([0.0, 0.0, 0.02]), -1.0
        elif xy_far:  # above the block first
            target, g = np.array([block[0], block[1], max(block[2] + self.hover_m, tcp[2])]), -1.0
        elif abs(gap[2]) > self.reach_m:  # descend
            target, g = block.copy(), -1.0
        else:  # at the block: close
            target, g = tcp.copy(), 1.0
        a = np.concatenate([np.clip((target - tcp) / EE_STEP_M, -1.0, 1.0), [g]])
        if self.noise > 0:
            rng = rng or self.rng or np.random.default_rng()
            a = a + rng.normal(0.0, self.noise, size=a.shape)
        return np.clip(a, -1.0, 1.0).astype(np.float32)
