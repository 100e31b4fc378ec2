"""``python -m dual_actor.fit``: warm-up of the dual-actor policy (Hydra entry point).

Flow: resolve the dataset (generate scripted-expert demos for a simulated env if asked and
absent) -> build the policy and load + validate the whole dataset -> only then create
``<run_root>/<run_name>/`` -> train -> save ``last.ckpt`` (atomically) and ``policy/``.
Bad input (missing/malformed file, absent task, shape mismatch) prints one ``error:`` line
naming the file/key/shape and exits 2 with nothing written under the run root.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from data_tools.atomic import atomic_path, atomic_write_text
from data_tools.hdf5_format import DatasetFormatError
from data_tools.talk_tweak import LABELS
from dual_actor.data.datamodule import OfflineDataModule
from dual_actor.data.hdf5 import DataSpec
from dual_actor.module import DualActorModule
from dual_actor.watch import RunProgressBar, log_frames, log_run_summary, quiet_libraries

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


FIT_KEYS = {"batch_size", "refine_batch_size", "warmup_updates", "sampling"}  # algo keys the fit loop reads itself


def _constructor_keys(cls) -> set[str]:
    import inspect

    return {k for k, p in inspect.signature(cls.__init__).parameters.items()
            if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def module_kwargs(cfg: DictConfig) -> dict:
    """DualActorModule arguments from the config: every ``algo`` key goes to the constructor that names it
    (``DualActorPolicy`` or ``DualActorModule``), the env / encoder groups give the policy's shapes and encoders.
    Keys the config leaves out take the constructor's default (tests/test_wiring.py checks that the yaml and
    the constructors agree); an ``algo`` key that no constructor takes is a ConfigError naming it."""
    from dual_actor.policy import DualActorPolicy

    algo = OmegaConf.to_container(cfg.algo, resolve=True)
    env = cfg.env
    pol_keys, mod_keys = _constructor_keys(DualActorPolicy), _constructor_keys(DualActorModule)
    unknown = sorted(set(algo) - pol_keys - mod_keys - FIT_KEYS)
    if unknown:
        raise ConfigError(f"algo: unknown key(s) {unknown} (not a DualActorPolicy / DualActorModule argument)")
    policy = {k: v for k, v in algo.items() if k in pol_keys}
    policy.update(
        tasks=list(env.tasks), obs_dim=int(env.obs_dim), proprio_dim=int(env.proprio_dim),
        action_dim=int(env.action_dim), backbone=_group(cfg, "backbone"), text_encoder=_group(cfg, "text_encoder"),
        image_encoder=_group(cfg, "image_encoder"), cameras=env_cameras(cfg),
        image_size=None if env.get("image_size") is None else int(env.image_size),
    )
    module = {k: v for k, v in algo.items() if k in mod_keys and k != "policy"}
    module.update(policy=policy, phase="warmup", max_updates=int(algo["warmup_updates"]),
                  log_every=int(cfg.trainer.log_every))
    return module


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
    """The warm-up dataset path; an env with a demo generator (the sim bench) writes it if absent."""
    path = Path(cfg.data.path)
    if path.exists():
        return path
    if not cfg.data.generate_if_missing or cfg.env.get("demo_generator") is None:
        raise DatasetFormatError(f"{path}: no such file (data.path)")
    from hydra.utils import instantiate

    d = cfg.env.demos
    print(f"Generating {d.episodes_per_task} scripted-expert demos per task into {path} ...", flush=True)
    t0 = time.perf_counter()
    instantiate(cfg.env.demo_generator)(
        path, tasks=list(cfg.env.tasks), episodes_per_task=int(d.episodes_per_task), seed=int(cfg.seed),
        noise=float(d.noise), max_episode_steps=int(d.max_episode_steps), progress=bool(cfg.trainer.progress_bar),
        cameras=env_cameras(cfg), image_size=int(cfg.env.get("image_size") or 128),
    )
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def env_factory(cfg: DictConfig, robot: int = 0):
    """``make_env(task, seed, max_episode_steps, cameras, image_size) -> RobotEnv`` of robot ``robot`` (0: A;
    1: B, seen through ``env.robot_shift``) from ``env.robot`` (None for a dataset-only env)."""
    from dual_actor.runtime.robot import make_env_factory, robot_shift

    return make_env_factory(cfg, robot_shift(robot, cfg))


def _checkpoint_phase(ckpt: Path, policy_kwargs: dict, warmup_updates: int) -> str:
    """The phase ``ckpt`` was saved in ("warmup_done": a finished warm-up); a checkpoint of another task set or other dims -> ConfigError (at
    start-up, before anything is written, instead of a shape error mid-run)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved = (state.get("hyper_parameters") or {}).get("policy") or {}
    for key in ("tasks", "obs_dim", "proprio_dim", "action_dim"):
        if key in saved and saved[key] != policy_kwargs[key]:
            where = "env.tasks" if key == "tasks" else f"env.{key}"
            raise ConfigError(f"{ckpt} was trained with {key}={saved[key]!r}, but {where}={policy_kwargs[key]!r}; "
                              f"resume with the run's own config, or start a new run_name")
    if any(k.startswith("critics.0.") for k in state.get("state_dict", {})):
        raise ConfigError(f"{ckpt} holds one critic module per task, the layout before the critics were stacked "
                          f"(one ensemble for all tasks); this version cannot continue it: start a new run_name "
                          f"(its policy folders still load)")
    info = state.get("dual_actor", {})
    phase = info.get("phase", "warmup")
    if phase == "warmup" and int(info.get("num_updates", 0)) >= int(warmup_updates):
        return "warmup_done"
    return phase


# ---------------------------------------------------------------------------------- shared warm-up
SHARED_DONE = "done.json"
SHARED_FILES = ("last.ckpt", "policy_warmup", "learning_curve.json", "authority.json")
# What only the online phase (or evaluation, logging) reads: runs that differ only here share a warm-up.
ONLINE_ONLY = ("online", "eval", "operator", "runtime", "run_name", "run_root", "resume", "warmup")
ONLINE_ONLY_TRAINER = ("progress_bar", "log_every", "checkpoint_every")
ONLINE_ONLY_ALGO = ("bc_rows", "null_latent")  # warm-up rows are all demos; mu(s, [null]) = 0 untrained


def warmup_fingerprint(cfg: DictConfig) -> dict:
    """The part of the resolved config that the warm-up depends on: everything but the online-only keys above,
    with ``lambdas`` cut to the warm-up's and the phase switches reduced to whether each net trains in the
    warm-up. ``algo=dual_actor``, ``algo.refine_enabled=false`` and ``algo=dsrl`` agree here."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for k in ONLINE_ONLY:
        c.pop(k, None)
    for k in ONLINE_ONLY_TRAINER:
        c["trainer"].pop(k, None)
    a = c["algo"]
    for k in ONLINE_ONLY_ALGO:
        a.pop(k, None)
    a["lambdas"] = a["lambdas"]["warmup"]
    enabled, phases, objective = a.pop("refine_enabled"), a.pop("refine_phases"), a.pop("refine_objective")
    subcommands = a.pop("refine_subcommands", 0.0)
    target = a.pop("refine_target", "absolute")
    refine_warm = bool(enabled) and "warmup" in phases
    how = [objective] + ([subcommands] if subcommands else []) + ([target] if target != "absolute" else [])
    a["refine_in_warmup"] = (how[0] if len(how) == 1 else how) if refine_warm else None
    for k in ("actor_phases", "critic_phases"):
        a[k] = "warmup" in a[k]
    return c


def shared_warmup_dir(cfg: DictConfig) -> Path:
    """``<run_root>/warmups/seed<seed>-<hash of the warm-up fingerprint>``: one warm-up per seed and warm-up
    config, reused by every run (arm) with ``warmup.share=true`` that shares it."""
    fp = json.dumps(warmup_fingerprint(cfg), sort_keys=True)
    return Path(cfg.run_root) / "warmups" / f"seed{int(cfg.seed)}-{hashlib.sha256(fp.encode()).hexdigest()[:12]}"


def _copy_shared_files(src: Path, dest: Path) -> None:
    """The :data:`SHARED_FILES` that ``src`` holds, copied into ``dest`` (folders whole)."""
    for name in SHARED_FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name)
        elif (src / name).exists():
            shutil.copy2(src / name, dest / name)


def publish_shared_warmup(r: "Run") -> None:
    """Copy the finished warm-up (checkpoint, policy, warm-up point, probes) to the shared folder, whole or not
    at all: a temporary folder renamed into place, ``done.json`` last. A folder someone finished first wins."""
    dest = r.shared_warmup
    if dest is None or (dest / SHARED_DONE).exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{r.run_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _copy_shared_files(r.run_dir, tmp)
    atomic_write_text(tmp / SHARED_DONE, json.dumps({"from_run": str(r.run_dir), "updates": r.module.num_updates,
                                                     "fingerprint": warmup_fingerprint(r.cfg)}, indent=2))
    try:
        tmp.rename(dest)
    except OSError:  # another job published it meanwhile (or a half-written folder from a crash: replace it)
        if (dest / SHARED_DONE).exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
    print(f"[warm-up] shared as {dest}", flush=True)


def load_finished_warmup(module: DualActorModule, ckpt: Path) -> None:
    """A finished warm-up's weights, counters and process RNG state, without a trainer (resuming it through
    Lightning would run one more update)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    module.on_load_checkpoint(state)
    module.load_state_dict(state["state_dict"])
    rng = (state.get("callbacks") or {}).get("RNGCheckpoint")
    if rng is not None:
        RNGCheckpoint().load_state_dict(rng)


def language_operator(cfg: DictConfig) -> None:
    """A learner that does not train the refinement actor on talk-and-tweak data cannot act on a spoken
    command: the simulated operator then takes over at once instead of speaking first (single-actor ablation,
    the baselines)."""
    a = cfg.algo
    listens = bool(a.refine_enabled) and a.refine_objective == "talk_tweak"
    if not listens and cfg.operator.get("talk_then_tweak"):
        cfg.operator.talk_then_tweak = False
        print("[operator] this learner does not train the refinement actor on spoken commands: the simulated "
              "operator takes over instead of speaking (operator.talk_then_tweak=false)", flush=True)


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
    """The online phase's robots: ``runtime=inprocess`` runs one robot's loops (one per task) in this process;
    ``runtime=ray`` runs ``runtime.robots`` Ray actors (dual_actor/data/ray_interaction.py)."""
    from dual_actor.data.interaction import Interaction
    from dual_actor.runtime.robot import build_loops, robot_name, teleop_session

    if env_factory(cfg) is None:
        raise ConfigError(f"online phase: env {cfg.env.name!r} has no robot (env.robot: a RobotEnv factory, "
                          f"dual_actor/runtime/env.py); set online.env_steps=0 for a warm-up only run")
    on = cfg.online
    with module.deployed_weights():  # the acting side's own copy (sharing the frozen backbone), deployed weights
        actor_policy = module.policy.acting_copy()
    if cfg.runtime.name == "ray":
        from dual_actor.data.ray_interaction import RayInteraction

        return RayInteraction(cfg, actor_policy, buffers, run_dir, version=module.num_updates)
    from hydra.utils import instantiate

    transport = instantiate(cfg.runtime.transport)
    session = teleop_session(cfg, run_dir / "teleop" / f"online-{int(time.time())}") if on.log_teleop else None
    log = session.episode if session is not None else None
    robots = int(cfg.runtime.robots)
    loops = [loop for i in range(robots)  # every robot's loops, round-robin in this one process
             for loop in build_loops(cfg, actor_policy, transport, index=i, log_episode=log,
                                     name=None if robots == 1 else robot_name(i, cfg))]
    return Interaction(loops, transport, buffers, env_steps_per_update=1.0 / float(on.updates_per_env_step),
                       min_rollout=int(on.min_rollout), max_env_steps=int(on.env_steps))


class EvalCallback(L.Callback):
    """A learning-curve point (and the authority probes) every ``every`` online interaction steps."""

    def __init__(self, cfg: DictConfig, interaction, curve, every: int, authority=None, buffers=None):
        self.cfg, self.interaction, self.curve, self.every = cfg, interaction, curve, max(1, int(every))
        self.authority, self.buffers = authority, buffers
        self.next_at = self.every
        self.t0 = time.perf_counter()  # reset by online() when the robots start (before the first batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.interaction.env_steps >= self.next_at:
            self.next_at = (self.interaction.env_steps // self.every + 1) * self.every
            with pl_module.deployed_weights():
                res = _evaluate(self.cfg, pl_module.policy, self.interaction, int(self.cfg.eval.curve_trials))
                res["wall_seconds"] = time.perf_counter() - self.t0
                if self.authority is not None:
                    self.authority.add(pl_module.policy, self.buffers, self.interaction.env_steps,
                                       pl_module.logger.experiment if pl_module.logger is not None else None,
                                       step=pl_module.num_updates)
            self.curve.add(self.interaction.env_steps, res)
            if pl_module.logger is not None:
                self.curve.log_tensorboard(pl_module.logger.experiment, self.interaction.env_steps, res,
                                           step=pl_module.num_updates)


def _intervention_rate(interaction) -> float:
    return 0.0 if interaction is None else interaction.intervention_rate()


def _evaluate(cfg: DictConfig, policy, interaction, trials: int, frames: dict | None = None, speaker=None,
              robot: int = 0) -> dict:
    """Evaluation on robot A (``robot=1``: robot B, through ``env.robot_shift``)."""
    from dual_actor.eval import evaluate

    return evaluate(policy, list(cfg.env.tasks), trials=trials, max_episode_steps=int(cfg.eval.max_episode_steps),
                    seed=int(cfg.eval.seed), online_steps=interaction.env_steps if interaction else 0,
                    intervention_rate=_intervention_rate(interaction), progress=bool(cfg.trainer.progress_bar),
                    make_env=env_factory(cfg, robot), frames=frames, speaker=speaker)


def _record_eval(cfg: DictConfig, res: dict, path: Path, title: str) -> dict:
    """An extra evaluation: its JSON file and its table under ``title``."""
    from dual_actor.eval import format_table

    atomic_write_text(path, json.dumps(res, indent=2))
    print(f"[eval] {title}:", flush=True)
    print(format_table(res, fps=float(cfg.env.fps)), flush=True)
    return res


def _evaluate_with_commands(cfg: DictConfig, policy, interaction, run_dir: Path) -> dict:
    """The same trials with a simulated operator speaking refinement commands (never taking over):
    the paper's evaluation with talk-and-tweak at test time. Written as ``eval_commands.json``."""
    from dual_actor.runtime.operators import SimulatedOperator

    speaker = SimulatedOperator(list(cfg.env.tasks)[0], speak_commands=True,
                                translation_scale_m=float(cfg.online.translation_scale_m), seed=int(cfg.eval.seed),
                                expert=str(cfg.operator.get("expert", "corrected")))
    res = _evaluate(cfg, policy, interaction, int(cfg.eval.trials), speaker=speaker)
    return _record_eval(cfg, res, run_dir / "eval_commands.json", "with spoken refinement commands (simulated operator)")


def _evaluate_robot_b(cfg: DictConfig, policy, interaction, run_dir: Path) -> dict:
    """The same trials on robot B (``env.robot_shift``): ``eval_B.json`` (paper RQ5's transfer table)."""
    res = _evaluate(cfg, policy, interaction, int(cfg.eval.trials), robot=1)
    return _record_eval(cfg, res, run_dir / "eval_B.json", "on robot B (env.robot_shift)")


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


def check_run_config(cfg: DictConfig) -> Path:
    """Config errors that need no file read: run folder vs resume, Alg. 1's batch split. Returns the run folder."""
    run_dir = Path(cfg.run_root) / str(cfg.run_name)
    if cfg.resume and not (run_dir / "last.ckpt").exists():
        raise ConfigError(f"resume=true but {run_dir / 'last.ckpt'} does not exist (set run_name to an existing run)")
    if not cfg.resume and run_dir.exists():
        raise ConfigError(f"{run_dir} exists: pick another run_name, or resume=true to continue it")
    if cfg.algo.sampling not in ("per_task", "pooled"):
        raise ConfigError(f"algo.sampling must be 'per_task' or 'pooled', got {cfg.algo.sampling!r}")
    if cfg.algo.sampling == "pooled" and cfg.algo.critic == "per_task":
        raise ConfigError("algo.sampling=pooled mixes the tasks' rows in one slice; per-task critics need "
                          "algo.sampling=per_task (or algo.critic=shared)")
    b, n = int(cfg.algo.batch_size), len(cfg.env.tasks)
    if b % n:
        raise ConfigError(f"algo.batch_size={b} must be divisible by {n} tasks")
    if int(cfg.online.env_steps) > 0 and b % (2 * n):
        raise ConfigError(f"algo.batch_size={b} must be divisible by 2 x tasks for the online phase")
    if cfg.online.get("label", "action") not in LABELS:
        raise ConfigError(f"online.label must be one of {LABELS}, got {cfg.online.label!r}")
    if cfg.eval.robot_b and cfg.env.get("robot_shift") is None:
        raise ConfigError("eval.robot_b=true needs env.robot_shift (robot B's frame error)")
    check_encoder_groups(cfg)
    return run_dir


def prepare(cfg: DictConfig) -> Run:
    """Build the learner and load + validate the whole dataset; only then create the run folder."""
    run_dir = check_run_config(cfg)
    kwargs = module_kwargs(cfg)
    warm = int(cfg.algo.warmup_updates)
    resume_phase = _checkpoint_phase(run_dir / "last.ckpt", kwargs["policy"], warm) if cfg.resume else None
    shared = shared_warmup_dir(cfg) if cfg.warmup.share else None
    if shared is not None and not cfg.resume and (shared / SHARED_DONE).exists():
        resume_phase = _checkpoint_phase(shared / "last.ckpt", kwargs["policy"], warm)
    module = build_module(kwargs)  # before any file is written: a bad backbone path writes nothing
    data_path = ensure_dataset(cfg)
    env = cfg.env
    spec = DataSpec(list(env.tasks), env.obs_key, int(env.obs_dim), env.proprio_key, int(env.proprio_dim),
                    int(env.action_dim), cameras=env_cameras(cfg),
                    image_size=None if env.get("image_size") is None else int(env.image_size),
                    store_images=module.policy.uses_images, as_mapping=module.policy.wants_mapping)
    dm = OfflineDataModule(data_path, spec, module.policy.embed, module.policy.command_ids,
                           batch_size=int(cfg.algo.batch_size), gamma=float(cfg.algo.gamma),
                           refine_batch_size=cfg.algo.refine_batch_size, seed=int(cfg.seed), split=cfg.data.split,
                           pooled=cfg.algo.sampling == "pooled")
    dm.setup("fit")  # validates the whole dataset before anything is written
    sizes = {t: len(dm.buffers[t]["demos"]) for t in env.tasks}
    print(f"Warm-up data {data_path}: episodes {dm.episode_counts}, demo transitions {sizes}, "
          f"talk-and-tweak {len(dm.buffers.talk_tweak)}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        if resume_phase is not None:  # the shared warm-up: its checkpoint, policy and warm-up point
            print(f"[warm-up] shared: {shared}", flush=True)
            _copy_shared_files(shared, run_dir)
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
        load_finished_warmup(module, r.ckpt)
        print(f"[warm-up] {module.num_updates} updates, from {r.ckpt}", flush=True)
    else:
        print(f"[warm-up] {cfg.algo.warmup_updates} updates", flush=True)
        trainer = _trainer(cfg, r.logger, [UpdateCheckpoint(r.run_dir, int(cfg.trainer.checkpoint_every)),
                                           RNGCheckpoint(), RunProgressBar("warm-up", int(cfg.algo.warmup_updates))])
        trainer.fit(module, datamodule=r.dm, ckpt_path=str(r.ckpt) if cfg.resume else None)
    with module.deployed_weights():  # what a finished warm-up has not written yet (a kill may come in between)
        if not (r.run_dir / "policy_warmup" / "config.json").exists() or r.resume_phase != "warmup_done":
            module.policy.save_pretrained(r.run_dir / "policy_warmup")
        if not any(p["online_steps"] == 0 for p in r.authority.points):
            _print_authority("warm-up", r.authority.add(module.policy, r.dm.buffers, 0, r.logger.experiment,
                                                        step=module.num_updates))
        if (int(cfg.online.env_steps) > 0 and cfg.eval.warmup_point and int(cfg.eval.trials) > 0
                and not any(p["online_steps"] == 0 for p in r.curve.points)):
            # the final evaluation's trials (same count, same seeds): the printed table compares the two
            res = _evaluate(cfg, module.policy, None, int(cfg.eval.trials))
            r.curve.add(0, res)
            r.curve.log_tensorboard(r.logger.experiment, 0, res, step=module.num_updates)
    publish_shared_warmup(r)
    r.warmup_s = time.perf_counter() - r.t0


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
    r.interaction = interaction = build_interaction(cfg, module, r.dm.buffers, r.run_dir)
    sampler = BufferSampler(r.dm.buffers, int(cfg.algo.batch_size), "online", cfg.algo.refine_batch_size,
                            min_rollout=int(cfg.online.min_rollout), seed=int(cfg.seed) + 1,
                            before_batch=interaction.before_batch, pooled=cfg.algo.sampling == "pooled")
    callbacks = [InteractionCallback(interaction, int(cfg.online.weight_sync_every), int(cfg.trainer.log_every),
                                     sampler=sampler),
                 UpdateCheckpoint(r.run_dir, int(cfg.trainer.checkpoint_every)), RNGCheckpoint(),
                 RunProgressBar("online", interaction=interaction),
                 curve_cb := EvalCallback(cfg, interaction, r.curve, int(cfg.eval.curve_every_env_steps), r.authority,
                                          r.dm.buffers)]
    print(f"[online] {cfg.online.env_steps} interaction steps with operator {cfg.operator.get('_target_', 'none')}",
          flush=True)
    trainer = _trainer(cfg, r.logger, callbacks)
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
            _print_authority("final", r.authority.add(module.policy, r.dm.buffers, inter.env_steps,
                                                      r.logger.experiment, step=module.num_updates))
        if int(cfg.eval.trials) > 0 and env_factory(cfg) is not None:
            from dual_actor.eval import write_eval

            frames: dict = {}
            result = _evaluate(cfg, module.policy, inter, int(cfg.eval.trials), frames)
            write_eval(result, r.run_dir)
            log_frames(r.logger, frames, module.num_updates)
            if cfg.eval.get("with_commands"):
                _evaluate_with_commands(cfg, module.policy, inter, r.run_dir)
            if cfg.eval.robot_b:
                _evaluate_robot_b(cfg, module.policy, inter, r.run_dir)
            if inter is not None:
                r.curve.add(inter.env_steps, {**result, "wall_seconds": r.online_s})
                r.curve.log_tensorboard(r.logger.experiment, inter.env_steps, result, step=module.num_updates)
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
        "authority": r.authority.points[-1] if r.authority.points else None,
    }
    if r.after_fill is not None:
        summary["online_after_fill"] = r.after_fill
    if inter is not None and hasattr(inter, "robot_summary"):
        summary["robots"] = inter.robot_summary()
    atomic_write_text(r.run_dir / "summary.json", json.dumps(summary, indent=2))
    png = r.run_dir / "learning_curve.png"
    log_run_summary(r.logger, _flat_hparams(r.cfg), None if result is None else result["average_success_rate"],
                    png if png.exists() else None, module.num_updates)
    r.logger.finalize("success")
    if result is not None:
        start = next((p for p in r.curve.points if p["online_steps"] == 0), None) if inter is not None else None
        print(format_table(result, fps=float(r.cfg.env.fps), warmup=start), flush=True)
    print(f"{module.num_updates} learner updates, {summary['online_env_steps']} online steps in {elapsed:.1f} s. "
          f"Run: {r.run_dir} (eval.json, learning_curve.png, TensorBoard: tensorboard --logdir {r.run_dir / 'tb'})",
          flush=True)


def run(cfg: DictConfig) -> Path:
    """Algorithm 1: prepare -> warm-up (phase I) -> online (phase II) -> evaluation; returns the run folder."""
    L.seed_everything(int(cfg.seed), verbose=False)
    torch.set_float32_matmul_precision("high")
    language_operator(cfg)
    r = prepare(cfg)
    warmup(r)
    online(r)
    summarize(r, evaluate_and_save(r))
    return r.run_dir


def multirun_job_name(cfg: DictConfig, argv: list[str] | None = None) -> None:
    """In a Hydra multirun (``-m seed=0,1,2 ...``) without an explicit ``run_name``, each job's run name is the
    time stamp plus the job's values of the swept keys (``20261130-150000_seed=1``): jobs that start within the
    same second no longer share the timestamped default (the second one died with "... exists")."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    hc = HydraConfig.get()
    job = [o for o in hc.overrides.task]
    if hc.mode != RunMode.MULTIRUN or any(o.split("=", 1)[0].lstrip("+~") == "run_name" for o in job):
        return
    given = [a for a in (sys.argv[1:] if argv is None else argv) if "=" in a and not a.startswith("-")]
    swept = {o.key_or_group for o in OverridesParser.create().parse_overrides(given) if o.is_sweep_override()}
    values = [o for o in job if o.split("=", 1)[0].lstrip("+~") in swept]
    suffix = ",".join(values).replace("/", "_") or f"job{hc.job.num}"
    cfg.run_name = f"{cfg.run_name}_{suffix}"


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    try:
        multirun_job_name(cfg)
        run(cfg)
    except (DatasetFormatError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
