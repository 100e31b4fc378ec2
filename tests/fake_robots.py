"""Robot envs for the robot tools' tests, built through ``env.robot`` like any robot (a Hydra ``_target_``)."""

from __future__ import annotations

import numpy as np


class ReadOnlyArm:
    """An arm that can be read but fails the test if anything tries to move it (reset, step, hold are motion
    commands here): ``python -m dual_actor.check_robot`` must never call them."""

    cameras = ("wrist",)
    translation_scale_m = 0.01
    rotation_scale_rad = 0.0

    def __init__(self, task: str, seed: int = 0, max_episode_steps: int = 200, cameras=(), image_size: int = 128,
                 **options):  # options the env config carries for another robot (render_effects: the bench's)
        self.cameras = tuple(cameras) or ("wrist",)
        self.size = int(image_size)
        self.closed = False

    def observe(self):
        return np.arange(39, dtype=np.float32) / 100.0

    def images(self):
        return {c: np.zeros((self.size, self.size, 3), np.uint8) for c in self.cameras}

    def ee_position(self):
        return np.array([0.1, 0.2, 0.3])

    def joint_positions(self):
        return np.array([0.0, 1.0])

    @property
    def elapsed_steps(self):
        return 0

    def reset(self):
        raise AssertionError("check_robot reset the robot (moved it to its home)")

    def step(self, action):
        raise AssertionError("check_robot stepped the robot")

    def hold(self):
        raise AssertionError("check_robot commanded the robot")

    def close(self):
        self.closed = True


class UnreachableArm(ReadOnlyArm):
    """Connecting fails as a robot that is not there does (a refused connection)."""

    def __init__(self, *args, **kwargs):
        raise ConnectionRefusedError("[Errno 111] Connection refused: http://127.0.0.1:9 (nothing listens there)")
