"""Long-horizon chains on the simulated bench (the paper's RQ4): K bolts x 3 sub-tasks in sequence.

:func:`evaluate_chain` runs ``trials`` chains. A chain of ``bolts`` = K bolts runs, per bolt, the
bench's three sub-tasks in :data:`~dual_actor.runtime.sim.BENCH_TASKS` order ("place the bolt" ->
"pick up the bolt" -> "assemble the bolt"), each an episode of the policy alone acted exactly as
:func:`dual_actor.eval.evaluate` acts (:func:`dual_actor.eval.run_episode`: the instruction is the
sub-task's string, optional spoken commands from ``speaker``, reset at each sub-task start). The
chain stops at its first failed sub-task (no later sub-task is run); bolts after it count as
failed. With ``carry_hand`` the arm starts each sub-task where the previous one left it
(``MetaworldTaskEnv.reset(hand_pos=last obs[:3])``, within ``HAND_TOLERANCE``; the gripper opens, as
at every Metaworld reset); the first sub-task of a chain starts from the default hand position. The
three sub-tasks are separate Metaworld scenes: objects and goal are drawn afresh for every sub-task,
only the hand carries over (docs/chain.md says what that does and does not capture).

Seeding (so that ``bolts=1, carry_hand=False`` reproduces :func:`dual_actor.eval.evaluate` trial for
trial): chain j has ``evaluate``'s trial seed j of the same split (:func:`dual_actor.eval.trial_seeds`); its
sub-task t at bolt b is put at ``eval_seeds(trial seed, t, stage=b)`` (env seed, and the torch seed set
before the episode, inside ``torch.random.fork_rng``: the caller's RNG is untouched). Bolt 0 is
``evaluate``'s trial j of task t exactly: the same configuration and the same action noise, whatever earlier
chains did. The hand carry changes where the hand starts, not the configuration drawn. A ``speaker`` is one
operator for the whole run (its own RNG advances in chain order).

Result (written by ``python -m dual_actor.eval POLICY --chain K --out chain.json``, printed by
:func:`format_chain_table`)::

    {"bolts": K, "trials": N, "subtasks": [3 task strings], "max_episode_steps": int, "seed": int,
     "split": "dev" | "test", "seeds": [trial seed, ...], "carry_hand": bool, "with_commands": bool,
     "expert": null | "corrected" | "metaworld",                 # who acted: a policy (null) or the scripted expert
     "success_at_k": [{"k": k, "successes": int, "success_rate": float}, ...],   # k = 1..K
     "per_subtask": {task: {"reached": int, "succeeded": int, "success_rate": float | null}},
     "per_stage": [{"bolt": b, "task": str, "reached": int, "succeeded": int,
                    "success_rate": float | null}, ...],                        # K * 3, in chain order
     "mean_subtasks_completed": float,
     "hand_carry": {"starts": int, "mean_error": float, "max_error": float, "beyond_tolerance": int,
                    "tolerance": float} | null,
     "chains": [{"outcomes": [bool, ...], "lengths": [int, ...]}, ...]}           # N, the sub-tasks run

``success_at_k[k-1]``: the fraction of chains whose first k bolts all succeeded (non-increasing in
k). ``per_subtask`` / ``per_stage``: success conditional on reaching that sub-task (pooled over
bolts / per bolt; null when never reached). ``hand_carry``: over the sub-task starts that carried the
hand, the distance (m) between where the previous sub-task left it and where the next one's hand
started: within ``tolerance`` (``HAND_TOLERANCE``) unless the next scene holds it back (null without
carries). ``chains[j]``: outcome and length (steps) of every sub-task chain j ran, in order; all
but possibly the last succeeded.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dual_actor.eval.protocol import DEFAULT_EVAL_SEED, TrialEnv, eval_seeds, run_episode, trial_seeds
from dual_actor.eval.table import pct
from dual_actor.policy import DualActorPolicy
from dual_actor.runtime.sim import BENCH_TASKS, HAND_TOLERANCE, IMAGE_SIZE, MAX_EPISODE_STEPS, OBS_DIM, PROPRIO_SLICE, MetaworldTaskEnv

SUBTASKS: tuple[str, ...] = tuple(BENCH_TASKS)
"""One bolt's sub-tasks, in chain order."""


def evaluate_chain(
    policy: DualActorPolicy | None,
    bolts: int,
    trials: int = 25,
    max_episode_steps: int = MAX_EPISODE_STEPS,
    seed: int = DEFAULT_EVAL_SEED,
    speaker: Any = None,
    carry_hand: bool = True,
    progress: bool = False,
    make_env: Any = None,
    split: str = "test",
    expert: str | None = None,
    expert_noise: float = 0.0,
) -> dict[str, Any]:
    """Run ``trials`` chains of ``bolts`` bolts x 3 sub-tasks; return the chain result (module docstring).

    ``expert`` (``corrected`` | ``metaworld``, with ``policy`` None): the simulated operator's scripted expert
    acts each sub-task instead of a policy (:class:`~dual_actor.runtime.sim.ScriptedExpert`, action noise
    ``expert_noise`` drawn from the sub-task's torch seed), on the same chains: the ceiling a policy taught by
    that operator is measured against.

    ``max_episode_steps`` is each sub-task's limit. ``speaker``: as :func:`dual_actor.eval.evaluate`
    (e.g. ``SimulatedOperator(task, speak_commands=True, seed=...)``). ``make_env``: builds a sub-task's
    env like :class:`~dual_actor.runtime.sim.MetaworldTaskEnv` (the default), with ``reset(hand_pos=None)``.
    The policy is put in eval mode and restored afterwards.

    Raises:
        ValueError: ``bolts``, ``trials`` or ``max_episode_steps`` < 1; a policy without one of the
            three bench tasks, or not on the bench's 39-d state.
    """
    for name, value in (("bolts", bolts), ("trials", trials), ("max_episode_steps", max_episode_steps)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value}")
    bolts, trials = int(bolts), int(trials)
    seeds = trial_seeds(split, trials, seed)
    if (policy is None) == (expert is None):
        raise ValueError("evaluate_chain acts a policy or the scripted expert (expert=...): give exactly one")
    if expert is not None:
        return _chains(None, bolts, seeds, max_episode_steps, seed, speaker, carry_hand, progress, make_env, split,
                       expert=expert, expert_noise=expert_noise)
    missing = [t for t in SUBTASKS if t not in policy.tasks]
    if missing:
        raise ValueError(f"a chain runs all three bench tasks {list(SUBTASKS)}; the policy was not trained on "
                         f"{missing} (its tasks: {policy.tasks})")
    if (policy.config.state_slice or [0, policy.config.obs_dim])[1] > OBS_DIM or (
            policy.config.state_slice is None and policy.config.obs_dim != OBS_DIM):
        raise ValueError(f"chains run the Metaworld bench ({OBS_DIM}-d state); this policy has obs_dim "
                         f"{policy.config.obs_dim}")
    return _chains(policy, bolts, seeds, max_episode_steps, seed, speaker, carry_hand, progress, make_env, split)


def _chains(policy: DualActorPolicy | None, bolts: int, seeds: Sequence[int], max_episode_steps: int, seed: int,
            speaker: Any, carry_hand: bool, progress: bool, make_env: Any, split: str, expert: str | None = None,
            expert_noise: float = 0.0) -> dict[str, Any]:
    """:func:`evaluate_chain` after its checks: the chains of ``policy``, or of the scripted ``expert``."""
    from tqdm.auto import tqdm

    from dual_actor.eval.protocol import expert_episode
    from dual_actor.runtime.sim import ScriptedExpert

    make_env = make_env or MetaworldTaskEnv
    trials = len(seeds)
    device = next(policy.parameters()).device if policy is not None else torch.device("cpu")
    cameras = list(policy.config.cameras) if policy is not None else []
    image_size = int(policy.config.image_size or IMAGE_SIZE) if policy is not None else IMAGE_SIZE
    chains: list[dict[str, list]] = []
    hand_errors: list[float] = []
    was_training = policy.training if policy is not None else False
    if policy is not None:
        policy.eval()
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
            envs = {}
            for task in SUBTASKS:
                envs[task] = stack.enter_context(TrialEnv(lambda env_seed, task=task: make_env(
                    task=task, seed=env_seed, max_episode_steps=max_episode_steps, cameras=cameras,
                    image_size=image_size)))
            bar = stack.enter_context(tqdm(total=trials, desc=f"chains of {bolts}", unit="chain",
                                           disable=not progress, leave=False))
            for chain_seed in seeds:
                outcomes: list[bool] = []
                lengths: list[int] = []
                hand = None  # each chain starts from the default hand position
                for bolt in range(bolts):
                    for task in SUBTASKS:
                        if outcomes and not outcomes[-1]:  # the chain has failed
                            break
                        env_seed, torch_seed = eval_seeds(chain_seed, task, stage=bolt)
                        env = envs[task].at(env_seed)
                        if carry_hand and hand is not None:
                            obs = env.reset(hand_pos=hand)
                            hand_errors.append(float(np.linalg.norm(np.asarray(obs[:3], np.float64) - hand)))
                        else:
                            obs = env.reset()
                        if expert is not None:
                            actor = ScriptedExpert(task, noise=expert_noise, variant=expert,
                                                   rng=np.random.default_rng(torch_seed))
                            succeeded, last = expert_episode(actor, env, obs)
                        else:
                            torch.manual_seed(torch_seed)
                            succeeded, last = run_episode(policy, env, task, obs, PROPRIO_SLICE, speaker=speaker)
                        outcomes.append(bool(succeeded))
                        lengths.append(int(env.elapsed_steps))
                        hand = np.asarray(last[:3], dtype=np.float64)
                chains.append({"outcomes": outcomes, "lengths": lengths})
                bar.update(1)
    finally:
        if policy is not None:
            policy.train(was_training)
    res = chain_summary(chains, bolts, max_episode_steps=max_episode_steps, seed=seed, carry_hand=carry_hand,
                        with_commands=speaker is not None, hand_errors=hand_errors, split=split, seeds=seeds)
    res["expert"] = expert
    return res


def chain_summary(
    chains: Sequence[Mapping[str, Sequence]],
    bolts: int,
    max_episode_steps: int,
    seed: int,
    carry_hand: bool,
    with_commands: bool,
    hand_errors: Sequence[float] = (),
    split: str = "test",
    seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """The result dict (module docstring) from each chain's ``{"outcomes", "lengths"}`` (the sub-tasks it ran)."""
    n = len(chains)
    stages = [(b, t) for b in range(bolts) for t in SUBTASKS]
    reached = np.zeros(len(stages), dtype=int)
    succeeded = np.zeros(len(stages), dtype=int)
    for c in chains:
        o = list(c["outcomes"])
        if len(o) > len(stages) or not all(o[:-1]):
            raise ValueError(f"a chain runs at most {len(stages)} sub-tasks and stops at its first failure: {o}")
        reached[: len(o)] += 1
        succeeded[: len(o)] += np.asarray(o, dtype=int)

    def rate(s: int, r: int) -> float | None:
        return s / r if r else None

    per_bolt = len(SUBTASKS)
    k_ok = [int(sum(1 for c in chains if sum(c["outcomes"]) >= per_bolt * k)) for k in range(1, bolts + 1)]
    per_subtask = {}
    for t in SUBTASKS:
        r = int(sum(reached[i] for i, (_, s) in enumerate(stages) if s == t))
        s = int(sum(succeeded[i] for i, (_, st) in enumerate(stages) if st == t))
        per_subtask[t] = {"reached": r, "succeeded": s, "success_rate": rate(s, r)}
    return {
        "bolts": int(bolts),
        "trials": n,
        "subtasks": list(SUBTASKS),
        "max_episode_steps": int(max_episode_steps),
        "seed": int(seed),
        "split": str(split),
        "seeds": [int(x) for x in seeds],
        "carry_hand": bool(carry_hand),
        "with_commands": bool(with_commands),
        "success_at_k": [{"k": k, "successes": s, "success_rate": s / n} for k, s in enumerate(k_ok, start=1)],
        "per_subtask": per_subtask,
        "per_stage": [{"bolt": b + 1, "task": t, "reached": int(reached[i]), "succeeded": int(succeeded[i]),
                       "success_rate": rate(int(succeeded[i]), int(reached[i]))} for i, (b, t) in enumerate(stages)],
        "mean_subtasks_completed": float(np.mean([sum(c["outcomes"]) for c in chains])),
        "hand_carry": None if not hand_errors else {
            "starts": len(hand_errors), "mean_error": float(np.mean(hand_errors)), "max_error": float(max(hand_errors)),
            "beyond_tolerance": int(sum(e > HAND_TOLERANCE for e in hand_errors)), "tolerance": HAND_TOLERANCE},
        "chains": [{"outcomes": [bool(x) for x in c["outcomes"]], "lengths": [int(x) for x in c["lengths"]]}
                   for c in chains],
    }


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]).rstrip()
            for r in [header, *rows]]


def format_chain_table(result: Mapping[str, Any]) -> str:
    """``result`` (an :func:`evaluate_chain` dict) as plain text: success for k = 1..K bolts, then per sub-task."""
    n = result["trials"]
    lines = [
        f"chains: {result['bolts']} bolt(s) x {len(result['subtasks'])} sub-tasks, {n} trials, "
        f"{'with' if result['with_commands'] else 'without'} spoken commands, "
        f"hand {'carried' if result['carry_hand'] else 'reset'} between sub-tasks",
        "",
        *_columns(("bolts k", "success (first k bolts)", "chains"),
                  [(str(r["k"]), pct(r["success_rate"]), f"{r['successes']}/{n}") for r in result["success_at_k"]]),
        "",
        *_columns(("sub-task", "success | reached", "reached"),
                  [(t, "-" if r["success_rate"] is None else pct(r["success_rate"]), str(r["reached"]))
                   for t, r in result["per_subtask"].items()]),
        "",
        f"mean sub-tasks completed: {result['mean_subtasks_completed']:.2f} of "
        f"{len(result['subtasks']) * result['bolts']}",
    ]
    carry = result.get("hand_carry")
    if carry:
        lines.append(f"carried hand starts: {carry['starts']}, off the previous end by "
                     f"{1000 * carry['mean_error']:.1f} mm on average, {1000 * carry['max_error']:.1f} mm at most; "
                     f"{carry['beyond_tolerance']} beyond {1000 * carry['tolerance']:g} mm"
                     + (" (held back by the next scene)" if carry["beyond_tolerance"] else ""))
    return "\n".join(lines)
