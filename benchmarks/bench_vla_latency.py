"""Acting with the bench VLA on this CPU: embedding (h, Eq. 17) + the primary action, per observation, p50 / p99.

The pixel bench's control step (docs/vla.md): two camera frames + the instruction + proprio -> h from the frozen
SmolVLA (prefix forward, last VLM layer's K, V mask-pooled) -> the primary actor's one-step action (Eq. 1). The
10 Hz loop holds when p99 <= 100 ms. Also timed: the VLA acting alone (a full chunk of ``vla.chunk_size`` actions,
``vla.num_steps`` flow steps: what ``train_vla``'s own evaluation runs every ``vla.n_action_steps`` steps).

The VLA is a trained folder (``--vla DIR``, from ``python -m dual_actor.train_vla``) or, without one, the bench VLA
architecture of the config's ``vla`` section with random weights (latency does not depend on the weights), built
in a temporary folder; ``--smoke`` uses ``experiment=smoke``'s tiny sizes (tests).

    python benchmarks/bench_vla_latency.py [--vla checkpoints/bench_vla] [--iters 300] [--threads 1]
    python benchmarks/bench_vla_latency.py --smoke --iters 3 --warmup 1     # tiny (tests)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _percentiles(xs) -> dict:
    a = np.asarray(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def random_bench_vla(dest: Path, smoke: bool) -> Path:
    """The bench VLA architecture (the config's ``vla`` section) with random weights, saved at ``dest``."""
    from hydra import compose, initialize_config_dir
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    import dual_actor.config.store  # noqa: F401  (the schemas)
    from dual_actor.vla.bench import smolvla_config, smolvlm_config
    from dual_actor.vla.smolvlm import write_smolvlm_folder

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke"] if smoke else [])
    v = cfg.vla
    vlm = write_smolvlm_folder(dest / "vlm", smolvlm_config(v))
    config = smolvla_config(v, vlm, list(v.cameras), 4, 4)
    torch.manual_seed(0)
    SmolVLAPolicy(config).save_pretrained(dest)
    stats = {"observation.state": {"mean": torch.zeros(4), "std": torch.ones(4)},
             "action": {"mean": torch.zeros(4), "std": torch.ones(4)}}
    for proc in make_smolvla_pre_post_processors(config, dataset_stats=stats):
        proc.save_pretrained(dest)
    return dest


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vla", type=Path, default=None, help="a bench VLA folder (default: random weights)")
    p.add_argument("--smoke", action="store_true", help="experiment=smoke's tiny sizes (without --vla)")
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the robot side's share of the CPU)")
    p.add_argument("--image-size", type=int, default=128, help="rendered frame size fed to the VLA")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from dual_actor.policy import DualActorPolicy
    from dual_actor.vla.bench import VLAActor

    with tempfile.TemporaryDirectory(prefix="bench-vla-") as tmp:
        folder = args.vla if args.vla is not None else random_bench_vla(Path(tmp) / "vla", args.smoke)
        actor = VLAActor.load(folder)
        cams = actor.cameras
        policy = DualActorPolicy(tasks=["place the bolt", "pick up the bolt", "assemble the bolt"], obs_dim=4,
                                 proprio_dim=4, action_dim=4, cameras=cams, image_size=args.image_size,
                                 state_slice=[0, 4], image_encoder={"kind": "h"},
                                 backbone={"name": "smolvla", "checkpoint": str(folder), "device": "cpu",
                                           "camera_map": {c: c for c in cams}}).eval()
        rng = np.random.default_rng(0)
        frames = lambda: {c: rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)  # noqa: E731
                          for c in cams}
        from dual_actor.runtime.loop import observation_batch

        step, alone = [], []
        with torch.no_grad():
            for i in range(args.warmup + args.iters):
                state = rng.normal(size=39).astype(np.float32)
                obs = observation_batch(policy.state_of(state), slice(0, 4), frames(), as_mapping=True)
                t = time.perf_counter()
                h = policy.embed(obs, ["place the bolt"])
                policy.act(h, obs, obs["state"][:, :4])
                dt = time.perf_counter() - t
                actor.reset()  # a fresh queue: every call samples a whole chunk
                t2 = time.perf_counter()
                actor.act(state, frames(), "place the bolt")
                dt2 = time.perf_counter() - t2
                if i >= args.warmup:
                    step.append(dt)
                    alone.append(dt2)
        params = sum(p.numel() for p in actor.policy.parameters()) / 1e6
    res = {"vla": str(args.vla) if args.vla else ("random weights, experiment=smoke sizes" if args.smoke
                                                  else "random weights, the vla section's sizes"),
           "parameters_m": round(params, 3), "cameras": cams, "image_size": args.image_size, "threads": args.threads,
           "h_dim": policy.h_dim, "iters": args.iters,
           "embed_plus_primary_action": _percentiles(step), "vla_chunk_alone": _percentiles(alone)}
    print(json.dumps(res, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
