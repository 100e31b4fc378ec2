"""Evaluation protocol on the simulated bench, and ``eval.json``.

:func:`evaluate` runs ``trials`` episodes per task on :class:`~dual_actor.runtime.sim.MetaworldTaskEnv`
with the policy alone (no interventions): at every step ``h = policy.embed(state, [task])`` and
``action = policy.act(h, state, state[:, :4], commands)``, where ``commands`` is ``[cmd]`` when
the optional ``command_fn(task, obs, step)`` (a simulated operator speaking refinement commands,
as the paper's evaluation allows) returns a command, else ``None`` (primary mode). A policy with
cameras (``policy.config.cameras``, ``image_size``) gets the observation mapping of
:func:`dual_actor.runtime.loop.observation_batch` (state, proprio, rendered frames) instead of the
state. An episode succeeds when it terminates (Metaworld ``success``) within ``max_episode_steps``.

Trials are reproducible, shared between policies, and split (:func:`trial_seeds`): trial ``i`` of split
``dev`` has the trial seed ``seed + 2 i``, of split ``test`` ``seed + 2 i + 1``, so the two splits never share
an initial state, whatever the number of trials. Learning-curve points and any choosing of defaults use
``dev``; the final evaluation, the README and docs/results.md use ``test``. Each trial's env seed and the
torch seed of its action sampling are drawn from ``SeedSequence([trial seed, crc32(env_name)])``
(:func:`eval_seeds`: a task's trials do not depend on which other tasks are evaluated with it, nor on how
many trials run), the env is put at that seed for the trial (``reseed`` where the env has it: the scene a
fresh env of that seed gives; else a fresh env), and the caller's global torch RNG is left untouched
(``torch.random.fork_rng``). The default ``seed=10_000`` keeps evaluation configurations apart from the
warm-up demos' (``generate_demos(seed=0)``) and the online phase's (``online.seed`` 1000 + ...).

Result (also written as ``eval.json`` by :func:`write_eval`, printed by
:func:`dual_actor.eval.table.format_table`)::

    {"per_task": {"<task string>": {"success_rate": float, "mean_episode_length": float,
                                    "trials": int, "successes": int, "wilson_95": [low, high]}},
     "average_success_rate": float, "online_steps": int, "intervention_rate": float,
     "split": "dev" | "test", "seeds": [trial seed, ...]}

``wilson_95``: the Wilson score interval (95%) of the task's success rate over its trials
(:func:`dual_actor.eval.stats.wilson_interval`).

``mean_episode_length`` averages over all trials: steps to success, or ``max_episode_steps`` for
a failed trial. ``average_success_rate`` is the unweighted mean over tasks.

:func:`evaluate_expert` gives the simulated operator's scripted expert the same trials (the bench's
reference). Long-horizon chains of the three sub-tasks (the paper's RQ4, ``--chain K``):
:mod:`dual_actor.chain`, acting through the same :func:`run_episode`.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from data_tools.atomic import atomic_write_text
from dual_actor.constants import NULL_COMMAND
from dual_actor.policy import DualActorPolicy
from dual_actor.runtime.loop import observation_batch
from dual_actor.runtime.sim import IMAGE_SIZE, MAX_EPISODE_STEPS, OBS_DIM, PROPRIO_SLICE, MetaworldTaskEnv, resolve_task

EVAL_FILE = "eval.json"
WARMUP_EVAL = "eval_warmup.json"  # the warm-up policy on the final evaluation's trials (a run's starting point)
DEFAULT_EVAL_SEED = 10_000
SPLITS = ("dev", "test")
FRAME_EVERY = 20  # rollout frames for TensorBoard: every this many steps of each task's first trial

CommandFn = Callable[[str, np.ndarray, int], "str | None"]
"""``command_fn(task, obs (39,), step) -> refinement command or None``; ``step`` counts from 0
within each episode."""


def trial_seeds(split: str, trials: int, seed: int = DEFAULT_EVAL_SEED) -> list[int]:
    """The trial seeds of ``split``'s first ``trials`` trials: ``dev`` ``seed + 2 i``, ``test`` ``seed + 2 i + 1``
    (disjoint for any number of trials)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if int(trials) != trials or trials < 0:
        raise ValueError(f"trials must be an integer >= 0, got {trials}")
    return [int(seed) + 2 * i + SPLITS.index(split) for i in range(int(trials))]


def eval_seeds(seed: int, task: str, stage: int = 0) -> tuple[int, int]:
    """``(env seed, torch seed)`` of one trial of one task, keyed by (trial seed, env name) only; ``stage`` > 0:
    the later sub-tasks of a long-horizon chain (:mod:`dual_actor.chain`: bolt ``stage``)."""
    try:
        _, env_name = resolve_task(task)
    except (KeyError, ValueError):  # not a bench task: key by the task string
        env_name = str(task)
    key = [int(seed), zlib.crc32(env_name.encode())] + ([int(stage)] if stage else [])
    env_seed, torch_seed = np.random.SeedSequence(key).generate_state(2)
    return int(env_seed), int(torch_seed)


class TrialEnv:
    """One task's env, put at each trial's env seed: reseeded where the env can be (``reseed(seed)``,
    :class:`~dual_actor.runtime.sim.MetaworldTaskEnv`: the scene a fresh env of that seed gives), else built
    afresh by ``build(seed)``. A context manager; closes the env it holds."""

    def __init__(self, build: Callable[[int], Any]) -> None:
        self.build, self.env = build, None

    def at(self, env_seed: int) -> Any:
        if self.env is not None and hasattr(self.env, "reseed"):
            self.env.reseed(int(env_seed))
        else:
            self.close()
            self.env = self.build(int(env_seed))
        return self.env

    def close(self) -> None:
        if self.env is not None:
            env, self.env = self.env, None
            env.close()

    def __enter__(self) -> "TrialEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def evaluate(
    policy: DualActorPolicy,
    tasks: Sequence[str],
    trials: int = 25,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    seed: int = DEFAULT_EVAL_SEED,
    command_fn: CommandFn | None = None,
    progress: bool = False,
    split: str = "test",
    online_steps: int = 0,
    intervention_rate: float = 0.0,
    speaker: Any = None,
    make_env: Any = None,
    frames: dict | None = None,
) -> dict[str, Any]:
    """Success rate and mean episode length per task, ``trials`` episodes each, no interventions.

    ``split``: ``dev`` | ``test``, the trials (module docstring: :func:`trial_seeds` from ``seed``).

    ``frames``: a dict to fill with a few rollout frames per task (the first trial, every
    ``FRAME_EVERY`` steps, the policy's first camera; uint8 (H, W, 3)) when the policy reads cameras.

    ``make_env``: a :class:`~dual_actor.runtime.env.EnvFactory` (any robot env following
    ``dual_actor/runtime/env.py``; its proprio is the first ``proprio_dim`` state entries); None: the
    Metaworld bench (``MetaworldTaskEnv``).

    ``tasks``: bench task strings or Metaworld env names (reported under the task string); each
    must be one of ``policy.tasks``. ``online_steps`` and ``intervention_rate`` are the caller's
    (the online phase's) figures, copied into the result. The policy is put in eval mode and
    restored afterwards. Returns the ``eval.json`` dict (module docstring).

    ``speaker``: an operator that only speaks (e.g. ``SimulatedOperator(speak_commands=True)``):
    each step it sees the observation and the policy's primary action and may return a
    refinement command, with which the step is acted in refinement mode (the paper's evaluation
    with spoken commands). It never takes over. Exclusive with ``command_fn``.
    """
    if speaker is not None and command_fn is not None:
        raise ValueError("evaluate: give command_fn or speaker, not both")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    seeds = trial_seeds(split, trials, seed)
    resolved = [resolve_task(t)[0] for t in tasks] if make_env is None else list(tasks)
    if not resolved:
        raise ValueError("evaluate: no tasks given")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"evaluate: duplicate tasks in {list(tasks)}")
    unknown = [t for t in resolved if t not in policy.tasks]
    if unknown:
        raise ValueError(f"evaluate: the policy was not trained on {unknown}; its tasks are {policy.tasks}")
    cfg = policy.config
    if make_env is None and (cfg.obs_dim != OBS_DIM if cfg.state_slice is None else cfg.state_slice[1] > OBS_DIM):
        raise ValueError(
            f"evaluate runs the Metaworld bench ({OBS_DIM}-d state, plus the policy's cameras); this policy "
            f"has obs_dim {cfg.obs_dim}"
        )
    from tqdm.auto import tqdm

    was_training = policy.training
    policy.eval()
    per_task: dict[str, dict[str, Any]] = {}
    try:
        with torch.no_grad(), tqdm(
            total=len(resolved) * trials, desc="eval", unit="ep", disable=not progress, leave=False
        ) as bar:
            for task in resolved:
                bar.set_postfix_str(task)
                per_task[task] = _evaluate_task(policy, task, seeds, max_episode_steps, command_fn, bar,
                                                speaker, make_env, frames)
    finally:
        policy.train(was_training)
    return eval_result(per_task, online_steps, intervention_rate, split, seeds)


def eval_result(per_task: dict[str, dict[str, Any]], online_steps: int, intervention_rate: float, split: str,
            seeds: Sequence[int]) -> dict[str, Any]:
    """The ``eval.json`` dict (module docstring) from its per-task entries and the caller's figures."""
    return {
        "per_task": per_task,
        "average_success_rate": float(np.mean([r["success_rate"] for r in per_task.values()])),
        "online_steps": int(online_steps),
        "intervention_rate": float(intervention_rate),
        "split": str(split),
        "seeds": [int(s) for s in seeds],
    }


def run_trials(task: str, seeds: Sequence[int], envs: TrialEnv,
                episode: Callable[[int, Any, np.ndarray, int], bool], bar: Any = None) -> dict[str, Any]:
    """One task's per-task entry: one episode per trial seed, on ``envs`` put at the trial's env seed, reset and
    then acted to its end by ``episode(trial, env, obs, torch seed) -> succeeded``; lengths are
    ``env.elapsed_steps`` at the end of each episode."""
    from dual_actor.eval.stats import wilson_interval

    successes, lengths = 0, []
    for trial, trial_seed in enumerate(seeds):
        env_seed, torch_seed = eval_seeds(trial_seed, task)
        env = envs.at(env_seed)
        successes += int(episode(trial, env, env.reset(), torch_seed))
        lengths.append(env.elapsed_steps)
        if bar is not None:
            bar.update(1)
    return {
        "success_rate": successes / len(seeds),
        "mean_episode_length": float(np.mean(lengths)),
        "trials": len(seeds),
        "successes": int(successes),
        "wilson_95": list(wilson_interval(successes, len(seeds))),
    }


def _evaluate_task(
    policy: DualActorPolicy,
    task: str,
    seeds: Sequence[int],
    max_episode_steps: int,
    command_fn: CommandFn | None,
    bar,
    speaker: Any = None,
    make_env: Any = None,
    frames: dict | None = None,
) -> dict[str, Any]:
    device = next(policy.parameters()).device
    proprio = PROPRIO_SLICE if make_env is None else slice(0, int(policy.config.proprio_dim))
    make_env = make_env or MetaworldTaskEnv
    cameras = list(policy.config.cameras)
    image_size = int(policy.config.image_size or IMAGE_SIZE)
    rng_devices = [device] if device.type == "cuda" else []

    def build(env_seed: int) -> Any:
        return make_env(task=task, seed=env_seed, max_episode_steps=max_episode_steps, cameras=cameras,
                        image_size=image_size)

    def episode(trial: int, env: Any, obs: np.ndarray, torch_seed: int) -> bool:
        torch.manual_seed(torch_seed)
        return run_episode(policy, env, task, obs, proprio, command_fn=command_fn, speaker=speaker,
                           frames=frames if trial == 0 else None)[0]

    with torch.random.fork_rng(devices=rng_devices), TrialEnv(build) as envs:
        return run_trials(task, seeds, envs, episode, bar)


def evaluate_expert(
    tasks: Sequence[str],
    trials: int = 25,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    seed: int = DEFAULT_EVAL_SEED,
    noise: float = 0.0,
    variant: str = "metaworld",
    split: str = "test",
) -> dict[str, Any]:
    """The simulated operator's own success on the bench: Metaworld's scripted expert
    (:class:`~dual_actor.runtime.sim.ScriptedExpert`, ``noise`` = its action noise; 0 is what the simulated
    operator executes when it takes over, up to its correction noise; ``variant``: ``metaworld`` | ``corrected``,
    as the operator's ``expert``) acting alone on the very trials
    :func:`evaluate` gives a policy (same env seeds per task). It is the bench's reference: a policy taught by
    this operator is not expected to beat it on a task where the expert itself fails. gym-hil's pick-cube task
    (env=gym_hil) gets its own scripted expert and world (:func:`~dual_actor.runtime.sim.experts.make_expert`,
    :func:`~dual_actor.runtime.sim.experts.task_env`). Same result dict."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    seeds = trial_seeds(split, trials, seed)
    per_task: dict[str, dict[str, Any]] = {}
    from dual_actor.runtime.sim.experts import make_expert, task_env

    for task in tasks:
        resolved = task if task_env(task) is not MetaworldTaskEnv else resolve_task(task)[0]
        world = task_env(resolved)

        def episode(_trial: int, env: Any, obs: np.ndarray, torch_seed: int) -> bool:
            expert = make_expert(resolved, noise=noise, rng=np.random.default_rng(torch_seed), variant=variant)
            return expert_episode(expert, env, obs)[0]

        with TrialEnv(lambda env_seed: world(task=resolved, seed=env_seed,
                                             max_episode_steps=max_episode_steps)) as envs:
            per_task[resolved] = run_trials(resolved, seeds, envs, episode)
    return eval_result(per_task, online_steps=0, intervention_rate=0.0, split=split, seeds=seeds)


def expert_episode(expert: Any, env: Any, obs: np.ndarray) -> tuple[bool, np.ndarray]:
    """Act ``expert`` on ``env`` from ``obs`` (just reset) until the episode ends: ``(terminated, last
    observation)``, as :func:`run_episode`."""
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, _ = env.step(expert.act(obs))
    return bool(terminated), obs


def run_episode(
    policy: DualActorPolicy,
    env: Any,
    task: str,
    obs: np.ndarray,
    proprio: slice = PROPRIO_SLICE,
    command_fn: CommandFn | None = None,
    speaker: Any = None,
    frames: dict | None = None,
) -> tuple[bool, np.ndarray]:
    """Act ``policy`` alone on ``env``, whose episode was just reset to ``obs``, until it ends.

    The evaluation step of :func:`evaluate` (module docstring): ``task`` is the instruction,
    ``proprio`` the proprio entries of the state, ``command_fn`` / ``speaker`` as :func:`evaluate`
    (the speaker is ``reset(task)`` first). ``frames``: filled with the policy's first camera every
    ``FRAME_EVERY`` steps when the policy reads cameras. Call under ``torch.no_grad()`` with the
    policy in eval mode; actions draw from the global torch RNG. Returns ``(terminated, last
    observation)``: ``terminated`` is Metaworld's success within the env's step limit.
    """
    device = next(policy.parameters()).device
    cameras = list(policy.config.cameras)
    if speaker is not None:
        speaker.reset(task)
    terminated = truncated = False
    step = 0
    while not (terminated or truncated):
        state = torch.from_numpy(policy.state_of(obs)).to(device)[None]  # (1, obs_dim): the bench's 39, or proprio
        images = env.images() if cameras else {}
        if frames is not None and cameras and step % FRAME_EVERY == 0:
            frames.setdefault(task, []).append(images[cameras[0]].copy())
        observation = (observation_batch(policy.state_of(obs), proprio, images, device, as_mapping=True)
                       if policy.wants_mapping else state)
        h = policy.embed(observation, [task])
        cmd = command_fn(task, obs, step) if command_fn is not None else None
        action = policy.act(h, observation, state[:, proprio], commands=[cmd] if cmd else None)
        if speaker is not None:
            said = speaker.observe(obs, action[0].detach().cpu().numpy(), {}).command
            if said and said != NULL_COMMAND:
                action = policy.act(h, observation, state[:, proprio], commands=[said])
        obs, _, terminated, truncated, _ = env.step(action[0].detach().cpu().numpy())
        step += 1
    return bool(terminated), obs


def write_eval(result: Mapping[str, Any], run_dir: str | os.PathLike, name: str = EVAL_FILE) -> Path:
    """Write ``result`` to ``run_dir/<name>`` (``eval.json``; atomically) and return the path."""
    path = Path(run_dir) / name
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path
