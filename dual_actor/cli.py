"""The command-line glue the Hydra apps share (``fit``, ``check_robot``, ``record``): a composition error (a wrong
type, an unknown key or option, a bad override) and every error an app declares are one ``error:`` line and exit 2,
instead of Hydra's report or a traceback."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Callable

import dual_actor.config.store  # noqa: F401  (the schemas, registered in Hydra's ConfigStore)
from dual_actor.config.store import error_line


def _not_optional_camera_sdk(record: logging.LogRecord) -> bool:
    """False for lerobot's notice that an optional camera SDK (pyrealsense2, ...) is not installed, logged whenever
    its camera modules are imported to register them, used or not."""
    return not str(record.msg).startswith("Could not import ")


def quiet_libraries() -> None:
    """Library chatter that says nothing to a user (Lightning's tips, PyOpenGL's accelerate notice)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda", "OpenGL.acceleratesupport"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger().addFilter(_not_optional_camera_sdk)  # lerobot's `logging.info` on the root logger
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)`? is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers which may be a bottleneck.*")


def fail(message: object) -> None:
    """One ``error:`` line on stderr, exit 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def run_hydra_app(app: Callable[[], None]) -> None:
    """Run a ``@hydra.main`` function: composition errors become one line (Hydra re-raises them instead of
    printing its own report and exiting 1); anything else propagates."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    quiet_libraries()
    try:
        app()
    except Exception as e:  # noqa: BLE001 - only composition errors are reported here; the rest re-raise
        line = error_line(e)
        if line is None:
            raise
        fail(line)
