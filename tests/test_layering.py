"""The robot side never imports the learner: a robot computer loads a policy folder and acts."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROBOT_SIDE = ["dual_actor.policy", "dual_actor.runtime", "dual_actor.runtime.loop", "dual_actor.runtime.operators",
              "dual_actor.runtime.transport", "dual_actor.runtime.sim",
              "dual_actor.runtime.robot", "dual_actor.runtime.ray_robot", "dual_actor.hub", "dual_actor.probe",
              "dual_actor.config.policy"]
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
