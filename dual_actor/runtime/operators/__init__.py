"""Operators: the human in the loop (SpaceMouse, keyboard) or a simulated one, behind one interface.

The control loop calls, once per control step and BEFORE the action is executed::

    op_input = operator.observe(obs, policy_action, info)   # is the human intervening? with what?
    action, intervened = apply_intervention(policy_action, op_input, low, high)

Modules, one concern each:

- :mod:`.base`: :class:`OperatorInput` (intervening?, the overriding action, the spoken refinement
  command in force), :data:`NO_INPUT`, the pure intervention step :func:`apply_intervention`, the
  :class:`Operator` interface and :class:`NullOperator` (never intervenes: evaluation without a human).
- :mod:`.teleop`: :class:`TeleopOperator`, the human devices' shared action layout and held gripper.
- :mod:`.spacemouse`: :class:`SpaceMouseOperator`, a 3Dconnexion SpaceMouse through ``pyspacemouse``;
  intervenes while the puck is displaced beyond the deadzone on a mapped axis or a button is held.
- :mod:`.keyboard`: :class:`KeyboardOperator` (keys -> axes for people without a SpaceMouse, fed by a
  ``queue.Queue`` of key names) and :class:`TerminalKeyReader` (fills it from a terminal in cbreak mode).
- :mod:`.simulated`: :class:`SimulatedOperator`, Metaworld's scripted expert
  (:mod:`dual_actor.runtime.sim.experts`) watches the rollout, takes over when the policy goes astray and
  hands back; or, with ``speak_commands``, speaks refinement commands.

Every public name is importable from this package (Hydra configs name
``dual_actor.runtime.operators.SimulatedOperator`` etc.). The mappings and the simulated operator's
rule are documented in ``docs/operators.md``.
"""

from dual_actor.runtime.operators.base import EVENTS, NO_INPUT, NullOperator, Operator, OperatorInput, apply_intervention
from dual_actor.runtime.operators.keyboard import (
    DEFAULT_KEY_COMMANDS,
    DEFAULT_KEY_MAP,
    KeyboardOperator,
    TerminalKeyReader,
)
from dual_actor.runtime.operators.simulated import SimulatedOperator
from dual_actor.runtime.operators.spacemouse import (
    METAWORLD_AXIS_MAP,
    METAWORLD_AXIS_SIGN,
    ROBOT_FRAME_AXIS_MAP,
    ROBOT_FRAME_AXIS_SIGN,
    SPACEMOUSE_AXES,
    SpaceMouseOperator,
)
from dual_actor.runtime.operators.teleop import MOTION_DIMS, TeleopOperator

__all__ = [
    "DEFAULT_KEY_COMMANDS",
    "DEFAULT_KEY_MAP",
    "KeyboardOperator",
    "METAWORLD_AXIS_MAP",
    "METAWORLD_AXIS_SIGN",
    "MOTION_DIMS",
    "NO_INPUT",
    "NullOperator",
    "Operator",
    "OperatorInput",
    "EVENTS",
    "ROBOT_FRAME_AXIS_MAP",
    "ROBOT_FRAME_AXIS_SIGN",
    "SPACEMOUSE_AXES",
    "SimulatedOperator",
    "SpaceMouseOperator",
    "TeleopOperator",
    "TerminalKeyReader",
    "apply_intervention",
]
