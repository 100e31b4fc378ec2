"""The notebooks' figures, drawn from data already in memory (loaded runs, episodes, counters, scalar series):
this module reads no file.

Figures are made with ``plt.subplots`` and closed before they are returned: in Jupyter a returned Figure shows
once, inline; a script saves it with ``fig.savefig`` (or passes ``out``).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from data_tools.talk_tweak import NULL_COMMAND
from dual_actor.analysis.dataset_stats import segments

if TYPE_CHECKING:
    from data_tools.hdf5_format import Episode
    from dual_actor.analysis.loading import Frames


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


def plot_success_vs_effort(arms: Mapping[str, list[dict]], out: str | os.PathLike | None = None) -> Figure:
    """What a person's time buys: each arm's mean learning curve (average success on the curve's dev trials)
    against the operator's cumulative effort (steps taken over + spoken, minutes at the curve's fps), with its
    min-max band over seeds; each arm's mean final (test) success at its final effort as a marker. Runs whose curve
    points carry no effort (recorded before issue 27) are left out."""
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for arm, runs in arms.items():
        runs = [r for r in runs if r["curve"] and all("effort_steps" in p for p in r["curve"])]
        if not runs:
            continue
        fps = runs[0]["fps"]
        n = min(len(r["curve"]) for r in runs)
        x = [mean(r["curve"][i]["effort_steps"] for r in runs) / fps / 60 for i in range(n)]
        vals = [[r["curve"][i]["average_success_rate"] for r in runs] for i in range(n)]
        line, = ax.plot(x, [mean(v) for v in vals], marker="o", ms=3, label=f"{arm} ({len(runs)} seeds)")
        ax.fill_between(x, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=0.2)
        final = [r["eval"] for r in runs if r.get("eval") and "effort_steps" in r["eval"]]
        if final:
            ax.plot([mean(e["effort_steps"] for e in final) / fps / 60], [mean(e["average_success_rate"] for e in final)],
                    marker="*", ms=12, color=line.get_color(), linestyle="none")
    ax.set_xlabel("operator effort: minutes taken over or spoken (cumulative)")
    ax.set_ylabel("average success (curve: dev trials; star: final, test)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
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


def plot_frames(strip: Frames, out: str | os.PathLike | None = None) -> Figure:
    """One row per camera of ``strip`` (:func:`~dual_actor.analysis.loading.read_frames`), one column per step,
    each titled with its step and command, intervened steps in red."""
    cams = list(strip.images)
    fig, axes = plt.subplots(len(cams), len(strip.steps), figsize=(1.8 * len(strip.steps), 1.9 * len(cams)),
                             squeeze=False)
    for r, cam in enumerate(cams):
        for c, t in enumerate(strip.steps):
            ax = axes[r][c]
            ax.imshow(strip.images[cam][c])
            ax.set_xticks([])
            ax.set_yticks([])
            cmd = "" if strip.commands[c] == NULL_COMMAND else "\n" + strip.commands[c].removeprefix("move ")
            ax.set_title(f"t={t}{cmd}", fontsize=7, color="red" if strip.intervened[c] else "black")
        axes[r][0].set_ylabel(cam, fontsize=8)
    fig.suptitle(f"{strip.episode}: {strip.task} ({strip.kind}); red: intervened", fontsize=9)
    fig.tight_layout()
    return _finish(fig, out)


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


def _finish(fig: Figure, out: str | os.PathLike | None) -> Figure:
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    plt.close(fig)  # not shown twice in Jupyter: the returned Figure is what displays
    return fig
