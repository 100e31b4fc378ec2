"""``python -m dual_actor.check_robot`` and ``python -m dual_actor.record``: the real entry points, on the bench and
on test arms built through ``env.robot`` like any robot."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from data_tools.hdf5_format import read_episodes

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(Path(__file__).parent) + os.pathsep
       + os.environ.get("PYTHONPATH", "")}


def run(module, *args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def _compose(*overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_check_robot_reads_reports_and_never_moves():
    """On an arm that fails the test if it is reset, stepped or commanded: state, end effector, joints, each
    camera's shape, the rates; the arm is closed afterwards."""
    from dual_actor import check_robot

    built = []
    cfg = _compose("+env.robot={_target_: fake_robots.ReadOnlyArm, _partial_: true}", "env.cameras=[wrist]",
                   "env.image_size=16", "check.reads=3", "online.period_s=0.1")
    import fake_robots

    real_init = fake_robots.ReadOnlyArm.__init__

    def spy(self, *a, **k):
        real_init(self, *a, **k)
        built.append(self)

    fake_robots.ReadOnlyArm.__init__ = spy
    try:
        report = check_robot.check(cfg)
    finally:
        fake_robots.ReadOnlyArm.__init__ = real_init
    assert report["state_dim"] == 39 and report["proprio"] == [0.0, 0.01, 0.02, 0.03]
    assert report["ee_position_m"] == [0.1, 0.2, 0.3] and report["joints"] == [0.0, 1.0]
    assert report["cameras"] == {"wrist": {"shape": [16, 16, 3], "read_hz": report["cameras"]["wrist"]["read_hz"]}}
    assert report["holds_period"] is True and len(built) == 1 and built[0].closed


def test_check_robot_cli_on_the_bench_and_an_unreachable_robot():
    r = run("dual_actor.check_robot", "check.reads=3", "env.cameras=[corner]", "env.image_size=32")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "nothing moved" in r.stdout and "camera corner: (32, 32, 3)" in r.stdout
    t0 = time.perf_counter()
    r = run("dual_actor.check_robot", "+env.robot={_target_: fake_robots.UnreachableArm, _partial_: true}")
    assert time.perf_counter() - t0 < 10 + 8  # the interpreter's start-up on a loaded machine, then within 10 s
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "Connection refused" in lines[0]


def test_record_writes_a_session_that_converts_to_demos(tmp_path):
    """The bench's simulated operator drives (no policy acts): two episodes of one task, a session that
    data_tools converts into demo episodes (no proposal, no intervention), the printed convert command works."""
    r = run("dual_actor.record", f"run_root={tmp_path}", "record.session=s", "record.episodes=2",
            "record.tasks=[pick up the bolt]", "online.max_episode_steps=40")
    assert r.returncode == 0, r.stderr[-3000:]
    session = tmp_path / "recordings" / "s"
    assert sorted(p.name for p in (session / "episodes").iterdir()) == ["000000", "000001"]
    convert = r.stdout.strip().splitlines()[-1].split()
    assert convert[:4] == ["python", "-m", "data_tools", "convert"]
    c = subprocess.run([sys.executable, *convert[1:], "--quiet"], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    eps = list(read_episodes(Path(convert[-1])))
    assert len(eps) == 2 and {e.kind for e in eps} == {"demo"} and {e.task for e in eps} == {"pick up the bolt"}
    assert all(not e.intervention.any() for e in eps) and sum(len(e.actions) for e in eps) == 80
    assert any(abs(e.actions[:, :3]).sum() > 0 for e in eps)  # the operator moved the arm
    r = run("dual_actor.record", f"run_root={tmp_path}", "record.session=s")  # recorded data is never overwritten
    assert r.returncode == 2 and "never overwritten" in r.stderr
