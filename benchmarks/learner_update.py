"""Learner throughput: one full DualActorModule update vs lerobot 0.4.4's SAC update, same run.

Our update = 3 task critics (Cal-QL in warm-up / Bellman online, twin ensembles, Polyak) +
primary actor (consistency BC + Eq. 15 weighted Q) + refinement actor (Eq. 8-11), batch 256,
state observations (39-d Metaworld state, 4-d proprio, 4-d action), the default network sizes
of ``conf/algo/dual_actor.yaml``. Timed inside a real ``Trainer.fit`` (Lightning overhead
included), on a fixed batch already on the device, so neither data sampling nor the host ->
device copy is measured (lerobot's side likewise). The batch is one the real sampler draws (``make_batch``),
per phase; the module is built in one place (``build_module``).

Image critics (``--cameras N``): the critics' and the refinement actor's observation encoder is
the one ``python -m dual_actor.fit image_encoder=<arch> env.cameras=[...] env.image_size=S``
builds (``conf/image_encoder/<arch>.yaml`` as the policy's ``image_encoder`` config, random
init, ``freeze`` from ``--freeze-encoder``): a ResNet trunk shared by the cameras, a spatial
pooling head per camera, the 39-d state branch. Every batch slice carries uint8 images
``obs_images`` / ``next_obs_images`` of shape (rows, N, 3, S, S). The primary actor keeps the
state backbone's h (a VLA backbone's h is computed on the acting side, never in the learner).
lerobot's SAC gets the same cameras as float images (``observation.images.cam{i}``, 3 x S x S)
and, by default (``--lerobot-vision-encoder match``), a ResNet of the same depth through its
``vision_encoder_name`` path, frozen (feature cache) iff ``--freeze-encoder``
(``benchmarks/lerobot_sac_anchor.py`` explains both); ``--lerobot-vision-encoder default`` runs
lerobot as shipped: its own 4-conv ``DefaultImageEncoder``, frozen (``freeze_vision_encoder=True``).

Timing is interleaved: ``--rounds`` rounds, each measuring every arm once in a fresh process (ours
warm-up, ours online, lerobot, and optionally ``--baseline-repo``'s module and the ``--levers``), A B A
B ...; a figure is the median over rounds and a ratio the median of the per-round ratios. The CPU's
GEMM peak (a 2048^2 matmul, fp32 and bf16) is measured in the same run; ``--breakdown`` adds a
torch-profiler split of one update (matmul kernels with their achieved GFLOP/s, other kernels,
optimizer, Python/framework) and the arithmetic bound (updates/s if every FLOP ran at the peak).

    python benchmarks/learner_update.py --updates 200 --rounds 3 --breakdown   # CPU, state
    python benchmarks/learner_update.py --baseline-repo ../old --levers bf16 compile
    python benchmarks/learner_update.py --device cuda --updates 500
    python benchmarks/learner_update.py --device cuda --cameras 2 --image-size 128 \
        --image-encoder resnet18 --updates 300 --warmup 30 --json learner_images.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, IterableDataset

ROOT = Path(__file__).resolve().parents[1]
# the dual_actor measured: this checkout, or another one (a --baseline-repo arm runs with this set)
REPO = Path(os.environ.get("BENCH_DUAL_ACTOR_REPO", ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
from dual_actor import constants as K  # noqa: E402
from dual_actor.module import DualActorModule  # noqa: E402

TASKS = ["place the bolt", "pick up the bolt", "assemble the bolt"]


class _Repeat(IterableDataset):
    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


class _Timer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup = warmup
        self.t0 = None
        self.t1 = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module.num_updates == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t1 = time.perf_counter()


def random_rows(n: int, task: int, obs_dim: int, proprio_dim: int, action_dim: int, n_tasks: int, g: torch.Generator,
                cameras: int = 0, image_size: int = 128, intervened: float = 0.0, h_dim: int | None = None) -> dict:
    """``n`` random transitions of task ``task`` with every column a recorded episode hands to
    ``TaskBuffers.add_episode`` (``dual_actor.constants``): the state backbone's h (obs + task one-hot
    width), ``intervention`` on a fraction ``intervened`` of the rows, the policy's proposals; with
    ``cameras > 0`` uint8 ``obs_images`` / ``next_obs_images`` (n, cameras, 3, image_size, image_size); ``h_dim``:
    another backbone's h width (the pixel bench's VLA)."""
    h_dim = h_dim or obs_dim + n_tasks

    def images():
        return torch.randint(0, 256, (n, cameras, 3, image_size, image_size), generator=g, dtype=torch.uint8)

    extra = {K.OBS_IMAGES: images(), K.NEXT_OBS_IMAGES: images()} if cameras > 0 else {}
    return {
        **extra,
        K.H: torch.randn(n, h_dim, generator=g), K.OBS: torch.randn(n, obs_dim, generator=g),
        K.PROPRIO: torch.randn(n, proprio_dim, generator=g),
        K.ACTION: torch.rand(n, action_dim, generator=g) * 2 - 1,
        K.REWARD: (torch.rand(n, generator=g) > 0.9).float(), K.DONE: (torch.rand(n, generator=g) > 0.95).float(),
        K.NEXT_H: torch.randn(n, h_dim, generator=g), K.NEXT_OBS: torch.randn(n, obs_dim, generator=g),
        K.NEXT_PROPRIO: torch.randn(n, proprio_dim, generator=g), K.MC_RETURN: torch.rand(n, generator=g),
        K.COMMAND: torch.randint(0, 27, (n,), generator=g), K.TASK: torch.full((n,), task, dtype=torch.long),
        K.INTERVENTION: torch.rand(n, generator=g) < intervened,
        K.POLICY_ACTION: torch.rand(n, action_dim, generator=g) * 2 - 1,
    }


def make_batch(batch_size: int, obs_dim: int, proprio_dim: int, action_dim: int, n_tasks: int, seed: int = 0,
               cameras: int = 0, image_size: int = 128, phase: str = "online", h_dim: int | None = None):
    """The fixed training batch of ``phase``, drawn by the real sampler (``dual_actor.data.datamodule.
    BufferSampler``, the one ``dual_actor.fit`` trains from) out of real ``TaskBuffers`` filled with random
    rows, so it carries every key the learner reads (``from_demos``, ``intervention``, ``correction`` ...).

    Per task, a demo episode of ``batch_size // n_tasks`` rows; online also an online episode of as many rows,
    a quarter of them intervened (those go to the task's demos, its interventions and the talk-and-tweak
    buffer, the rest to its rollouts) and half of its autonomous rows with return 0 (steps of failed
    episodes). Slices as the sampler draws them: warm-up ``batch_size // n_tasks`` demo rows per task, no
    talk-and-tweak slice (the bench's demos hold no intervention, and the warm-up update does not train the
    refinement actor); online ``batch_size // (2 n_tasks)`` demo + as many rollout rows per task (``fit``
    needs ``batch_size`` divisible by 2 x tasks: here it is rounded down, 3 x 84 rows at 256) and a
    ``batch_size``-row talk-and-tweak slice."""
    from dual_actor.data.buffers import TaskBuffers
    from dual_actor.data.datamodule import BufferSampler

    if phase not in ("warmup", "online"):
        raise ValueError(f"phase must be warmup or online, got {phase!r}")
    g = torch.Generator().manual_seed(seed)
    per_task = batch_size // n_tasks
    tasks = [f"task{i}" for i in range(n_tasks)]
    buffers = TaskBuffers(tasks)
    kw = dict(obs_dim=obs_dim, proprio_dim=proprio_dim, action_dim=action_dim, n_tasks=n_tasks, g=g, cameras=cameras,
              image_size=image_size, h_dim=h_dim)
    for i, task in enumerate(tasks):
        buffers.add_episode(task, "demo", random_rows(per_task, i, **kw))
        if phase == "online":
            rows = random_rows(max(per_task, 4), i, intervened=0.25, **kw)
            rows[K.INTERVENTION][:1] = True  # at least one row of each kind
            rows[K.INTERVENTION][-1:] = False
            failed = ~rows[K.INTERVENTION] & (torch.rand(len(rows[K.ACTION]), generator=g) < 0.5)
            rows[K.MC_RETURN][failed] = 0.0
            buffers.add_episode(task, "online", rows)
    n_rows = per_task * n_tasks if phase == "warmup" else 2 * n_tasks * (batch_size // (2 * n_tasks))
    if n_rows < n_tasks * (1 if phase == "warmup" else 2):
        raise ValueError(f"batch_size {batch_size} is too small for {n_tasks} tasks in phase {phase}")
    sampler = BufferSampler(buffers, n_rows, phase, refine_batch_size=batch_size, min_rollout=1, seed=seed)
    return sampler.sample()


def image_encoder_config(arch: str, freeze: bool) -> dict:
    """The policy's ``image_encoder`` as ``dual_actor.fit`` passes it for ``image_encoder=<arch>``: that section
    of the composed config (``conf/image_encoder/<arch>.yaml`` over its schema) as a plain dict, with ``freeze``
    overridden."""
    from hydra import compose, initialize_config_dir

    try:  # registers the schemas conf/ names (a --baseline-repo checkout from before them has none)
        import dual_actor.config.store  # noqa: F401
    except ImportError:
        pass
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"image_encoder={arch}"])
    spec = OmegaConf.to_container(cfg.image_encoder, resolve=True)
    spec["freeze"] = bool(freeze)
    return spec


def camera_names(n: int) -> list[str]:
    return [f"cam{i}" for i in range(n)]


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to(v, device) for v in batch]
    return batch


def build_module(phase: str, max_updates: int, cameras: int = 0, image_size: int = 128,
                 image_encoder: str = "resnet18", freeze_encoder: bool = False, pixel_vla: str | None = None
                 ) -> DualActorModule:
    """The benchmarked module: module defaults (the core-module entry's setup), plus, with
    ``cameras > 0``, the image encoder of ``conf/image_encoder/<image_encoder>.yaml`` on cameras
    ``cam0..`` of ``image_size`` x ``image_size``; with ``pixel_vla`` (a bench VLA folder) the pixel bench's
    learner (docs/vla.md): the proprio state, h from that frozen VLA, ``image_encoder=h``."""
    if pixel_vla is not None:
        policy = dict(tasks=TASKS, obs_dim=4, proprio_dim=4, action_dim=4, state_slice=[0, 4],
                      image_encoder={"kind": "h"}, cameras=["corner", "gripperPOV"], image_size=128,
                      backbone={"name": "smolvla", "checkpoint": pixel_vla, "device": "cpu",
                                "camera_map": {"corner": "corner", "gripperPOV": "gripperPOV"}})
        return DualActorModule(policy=policy, phase=phase, max_updates=max_updates, log_every=50)
    policy = dict(tasks=TASKS, obs_dim=39, proprio_dim=4, action_dim=4)
    if cameras > 0:
        policy.update(image_encoder=image_encoder_config(image_encoder, freeze_encoder),
                      cameras=camera_names(cameras), image_size=image_size)
    return DualActorModule(policy=policy, phase=phase, max_updates=max_updates, log_every=50)


def dual_actor_rate(phase: str, updates: int, warmup: int, batch_size: int, device: str, cameras: int = 0,
                    image_size: int = 128, image_encoder: str = "resnet18", freeze_encoder: bool = False,
                    precision: str = "32-true", compile_nets: bool = False, calql_samples: bool = False,
                    pixel_vla: str | None = None) -> float:
    obs_dim, proprio_dim, action_dim = (4 if pixel_vla else 39), 4, 4
    torch.manual_seed(0)
    module = build_module(phase, warmup + updates, cameras, image_size, image_encoder, freeze_encoder, pixel_vla)
    if pixel_vla is not None:  # the learner never runs the VLA: a call would fail the measurement
        def no_vla(*a, **k):
            raise RuntimeError("the pixel bench's learner ran the VLA")
        module.policy.backbone.embed = module.policy.backbone.forward = no_vla
    if compile_nets:
        compile_module(module)
    if calql_samples:  # the lever off: Cal-QL draws n samples per state although primary mode is deterministic
        type(module.policy.primary).deterministic = property(lambda self: False)  # this process only
    gpu = device.startswith("cuda")
    batch = make_batch(batch_size, obs_dim, proprio_dim, action_dim, len(TASKS), cameras=cameras,
                       image_size=image_size, phase=phase, h_dim=module.policy.h_dim if pixel_vla else None)
    batch = _to(batch, torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu"))
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu", devices=1, max_epochs=1, logger=False, precision=precision,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(module, DataLoader(_Repeat(batch), batch_size=None))
    if timer.t0 is None:
        raise RuntimeError(f"the module stopped after {module.num_updates} updates, before warm-up {warmup} ended")
    return updates / (timer.t1 - timer.t0)


def compile_module(module: DualActorModule) -> None:
    """The ``compile`` lever: ``torch.compile`` (inductor, static shapes) of every network the update runs
    (the critics' and targets' ``encode`` / ``q``, the primary actor's and its EMA's networks, the refinement
    actor's MLPs), as lerobot compiles its critics."""
    for c in (module.critics, module.target_critics):
        c.encode = torch.compile(c.encode, dynamic=False)
        c.q = torch.compile(c.q, dynamic=False)
    for p in (module.policy.primary, module.primary_ema):
        if p is not None:
            p.net = torch.compile(p.net, dynamic=False)
            if p.mean_net is not None:
                p.mean_net = torch.compile(p.mean_net, dynamic=False)
    r = module.policy.refinement
    r.head, r.obs_proj, r.cmd_proj = (torch.compile(m, dynamic=False) for m in (r.head, r.obs_proj, r.cmd_proj))


def lerobot_rate(updates: int, warmup: int, batch_size: int, device: str, cameras: int = 0, image_size: int = 128,
                 vision_encoder: str | None = None, freeze_encoder: bool | None = None,
                 use_torch_compile: bool | None = None) -> float:
    from lerobot_sac_anchor import make_lerobot_sac_update

    step = make_lerobot_sac_update(
        batch_size=batch_size, state_dim=39, action_dim=4, device=device,
        image_shape=(3, image_size, image_size) if cameras > 0 else None, num_cameras=cameras,
        vision_encoder=vision_encoder, freeze_vision_encoder=freeze_encoder, use_torch_compile=use_torch_compile,
    )
    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(updates):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return updates / (time.perf_counter() - t0)


def _trunk_counter(trunks, store: dict):
    """Forward hooks on the image trunks: ``store["fwd"]`` += images through a trunk,
    ``store["graph"]`` += those run with autograd recording (a trunk parameter requires grad)."""

    def hook(mod, inputs, out):
        n = inputs[0].shape[0]
        store["fwd"] += n
        if torch.is_grad_enabled() and any(q.requires_grad for q in mod.parameters()):
            store["graph"] += n

    return [t.register_forward_hook(hook) for t in trunks]


def count_work(batch_size: int, cameras: int, image_size: int, image_encoder: str, freeze_encoder: bool,
               lerobot_encoder: str | None, lerobot_freeze: bool | None, rows: int = 6) -> dict:
    """Arithmetic of one update, both sides, independent of the hardware: matmul/conv FLOPs
    (``torch.utils.flop_counter``, forward + backward) of one update on ``rows`` batch rows, scaled
    linearly to ``batch_size``, and images through a ResNet trunk per batch row (``fwd``; ``graph``: of
    those, recorded for autograd). lerobot runs eagerly here (``torch.compile`` does not change the
    arithmetic)."""
    from torch.utils.flop_counter import FlopCounterMode

    from dual_actor.nets.image import ResNetTrunk
    from lerobot_sac_anchor import make_lerobot_sac_update

    out = {"rows": rows}
    scale = batch_size / rows
    for phase in ("warmup", "online"):
        torch.manual_seed(0)
        module = build_module(phase, 1, cameras, image_size, image_encoder, freeze_encoder)
        batch = make_batch(rows, 39, 4, 4, len(TASKS), cameras=cameras, image_size=image_size, phase=phase)
        store = {"fwd": 0, "graph": 0}
        handles = _trunk_counter([m for m in module.modules() if isinstance(m, ResNetTrunk)], store)
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        with FlopCounterMode(display=False) as fc:
            trainer.fit(module, DataLoader(_Repeat(batch), batch_size=None))
        for h in handles:
            h.remove()
        out[f"dual_actor_{phase}_tflop"] = fc.get_total_flops() * scale / 1e12
        if cameras > 0:
            out[f"dual_actor_{phase}_trunk_images_per_row"] = {k: v / rows for k, v in store.items()}
    step = make_lerobot_sac_update(
        batch_size=rows, state_dim=39, action_dim=4, device="cpu",
        image_shape=(3, image_size, image_size) if cameras > 0 else None, num_cameras=cameras,
        vision_encoder=lerobot_encoder, freeze_vision_encoder=lerobot_freeze, use_torch_compile=False,
    )
    store = {"fwd": 0, "graph": 0}
    handles = _trunk_counter([step.policy.encoder_critic.image_encoder] if cameras > 0 else [], store)
    with FlopCounterMode(display=False) as fc:
        step()
    for h in handles:
        h.remove()
    out["lerobot_sac_tflop"] = fc.get_total_flops() * scale / 1e12
    if cameras > 0:
        out["lerobot_sac_trunk_images_per_row"] = {k: v / rows for k, v in store.items()}
    return out


def _fmt(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.3g}"


def gemm_peak(device: str, n: int = 2048, repeats: int = 10) -> dict:
    """This device's matmul peak in GFLOP/s: the best of ``repeats`` n x n @ n x n products, fp32 and bf16."""
    out = {}
    dev = torch.device(device)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        best = float("inf")
        for i in range(repeats + 2):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ b
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                best = min(best, time.perf_counter() - t0)
        out[f"gemm_peak_{name}_gflops"] = round(2 * n**3 / best / 1e9, 1)
    return out


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation")
OPTIM_OPS = ("aten::_fused_adam_", "aten::_foreach_")


def breakdown(phase: str, batch_size: int, updates: int = 30, warmup: int = 10) -> dict:
    """Where one update's time goes (CPU): torch-profiler self time of matmul kernels, optimizer / Polyak /
    clipping (fused Adam, ``_foreach_*``), every other kernel (norms, activations, copies, ...) and the rest of
    the wall time (Python, Lightning, the dispatcher), per update; plus the update's matmul FLOPs
    (``torch.utils.flop_counter`` on the same batch) and the GFLOP/s the matmul kernels achieve."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    module = build_module(phase, 1)
    batch = make_batch(batch_size, 39, 4, 4, len(TASKS), phase=phase)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with FlopCounterMode(display=False) as fc:
        trainer.fit(module, DataLoader(_Repeat(batch), batch_size=None))
    flops = fc.get_total_flops()

    class Prof(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if pl_module.num_updates == warmup:
                self.prof = profile(activities=[ProfilerActivity.CPU])
                self.prof.__enter__()
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            self.wall = time.perf_counter() - self.t0
            self.prof.__exit__(None, None, None)

    torch.manual_seed(0)
    module = build_module(phase, warmup + updates)
    cb = Prof()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, DataLoader(_Repeat(batch), batch_size=None))
    parts = {"matmul": 0.0, "optimizer": 0.0, "other_kernels": 0.0}
    for ev in cb.prof.key_averages():
        if not ev.key.startswith("aten::"):
            continue
        us = ev.self_cpu_time_total
        key = ("matmul" if ev.key in MATMUL_OPS else "optimizer" if ev.key.startswith(OPTIM_OPS) else "other_kernels")
        parts[key] += us
    ms = {k: v / 1e3 / updates for k, v in parts.items()}
    wall_ms = cb.wall * 1e3 / updates
    ms["python_framework"] = max(wall_ms - sum(ms.values()), 0.0)
    return {"profiled_ms_per_update": round(wall_ms, 2), "ms_per_update": {k: round(v, 2) for k, v in ms.items()},
            "share": {k: round(v / wall_ms, 3) for k, v in ms.items()}, "gflop_per_update": round(flops / 1e9, 3),
            "matmul_gflops": round(flops / 1e9 / (ms["matmul"] / 1e3), 1)}


def _arm_command(arm: dict, args) -> tuple[list[str], dict]:
    common = ["--updates", str(args.updates), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
              "--device", args.device, "--cameras", str(args.cameras), "--image-size", str(args.image_size),
              "--image-encoder", args.image_encoder, "--lerobot-vision-encoder", args.lerobot_vision_encoder]
    common += ["--freeze-encoder"] * args.freeze_encoder + ["--lerobot-no-compile"] * args.lerobot_no_compile
    env = dict(os.environ)
    if arm.get("repo"):
        env["BENCH_DUAL_ACTOR_REPO"] = str(Path(arm["repo"]).resolve())
    return [sys.executable, str(Path(__file__).resolve()), *common, "--one", json.dumps(arm)], env


def run_one(arm: dict, args) -> float:
    """One measurement (in this process): updates/s of ``arm``."""
    if arm["kind"] == "lerobot":
        images = args.cameras > 0
        match = images and args.lerobot_vision_encoder == "match"
        return lerobot_rate(args.updates, args.warmup, args.batch_size, args.device, args.cameras, args.image_size,
                            vision_encoder=args.image_encoder if match else None,
                            freeze_encoder=bool(args.freeze_encoder) if match else None,
                            use_torch_compile=False if args.lerobot_no_compile else None)
    return dual_actor_rate(arm["phase"], args.updates, args.warmup, args.batch_size, args.device, args.cameras,
                           args.image_size, args.image_encoder, args.freeze_encoder,
                           arm.get("precision", args.precision), arm.get("compile", False),
                           arm.get("calql_samples", False), arm.get("pixel_vla"))


def arms_of(args) -> dict[str, dict]:
    arms = {f"dual_actor_{ph}": {"kind": "dual_actor", "phase": ph} for ph in ("warmup", "online")}
    if not args.skip_lerobot:
        arms["lerobot_sac"] = {"kind": "lerobot"}
    for ph in ("warmup", "online"):
        if args.baseline_repo:
            arms[f"baseline_{ph}"] = {"kind": "dual_actor", "phase": ph, "repo": str(args.baseline_repo)}
        if "bf16" in args.levers:
            arms[f"bf16_{ph}"] = {"kind": "dual_actor", "phase": ph, "precision": "bf16-mixed"}
        if "compile" in args.levers:
            arms[f"compile_{ph}"] = {"kind": "dual_actor", "phase": ph, "compile": True}
        if "calql-samples" in args.levers and ph == "warmup":
            arms["calqlsamples_warmup"] = {"kind": "dual_actor", "phase": ph, "calql_samples": True}
        if args.pixel_bench:
            arms[f"pixel_{ph}"] = {"kind": "dual_actor", "phase": ph, "pixel_vla": args.pixel_vla}
    return arms


def interleaved(arms: dict[str, dict], args) -> dict[str, list[float]]:
    """``args.rounds`` rounds, every arm once per round in a fresh process, in a fixed order (A B A B ...);
    ``--same-process``: in this one (a quick check of the script: no figure to quote)."""
    rates: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(args.rounds):
        for name, arm in arms.items():
            if args.same_process:
                rates[name].append(run_one(arm, args))
                print(f"round {r + 1}/{args.rounds} {name:<22} {rates[name][-1]:8.2f} updates/s", flush=True)
                continue
            cmd, env = _arm_command(arm, args)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{\"updates_per_s\"")]
            if out.returncode != 0 or not lines:
                raise RuntimeError(f"arm {name} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
            rates[name].append(json.loads(lines[-1])["updates_per_s"])
            print(f"round {r + 1}/{args.rounds} {name:<22} {rates[name][-1]:8.2f} updates/s", flush=True)
    return rates


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--updates", type=int, default=200, help="timed updates per measurement")
    p.add_argument("--warmup", type=int, default=20, help="untimed updates first (allocation, torch.compile)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (every arm once per round)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32-true", help="Lightning precision (conf/trainer: 32-true)")
    p.add_argument("--cameras", type=int, default=0, help="cameras through the image critics (0: state only)")
    p.add_argument("--image-size", type=int, default=128, help="H = W of every camera")
    p.add_argument("--image-encoder", choices=("resnet18", "resnet10"), default="resnet18")
    p.add_argument("--freeze-encoder", action="store_true",
                   help="freeze the ResNet trunks (ours: image_encoder.freeze=true; lerobot: freeze_vision_encoder)")
    p.add_argument("--lerobot-vision-encoder", choices=("match", "default"), default="match",
                   help="lerobot's encoder with cameras: match (a ResNet of --image-encoder's depth through "
                        "vision_encoder_name, frozen iff --freeze-encoder) or default (lerobot as shipped: its "
                        "4-conv DefaultImageEncoder, vision_encoder_name=None, freeze_vision_encoder=True)")
    p.add_argument("--lerobot-no-compile", action="store_true",
                   help="SACConfig.use_torch_compile=False (lerobot's default is True)")
    p.add_argument("--skip-lerobot", action="store_true")
    p.add_argument("--baseline-repo", type=Path,
                   help="also time the module of another checkout (e.g. a worktree of the commit before a lever)")
    p.add_argument("--levers", nargs="*", default=[], choices=("bf16", "compile", "calql-samples"),
                   help="also time the update with bf16-mixed autocast / torch.compile of its networks / (warm-up) "
                        "Cal-QL scoring n samples of the deterministic primary mode instead of one")
    p.add_argument("--gemm-size", type=int, default=2048, help="n of the n x n matmuls that measure the GEMM peak")
    p.add_argument("--breakdown", action="store_true",
                   help="also profile one update per phase (time split, matmul GFLOP/s vs the GEMM peak)")
    p.add_argument("--breakdown-updates", type=int, default=30,
                   help="profiled updates per phase of --breakdown (after a third as many untimed ones)")
    p.add_argument("--count-work", action="store_true",
                   help="instead of timing: FLOPs per update (scaled to --batch-size) and ResNet-trunk images "
                        "per batch row, both sides, from one update on 6 rows on the CPU")
    p.add_argument("--same-process", action="store_true",
                   help="measure every arm in this process, not each in a fresh one: a quick check of the script "
                        "(one process's caches and allocator are shared by the arms; not for figures; no "
                        "--baseline-repo or --levers)")
    p.add_argument("--pixel-bench", action="store_true",
                   help="also time the pixel bench's learner (docs/vla.md: proprio state, h of a frozen bench VLA, "
                        "image_encoder=h) against the state bench's, interleaved: pixel_<phase>_x_state")
    p.add_argument("--pixel-vla", default=None, help="the bench VLA folder of --pixel-bench (default: its "
                                                     "architecture with random weights, built here)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one arm's measurement, printed as JSON
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.cameras < 0 or args.updates < 1 or args.warmup < 1 or args.rounds < 1:
        p.error("--cameras >= 0, --updates >= 1, --warmup >= 1, --rounds >= 1")
    if args.batch_size < len(TASKS):
        p.error(f"--batch-size must be at least {len(TASKS)} (one row per task)")
    if args.same_process and (args.baseline_repo or args.levers):
        p.error("--same-process measures only this checkout's default arms (no --baseline-repo, no --levers)")
    torch.set_float32_matmul_precision("high")  # as dual_actor.fit does (TF32 matmuls on GPU), both sides
    if args.one:
        rate = run_one(json.loads(args.one), args)
        print(json.dumps({"updates_per_s": rate}))
        return {"updates_per_s": rate}

    gpu = args.device.startswith("cuda")
    images = args.cameras > 0
    match = images and args.lerobot_vision_encoder == "match"
    lerobot_encoder = args.image_encoder if match else None  # None: lerobot's DefaultImageEncoder
    lerobot_freeze = bool(args.freeze_encoder) if match else None  # None: lerobot's default (True)
    res = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}",
           "device": torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()} threads",
           "torch": torch.__version__, "batch_size": args.batch_size, "updates": args.updates,
           "warmup": args.warmup, "rounds": args.rounds, "precision": args.precision, "cameras": args.cameras,
           "image_size": args.image_size if images else None,
           "image_encoder": args.image_encoder if images else "state",
           "freeze_encoder": bool(args.freeze_encoder) if images else None,
           "lerobot_vision_encoder": (lerobot_encoder or "DefaultImageEncoder") if images else None,
           "lerobot_freeze_vision_encoder": (True if lerobot_freeze is None else lerobot_freeze) if images else None,
           "lerobot_torch_compile": not args.lerobot_no_compile,
           "baseline_repo": str(args.baseline_repo) if args.baseline_repo else None}
    if args.count_work:
        res["lerobot_torch_compile"] = False  # counted eagerly: compiling does not change the arithmetic
        res.update(count_work(args.batch_size, args.cameras, args.image_size, args.image_encoder,
                              args.freeze_encoder, lerobot_encoder, lerobot_freeze))
        for phase in ("warmup", "online"):
            print(f"dual-actor {phase}: {res[f'dual_actor_{phase}_tflop']:.3g} TFLOP/update"
                  + (f", trunk images per row {res[f'dual_actor_{phase}_trunk_images_per_row']}" if images else ""))
        print(f"lerobot SAC: {res['lerobot_sac_tflop']:.3g} TFLOP/update"
              + (f", trunk images per row {res['lerobot_sac_trunk_images_per_row']}" if images else ""))
        print("\n" + json.dumps(res, indent=2))
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
        return res

    res.update(gemm_peak(args.device, args.gemm_size))
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="pixel-vla-")
    if args.pixel_bench and args.pixel_vla is None:  # the learner never runs it: random weights measure the same
        from bench_vla_latency import random_bench_vla

        args.pixel_vla = str(random_bench_vla(Path(tmp.name) / "vla", smoke=False))
    arms = arms_of(args)
    rates = interleaved(arms, args)
    res["rates"] = rates
    for name, r in rates.items():
        res[name] = statistics.median(r)
    if "lerobot_sac" in rates:
        for name in arms:
            if name != "lerobot_sac":
                res[f"{name}_x_lerobot"] = statistics.median(a / b for a, b in zip(rates[name], rates["lerobot_sac"]))
    for ph in ("warmup", "online"):  # each lever / the baseline against the current module, per round
        for other in ("baseline", "bf16", "compile", "calqlsamples"):
            if f"{other}_{ph}" in rates:
                res[f"dual_actor_{ph}_x_{other}"] = statistics.median(
                    a / b for a, b in zip(rates[f"dual_actor_{ph}"], rates[f"{other}_{ph}"]))
        if f"pixel_{ph}" in rates:  # the pixel bench's learner against the state bench's, per round
            res[f"pixel_{ph}_x_state"] = statistics.median(
                a / b for a, b in zip(rates[f"pixel_{ph}"], rates[f"dual_actor_{ph}"]))
    if args.breakdown and not gpu:
        peak = res["gemm_peak_fp32_gflops"]
        for ph in ("warmup", "online"):
            b = breakdown(ph, args.batch_size, args.breakdown_updates, max(1, args.breakdown_updates // 3))
            b["matmul_share_of_peak"] = round(b["matmul_gflops"] / peak, 3)
            b["arithmetic_bound_updates_per_s"] = round(peak / b["gflop_per_update"], 1)
            res[f"breakdown_{ph}"] = b

    print(f"\nGEMM peak: {res['gemm_peak_fp32_gflops']} GFLOP/s fp32, {res['gemm_peak_bf16_gflops']} bf16")
    print(f"{'arm':<24} {'updates/s (median)':>18} {'x lerobot':>10}   per round")
    for name in arms:
        ratio = res.get(f"{name}_x_lerobot", 1.0 if name == "lerobot_sac" else float("nan"))
        print(f"{name:<24} {res[name]:>18.3g} {ratio:>10.2f}   {[round(x, 2) for x in rates[name]]}")
    for key in sorted(k for k in res if any(f"_x_{o}" in k for o in ("baseline", "bf16", "compile", "calqlsamples"))):
        print(f"{key}: {res[key]:.2f}")
    for ph in ("warmup", "online"):
        if f"breakdown_{ph}" in res:
            print(f"breakdown {ph}: {json.dumps(res[f'breakdown_{ph}'])}")

    # one markdown row: | setup | device | B | warm-up /s | online /s | lerobot /s | warm-up x | online x |
    if images:
        setup = (f"{args.image_encoder} {'frozen' if args.freeze_encoder else 'trained'}, {args.cameras} x "
                 f"{args.image_size}x{args.image_size} (lerobot: {res['lerobot_vision_encoder']}"
                 f"{', frozen' if res['lerobot_freeze_vision_encoder'] else ', trained'}"
                 f"{' + cached' if match and args.freeze_encoder else ''})")
    else:
        setup = "state (39-d)"
    ler = res.get("lerobot_sac")
    cells = [setup, res["device"], str(args.batch_size), _fmt(res["dual_actor_warmup"]), _fmt(res["dual_actor_online"]),
             _fmt(ler) if ler else "-",
             f"{res['dual_actor_warmup_x_lerobot']:.2f}" if ler else "-",
             f"{res['dual_actor_online_x_lerobot']:.2f}" if ler else "-"]
    print("\n| setup | device | batch | dual-actor warm-up (updates/s) | dual-actor online (updates/s) "
          "| lerobot SAC (updates/s) | warm-up x lerobot | online x lerobot |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("| " + " | ".join(cells) + " |")
    print("\n" + json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
