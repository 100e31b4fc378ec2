"""Evaluation on the simulated bench: the protocol, ``eval.json``, its table and the learning curve.

- :mod:`~dual_actor.eval.protocol`: :func:`evaluate` (the policy alone on shared, seeded trials per task),
  :func:`evaluate_expert` (the scripted expert on the same trials), :func:`run_episode` (the evaluation step, also
  :mod:`dual_actor.chain`'s), :func:`trial_seeds` (the ``dev`` / ``test`` split), :func:`eval_seeds`, :func:`write_eval`; the result schema is
  in its docstring.
- :mod:`~dual_actor.eval.stats`: Wilson, bootstrap and paired intervals.
- :mod:`~dual_actor.eval.table`: :func:`format_table` and :func:`pct` (plain text for printing).
- :mod:`~dual_actor.eval.curve`: :class:`LearningCurve` (``learning_curve.json``, TensorBoard scalars, the plot;
  matplotlib is imported only when plotting).
- :mod:`~dual_actor.eval.cli` (``python -m dual_actor.eval``): the command line, which alone dispatches to
  :mod:`dual_actor.chain` for ``--chain K``; this package does not import it (``chain`` imports the protocol).
"""

from dual_actor.eval.curve import CURVE_FILE, CURVE_PLOT, LearningCurve
from dual_actor.eval.protocol import (
    DEFAULT_EVAL_SEED,
    EVAL_FILE,
    FRAME_EVERY,
    SPLITS,
    WARMUP_EVAL,
    CommandFn,
    TrialEnv,
    eval_seeds,
    evaluate,
    evaluate_expert,
    run_episode,
    trial_seeds,
    write_eval,
)
from dual_actor.eval.table import format_table, pct

__all__ = [
    "CURVE_FILE",
    "CURVE_PLOT",
    "DEFAULT_EVAL_SEED",
    "EVAL_FILE",
    "FRAME_EVERY",
    "SPLITS",
    "WARMUP_EVAL",
    "CommandFn",
    "TrialEnv",
    "LearningCurve",
    "eval_seeds",
    "evaluate",
    "evaluate_expert",
    "format_table",
    "pct",
    "run_episode",
    "trial_seeds",
    "write_eval",
]
