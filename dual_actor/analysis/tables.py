"""Markdown tables of loaded runs and datasets (the notebooks print them with ``Markdown``).

Runs aggregate over seeds as :func:`spread` (mean +- population std [min, max]); :func:`steps_to` reads the
online steps to a success threshold on a learning curve. :func:`table_one` and :func:`chain_table` set the
paper's numbers (:mod:`dual_actor.analysis.paper`) beside the runs'. Datasets: :func:`counts_table` (of
:func:`~dual_actor.analysis.dataset_stats.dataset_counts`) and :func:`relabel_table` (of
:func:`~dual_actor.analysis.dataset_stats.relabel_grid`).
"""

from __future__ import annotations

from collections import Counter
from statistics import mean, pstdev
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from data_tools.talk_tweak import NULL_COMMAND
from dual_actor.analysis.paper import PAPER_CHAIN, PAPER_TABLE_I, RESULT_ARMS


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean +- std [min, max]`` (population std over seeds) of ``values x scale``, ``digits`` decimals."""
    v = [scale * x for x in values]
    f = f"{{:.{digits}f}}"
    return f"{f.format(mean(v))} +- {f.format(pstdev(v))} [{f.format(min(v))}, {f.format(max(v))}]"


def success_table(arms: Mapping[str, list[dict]], key: str = "eval", scale: float = 1.0, digits: int = 2,
                  field: str = "success_rate") -> str:
    """Rows: arms; columns: tasks and the average, each as :func:`spread` over the arm's runs (``scale=100,
    digits=0``: in %). ``field``: the per-task entry shown (``mean_episode_length``: the paper's right half of
    Table I, steps; its average is the mean over tasks)."""
    first = next(r[key] for runs in arms.values() for r in runs if r[key])
    tasks = list(first["per_task"])
    lines = ["| arm (seeds) | " + " | ".join(tasks) + " | average |", "|---|" + "---|" * (len(tasks) + 1)]

    def average(x: Mapping) -> float:
        return x["average_success_rate"] if field == "success_rate" else mean(x["per_task"][t][field] for t in tasks)

    for arm, runs in arms.items():
        res = [r[key] for r in runs if r[key]]
        if not res:
            continue
        cells = [spread([x["per_task"][t][field] for x in res], scale, digits) for t in tasks]
        cells.append(spread([average(x) for x in res], scale, digits))
        lines.append(f"| {arm} ({len(res)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def steps_to(curve: list[dict], threshold: float = 0.8) -> int | None:
    """Online steps of the first learning-curve point after the warm-up one (``online_steps`` > 0) whose average
    success is >= ``threshold`` (None: never). The warm-up point is left out: a warm-up already at the threshold
    would otherwise read as "0 steps" although the online phase first dips below it. The comparison allows for
    float rounding: the average of 0.9, 0.9 and 0.6 is stored as 0.7999999999999999 and counts as 80%."""
    for p in curve:
        if p["online_steps"] > 0 and p["average_success_rate"] >= threshold - 1e-9:
            return int(p["online_steps"])
    return None


def median_steps(per_seed: Sequence[int | None]) -> int | None:
    """The median over seeds of :func:`steps_to` (never = infinity); None unless more than half reached it."""
    reached = [s for s in per_seed if s is not None]
    if not per_seed or len(reached) * 2 <= len(per_seed):
        return None
    return sorted(s if s is not None else float("inf") for s in per_seed)[len(per_seed) // 2]


def steps_table(arms: Mapping[str, list[dict]], threshold: float = 0.8, fps: float = 10.0) -> str:
    lines = [f"| arm | online steps to {threshold:.0%} average, per seed | median (minutes at {fps:g} Hz) |",
             "|---|---|---|"]
    for arm, runs in arms.items():
        per = [steps_to(r["curve"], threshold) for r in runs]
        cells = ", ".join("never" if s is None else str(s) for s in per)
        med = median_steps(per)
        cells_med = "not reached by most seeds" if med is None else f"{med} ({med / fps / 60:.1f} min)"
        lines.append(f"| {arm} | {cells} | {cells_med} |")
    return "\n".join(lines)


def wall_minutes_to(run: dict, threshold: float = 0.8) -> float | None:
    """Online minutes with every robot at the curve's fps (steps / (fps x robots)) of the first curve point after
    the warm-up one whose average success is >= ``threshold`` (None: never)."""
    robots = len((run["summary"] or {}).get("robots") or {}) or 1
    s = steps_to(run["curve"], threshold)
    return None if s is None else s / (run["fps"] * robots) / 60.0


def wall_table(arms: Mapping[str, list[dict]], threshold: float = 0.8) -> str:
    lines = [f"| arm | online minutes to {threshold:.0%} average (robot A; robots at 10 Hz each), per seed | online steps / learner updates, per seed |",
             "|---|---|---|"]
    for arm, runs in arms.items():
        per = [wall_minutes_to(r, threshold) for r in runs]
        work = [f"{r['summary']['online_env_steps']} / {r['summary'].get('online_updates', '?')}" for r in runs if r["summary"]]
        lines.append(f"| {arm} | " + ", ".join("never" if m is None else f"{m:.1f}" for m in per) + " | "
                     + ", ".join(work) + " |")
    return "\n".join(lines)


def authority_table(arms: Mapping[str, list[dict]]) -> str:
    """Final probes per arm: latent authority x/y/z and the smallest fraction of states with D_c > 0."""
    lines = ["| arm | latent authority x / y / z | min over commands of P(D_c > 0) | mean D_c |", "|---|---|---|---|"]
    for arm, runs in arms.items():
        finals = [r["authority"][-1] for r in runs if r["authority"]]
        if not finals:
            continue
        lat = " / ".join(spread([f["latent_authority"][a] for f in finals]).split(" [")[0] for a in "xyz")
        pos = spread([min(c["positive_fraction"] for c in f["command_authority"].values()) for f in finals])
        dc = spread([mean(c["mean"] for c in f["command_authority"].values()) for f in finals])
        lines.append(f"| {arm} | {lat} | {pos} | {dc} |")
    return "\n".join(lines)


def _mean_length(result: Mapping) -> float | None:
    lengths = [r.get("mean_episode_length") for r in result["per_task"].values()]
    return None if None in lengths else mean(float(x) for x in lengths)


def _effort(result: Mapping) -> float | None:
    steps = int(result.get("online_steps") or 0)
    return float(result["effort_steps"]) / steps if "effort_steps" in result and steps else None


def _cell(values: Sequence[float | None], scale: float, digits: int) -> str:
    v = [x for x in values if x is not None]
    return spread(v, scale, digits) if v and len(v) == len(values) else "-"


def table_one(arms: Mapping[str, list[dict]], labels: Mapping[str, str] = RESULT_ARMS, threshold: float = 0.8,
              paper: Mapping[str, Sequence[float]] = PAPER_TABLE_I, key: str = "eval") -> str:
    """Table I in simulation: per arm (keys of ``arms``, shown as ``labels[arm]``), success per task and average in %
    as :func:`spread` over seeds (0 decimals), the paper's numbers beside them, the average's 95% bootstrap interval
    over seeds (:func:`~dual_actor.eval.stats.bootstrap_interval`), the arm's own warm-up average on the same
    trials (``eval_warmup.json``), the mean episode length (steps, over tasks: a failed trial counts its limit),
    the operator's effort (steps taken over + spoken, % of online steps), and the median over seeds of the online
    steps to a ``threshold`` average on the learning curve (minutes at the curve's fps). A cell whose files some
    seed lacks is ``-``."""
    from dual_actor.eval.stats import bootstrap_interval

    first = next((r[key] for runs in arms.values() for r in runs if r[key]), None)
    if first is None:
        return "(no run has an eval.json)"
    tasks = list(first["per_task"])
    lines = ["| method (seeds) | " + " | ".join(tasks) + " | average | paper (per task / average) | average: 95% "
             "bootstrap over seeds | warm-up average | episode length | operator effort (% of online steps)"
             + f" | online steps to {threshold:.0%} average: median (per seed) |", "|---|" + "---|" * (len(tasks) + 7)]
    for arm, runs in arms.items():
        res = [r for r in runs if r[key]]
        if not res:
            continue
        cells = [spread([r[key]["per_task"][t]["success_rate"] for r in res], 100, 0) for t in tasks]
        cells.append(spread([r[key]["average_success_rate"] for r in res], 100, 0))
        cells.append(" / ".join(f"{x:g}" for x in paper[arm]) if arm in paper else "-")
        lo, hi = bootstrap_interval([r[key]["average_success_rate"] for r in res])
        cells.append(f"[{100 * lo:.0f}, {100 * hi:.0f}]")
        cells.append(_cell([(r.get("eval_warmup") or {}).get("average_success_rate") for r in res], 100, 0))
        cells.append(_cell([_mean_length(r[key]) for r in res], 1, 1))
        cells.append(_cell([_effort(r[key]) for r in res], 100, 1))
        if not any(p["online_steps"] > 0 for r in res for p in (r["curve"] or [])):
            cells.append("- (no learning curve)")  # eval.curve_trials=0: nothing says when, not "never"
        else:
            per = [steps_to(r["curve"], threshold) for r in res]
            med = median_steps(per)
            fps = res[0]["fps"]
            head = "not reached by most seeds" if med is None else f"{med} ({med / fps / 60:.1f} min at {fps:g} Hz)"
            cells.append(head + " (" + ", ".join("never" if s is None else str(s) for s in per) + ")")
        lines.append(f"| {labels.get(arm, arm)} ({len(res)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chain_table(chains: Mapping[str, list[dict]], paper: Sequence[float] | None = PAPER_CHAIN,
                paper_label: str = "paper (ours, real robot)") -> str:
    """RQ4: per label, success of chains of the first k bolts (``chain.json``'s ``success_at_k``) in % as
    :func:`spread` over seeds (0 decimals), and the mean number of sub-tasks completed; the paper's row last."""
    bolts = max([c["bolts"] for runs in chains.values() for c in runs] + [len(paper or ())])
    lines = ["| method (seeds) | " + " | ".join(f"K = {k}" for k in range(1, bolts + 1))
             + " | sub-tasks completed (of 3K) | trials |", "|---|" + "---|" * (bolts + 2)]
    for label, runs in chains.items():
        if not runs:
            continue
        cells = []
        for k in range(1, bolts + 1):
            vals = [c["success_at_k"][k - 1]["success_rate"] for c in runs if c["bolts"] >= k]
            cells.append(spread(vals, 100, 0) if vals else "-")
        cells.append(spread([c["mean_subtasks_completed"] for c in runs], 1, 2))
        cells.append(", ".join(str(c["trials"]) for c in runs))
        lines.append(f"| {label} ({len(runs)}) | " + " | ".join(cells) + " |")
    if paper:
        lines.append(f"| {paper_label} | " + " | ".join(f"{100 * p:.0f}" for p in paper)
                     + " |" + " - |" * (bolts - len(paper)) + " - | - |")
    return "\n".join(lines)


def counts_table(rows: Sequence[dict]) -> str:
    """:func:`dataset_counts` as markdown, with a total row."""
    keys = ("episodes", "steps", "intervention_steps", "talk_tweak_steps", "successes")
    lines = ["| task | kind | episodes | steps | intervention steps | talk-and-tweak steps | successful episodes |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['kind']} | " + " | ".join(str(r[k]) for k in keys) + " |")
    tot = {k: sum(r[k] for r in rows) for k in keys}
    lines.append("| **total** | | " + " | ".join(str(tot[k]) for k in keys) + " |")
    return "\n".join(lines)


def relabel_table(grid: Mapping[tuple[int, float], Counter]) -> str:
    """Rows J, columns sigma: intervened steps with a non-null command (share of intervened steps) / distinct
    commands."""
    windows = sorted({j for j, _ in grid})
    sigmas = sorted({s for _, s in grid})
    lines = ["| J \\ sigma (m) | " + " | ".join(f"{s:g}" for s in sigmas) + " |", "|---|" + "---:|" * len(sigmas)]
    for j in windows:
        cells = []
        for s in sigmas:
            c = grid[(j, s)]
            n = sum(c.values())
            nn = n - c.get(NULL_COMMAND, 0)
            distinct = len([k for k in c if k != NULL_COMMAND])
            cells.append(f"{nn} ({100 * nn / n:.0f}%) / {distinct}" if n else "-")
        lines.append(f"| {j} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(runs_a: list[dict], runs_b: list[dict], names: tuple[str, str] = ("dual", "single"),
                 key: str = "eval") -> str:
    """Arm A vs arm B paired by seed (runs named ``<arm>-s<seed>``: the same warm-up with ``warmup.share=true`` and
    the same evaluation trials): per task and on average, the mean per-seed difference in points, its 95% bootstrap
    interval, wins / ties / losses and the sign test's two-sided p (:func:`~dual_actor.eval.stats.paired_difference`).
    Seeds only one arm has are left out."""
    from dual_actor.eval.stats import paired_difference

    def by_seed(runs: list[dict]) -> dict[str, dict]:
        return {r["name"].rsplit("-s", 1)[-1]: r[key] for r in runs if r.get(key)}

    a, b = by_seed(runs_a), by_seed(runs_b)
    seeds = sorted(set(a) & set(b), key=lambda s: (len(s), s))
    if not seeds:
        return "(no seed has both arms)"
    tasks = list(a[seeds[0]]["per_task"])
    lines = [f"{names[0]} - {names[1]}, paired over seeds {', '.join(seeds)}:", "",
             "| | mean difference (points) | 95% bootstrap | wins / ties / losses | sign test p |", "|---|---|---|---|---|"]
    rows = [(t, [a[s]["per_task"][t]["success_rate"] for s in seeds], [b[s]["per_task"][t]["success_rate"] for s in seeds])
            for t in tasks]
    rows.append(("average", [a[s]["average_success_rate"] for s in seeds], [b[s]["average_success_rate"] for s in seeds]))
    for name, x, y in rows:
        d = paired_difference(x, y)
        lines.append(f"| {name} | {100 * d['mean']:+.1f} | [{100 * d['interval'][0]:+.1f}, {100 * d['interval'][1]:+.1f}] "
                     f"| {d['wins']} / {d['ties']} / {d['losses']} | {d['sign_p']:.2f} |")
    return "\n".join(lines)


def _rates(result: Mapping | None) -> str:
    if not result:
        return "-"
    per = " / ".join(f"{r['success_rate']:.2f}" for r in result["per_task"].values())
    return f"{per} ({result['average_success_rate']:.2f})"


def runs_table(runs: Sequence[dict]) -> str:
    """One row per run: its warm-up and final success on the same trials (per task, average), with spoken commands
    (``eval_commands.json``), the operator's steps taken over and spoken and their sum (% of the online steps)."""
    lines = ["| run | warm-up | final | with spoken commands | taken over | spoken | effort (% of steps) |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        ev = r["eval"] or {}
        eff = _effort(ev) if ev else None
        effort = "-" if "effort_steps" not in ev else f"{ev['effort_steps']} ({100 * eff:.1f}%)" if eff is not None \
            else str(ev["effort_steps"])
        lines.append(f"| {r['name']} | {_rates(r['eval_warmup'])} | {_rates(r['eval'])} | {_rates(r['eval_commands'])} "
                     f"| {ev.get('takeover_steps', '-')} | {ev.get('spoken_steps', '-')} | {effort} |")
    return "\n".join(lines)


def results_tables(run_root: str | os.PathLike, arms: Mapping[str, str] = RESULT_ARMS, threshold: float = 0.8) -> str:
    """docs/results.md's tables for a run root (records or run folders, ``<arm>-s<seed>``): Table I
    (:func:`table_one`), dual vs single and dual vs HG-DAgger paired by seed (:func:`paired_table`, when both ran),
    the authority probes after online (:func:`authority_table`, when recorded) and one row per run
    (:func:`runs_table`); tests/test_analysis.py finds this text in docs/results.md for each
    generated block (docs/runs/table1, docs/runs/demos5, docs/runs/vla_bench)."""
    from dual_actor.analysis.loading import load_arms

    runs = {arm: rs for arm, rs in load_arms(run_root, arms).items() if rs}
    parts = [table_one(runs, arms, threshold)]
    for other in ("single", "hg_dagger"):  # single shares dual's warm-up; HG-DAgger has its own (same demos, trials)
        if "dual" in runs and other in runs:
            parts.append(paired_table(runs["dual"], runs[other], names=("dual", other)))
    if any(r["authority"] for rs in runs.values() for r in rs):
        parts.append("The refinement actor's authority after online (`authority.json`'s last probe: how far the latent "
                     "moves the action, in action units, and how often each single-axis command moves it the "
                     "commanded way), mean +- std over seeds:\n\n"
                     + authority_table({arms.get(arm, arm): rs for arm, rs in runs.items()}))
    parts.append("Per run:\n\n" + runs_table([r for rs in runs.values() for r in rs]))
    expert = Path(run_root) / "expert_chain.json"
    for key, how in (("chain", "without"), ("chain_commands", "with")):
        chains = {f"{arms.get(arm, arm)}": [r[key] for r in rs if r[key]] for arm, rs in runs.items()}
        chains = {label: c for label, c in chains.items() if c}
        if key == "chain" and expert.is_file():
            ceiling = json.loads(expert.read_text())
            chains[f"the operator's scripted expert ({ceiling.get('expert')}): the ceiling"] = [ceiling]
        if chains:
            parts.append(f"RQ4, chains of K bolts {how} spoken commands (success of the first K bolts, %):\n\n"
                         + chain_table(chains))
    return "\n\n".join(parts)
