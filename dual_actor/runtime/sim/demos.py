"""Warm-up demos: noisy scripted-expert episodes written in the HDF5 talk-and-tweak layout.

:func:`rollout_expert` runs one :class:`~dual_actor.runtime.sim.experts.ScriptedExpert` episode on a
:class:`~dual_actor.runtime.sim.bench.MetaworldTaskEnv` and returns it as a demo
:class:`~data_tools.hdf5_format.Episode` (with camera images when the env renders some);
:func:`generate_demos` writes the successful ones for every task to a new HDF5 file
(:mod:`data_tools.hdf5_format`), reproducibly from one seed (:func:`task_seeds`).

Measured on this 2-core CPU (Metaworld 3.1.1, MuJoCo 3.3.0, noise on all 4 action dims):
``generate_demos(path)`` (20 successful demos x 3 tasks, noise 0.1, 200-step limit, seed 0):
10.7 s wall (13.5 s with the other core busy), env construction and HDF5 write included;
71 attempts (20 / 25 / 26 per task), 8291 env steps, 6091 of them kept; 1.8 MB file. Median length
of the successful episodes in the seed-0 demo file: 52 / 128 / 103.5 steps.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from data_tools.hdf5_format import Episode, write_dataset
from dual_actor.runtime.sim.bench import (
    BENCH_TASKS,
    DEMO_FPS,
    IMAGE_SIZE,
    MAX_EPISODE_STEPS,
    PROPRIO_SLICE,
    ROBOT,
    MetaworldTaskEnv,
    resolve_task,
)
from dual_actor.runtime.sim.experts import ScriptedExpert


def rollout_expert(
    env: MetaworldTaskEnv,
    expert: ScriptedExpert,
    rng: np.random.Generator | None = None,
    episode_id: str | None = None,
) -> Episode:
    """Run one expert episode on ``env`` (reset included) and return it as a demo :class:`Episode`.

    ``obs["state"]`` holds the observation before each action, ``obs["proprio"]`` its ``PROPRIO_SLICE``
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
        robot=getattr(env, "robot_name", ROBOT),
        kind="demo",
        episode_id=episode_id,
        extra_attrs={"env_name": env.env_name},
    )


def task_seeds(seed: int, env_name: str) -> tuple[int, np.random.Generator]:
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
    max_episode_steps: int = MAX_EPISODE_STEPS,
    successful_only: bool = True,
    force: bool = False,
    progress: bool = False,
    cameras: Sequence[str] = (),
    image_size: int = IMAGE_SIZE,
    render_effects: bool = False,
    world: str = "metaworld",
) -> Path:
    """Write noisy scripted-expert demos for ``tasks`` to a new HDF5 dataset at ``path``.

    ``cameras`` (with ``image_size``, ``render_effects``; see :class:`MetaworldTaskEnv`, :class:`GymHilTaskEnv`) adds
    ``obs/<camera>`` uint8 (N, H, W, 3) images; the states, actions and noise are the same as without.

    ``world``: ``metaworld`` (the bench: :class:`MetaworldTaskEnv`, :class:`ScriptedExpert`) or ``gym_hil``
    (:class:`~dual_actor.runtime.sim.gym_hil.GymHilTaskEnv`, its :class:`~dual_actor.runtime.sim.gym_hil.PickCubeExpert`).

    Per task, rolls out the expert until ``episodes_per_task`` episodes are kept (successful ones
    only if ``successful_only``; RuntimeError after ``5 * episodes_per_task`` attempts). Episodes
    are stored task by task, in attempt order. Deterministic given ``seed``. Refuses to replace
    an existing file unless ``force``. Returns the path written.
    """
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path}: exists (pass force=True / --force to overwrite)")
    if world == "gym_hil":
        from dual_actor.runtime.sim import gym_hil

        env_cls, expert_cls, resolve = gym_hil.GymHilTaskEnv, gym_hil.PickCubeExpert, gym_hil.resolve_task
    elif world == "metaworld":
        env_cls, expert_cls, resolve = MetaworldTaskEnv, ScriptedExpert, resolve_task
    else:
        raise ValueError(f"world must be metaworld or gym_hil, got {world!r}")
    resolved = [resolve(t) for t in tasks]
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
            env_seed, rng = task_seeds(seed, env_name)
            expert = expert_cls(task if world == "gym_hil" else env_name, noise=noise, rng=rng)
            kept = 0
            with env_cls(task, seed=env_seed, max_episode_steps=max_episode_steps, cameras=cameras,
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
        "bench": world,
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
