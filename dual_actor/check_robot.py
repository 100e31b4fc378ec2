"""``python -m dual_actor.check_robot env=... [key=value ...]``: is the robot there, and how fast can it be read?

Builds the env exactly as ``fit`` and ``record`` do (the same config), connects, reads ``check.reads`` observations
and camera frames without moving anything (``observe()`` and ``images()``: no reset, no step), reports the state's
size and its proprioception, the end effector and joints where the robot knows them, each camera's frame shape
and read rate, and the control rate the machine can hold against ``online.period_s``, then disconnects. A robot
that cannot be reached is one ``error:`` line and exit 2, within the adapter's connection timeout. Robot side:
no learner is imported (a robot computer runs it before anything is trained).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from dual_actor.cli import fail, run_hydra_app
from dual_actor.config.fields import ConfigError
from dual_actor.runtime.robot import UNREACHABLE



def _rate(seconds: list[float]) -> float:
    median = statistics.median(seconds)
    return float("inf") if median <= 0 else 1.0 / median


def _known(env, method: str):
    """``env.<method>()``, or None where the robot does not know it (no such method, or NotImplementedError: an
    arm without a URDF has no end-effector position)."""
    fn = getattr(env, method, None)
    try:
        return fn() if callable(fn) else None
    except NotImplementedError:
        return None


def check(cfg: DictConfig) -> dict[str, Any]:
    """Connect, read, report (a dict, also printed), disconnect; nothing moves."""
    from dual_actor.runtime.robot import robot_env

    if cfg.env.robot is None:
        raise ConfigError(f"env {cfg.env.name!r} has no robot (env.robot is null): nothing to check")
    task = cfg.check.task or str(cfg.env.tasks[0])
    t0 = time.perf_counter()
    env = robot_env(cfg, task, seed=int(cfg.online.seed), safe=False)  # it commands nothing, not even a hold
    try:
        connect_s = time.perf_counter() - t0
        if not callable(getattr(env, "observe", None)):
            raise ConfigError(f"{type(env).__name__} cannot be read without moving (it has no observe()): "
                              f"check_robot never resets or steps a robot")
        reads, frames, state = [], [], None
        shapes: dict[str, tuple] = {}
        for _ in range(max(1, int(cfg.check.reads))):
            t = time.perf_counter()
            state = np.asarray(env.observe(), dtype=np.float32)
            reads.append(time.perf_counter() - t)
            if env.cameras:
                t = time.perf_counter()
                images = env.images()
                frames.append(time.perf_counter() - t)
                shapes = {c: tuple(np.shape(images[c])) for c in env.cameras}
        ee, joints = _known(env, "ee_position"), _known(env, "joint_positions")
    finally:
        env.close()
    rounds = [r + (frames[i] if frames else 0.0) for i, r in enumerate(reads)]
    period = cfg.online.period_s
    report = {
        "robot": type(env).__name__, "task": task, "connect_seconds": round(connect_s, 3),
        "state_dim": int(state.shape[0]), "proprio": np.round(state[: int(cfg.env.proprio_dim)].astype(float), 4).tolist(),
        "ee_position_m": None if ee is None else np.round(np.asarray(ee, dtype=float), 4).tolist(),
        "joints": None if joints is None else np.round(np.asarray(joints, dtype=float), 4).tolist(),
        "state_read_hz": round(_rate(reads), 1),
        "cameras": {c: {"shape": list(shapes[c]), "read_hz": round(_rate(frames), 1)} for c in shapes},
        "control_hz_possible": round(_rate(rounds), 1),
        "period_s": period,
        "holds_period": None if period is None else bool(statistics.median(rounds) < float(period)),
    }
    if report["state_dim"] != int(cfg.env.obs_dim):
        raise ConfigError(f"the robot's state has {report['state_dim']} values, env.obs_dim is {cfg.env.obs_dim}")
    return report


def print_report(r: dict[str, Any]) -> None:
    print(f"{r['robot']} ({r['task']}): connected in {r['connect_seconds']} s, nothing moved")
    print(f"  state: {r['state_dim']} values, read at {r['state_read_hz']} Hz; proprio {r['proprio']}")
    if r["ee_position_m"] is not None:
        print(f"  end effector: {r['ee_position_m']} m")
    if r["joints"] is not None:
        print(f"  joints: {r['joints']}")
    for c, v in r["cameras"].items():
        print(f"  camera {c}: {tuple(v['shape'])}, read at {v['read_hz']} Hz")
    verdict = "" if r["period_s"] is None else (
        f" -> holds online.period_s={r['period_s']}" if r["holds_period"]
        else f" -> CANNOT hold online.period_s={r['period_s']} (reads alone take longer)")
    print(f"  control rate the reads allow: {r['control_hz_possible']} Hz{verdict}", flush=True)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    from dual_actor.config.store import check_config

    try:
        check_config(cfg)
        print_report(check(cfg))
    except ConfigError as e:
        fail(e)
    except UNREACHABLE as e:
        fail(f"env {cfg.env.name!r}: the robot could not be reached or read ({type(e).__name__}: "
             f"{str(e).splitlines()[0] if str(e) else 'no message'})")


def main() -> None:
    run_hydra_app(_main)


if __name__ == "__main__":
    main()
