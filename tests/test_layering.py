"""The robot side never imports the learner: a robot computer loads a policy folder and acts."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROBOT_SIDE = ["dual_actor.policy", "dual_actor.runtime", "dual_actor.runtime.loop", "dual_actor.runtime.operators",
              "dual_actor.runtime.transport", "dual_actor.runtime.sim",
              "dual_actor.runtime.robot", "dual_actor.runtime.ray_robot", "dual_actor.hub", "dual_actor.probe",
              "dual_actor.config.policy", "dual_actor.runtime.safety", "dual_actor.check_robot", "dual_actor.record",
              "dual_actor.robots.franka_server", "dual_actor.robots.franka_sim_server",
              "dual_actor.robots.lerobot_robot", "dual_actor.robots.lerobot_sim"]
LEARNER = ["dual_actor.module", "dual_actor.losses", "dual_actor.fit", "lightning", "pytorch_lightning"]


def test_importing_the_robot_side_loads_no_learner_module():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in ROBOT_SIDE)
            + "bad = sorted(m for m in sys.modules if m in %r or m.startswith(('lightning.', 'dual_actor.data', 'dual_actor.training', 'dual_actor.updates')))\n"
            % (LEARNER,) + "print(repr(bad))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


def test_the_check_sees_a_learner_import():
    """Control: the same probe reports the learner when it is imported."""
    code = "import sys\nimport dual_actor.module\nprint(sorted(m for m in sys.modules if m in ('lightning', 'dual_actor.losses')))\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().splitlines()[-1] == "['dual_actor.losses', 'lightning']", r.stdout + r.stderr[-2000:]


LEARNER_EXTRA = ("lightning", "pytorch_lightning", "tensorboard", "matplotlib")
"""pyproject.toml's ``learner`` extra: what a robot computer (``pip install "dual-actor[robot]"``) does not have."""


def _without_learner(module: str, *args: str, tmp) -> subprocess.CompletedProcess:
    code = ("import runpy, sys\n" + f"for m in {LEARNER_EXTRA!r}: sys.modules[m] = None\n"
            + f"sys.argv = [{module!r}, *{list(args)!r}]\nrunpy.run_module({module!r}, run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True, timeout=300)


def test_the_robot_tools_run_where_the_learner_is_not_installed(tmp_path):
    """record and check_robot over the simulation-backed devices, with the learner's packages unimportable;
    fit there says which extra it needs, in one line."""
    r = _without_learner("dual_actor.record", "env=franka_sim", f"run_root={tmp_path}", "record.session=s",
                         "record.episodes=1", "record.tasks=[pick up the bolt]", "online.max_episode_steps=5",
                         tmp=ROOT)
    assert r.returncode == 0 and "1 time limit" in r.stdout, r.stderr[-2000:]
    r = _without_learner("dual_actor.check_robot", "env=lerobot_sim", "check.reads=1", tmp=ROOT)
    assert r.returncode == 0 and "nothing moved" in r.stdout, r.stderr[-2000:]
    r = _without_learner("dual_actor.fit", f"run_root={tmp_path}", tmp=ROOT)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "dual-actor[learner]" in lines[0], r.stderr
