"""The simulated bench: three Metaworld 3.1.1 tasks, scripted experts, warm-up demos.

Tasks (:data:`BENCH_TASKS`, task string -> Metaworld env): "place the bolt" -> ``pick-place-v3``,
"pick up the bolt" -> ``pick-out-of-hole-v3``, "assemble the bolt" -> ``peg-insert-side-v3``.

:class:`MetaworldTaskEnv` steps one task on state observations (39-d float32, goal position
included) with a sparse success reward, and renders named Metaworld cameras on request
(:meth:`MetaworldTaskEnv.images`); :class:`ScriptedExpert` is Metaworld's hand-written policy plus
Gaussian action noise; :func:`generate_demos` writes successful noisy expert episodes (with camera
images when asked) in the HDF5 talk-and-tweak layout (:mod:`data_tools.hdf5_format`).

Cameras. ``MetaworldTaskEnv(..., cameras=["corner", "gripperPOV"], image_size=64)``: ``reset()`` and
``step()`` still return the state vector (operators and scripted experts read it), and ``images()``
renders the current frame of every camera as uint8 (H, W, 3) RGB with ``mujoco.Renderer`` (one
renderer per env, created on first use; MuJoCo's GL backend from ``MUJOCO_GL``, e.g. ``egl`` with
``EGL_PLATFORM=surfaceless`` on a headless machine). Shadows and reflections are off unless
``render_effects=True``: with Mesa's software EGL on this 2-core CPU they cost ~7x
(128x128: ~0.10 s per frame with them, ~9 ms without; 32x32: ~70 ms vs ~6 ms). Images are MuJoCo's
raw camera output (no flips; Metaworld's ``corner*`` cameras look at the table upside down).
Camera names: ``topview``, ``corner``, ``corner2``, ``corner3``, ``corner4``, ``behindGripper``,
``gripperPOV`` (:data:`CAMERAS`).

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

Measured on this 2-core CPU (Metaworld 3.1.1, MuJoCo 3.3.0, noise on all 4 action dims):

- ``generate_demos(path)`` (20 successful demos x 3 tasks, noise 0.1, 200-step limit, seed 0):
  10.7 s wall (13.5 s with the other core busy), env construction and HDF5 write included;
  71 attempts (20 / 25 / 26 per task), 8291 env steps, 6091 of them kept; 1.8 MB file.
  Stepping with the expert: 0.9 - 1.8 ms/step depending on the task (resets included).
- Scripted-expert success within 200 steps at noise 0.1 (100 episodes per task, seed 1):
  pick-place 1.00, pick-out-of-hole 0.84, peg-insert-side 0.83 (noise-free, 30 episodes:
  1.00 / 1.00 / 0.90).
- Median length of successful episodes at noise 0.1: 54 / 127 / 94 steps (the 100-episode
  evaluation); 52 / 128 / 103.5 in the seed-0 demo file.
  ``pick-out-of-hole-v3`` is slow and noise-sensitive: noise-free it succeeds in 106 - 123
  steps; with noise its failures at 200 steps are mostly slow successes (all 30 noise-0.1
  episodes succeed within 500 steps).
"""

from __future__ import annotations

import atexit
import os
import warnings
import weakref
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from data_tools.hdf5_format import Episode, write_dataset

BENCH_TASKS: dict[str, str] = {
    "place the bolt": "pick-place-v3",
    "pick up the bolt": "pick-out-of-hole-v3",
    "assemble the bolt": "peg-insert-side-v3",
}
"""Task string -> Metaworld v3 env name, in bench order."""

ROBOT = "metaworld-sawyer"
OBS_DIM = 39
ACTION_DIM = 4
PROPRIO_SLICE = slice(0, 4)  # hand xyz + gripper opening
DEMO_FPS = 10
HAND_TOLERANCE = 0.01
"""Metres: how far the hand (``obs[:3]``) after ``MetaworldTaskEnv.reset(hand_pos=p)`` may be from ``p`` where the
scene leaves ``p`` free (a scene's own objects or platform can hold the hand back further; see ``reset``)."""
_HAND_REFINE_M = 0.002  # reset(hand_pos=) redoes the reset once, corrected, when the hand is further off than this
CAMERAS = ("topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV")
"""Cameras of the Metaworld v3 Sawyer scenes (``MetaworldTaskEnv(cameras=...)``)."""


_RENDERING: "weakref.WeakSet[MetaworldTaskEnv]" = weakref.WeakSet()


def _close_renderers() -> None:
    """Free every live renderer before MuJoCo's own atexit hook terminates the EGL display (registered
    earlier, so it runs later); a context freed after that prints EGL_NOT_INITIALIZED tracebacks."""
    for env in list(_RENDERING):
        env.close_renderer()


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
    ``obs`` is float32 (39,), ``action`` (4,) = xyz hand delta (x 0.01 m) + gripper effort,
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
    proprio_slice = PROPRIO_SLICE

    def __init__(
        self,
        task: str,
        seed: int,
        max_episode_steps: int = 200,
        cameras: Sequence[str] = (),
        image_size: int = 128,
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
        self._renderer = None
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
        if self._renderer is None:
            import mujoco

            self._renderer = mujoco.Renderer(self._env.model, self.image_size, self.image_size)
            if not _RENDERING:
                atexit.register(_close_renderers)  # after mujoco's GL import: runs before its teardown
            _RENDERING.add(self)
            if not self.render_effects:
                for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                    self._renderer.scene.flags[flag] = False
        out = {}
        for cam in self.cameras:
            self._renderer.update_scene(self._env.data, camera=cam)
            out[cam] = self._renderer.render().copy()
        return out

    def rng_state(self) -> dict:
        """Where the env's randomness stands (the generator that draws each reset's object / goal
        configuration, and the episode count): a resumed run continues the sequence instead of replaying it."""
        return {"np_random": self._env.np_random.bit_generator.state, "episodes_started": self.episodes_started}

    def load_rng_state(self, state: dict) -> None:
        self._env.np_random.bit_generator.state = state["np_random"]
        self.episodes_started = int(state["episodes_started"])

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
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        _RENDERING.discard(self)

    def close(self) -> None:
        self.close_renderer()
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> "MetaworldTaskEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


EXPERTS = ("metaworld", "corrected")
"""Scripted experts: ``metaworld`` (Metaworld's policies as shipped) | ``corrected`` (the same, with the known
loops of a policy fixed where the bench needs it: :func:`_corrected_policy`)."""


def _corrected_policy(env_name: str):
    """Metaworld's scripted policy for ``env_name`` with its loops fixed, or None where it has none known.

    ``peg-insert-side-v3`` ("assemble the bolt"): the policy re-descends onto the peg whenever the hand is more
    than 2.5 cm above it, and that is about the height at which its own grasp holds the peg. A grasp a few mm
    low sends the hand down with the peg in it, then up again: a loop until the time limit (the policy alone
    fails 14 of 100 evaluation trials, 4 of the default 25). Once the gripper is closed (``obs[3] < 0.5``) the
    corrected policy allows 4 cm (98 of 100). Everything else is Metaworld's."""
    if env_name != "peg-insert-side-v3":
        return None
    from metaworld.policies.sawyer_peg_insertion_side_v3_policy import SawyerPegInsertionSideV3Policy

    class PegInsertSideCorrected(SawyerPegInsertionSideV3Policy):
        @staticmethod
        def _desired_pos(o_d):
            pos_curr, pos_peg = o_d["hand_pos"], o_d["peg_pos"]
            pos_hole = np.array([-0.35, o_d["goal_pos"][1], 0.16])
            holding = o_d["gripper_distance_apart"] < 0.5
            if np.linalg.norm(pos_curr[:2] - pos_peg[:2]) > 0.04:
                return pos_peg + np.array([0.0, 0.0, 0.3])
            if abs(pos_curr[2] - pos_peg[2]) > (0.04 if holding else 0.025):
                return pos_peg
            if np.linalg.norm(pos_peg[1:] - pos_hole[1:]) > 0.03:
                return pos_hole + np.array([0.4, 0.0, 0.0])
            return pos_hole

    return PegInsertSideCorrected()


class ScriptedExpert:
    """Metaworld's scripted policy for one task, plus optional Gaussian action noise.

    ``act(obs)`` returns ``clip(policy(obs) + N(0, noise^2), -1, 1)`` as float32 (4,), the noise
    drawn from ``rng`` (the call's, else the constructor's, else a fresh unseeded one). ``variant``: one of
    :data:`EXPERTS` (``corrected``: :func:`_corrected_policy` where it has one, else Metaworld's).
    """

    def __init__(self, task: str, noise: float = 0.1, rng: np.random.Generator | None = None,
                 variant: str = "metaworld") -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if variant not in EXPERTS:
            raise ValueError(f"expert variant must be one of {EXPERTS}, got {variant!r}")
        self.task, self.env_name = resolve_task(task)
        if self.env_name not in ENV_POLICY_MAP:
            raise KeyError(f"Metaworld has no scripted policy for {self.env_name!r}")
        self.policy = (variant == "corrected" and _corrected_policy(self.env_name)) or ENV_POLICY_MAP[self.env_name]()
        self.variant = variant
        self.noise = float(noise)
        self.rng = rng

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        with warnings.catch_warnings():
            # metaworld.policies.move() warns "Constant(s) may be too high" on most steps.
            warnings.simplefilter("ignore", UserWarning)
            action = np.asarray(self.policy.get_action(np.asarray(obs, dtype=np.float64)), dtype=np.float64)
        if self.noise > 0:
            rng = rng or self.rng
            if rng is None:
                rng = self.rng = np.random.default_rng()
            action = action + rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def rollout_expert(
    env: MetaworldTaskEnv,
    expert: ScriptedExpert,
    rng: np.random.Generator | None = None,
    episode_id: str | None = None,
) -> Episode:
    """Run one expert episode on ``env`` (reset included) and return it as a demo :class:`Episode`.

    ``obs["state"]`` holds the observation before each action, ``obs["proprio"]`` its first 4
    entries, ``obs[<camera>]`` (N, H, W, 3) uint8 the frame of each of ``env.cameras`` before each
    action; ``actions`` the executed (noisy, clipped) actions; ``dones`` is True at the last
    step if the episode terminated (succeeded). ``episode_id`` defaults to
    ``"<env_name>-<k>"`` with ``k`` the env's reset count (0-based), so ids of dropped failed
    attempts leave gaps.
    """
    obs = env.reset()
    if episode_id is None:
        episode_id = f"{env.env_name}-{env.episodes_started - 1}"
    states, actions, rewards = [], [], []
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in env.cameras}
    terminated = truncated = False
    while not (terminated or truncated):
        action = expert.act(obs, rng=rng)
        states.append(obs)
        for cam, img in env.images().items():
            frames[cam].append(img)
        actions.append(np.clip(action, -1.0, 1.0))
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
    state = np.stack(states).astype(np.float32)
    dones = np.zeros(len(rewards), dtype=bool)
    dones[-1] = terminated
    return Episode(
        obs={"state": state, "proprio": state[:, PROPRIO_SLICE].copy(), **{c: np.stack(f) for c, f in frames.items()}},
        actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        dones=dones,
        task=env.task,
        robot=ROBOT,
        kind="demo",
        episode_id=episode_id,
        extra_attrs={"env_name": env.env_name},
    )


def _task_seeds(seed: int, env_name: str) -> tuple[int, np.random.Generator]:
    """Env seed and noise generator for one task, keyed by (seed, env name) only, so a task's
    demos do not depend on which other tasks are generated alongside it."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(env_name.encode())])
    env_ss, noise_ss = ss.spawn(2)
    return int(env_ss.generate_state(1)[0]), np.random.default_rng(noise_ss)


def generate_demos(
    path: str | os.PathLike,
    tasks: Iterable[str] = tuple(BENCH_TASKS),
    episodes_per_task: int = 20,
    seed: int = 0,
    noise: float = 0.1,
    max_episode_steps: int = 200,
    successful_only: bool = True,
    force: bool = False,
    progress: bool = False,
    cameras: Sequence[str] = (),
    image_size: int = 128,
    render_effects: bool = False,
) -> Path:
    """Write noisy scripted-expert demos for ``tasks`` to a new HDF5 dataset at ``path``.

    ``cameras`` (with ``image_size``, ``render_effects``; see :class:`MetaworldTaskEnv`) adds
    ``obs/<camera>`` uint8 (N, H, W, 3) images; the states, actions and noise are the same as without.

    Per task, rolls out the expert until ``episodes_per_task`` episodes are kept (successful ones
    only if ``successful_only``; RuntimeError after ``5 * episodes_per_task`` attempts). Episodes
    are stored task by task, in attempt order. Deterministic given ``seed``. Refuses to replace
    an existing file unless ``force``. Returns the path written.
    """
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path}: exists (pass force=True / --force to overwrite)")
    resolved = [resolve_task(t) for t in tasks]
    if not resolved:
        raise ValueError("generate_demos: no tasks given")
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    from tqdm.auto import tqdm

    max_attempts = 5 * episodes_per_task
    episodes: list[Episode] = []
    task_map: dict[str, str] = {}
    with tqdm(total=len(resolved) * episodes_per_task, desc="demos", unit="ep", disable=not progress) as bar:
        for task, env_name in resolved:
            task_map[task] = env_name
            bar.set_postfix_str(env_name)
            env_seed, rng = _task_seeds(seed, env_name)
            expert = ScriptedExpert(env_name, noise=noise, rng=rng)
            kept = 0
            with MetaworldTaskEnv(task, seed=env_seed, max_episode_steps=max_episode_steps, cameras=cameras,
                                  image_size=image_size, render_effects=render_effects) as env:
                for _ in range(max_attempts):
                    ep = rollout_expert(env, expert, rng)
                    if successful_only and not ep.success:
                        continue
                    episodes.append(ep)
                    kept += 1
                    bar.update(1)
                    if kept == episodes_per_task:
                        break
            if kept < episodes_per_task:
                raise RuntimeError(
                    f"{env_name} ({task!r}): only {kept} of {max_attempts} expert episodes succeeded "
                    f"within {max_episode_steps} steps at noise {noise}; {episodes_per_task} needed. "
                    "Lower the noise or raise max_episode_steps."
                )
    env_args = {
        "bench": "metaworld",
        "tasks": task_map,
        "max_episode_steps": int(max_episode_steps),
        "noise": float(noise),
        "seed": int(seed),
        "successful_only": bool(successful_only),
    }
    if cameras:
        env_args["cameras"] = list(cameras)
        env_args["image_size"] = int(image_size)
    return write_dataset(path, episodes, fps=DEMO_FPS, env_args=env_args, force=force)


# ------------------------------------------------------------------------------------------------
# Robot B: a second robot that differs from A by a fixed frame error (multi-robot runs, paper RQ5)
# ------------------------------------------------------------------------------------------------

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


class ShiftedOperator:
    """The operator of robot B: watches the world (not B's miscalibrated state) and steers in the world;
    its take-over actions are turned into B's command frame, spoken commands pass unchanged."""

    def __init__(self, operator, env: ShiftedEnv):
        self.operator, self.env = operator, env

    def reset(self, task: str) -> None:
        self.operator.reset(task)

    def observe(self, obs, policy_action, info):
        from dual_actor.runtime.operators import OperatorInput

        world = self.env.world_observation if self.env.world_observation is not None else obs
        human = self.operator.observe(world, self.env.shift.action(policy_action), info)
        if not human.intervening:
            return human
        return OperatorInput(True, self.env.shift.command_for(human.action), human.command)

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
