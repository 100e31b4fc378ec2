"""Online throughput, in-process vs Ray, with 1, 2 and 4 simulated robots (issue 10 item 4).

Each cell is one ``python -m dual_actor.fit`` run of the built-in bench (state observations, the default
networks and batch), from the same warm-up checkpoint, with ``runtime=inprocess runtime.robots=N`` (every
robot's loops round-robin in the learner's process) or ``runtime=ray runtime.robots=N`` (one process per
robot). Reported per cell, from the run's ``summary.json`` (``online_after_fill``): online environment steps per
second and learner updates per second from the learner's first batch to the end of the budget (the steady state:
Ray's start, ~5 s, and the initial fill of ``online.min_rollout`` rows per task are left out; both are in
``online_seconds``, also recorded). Two control modes: ``free`` (``online.period_s=null``: as fast
as possible; Ray's robots then wait between episodes once ``--max-steps-ahead`` steps ahead of the learner, so
both runtimes keep one update per step) and ``10hz`` (``online.period_s=0.1`` per robot; robots never wait). The cells run interleaved (in-process, Ray,
in-process, Ray ...), ``--repeats`` times; the table gives medians and the Ray / in-process ratios.

    python benchmarks/multi_robot.py --json docs/figures/multi_robot.json
    python benchmarks/multi_robot.py --robots 1 --modes free --free-steps 60 --min-rollout 5 --warmup-updates 2 \
        --fit-args experiment=smoke --json /tmp/mr.json       # tiny (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cell(root: Path, warmup_ckpt: Path, runtime: str, robots: int, mode: str, steps: int, min_rollout: int,
             name: str, warmup_updates: int, max_steps_ahead: int, fit_args: list[str] = ()) -> dict:
    run = root / name
    run.mkdir(parents=True)
    shutil.copy(warmup_ckpt, run / "last.ckpt")
    args = [*fit_args, f"runtime={runtime}", f"runtime.robots={robots}", f"run_root={root}", f"run_name={name}",
            "resume=true",
            f"algo.warmup_updates={warmup_updates}", f"online.env_steps={steps}", f"online.min_rollout={min_rollout}", "online.log_teleop=false",
            "eval.trials=0", "eval.warmup_point=false", "eval.curve_every_env_steps=100000000",
            "trainer.progress_bar=false", "trainer.checkpoint_every=100000000",
            f"online.period_s={'0.1' if mode == '10hz' else 'null'}"]
    if runtime == "ray" and mode == "free":  # free-running robots wait for the learner: the same 1 update per step
        args.append(f"runtime.max_steps_ahead={max_steps_ahead}")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dual_actor.fit", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"})
    if r.returncode != 0:
        raise RuntimeError(f"{name}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    s = json.loads((run / "summary.json").read_text())
    w = s["online_after_fill"]  # from the first learner batch to the end of the budget
    return {"runtime": runtime, "robots": robots, "mode": mode, "env_steps": w["env_steps"], "updates": w["updates"],
            "seconds": w["seconds"], "online_seconds": s["online_seconds"], "process_seconds": time.perf_counter() - t0,
            "env_steps_per_s": w["env_steps"] / w["seconds"], "updates_per_s": w["updates"] / w["seconds"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robots", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--modes", nargs="+", default=["free", "10hz"], choices=["free", "10hz"])
    ap.add_argument("--free-steps", type=int, default=2400, help="online budget of a free-running cell")
    ap.add_argument("--hz-seconds", type=float, default=40.0, help="10 Hz cells: budget = robots x 10 Hz x this")
    ap.add_argument("--min-rollout", type=int, default=20)
    ap.add_argument("--max-steps-ahead", type=int, default=200,
                    help="free-running Ray robots wait once this many env steps ahead of the learner (UTD kept at 1)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--runtimes", nargs="+", default=["inprocess", "ray"], choices=["inprocess", "ray"])
    ap.add_argument("--warmup-updates", type=int, default=20, help="the shared warm-up checkpoint's updates")
    ap.add_argument("--fit-args", nargs="*", default=[],
                    help="extra overrides for every fit run, the warm-up included (e.g. experiment=smoke: small "
                         "networks, batch and demo set, for a quick check)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="multi_robot_"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    print(f"warm-up checkpoint ({args.warmup_updates} updates) ...", flush=True)
    r = subprocess.run([sys.executable, "-m", "dual_actor.fit", *args.fit_args, f"run_root={root}", "run_name=wu",
                        "online.env_steps=0",
                        f"algo.warmup_updates={args.warmup_updates}", "eval.trials=0", "trainer.progress_bar=false"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"warm-up failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    ckpt = root / "wu" / "last.ckpt"
    cells = []
    k = 0
    for rep in range(args.repeats):
        for mode in args.modes:
            for n in args.robots:
                steps = args.free_steps if mode == "free" else int(n * 10 * args.hz_seconds)
                for runtime in args.runtimes:  # interleaved: A B, per robot count
                    k += 1
                    c = run_cell(root, ckpt, runtime, n, mode, steps, args.min_rollout, f"c{k}", args.warmup_updates,
                                 args.max_steps_ahead, args.fit_args)
                    c["repeat"] = rep
                    cells.append(c)
                    print(f"{mode:5s} robots={n} {runtime:9s} {c['env_steps_per_s']:8.1f} env steps/s "
                          f"{c['updates_per_s']:7.2f} updates/s ({c['env_steps']} steps, {c['updates']} updates, "
                          f"{c['seconds']:.1f} s after the fill, {c['online_seconds']:.1f} s online)", flush=True)
    table = []
    for mode in args.modes:
        for n in args.robots:
            row = {"mode": mode, "robots": n}
            if len(args.runtimes) < 2:
                continue
            for runtime in ("inprocess", "ray"):
                cs = [c for c in cells if c["mode"] == mode and c["robots"] == n and c["runtime"] == runtime]
                row[f"{runtime}_env_steps_per_s"] = statistics.median(c["env_steps_per_s"] for c in cs)
                row[f"{runtime}_updates_per_s"] = statistics.median(c["updates_per_s"] for c in cs)
            row["ray_vs_inprocess_env_steps"] = row["ray_env_steps_per_s"] / row["inprocess_env_steps_per_s"]
            row["ray_vs_inprocess_updates"] = row["ray_updates_per_s"] / max(row["inprocess_updates_per_s"], 1e-9)
            table.append(row)
    print("\n| mode | robots | in-process env steps/s | Ray env steps/s | ratio | in-process updates/s | Ray updates/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['mode']} | {t['robots']} | {t['inprocess_env_steps_per_s']:.1f} | {t['ray_env_steps_per_s']:.1f} | "
              f"{t['ray_vs_inprocess_env_steps']:.2f}x | {t['inprocess_updates_per_s']:.2f} | {t['ray_updates_per_s']:.2f} | "
              f"{t['ray_vs_inprocess_updates']:.2f}x |")
    out = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d"), "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "cells": cells, "table": table}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
