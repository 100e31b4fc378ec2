"""The simulation-backed devices behind the real interfaces, each the bench's three tasks: ``env=franka_sim`` (the
Franka adapter over HTTP to a server speaking the HIL-SERL protocol) and ``env=lerobot_sim`` (the lerobot adapter
driving a lerobot ``Robot`` plugin). ``fit``, ``check_robot`` and ``record`` run over each, from the command line
where a user runs them; the real robots' configs (``env=franka_server``, ``env=lerobot_robot``) fail in one line
when nothing is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from data_tools.hdf5_format import read_episodes
from data_tools.teleop_log import read_session
from dual_actor.robots.franka_sim_server import FrankaSimServer

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
MOTION = {"pose", "move_gripper", "open_gripper", "close_gripper", "close_gripper_slow", "jointreset", "sim/reset"}
"""Franka server routes that move the arm (or start an episode, which moves it home)."""


def run(module, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _compose(*overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture
def server():
    with FrankaSimServer(port=0) as s:
        yield s


@pytest.mark.slow
def test_fit_over_each_device_runs_the_real_robot_path_and_reproduces_the_bench(tmp_path, server):
    """The smoke run on the bench, through the Franka protocol and through lerobot's Robot API: the same seeds
    give the same episodes, so the evaluation matches byte for byte; the Franka run's steps were HTTP requests
    to the server, the lerobot run's teleop log names the plugin robot."""
    common = ["experiment=smoke", f"run_root={tmp_path}", f"data.path={tmp_path / 'demos.hdf5'}",
              "online.env_steps=200", "eval.trials=2"]
    devices = {"metaworld_bench": [], "franka_sim": [f"env.robot.url={server.url}"], "lerobot_sim": []}
    for env, extra in devices.items():
        r = run("dual_actor.fit", f"env={env}", f"run_name={env}", *common, *extra)
        assert r.returncode == 0, f"{env}: {r.stderr[-3000:]}"
    evals = {env: (tmp_path / env / "eval.json").read_bytes() for env in devices}
    assert evals["franka_sim"] == evals["metaworld_bench"] == evals["lerobot_sim"]
    assert json.loads(evals["metaworld_bench"])  # a real evaluation, not two empty files
    poses = [body for route, body in server.calls if route == "pose"]
    assert len(poses) >= 200 and {route for route, _ in server.calls} >= {"getstate", "sim/reset", "clearerr"}
    robots = {env: read_session(next((tmp_path / env / "teleop").glob("online-*"))).meta.robot for env in devices}
    assert robots == {"metaworld_bench": "metaworld-sawyer", "franka_sim": "metaworld-sawyer",
                      "lerobot_sim": "dual_actor_sim_arm"}


def test_check_robot_reads_the_franka_server_and_sends_nothing_that_moves(server):
    from dual_actor.check_robot import check

    before = len(server.calls)
    report = check(_compose("env=franka_sim", f"env.robot.url={server.url}", "check.reads=4"))
    routes = [route for route, _ in list(server.calls)[before:]]
    assert routes.count("getstate") >= 4 and not MOTION & set(routes)
    assert report["state_dim"] == 39 and len(report["joints"]) == 7  # the Sawyer's 7 joints, as /getstate's q
    assert report["ee_position_m"] == report["proprio"][:3]  # pose xyz is the bench's hand position


def test_check_robot_reads_the_lerobot_plugin_and_sends_nothing(monkeypatch):
    from dual_actor.check_robot import check
    from dual_actor.robots.lerobot_sim import DualActorSimArm

    def refuse(self, action):
        raise AssertionError(f"check_robot sent {action}")

    monkeypatch.setattr(DualActorSimArm, "send_action", refuse)
    report = check(_compose("env=lerobot_sim", "env.cameras=[corner]", "env.image_size=24", "check.reads=2"))
    assert report["state_dim"] == 39 and report["cameras"]["corner"]["shape"] == [24, 24, 3]
    assert report["ee_position_m"] == report["proprio"][:3]  # ee_motors x, y, z: the hand


@pytest.mark.parametrize("env,extra", [
    ("franka_sim", []),
    ("lerobot_sim", ["env.cameras=[corner]", "env.image_size=16"]),
])
def test_record_over_each_device_writes_a_session_that_converts(tmp_path, env, extra):
    r = run("dual_actor.record", f"env={env}", f"run_root={tmp_path}", "record.session=s", "record.episodes=2",
            "record.tasks=[pick up the bolt]", "online.max_episode_steps=25", *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    convert = r.stdout.strip().splitlines()[-1].split()
    c = subprocess.run([sys.executable, *convert[1:], "--quiet"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    eps = list(read_episodes(Path(convert[-1])))
    assert [len(e.actions) for e in eps] == [25, 25] and {e.kind for e in eps} == {"demo"}
    assert all(e.obs["state"].shape == (25, 39) for e in eps)
    assert any(np.abs(e.actions[:, :3]).sum() > 0 for e in eps)  # the simulated operator moved the arm
    if extra:  # the plugin's rendered camera, logged with every step
        assert all(e.obs["corner"].shape == (25, 16, 16, 3) and e.obs["corner"].std() > 0 for e in eps)


@pytest.mark.parametrize("args,expect", [
    (["env=franka_server", "env.url=http://127.0.0.1:9/", "env.tasks=[pick]"], "Franka robot server at"),
    (["env=lerobot_robot", "env.robot.port=/dev/ttyDOES_NOT_EXIST", "env.tasks=[pick]",
      "env.robot.adapter.gripper_range=[0,40]"], "/dev/ttyDOES_NOT_EXIST"),
])
@pytest.mark.parametrize("tool", ["dual_actor.check_robot", "dual_actor.record", "dual_actor.fit"])
def test_a_real_robot_that_is_not_there_is_one_error_line_within_10_s(tmp_path, tool, args, expect):
    t0 = time.perf_counter()
    r = run(tool, *args, f"run_root={tmp_path}", timeout=60)
    seconds = time.perf_counter() - t0
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], r.stderr
    assert seconds < 10 + 8  # the interpreter's start-up on a loaded machine, then within 10 s
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no session, no run folder, nothing half-written


def test_record_with_a_policy_evaluates_it_on_the_robot_and_logs_online_episodes(tmp_path):
    """``record.policy``: the policy acts, the (simulated) person watches and takes over; eval.json's rates are
    those of the logged episodes (success: the last reward; autonomous: a success without any take-over)."""
    import torch

    from dual_actor.policy import DualActorPolicy
    from factories import tiny_policy_kwargs

    torch.manual_seed(0)
    DualActorPolicy(**tiny_policy_kwargs(tasks=["pick up the bolt", "place the bolt"], obs_dim=39,
                                         proprio_dim=4)).save_pretrained(tmp_path / "policy")
    r = run("dual_actor.record", "env=franka_sim", f"run_root={tmp_path}", "record.session=ev", "record.episodes=3",
            "record.tasks=[pick up the bolt,place the bolt]", "online.max_episode_steps=40",
            f"record.policy={tmp_path / 'policy'}")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "recordings" / "ev" / "eval.json").read_text())
    convert = r.stdout.strip().splitlines()[-1].split()
    c = subprocess.run([sys.executable, *convert[1:], "--quiet"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    eps = list(read_episodes(Path(convert[-1])))
    assert {e.kind for e in eps} == {"online"} and len(eps) == 6
    assert any(e.intervention.any() for e in eps)  # a random policy: the person took over
    for task in ("pick up the bolt", "place the bolt"):
        mine = [e for e in eps if e.task == task]
        wins = [e.rewards[-1] > 0 for e in mine]
        alone = [w and not e.intervention.any() for w, e in zip(wins, mine)]
        assert res["tasks"][task] == {"episodes": 3, "success": sum(wins) / 3, "autonomous_success": sum(alone) / 3}
    r = run("dual_actor.record", "env=franka_sim", f"run_root={tmp_path}", "record.session=bad",
            "record.tasks=[assemble the bolt]", f"record.policy={tmp_path / 'policy'}")
    assert r.returncode == 2 and "was trained on" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "recordings" / "bad").exists()
