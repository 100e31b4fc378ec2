"""A simulated lerobot arm: lerobot 0.4.4's ``Robot`` API over the bench's simulation, registered as
``dual_actor_sim_arm`` (importing this module registers it, as a third-party ``lerobot_robot_*`` plugin does).

It stands in for a real arm behind :class:`dual_actor.robots.lerobot_robot.LeRobotEnv`, so the teleop session,
the safety layer and a whole ``fit`` run through the real-robot code path with the bench's simulated operator.

The arm (:class:`DualActorSimArm`). One :class:`~dual_actor.runtime.sim.MetaworldTaskEnv` (the config's ``task``
and ``seed``), built on ``connect()``. Its motors:

- ``x``, ``y``, ``z``: ``<m>.pos`` is the hand's position in metres (the bench's ``obs[:3]``); a goal moves the
  hand by ``goal - present``, executed as one bench step with the action ``(goal - present) / 0.01`` (the bench's
  :data:`~dual_actor.runtime.sim.ACTION_SCALE_M`), so at most 1 cm per axis per command: the returned (sent)
  action holds the goal that was executed.
- ``gripper``: the finger actuators' target in Metaworld's units (-1 open .. 1 closed: the bench action's last
  dim); ``gripper.pos`` reports the last target (-1 after a reset: Metaworld opens the hand), the fingers'
  opening is ``sim.state.3``.

So without a URDF the adapter's joint-delta action with ``joint_scale: 0.01`` and ``gripper_range: [-1, 1]`` is
the bench's action. Every ``send_action`` advances the simulation one bench step (a hold too: the world does
not stop while an arm holds), except after the episode's success: the world then stays as it is until the next
``reset_scene()``. ``max_relative_target`` (config) caps each goal with lerobot's ``ensure_safe_goal_position``
around the present positions, as lerobot's SO / Koch followers do.

Observation features beyond the motors, the simulation's own (a real robot has none of them):

- ``sim.state.0`` .. ``sim.state.38``: the bench's 39-d state (floats, lerobot's feature convention: a tuple
  feature is a camera), so ``state_keys: ["sim.state.*"]`` makes the adapter's observation the bench's and the
  simulated operator and scripted experts work unchanged;
- ``sim.success``: 1.0 once the bench reports success (``success_key: sim.success``);
- one ``(image_size, image_size, 3)`` uint8 image per camera of ``render_cameras`` (Metaworld camera names,
  :data:`~dual_actor.runtime.sim.CAMERAS`), rendered by the bench at each ``get_observation()``.

Episodes: ``reset_scene()`` (not part of lerobot's API: the adapter calls a robot's ``reset_scene`` where it has
one, at every reset; a real scene is reset by a person) draws the bench's next object / goal configuration.
``rng_state`` / ``load_rng_state`` are the bench's (a resumed run continues its configurations). There is no
calibration (``is_calibrated`` is always True) and nothing is written under lerobot's calibration folder:
``calibration_dir`` defaults to ``<tmp>/dual_actor_sim_arm``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from lerobot.robots import Robot, RobotConfig
from lerobot.robots.utils import ensure_safe_goal_position
from lerobot.utils.decorators import check_if_already_connected, check_if_not_connected

from dual_actor.runtime.sim.bench import ACTION_SCALE_M, CAMERAS, IMAGE_SIZE, OBS_DIM, MetaworldTaskEnv, resolve_task

SIM_TYPE = "dual_actor_sim_arm"
"""The simulated arm's lerobot robot type (``env.robot.type``)."""
MOTORS = ("x", "y", "z", "gripper")
STATE_FEATURES = tuple(f"sim.state.{i}" for i in range(OBS_DIM))
"""The bench's state, one float feature per entry (``state_keys: ["sim.state.*"]``)."""
SUCCESS_FEATURE = "sim.success"
GRIPPER_OPEN = -1.0
"""The gripper target after a reset (Metaworld opens the hand); targets are clipped to [-1, 1]."""
_HORIZON = 10**9  # the bench's own episode limit, never reached: the adapter keeps the episode's time limit


@RobotConfig.register_subclass(SIM_TYPE)
@dataclass
class DualActorSimArmConfig(RobotConfig):
    """The simulated arm's settings (``env.robot.<field>``); ``task`` and ``seed`` are filled by the env factory
    (``make_env(task=, seed=)``) unless given."""

    task: str = "place the bolt"
    """A bench task string or a Metaworld v3 env name (:func:`~dual_actor.runtime.sim.resolve_task`)."""
    seed: int = 0
    """Seeds the bench's object / goal configurations (one sequence over the arm's episodes)."""
    render_cameras: list[str] = field(default_factory=list)
    """Metaworld cameras rendered as image observation features (named as the camera)."""
    image_size: int = IMAGE_SIZE
    """Rendered height = width, pixels."""
    render_effects: bool = False
    """Render shadows and reflections (~7x slower on a CPU)."""
    max_relative_target: float | dict[str, float] | None = None
    """Caps ``|goal - present|`` per motor (one value, or one per motor name), as lerobot's followers do."""

    def __post_init__(self) -> None:
        super().__post_init__()
        resolve_task(self.task)  # KeyError naming the valid tasks
        self.render_cameras = [str(c) for c in self.render_cameras]
        unknown = [c for c in self.render_cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"{SIM_TYPE}: unknown render_cameras {unknown}; Metaworld's cameras: {list(CAMERAS)}")
        if int(self.image_size) < 1:
            raise ValueError(f"{SIM_TYPE}: image_size must be >= 1, got {self.image_size}")
        if self.calibration_dir is None:  # no calibration: keep lerobot's calibration folder untouched
            self.calibration_dir = Path(tempfile.gettempdir()) / SIM_TYPE


class DualActorSimArm(Robot):
    """The bench's simulation behind lerobot's ``Robot`` API (the module docstring has the motors and features)."""

    config_class = DualActorSimArmConfig
    name = SIM_TYPE

    def __init__(self, config: DualActorSimArmConfig):
        super().__init__(config)
        self.config = config
        self.bench: MetaworldTaskEnv | None = None
        self._obs: np.ndarray | None = None  # the bench's state (39,) float32; None: no episode yet
        self._gripper = GRIPPER_OPEN
        self._success = False
        self._over = False  # the episode succeeded: the world stays as it is until reset_scene()

    @cached_property
    def observation_features(self) -> dict[str, type | tuple]:
        s = int(self.config.image_size)
        features: dict[str, type | tuple] = {f"{m}.pos": float for m in MOTORS}
        features.update({k: float for k in STATE_FEATURES})
        features[SUCCESS_FEATURE] = float
        features.update({c: (s, s, 3) for c in self.config.render_cameras})
        return features

    @cached_property
    def action_features(self) -> dict[str, type]:
        return {f"{m}.pos": float for m in MOTORS}

    @property
    def is_connected(self) -> bool:
        return self.bench is not None

    @check_if_already_connected
    def connect(self, calibrate: bool = True) -> None:
        c = self.config
        self.bench = MetaworldTaskEnv(c.task, int(c.seed), max_episode_steps=_HORIZON, cameras=c.render_cameras,
                                      image_size=int(c.image_size), render_effects=bool(c.render_effects))

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        """Nothing to calibrate."""

    def configure(self) -> None:
        """Nothing to configure."""

    @check_if_not_connected
    def reset_scene(self) -> None:
        """Start an episode: the bench's next object / goal configuration, the hand at its start, gripper open."""
        self._obs = self.bench.reset()
        self._gripper, self._success, self._over = GRIPPER_OPEN, False, False

    def _present(self) -> dict[str, float]:
        if self._obs is None:
            self.reset_scene()
        return {"x": float(self._obs[0]), "y": float(self._obs[1]), "z": float(self._obs[2]), "gripper": self._gripper}

    @check_if_not_connected
    def get_observation(self) -> dict:
        """The motors, the bench's state and success, and the rendered cameras (a first call starts an episode)."""
        out: dict = {f"{m}.pos": v for m, v in self._present().items()}
        out.update(zip(STATE_FEATURES, (float(v) for v in self._obs)))
        out[SUCCESS_FEATURE] = float(self._success)
        out.update(self.bench.images())
        return out

    @check_if_not_connected
    def send_action(self, action: dict) -> dict:
        """Move towards the goal positions (``<motor>.pos``; a motor left out keeps its position) by one bench step;
        returns the goal executed (capped by ``max_relative_target`` and the bench's 1 cm per axis)."""
        present = self._present()
        unknown = sorted(set(action) - set(self.action_features))
        if unknown:
            raise KeyError(f"{SIM_TYPE}: unknown action key(s) {unknown}; expected {list(self.action_features)}")
        goal = {m: float(action.get(f"{m}.pos", present[m])) for m in MOTORS}
        if self.config.max_relative_target is not None:
            cap = self.config.max_relative_target
            goal = ensure_safe_goal_position({m: (goal[m], present[m]) for m in MOTORS},
                                             float(cap) if isinstance(cap, (int, float)) else cap)
        delta = np.clip([(goal[m] - present[m]) / ACTION_SCALE_M for m in MOTORS[:3]], -1.0, 1.0)
        gripper = float(np.clip(goal["gripper"], -1.0, 1.0))
        if not self._over:
            obs, _, terminated, truncated, info = self.bench.step(np.append(delta, gripper))
            self._obs, self._gripper = obs, gripper
            self._success = self._success or bool(info["success"])
            self._over = bool(terminated or truncated)
        sent = {m: present[m] + float(d) * ACTION_SCALE_M for m, d in zip(MOTORS[:3], delta)}
        sent["gripper"] = gripper
        return {f"{m}.pos": v for m, v in sent.items()}

    @check_if_not_connected
    def disconnect(self) -> None:
        self.bench.close()
        self.bench, self._obs = None, None

    # ------------------------------------------------------------------ the bench's randomness (RandomStateful)
    @check_if_not_connected
    def rng_state(self) -> dict:
        return self.bench.rng_state()

    @check_if_not_connected
    def load_rng_state(self, state: dict) -> None:
        self.bench.load_rng_state(state)
