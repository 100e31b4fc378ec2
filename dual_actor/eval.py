"""Evaluation protocol on the simulated bench, ``eval.json``, and the learning curve.

:func:`evaluate` runs ``trials`` episodes per task on :class:`~dual_actor.runtime.sim.MetaworldTaskEnv`
with the policy alone (no interventions): at every step ``h = policy.embed(state, [task])`` and
``action = policy.act(h, state, state[:, :4], commands)``, where ``commands`` is ``[cmd]`` when
the optional ``command_fn(task, obs, step)`` (a simulated operator speaking refinement commands,
as the paper's evaluation allows) returns a command, else ``None`` (primary mode). A policy with
cameras (``policy.config["cameras"]``, ``image_size``) gets the observation mapping of
:func:`dual_actor.runtime.loop.observation_batch` (state, proprio, rendered frames) instead of the
state. An episode succeeds when it terminates (Metaworld ``success``) within ``max_episode_steps``.

Trials are reproducible and shared between policies: each task's env seed and the torch seed of
its action sampling are drawn from ``SeedSequence([seed, crc32(env_name)])`` (so a task's trials
do not depend on which other tasks are evaluated with it), and the caller's global torch RNG is
left untouched (``torch.random.fork_rng``). The default ``seed=10_000`` keeps evaluation
configurations apart from the warm-up demos' (``generate_demos(seed=0)``).

Result (also written as ``eval.json`` by :func:`write_eval`, printed by :func:`format_table`)::

    {"per_task": {"<task string>": {"success_rate": float, "mean_episode_length": float,
                                    "trials": int}},
     "average_success_rate": float, "online_steps": int, "intervention_rate": float}

``mean_episode_length`` averages over all trials: steps to success, or ``max_episode_steps`` for
a failed trial. ``average_success_rate`` is the unweighted mean over tasks.

:class:`LearningCurve` keeps the evaluations of one run against online interaction steps in
``learning_curve.json``, logs them as TensorBoard scalars (``eval/success_<task slug>``,
``eval/average_success``) and plots success per task against online steps with a second x-axis
in equivalent minutes at ``fps`` (10 Hz: the paper's Fig. 5 x-axis).

Long-horizon chains of the three sub-tasks (the paper's RQ4, ``--chain K``): :mod:`dual_actor.chain`, acting
through the same :func:`run_episode`.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from pathlib import Path

from data_tools.atomic import atomic_path, atomic_write_text
from data_tools.outputs import check_output
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from dual_actor.constants import NULL_COMMAND
from dual_actor.policy import DualActorPolicy
from dual_actor.runtime.loop import observation_batch
from dual_actor.runtime.sim import BENCH_TASKS, DEMO_FPS, OBS_DIM, PROPRIO_SLICE, MetaworldTaskEnv, resolve_task

EVAL_FILE = "eval.json"
CURVE_FILE = "learning_curve.json"
CURVE_PLOT = "learning_curve.png"
DEFAULT_EVAL_SEED = 10_000
FRAME_EVERY = 20  # rollout frames for TensorBoard: every this many steps of each task's first trial

CommandFn = Callable[[str, np.ndarray, int], "str | None"]
"""``command_fn(task, obs (39,), step) -> refinement command or None``; ``step`` counts from 0
within each episode."""


def eval_seeds(seed: int, task: str) -> tuple[int, int]:
    """``(env seed, torch seed)`` of one task's evaluation trials, keyed by (seed, env name) only."""
    try:
        _, env_name = resolve_task(task)
    except (KeyError, ValueError):  # not a bench task: key by the task string
        env_name = str(task)
    env_seed, torch_seed = np.random.SeedSequence([int(seed), zlib.crc32(env_name.encode())]).generate_state(2)
    return int(env_seed), int(torch_seed)


def evaluate(
    policy: DualActorPolicy,
    tasks: Sequence[str],
    trials: int = 25,
    max_episode_steps: int = 200,
    seed: int = DEFAULT_EVAL_SEED,
    command_fn: CommandFn | None = None,
    progress: bool = False,
    online_steps: int = 0,
    intervention_rate: float = 0.0,
    speaker: Any = None,
    make_env: Any = None,
    frames: dict | None = None,
) -> dict[str, Any]:
    """Success rate and mean episode length per task, ``trials`` episodes each, no interventions.

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
    resolved = [resolve_task(t)[0] for t in tasks] if make_env is None else list(tasks)
    if not resolved:
        raise ValueError("evaluate: no tasks given")
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"evaluate: duplicate tasks in {list(tasks)}")
    unknown = [t for t in resolved if t not in policy.tasks]
    if unknown:
        raise ValueError(f"evaluate: the policy was not trained on {unknown}; its tasks are {policy.tasks}")
    cfg = policy.config
    if make_env is None and cfg["obs_dim"] != OBS_DIM:
        raise ValueError(
            f"evaluate runs the Metaworld bench ({OBS_DIM}-d state, plus the policy's cameras); this policy "
            f"has obs_dim {cfg['obs_dim']}"
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
                per_task[task] = _evaluate_task(policy, task, trials, max_episode_steps, seed, command_fn, bar,
                                                speaker, make_env, frames)
    finally:
        policy.train(was_training)
    return {
        "per_task": per_task,
        "average_success_rate": float(np.mean([r["success_rate"] for r in per_task.values()])),
        "online_steps": int(online_steps),
        "intervention_rate": float(intervention_rate),
    }


def _evaluate_task(
    policy: DualActorPolicy,
    task: str,
    trials: int,
    max_episode_steps: int,
    seed: int,
    command_fn: CommandFn | None,
    bar,
    speaker: Any = None,
    make_env: Any = None,
    frames: dict | None = None,
) -> dict[str, Any]:
    device = next(policy.parameters()).device
    proprio = PROPRIO_SLICE if make_env is None else slice(0, int(policy.config["proprio_dim"]))
    make_env = make_env or MetaworldTaskEnv
    cameras = list(policy.config.get("cameras") or [])
    image_size = int(policy.config.get("image_size") or 128)
    env_seed, torch_seed = eval_seeds(seed, task)
    successes, lengths = 0, []
    rng_devices = [device] if device.type == "cuda" else []
    env = make_env(task=task, seed=env_seed, max_episode_steps=max_episode_steps, cameras=cameras,
                   image_size=image_size)
    with torch.random.fork_rng(devices=rng_devices), contextlib.closing(env):
        torch.manual_seed(torch_seed)
        for trial in range(trials):
            obs = env.reset()
            succeeded, _ = run_episode(policy, env, task, obs, proprio, command_fn=command_fn, speaker=speaker,
                                       frames=frames if trial == 0 else None)
            successes += int(succeeded)
            lengths.append(env.elapsed_steps)
            bar.update(1)
    return {
        "success_rate": successes / trials,
        "mean_episode_length": float(np.mean(lengths)),
        "trials": int(trials),
    }


def evaluate_expert(
    tasks: Sequence[str],
    trials: int = 25,
    max_episode_steps: int = 200,
    seed: int = DEFAULT_EVAL_SEED,
    noise: float = 0.0,
    variant: str = "metaworld",
) -> dict[str, Any]:
    """The simulated operator's own success on the bench: Metaworld's scripted expert
    (:class:`~dual_actor.runtime.sim.ScriptedExpert`, ``noise`` = its action noise; 0 is what the simulated
    operator executes when it takes over, up to its correction noise; ``variant``: ``metaworld`` | ``corrected``,
    as the operator's ``expert``) acting alone on the very trials
    :func:`evaluate` gives a policy (same env seeds per task). It is the bench's reference: a policy taught by
    this operator is not expected to beat it on a task where the expert itself fails. Same result dict."""
    from dual_actor.runtime.sim import ScriptedExpert

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    per_task: dict[str, dict[str, Any]] = {}
    for task in tasks:
        resolved = resolve_task(task)[0]
        env_seed, torch_seed = eval_seeds(seed, resolved)
        expert = ScriptedExpert(resolved, noise=noise, rng=np.random.default_rng(torch_seed), variant=variant)
        successes, lengths = 0, []
        with MetaworldTaskEnv(task=resolved, seed=env_seed, max_episode_steps=max_episode_steps) as env:
            for _ in range(trials):
                obs, terminated, truncated = env.reset(), False, False
                while not (terminated or truncated):
                    obs, _, terminated, truncated, _ = env.step(expert.act(obs))
                successes += int(terminated)
                lengths.append(env.elapsed_steps)
        per_task[resolved] = {"success_rate": successes / trials, "mean_episode_length": float(np.mean(lengths)),
                              "trials": int(trials)}
    return {"per_task": per_task, "average_success_rate": float(np.mean([r["success_rate"] for r in per_task.values()])),
            "online_steps": 0, "intervention_rate": 0.0}


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
    cameras = list(policy.config.get("cameras") or [])
    if speaker is not None:
        speaker.reset(task)
    terminated = truncated = False
    step = 0
    while not (terminated or truncated):
        state = torch.from_numpy(obs).to(device)[None]  # (1, 39)
        images = env.images() if cameras else {}
        if frames is not None and cameras and step % FRAME_EVERY == 0:
            frames.setdefault(task, []).append(images[cameras[0]].copy())
        observation = (observation_batch(obs, proprio, images, device, as_mapping=True)
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


# ------------------------------------------------------------------------------- output
def write_eval(result: Mapping[str, Any], run_dir: str | os.PathLike) -> Path:
    """Write ``result`` to ``run_dir/eval.json`` (atomically) and return the path."""
    path = Path(run_dir) / EVAL_FILE
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_table(result: Mapping[str, Any], fps: float = DEMO_FPS, warmup: Mapping[str, Any] | None = None) -> str:
    """``result`` (an :func:`evaluate` dict) as a plain-text table, for printing. ``warmup``: the learning curve's
    warm-up point (a :class:`LearningCurve` point) adds its success per task and the change beside it."""
    header = ("task", "success", "mean length", "trials")
    rows = [
        (task, _pct(r["success_rate"]), f"{r['mean_episode_length']:.1f}", str(r["trials"]))
        for task, r in result["per_task"].items()
    ]
    avg = ("average", _pct(result["average_success_rate"]), "", "")
    if warmup is not None:
        before = dict(warmup["per_task"])
        n = warmup.get("trials")
        header = (*header, "warm-up" + (f" ({n})" if n is not None else ""), "change")

        def extra(rate: float, was: float | None) -> tuple[str, str]:
            return ("", "") if was is None else (_pct(was), f"{100 * (rate - was):+.1f}")

        rows = [(*row, *extra(result["per_task"][task]["success_rate"], before.get(task)))
                for row, task in zip(rows, result["per_task"])]
        avg = (*avg, *extra(result["average_success_rate"], warmup["average_success_rate"]))
    widths = [max(len(r[i]) for r in [header, *rows, avg]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]).rstrip()

    steps = int(result["online_steps"])
    lines = [fmt(header), *(fmt(r) for r in rows), "-" * len(fmt(header)), fmt(avg), ""]
    lines.append(f"online steps: {steps} ({steps / fps / 60:.1f} min at {fps:g} Hz)")
    lines.append(f"intervention rate: {_pct(result['intervention_rate'])}")
    return "\n".join(lines)


# ------------------------------------------------------------------------ learning curve
class LearningCurve:
    """Evaluations of one run against online interaction steps.

    Args:
        run_dir: the run folder; the curve lives in ``run_dir/learning_curve.json``, which is
            read back if it exists (a resumed run extends its curve).
        fps: control rate for the equivalent-minutes axis (10 Hz, the paper's).

    ``learning_curve.json``: ``{"fps": float, "points": [{"online_steps": int, "minutes": float,
    "per_task": {task: success_rate}, "average_success_rate": float, "intervention_rate": float}]}``
    with points sorted by ``online_steps``; adding a point at an existing ``online_steps``
    replaces it (a resumed run re-evaluating the same checkpoint).
    """

    def __init__(self, run_dir: str | os.PathLike, fps: float = DEMO_FPS) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.run_dir = Path(run_dir)
        self.fps = float(fps)
        self.path = self.run_dir / CURVE_FILE
        self.points: list[dict[str, Any]] = []
        if self.path.exists():
            self.points = list(json.loads(self.path.read_text())["points"])

    def add(self, online_steps: int, result: Mapping[str, Any]) -> dict[str, Any]:
        """Record ``result`` (an :func:`evaluate` dict) at ``online_steps``; rewrite the JSON."""
        online_steps = int(online_steps)
        point = {
            "online_steps": online_steps,
            "minutes": online_steps / self.fps / 60.0,
            "per_task": {t: float(r["success_rate"]) for t, r in result["per_task"].items()},
            "average_success_rate": float(result["average_success_rate"]),
            "intervention_rate": float(result["intervention_rate"]),
            "trials": min(int(r["trials"]) for r in result["per_task"].values()),
        }
        if "wall_seconds" in result:  # seconds since the online phase began (multi-robot runs: the paper's RQ5 axis)
            point["wall_seconds"] = float(result["wall_seconds"])
        self.points = sorted(
            [p for p in self.points if p["online_steps"] != online_steps] + [point], key=lambda p: p["online_steps"]
        )
        atomic_write_text(self.path, json.dumps({"fps": self.fps, "points": self.points}, indent=2) + "\n")
        return point

    @staticmethod
    def log_tensorboard(experiment: Any, online_steps: int, result: Mapping[str, Any], step: int | None = None) -> None:
        """``experiment.add_scalar`` (a ``SummaryWriter``, e.g. ``trainer.logger.experiment``):
        ``eval/success_<task slug>`` per task, ``eval/average_success`` and ``eval/online_steps``, at ``step``
        (the learner update: one x-axis for the whole run; ``online_steps`` when None)."""
        from dual_actor.utils import slug

        x = int(online_steps if step is None else step)
        for task, r in result["per_task"].items():
            experiment.add_scalar(f"eval/success_{slug(task)}", float(r["success_rate"]), x)
        experiment.add_scalar("eval/average_success", float(result["average_success_rate"]), x)
        experiment.add_scalar("eval/online_steps", float(online_steps), x)

    def plot(self, path: str | os.PathLike | None = None, title: str | None = None) -> Path:
        """Success per task (and the average) against online steps, minutes at ``fps`` on top.

        Writes a PNG (default ``run_dir/learning_curve.png``, atomically) and returns its path.
        """
        if not self.points:
            raise ValueError(f"{self.path}: no evaluations to plot")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path is not None else self.run_dir / CURVE_PLOT
        path.parent.mkdir(parents=True, exist_ok=True)
        steps = [p["online_steps"] for p in self.points]
        tasks = list(dict.fromkeys(t for p in self.points for t in p["per_task"]))
        fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=120)
        try:
            for task in tasks:
                xs = [p["online_steps"] for p in self.points if task in p["per_task"]]
                ys = [100 * p["per_task"][task] for p in self.points if task in p["per_task"]]
                ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.6, label=task)
            ax.plot(steps, [100 * p["average_success_rate"] for p in self.points], color="black",
                    linestyle="--", linewidth=1.4, label="average")
            ax.set_xlabel("online interaction steps")
            ax.set_ylabel("success rate (%)")
            ax.set_ylim(-3, 103)
            lo, hi = min(steps), max(steps)
            pad = max(1.0, 0.03 * (hi - lo))
            ax.set_xlim(lo - pad, hi + pad)
            ax.grid(True, alpha=0.3)
            fps = self.fps
            top = ax.secondary_xaxis("top", functions=(lambda s: s / fps / 60.0, lambda m: m * 60.0 * fps))
            top.set_xlabel(f"equivalent minutes at {fps:g} Hz")
            ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
            if title:
                fig.suptitle(title, fontsize=10)
            fig.tight_layout()
            with atomic_path(path, suffix=".png") as tmp:  # the writer infers the format from the suffix
                fig.savefig(tmp)
        finally:
            plt.close(fig)
        return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dual_actor.eval POLICY_DIR [--trials 25] [--with-commands] [--chain K] [--out eval.json]``:
    evaluate a saved policy (``save_pretrained`` folder) on the simulated bench and print the table;
    with ``--chain K``, ``--trials`` chains of K bolts x 3 sub-tasks instead (docs/chain.md); with ``--expert``
    (no POLICY_DIR) the simulated operator's scripted expert on the same trials, the bench's reference."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m dual_actor.eval", description=main.__doc__.split(":", 1)[1].strip())
    p.add_argument("policy", type=Path, nargs="?", help="a policy folder (config.json + model.safetensors)")
    p.add_argument("--expert", nargs="?", const="corrected", default=None, choices=["corrected", "metaworld"],
                   help="evaluate the simulated operator's scripted expert instead of a policy (no POLICY_DIR): "
                        "corrected (the default operator.expert) or metaworld (as shipped)")
    p.add_argument("--expert-noise", type=float, default=0.0,
                   help="--expert: Gaussian action noise of the expert (the demos' is 0.1)")
    p.add_argument("--tasks", nargs="+", default=None, help="task strings (default: all the policy's tasks)")
    p.add_argument("--trials", type=int, default=25)
    p.add_argument("--max-episode-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED)
    p.add_argument("--with-commands", action="store_true",
                   help="a simulated operator speaks refinement commands (never takes over)")
    p.add_argument("--chain", type=int, default=None, metavar="K",
                   help="long-horizon chains (paper RQ4): K bolts x (place, pick up, assemble) in sequence, the hand "
                        "carried between sub-tasks; reports success for k = 1..K (dual_actor/chain.py)")
    p.add_argument("--out", type=Path, default=None,
                   help="write the result JSON here (atomically; refuses an existing file without --force)")
    p.add_argument("--force", action="store_true", help="--out: overwrite an existing file")
    args = p.parse_args(argv)
    if args.out is not None:  # before the evaluation: a finished run's result is not thrown away at the end
        try:
            check_output(args.out, force=args.force, exists_error=FileExistsError, error=ValueError)
        except (FileExistsError, ValueError) as e:
            print(f"error: --out {e}", file=sys.stderr)
            return 2
    if (args.expert is not None) == (args.policy is not None):
        print("error: give a POLICY_DIR or --expert (the bench's scripted expert), not both", file=sys.stderr)
        return 2
    if args.expert is not None and (args.chain is not None or args.with_commands):
        print("error: --expert evaluates the scripted expert alone; --chain and --with-commands do not apply",
              file=sys.stderr)
        return 2
    if args.chain is not None and args.chain < 1:
        print(f"error: --chain K needs K >= 1 bolts, got {args.chain}", file=sys.stderr)
        return 2
    if args.chain is not None and args.tasks:
        print("error: --chain runs the three bench sub-tasks in order; --tasks does not apply", file=sys.stderr)
        return 2
    try:
        if args.expert is not None:
            res = evaluate_expert(args.tasks or list(BENCH_TASKS), trials=args.trials,
                                  max_episode_steps=args.max_episode_steps, seed=args.seed, noise=args.expert_noise,
                                  variant=args.expert)
            table = format_table(res).rsplit("\n", 3)[0]  # no online steps / intervention lines
            if args.out is not None:
                atomic_write_text(args.out, json.dumps(res, indent=2))
            print(table)
            return 0
        policy = DualActorPolicy.from_pretrained(args.policy)
        tasks = args.tasks or list(policy.tasks)
        speaker = None
        if args.with_commands:
            from dual_actor.runtime.operators import SimulatedOperator

            first = next(iter(BENCH_TASKS)) if args.chain is not None else tasks[0]  # reset(task) switches
            speaker = SimulatedOperator(first, speak_commands=True, seed=args.seed)
        if args.chain is not None:
            from dual_actor.chain import evaluate_chain, format_chain_table

            res = evaluate_chain(policy, args.chain, trials=args.trials, max_episode_steps=args.max_episode_steps,
                                 seed=args.seed, speaker=speaker, progress=True)
            table = format_chain_table(res)
        else:
            res = evaluate(policy, tasks, trials=args.trials, max_episode_steps=args.max_episode_steps,
                           seed=args.seed, speaker=speaker, progress=True)
            table = format_table(res)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(res, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
