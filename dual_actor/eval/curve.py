"""The learning curve of one run: evaluations against online interaction steps.

:class:`LearningCurve` keeps them in ``learning_curve.json``, logs them as TensorBoard scalars
(``eval/success_<task slug>``, ``eval/average_success``) and plots success per task against online steps with a
second x-axis in equivalent minutes at ``fps`` (10 Hz: the paper's Fig. 5 x-axis). matplotlib is imported only
when a curve is plotted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from data_tools.atomic import atomic_path, atomic_write_text
from dual_actor.runtime.sim import DEMO_FPS

CURVE_FILE = "learning_curve.json"
CURVE_PLOT = "learning_curve.png"


class LearningCurve:
    """Evaluations of one run against online interaction steps.

    Args:
        run_dir: the run folder; the curve lives in ``run_dir/learning_curve.json``, which is
            read back if it exists (a resumed run extends its curve).
        fps: control rate for the equivalent-minutes axis (10 Hz, the paper's).

    ``learning_curve.json``: ``{"fps": float, "points": [{"online_steps": int, "minutes": float,
    "per_task": {task: success_rate}, "average_success_rate": float, "intervention_rate": float, "trials": int,
    "split": "dev", "seeds": [trial seed, ...], "takeover_steps": int, "spoken_steps": int,
    "effort_steps": int}]}`` (a run's points are ``dev`` trials: :mod:`dual_actor.eval.protocol`; the effort is
    the online phase's so far, :class:`~dual_actor.data.interaction.OperatorEffort`)
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
        """Record ``result`` (an :func:`~dual_actor.eval.protocol.evaluate` dict) at ``online_steps``; rewrite
        the JSON."""
        online_steps = int(online_steps)
        point = {
            "online_steps": online_steps,
            "minutes": online_steps / self.fps / 60.0,
            "per_task": {t: float(r["success_rate"]) for t, r in result["per_task"].items()},
            "average_success_rate": float(result["average_success_rate"]),
            "intervention_rate": float(result["intervention_rate"]),
            "trials": min(int(r["trials"]) for r in result["per_task"].values()),
        }
        if "split" in result:
            point["split"], point["seeds"] = str(result["split"]), [int(s) for s in result["seeds"]]
        for key in ("takeover_steps", "spoken_steps", "effort_steps"):  # the operator's effort so far (cumulative)
            if key in result:
                point[key] = int(result[key])
        if "wall_seconds" in result:  # seconds since the online phase began (multi-robot runs: the paper's RQ5 axis)
            point["wall_seconds"] = float(result["wall_seconds"])
        self.points = sorted(
            [p for p in self.points if p["online_steps"] != online_steps] + [point], key=lambda p: p["online_steps"]
        )
        atomic_write_text(self.path, json.dumps({"fps": self.fps, "points": self.points}, indent=2) + "\n")
        return point

    @staticmethod
    def log_tensorboard(experiment: Any, online_steps: int, result: Mapping[str, Any], step: int | None = None,
                        prefix: str = "eval") -> None:
        """``experiment.add_scalar`` (a ``SummaryWriter``, e.g. ``trainer.logger.experiment``):
        ``<prefix>/success_<task slug>`` per task, ``<prefix>/average_success`` and ``<prefix>/online_steps``, at
        ``step`` (the learner update: one x-axis for the whole run; ``online_steps`` when None). The curve's points
        are ``eval/*``; the final evaluation (its own trial count) is ``eval_final/*``."""
        from dual_actor.utils import slug

        x = int(online_steps if step is None else step)
        for task, r in result["per_task"].items():
            experiment.add_scalar(f"{prefix}/success_{slug(task)}", float(r["success_rate"]), x)
        experiment.add_scalar(f"{prefix}/average_success", float(result["average_success_rate"]), x)
        experiment.add_scalar(f"{prefix}/online_steps", float(online_steps), x)

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
