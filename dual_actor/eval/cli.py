"""``python -m dual_actor.eval``: evaluate a saved policy (or the bench's scripted expert) and print the table.

A thin command line over :func:`~dual_actor.eval.protocol.evaluate`,
:func:`~dual_actor.eval.protocol.evaluate_expert` and, with ``--chain K``,
:func:`dual_actor.chain.evaluate_chain` (the only module of the package that imports :mod:`dual_actor.chain`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from safetensors import SafetensorError

from data_tools.atomic import atomic_write_text
from data_tools.outputs import check_output
from dual_actor.chain import evaluate_chain, format_chain_table
from dual_actor.eval.protocol import DEFAULT_EVAL_SEED, SPLITS, evaluate, evaluate_expert
from dual_actor.eval.table import format_table
from dual_actor.policy import DualActorPolicy
from dual_actor.runtime.sim import BENCH_TASKS


POLICY_FOLDER = ("config.json", "model.safetensors")  # what save_pretrained writes and from_pretrained reads


def _not_a_policy_folder(path: Path) -> str | None:
    """Why the local ``path`` cannot be a policy folder, or None (an existing policy folder, or a name that is not a
    local path and may be a Hub repo id ``<owner>/<name>``, which :meth:`DualActorPolicy.from_pretrained` resolves)."""
    if not path.exists():
        if path.is_absolute() or path.parent.is_dir() and path.parent != Path("."):  # meant as a local path
            return f"{path}: no such policy folder"
        return None
    if not path.is_dir():
        return f"{path}: not a folder (a policy folder holds {' and '.join(POLICY_FOLDER)})"
    missing = [name for name in POLICY_FOLDER if not (path / name).is_file()]
    if missing:
        inner = path / "policy"
        hint = f"; a run folder's policy is {inner}" if all((inner / n).is_file() for n in POLICY_FOLDER) else ""
        return f"{path}: not a policy folder (no {' or '.join(missing)}; expected a save_pretrained folder){hint}"
    return None


def load_policy(path: Path) -> DualActorPolicy:
    """:meth:`DualActorPolicy.from_pretrained`, every way it can fail as one ``ValueError`` line naming ``path``."""
    reason = _not_a_policy_folder(path)
    if reason is None:
        try:
            return DualActorPolicy.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
            text = " ".join(str(e).split())
            reason = text if str(path) in text else f"{path}: not a loadable policy folder: {text}"
    raise ValueError(reason)


def _world(tasks: Sequence[str]):
    """The env factory of gym-hil's world when ``tasks`` are its, else None (the bench, ``evaluate``'s default)."""
    from dual_actor.runtime.sim.experts import task_env
    from dual_actor.runtime.sim.gym_hil import GymHilTaskEnv

    worlds = {task_env(t) for t in tasks}
    if GymHilTaskEnv in worlds:
        if len(worlds) > 1:
            raise ValueError(f"tasks {list(tasks)} mix gym-hil's and the bench's worlds: evaluate them apart")
        return GymHilTaskEnv
    return None


def _default_steps(tasks: Sequence[str]) -> int:
    from dual_actor.runtime.sim.gym_hil import MAX_EPISODE_STEPS as GYM_HIL_STEPS

    return GYM_HIL_STEPS if _world(tasks) is not None else 200


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dual_actor.eval POLICY_DIR [--trials 25] [--with-commands] [--chain K] [--out eval.json]``:
    evaluate a saved policy (``save_pretrained`` folder) on the simulated bench and print the table;
    with ``--chain K``, ``--trials`` chains of K bolts x 3 sub-tasks instead (docs/chain.md); with ``--expert``
    (no POLICY_DIR) the simulated operator's scripted expert on the same trials (or chains), the bench's
    reference."""
    p = argparse.ArgumentParser(prog="python -m dual_actor.eval", description=main.__doc__.split(":", 1)[1].strip())
    p.add_argument("policy", type=Path, nargs="?", help="a policy folder (config.json + model.safetensors)")
    p.add_argument("--expert", nargs="?", const="corrected", default=None, choices=["corrected", "metaworld"],
                   help="evaluate the simulated operator's scripted expert instead of a policy (no POLICY_DIR): "
                        "corrected (the default operator.expert) or metaworld (as shipped)")
    p.add_argument("--expert-noise", type=float, default=0.0,
                   help="--expert: Gaussian action noise of the expert (the demos' is 0.1)")
    p.add_argument("--tasks", nargs="+", default=None, help="task strings (default: all the policy's tasks)")
    p.add_argument("--trials", type=int, default=25)
    p.add_argument("--max-episode-steps", type=int, default=None,
                   help="a trial's step limit (default: the world's: 200 on the bench, 100 on gym-hil)")
    p.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED)
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="the trials: test (what is reported) or dev (to choose settings on); disjoint seeds")
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
    if args.expert is not None and args.with_commands:
        print("error: --expert evaluates the scripted expert alone; --with-commands does not apply", file=sys.stderr)
        return 2
    if args.chain is not None and args.chain < 1:
        print(f"error: --chain K needs K >= 1 bolts, got {args.chain}", file=sys.stderr)
        return 2
    if args.chain is not None and args.tasks:
        print("error: --chain runs the three bench sub-tasks in order; --tasks does not apply", file=sys.stderr)
        return 2
    given_steps = args.max_episode_steps  # None: the world's limit, once the tasks (hence the world) are known
    args.max_episode_steps = given_steps or _default_steps(args.tasks or [])
    try:
        if args.expert is not None and args.chain is not None:  # the expert's own chains: RQ4's ceiling
            res = evaluate_chain(None, args.chain, trials=args.trials, max_episode_steps=args.max_episode_steps,
                                 seed=args.seed, progress=True, split=args.split, expert=args.expert,
                                 expert_noise=args.expert_noise)
            if args.out is not None:
                atomic_write_text(args.out, json.dumps(res, indent=2))
            print(format_chain_table(res))
            return 0
        if args.expert is not None:
            res = evaluate_expert(args.tasks or list(BENCH_TASKS), trials=args.trials,
                                  max_episode_steps=args.max_episode_steps, seed=args.seed, noise=args.expert_noise,
                                  split=args.split, variant=args.expert)
            table = format_table(res).rsplit("\n", 3)[0]  # no online steps / intervention lines
            if args.out is not None:
                atomic_write_text(args.out, json.dumps(res, indent=2))
            print(table)
            return 0
        policy = load_policy(args.policy)
        tasks = args.tasks or list(policy.tasks)
        make_env = _world(tasks)
        args.max_episode_steps = given_steps or _default_steps(tasks)
        speaker = None
        if args.with_commands:
            from dual_actor.runtime.operators import SimulatedOperator

            first = next(iter(BENCH_TASKS)) if args.chain is not None else tasks[0]  # reset(task) switches
            speaker = SimulatedOperator(first, speak_commands=True, seed=args.seed)
        if args.chain is not None:
            res = evaluate_chain(policy, args.chain, trials=args.trials, max_episode_steps=args.max_episode_steps,
                                 seed=args.seed, speaker=speaker, progress=True, split=args.split)
            table = format_chain_table(res)
        else:
            res = evaluate(policy, tasks, trials=args.trials, max_episode_steps=args.max_episode_steps,
                           seed=args.seed, speaker=speaker, progress=True, split=args.split, make_env=make_env)
            table = format_table(res)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(res, indent=2))
    print(table)
    return 0
