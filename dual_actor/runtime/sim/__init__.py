"""The simulated bench: three Metaworld 3.1.1 tasks, scripted experts, warm-up demos, robot B.

Modules, one concern each (the dependencies go down this list; none imports :mod:`dual_actor.runtime.operators`):

- :mod:`.bench`: the bench constants (:data:`BENCH_TASKS`, :data:`OBS_DIM`, :data:`ACTION_DIM`,
  :data:`PROPRIO_SLICE`, :data:`ACTION_SCALE_M`, :data:`MAX_EPISODE_STEPS`, :data:`CAMERAS`, ...),
  :func:`resolve_task` and :class:`MetaworldTaskEnv` (one task on state observations, sparse success
  reward, a fresh object / goal configuration per reset, named cameras rendered on request).
- :mod:`.experts`: :class:`ScriptedExpert`, Metaworld's hand-written policy (:data:`EXPERTS`: as shipped, or
  with its known loops fixed) plus Gaussian action noise.
- :mod:`.demos`: :func:`rollout_expert` (one expert episode as a demo) and :func:`generate_demos` (successful
  noisy expert episodes, with camera images when asked, in the HDF5 talk-and-tweak layout,
  :mod:`data_tools.hdf5_format`).
- :mod:`.robot_b`: robot B of multi-robot runs (:class:`RobotShift`, :class:`ShiftedEnv`,
  :class:`ShiftedOperator`, :func:`shifted_factory`).

Every public name is importable from this package (Hydra configs name ``dual_actor.runtime.sim.MetaworldTaskEnv``,
``...generate_demos``, ``...RobotShift``). The measurements (rendering cost, expert success, demo generation
time) are in the modules' docstrings.
"""

from dual_actor.runtime.sim.bench import (
    ACTION_DIM,
    ACTION_SCALE_M,
    BENCH_TASKS,
    CAMERAS,
    DEMO_FPS,
    HAND_TOLERANCE,
    IMAGE_SIZE,
    MAX_EPISODE_STEPS,
    OBS_DIM,
    PROPRIO_SLICE,
    ROBOT,
    MetaworldTaskEnv,
    resolve_task,
)
from dual_actor.runtime.sim.demos import generate_demos, rollout_expert, task_seeds
from dual_actor.runtime.sim.experts import EXPERTS, ScriptedExpert
from dual_actor.runtime.sim.robot_b import POSITION_SLICES, RobotShift, ShiftedEnv, ShiftedOperator, shifted_factory

__all__ = [
    "ACTION_DIM",
    "ACTION_SCALE_M",
    "BENCH_TASKS",
    "CAMERAS",
    "DEMO_FPS",
    "EXPERTS",
    "HAND_TOLERANCE",
    "IMAGE_SIZE",
    "MAX_EPISODE_STEPS",
    "OBS_DIM",
    "POSITION_SLICES",
    "PROPRIO_SLICE",
    "ROBOT",
    "MetaworldTaskEnv",
    "RobotShift",
    "ScriptedExpert",
    "ShiftedEnv",
    "ShiftedOperator",
    "generate_demos",
    "resolve_task",
    "rollout_expert",
    "shifted_factory",
    "task_seeds",
]
