"""The paper's reference numbers, and the run layouts the notebooks set beside them: the arms of Table I
(run-folder prefix -> label, in the table's order), Table I's success rates, the RQ4 chain success, and the
warm-up-only ablations of ``notebooks/02_offline_ablations.ipynb``. Constants only."""

from __future__ import annotations


BENCH_TASKS = ("place the bolt", "pick up the bolt", "assemble the bolt")


RESULT_ARMS: dict[str, str] = {
    "dual": "Ours (dual actor)",
    "single": "Ours w/o dual actor",
    "dsrl": "DSRL (the paper's: offline critics)",
    "dsrl_na": "DSRL (published: DSRL-NA, online critics)",
    "hg_dagger": "HG-DAgger",
    "conrft_flat": "HIL-ConRFT flat",
}
"""Run-folder prefix (``<arm>-s<seed>``) -> label, in Table I's order."""


PAPER_TABLE_I: dict[str, tuple[float, float, float, float]] = {
    "hg_dagger": (28, 28, 20, 25.3),
    "conrft_flat": (0, 0, 0, 0),
    "dsrl": (28, 28, 16, 24.0),
    "single": (88, 96, 76, 86.7),
    "dual": (100, 100, 100, 100),
}
"""The paper's Table I, success in % (place / pick up / assemble / average), by arm."""


PAPER_CHAIN: tuple[float, ...] = (0.90, 0.60, 0.60, 0.50)
"""The paper's RQ4: success of chains of K = 1..4 bolts (ours, real robot)."""


OFFLINE_ABLATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "default": ("anchored head (default)", ()),
    "plain-consistency": ("plain head, consistency BC", ("algo.primary_head=plain", "algo.bc_form=consistency")),
    "plain-literal": ("plain head, literal BC", ("algo.primary_head=plain", "algo.bc_form=literal")),
    "plain-both": ("plain head, both BC terms", ("algo.primary_head=plain", "algo.bc_form=both")),
    "lambda-bc-only": ("lambdas [1.0, 0.0] (no Q term)", ("algo.lambdas.warmup=[1.0,0.0]",)),
    "no-task-weights": ("no Eq. 16 task weights", ("algo.task_weighting=false",)),
    "shared-critic": ("shared critic (no task weights)", ("algo.critic=shared", "algo.task_weighting=false")),
}
"""Warm-up-only ablations: run-folder prefix -> (label, overrides on top of the default config)."""
