# %% [markdown]
# # Arms over seeds: dual-actor vs single-actor (or any ablation), mean +- spread
#
# Percent-format notebook (open with Jupyter + jupytext, or run as a script):
#
#     python notebooks/seed_comparison.py --arm dual checkpoints/paper-dual-s0 checkpoints/paper-dual-s1 ... \
#         --arm single checkpoints/paper-single-s0 ... --warmup checkpoints/wu-s0 checkpoints/wu-s1 ... \
#         --out docs/figures/seeds.png
#
# Per run it reads `eval.json`, `eval_commands.json` (when present), `learning_curve.json` and
# `authority.json`. It prints markdown tables (success per task and average as mean +- std with
# [min, max] over seeds; online steps to reach an 80% average on the learning curve; the final
# authority probes) and plots each arm's mean learning curve with its min-max band.

# %%
from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import mean, pstdev

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def load_run(run: Path) -> dict:
    """One run folder's results (missing files are None)."""
    curve = _load(run / "learning_curve.json")
    return {"name": run.name, "eval": _load(run / "eval.json"), "eval_commands": _load(run / "eval_commands.json"),
            "eval_B": _load(run / "eval_B.json"), "summary": _load(run / "summary.json"),
            "curve": curve["points"] if curve else [], "fps": (curve or {}).get("fps", 10.0),
            "authority": _load(run / "authority.json") or []}


def spread(values: list[float]) -> str:
    """``mean +- std [min, max]`` (population std over seeds), two decimals."""
    return f"{mean(values):.2f} +- {pstdev(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def success_table(arms: dict[str, list[dict]], key: str = "eval") -> str:
    """Rows: arms; columns: tasks and the average, each as :func:`spread` over the arm's runs."""
    first = next(r[key] for runs in arms.values() for r in runs if r[key])
    tasks = list(first["per_task"])
    lines = ["| arm (seeds) | " + " | ".join(tasks) + " | average |", "|---|" + "---|" * (len(tasks) + 1)]
    for arm, runs in arms.items():
        res = [r[key] for r in runs if r[key]]
        if not res:
            continue
        cells = [spread([x["per_task"][t]["success_rate"] for x in res]) for t in tasks]
        cells.append(spread([x["average_success_rate"] for x in res]))
        lines.append(f"| {arm} ({len(res)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def steps_to(curve: list[dict], threshold: float = 0.8) -> int | None:
    """Online steps of the first learning-curve point after the warm-up one (``online_steps`` > 0) whose average
    success is >= ``threshold`` (None: never). The warm-up point is left out: a warm-up already at the threshold
    would otherwise read as "0 steps" although the online phase first dips below it."""
    for p in curve:
        if p["online_steps"] > 0 and p["average_success_rate"] >= threshold:
            return int(p["online_steps"])
    return None


def steps_table(arms: dict[str, list[dict]], threshold: float = 0.8, fps: float = 10.0) -> str:
    lines = [f"| arm | online steps to {threshold:.0%} average, per seed | median (minutes at {fps:g} Hz) |",
             "|---|---|---|"]
    for arm, runs in arms.items():
        per = [steps_to(r["curve"], threshold) for r in runs]
        reached = sorted(s for s in per if s is not None)
        cells = ", ".join("never" if s is None else str(s) for s in per)
        if len(reached) * 2 > len(per):  # the median exists only if more than half reached it
            med = sorted(s if s is not None else float("inf") for s in per)[len(per) // 2]
            cells_med = f"{med} ({med / fps / 60:.1f} min)"
        else:
            cells_med = "not reached by most seeds"
        lines.append(f"| {arm} | {cells} | {cells_med} |")
    return "\n".join(lines)


def wall_minutes_to(run: dict, threshold: float = 0.8) -> float | None:
    """Online minutes with every robot at the curve's fps (steps / (fps x robots)) of the first curve point after
    the warm-up one whose average success is >= ``threshold`` (None: never)."""
    robots = len((run["summary"] or {}).get("robots") or {}) or 1
    s = steps_to(run["curve"], threshold)
    return None if s is None else s / (run["fps"] * robots) / 60.0


def wall_table(arms: dict[str, list[dict]], threshold: float = 0.8) -> str:
    lines = [f"| arm | online minutes to {threshold:.0%} average (robot A; robots at 10 Hz each), per seed | online steps / learner updates, per seed |",
             "|---|---|---|"]
    for arm, runs in arms.items():
        per = [wall_minutes_to(r, threshold) for r in runs]
        work = [f"{r['summary']['online_env_steps']} / {r['summary'].get('online_updates', '?')}" for r in runs if r["summary"]]
        lines.append(f"| {arm} | " + ", ".join("never" if m is None else f"{m:.1f}" for m in per) + " | "
                     + ", ".join(work) + " |")
    return "\n".join(lines)


def authority_table(arms: dict[str, list[dict]]) -> str:
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


def plot(arms: dict[str, list[dict]], out: Path, x: str = "steps") -> Path:
    """Each arm's mean curve with its min-max band, against online steps (``x="steps"``) or against the online
    phase's minutes with every robot at ``fps`` (``x="wall"``, multi-robot runs: steps / (fps x robots))."""
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
    ax.set_ylabel("average success (10 trials per task)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    if x == "wall":
        ax.set_xlabel(f"online minutes (robots at {fps:g} Hz each: steps / ({fps:g} x robots) / 60)")
    else:
        ax.set_xlabel("online interaction steps")
        top = ax.secondary_xaxis("top", functions=(lambda s: s / fps / 60, lambda m: m * 60 * fps))
        top.set_xlabel(f"minutes at {fps:g} Hz")
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# %%
if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--arm", nargs="+", action="append", required=True, metavar=("NAME", "RUN"),
                   help="an arm's name followed by its run folders (repeat per arm)")
    p.add_argument("--warmup", nargs="*", type=Path, default=[], help="warm-up-only run folders (their eval.json)")
    p.add_argument("--out", type=Path, default=Path("seed_comparison.png"))
    p.add_argument("--x", choices=["steps", "wall"], default="steps", help="curves against online steps or wall-clock minutes")
    a = p.parse_args()
    arms = {}
    if a.warmup:
        arms["warm-up only"] = [load_run(r) for r in a.warmup]
    for name, *runs in a.arm:
        arms[name] = [load_run(Path(r)) for r in runs]
    print(success_table(arms))
    with_cmd = {k: v for k, v in arms.items() if any(r["eval_commands"] for r in v)}
    if with_cmd:
        print("\nWith spoken commands:\n")
        print(success_table(with_cmd, "eval_commands"))
    with_b = {k: v for k, v in arms.items() if any(r["eval_B"] for r in v)}
    if with_b:
        print("\nOn robot B (env.robot_shift):\n")
        print(success_table(with_b, "eval_B"))
    online = {k: v for k, v in arms.items() if k != "warm-up only"}
    if a.x == "wall":
        print()
        print(wall_table(online))
    for threshold in (0.8, 0.9):
        print()
        print(steps_table(online, threshold))
    print()
    print(authority_table(online))
    print(plot(online, a.out, a.x))
