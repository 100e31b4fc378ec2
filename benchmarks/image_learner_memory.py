"""Image learner, frozen trunk: trunks, checkpoint size, memory and time per update, this checkout vs another.

For each checkout (this one, and ``--baseline-repo`` e.g. a worktree of the commit before the shared trunk),
in a fresh process: the benchmark module of ``learner_update.py`` with ``--cameras`` cameras through a frozen
``--image-encoder`` trunk; it reports the ResNet trunks in the learner, the bytes ``torch.save`` writes for
the module's state dict (what last.ckpt holds besides optimizer state; shared tensors are written once), the
optimizer state, the process's peak RSS growth over ``--updates`` updates after the module and batch exist
(CPU; on CUDA the peak allocated memory) and the time per update. Interleaved over ``--rounds``.

    python benchmarks/image_learner_memory.py --baseline-repo ../base --batch-size 24 --updates 3
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    import learner_update as lu
    from dual_actor.nets.image import ResNetTrunk

    torch.manual_seed(0)
    module = lu.build_module("online", args.updates + 1, args.cameras, args.image_size, args.image_encoder, True)
    batch = lu.make_batch(args.batch_size, 39, 4, 4, len(lu.TASKS), cameras=args.cameras, image_size=args.image_size,
                          phase="online")
    gpu = args.device.startswith("cuda")
    if gpu:
        batch = lu._to(batch, torch.device("cuda"))
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    trunks = len({id(m) for m in module.modules() if isinstance(m, ResNetTrunk)})
    times = []

    class T(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, b, i):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, o, b, i):
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer = L.Trainer(accelerator="gpu" if gpu else "cpu", devices=1, max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[T()])
    trainer.fit(module, DataLoader(lu._Repeat(batch), batch_size=None))
    opt = io.BytesIO()
    torch.save([o.state_dict() for o in trainer.optimizers], opt)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if gpu
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    return {"trunks": trunks, "state_dict_mib": buf.getbuffer().nbytes / 2**20,
            "optimizer_state_mib": opt.getbuffer().nbytes / 2**20, "peak_mem_growth_mib": peak,
            "s_per_update": statistics.median(times[1:]) if len(times) > 1 else times[0]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline-repo", type=Path)
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--image-encoder", choices=("resnet18", "resnet10"), default="resnet10")
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--updates", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(measure(args)))
        return {}
    repos = {"current": ROOT, **({"baseline": args.baseline_repo.resolve()} if args.baseline_repo else {})}
    out: dict = {k: [] for k in repos}
    for _ in range(args.rounds):
        for name, repo in repos.items():
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", "--cameras", str(args.cameras),
                   "--image-size", str(args.image_size), "--image-encoder", args.image_encoder,
                   "--batch-size", str(args.batch_size), "--updates", str(args.updates), "--device", args.device]
            env = {**os.environ, "BENCH_DUAL_ACTOR_REPO": str(repo), "PYTHONPATH": str(repo)}
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
            if r.returncode or not line:
                raise RuntimeError(f"{name} failed:\n{r.stderr[-3000:]}")
            out[name].append(json.loads(line[-1][7:]))
            print(name, out[name][-1], flush=True)
    res = {"setup": vars(args) | {"baseline_repo": str(args.baseline_repo), "json": None},
           **{name: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for name, ms in out.items()}}
    print(json.dumps(res, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main()
