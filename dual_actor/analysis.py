"""What the notebooks (``notebooks/*.ipynb``) compute: run folders and HDF5 datasets in, markdown tables and
matplotlib Figures out.

Runs (``notebooks/02_offline_ablations.ipynb``, ``notebooks/03_results.ipynb``): :func:`load_run` reads one run
folder (``eval.json``, ``eval_commands.json``, ``eval_B.json``, ``summary.json``, ``learning_curve.json``,
``authority.json``, ``chain.json``, ``chain_commands.json``; a missing file is None), :func:`load_arms` the
``<arm>-s<seed>`` folders of a run root. The tables aggregate over seeds as :func:`spread` (mean +- population
std [min, max]); :func:`steps_to` reads the online steps to a success threshold on a learning curve.
:func:`fit_run` runs ``python -m dual_actor.fit`` as a subprocess (Hydra composes the config) and skips a run
whose ``eval.json`` exists, so a notebook that is run again resumes.

Datasets (``notebooks/01_dataset.ipynb``): counts per task and kind (:func:`dataset_counts`), intervention,
command and action distributions, a strip of frames, and the sensitivity of the talk-and-tweak rule to its
window J and threshold sigma (:func:`relabel_grid`, with :func:`data_tools.talk_tweak.label_episode`).

Figures are made with ``plt.subplots`` and closed before they are returned: in Jupyter a returned Figure shows
once, inline; a script saves it with ``fig.savefig``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from statistics import mean, pstdev
from typing import Any, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from data_tools.hdf5_format import Episode, dataset_info, read_episodes
from data_tools.talk_tweak import NULL_COMMAND, label_episode

REPO_ROOT = Path(__file__).resolve().parents[1]
"""Relative paths in the notebooks' parameters are relative to this folder (as ``run_root=checkpoints`` is)."""

BENCH_TASKS = ("place the bolt", "pick up the bolt", "assemble the bolt")

RESULT_ARMS: dict[str, str] = {
    "dual": "Ours (dual actor)",
    "single": "Ours w/o dual actor",
    "dsrl": "DSRL",
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


def repo_path(path: str | os.PathLike) -> Path:
    """``path`` itself if absolute, else relative to :data:`REPO_ROOT`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


# ------------------------------------------------------------------------------------------------ runs


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def load_run(run: str | os.PathLike) -> dict:
    """One run folder's results (missing files are None; no curve: ``[]``; no probes: ``[]``)."""
    run = Path(run)
    curve = _load(run / "learning_curve.json")
    return {"name": run.name, "path": run, "eval": _load(run / "eval.json"),
            "eval_commands": _load(run / "eval_commands.json"), "eval_B": _load(run / "eval_B.json"),
            "summary": _load(run / "summary.json"), "curve": curve["points"] if curve else [],
            "fps": (curve or {}).get("fps", 10.0), "authority": _load(run / "authority.json") or [],
            "chain": _load(run / "chain.json"), "chain_commands": _load(run / "chain_commands.json")}


def find_runs(run_root: str | os.PathLike, arm: str, seeds: Iterable[int] | None = None) -> list[Path]:
    """The folders ``run_root/<arm>-s<seed>`` (every seed found, or those of ``seeds`` that exist), by seed."""
    root = Path(run_root)
    pat = re.compile(rf"^{re.escape(arm)}-s(\d+)$")
    found = {int(m.group(1)): p for p in (root.iterdir() if root.is_dir() else []) if p.is_dir() and (m := pat.match(p.name))}
    wanted = sorted(found) if seeds is None else [int(s) for s in seeds if int(s) in found]
    return [found[s] for s in wanted]


def load_arms(run_root: str | os.PathLike, arms: Iterable[str], seeds: Iterable[int] | None = None) -> dict[str, list[dict]]:
    """``{arm: [load_run(folder) for its seeds]}``; an arm with no folder maps to ``[]``."""
    seeds = None if seeds is None else list(seeds)
    return {arm: [load_run(p) for p in find_runs(run_root, arm, seeds)] for arm in arms}


def spread(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``mean +- std [min, max]`` (population std over seeds) of ``values x scale``, ``digits`` decimals."""
    v = [scale * x for x in values]
    f = f"{{:.{digits}f}}"
    return f"{f.format(mean(v))} +- {f.format(pstdev(v))} [{f.format(min(v))}, {f.format(max(v))}]"


def success_table(arms: Mapping[str, list[dict]], key: str = "eval", scale: float = 1.0, digits: int = 2) -> str:
    """Rows: arms; columns: tasks and the average, each as :func:`spread` over the arm's runs (``scale=100,
    digits=0``: in %)."""
    first = next(r[key] for runs in arms.values() for r in runs if r[key])
    tasks = list(first["per_task"])
    lines = ["| arm (seeds) | " + " | ".join(tasks) + " | average |", "|---|" + "---|" * (len(tasks) + 1)]
    for arm, runs in arms.items():
        res = [r[key] for r in runs if r[key]]
        if not res:
            continue
        cells = [spread([x["per_task"][t]["success_rate"] for x in res], scale, digits) for t in tasks]
        cells.append(spread([x["average_success_rate"] for x in res], scale, digits))
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


def table_one(arms: Mapping[str, list[dict]], labels: Mapping[str, str] = RESULT_ARMS, threshold: float = 0.8,
              paper: Mapping[str, Sequence[float]] = PAPER_TABLE_I, key: str = "eval") -> str:
    """Table I in simulation: per arm (keys of ``arms``, shown as ``labels[arm]``), success per task and average in %
    as :func:`spread` over seeds (0 decimals), the paper's numbers beside them, and the median over seeds of the
    online steps to a ``threshold`` average on the learning curve (minutes at the curve's fps)."""
    first = next((r[key] for runs in arms.values() for r in runs if r[key]), None)
    if first is None:
        return "(no run has an eval.json)"
    tasks = list(first["per_task"])
    lines = ["| method (seeds) | " + " | ".join(tasks) + " | average | paper (per task / average)"
             + f" | online steps to {threshold:.0%} average: median (per seed) |", "|---|" + "---|" * (len(tasks) + 3)]
    for arm, runs in arms.items():
        res = [r for r in runs if r[key]]
        if not res:
            continue
        cells = [spread([r[key]["per_task"][t]["success_rate"] for r in res], 100, 0) for t in tasks]
        cells.append(spread([r[key]["average_success_rate"] for r in res], 100, 0))
        cells.append(" / ".join(f"{x:g}" for x in paper[arm]) if arm in paper else "-")
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


def _curve_mean(runs: list[dict], value) -> tuple[list[float], list[list[float]]]:
    """x (mean online steps) and, per point, the seeds' values, over the points every seed has."""
    curves = [r["curve"] for r in runs if r["curve"]]
    n = min(len(c) for c in curves)
    return [mean(c[i]["online_steps"] for c in curves) for i in range(n)], [[value(c[i]) for c in curves] for i in range(n)]


def plot_curves(arms: Mapping[str, list[dict]], x: str = "steps", out: str | os.PathLike | None = None) -> Figure:
    """Each arm's mean learning curve (average success) with its min-max band over seeds, against online steps
    (``x="steps"``, minutes at the curve's fps on top) or against the online phase's minutes with every robot at
    ``fps`` (``x="wall"``, multi-robot runs: steps / (fps x robots)). Saved to ``out`` when given."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    fps = 10.0
    for arm, runs in arms.items():
        curves = [r["curve"] for r in runs if r["curve"]]
        if not curves:
            continue
        fps = runs[0]["fps"]
        n = min(len(c) for c in curves)
        if x == "wall":  # robots act at fps each: minutes of robot time = steps / (fps x robots)
            robots = [len((r["summary"] or {}).get("robots") or {}) or 1 for r in runs if r["curve"]]
            steps = [mean(c[i]["online_steps"] / (fps * k) / 60.0 for c, k in zip(curves, robots)) for i in range(n)]
        else:
            steps = [mean(c[i]["online_steps"] for c in curves) for i in range(n)]
        vals = [[c[i]["average_success_rate"] for c in curves] for i in range(n)]
        line, = ax.plot(steps, [mean(v) for v in vals], marker="o", ms=3, label=f"{arm} ({len(curves)} seeds)")
        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=0.2)
    ax.set_ylabel("average success (curve trials per task)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    if x == "wall":
        ax.set_xlabel(f"online minutes (robots at {fps:g} Hz each: steps / ({fps:g} x robots) / 60)")
    else:
        ax.set_xlabel("online interaction steps")
        top = ax.secondary_xaxis("top", functions=(lambda s: s / fps / 60, lambda m: m * 60 * fps))
        top.set_xlabel(f"minutes at {fps:g} Hz")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return _finish(fig, out)


def plot_task_curves(arms: Mapping[str, list[dict]], out: str | os.PathLike | None = None) -> Figure:
    """One panel per task and one for the average: each arm's mean curve with its min-max band over seeds."""
    with_curves = {a: [r for r in runs if r["curve"]] for a, runs in arms.items()}
    with_curves = {a: runs for a, runs in with_curves.items() if runs}
    tasks = list(next(iter(with_curves.values()))[0]["curve"][0]["per_task"]) if with_curves else []
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.6 * (len(tasks) + 1), 3.4), sharey=True, squeeze=False)
    axes = axes[0]
    fps = 10.0
    for arm, runs in with_curves.items():
        fps = runs[0]["fps"]
        for ax, t in zip(axes, [*tasks, None]):
            value = (lambda p: p["average_success_rate"]) if t is None else (lambda p, t=t: p["per_task"][t])
            steps, vals = _curve_mean(runs, value)
            line, = ax.plot(steps, [mean(v) for v in vals], marker="o", ms=3, label=f"{arm} ({len(runs)})")
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=0.2)
    for ax, t in zip(axes, [*tasks, "average"]):
        ax.set_title(t)
        ax.set_xlabel("online interaction steps")
        ax.grid(alpha=0.3)
        top = ax.secondary_xaxis("top", functions=(lambda s: s / fps / 60, lambda m: m * 60 * fps))
        top.set_xlabel(f"minutes at {fps:g} Hz")
    axes[0].set_ylabel("success rate")
    axes[0].set_ylim(-0.05, 1.05)
    if with_curves:
        axes[-1].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return _finish(fig, out)


def plot_success_bars(arms: Mapping[str, list[dict]], key: str = "eval", out: str | os.PathLike | None = None) -> Figure:
    """Grouped bars: per task and the average, each arm's mean success over seeds, whiskers from min to max."""
    arms = {a: [r[key] for r in runs if r[key]] for a, runs in arms.items()}
    arms = {a: res for a, res in arms.items() if res}
    tasks = list(next(iter(arms.values()))[0]["per_task"]) if arms else []
    groups = [*tasks, "average"]
    fig, ax = plt.subplots(figsize=(max(7.0, min(10.0, 0.3 * len(groups) * len(arms))), 4.2))
    width = 0.8 / max(1, len(arms))
    for i, (arm, res) in enumerate(arms.items()):
        vals = [[x["per_task"][t]["success_rate"] for x in res] for t in tasks] + [[x["average_success_rate"] for x in res]]
        m = np.array([mean(v) for v in vals])
        err = np.array([[mu - min(v) for mu, v in zip(m, vals)], [max(v) - mu for mu, v in zip(m, vals)]])
        ax.bar(np.arange(len(groups)) + (i - (len(arms) - 1) / 2) * width, m, width, yerr=err, capsize=2,
               label=f"{arm} ({len(res)})")
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel("success rate (whiskers: min-max over seeds)", fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    return _finish(fig, out)


def read_scalars(tb_dir: str | os.PathLike, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every event of scalar ``tag`` in a TensorBoard folder (``[]`` when absent)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0}).Reload()
    if tag not in ea.Tags()["scalars"]:
        return []
    return [(int(e.step), float(e.value)) for e in ea.Scalars(tag)]


def plot_scalar(series: Mapping[str, list[tuple[int, float]]], tag: str, out: str | os.PathLike | None = None) -> Figure:
    """One line per run of a TensorBoard scalar against its step (learner updates)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    for name, pts in series.items():
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", ms=3, label=name)
    ax.set_xlabel("learner updates (TensorBoard step)")
    ax.set_ylabel(tag)
    ax.grid(alpha=0.3)
    if any(series.values()):
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _finish(fig, out)


def _finish(fig: Figure, out: str | os.PathLike | None) -> Figure:
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    plt.close(fig)  # not shown twice in Jupyter: the returned Figure is what displays
    return fig


# ------------------------------------------------------------------------------------- fit subprocesses


def fit_run(run_root: str | os.PathLike, run_name: str, overrides: Sequence[str], log_dir: str | os.PathLike | None = None,
            env: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """``python -m dual_actor.fit run_root=RUN_ROOT run_name=RUN_NAME *overrides`` in a subprocess from
    :data:`REPO_ROOT` (Hydra composes the config as on the command line); its output goes to
    ``log_dir/RUN_NAME.log`` (default ``RUN_ROOT/logs``). Returns ``(run folder, ran)``: a run whose
    ``eval.json`` exists is skipped (``ran`` False), one with a ``last.ckpt`` but no ``eval.json`` (killed) is
    continued with ``resume=true``. A failed run raises ``RuntimeError`` with the end of its log."""
    root = Path(run_root)
    run = root / run_name
    if (run / "eval.json").exists():
        return run, False
    args = [f"run_root={root}", f"run_name={run_name}", "trainer.progress_bar=false", *overrides]
    if run.exists():
        if not (run / "last.ckpt").exists():
            raise RuntimeError(f"{run} exists without eval.json or last.ckpt (a run that died early): delete it to rerun")
        args.append("resume=true")
    log = Path(log_dir) if log_dir is not None else root / "logs"
    log.mkdir(parents=True, exist_ok=True)
    log = log / f"{run_name}.log"
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    with open(log, "w") as f:
        f.write("$ python -m dual_actor.fit " + " ".join(args) + "\n")
        f.flush()
        r = subprocess.run([sys.executable, "-m", "dual_actor.fit", *args], cwd=REPO_ROOT, env=full_env,
                           stdout=f, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"{run_name}: python -m dual_actor.fit exited {r.returncode} (log: {log})\n{tail}")
    return run, True


def tiny_bench_dataset(out: str | os.PathLike, env_steps: int = 200) -> Path:
    """A small real dataset at ``out`` (tests, ``TINY`` notebooks): a short ``experiment=smoke`` run on the bench
    (30 warm-up updates, ``env_steps`` online steps with the simulated operator, no evaluation), its scripted-expert
    demos and its online teleop log converted with ``data_tools``, merged. About 15-20 s on one core."""
    from data_tools.convert import convert
    from data_tools.curate import merge

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="tiny-bench-") as tmp:
        run, _ = fit_run(tmp, "tiny", ["experiment=smoke", f"online.env_steps={env_steps}", "eval.trials=0",
                                       "eval.warmup_point=false", f"eval.curve_every_env_steps={env_steps}"])
        sessions = sorted((run / "teleop").iterdir())
        online = Path(tmp) / "online.hdf5"
        convert(sessions, online, progress=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        merge([Path(tmp) / "data" / "metaworld_bench_smoke_demos.hdf5", online], out)
    return out


# --------------------------------------------------------------------------------------------- datasets


def load_episodes(path: str | os.PathLike) -> list[Episode]:
    """Every episode of a dataset, low-dimensional arrays only (no images)."""
    return list(read_episodes(path, load_images=False))


def dataset_counts(episodes: Iterable[Episode]) -> list[dict]:
    """One row per (task, kind), sorted: episodes, steps, successes, intervention steps, talk-and-tweak steps
    (steps with a refinement command other than "[null]", spoken or labelled)."""
    rows: dict[tuple[str, str], dict] = {}
    for ep in episodes:
        r = rows.setdefault((ep.task, ep.kind), {"task": ep.task, "kind": ep.kind, "episodes": 0, "steps": 0,
                                                 "successes": 0, "intervention_steps": 0, "talk_tweak_steps": 0})
        r["episodes"] += 1
        r["steps"] += ep.num_samples
        r["successes"] += int(ep.success)
        r["intervention_steps"] += int(np.count_nonzero(ep.intervention))
        r["talk_tweak_steps"] += sum(c != NULL_COMMAND for c in ep.refinement_command)
    return [rows[k] for k in sorted(rows)]


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


def segments(intervention: np.ndarray) -> list[int]:
    """Lengths of the contiguous runs of True."""
    out, n = [], 0
    for x in np.asarray(intervention, bool):
        if x:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out + ([n] if n else [])


def plot_interventions(episodes: Sequence[Episode], out: str | os.PathLike | None = None) -> Figure:
    """Left: lengths of the intervention segments; right: per episode, the fraction of intervened steps (by kind)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.0, 3.2))
    segs = [s for ep in episodes for s in segments(ep.intervention)]
    if segs:
        a.hist(segs, bins=np.arange(1, max(segs) + 2) - 0.5 if max(segs) <= 60 else 30, color="tab:red")
    a.set_title(f"intervention segments ({len(segs)})")
    a.set_xlabel("segment length (steps)")
    a.set_ylabel("segments")
    for kind in sorted({ep.kind for ep in episodes}):
        ratios = [float(np.mean(ep.intervention)) for ep in episodes if ep.kind == kind]
        b.hist(ratios, bins=np.linspace(0, 1, 11), alpha=0.6, label=f"{kind} ({len(ratios)})")
    b.set_title("intervened fraction per episode")
    b.set_xlabel("intervened steps / steps")
    b.set_ylabel("episodes")
    b.legend(fontsize="small")
    fig.tight_layout()
    return _finish(fig, out)


def plot_commands(commands: Mapping[str, Counter], top: int = 20, out: str | os.PathLike | None = None) -> Figure:
    """Horizontal bars of the ``top`` most frequent commands (``"[null]"`` left out), one colour per series
    (e.g. per task, or stored vs relabelled)."""
    total = Counter()
    for c in commands.values():
        total.update({k: v for k, v in c.items() if k != NULL_COMMAND})
    names = [k for k, _ in total.most_common(top)]
    fig, ax = plt.subplots(figsize=(7.0, 0.8 + 0.28 * max(1, len(names))))
    left = np.zeros(len(names))
    for series, c in commands.items():
        v = np.array([c.get(k, 0) for k in names], float)
        ax.barh(np.arange(len(names)), v, left=left, label=series)
        left += v
    ax.set_yticks(np.arange(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("steps")
    ax.set_title("refinement commands (without [null])" if names else "no refinement commands in this dataset")
    if names and len(commands) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _finish(fig, out)


def plot_actions(episodes: Sequence[Episode], bins: int = 40, out: str | os.PathLike | None = None) -> Figure:
    """Per action dimension, histograms of the executed actions: demo steps, online steps the policy acted,
    online steps the operator acted (intervened). Densities, so groups of different sizes compare."""
    dim = episodes[0].actions.shape[1]
    groups = {"demo": [], "online, policy": [], "online, intervened": []}
    for ep in episodes:
        if ep.kind == "demo":
            groups["demo"].append(ep.actions)
        else:
            groups["online, policy"].append(ep.actions[~ep.intervention])
            groups["online, intervened"].append(ep.actions[ep.intervention])
    groups = {k: np.concatenate(v) for k, v in groups.items() if v and sum(len(x) for x in v)}
    names = ["dx", "dy", "dz", "gripper"] if dim == 4 else [f"a{i}" for i in range(dim)]
    fig, axes = plt.subplots(1, dim, figsize=(3.0 * dim, 2.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        lo = min(float(a[:, i].min()) for a in groups.values())
        hi = max(float(a[:, i].max()) for a in groups.values())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        for name, a in groups.items():
            ax.hist(a[:, i], bins=edges, density=True, histtype="step", lw=1.5, label=f"{name} ({len(a)})")
        ax.set_title(names[i])
        ax.set_yticks([])
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize="x-small")
    fig.tight_layout()
    return _finish(fig, out)


def frame_strip(path: str | os.PathLike, episode: str | int | None = None, frames: int = 8, camera: str | None = None,
                out: str | os.PathLike | None = None) -> Figure | None:
    """``frames`` evenly spaced frames of one episode (``demo_K`` or K; default: the first) for each camera (or
    ``camera``), intervened steps titled in red. None when the dataset has no images (state-only)."""
    import h5py

    info = dataset_info(path)
    if not info.episode_names:
        return None
    name = info.episode_names[0] if episode is None else episode if isinstance(episode, str) else f"demo_{episode}"
    with h5py.File(path, "r") as f:
        g = f["data"][name]
        cams = [k for k, ds in g["obs"].items() if ds.dtype == np.uint8 and ds.ndim == 4]
        if camera is not None:
            cams = [c for c in cams if c == camera]
        if not cams:
            return None
        n = int(g.attrs["num_samples"])
        idx = np.unique(np.linspace(0, n - 1, min(frames, n)).round().astype(int))
        intervened = g["intervention"][()]
        commands = [c.decode() if isinstance(c, bytes) else str(c) for c in g["refinement_command"][()]]
        fig, axes = plt.subplots(len(cams), len(idx), figsize=(1.8 * len(idx), 1.9 * len(cams)), squeeze=False)
        for r, cam in enumerate(cams):
            for c, t in enumerate(idx):
                ax = axes[r][c]
                ax.imshow(g["obs"][cam][int(t)])
                ax.set_xticks([])
                ax.set_yticks([])
                cmd = "" if commands[t] == NULL_COMMAND else "\n" + commands[t].removeprefix("move ")
                ax.set_title(f"t={t}{cmd}", fontsize=7, color="red" if intervened[t] else "black")
            axes[r][0].set_ylabel(cam, fontsize=8)
        fig.suptitle(f"{name}: {g.attrs['task']} ({g.attrs.get('kind', 'demo')}); red: intervened", fontsize=9)
    fig.tight_layout()
    return _finish(fig, out)


def translation_scale(path: str | os.PathLike) -> float | None:
    """Metres per action unit from the dataset's env_args (``translation_scale_m``, the ``talk_tweak`` record, or the
    one value all merged ``sources`` agree on); None when the file does not record it."""
    args = dataset_info(path).env_args
    own = _scale_of(args)
    if own is not None:
        return own
    found = {_scale_of(s.get("env_args") or {}) for s in args.get("sources") or []} - {None}
    return found.pop() if len(found) == 1 else None


def _scale_of(args: Mapping[str, Any]) -> float | None:
    for v in (args.get("translation_scale_m"), (args.get("talk_tweak") or {}).get("translation_scale_m")):
        if v is not None:
            return float(v)
    return None


def relabel_grid(episodes: Sequence[Episode], windows: Sequence[int], sigmas: Sequence[float],
                 translation_scale_m: float) -> dict[tuple[int, float], Counter]:
    """The talk-and-tweak rule (:func:`data_tools.talk_tweak.label_episode`) re-applied to every intervention segment
    for each window J and threshold sigma (metres): ``{(J, sigma): Counter of the commands of intervened steps}``
    (``"[null]"`` counted: an intervened step whose window moved less than sigma on every axis)."""
    grid = {}
    eps = [ep for ep in episodes if ep.intervention.any()]
    for j in windows:
        for s in sigmas:
            c = Counter()
            for ep in eps:
                labels = label_episode(ep.actions, ep.intervention, window=int(j), sigma=float(s),
                                       translation_scale_m=translation_scale_m)
                c.update(lab for lab, i in zip(labels, ep.intervention) if i)
            grid[(int(j), float(s))] = c
    return grid


def relabel_agreement(episodes: Sequence[Episode], window: int, sigma: float, translation_scale_m: float) -> tuple[int, int]:
    """``(same, intervened)``: intervened steps whose stored command the rule gives back at ``(window, sigma)``, of all
    intervened steps (a spoken command on an intervened step may differ from the labelled one)."""
    same = total = 0
    for ep in episodes:
        if not ep.intervention.any():
            continue
        labels = label_episode(ep.actions, ep.intervention, window=int(window), sigma=float(sigma),
                               translation_scale_m=translation_scale_m)
        for lab, stored, i in zip(labels, ep.refinement_command, ep.intervention):
            if i:
                total += 1
                same += lab == stored
    return same, total


def labelling_params(path: str | os.PathLike) -> dict | None:
    """The talk-and-tweak parameters a dataset records (env_args ``talk_tweak``, or the one record all merged
    ``sources`` share): ``{"window", "sigma", ...}``, or None."""
    args = dataset_info(path).env_args
    if args.get("talk_tweak"):
        return dict(args["talk_tweak"])
    found = [json.dumps((s.get("env_args") or {}).get("talk_tweak"), sort_keys=True) for s in args.get("sources") or []]
    found = sorted({f for f in found if f != "null"})
    return json.loads(found[0]) if len(found) == 1 else None


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


def plot_relabel_grid(grid: Mapping[tuple[int, float], Counter], top: int = 15,
                      out: str | os.PathLike | None = None) -> Figure:
    """Heat map: the ``top`` commands (rows, "[null]" included) against each (J, sigma) setting (columns), as a
    share of the intervened steps."""
    keys = sorted(grid)
    total = Counter()
    for c in grid.values():
        total.update(c)
    names = [k for k, _ in total.most_common(top)]
    m = np.array([[grid[k].get(n, 0) / max(1, sum(grid[k].values())) for k in keys] for n in names]).reshape(len(names), len(keys))
    fig, ax = plt.subplots(figsize=(3.2 + 0.8 * len(keys), 1.2 + 0.3 * max(1, len(names))))
    im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0, vmax=max(1e-9, float(m.max()) if m.size else 1.0))
    ax.set_xticks(np.arange(len(keys)), [f"J={j}\nσ={s:g}" for j, s in keys], fontsize=7)
    ax.set_yticks(np.arange(len(names)), names, fontsize=7)
    ax.set_title("command share of intervened steps", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return _finish(fig, out)
