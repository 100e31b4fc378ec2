import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("EGL_PLATFORM", "surfaceless")
sys.path.insert(0, str(Path(__file__).parent))
if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, for the subprocesses too
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import dual_actor.config.store  # noqa: E402,F401  (the config schemas in Hydra's ConfigStore, for compose())

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line with the skip count (CI reads it): only truly optional extras may skip; a hard dependency
    (metaworld, lerobot, ...) is imported plainly, so its absence fails the run."""
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = sorted({str(r.longrepr[2]) if isinstance(r.longrepr, tuple) else str(r.longrepr) for r in skipped})
    terminalreporter.write_line(f"skipped tests: {len(skipped)}" + (f" ({'; '.join(reasons)})" if reasons else ""))
