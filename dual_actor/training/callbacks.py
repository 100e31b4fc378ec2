"""The Lightning callbacks of a run: the atomic ``last.ckpt``, the process RNG state in it, and the learning
curve's points during the online phase."""

from __future__ import annotations

import random
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from data_tools.atomic import atomic_path
from dual_actor.training.evaluation import evaluate_run


class UpdateCheckpoint(L.Callback):
    """Writes ``last.ckpt`` every ``every`` learner updates and at the end, atomically
    (temporary file + rename): an interrupted run always leaves a complete checkpoint."""

    def __init__(self, dirpath: Path, every: int):
        self.dirpath = Path(dirpath)
        self.every = max(1, int(every))

    def save(self, trainer: L.Trainer) -> None:
        with atomic_path(self.dirpath / "last.ckpt", suffix=".ckpt") as tmp:
            trainer.save_checkpoint(tmp, weights_only=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.num_updates % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)


class RNGCheckpoint(L.Callback):
    """The process-wide random states (torch, numpy, python) in ``last.ckpt``, restored on resume: together
    with the samplers' generators and each robot's env / operator state, a resumed run continues every
    random sequence where the checkpoint left it instead of replaying it from the seed."""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {"torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)},  # tensors: loadable with weights_only
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def load_state_dict(self, state_dict: dict) -> None:
        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate(state_dict["python"])
        if state_dict.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class EvalCallback(L.Callback):
    """A learning-curve point (and the authority probes) every ``eval.curve_every_env_steps`` online steps."""

    def __init__(self, cfg: DictConfig, interaction, curve, authority=None, buffers=None):
        self.cfg, self.interaction, self.curve = cfg, interaction, curve
        self.every = max(1, int(cfg.eval.curve_every_env_steps))
        self.authority, self.buffers = authority, buffers
        self.next_at = self.every
        self.t0 = time.perf_counter()  # reset by the online phase when the robots start (before the first batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.interaction.env_steps < self.next_at or int(self.cfg.eval.curve_trials) <= 0:
            return
        self.next_at = (self.interaction.env_steps // self.every + 1) * self.every
        experiment = pl_module.logger.experiment if pl_module.logger is not None else None
        with pl_module.deployed_weights():
            res = evaluate_run(self.cfg, pl_module.policy, self.interaction, int(self.cfg.eval.curve_trials),
                               split="dev")
            res["wall_seconds"] = time.perf_counter() - self.t0
            if self.authority is not None:
                self.authority.add(pl_module.policy, self.buffers, self.interaction.env_steps, experiment,
                                   step=pl_module.num_updates)
        self.curve.add(self.interaction.env_steps, res)
        if experiment is not None:
            self.curve.log_tensorboard(experiment, self.interaction.env_steps, res, step=pl_module.num_updates)
