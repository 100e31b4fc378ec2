"""``python -m dual_actor.record env=... operator=spacemouse``: demos driven by the person, as a teleop session.

The robot holds unless the operator moves it (the operator's action is executed; without input the arm holds,
gripper kept); the talk-and-tweak label of what the person is doing is shown live. Each episode starts after the
reset (the env's home pose) when the operator resumes (``pause``; a simulated operator starts at once), and ends
with the operator's success / failure signal (reward 1 / 0), the env's own success, or the time limit; "rerecord"
moves the take aside and records it again; the e-stop and pause hold the robot. ``record.episodes`` per task, for
every task of ``record.tasks`` (or ``env.tasks``), go into ``<run_root>/recordings/<session>/``, a teleop log that
``python -m data_tools convert`` turns into the warm-up HDF5 (the command is printed at the end). The steps are
demonstrations: no policy acted, so the log records no proposal and no intervention (convert makes them "demo"
episodes). Robot side: no learner is imported.

With ``record.policy`` (a policy folder or Hub repo id) the policy acts instead, through the online phase's control
loop: the person watches, speaks refinement commands, takes over and ends episodes, and nothing learns. That is
the evaluation on a real robot (``<session>/eval.json``: per task the success rate and the success rate without a
take-over), and its log converts into online episodes (proposals, interventions) like the online phase's.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from dual_actor.cli import fail, run_hydra_app
from dual_actor.config.fields import ConfigError


def _live(text: str) -> None:
    print(f"\r{text:<72}", end="", flush=True)


def record_episode(env, operator, writer, task: str, labeler, proprio_dim: int, period_s: float | None,
                   wait: bool) -> str:
    """One demonstration of ``task`` into ``writer``; returns how it ended: "success", "failure", "time limit" or
    "rerecord" (the take is moved aside)."""
    from dual_actor.runtime.loop import hold_action, hold_until_released
    from dual_actor.runtime.operators import apply_intervention

    obs = np.asarray(env.reset(), dtype=np.float32)
    operator.reset(task)
    labeler.reset()
    action_dim = int(writer.meta.action_dim)
    previous, info, shown = None, {}, None
    if wait:
        hold_until_released(env, operator, obs, hold_action(None, action_dim), info, False, period_s=period_s,
                            who="record")
    while True:
        start = time.perf_counter()
        held = hold_action(previous, action_dim)
        human = operator.observe(obs, held, info)
        estop, event = bool(getattr(human, "estop", False)), getattr(human, "event", None)
        if estop or event == "pause":
            hold_until_released(env, operator, obs, held, info, estop, period_s=period_s, who="record")
            continue
        if event == "rerecord":
            writer.discard("the operator asked to re-record it")
            print(flush=True)
            return "rerecord"
        executed, moving = apply_intervention(held, human)
        frames = env.images() if env.cameras else None
        next_obs, reward, terminated, truncated, info = env.step(executed)
        if event in ("success", "failure"):
            reward, terminated = float(event == "success"), True
        for _, command in labeler.push(executed, moving, None) if moving else ():
            if command != shown:  # what the person is doing, as the talk-and-tweak rule names it
                shown = command
                _live(f"[record] {task}: {command}")
        writer.step(task=task, obs={"proprio": obs[:proprio_dim].tolist(), "state": obs.tolist()},
                    action=executed.tolist(), policy_action=None, intervention=False, command=human.command,
                    reward=float(reward), done=bool(terminated), images=frames or None)
        previous, obs = executed, np.asarray(next_obs, dtype=np.float32)
        if terminated or truncated:
            writer.close()
            print(flush=True)
            return ("success" if reward > 0 else "failure") if terminated else "time limit"
        if period_s is not None:
            time.sleep(max(0.0, float(period_s) - (time.perf_counter() - start)))


def policy_episode(loop) -> str:
    """One episode with the policy acting (``record.policy``) through ``loop`` (a ``ControlLoop`` logging into the
    session): the operator watches, speaks, takes over and ends it; returns how it ended, as
    :func:`record_episode`, with "autonomous success" for a success without any take-over."""
    rec = loop.run_episode()
    if rec.success:
        return "autonomous success" if rec.interventions == 0 else "success"
    return "failure" if rec.rows["done"][-1] else "time limit"


def write_evaluation(root: Path, outcomes: dict[str, list[str]], policy: str) -> dict:
    """``<session>/eval.json``: per task the episodes, the success rate and the autonomous success rate (no
    take-over), printed as a table."""
    import json

    from data_tools.atomic import atomic_write_text

    res = {"policy": policy, "tasks": {}}
    for task, ends in outcomes.items():
        n = max(1, len(ends))
        res["tasks"][task] = {"episodes": len(ends), "success": sum(e.endswith("success") for e in ends) / n,
                              "autonomous_success": ends.count("autonomous success") / n}
        t = res["tasks"][task]
        print(f"[record] {task}: {t['episodes']} episodes, success {t['success']:.2f}, without a take-over "
              f"{t['autonomous_success']:.2f}", flush=True)
    atomic_write_text(root / "eval.json", json.dumps(res, indent=2))
    return res


def record(cfg: DictConfig) -> Path:
    """Every episode of the recording session; returns its folder."""
    from hydra.utils import instantiate

    from data_tools.talk_tweak import StreamingLabeler
    from dual_actor.runtime.robot import (check_operator_ready, check_robot_answers, per_task_operator, robot_env,
                                          teleop_session)

    if cfg.env.robot is None:
        raise ConfigError(f"env {cfg.env.name!r} has no robot (env.robot is null): nothing to record")
    if not cfg.operator.get("_target_"):
        raise ConfigError("record needs an operator to drive the robot (operator=spacemouse | keyboard | simulated)")
    name = cfg.record.session or time.strftime("%Y%m%d-%H%M%S")
    root = Path(cfg.run_root) / "recordings" / str(name)
    if root.exists():
        raise ConfigError(f"{root} exists: recorded data is never overwritten; pick another record.session")
    tasks = [str(t) for t in (cfg.record.tasks or cfg.env.tasks)]
    unknown = [t for t in tasks if t not in list(cfg.env.tasks)]
    if unknown:
        raise ConfigError(f"record.tasks {unknown} are not among env.tasks {list(cfg.env.tasks)}")
    if "talk_then_tweak" in cfg.operator:  # no policy acts, so none can listen: a simulated operator takes over
        cfg.operator.talk_then_tweak = False
    policy = None
    if cfg.record.policy:
        from dual_actor.policy import DualActorPolicy

        try:
            policy = DualActorPolicy.from_pretrained(str(cfg.record.policy))
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"record.policy={cfg.record.policy}: not a policy folder or Hub repo id "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'})") from None
        if [t for t in tasks if t not in policy.tasks]:
            raise ConfigError(f"record.policy {cfg.record.policy} was trained on {policy.tasks}, not on all of "
                              f"{tasks}")
    check_operator_ready(cfg)  # the device and the robot answer before anything is written
    check_robot_answers(cfg)
    per_task = per_task_operator(cfg)
    shared = None if per_task else instantiate(cfg.operator)
    on = cfg.online
    labeler = StreamingLabeler(int(on.window), float(on.sigma), float(on.translation_scale_m), label="action")
    session = teleop_session(cfg, root)
    ended: dict[str, int] = {}
    outcomes: dict[str, list[str]] = {}
    try:
        for i, task in enumerate(tasks):
            env = robot_env(cfg, task, seed=int(cfg.record.seed) + i)
            operator = instantiate(cfg.operator, task=task) if per_task else shared
            loop = None if policy is None else control_loop(cfg, env, task, policy, operator, session)
            try:
                k = 0
                while k < int(cfg.record.episodes):
                    print(f"[record] {task}: episode {k + 1}/{cfg.record.episodes}", flush=True)
                    how = policy_episode(loop) if loop is not None else record_episode(
                        env, operator, session.episode(), task, labeler, int(cfg.env.proprio_dim), on.period_s,
                        bool(on.wait_for_operator))
                    ended[how] = ended.get(how, 0) + 1
                    outcomes.setdefault(task, []).append(how)
                    k += how != "rerecord"
            finally:
                if per_task:
                    operator.close()
                env.close()
    except BaseException:
        session.close()
        if not [p for p in root.rglob("*") if p.is_file() and p.name != "session.json"]:
            shutil.rmtree(root, ignore_errors=True)  # nothing recorded (the robot never answered): leave no session
            if not any(root.parent.iterdir()):
                root.parent.rmdir()
        raise
    finally:
        session.close()
        if shared is not None:
            shared.close()
    if policy is not None:
        write_evaluation(root, outcomes, str(cfg.record.policy))
    print(f"[record] {root}: {', '.join(f'{n} {how}' for how, n in sorted(ended.items()))}. Convert it with:\n"
          f"  python -m data_tools convert {root} -o {Path(cfg.run_root) / 'data' / (str(name) + '.hdf5')}", flush=True)
    return root


def control_loop(cfg: DictConfig, env, task: str, policy, operator, session):
    """The online phase's control loop for one task, with nothing learning from it: the policy acts, the
    operator may speak and take over, every episode goes into ``session``."""
    from dual_actor.runtime.loop import ControlLoop
    from dual_actor.runtime.transport import InProcessTransport

    on = cfg.online
    return ControlLoop(env, task, policy, operator, InProcessTransport(), proprio_slice=slice(0, int(cfg.env.proprio_dim)),
                       period_s=None if on.period_s is None else float(on.period_s), window=int(on.window),
                       sigma=float(on.sigma), translation_scale_m=float(on.translation_scale_m), label=str(on.label),
                       gamma=float(cfg.algo.gamma), log_episode=lambda name: session.episode(), actor_id="record",
                       wait_for_operator=bool(on.wait_for_operator))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    from dual_actor.runtime.robot import UNREACHABLE
    from dual_actor.config.store import check_config

    try:
        check_config(cfg)
        record(cfg)
    except ConfigError as e:
        fail(e)
    except UNREACHABLE as e:
        fail(f"env {cfg.env.name!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'}")


def main() -> None:
    run_hydra_app(_main)


if __name__ == "__main__":
    main()
