"""Acting latency: one control step's policy inference, and the control loop's achieved rate.

Measures, for the default policy size (39-d state, 3 tasks, 4-d action):
* ``primary``: embed + one-step primary action from the cached h (Eq. 1);
* ``refinement``: embed + refinement actor mu + one-step action from w ~ N(mu, K^2 I) (Eq. 2);
* ``loop``: the full ControlLoop step on the Metaworld bench (inference + simulated operator +
  env step + online talk-and-tweak labelling + transition bookkeeping), as fast as possible, and
  at a fixed 10 Hz period (achieved rate and overruns).

    python benchmarks/acting_latency.py [--policy checkpoints/<run>/policy] [--steps 2000]
    python benchmarks/acting_latency.py --steps 20 --hz-steps 5 --max-episode-steps 10   # tiny (tests)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dual_actor.policy import DualActorPolicy
from dual_actor.runtime.loop import ControlLoop
from dual_actor.runtime.sim import BENCH_TASKS, MetaworldTaskEnv
from dual_actor.runtime.transport import InProcessTransport


def _percentiles(xs):
    a = np.asarray(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


@torch.no_grad()
def inference(policy, steps: int, command: str | None) -> dict:
    task = policy.tasks[0]
    state = torch.randn(1, policy.config.obs_dim)
    times = []
    for i in range(steps + 50):
        t0 = time.perf_counter()
        h = policy.embed(state, [task])
        policy.act(h, state, state[:, :4], commands=[command])
        if i >= 50:
            times.append(time.perf_counter() - t0)
    return _percentiles(times)


def loop_rate(policy, steps: int, period_s: float | None, max_episode_steps: int = 200) -> dict:
    """Whole episodes (of at most ``max_episode_steps``) until ``steps`` env steps have run."""
    task = list(BENCH_TASKS)[0]
    env = MetaworldTaskEnv(task, seed=0, max_episode_steps=max_episode_steps)
    transport = InProcessTransport()
    loop = ControlLoop(env, task, policy, None, transport, period_s=period_s, translation_scale_m=0.01)
    t0 = time.perf_counter()
    while loop.stats.env_steps < steps:
        loop.run_episode()
        transport.poll_episodes()
    dt = time.perf_counter() - t0
    env.close()
    return {"steps": loop.stats.env_steps, "rate_hz": loop.stats.env_steps / dt, "overruns": loop.stats.overruns}


def build_policy(path: Path | None) -> DualActorPolicy:
    """The measured policy: a saved one, or a fresh default-size one for the bench (39-d state, 3 tasks)."""
    if path is not None:
        return DualActorPolicy.from_pretrained(path).eval()
    return DualActorPolicy(tasks=list(BENCH_TASKS), obs_dim=39, proprio_dim=4, action_dim=4).eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", type=Path, help="a save_pretrained folder (default: fresh default-size policy)")
    p.add_argument("--steps", type=int, default=2000, help="timed inference calls, and control-loop steps run free")
    p.add_argument("--hz-steps", type=int, default=100, help="control-loop steps at 10 Hz (whole episodes: at least)")
    p.add_argument("--max-episode-steps", type=int, default=200, help="episode length limit of the control loop")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    torch.manual_seed(0)
    policy = build_policy(a.policy)
    res = {
        "torch_threads": torch.get_num_threads(),
        "primary": inference(policy, a.steps, None),
        "refinement": inference(policy, a.steps, "move left and up"),
        "loop_fast": loop_rate(policy, a.steps, None, a.max_episode_steps),
        "loop_10hz": loop_rate(policy, a.hz_steps, 0.1, a.max_episode_steps),
    }
    for k in ("primary", "refinement"):
        r = res[k]
        print(f"{k:<12} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms")
    print(f"loop (as fast as possible): {res['loop_fast']['rate_hz']:.0f} steps/s")
    print(f"loop (10 Hz): {res['loop_10hz']['rate_hz']:.2f} Hz achieved, {res['loop_10hz']['overruns']} overruns "
          f"in {res['loop_10hz']['steps']} steps")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
