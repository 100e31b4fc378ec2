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

from data_tools.atomic import atomic_write_text
from data_tools.hdf5_format import DatasetFormatError
from dual_actor.data.datamodule import OfflineDataModule
from dual_actor.data.hdf5 import DataSpec
from dual_actor.module import DualActorModule
from dual_actor.watch import RunProgressBar, log_run_summary, quiet_libraries

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
        trainer.save_checkpoint(tmp, weights_only=False)
        os.replace(tmp, self.dirpath / "last.ckpt")

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
        import random

        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {"torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)},  # tensors: loadable with weights_only
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def load_state_dict(self, state_dict: dict) -> None:
        import random

        import numpy as np

        torch.set_rng_state(state_dict["torch"])
        n = state_dict["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        random.setstate(state_dict["python"])
        if state_dict.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def env_cameras(cfg: DictConfig) -> list[str]:
    """The cameras the environment renders / the dataset holds (``env.cameras``; none by default)."""
    return [str(c) for c in (cfg.env.get("cameras") or [])]


def _group(cfg: DictConfig, name: str) -> dict | None:
    node = cfg.get(name)
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def check_encoder_groups(cfg: DictConfig) -> None:
    """A selected backbone / text_encoder / image_encoder with a required value left unset -> ConfigError."""
    for group in ("backbone", "text_encoder", "image_encoder"):
        node = cfg.get(group)
        if node is None:
            continue
        missing = sorted(k.removeprefix(f"{group}.") for k in OmegaConf.missing_keys(node))
        if missing:
            kind = node.get("name", node.get("kind", "?"))
            raise ConfigError(f"{group}={kind} needs " + ", ".join(f"{group}.{k}=..." for k in missing)
                              + " (see docs/encoders.md)")


def module_kwargs(cfg: DictConfig) -> dict:
    """DualActorModule arguments from the config (explicit values, no config objects)."""
    a, env = cfg.algo, cfg.env
    policy = dict(
        tasks=list(env.tasks), obs_dim=int(env.obs_dim), proprio_dim=int(env.proprio_dim),
        action_dim=int(env.action_dim), backbone=OmegaConf.to_container(cfg.backbone, resolve=True),
        actor_hidden=list(a.actor_hidden), refine_hidden=list(a.refine_hidden),
        scalings=OmegaConf.to_container(a.scalings, resolve=True), refine_mean_bound=float(a.refine_mean_bound),
        primary_head=str(a.primary_head), temperature=float(a.temperature), ode_steps=int(a.ode_steps),
        text_encoder=_group(cfg, "text_encoder"),
        image_encoder=_group(cfg, "image_encoder"), cameras=env_cameras(cfg),
        image_size=None if env.get("image_size") is None else int(env.image_size),
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
        q_bounds=None if a.get("q_bounds") is None else [float(v) for v in a.q_bounds],
        actor_ema=None if a.get("actor_ema") is None else float(a.actor_ema),
        distill_weight=float(a.distill_weight), refine_phases=list(a.refine_phases),
    )


def build_module(kwargs: dict) -> DualActorModule:
    """The module (policy, critics); a backbone / encoder that cannot be built -> ConfigError naming why."""
    from hydra.errors import InstantiationException

    policy = kwargs["policy"]
    what = (f"backbone={policy['backbone'].get('name', 'state')}, "
            f"text_encoder={(policy.get('text_encoder') or {}).get('kind', 'learned')}, "
            f"image_encoder={(policy.get('image_encoder') or {}).get('kind', 'state')}")
    try:
        return DualActorModule(**kwargs)
    except KeyError as e:
        raise ConfigError(f"building the policy ({what}): {e.args[0] if e.args else e}") from e
    except (OSError, ValueError, TypeError, ImportError, InstantiationException) as e:
        raise ConfigError(f"building the policy ({what}): {e}") from e


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
        cameras=env_cameras(cfg), image_size=int(cfg.env.get("image_size") or 128),
        render_effects=bool(cfg.env.get("render_effects", False)),
    )
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def _checkpoint_phase(ckpt: Path, policy_kwargs: dict) -> str:
    """The phase ``ckpt`` was saved in; a checkpoint of another task set or other dims -> ConfigError (at
    start-up, before anything is written, instead of a shape error mid-run)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved = (state.get("hyper_parameters") or {}).get("policy") or {}
    for key in ("tasks", "obs_dim", "proprio_dim", "action_dim"):
        if key in saved and saved[key] != policy_kwargs[key]:
            where = "env.tasks" if key == "tasks" else f"env.{key}"
            raise ConfigError(f"{ckpt} was trained with {key}={saved[key]!r}, but {where}={policy_kwargs[key]!r}; "
                              f"resume with the run's own config, or start a new run_name")
    return state.get("dual_actor", {}).get("phase", "warmup")


def _trainer(cfg: DictConfig, logger, callbacks) -> L.Trainer:
    if not cfg.trainer.progress_bar:
        callbacks = [c for c in callbacks if not isinstance(c, RunProgressBar)]
    return L.Trainer(
        accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, precision=cfg.trainer.precision,
        max_epochs=-1, max_steps=-1, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
        callbacks=callbacks, enable_progress_bar=bool(cfg.trainer.progress_bar), enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def build_interaction(cfg: DictConfig, module: DualActorModule, buffers, run_dir: Path):
    """One control loop per task on the simulated bench, each with its own operator."""
    from hydra.utils import instantiate

    from data_tools.teleop_log import SessionWriter
    from dual_actor.data.interaction import Interaction
    from dual_actor.runtime.loop import ControlLoop
    from dual_actor.runtime.sim import MetaworldTaskEnv
    from dual_actor.runtime.transport import InProcessTransport

    if cfg.env.name != "metaworld_bench":
        raise ConfigError(f"online phase: no simulated robot for env {cfg.env.name!r}; drive a real robot "
                          f"through dual_actor.runtime.loop.ControlLoop")
    on = cfg.online
    transport = InProcessTransport()
    actor_policy = module.policy.acting_copy()  # the acting side's own copy (sharing the frozen backbone)
    cameras = env_cameras(cfg)
    session = None
    if on.log_teleop:
        session = SessionWriter(run_dir / "teleop" / f"online-{int(time.time())}", fps=cfg.env.fps,
                                robot="metaworld-sawyer", action_dim=int(cfg.env.action_dim),
                                translation_scale_m=float(on.translation_scale_m), cameras=cameras)
    loops = []
    shared_operator = None
    per_task_operator = False
    if cfg.operator.get("_target_"):
        import inspect

        from hydra.utils import get_class

        # a simulated human is one per task; a physical device (SpaceMouse, keyboard) is one, shared
        per_task_operator = "task" in inspect.signature(get_class(cfg.operator._target_)).parameters
        if not per_task_operator:
            shared_operator = instantiate(cfg.operator)
    for i, task in enumerate(cfg.env.tasks):
        env = MetaworldTaskEnv(task, seed=int(on.seed) + i, max_episode_steps=int(on.max_episode_steps),
                               cameras=cameras, image_size=int(cfg.env.get("image_size") or 128),
                               render_effects=bool(cfg.env.get("render_effects", False)))
        operator = instantiate(cfg.operator, task=task) if per_task_operator else shared_operator
        loops.append(ControlLoop(
            env, task, actor_policy, operator, transport, proprio_slice=slice(0, int(cfg.env.proprio_dim)),
            period_s=None if on.period_s is None else float(on.period_s),
            window=int(on.window), sigma=float(on.sigma), translation_scale_m=float(on.translation_scale_m),
            gamma=float(cfg.algo.gamma), log_episode=session.episode if session is not None else None,
            actor_id=f"sim-{i}",
        ))
    return Interaction(loops, transport, buffers, env_steps_per_update=1.0 / float(on.updates_per_env_step),
                       min_rollout=int(on.min_rollout), max_env_steps=int(on.env_steps))


class EvalCallback(L.Callback):
    """A learning-curve point (and the authority probes) every ``every`` online interaction steps."""

    def __init__(self, cfg: DictConfig, interaction, curve, every: int, authority=None, buffers=None):
        self.cfg, self.interaction, self.curve, self.every = cfg, interaction, curve, max(1, int(every))
        self.authority, self.buffers = authority, buffers
        self.next_at = self.every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.interaction.env_steps >= self.next_at:
            self.next_at = (self.interaction.env_steps // self.every + 1) * self.every
            with pl_module.deployed_weights():
                res = _evaluate(self.cfg, pl_module.policy, self.interaction, int(self.cfg.eval.curve_trials))
                if self.authority is not None:
                    self.authority.add(pl_module.policy, self.buffers, self.interaction.env_steps,
                                       pl_module.logger.experiment if pl_module.logger is not None else None,
                                       step=pl_module.num_updates)
            self.curve.add(self.interaction.env_steps, res)
            if pl_module.logger is not None:
                self.curve.log_tensorboard(pl_module.logger.experiment, self.interaction.env_steps, res,
                                           step=pl_module.num_updates)


def _intervention_rate(interaction) -> float:
    if interaction is None or interaction.env_steps == 0:
        return 0.0
    return sum(l.stats.interventions for l in interaction.loops) / max(
        sum(l.stats.env_steps for l in interaction.loops), 1)


def _evaluate(cfg: DictConfig, policy, interaction, trials: int) -> dict:
    from dual_actor.eval import evaluate

    return evaluate(policy, list(cfg.env.tasks), trials=trials, max_episode_steps=int(cfg.eval.max_episode_steps),
                    seed=int(cfg.eval.seed), online_steps=interaction.env_steps if interaction else 0,
                    intervention_rate=_intervention_rate(interaction), progress=bool(cfg.trainer.progress_bar))


def _evaluate_with_commands(cfg: DictConfig, policy, interaction, run_dir: Path) -> dict:
    """The same trials with a simulated operator speaking refinement commands (never taking over):
    the paper's evaluation with talk-and-tweak at test time. Written as ``eval_commands.json``."""
    from dual_actor.eval import evaluate, format_table
    from dual_actor.runtime.operators import SimulatedOperator

    speaker = SimulatedOperator(list(cfg.env.tasks)[0], speak_commands=True,
                                translation_scale_m=float(cfg.online.translation_scale_m), seed=int(cfg.eval.seed))
    res = evaluate(policy, list(cfg.env.tasks), trials=int(cfg.eval.trials),
                   max_episode_steps=int(cfg.eval.max_episode_steps), seed=int(cfg.eval.seed),
                   online_steps=interaction.env_steps if interaction else 0,
                   intervention_rate=_intervention_rate(interaction), speaker=speaker,
                   progress=bool(cfg.trainer.progress_bar))
    atomic_write_text(run_dir / "eval_commands.json", json.dumps(res, indent=2))
    print("[eval] with spoken refinement commands (simulated operator):", flush=True)
    print(format_table(res, fps=float(cfg.env.fps)), flush=True)
    return res


def _flat_hparams(cfg: DictConfig) -> dict:
    """The resolved config as flat ``group/key`` scalars and strings (TensorBoard's HPARAMS tab)."""
    flat = {}

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + "/")
            else:
                flat[key] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def _print_authority(when: str, res: dict) -> None:
    lat = res["latent_authority"]
    cmd = res["command_authority"]
    pos = min((r["positive_fraction"] for r in cmd.values()), default=float("nan"))
    print(f"[authority] {when}: latent x/y/z {lat['x']:.3f} / {lat['y']:.3f} / {lat['z']:.3f} action units; "
          f"single-axis commands move the commanded way on >= {pos:.0%} of held states", flush=True)


def run(cfg: DictConfig) -> Path:
    """Warm-up -> online (simulated operator) -> evaluation; returns the run directory."""
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
    online_steps = int(cfg.online.env_steps)
    if online_steps > 0 and int(cfg.algo.batch_size) % (2 * len(cfg.env.tasks)):
        raise ConfigError(f"algo.batch_size={cfg.algo.batch_size} must be divisible by 2 x tasks for the online phase")

    check_encoder_groups(cfg)
    kwargs = module_kwargs(cfg)
    resume_phase = _checkpoint_phase(ckpt, kwargs["policy"]) if cfg.resume else None
    module = build_module(kwargs)  # before any file is written: a bad backbone path writes nothing
    data_path = ensure_dataset(cfg)
    env = cfg.env
    spec = DataSpec(list(env.tasks), env.obs_key, int(env.obs_dim), env.proprio_key, int(env.proprio_dim),
                    int(env.action_dim), cameras=env_cameras(cfg),
                    image_size=None if env.get("image_size") is None else int(env.image_size),
                    store_images=module.policy.uses_images, as_mapping=module.policy.wants_mapping)
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
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    logger = L.pytorch.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tb", version="", default_hp_metric=False)
    every = int(cfg.trainer.checkpoint_every)
    t0 = time.perf_counter()

    # ---- phase I: offline warm-up (Alg. 1 lines 3-10)
    if resume_phase != "online":
        print(f"[warm-up] {cfg.algo.warmup_updates} updates", flush=True)
        trainer = _trainer(cfg, logger, [UpdateCheckpoint(run_dir, every), RNGCheckpoint(),
                                         RunProgressBar("warm-up", int(cfg.algo.warmup_updates))])
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if cfg.resume else None)
        with module.deployed_weights():
            module.policy.save_pretrained(run_dir / "policy_warmup")
    warmup_s = time.perf_counter() - t0

    # ---- phase II: online interaction (Alg. 1 lines 11-35)
    from dual_actor.eval import LearningCurve, format_table, write_eval
    from dual_actor.probe import AuthorityLog

    curve = LearningCurve(run_dir, fps=float(cfg.env.fps))
    authority = AuthorityLog(run_dir, seed=int(cfg.seed))
    if resume_phase != "online":
        with module.deployed_weights():
            _print_authority("warm-up", authority.add(module.policy, dm.buffers, 0, logger.experiment,
                                                      step=module.num_updates))
    interaction = None
    if online_steps > 0:
        from torch.utils.data import DataLoader

        from dual_actor.data.datamodule import BufferSampler
        from dual_actor.data.interaction import InteractionCallback

        if resume_phase != "online" and cfg.eval.warmup_point and int(cfg.eval.trials) > 0:
            with module.deployed_weights():
                res = _evaluate(cfg, module.policy, None, int(cfg.eval.curve_trials))
            curve.add(0, res)
            curve.log_tensorboard(logger.experiment, 0, res, step=module.num_updates)
        module.set_phase("online")
        module.hparams.max_updates = None  # the online phase stops at its interaction budget
        interaction = build_interaction(cfg, module, dm.buffers, run_dir)
        sampler = BufferSampler(dm.buffers, int(cfg.algo.batch_size), "online", cfg.algo.refine_batch_size,
                                min_rollout=int(cfg.online.min_rollout), seed=int(cfg.seed) + 1,
                                before_batch=interaction.before_batch)
        callbacks = [InteractionCallback(interaction, int(cfg.online.weight_sync_every), int(cfg.trainer.log_every),
                                         sampler=sampler),
                     UpdateCheckpoint(run_dir, every), RNGCheckpoint(),
                     RunProgressBar("online", interaction=interaction),
                     EvalCallback(cfg, interaction, curve, int(cfg.eval.curve_every_env_steps), authority, dm.buffers)]
        print(f"[online] {online_steps} interaction steps with operator "
              f"{cfg.operator.get('_target_', 'none')}", flush=True)
        trainer = _trainer(cfg, logger, callbacks)
        try:
            # the loader's own generator: creating its iterator must not draw from the process RNG
            trainer.fit(module, DataLoader(sampler, batch_size=None, generator=torch.Generator()),
                        ckpt_path=str(ckpt) if resume_phase == "online" else None)
        finally:
            interaction.close()
    elapsed = time.perf_counter() - t0

    # ---- evaluation (the simulated bench; a real robot is evaluated through its own loop)
    result = None
    with module.deployed_weights():  # the EMA primary actor (when on) is what is saved and evaluated
        module.policy.save_pretrained(run_dir / "policy")
        if interaction is not None:
            _print_authority("final", authority.add(module.policy, dm.buffers, interaction.env_steps, logger.experiment,
                                                    step=module.num_updates))
        if int(cfg.eval.trials) > 0 and cfg.env.name == "metaworld_bench":
            result = _evaluate(cfg, module.policy, interaction, int(cfg.eval.trials))
            write_eval(result, run_dir)
            if cfg.eval.get("with_commands"):
                _evaluate_with_commands(cfg, module.policy, interaction, run_dir)
            if interaction is not None:
                curve.add(interaction.env_steps, result)
                curve.log_tensorboard(logger.experiment, interaction.env_steps, result, step=module.num_updates)
                curve.plot()
    summary = {
        "phase": module.phase, "updates": module.num_updates, "seconds": round(elapsed, 2),
        "warmup_seconds": round(warmup_s, 2), "online_env_steps": interaction.env_steps if interaction else 0,
        "dataset": str(data_path), "episodes": dm.episode_counts, "last_metrics": module.last_logs,
        "authority": authority.points[-1] if authority.points else None,
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
    png = run_dir / "learning_curve.png"
    log_run_summary(logger, _flat_hparams(cfg), None if result is None else result["average_success_rate"],
                    png if png.exists() else None, module.num_updates)
    logger.finalize("success")
    if result is not None:
        print(format_table(result, fps=float(cfg.env.fps)), flush=True)
    print(f"{module.num_updates} learner updates, {summary['online_env_steps']} online steps in {elapsed:.1f} s. "
          f"Run: {run_dir} (eval.json, learning_curve.png, TensorBoard: tensorboard --logdir {run_dir / 'tb'})",
          flush=True)
    return run_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    try:
        run(cfg)
    except (DatasetFormatError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
