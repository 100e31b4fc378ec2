"""Learner throughput: one full DualActorModule update vs lerobot 0.4.4's SAC update, same run.

Our update = 3 task critics (Cal-QL in warm-up / Bellman online, twin ensembles, Polyak) +
primary actor (consistency BC + Eq. 15 weighted Q) + refinement actor (Eq. 8-11), batch 256,
state observations (39-d Metaworld state, 4-d proprio, 4-d action), the default network sizes
of ``conf/algo/dual_actor.yaml``. Timed inside a real ``Trainer.fit`` (Lightning overhead
included), on a fixed batch so data sampling is not measured (lerobot's side likewise).

    python benchmarks/learner_update.py --updates 200            # CPU
    python benchmarks/learner_update.py --device cuda --updates 500
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
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


def make_batch(batch_size: int, obs_dim: int, proprio_dim: int, action_dim: int, n_tasks: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    h_dim = obs_dim + n_tasks

    def rows(b, task):
        return {
            K.H: torch.randn(b, h_dim, generator=g), K.OBS: torch.randn(b, obs_dim, generator=g),
            K.PROPRIO: torch.randn(b, proprio_dim, generator=g),
            K.ACTION: torch.rand(b, action_dim, generator=g) * 2 - 1,
            K.REWARD: (torch.rand(b, generator=g) > 0.9).float(), K.DONE: (torch.rand(b, generator=g) > 0.95).float(),
            K.NEXT_H: torch.randn(b, h_dim, generator=g), K.NEXT_OBS: torch.randn(b, obs_dim, generator=g),
            K.NEXT_PROPRIO: torch.randn(b, proprio_dim, generator=g), K.MC_RETURN: torch.rand(b, generator=g),
            K.COMMAND: torch.randint(0, 27, (b,), generator=g), K.TASK: torch.full((b,), task, dtype=torch.long),
        }

    tt = rows(batch_size, 0)
    tt[K.TASK] = torch.arange(batch_size) % n_tasks
    return {K.TASKS: [rows(batch_size // n_tasks, i) for i in range(n_tasks)], K.TALK_TWEAK: tt}


def dual_actor_rate(phase: str, updates: int, warmup: int, batch_size: int, device: str) -> float:
    obs_dim, proprio_dim, action_dim = 39, 4, 4
    module = DualActorModule(
        policy=dict(tasks=TASKS, obs_dim=obs_dim, proprio_dim=proprio_dim, action_dim=action_dim),
        phase=phase, max_updates=warmup + updates, log_every=50,
    )
    batch = make_batch(batch_size, obs_dim, proprio_dim, action_dim, len(TASKS))
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(module, DataLoader(_Repeat(batch), batch_size=None))
    return updates / (timer.t1 - timer.t0)


def lerobot_rate(updates: int, warmup: int, batch_size: int, device: str) -> float:
    from lerobot_sac_anchor import make_lerobot_sac_update

    step = make_lerobot_sac_update(batch_size=batch_size, state_dim=39, action_dim=4, device=device)
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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-lerobot", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    res = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}",
           "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()} threads",
           "torch": torch.__version__, "batch_size": args.batch_size, "updates": args.updates}
    for phase in ("warmup", "online"):
        res[f"dual_actor_{phase}"] = dual_actor_rate(phase, args.updates, args.warmup, args.batch_size, args.device)
    if not args.skip_lerobot:
        res["lerobot_sac"] = lerobot_rate(args.updates, args.warmup, args.batch_size, args.device)
    print(f"{'update':<40} {'updates/s':>10} {'x lerobot':>10}")
    for key, label in (("dual_actor_warmup", "dual-actor warm-up (Cal-QL)"),
                       ("dual_actor_online", "dual-actor online (Bellman)"),
                       ("lerobot_sac", "lerobot 0.4.4 SAC")):
        if key in res:
            ratio = res[key] / res["lerobot_sac"] if "lerobot_sac" in res else float("nan")
            print(f"{label:<40} {res[key]:>10.1f} {ratio:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
