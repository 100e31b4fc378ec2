"""Objects from their typed config sections, and the checks a run makes before it writes anything.

Every section is typed (dual_actor/config/): the policy is built from a :class:`PolicyConfig` made of the env,
the encoder groups and the algorithm's :class:`PolicyArch` fields; the learner from the ``algo`` section (an
:class:`AlgoConfig`); nothing routes keys by signature.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from data_tools.hdf5_format import DatasetFormatError
from dual_actor.config.algo import AlgoConfig
from dual_actor.config.fields import ConfigError
from dual_actor.config.policy import PolicyArch, PolicyConfig
from dual_actor.config.store import check_config
from dual_actor.data.datamodule import OfflineDataModule
from dual_actor.data.hdf5 import DataSpec
from dual_actor.module import DualActorModule


def env_cameras(cfg: DictConfig) -> list[str]:
    """The cameras the environment renders / the dataset holds (``env.cameras``; none by default)."""
    return [str(c) for c in cfg.env.cameras]


def _section(cfg: DictConfig, name: str) -> dict:
    return OmegaConf.to_container(cfg[name], resolve=True)


def check_encoder_groups(cfg: DictConfig) -> None:
    """A selected backbone / text_encoder / image_encoder with a required value left unset -> ConfigError."""
    for group in ("backbone", "text_encoder", "image_encoder"):
        node = cfg[group]
        missing = sorted(k.removeprefix(f"{group}.") for k in OmegaConf.missing_keys(node))
        if missing:
            kind = node.get("name", node.get("kind", "?"))
            raise ConfigError(f"{group}={kind} needs " + ", ".join(f"{group}.{k}=..." for k in missing)
                              + " (see docs/encoders.md)")


def check_accelerator(cfg: DictConfig) -> None:
    """The Trainer's accelerator and device count exist on this machine."""
    acc, devices = str(cfg.trainer.accelerator), cfg.trainer.devices
    if acc in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={acc}: no CUDA GPU is visible on this machine "
                              f"(torch.cuda.is_available() is False); use trainer=cpu")
        if isinstance(devices, int) and devices > torch.cuda.device_count():
            raise ConfigError(f"trainer.devices={devices}, but this machine has {torch.cuda.device_count()} GPU(s)")
    elif acc == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps: no Apple GPU (MPS) on this machine; use trainer=cpu")


def check_operator(cfg: DictConfig) -> None:
    """The operator's device is there when the online phase will use it from this process (with
    ``runtime.address`` it is on the robot computer, where the robot actor opens it)."""
    from dual_actor.runtime.robot import check_operator_ready

    if int(cfg.online.env_steps) > 0 and not (cfg.runtime.name == "ray" and cfg.runtime.get("address")):
        check_operator_ready(cfg)


def check_robot_reachable(cfg: DictConfig) -> None:
    """A connected robot answers one read before anything is written and before the warm-up's minutes, when this
    process will drive it (``runtime=inprocess`` with an online phase); with ``runtime=ray`` the robots are on
    their own hosts: ``python -m dual_actor.check_robot`` there."""
    from dual_actor.runtime.robot import check_robot_answers

    if int(cfg.online.env_steps) > 0 and cfg.runtime.name != "ray":
        check_robot_answers(cfg)


def reachable(address: str, timeout_s: float = 5.0) -> None:
    """``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a TCP connection within ``timeout_s`` (ConnectionError
    otherwise): Ray's own join retries an unreachable address for minutes. ``auto`` is not checked."""
    import socket

    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host or address, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        raise ConnectionError(f"nothing answers at {address} within {timeout_s:g} s ({type(e).__name__}: {e})") from None


def check_ray_cluster(cfg: DictConfig) -> None:
    """``runtime=ray runtime.address=...``: this process holds the cluster's token and joins it now (a refused or
    unauthenticated join is known before anything is written); the robots then start on that connection."""
    if cfg.runtime.name != "ray" or not cfg.runtime.get("address"):
        return
    import ray

    from dual_actor.data.ray_interaction import check_token_auth

    try:
        check_token_auth(cfg.runtime)
        reachable(str(cfg.runtime.address))
        if not ray.is_initialized():
            ray.init(address=str(cfg.runtime.address), include_dashboard=False, configure_logging=False,
                     log_to_driver=True)
    except ConnectionError as e:
        raise ConfigError(f"runtime=ray: cannot join the Ray cluster at {cfg.runtime.address}: "
                          f"{str(e).splitlines()[0]} (is it up, and is RAY_AUTH_TOKEN the token it was started with?)")
    if cfg.runtime.robot_resources:
        have = ray.cluster_resources()
        missing = {k: v for k, v in dict(cfg.runtime.robot_resources).items() if have.get(k, 0) < float(v)}
        if missing:
            raise ConfigError(f"runtime.robot_resources {dict(cfg.runtime.robot_resources)}: the cluster at "
                              f"{cfg.runtime.address} offers {({k: have.get(k, 0) for k in missing})} (start the robot "
                              f"computer's node with ray start --resources)")


def check_run_config(cfg: DictConfig) -> Path:
    """Everything that can be known before work starts, checked before anything is written: the schema's checks
    (types, undeclared keys, choices), the encoder groups, the accelerator, the operator's device, the robot's
    connection, the run folder
    vs ``resume``, Alg. 1's batch split. Returns the run folder."""
    check_encoder_groups(cfg)
    check_config(cfg)
    check_accelerator(cfg)
    check_operator(cfg)
    check_ray_cluster(cfg)
    check_robot_reachable(cfg)
    run_dir = Path(cfg.run_root) / str(cfg.run_name)
    has_ckpt = (run_dir / "last.ckpt").exists()
    if run_dir.exists() and not has_ckpt:  # a start that stopped before its first checkpoint: nothing to keep
        print(f"[run] {run_dir} holds no checkpoint (an earlier start stopped before its first one): starting it "
              f"again", flush=True)
        cfg.resume = False
    elif cfg.resume and not has_ckpt:
        raise ConfigError(f"resume=true but {run_dir / 'last.ckpt'} does not exist (set run_name to an existing run)")
    elif not cfg.resume and run_dir.exists():
        raise ConfigError(f"{run_dir} exists: pick another run_name, or resume=true to continue it")
    b, n = int(cfg.algo.batch_size), len(cfg.env.tasks)
    if b % n:
        raise ConfigError(f"algo.batch_size={b} must be divisible by {n} tasks")
    if int(cfg.online.env_steps) > 0 and b % (2 * n):
        raise ConfigError(f"algo.batch_size={b} must be divisible by 2 x tasks for the online phase")
    if int(cfg.online.env_steps) > 0 and cfg.env.robot is None:
        raise ConfigError(f"online.env_steps={cfg.online.env_steps} needs a robot, but env {cfg.env.name!r} has none "
                          f"(env.robot is null: a dataset-only env); set online.env_steps=0 for a warm-up only run")
    if cfg.eval.robot_b and cfg.env.robot_shift is None:
        raise ConfigError("eval.robot_b=true needs env.robot_shift (robot B's frame error)")
    return run_dir


def dims_from_data(cfg: DictConfig) -> None:
    """``env.obs_dim`` / ``proprio_dim`` / ``action_dim`` left null: the data file's widths (``obs/<obs_key>``,
    ``obs/<proprio_key>``, ``actions``), set in ``cfg`` (the run's config.yaml records them)."""
    keys = {"obs_dim": cfg.env.obs_key, "proprio_dim": cfg.env.proprio_key, "action_dim": "actions"}
    missing = [k for k in keys if cfg.env[k] is None]
    if not missing:
        return
    from data_tools.hdf5_format import feature_widths

    path = Path(cfg.data.path)
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such file (data.path; env.{missing[0]}=null reads it from the data)")
    widths = feature_widths(path, [cfg.env.obs_key, cfg.env.proprio_key])
    for k in missing:
        cfg.env[k] = widths[keys[k]]
    print(f"[data] {path}: " + ", ".join(f"env.{k}={cfg.env[k]}" for k in missing), flush=True)


def algo_config(cfg: DictConfig) -> AlgoConfig:
    """The ``algo`` section as its dataclass (its own checks have run)."""
    return OmegaConf.to_object(cfg.algo)


def state_slice(cfg: DictConfig) -> list[int] | None:
    """What the policy reads of the robot's observation vector: its leading ``env.state_dims`` entries, or
    ``[0, proprio_dim)`` when the state is the proprioception (``env.obs_key`` = ``proprio_key``: the robot's
    vector still holds the world), else all of it (None)."""
    env = cfg.env
    if env.state_dims is not None:
        return [0, int(env.state_dims)]
    return [0, int(env.proprio_dim)] if env.obs_key == env.proprio_key else None


def policy_config(cfg: DictConfig) -> PolicyConfig:
    """The deployable policy's config: the env's tasks, dims and cameras, the encoder groups, and the
    algorithm's policy-architecture keys (:class:`PolicyArch`)."""
    env = cfg.env
    return PolicyConfig(
        **PolicyArch.arch_of(algo_config(cfg)), tasks=list(env.tasks),
        obs_dim=int(env.obs_dim if env.state_dims is None else env.state_dims),
        proprio_dim=int(env.proprio_dim), action_dim=int(env.action_dim), backbone=_section(cfg, "backbone"),
        text_encoder=_section(cfg, "text_encoder"), image_encoder=_section(cfg, "image_encoder"),
        cameras=env_cameras(cfg), image_size=env.image_size, state_slice=state_slice(cfg),
    )


def build_module(cfg: DictConfig) -> DualActorModule:
    """The learner (policy, critics) for the warm-up; a backbone / encoder that cannot be built -> ConfigError
    naming why."""
    from hydra.errors import InstantiationException

    policy = policy_config(cfg)
    what = (f"backbone={policy.backbone.get('name', 'state')}, text_encoder={policy.text_encoder.get('kind')}, "
            f"image_encoder={policy.image_encoder.get('kind')}")
    try:
        return DualActorModule(policy, algo_config(cfg), phase="warmup", max_updates=int(cfg.algo.warmup_updates),
                               log_every=int(cfg.trainer.log_every))
    except KeyError as e:
        raise ConfigError(f"building the policy ({what}): {e.args[0] if e.args else e}") from e
    except (OSError, ValueError, TypeError, ImportError, InstantiationException) as e:
        raise ConfigError(f"building the policy ({what}): {e}") from e


def ensure_dataset(cfg: DictConfig) -> Path:
    """The warm-up dataset path; an env with a demo generator (the sim bench) writes it if absent."""
    path = Path(cfg.data.path)
    if path.exists():
        return path
    if not cfg.data.generate_if_missing or cfg.env.demo_generator is None:
        raise DatasetFormatError(f"{path}: no such file (data.path)")
    from hydra.utils import instantiate

    from dual_actor.runtime.robot import image_size

    d = cfg.env.demos
    print(f"Generating {d.episodes_per_task} scripted-expert demos per task into {path} ...", flush=True)
    t0 = time.perf_counter()
    instantiate(cfg.env.demo_generator)(
        path, tasks=list(cfg.env.tasks), episodes_per_task=int(d.episodes_per_task), seed=int(cfg.seed),
        noise=float(d.noise), max_episode_steps=int(d.max_episode_steps), progress=bool(cfg.trainer.progress_bar),
        cameras=env_cameras(cfg), **image_size(cfg),
    )
    print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def build_datamodule(cfg: DictConfig, module: DualActorModule, path: Path) -> OfflineDataModule:
    """The warm-up's data: the whole dataset loaded and validated (``setup``), each observation embedded once."""
    env = cfg.env
    spec = DataSpec(list(env.tasks), env.obs_key, int(env.obs_dim), env.proprio_key, int(env.proprio_dim),
                    int(env.action_dim), cameras=env_cameras(cfg), image_size=env.image_size, state_dims=env.state_dims,
                    store_images=module.policy.uses_images, as_mapping=module.policy.wants_mapping,
                    h_key=module.policy.h_key)
    dm = OfflineDataModule(path, spec, module.policy.embed, module.policy.command_ids,
                           batch_size=int(cfg.algo.batch_size), gamma=float(cfg.algo.gamma),
                           refine_batch_size=cfg.algo.refine_batch_size, seed=int(cfg.seed), split=cfg.data.split,
                           pooled=cfg.algo.sampling == "pooled")
    dm.setup("fit")  # validates the whole dataset before anything is written
    return dm


def checkpoint_phase(ckpt: Path, policy: PolicyConfig, warmup_updates: int, env_steps: int | None = None) -> str:
    """The phase ``ckpt`` was saved in ("warmup_done": a finished warm-up; "finished": with ``env_steps`` given,
    the run wrote its summary and holds its whole online budget, so resuming it has nothing to do); a checkpoint
    of another task set or other dims -> ConfigError (at start-up, before anything is written, instead of a shape
    error mid-run)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    saved = (state.get("hyper_parameters") or {}).get("policy") or {}
    for key in ("tasks", "obs_dim", "proprio_dim", "action_dim"):
        if key in saved and saved[key] != getattr(policy, key):
            where = "env.tasks" if key == "tasks" else f"env.{key}"
            raise ConfigError(f"{ckpt} was trained with {key}={saved[key]!r}, but {where}={getattr(policy, key)!r}; "
                              f"resume with the run's own config, or start a new run_name")
    if any(k.startswith("critics.0.") for k in state.get("state_dict", {})):
        raise ConfigError(f"{ckpt} holds one critic module per task, the layout before the critics were stacked "
                          f"(one ensemble for all tasks); this version cannot continue it: start a new run_name "
                          f"(its policy folders still load)")
    info = state.get("dual_actor", {})
    phase = info.get("phase", "warmup")
    if phase == "warmup" and int(info.get("num_updates", 0)) >= int(warmup_updates):
        phase = "warmup_done"
    if env_steps is not None and (ckpt.parent / "summary.json").exists():
        online = next((v for k, v in (state.get("callbacks") or {}).items() if "InteractionCallback" in k), None)
        held = int(online["env_steps"]) if online is not None else 0
        if (phase == "online" and held >= env_steps) or (phase == "warmup_done" and env_steps <= 0):
            return "finished"
    return phase


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


def make_trainer(cfg: DictConfig, logger, callbacks) -> L.Trainer:
    """The Trainer of a phase (manual optimisation: the module stops itself; checkpoints are ours)."""
    from dual_actor.watch import RunProgressBar

    if not cfg.trainer.progress_bar:
        callbacks = [c for c in callbacks if not isinstance(c, RunProgressBar)]
    return L.Trainer(
        accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, precision=cfg.trainer.precision,
        max_epochs=-1, max_steps=-1, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
        callbacks=callbacks, enable_progress_bar=bool(cfg.trainer.progress_bar), enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def env_factory(cfg: DictConfig, robot: int = 0):
    """``make_env(task, seed, max_episode_steps, cameras, image_size) -> RobotEnv`` of robot ``robot`` (0: A;
    1: B, seen through ``env.robot_shift``) from ``env.robot`` (None for a dataset-only env)."""
    from dual_actor.runtime.robot import make_env_factory, robot_shift

    return make_env_factory(cfg, robot_shift(robot, cfg))


def build_interaction(cfg: DictConfig, module: DualActorModule, buffers, run_dir: Path):
    """The online phase's robots: ``runtime=inprocess`` runs one robot's loops (one per task) in this process;
    ``runtime=ray`` runs ``runtime.robots`` Ray actors (dual_actor/data/ray_interaction.py)."""
    from dual_actor.data.interaction import Interaction
    from dual_actor.runtime.robot import build_loops, robot_name, teleop_session

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


def flat_hparams(cfg: DictConfig) -> dict:
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
