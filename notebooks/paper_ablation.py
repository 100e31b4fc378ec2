# %% [markdown]
# # Dual-actor vs single-actor on the simulated bench (`experiment=paper`)
#
# Percent-format notebook (open with Jupyter + jupytext, or run as a script):
#
#     python notebooks/paper_ablation.py --runs checkpoints/paper-dual checkpoints/paper-single \
#         --labels dual-actor single-actor --warmup-eval warmup_eval.json --out docs/figures/paper_curves.png
#
# It reads each run's `learning_curve.json` (success per task against online interaction steps),
# `eval.json` (final evaluation) and, when present, `eval_commands.json` (final evaluation with a
# simulated operator speaking refinement commands), prints the comparison table in markdown and
# plots the learning curves side by side (one panel per task, minutes at 10 Hz on top).

# %%
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_run(run: Path) -> dict:
    curve = json.loads((run / "learning_curve.json").read_text())
    out = {"curve": curve["points"], "fps": curve.get("fps", 10.0)}
    for name in ("eval", "eval_commands"):
        f = run / f"{name}.json"
        out[name] = json.loads(f.read_text()) if f.exists() else None
    return out


def table(rows: list[tuple[str, dict | None]]) -> str:
    tasks = next(r for _, r in rows if r)["per_task"].keys()
    lines = ["| policy | " + " | ".join(tasks) + " | average |", "|---|" + "---:|" * (len(tasks) + 1)]
    for label, res in rows:
        if res is None:
            continue
        vals = [f"{res['per_task'][t]['success_rate']:.2f}" for t in tasks]
        lines.append(f"| {label} | " + " | ".join(vals) + f" | {res['average_success_rate']:.2f} |")
    return "\n".join(lines)


def plot(runs: dict[str, dict], out: Path) -> Path:
    tasks = list(next(iter(runs.values()))["curve"][0]["per_task"])
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 3.6), sharey=True)
    for label, r in runs.items():
        steps = [p["online_steps"] for p in r["curve"]]
        for ax, t in zip(axes, tasks):
            ax.plot(steps, [p["per_task"][t] for p in r["curve"]], marker="o", ms=3, label=label)
        axes[-1].plot(steps, [p["average_success_rate"] for p in r["curve"]], marker="o", ms=3, label=label)
    fps = next(iter(runs.values()))["fps"]
    for ax, t in zip(axes, [*tasks, "average"]):
        ax.set_title(t)
        ax.set_xlabel("online interaction steps")
        ax.grid(alpha=0.3)
        top = ax.secondary_xaxis("top", functions=(lambda s: s / fps / 60, lambda m: m * 60 * fps))
        top.set_xlabel(f"minutes at {fps:g} Hz")
    axes[0].set_ylabel("success rate")
    axes[0].set_ylim(-0.05, 1.05)
    axes[-1].legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


# %%
if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--runs", nargs="+", type=Path, required=True)
    p.add_argument("--labels", nargs="+", required=True)
    p.add_argument("--warmup-eval", type=Path, default=None, help="eval JSON of the warm-up policy (25 trials)")
    p.add_argument("--out", type=Path, default=Path("paper_curves.png"))
    a = p.parse_args()
    runs = {label: load_run(run) for label, run in zip(a.labels, a.runs)}
    rows = []
    if a.warmup_eval:
        rows.append(("warm-up only", json.loads(a.warmup_eval.read_text())))
    for label, r in runs.items():
        rows.append((f"{label}, after the online phase", r["eval"]))
        if r["eval_commands"] is not None:
            rows.append((f"{label}, with spoken commands", r["eval_commands"]))
    print(table(rows))
    print(plot(runs, a.out))
