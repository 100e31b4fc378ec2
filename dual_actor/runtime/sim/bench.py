"""The bench's robot: one Metaworld 3.1.1 task as a :class:`~dual_actor.runtime.env.RobotEnv`, and the bench constants.

Tasks (:data:`BENCH_TASKS`, task string -> Metaworld env): "place the bolt" -> ``pick-place-v3``,
"pick up the bolt" -> ``pick-out-of-hole-v3``, "assemble the bolt" -> ``peg-insert-side-v3``
(:func:`resolve_task` maps either name to both).

:class:`MetaworldTaskEnv` steps one task on state observations (:data:`OBS_DIM`-d float32, goal position
included; :data:`PROPRIO_SLICE` its proprioception) with a sparse success reward, and renders named
Metaworld cameras on request (:meth:`MetaworldTaskEnv.images`). Actions are :data:`ACTION_DIM`-d: the
xyz hand delta (:data:`ACTION_SCALE_M` metres per unit) and the gripper effort.

Cameras. ``MetaworldTaskEnv(..., cameras=["corner", "gripperPOV"], image_size=64)``: ``reset()`` and
``step()`` still return the state vector (operators and scripted experts read it), and ``images()``
renders the current frame of every camera as uint8 (H, W, 3) RGB with ``mujoco.Renderer`` (one
renderer per env, created on first use; MuJoCo's GL backend from ``MUJOCO_GL``, e.g. ``egl`` with
``EGL_PLATFORM=surfaceless`` on a headless machine). Shadows and reflections are off unless
``render_effects=True``: with Mesa's software EGL on this 2-core CPU they cost ~7x
(128x128: ~0.10 s per frame with them, ~9 ms without; 32x32: ~70 ms vs ~6 ms). Images are MuJoCo's
raw camera output (no flips; Metaworld's ``corner*`` cameras look at the table upside down).
Camera names: ``topview``, ``corner``, ``corner2``, ``corner3``, ``corner4``, ``behindGripper``,
``gripperPOV`` (:data:`CAMERAS`). Renderers still alive at exit are freed before MuJoCo tears its GL
display down (:mod:`dual_actor.runtime.sim.rendering`, shared with gym-hil's cameras).

Per-episode randomisation. ``gym.make("Meta-World/MT1", env_name=..., seed=...)`` draws one of
50 configurations fixed by the seed and ignores ``reset(seed=)``. Instead this module builds the
single-task goal-observable env (``metaworld.env_dict.ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE``,
Metaworld's documented single-goal entry point), then unfreezes its random vector with
Metaworld's ``seeded_rand_vec`` flag (upstream PR #370, the same fix lerobot applies):
``env._freeze_rand_vec = False; env.seeded_rand_vec = True; env.seed(seed)``. Every ``reset()``
then draws a fresh object/goal configuration from the task's own reset space (with the task's
own rejection rules, e.g. object and goal >= 0.15 m apart) using the env's seeded generator:
a continuum of configurations, reproducible from ``seed``, no global ``np.random`` use.
``pick-out-of-hole-v3`` has a fixed object position (the hole); only its goal moves.

Measured on this 2-core CPU (Metaworld 3.1.1, MuJoCo 3.3.0): stepping with the scripted expert takes
0.9 - 1.8 ms/step depending on the task (resets included).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dual_actor.runtime.sim.rendering import SceneCameras

BENCH_TASKS: dict[str, str] = {
    "place the bolt": "pick-place-v3",
    "pick up the bolt": "pick-out-of-hole-v3",
    "assemble the bolt": "peg-insert-side-v3",
}
"""Task string -> Metaworld v3 env name, in bench order."""

ROBOT = "metaworld-sawyer"
"""The robot's name in demo files and teleop logs."""
OBS_DIM = 39
ACTION_DIM = 4
PROPRIO_SLICE = slice(0, 4)  # hand xyz + gripper opening
ACTION_SCALE_M = 0.01
"""Metres of hand motion per unit of the xyz action (Metaworld's ``SawyerXYZEnv`` ``action_scale``, 1/100)."""
MAX_EPISODE_STEPS = 200
"""The bench's episode limit (steps at ``DEMO_FPS``) where none is given."""
IMAGE_SIZE = 128
"""Rendered image height = width, pixels, where none is given."""
DEMO_FPS = 10
HAND_TOLERANCE = 0.01
"""Metres: how far the hand (``obs[:3]``) after ``MetaworldTaskEnv.reset(hand_pos=p)`` may be from ``p`` where the
scene leaves ``p`` free (a scene's own objects or platform can hold the hand back further; see ``reset``)."""
_HAND_REFINE_M = 0.002  # reset(hand_pos=) redoes the reset once, corrected, when the hand is further off than this
CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")
"""Cameras of the Metaworld v3 Sawyer scenes (``MetaworldTaskEnv(cameras=...)``)."""


def resolve_task(task: str) -> tuple[str, str]:
    """``(task string, Metaworld env name)`` for a bench task string or a Metaworld v3 env name.

    A Metaworld env name outside the bench is its own task string.
    """
    if task in BENCH_TASKS:
        return task, BENCH_TASKS[task]
    for t, env_name in BENCH_TASKS.items():
        if task == env_name:
            return t, env_name
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    if task in ALL_V3_ENVIRONMENTS:
        return task, task
    raise KeyError(
        f"unknown task {task!r}: expected one of {list(BENCH_TASKS)} or a Metaworld v3 env name "
        f"such as {list(BENCH_TASKS.values())}"
    )


class MetaworldTaskEnv:
    """One Metaworld task, state observations, sparse success reward, fresh configuration per reset.

    ``reset() -> obs``; ``step(action) -> (obs, reward, terminated, truncated, info)`` where
    ``obs`` is float32 (39,), ``action`` (4,) = xyz hand delta (x ``ACTION_SCALE_M`` m) + gripper effort,
    clipped to [-1, 1]. ``reward`` is 1.0 at the step where ``info["success"]`` first holds (the
    episode then terminates), else 0.0; ``truncated`` is True at the ``max_episode_steps``-th
    step of an episode that has not terminated. Stepping a finished episode raises.

    Args:
        task, seed, max_episode_steps: as above.
        cameras: camera names (:data:`CAMERAS`) that :meth:`images` renders; empty: no rendering.
        image_size: height = width of the rendered images, pixels.
        render_effects: render shadows and reflections (off by default: ~7x cheaper on a CPU).

    Raises:
        KeyError: an unknown task or camera (the message lists the valid ones).
    """

    observation_dim = OBS_DIM
    action_dim = ACTION_DIM
    robot_name = ROBOT
    translation_scale_m = ACTION_SCALE_M  # dual_actor.runtime.env.Arm: Metaworld moves its mocap 1 cm per unit
    rotation_scale_rad = 0.0               # xyz + gripper: no rotation
    proprio_slice = PROPRIO_SLICE

    def __init__(
        self,
        task: str,
        seed: int,
        max_episode_steps: int = MAX_EPISODE_STEPS,
        cameras: Sequence[str] = (),
        image_size: int = IMAGE_SIZE,
        render_effects: bool = False,
    ) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        self.cameras = [str(c) for c in cameras]
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown:
            raise KeyError(f"unknown Metaworld camera(s) {unknown}; available: {list(CAMERAS)}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"duplicate cameras in {self.cameras}")
        if self.cameras and int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.image_size = int(image_size)
        self.render_effects = bool(render_effects)
        self._cams = SceneCameras({c: c for c in self.cameras}, self.image_size, self.render_effects)
        self.task, self.env_name = resolve_task(task)
        self.seed = int(seed)
        self.max_episode_steps = int(max_episode_steps)
        # The constructor seeds (and restores) the global np.random for its one reset.
        env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{self.env_name}-goal-observable"](seed=self.seed)
        for attr in ("_freeze_rand_vec", "seeded_rand_vec", "_partially_observable"):
            if not hasattr(env, attr):  # pragma: no cover - guards a Metaworld upgrade
                raise RuntimeError(
                    f"Metaworld {self.env_name}: env has no attribute {attr!r}; per-episode "
                    "randomisation relies on Metaworld 3.1.1 internals"
                )
        env._freeze_rand_vec = False  # new object/goal configuration at every reset ...
        env.seeded_rand_vec = True  # ... drawn from env.np_random, not the global np.random
        env.seed(self.seed)
        # Metaworld raises once its own horizon (500) is passed; ours is enforced here.
        env.max_path_length = max(int(env.max_path_length), self.max_episode_steps)
        self._env = env
        # Where the dense reward's shaping starts (hand, pads) after a plain reset: constant per scene.
        self._reward_refs = {a: np.array(getattr(env, a), dtype=np.float64)
                             for a in ("init_tcp", "init_left_pad", "init_right_pad")}
        # Hand (obs[:3]) minus mocap once the hand has settled on it: ~(4.6, 1.4, -4.9) mm.
        self._weld_offset = np.asarray(env.get_endeff_pos(), dtype=np.float64) - np.asarray(env.hand_init_pos)
        self._steps = 0
        self._done = True
        self.episodes_started = 0
        self.hand_start_error: float | None = None

    @property
    def observation_space(self):
        import gymnasium as gym

        return gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)

    @property
    def action_space(self):
        import gymnasium as gym

        return gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    @property
    def unwrapped(self) -> Any:
        """The underlying Metaworld ``SawyerXYZEnv``."""
        return self._env

    @property
    def elapsed_steps(self) -> int:
        return self._steps

    def images(self) -> dict[str, np.ndarray]:
        """The current frame of every camera: ``{camera: uint8 (image_size, image_size, 3)}`` RGB."""
        if not self.cameras:
            return {}
        if self._env is None:
            raise RuntimeError(f"{self.env_name}: env is closed")
        return self._cams.frames(self._env.model, self._env.data)

    def rng_state(self) -> dict:
        """Where the env's randomness stands (the generator that draws each reset's object / goal
        configuration, and the episode count): a resumed run continues the sequence instead of replaying it."""
        return {"np_random": self._env.np_random.bit_generator.state, "episodes_started": self.episodes_started}

    def load_rng_state(self, state: dict) -> None:
        self._env.np_random.bit_generator.state = state["np_random"]
        self.episodes_started = int(state["episodes_started"])

    def reseed(self, seed: int) -> None:
        """Draw the next reset's configuration as a fresh env of ``seed`` would (the evaluation's per-trial seeds,
        :func:`dual_actor.eval.trial_seeds`, without rebuilding the model: ~0.15 s saved per trial). The same
        observations, step for step (tests/test_sim.py)."""
        self._env.seed(int(seed))
        self.seed = int(seed)

    def reset(self, hand_pos: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """Start an episode: a fresh object / goal configuration; the observation (39,).

        ``hand_pos``: start with the hand (``obs[:3]``) at this xyz instead of the task's default
        (long-horizon chains carry the arm from one sub-task to the next, :mod:`dual_actor.chain`).
        Metaworld's reset drives the mocap to the env's ``hand_init_pos`` for 50 simulation steps
        (``_reset_hand``) before it places the objects; this sets ``hand_init_pos`` for that one
        reset and restores the env's own default afterwards, so later plain resets are unchanged.
        The mocap target is ``hand_pos`` minus the hand-mocap weld offset (~7 mm, measured at
        construction), clipped into the scene's mocap bounds; if the reached hand is still more than
        2 mm off, the reset is redone once with the target corrected by that error, the env's
        generator rewound first (the same configuration is drawn; the episode counts once).

        Tolerance: within :data:`HAND_TOLERANCE` where the scene leaves the position free (45 end
        positions of expert and random rollouts of the three tasks, each restarted in all three
        scenes: <= 2.9 mm in 133 of 135 cases, 8.7 mm at most in the other two). The scenes differ:
        away from its hole, the pick-up scene's platform holds the hand above z ~0.10, so a hand
        left lower elsewhere starts above it, further off; the mocap is then put where the hand is
        (not left inside the obstacle, where it would swallow the first upward actions).
        ``hand_start_error``: the distance reached - asked (m; None after a plain reset).

        The object and goal positions are the ones a plain reset would have drawn (an object's
        orientation can differ by ~1e-3: it settles while the hand moves). The gripper is opened,
        as at every Metaworld reset (nothing held carries over). Metaworld's dense reward
        (``info["dense_reward"]``; the sparse reward and success do not use it) shapes from the
        hand's start (``init_tcp``, pick-place's ``init_*_pad``) and raises when that start is
        within a few mm of the object in the x-z plane: those references are set back to a plain
        reset's, so the dense reward is shaped as in a plain episode.
        """
        if hand_pos is None:
            obs, _ = self._env.reset()
            self.hand_start_error = None
        else:
            obs = self._reset_hand_at(hand_pos)
        self._steps = 0
        self._done = False
        self.episodes_started += 1
        return np.asarray(obs, dtype=np.float32)

    def _reset_hand_at(self, hand_pos: Sequence[float] | np.ndarray) -> np.ndarray:
        want = np.asarray(hand_pos, dtype=np.float64).reshape(-1)
        if want.shape != (3,) or not np.all(np.isfinite(want)):
            raise ValueError(f"{self.env_name}: hand_pos must be 3 finite numbers (xyz, m), got {hand_pos}")
        env = self._env
        default, rng = env.hand_init_pos, env.np_random.bit_generator.state
        target = np.clip(want - self._weld_offset, env.mocap_low, env.mocap_high)
        try:
            for attempt in range(2):
                if attempt:
                    env.np_random.bit_generator.state = rng  # redraw the same configuration
                env.hand_init_pos = target
                obs, _ = env.reset()
                err = np.asarray(obs[:3], dtype=np.float64) - want
                if np.linalg.norm(err) <= _HAND_REFINE_M:
                    break
                target = np.clip(target - err, env.mocap_low, env.mocap_high)
        finally:
            env.hand_init_pos = default
        if np.linalg.norm(err) > _HAND_REFINE_M:  # held back (an obstacle, the arm's reach): no mocap left inside it
            mocap_id = env.model.body_mocapid[env.data.body("mocap").id]
            env.data.mocap_pos[mocap_id] = np.clip(obs[:3] - self._weld_offset, env.mocap_low, env.mocap_high)
        for attr, value in self._reward_refs.items():  # Metaworld's dense reward: shaped from the default start
            setattr(env, attr, value.copy())
        self.hand_start_error = float(np.linalg.norm(err))
        return obs

    # ------------------------------------------------------------------ Arm (the safety layer's view)
    def ee_position(self) -> np.ndarray:
        """(3,) the hand's position in metres (what ``obs[:3]`` reports), in Metaworld's world frame."""
        return np.asarray(self._env.unwrapped.get_endeff_pos(), dtype=np.float64).copy()

    def observe(self) -> np.ndarray:
        """The current observation (39-d), without stepping."""
        return np.asarray(self._env._get_obs(), dtype=np.float32)

    def joint_positions(self) -> None:
        """The bench commands the hand's mocap body, not joints: none."""
        return None

    def hold(self) -> None:
        """Nothing moves between steps in the simulation: holding is stepping no further."""

    def step(self, action: Sequence[float] | np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError(f"{self.env_name}: episode is over (or never started); call reset()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"{self.env_name}: action must have shape ({ACTION_DIM},), got {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.env_name}: action contains NaN or inf: {a}")
        a = np.clip(a, -1.0, 1.0)
        obs, _dense, _term, _trunc, info = self._env.step(a)
        self._steps += 1
        success = bool(info.get("success", 0.0))
        terminated = success
        truncated = (not terminated) and self._steps >= self.max_episode_steps
        self._done = terminated or truncated
        info = dict(info)
        info["success"] = success
        info["dense_reward"] = float(_dense)
        return np.asarray(obs, dtype=np.float32), (1.0 if success else 0.0), terminated, truncated, info

    def close_renderer(self) -> None:
        """Free the GL context of :meth:`images` (a later call makes a new one)."""
        self._cams.close()

    def close(self) -> None:
        self.close_renderer()
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> "MetaworldTaskEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

