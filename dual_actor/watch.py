"""Watching a run: a progress bar with totals and the main losses, a quiet console, TensorBoard extras.

* :class:`RunProgressBar`: ``warm-up 1234/3000 updates`` or ``online 910/6000 env steps`` with the BC /
  critic losses, Q(s, pi) and (online) the update count and the operator's intervention rate as postfix.
* :func:`log_run_summary`: the hyper-parameters with the final ``eval/average_success`` (TensorBoard's
  HPARAMS tab) and the learning-curve figure as an image; :func:`log_frames`: evaluation rollout frames.

TensorBoard's x-axis is the learner update for every scalar of a run (``loss/*``, ``eval/*``,
``authority/*``); ``rollout/env_steps`` and ``eval/online_steps`` give the interaction steps at each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from lightning.pytorch.callbacks import TQDMProgressBar


@runtime_checkable
class OnlineProgress(Protocol):
    """What the online bar reads from the learner's side of the online phase, and all it reads: both runtimes'
    interactions provide it (``dual_actor.data.interaction.Interaction``, in one process, and
    ``dual_actor.data.ray_interaction.RayInteraction``, robots on Ray)."""

    env_steps: int  # interaction steps collected so far (a resumed run counts its checkpoint's)
    max_env_steps: int | None  # the online budget (None: unbounded)

    def intervention_rate(self) -> float:
        """Operator take-over steps / interaction steps so far (0.0 before the first step)."""
        ...


class RunProgressBar(TQDMProgressBar):
    """Lightning's bar with a total and our numbers (the streaming dataset has no length, so Lightning's
    own bar shows ``16/?``). Warm-up counts learner updates up to ``total_updates``; online (``interaction``
    given) counts interaction steps up to the budget, with the updates in the postfix. Of the interaction it
    reads only :class:`OnlineProgress`."""

    def __init__(self, phase: str, total_updates: int | None = None, interaction: OnlineProgress | None = None,
                 refresh_rate: int = 10):
        super().__init__(refresh_rate=refresh_rate)
        self.phase, self.total_updates, self.interaction = phase, total_updates, interaction
        self._start = 0

    def _count(self, pl_module) -> int:
        return int(self.interaction.env_steps) if self.interaction is not None else int(pl_module.num_updates)

    def _total(self) -> int | None:
        if self.interaction is not None:
            return self.interaction.max_env_steps
        return self.total_updates

    def init_train_tqdm(self):
        import sys

        from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

        return Tqdm(desc=self.phase, total=self._total(), unit="env steps" if self.interaction is not None else "updates",
                    position=2 * self.process_position, disable=self.is_disabled, leave=True, dynamic_ncols=True,
                    file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._start = self._count(pl_module)

    def on_train_epoch_start(self, trainer, *args) -> None:
        bar = self.train_progress_bar
        total = self._total()
        bar.reset(total=total)  # absolute: a resumed run starts at its checkpoint's count
        bar.initial = bar.n = self._start
        bar.set_description(self.phase)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable or pl_module.num_updates % self.refresh_rate:
            return
        bar.n = self._count(pl_module)
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = self._count(pl_module)
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        super().on_train_epoch_end(trainer, pl_module)

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        logs: Mapping[str, float] = getattr(pl_module, "last_logs", {}) or {}
        out: dict[str, Any] = {}
        if self.interaction is not None:
            out["updates"] = int(pl_module.num_updates)
        if "loss/actor_bc" in logs:
            out["bc"] = f"{logs['loss/actor_bc']:.3f}"
        critic = [v for k, v in logs.items() if k.startswith("loss/critic_")]
        if critic:
            out["critic"] = f"{sum(critic) / len(critic):.3f}"
        qpi = [v for k, v in logs.items() if k.startswith("q_pi/")]
        if qpi:
            out["Q(s,pi)"] = f"{sum(qpi) / len(qpi):.2f}"
        if self.interaction is not None and self.interaction.env_steps:
            out["intv"] = f"{self.interaction.intervention_rate():.2f}"
        return out


def log_run_summary(logger, hparams: Mapping[str, Any], average_success: float | None, curve_png: Path | None,
                    step: int) -> None:
    """hparams + the final average success (TensorBoard HPARAMS), and the learning-curve PNG as an image."""
    if logger is None:
        return
    metrics = {"eval/final_average_success": float(average_success)} if average_success is not None else {}
    logger.log_hyperparams(dict(hparams), metrics=metrics or None)
    if curve_png is not None and Path(curve_png).exists():
        import numpy as np
        from PIL import Image

        img = np.asarray(Image.open(curve_png).convert("RGB"))
        logger.experiment.add_image("eval/learning_curve", img, int(step), dataformats="HWC")


def log_frames(logger, frames: Mapping[str, list], step: int) -> None:
    """A few evaluation rollout frames per task (``eval/frames_<task>``), when the policy reads cameras."""
    if logger is None or not frames:
        return
    import numpy as np

    from dual_actor.utils import slug

    for task, imgs in frames.items():
        if imgs:
            logger.experiment.add_images(f"eval/frames_{slug(task)}", np.stack(imgs), int(step), dataformats="NHWC")
