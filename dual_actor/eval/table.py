"""The evaluation result as a plain-text table: :func:`format_table`, and :func:`pct`, the percent cells it (and
:func:`dual_actor.chain.format_chain_table`) prints."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from dual_actor.runtime.sim import DEMO_FPS


def pct(x: float) -> str:
    """A rate in [0, 1] as a percent with one decimal: ``0.875 -> "87.5%"``."""
    return f"{100 * x:.1f}%"


def format_table(result: Mapping[str, Any], fps: float = DEMO_FPS, warmup: Mapping[str, Any] | None = None) -> str:
    """``result`` (an :func:`~dual_actor.eval.protocol.evaluate` dict) as a plain-text table, for printing.
    ``warmup``: the warm-up policy's result on the same trials (``eval_warmup.json``, an ``evaluate`` dict; or a
    :class:`~dual_actor.eval.curve.LearningCurve` point) adds its success per task and the change beside it."""
    header = ("task", "success", "mean length", "trials")
    rows = [
        (task, pct(r["success_rate"]), f"{r['mean_episode_length']:.1f}", str(r["trials"]))
        for task, r in result["per_task"].items()
    ]
    avg = ("average", pct(result["average_success_rate"]), "", str(result.get("split", "")))  # trials: which split
    if warmup is not None:
        before = {t: (r["success_rate"] if isinstance(r, Mapping) else r) for t, r in warmup["per_task"].items()}
        n = warmup.get("trials") if "trials" in warmup else min(
            (int(r["trials"]) for r in warmup["per_task"].values()), default=None)
        header = (*header, "warm-up" + (f" ({n})" if n is not None else ""), "change")

        def extra(rate: float, was: float | None) -> tuple[str, str]:
            return ("", "") if was is None else (pct(was), f"{100 * (rate - was):+.1f}")

        rows = [(*row, *extra(result["per_task"][task]["success_rate"], before.get(task)))
                for row, task in zip(rows, result["per_task"])]
        avg = (*avg, *extra(result["average_success_rate"], warmup["average_success_rate"]))
    widths = [max(len(r[i]) for r in [header, *rows, avg]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]).rstrip()

    steps = int(result["online_steps"])
    lines = [fmt(header), *(fmt(r) for r in rows), "-" * len(fmt(header)), fmt(avg), ""]
    lines.append(f"online steps: {steps} ({steps / fps / 60:.1f} min at {fps:g} Hz)")
    lines.append(f"intervention rate: {pct(result['intervention_rate'])}")
    if "effort_steps" in result and steps:
        lines.append(f"operator effort: {result['takeover_steps']} steps taken over + {result['spoken_steps']} spoken = "
                     f"{result['effort_steps']} ({pct(result['effort_steps'] / steps)} of the online steps)")
    return "\n".join(lines)
