"""Teleoperation devices' shared base: the action layout of a delta-action arm and the held gripper.

:class:`TeleopOperator` is the base of the human-device operators (:mod:`.spacemouse`,
:mod:`.keyboard`): it maps a device's motion values to an action of :data:`MOTION_DIMS`'s layouts and
holds the gripper command between interventions. The mappings are documented in ``docs/operators.md``.
"""

from __future__ import annotations

import numpy as np

from dual_actor.runtime.operators.base import Operator, OperatorInput

MOTION_DIMS: dict[int, int] = {4: 3, 7: 6}
"""Supported ``action_dim`` -> its motion dims: 4 = xyz + gripper, 7 = xyz + roll pitch yaw + gripper."""


class TeleopOperator(Operator):
    """Action layout of a delta-action arm: dims 0..2 translation, 3..5 rotation (``action_dim``
    7 only), the remaining dim the gripper (+1 close, -1 open).

    The gripper command is held: while the operator does not intervene it follows the policy's
    gripper command, so taking over mid-grasp keeps the object; a close / open input sets it.
    """

    def __init__(self, action_dim: int, translation_scale: float, rotation_scale: float, gripper_index: int) -> None:
        if action_dim not in MOTION_DIMS:
            raise ValueError(f"action_dim must be 4 (xyz + gripper) or 7 (xyz + rpy + gripper), got {action_dim}")
        self.action_dim = int(action_dim)
        self.n_motion = MOTION_DIMS[self.action_dim]
        g = int(gripper_index) % self.action_dim
        if g < self.n_motion:
            raise ValueError(
                f"gripper_index {gripper_index} collides with the motion dims 0..{self.n_motion - 1} "
                f"of action_dim {action_dim}"
            )
        self.gripper_index = g
        self.translation_scale = float(translation_scale)
        self.rotation_scale = float(rotation_scale)
        self.task: str | None = None
        self._gripper: float | None = None
        self.estop = False  # latched: the device's e-stop control engages and releases it, episodes do not

    def reset(self, task: str) -> None:
        self.task = task
        self._gripper = None

    def _scale(self) -> np.ndarray:
        s = np.full(self.n_motion, self.rotation_scale, dtype=np.float64)
        s[:3] = self.translation_scale
        return s

    def _finish(self, policy: np.ndarray | None, intervening: bool, motion: np.ndarray, gripper: float | None,
                command: str | None, event: str | None = None) -> OperatorInput:
        """Build the step's input; ``gripper`` is a new close/open command or None (hold); ``event`` an episode
        control given at this step; the e-stop state is :attr:`estop`."""
        if gripper is not None:
            self._gripper = float(gripper)
        if not intervening or self.estop:
            if policy is not None and gripper is None:
                self._gripper = float(policy[self.gripper_index])
            return OperatorInput(False, None, command, event=event, estop=self.estop)
        if self._gripper is None:
            self._gripper = float(policy[self.gripper_index]) if policy is not None else -1.0
        action = np.zeros(self.action_dim, dtype=np.float32)
        action[: self.n_motion] = motion * self._scale()
        action[self.gripper_index] = self._gripper
        return OperatorInput(True, action, command, event=event)
