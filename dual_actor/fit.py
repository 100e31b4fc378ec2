"""``python -m dual_actor.fit``: warm-up of the dual-actor policy (Hydra entry point).

Flow: resolve the dataset (generate scripted-expert demos for a simulated env if asked and
absent) -> build the policy and load + validate the whole dataset -> only then create
``<run_root>/<run_name>/`` -> train -> save ``last.ckpt`` (atomically) and ``policy/``.
Bad input (missing/malformed file, absent task, shape mismatch) prints one ``error:`` line
naming the file/key/shape and exits 2 with nothing written under the run root.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from data_tools.hdf5_format import DatasetFormatError
from dual_actor.data.datamodule import OfflineDataModule
from dual_actor.data.hdf5 import DataSpec
from dual_actor.module import DualActorModule

log = logging.getLogger("dual_actor.fit")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key."""


class UpdateCheckpoint(L.Callback):
    """Writes ``last.ckpt`` every ``every`` learner updates and at the end, atomically
    (temporary file + rename): an interrupted run always leaves a complete checkpoint."""

    def __init__(self, dirpath: Path, every: int):
        self.dirpath = Path(dirpath)
        self.every = max(1, int(every))

    def save(self, trainer: L.Trainer) -> None:
        tmp = self.dirpath / ".last.ckpt.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.dirpath / "last.ckpt")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.num_updates % self.every == 0:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer)


def module_kwargs(cfg: DictConfig) -> dict:
    """DualActorModule arguments from the config (explicit values, no config objects)."""
    a, env = cfg.algo, cfg.env
    policy = dict(
        tasks=list(env.tasks), obs_dim=int(env.obs_dim), proprio_dim=int(env.proprio_dim),
        action_dim=int(env.action_dim), backbone=OmegaConf.to_container(cfg.backbone, resolve=True),
        actor_hidden=list(a.actor_hidden), refine_hidden=list(a.refine_hidden),
        scalings=OmegaConf.to_container(a.scalings, resolve=True), refine_mean_bound=float(a.refine_mean_bound),
        refine_act=str(a.refine_act),
    )
    return dict(
        policy=policy, critic_hidden=list(a.critic_hidden), critic_ensemble=int(a.critic_ensemble),
        gamma=float(a.gamma), tau=float(a.tau), actor_lr=float(a.actor_lr), critic_lr=float(a.critic_lr),
        refine_lr=float(a.refine_lr), lambdas={k: list(v) for k, v in a.lambdas.items()}, eta=list(a.eta),
        bc_form=str(a.bc_form), calql_alpha=float(a.calql_alpha), calql_temperature=float(a.calql_temperature),
        calql_num_actions=int(a.calql_num_actions), task_weighting=bool(a.task_weighting), eps_c=float(a.eps_c),
        eps_min=float(a.eps_min), eps_max=float(a.eps_max), actor_q_reduce=str(a.actor_q_reduce),
        grad_clip=None if a.grad_clip is None else float(a.grad_clip), phase="warmup",
        max_updates=int(a.warmup_updates), log_every=int(cfg.trainer.log_every),
        refine_enabled=bool(a.refine_enabled),
    )


def ensure_dataset(cfg: DictConfig) -> Path:
    """The warm-up dataset path; generates scripted-expert demos for the sim bench if absent."""
    path = Path(cfg.data.path)
    if path.exists():
        return path
    if not cfg.data.generate_if_missing or cfg.env.get("demos") is None:
        raise DatasetFormatError(f"{path}: no such file (data.path)")
    if cfg.env.name != "metaworld_bench":
        raise ConfigError(f"data.generate_if_missing: no demo generator for env {cfg.env.name!r}")
    from dual_actor.runtime.sim import generate_demos

    d = cfg.env.demos
    print(f"Generating {d.episodes_per_task} scripted-expert demos per task into {path} ...", flush=True)
    t0 = time.perf_counter()
    generate_demos(
        path, tasks=list(cfg.env.tasks), episodes_per_task=int(d.episodes_per_task), seed=int(cfg.seed),
        noise=float(d.noise), max_episode_steps=int(d.max_episode_steps), progress=bool(cfg.trainer.progress_bar),
    )
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def run(cfg: DictConfig) -> Path:
    """Warm-up run; returns the run directory."""
    L.seed_everything(int(cfg.seed), verbose=False)
    torch.set_float32_matmul_precision("high")
    run_dir = Path(cfg.run_root) / str(cfg.run_name)
    ckpt = run_dir / "last.ckpt"
    if cfg.resume:
        if not ckpt.exists():
            raise ConfigError(f"resume=true but {ckpt} does not exist (set run_name to an existing run)")
    elif run_dir.exists():
        raise ConfigError(f"{run_dir} exists: pick another run_name, or resume=true to continue it")
    if int(cfg.algo.batch_size) % len(cfg.env.tasks):
        raise ConfigError(f"algo.batch_size={cfg.algo.batch_size} must be divisible by {len(cfg.env.tasks)} tasks")

    data_path = ensure_dataset(cfg)
    kwargs = module_kwargs(cfg)
    module = DualActorModule(**kwargs)
    env = cfg.env
    spec = DataSpec(list(env.tasks), env.obs_key, int(env.obs_dim), env.proprio_key, int(env.proprio_dim),
                    int(env.action_dim))
    dm = OfflineDataModule(
        data_path, spec, module.policy.embed, module.policy.command_ids, batch_size=int(cfg.algo.batch_size),
        gamma=float(cfg.algo.gamma), refine_batch_size=cfg.algo.refine_batch_size, seed=int(cfg.seed),
        split=cfg.data.split,
    )
    dm.setup("fit")  # validates the whole dataset before anything is written
    sizes = {t: len(dm.buffers[t]["demos"]) for t in env.tasks}
    print(f"Warm-up data {data_path}: episodes {dm.episode_counts}, demo transitions {sizes}, "
          f"talk-and-tweak {len(dm.buffers.talk_tweak)}", flush=True)

    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    logger = L.pytorch.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tb", version="")
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, precision=cfg.trainer.precision,
        max_epochs=-1, max_steps=-1, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
        callbacks=[UpdateCheckpoint(run_dir, int(cfg.trainer.checkpoint_every))],
        enable_progress_bar=bool(cfg.trainer.progress_bar), enable_model_summary=False, num_sanity_val_steps=0,
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if cfg.resume else None)
    elapsed = time.perf_counter() - t0
    module.policy.save_pretrained(run_dir / "policy")
    summary = {
        "phase": module.phase, "updates": module.num_updates, "seconds": round(elapsed, 2),
        "dataset": str(data_path), "episodes": dm.episode_counts,
        "last_metrics": module.last_logs,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"Warm-up: {module.num_updates} updates in {elapsed:.1f} s. Run: {run_dir} "
          f"(TensorBoard: tensorboard --logdir {run_dir / 'tb'}; policy: {run_dir / 'policy'})", flush=True)
    return run_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (DatasetFormatError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
