"""``python -m dual_actor.fit``: Algorithm 1 on a robot or the built-in bench (Hydra entry point).

Flow: check the composed config (types, keys, choices: dual_actor/config/) -> build the learner and load +
validate the whole dataset (generating scripted-expert demos for a simulated env if asked and absent) -> only
then create ``<run_root>/<run_name>/`` -> warm-up (phase I) -> online (phase II) -> evaluation. Bad input (a
wrong type or unknown key, a missing / malformed file, an absent task, a shape mismatch) prints one ``error:``
line naming the key / file / shape and exits 2 with nothing written under the run root. What the phases use is
built in :mod:`dual_actor.training`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch

try:
    import lightning as L
except ImportError as _e:  # a robot computer's install: pip install "dual-actor[robot]" has no learner
    import sys

    print(f"error: python -m dual_actor.fit is the learner and needs its extra, pip install 'dual-actor[learner]' "
          f"(this install lacks {_e.name!r}); a robot computer runs its side with runtime=ray (docs/real-robot.md)",
          file=sys.stderr)
    sys.exit(2)
from omegaconf import DictConfig

from data_tools.atomic import atomic_write_text
from data_tools.hdf5_format import DatasetFormatError
from dual_actor.cli import fail, run_hydra_app
from dual_actor.config.fields import ConfigError
from dual_actor.data.datamodule import OfflineDataModule
from dual_actor.eval.protocol import WARMUP_EVAL
from dual_actor.module import DualActorModule
from dual_actor.training import build, warmup_cache
from dual_actor.training.build import make_trainer
from dual_actor.training.callbacks import EvalCallback, RNGCheckpoint, UpdateCheckpoint
from dual_actor.training.evaluation import evaluate_robot_b, evaluate_run, evaluate_with_commands, print_authority
from dual_actor.training.naming import multirun_job_name
from dual_actor.training.summary import code_version, existing_results, online_episodes
from dual_actor.watch import RunProgressBar, log_frames, log_run_summary


@dataclass
class Run:
    """What the phases share: the config, the learner, the data, the run folder and its records."""

    cfg: DictConfig
    module: DualActorModule
    dm: OfflineDataModule
    run_dir: Path
    resume_phase: str | None
    logger: Any = None
    curve: Any = None
    authority: Any = None
    interaction: Any = None
    t0: float = field(default_factory=time.perf_counter)
    warmup_s: float = 0.0
    online_s: float = 0.0
    after_fill: dict | None = None
    shared_warmup: Path | None = None

    @property
    def ckpt(self) -> Path:
        return self.run_dir / "last.ckpt"


def prepare(cfg: DictConfig) -> Run | None:
    """Check the config, build the learner and load + validate the whole dataset; only then create the run
    folder. None: a finished run asked to resume (it is left as it is)."""
    run_dir = build.check_run_config(cfg)
    build.dims_from_data(cfg)
    policy = build.policy_config(cfg)
    warm = int(cfg.algo.warmup_updates)
    resume_phase = (build.checkpoint_phase(run_dir / "last.ckpt", policy, warm, int(cfg.online.env_steps))
                    if cfg.resume else None)
    if resume_phase == "finished":
        print(f"[resume] {run_dir} has finished its budget (online.env_steps={cfg.online.env_steps}): nothing to do, "
              f"its results are left as they are ({', '.join(existing_results(run_dir))}); raise online.env_steps to "
              f"continue it", flush=True)
        return None
    shared = warmup_cache.shared_warmup_dir(cfg) if cfg.warmup.share else None
    if shared is not None and not cfg.resume:
        warmup_cache.claim_shared_warmup(shared)  # another run computing it now: wait for it instead of repeating it
    if shared is not None and not cfg.resume and (shared / warmup_cache.SHARED_DONE).exists():
        resume_phase = build.checkpoint_phase(shared / "last.ckpt", policy, warm)
    module = build.build_module(cfg)  # before any file is written: a bad backbone path writes nothing
    dm = build.build_datamodule(cfg, module, build.ensure_dataset(cfg))
    sizes = {t: len(dm.buffers[t]["demos"]) for t in cfg.env.tasks}
    print(f"Warm-up data {dm.path}: episodes {dm.episode_counts}, demo transitions {sizes}, "
          f"talk-and-tweak {len(dm.buffers.talk_tweak)}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        from omegaconf import OmegaConf

        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        if resume_phase is not None:  # the shared warm-up: its checkpoint, policy and warm-up point
            print(f"[warm-up] shared: {shared}", flush=True)
            warmup_cache.copy_shared_files(shared, run_dir)
    r = Run(cfg, module, dm, run_dir, resume_phase, shared_warmup=shared)
    r.logger = L.pytorch.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False)
    from dual_actor.eval import LearningCurve
    from dual_actor.probe import AuthorityLog

    r.curve = LearningCurve(run_dir, fps=float(cfg.env.fps))
    r.authority = AuthorityLog(run_dir, seed=int(cfg.seed))
    return r


def warmup(r: Run) -> None:
    """Phase I, Alg. 1 lines 3-10: Cal-QL critics, BC + weighted Q actor on the demos; ``policy_warmup/``."""
    cfg, module = r.cfg, r.module
    if r.resume_phase == "online":
        r.warmup_s = time.perf_counter() - r.t0
        return
    if r.resume_phase == "warmup_done":  # finished (here or in the shared folder): load it, no update
        warmup_cache.load_finished_warmup(module, r.ckpt)
        print(f"[warm-up] {module.num_updates} updates, from {r.ckpt}", flush=True)
    else:
        print(f"[warm-up] {cfg.algo.warmup_updates} updates", flush=True)
        trainer = make_trainer(cfg, r.logger, [UpdateCheckpoint(r.run_dir, int(cfg.trainer.checkpoint_every)),
                                               RNGCheckpoint(), RunProgressBar("warm-up", int(cfg.algo.warmup_updates))])
        trainer.fit(module, datamodule=r.dm, ckpt_path=str(r.ckpt) if cfg.resume else None)
    with module.deployed_weights():  # what a finished warm-up has not written yet (a kill may come in between)
        if not (r.run_dir / "policy_warmup" / "config.json").exists() or r.resume_phase != "warmup_done":
            module.policy.save_pretrained(r.run_dir / "policy_warmup")
        if not any(p["online_steps"] == 0 for p in r.authority.points):
            print_authority("warm-up", r.authority.add(module.policy, r.dm.buffers, 0, r.logger.experiment,
                                                       step=module.num_updates))
        if int(cfg.online.env_steps) > 0 and cfg.eval.warmup_point:
            warmup_evaluations(r)
    warmup_cache.publish_shared_warmup(cfg, r.run_dir, r.shared_warmup, module.num_updates)
    warmup_cache.release_shared_warmup(r.shared_warmup)
    r.warmup_s = time.perf_counter() - r.t0


def warmup_evaluations(r: Run) -> None:
    """The warm-up policy on the final evaluation's trials (``eval_warmup.json``: same split, count and seeds; the
    printed table compares the two) and as the learning curve's first (``dev``) point; each once (a resumed run
    keeps them)."""
    from dual_actor.eval import trial_seeds, write_eval

    cfg, module = r.cfg, r.module
    path = r.run_dir / WARMUP_EVAL
    have = json.loads(path.read_text()) if path.exists() else {}  # a resumed run's: kept if on the same trials
    same = (have.get("split") == cfg.eval.split
            and have.get("seeds") == trial_seeds(cfg.eval.split, int(cfg.eval.trials), int(cfg.eval.seed)))
    if int(cfg.eval.trials) > 0 and not same:
        res = evaluate_run(cfg, module.policy, None, int(cfg.eval.trials))
        write_eval(res, r.run_dir, WARMUP_EVAL)
        r.curve.log_tensorboard(r.logger.experiment, 0, res, step=module.num_updates, prefix="eval_warmup")
    if int(cfg.eval.curve_trials) > 0 and not any(p["online_steps"] == 0 for p in r.curve.points):
        res = evaluate_run(cfg, module.policy, None, int(cfg.eval.curve_trials), split="dev")
        r.curve.add(0, res)
        r.curve.log_tensorboard(r.logger.experiment, 0, res, step=module.num_updates)


def online(r: Run) -> None:
    """Phase II, Alg. 1 lines 11-35: robots act (operator, talk-and-tweak labels), episodes stream into the
    buffers, the learner samples B/(2N) demos + B/(2N) rollouts per task and the talk-and-tweak batch."""
    from torch.utils.data import DataLoader

    from dual_actor.data.datamodule import BufferSampler
    from dual_actor.data.interaction import InteractionCallback

    cfg, module = r.cfg, r.module
    if int(cfg.online.env_steps) <= 0:
        return
    module.set_phase("online")
    module.hparams.max_updates = None  # the online phase stops at its interaction budget
    r.interaction = interaction = build.build_interaction(cfg, module, r.dm.buffers, r.run_dir)
    sampler = BufferSampler(r.dm.buffers, int(cfg.algo.batch_size), "online", cfg.algo.refine_batch_size,
                            min_rollout=int(cfg.online.min_rollout), seed=int(cfg.seed) + 1,
                            before_batch=interaction.before_batch, pooled=cfg.algo.sampling == "pooled")
    callbacks = [InteractionCallback(interaction, int(cfg.online.weight_sync_every), int(cfg.trainer.log_every),
                                     sampler=sampler),
                 UpdateCheckpoint(r.run_dir, int(cfg.trainer.checkpoint_every)), RNGCheckpoint(),
                 RunProgressBar("online", interaction=interaction),
                 curve_cb := EvalCallback(cfg, interaction, r.curve, r.authority, r.dm.buffers)]
    print(f"[online] {cfg.online.env_steps} interaction steps with operator {cfg.operator.get('_target_', 'none')}",
          flush=True)
    trainer = make_trainer(cfg, r.logger, callbacks)
    t0 = curve_cb.t0 = time.perf_counter()  # wall clock of the online phase, the initial fill included
    try:  # the loader's own generator: creating its iterator must not draw from the process RNG
        trainer.fit(module, DataLoader(sampler, batch_size=None, generator=torch.Generator()),
                    ckpt_path=str(r.ckpt) if r.resume_phase == "online" else None)
        window = interaction.after_fill()  # the steady state: from the first learner batch to the budget
        if window is not None:
            r.after_fill = {**window, "updates": module.num_updates - int(cfg.algo.warmup_updates)}
    finally:
        interaction.close()
        r.online_s = time.perf_counter() - t0


def evaluate_and_save(r: Run) -> dict | None:
    """Save ``policy/`` (the deployed, EMA weights), the final probes and evaluation (eval.json, curve)."""
    cfg, module, inter = r.cfg, r.module, r.interaction
    result = None
    with module.deployed_weights():
        module.policy.save_pretrained(r.run_dir / "policy")
        if inter is not None:
            print_authority("final", r.authority.add(module.policy, r.dm.buffers, inter.env_steps,
                                                     r.logger.experiment, step=module.num_updates))
        if int(cfg.eval.trials) > 0 and build.env_factory(cfg) is not None:
            from dual_actor.eval import write_eval

            frames: dict = {}
            result = evaluate_run(cfg, module.policy, inter, int(cfg.eval.trials), frames)
            write_eval(result, r.run_dir)
            r.curve.log_tensorboard(r.logger.experiment, inter.env_steps if inter else 0, result,
                                    step=module.num_updates, prefix="eval_final")
            log_frames(r.logger, frames, module.num_updates)
            if cfg.eval.with_commands:
                evaluate_with_commands(cfg, module.policy, inter, r.run_dir)
            if cfg.eval.robot_b:
                evaluate_robot_b(cfg, module.policy, inter, r.run_dir)
        if inter is not None and int(cfg.eval.curve_trials) > 0 and build.env_factory(cfg) is not None:
            if not any(p["online_steps"] == inter.env_steps for p in r.curve.points):  # the curve ends where the run does
                res = evaluate_run(cfg, module.policy, inter, int(cfg.eval.curve_trials), split="dev")
                r.curve.add(inter.env_steps, {**res, "wall_seconds": r.online_s})
                r.curve.log_tensorboard(r.logger.experiment, inter.env_steps, res, step=module.num_updates)
            r.curve.plot()
    return result


def summarize(r: Run, result: dict | None) -> None:
    """``summary.json``, TensorBoard hparams + figure, the results table and where everything is."""
    from dual_actor.eval import format_table

    module, inter = r.module, r.interaction
    elapsed = time.perf_counter() - r.t0
    summary = {
        "phase": module.phase, "updates": module.num_updates, "seconds": round(elapsed, 2),
        "warmup_seconds": round(r.warmup_s, 2), "online_seconds": round(r.online_s, 2),
        "online_updates": max(0, module.num_updates - int(r.cfg.algo.warmup_updates)) if inter else 0,
        "online_env_steps": inter.env_steps if inter else 0, "runtime": str(r.cfg.runtime.name),
        "dataset": str(r.dm.path), "episodes": r.dm.episode_counts, "last_metrics": module.last_logs,
        "authority": r.authority.points[-1] if r.authority.points else None, "code": code_version(),
    }
    if r.after_fill is not None:
        summary["online_after_fill"] = r.after_fill
    if inter is not None:
        summary["online_episodes"] = online_episodes(inter, r.run_dir)
        summary["safety_events"] = dict(inter.safety)  # what the safety layer clipped, held or ended
        summary["operator_effort"] = inter.effort.totals()  # steps taken over, spoken, and their sum
        if hasattr(inter, "robot_summary"):
            summary["robots"] = inter.robot_summary()
    atomic_write_text(r.run_dir / "summary.json", json.dumps(summary, indent=2))
    png = r.run_dir / "learning_curve.png"
    log_run_summary(r.logger, build.flat_hparams(r.cfg), None if result is None else result["average_success_rate"],
                    png if png.exists() else None, module.num_updates)
    r.logger.finalize("success")
    if result is not None:
        path = r.run_dir / WARMUP_EVAL
        start = json.loads(path.read_text()) if inter is not None and path.exists() else None
        print(format_table(result, fps=float(r.cfg.env.fps), warmup=start), flush=True)
    print(f"{module.num_updates} learner updates, {summary['online_env_steps']} online steps in {elapsed:.1f} s. "
          f"Run: {r.run_dir} ({', '.join(existing_results(r.run_dir))}; TensorBoard: tensorboard --logdir "
          f"{r.run_dir / 'tb'})", flush=True)


def run(cfg: DictConfig) -> Path:
    """Algorithm 1: prepare -> warm-up (phase I) -> online (phase II) -> evaluation; returns the run folder."""
    L.seed_everything(int(cfg.seed), verbose=False)
    torch.set_float32_matmul_precision("high")
    build.language_operator(cfg)
    r = prepare(cfg)
    if r is None:
        return Path(cfg.run_root) / str(cfg.run_name)
    warmup(r)
    online(r)
    summarize(r, evaluate_and_save(r))
    return r.run_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    try:
        multirun_job_name(cfg)
        run(cfg)
    except (DatasetFormatError, ConfigError) as e:
        fail(e)


def main() -> None:
    """The CLI: ``python -m dual_actor.fit [group=option ...] [key=value ...]``."""
    run_hydra_app(_main)


if __name__ == "__main__":
    main()
