"""``env=lerobot_robot``: any robot of lerobot 0.4.4's ``Robot`` API as a :class:`~dual_actor.runtime.env.RobotEnv`
and :class:`~dual_actor.runtime.env.Arm` (:class:`LeRobotEnv`; the Hydra factory is :func:`make_lerobot_env`).

The robot: ``{"type": <name>, <its config fields>...}``, decoded by draccus (lerobot's config parser) into the
config class lerobot's ``RobotConfig`` registry holds under that name: lerobot's robots (``so101_follower``, ...),
third-party ones found as lerobot finds them (``register_third_party_plugins()`` imports every installed distribution
named ``lerobot_robot_*``, which registers itself), and those of the modules in ``plugins`` (e.g.
``dual_actor.robots.lerobot_sim``). Config fields named ``task`` / ``seed`` (a simulated robot's) are filled from the
factory's. The config's ``cameras`` are lerobot camera configs; the env's ``cameras`` picks the image features
``images()`` returns (uint8, resized to ``image_size``). The envs of one config (one per task) share one robot.

Connection, on first use: a ``port`` that is a device path and does not exist fails at once; lerobot's
``connect(calibrate=False)`` runs within ``connect_timeout_s``; either failure is one :class:`RobotConnectionError`
naming the robot and its address. An uncalibrated robot is refused (run ``lerobot-calibrate``) unless
``calibrate=True`` (lerobot's interactive calibration, here). A missing motor SDK fails at construction, naming it.

Actions, in [-1, 1]; the last dim the gripper, absolute: -1 .. 1 maps onto ``gripper_range = [open, closed]``.

- With a URDF (``urdf_path``, ``ee_frame``, ``urdf_joints``; lerobot's ``RobotKinematics``, placo): end-effector
  deltas, dims 0..2 the translation (``translation_scale_m`` metres per unit, base frame), with 7-d actions dims 3..5
  a rotation vector (``rotation_scale_rad`` per unit, base frame: ``R <- Rot(w) R``). The last observation's joints
  -> FK -> pose + delta -> IK (``ik_iterations`` placo steps from the present joints; ``ik_orientation_weight`` by
  default 0 without rotation, so the position is met exactly and the orientation follows the smallest joint motion,
  1 with it) -> joint targets in degrees (lerobot arms with ``use_degrees``); other motors keep their positions.
- Without: joint deltas, one dim per motor (the robot's order, the gripper last), ``joint_scale`` units per unit.

Then the joint filter (:meth:`LeRobotEnv.set_joint_filter`: the safety layer's clamp, :attr:`LeRobotEnv.motors`
order), then the config's ``max_relative_target`` (lerobot's ``ensure_safe_goal_position`` around the present
positions, here too: a plugin whose ``send_action`` skips it is capped; lerobot's followers apply it again, a no-op
then), then ``send_action`` (``info["sent_action"]``: what the robot says it sent).

Observation: the float32 state of ``state_keys`` (feature names or ``fnmatch`` patterns, proprioception first;
default the motors' ``.pos``); ``success_key``: a feature whose truth (> 0.5) ends the episode with reward 1 (a
simulated robot's). ``reset()``: a robot's ``reset_scene()`` where it has one (a simulated robot), then ``home``.
``ee_position()``: FK with a URDF, else the ``ee_motors`` (a Cartesian arm: x, y, z in metres), else
NotImplementedError (the safety layer's workspace box needs one). ``hold()``: the last observed joints and the last
gripper target, from any thread (one lock guards the robot; if a call keeps it over 0.5 s, the hold follows it).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import inspect
import logging
import os
import pkgutil
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import cv2
import draccus
import lerobot.cameras
import lerobot.robots
import numpy as np
from lerobot.model.kinematics import RobotKinematics
from lerobot.robots import Robot, RobotConfig, make_robot_from_config
from lerobot.robots.utils import ensure_safe_goal_position
from lerobot.utils.import_utils import register_third_party_plugins
from lerobot.utils.rotation import Rotation

logger = logging.getLogger(__name__)

_ADDRESS_FIELDS = ("port", "remote_ip", "ip_address", "can_interface")
_HOLD_WAIT_S = 0.5
_builtin_registered = False


class RobotConnectionError(ConnectionError):
    """The robot cannot be reached (a missing port, a failed or silent connect)."""


def _plain(x: Any) -> Any:
    """A mapping / sequence (OmegaConf's included) as plain dicts and lists."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        return [_plain(v) for v in x]
    return x


def register_robots(plugins: Sequence[str] = ()) -> list[str]:
    """Register every robot lerobot knows (its own, installed ``lerobot_robot_*`` plugins, ``plugins`` modules);
    the sorted registered type names."""
    global _builtin_registered
    if not _builtin_registered:  # lerobot registers a config when its subpackage is imported (lerobot_record does this)
        for pkg in (lerobot.robots, lerobot.cameras):
            for m in pkgutil.iter_modules(pkg.__path__):
                if m.ispkg:
                    try:
                        importlib.import_module(f"{pkg.__name__}.{m.name}")
                    except Exception as e:  # pragma: no cover - an optional dependency of one robot
                        logger.debug("lerobot: %s.%s not importable: %s", pkg.__name__, m.name, e)
        _builtin_registered = True
    register_third_party_plugins()
    for module in [plugins] if isinstance(plugins, str) else plugins:
        try:
            importlib.import_module(str(module))
        except ImportError as e:
            raise ImportError(f"env.robot.plugins: cannot import robot plugin module {module!r}: {e}") from e
    return sorted(RobotConfig.get_known_choices())


def robot_config(robot: Mapping, plugins: Sequence[str] = (), defaults: Mapping | None = None):
    """The lerobot ``RobotConfig`` of ``{"type": name, field: value, ...}``; ``defaults`` fill the config class's
    fields of those names that ``robot`` leaves out."""
    spec = _plain(robot)
    known = register_robots(plugins)
    kind = spec.pop("type", None)
    if not kind:
        raise ValueError(f"env.robot.type is missing: the lerobot robot type, one of {known}")
    if kind not in known:
        raise ValueError(f"unknown lerobot robot type {kind!r} (env.robot.type); registered: {known} (a third-party "
                         "robot registers itself from an installed lerobot_robot_* distribution or a module named "
                         "in env.robot.plugins)")
    cls = RobotConfig.get_choice_class(kind)
    names = {f.name for f in dataclasses.fields(cls)}
    spec.update({k: v for k, v in (defaults or {}).items() if k in names and k not in spec})
    try:
        return draccus.decode(cls, spec)
    except Exception as e:
        raise ValueError(f"env.robot ({kind}): {e}") from e


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def make_robot(config, kind: str | None = None):
    """The ``Robot`` of a config: the imported ``Robot`` subclass whose ``config_class`` it is (a plugin's), else
    lerobot's ``make_robot_from_config``. A missing motor SDK is an ImportError naming it."""
    own = [c for c in _subclasses(Robot) if c.__dict__.get("config_class") is type(config)
           and not inspect.isabstract(c)]
    try:
        if len(own) == 1 and not type(config).__module__.startswith("lerobot."):
            return own[0](config)
        return make_robot_from_config(config)
    except ImportError as e:
        raise ImportError(f"lerobot robot {kind or config.type!r} needs {e.name or e}: pip install "
                          "'dual-actor[robot]' (lerobot's motor SDKs and kinematics)") from e


def _address(config, kind: str | None = None) -> str:
    parts = [f"{f} {getattr(config, f)!r}" for f in _ADDRESS_FIELDS if getattr(config, f, None) not in (None, "")]
    return f"lerobot robot {kind or config.type!r}" + (f" on {', '.join(parts)}" if parts else "")


def _check_port(config, kind: str | None = None) -> None:
    port = getattr(config, "port", None)
    if isinstance(port, str) and os.sep in port and not os.path.exists(port):
        raise RobotConnectionError(f"{_address(config, kind)}: serial port {port!r} does not exist (env.robot.port): "
                                   "is the arm plugged in and powered? lerobot-find-port lists the ports")


class _Link:
    """One lerobot robot and what its envs share: the envs built from one config (one per task of a run) drive one
    robot (one serial bus, one camera capture), connected once, disconnected when the last env closes."""

    pool: dict[str, "_Link"] = {}
    pool_lock = threading.Lock()

    def __init__(self, key: str, robot) -> None:
        self.key, self.robot, self.refs = key, robot, 0
        self.lock = threading.RLock()  # every call into the robot, from any env and any thread
        self.connected = False
        self.moves = 0  # commands sent so far: an env's cached observation is stale once this moved on
        self.gripper_target: float | None = None
        self.last_obs: dict | None = None  # the last observation any env read (what hold() holds at)

    @classmethod
    def acquire(cls, config, kind: str) -> "_Link":
        key = f"{kind}:{config!r}"
        with cls.pool_lock:
            link = cls.pool.get(key)
            if link is None:
                link = cls.pool[key] = cls(key, make_robot(config, kind))
            link.refs += 1
            return link

    def release(self) -> None:
        with _Link.pool_lock:
            self.refs -= 1
            if self.refs > 0 or _Link.pool.pop(self.key, None) is None:
                return
        with self.lock:
            if self.connected and self.robot.is_connected:
                self.robot.disconnect()
            self.connected = False


class LeRobotEnv:
    """One lerobot robot as a ``RobotEnv`` + ``Arm`` for one task (the module docstring has the rules).

    ``task, seed, max_episode_steps, cameras, image_size``: the env factory contract; ``robot``: ``{"type": ...,
    <its config's fields>}``; ``plugins``: modules to import first; ``urdf_path, ee_frame, urdf_joints``: the URDF,
    its end-effector frame and the motors that are its joints (default: all but the gripper), None: joint deltas;
    ``translation_scale_m, rotation_scale_rad, joint_scale``: metres / radians / motor units per action unit;
    ``action_dim``: 4 or 7 with a URDF, one per motor without (the defaults: 4, the motors); ``gripper_motor,
    gripper_range``: the gripper (None: none) and its ``[open, closed]`` positions; ``ee_motors``: a Cartesian arm's
    x, y, z motors (metres); ``home, home_step, home_period_s, home_tolerance``: the reset pose (``[one per motor]``
    or ``{motor: position}``) and its approach; ``state_keys, success_key``: the observation; ``calibrate``: run
    lerobot's interactive calibration instead of refusing an uncalibrated robot; ``connect_timeout_s``;
    ``ik_iterations, ik_orientation_weight``: placo steps per action, orientation weight (None: 0 / 1 with rotation).
    """

    def __init__(self, task: str, seed: int, max_episode_steps: int = 200, cameras: Sequence[str] = (),
                 image_size: int = 128, *, robot: Mapping, plugins: Sequence[str] = (), urdf_path: str | None = None,
                 ee_frame: str | None = None, urdf_joints: Sequence[str] | None = None,
                 translation_scale_m: float = 0.01, rotation_scale_rad: float = 0.05,
                 joint_scale: float | Sequence[float] = 1.0, action_dim: int | None = None,
                 gripper_motor: str | None = "gripper", gripper_range: Sequence[float] | None = None,
                 ee_motors: Sequence[str] | None = None, home: Sequence[float] | Mapping[str, float] | None = None,
                 home_step: float = 2.0, home_period_s: float = 0.05, home_tolerance: float = 1.0,
                 state_keys: Sequence[str] | None = None, success_key: str | None = None, calibrate: bool = False,
                 connect_timeout_s: float = 10.0, ik_iterations: int = 3,
                 ik_orientation_weight: float | None = None) -> None:
        if int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        spec = _plain(robot) if isinstance(robot, Mapping) else {}
        self.config = robot_config(spec, plugins, defaults={"task": str(task), "seed": int(seed)})
        self.robot_type = str(spec["type"])
        self._where = _address(self.config, self.robot_type)
        if isinstance(getattr(self.config, "max_relative_target", None), int):
            self.config.max_relative_target = float(self.config.max_relative_target)
        _check_port(self.config, self.robot_type)
        self.task, self.seed, self.max_episode_steps = str(task), int(seed), int(max_episode_steps)
        self.image_size, self.calibrate, self.connect_timeout_s = int(image_size), bool(calibrate), connect_timeout_s
        self.home_step, self.home_period_s, self.home_tolerance = float(home_step), home_period_s, home_tolerance
        self._link = _Link.acquire(self.config, self.robot_type)
        self.robot, self._io = self._link.robot, self._link.lock
        self._joint_filter: Callable[[np.ndarray], np.ndarray] | None = None
        self._obs, self._obs_moves, self._closed = None, -1, False  # the last observation, the link's moves then
        self._steps, self._done, self.episodes_started = 0, True, 0
        try:
            self._setup(self._where, cameras, urdf_path, ee_frame, urdf_joints, translation_scale_m,
                        rotation_scale_rad, joint_scale, action_dim, gripper_motor, gripper_range, ee_motors, home,
                        state_keys, success_key, ik_iterations, ik_orientation_weight)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------ setup
    def _setup(self, where, cameras, urdf_path, ee_frame, urdf_joints, translation_scale_m, rotation_scale_rad,
               joint_scale, action_dim, gripper_motor, gripper_range, ee_motors, home, state_keys, success_key,
               ik_iterations, ik_orientation_weight) -> None:
        action_keys = list(self.robot.action_features)
        self.motors = [k.removesuffix(".pos") for k in action_keys if k.endswith(".pos")]
        """The robot's motors, in its action order: the order of joint_positions() and of the joint filter."""
        if not self.motors:
            raise ValueError(f"{where}: its actions {action_keys} have no '<motor>.pos' joint targets")
        if gripper_motor is not None and gripper_motor not in self.motors:
            raise ValueError(f"{where}: gripper_motor {gripper_motor!r} is not one of its motors {self.motors}")
        self.gripper_motor, grip = gripper_motor, int(gripper_motor is not None)
        if grip:
            if gripper_range is None or len(gripper_range) != 2:
                raise ValueError(f"{where}: gripper_range must be [open, closed] positions of motor "
                                 f"{gripper_motor!r} (its units), got {gripper_range}")
            self._grip_mid = (float(gripper_range[0]) + float(gripper_range[1])) / 2
            self._grip_half = (float(gripper_range[1]) - float(gripper_range[0])) / 2
        self._arm = [m for m in self.motors if m != gripper_motor]
        self.kinematics = None
        if urdf_path is not None:
            self._setup_kinematics(where, str(urdf_path), ee_frame, urdf_joints)
            allowed = (3 + grip, 6 + grip)
            self.action_dim = int(action_dim if action_dim is not None else allowed[0])
            if self.action_dim not in allowed:
                raise ValueError(f"{where}: with a URDF, action_dim is {allowed[0]} (translation + gripper) or "
                                 f"{allowed[1]} (+ rotation), got {self.action_dim}")
            self.rotation = self.action_dim == allowed[1]
            w = ik_orientation_weight if ik_orientation_weight is not None else (1.0 if self.rotation else 0.0)
            self.ik_orientation_weight, self.ik_iterations = float(w), max(1, int(ik_iterations))
        else:
            self.action_dim, self.rotation = int(action_dim if action_dim is not None else len(self.motors)), False
            if self.action_dim != len(self.motors):
                raise ValueError(f"{where}: without a URDF (env.urdf_path) actions are joint deltas, one per motor "
                                 f"{self._arm + ([gripper_motor] if grip else [])}: action_dim {len(self.motors)}, "
                                 f"got {self.action_dim}")
            try:
                self.joint_scale = np.broadcast_to(np.asarray(joint_scale, np.float64), (len(self._arm),)).copy()
            except ValueError:
                raise ValueError(f"{where}: joint_scale: one value or one per motor {self._arm}, "
                                 f"got {joint_scale}") from None
        self.translation_scale_m = float(translation_scale_m)
        self.rotation_scale_rad = float(rotation_scale_rad) if self.rotation else 0.0
        self.ee_motors = None if ee_motors is None else list(ee_motors)
        if self.ee_motors is not None and (self.kinematics is not None or self.ee_motors != self._arm[:3]
                                           or not np.allclose(self.joint_scale[:3], self.translation_scale_m)):
            raise ValueError(f"{where}: ee_motors (a Cartesian arm, no URDF) must be its first three motors "
                             f"{self._arm[:3]} with joint_scale = translation_scale_m, got {ee_motors}")
        features = self.robot.observation_features
        scalars = [k for k, v in features.items() if not isinstance(v, tuple)]
        self.state_features = self._expand(where, state_keys, scalars, action_keys)
        self.observation_dim = len(self.state_features)
        if success_key is not None and success_key not in features:
            raise ValueError(f"{where}: success_key {success_key!r} is not among its observation features {scalars}")
        self.success_key = success_key
        images = [k for k, v in features.items() if isinstance(v, tuple) and len(v) == 3]
        self.cameras = [str(c) for c in cameras]
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise ValueError(f"{where}: camera(s) {missing} are not among its image features {images} (the robot "
                             "config's cameras)")
        self.home_joints = self._home_vector(where, home)
        """The reset pose (n_motors,), NaN where a motor keeps its position; None: no homing."""

    def _setup_kinematics(self, where: str, urdf_path: str, ee_frame: str | None, urdf_joints) -> None:
        if not os.path.isfile(urdf_path):
            raise FileNotFoundError(f"{where}: env.urdf_path {urdf_path!r} is not a file")
        if not ee_frame:
            raise ValueError(f"{where}: env.ee_frame, the URDF's end-effector frame, is needed with a URDF")
        joints = list(urdf_joints) if urdf_joints is not None else list(self._arm)
        unknown = [j for j in joints if j not in self._arm]
        if unknown:
            raise ValueError(f"{where}: urdf_joints {unknown} are not among its arm motors {self._arm}")
        try:
            kin = RobotKinematics(urdf_path, target_frame_name=str(ee_frame), joint_names=joints)
        except RuntimeError as e:  # placo: an unknown frame
            raise ValueError(f"{where}: {urdf_path}: {e} (env.ee_frame {ee_frame!r})") from e
        urdf = list(kin.robot.joint_names())
        missing = [j for j in joints if j not in urdf]
        if missing:
            raise ValueError(f"{where}: motors {missing} are not joints of {urdf_path} (its joints: {urdf}); set "
                             "env.urdf_joints to the motors the URDF models")
        self.kinematics, self.urdf_joints = kin, joints
        self._ik_index = [self.motors.index(j) for j in joints]

    @staticmethod
    def _expand(where: str, keys, scalars: list[str], action_keys: list[str]) -> list[str]:
        out = [k for k in action_keys if k in scalars] if keys is None else []
        for pattern in keys or ():
            hits = [k for k in scalars if fnmatch.fnmatchcase(k, str(pattern))]
            if not hits:
                raise ValueError(f"{where}: state_keys entry {pattern!r} matches none of its features {scalars}")
            out += [k for k in hits if k not in out]
        return out

    def _home_vector(self, where: str, home) -> np.ndarray | None:
        if home is None:
            return None
        home = _plain(home)
        n = len(self.motors)
        named = home if isinstance(home, dict) else {0} if len(home) != n else dict(zip(self.motors, home))
        if set(named) - set(self.motors):
            raise ValueError(f"{where}: home: one position per motor {self.motors} or {{motor: position}}, got {home}")
        return np.array([float(named.get(m, np.nan)) for m in self.motors])

    # ------------------------------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Connect (once): lerobot's ``connect(calibrate=False)`` within ``connect_timeout_s``, then the
        calibration check (lerobot's interactive calibration with ``calibrate=True``)."""
        if self._closed:
            raise RuntimeError(f"{self._where}: this env is closed")
        with self._io:
            if self._link.connected:
                return
            _check_port(self.config, self.robot_type)
            where, failure = self._where, []

            def run() -> None:
                try:
                    self.robot.connect(calibrate=False)
                except BaseException as e:  # noqa: BLE001 - reported on the calling thread
                    failure.append(e)

            worker = threading.Thread(target=run, name=f"connect-{self.robot_type}", daemon=True)
            worker.start()
            worker.join(self.connect_timeout_s)
            if worker.is_alive():
                raise RobotConnectionError(f"{where}: no connection within {self.connect_timeout_s:g} s "
                                           "(env.connect_timeout_s): is it powered and on that address?")
            if failure:
                raise RobotConnectionError(f"{where}: cannot connect: {failure[0]}") from failure[0]
            if not self.robot.is_calibrated:
                if not self.calibrate:
                    self.robot.disconnect()
                    raise RuntimeError(f"{where} is not calibrated (no calibration matching its motors in "
                                       f"{self.robot.calibration_dir}): run lerobot-calibrate --robot.type="
                                       f"{self.robot_type} ... first, or set env.calibrate=true to calibrate here")
                self.robot.calibrate()
                self.robot.configure()
            self._link.connected = True

    def close(self) -> None:
        """Disconnect the robot, once the last env sharing it is closed (idempotent)."""
        if not self._closed:
            self._closed = True
            self._link.release()

    # ------------------------------------------------------------------------------------------ reading
    def _read(self) -> dict:
        self.connect()
        self._obs = self._link.last_obs = self.robot.get_observation()
        self._obs_moves = self._link.moves
        return self._obs

    def _current(self) -> dict:  # the last observation, unless the robot moved since (a hold, another env)
        return self._read() if self._obs is None or self._obs_moves != self._link.moves else self._obs

    def observe(self) -> np.ndarray:
        """The present observation, read without moving anything."""
        with self._io:
            return self._state(self._read())

    def _positions(self, obs: Mapping) -> np.ndarray:
        return np.array([float(obs[f"{m}.pos"]) for m in self.motors], dtype=np.float64)

    def _state(self, obs: Mapping) -> np.ndarray:
        return np.array([float(obs[k]) for k in self.state_features], dtype=np.float32)

    def joint_positions(self) -> np.ndarray:
        """(n_motors,) the present positions in :attr:`motors` order (the robot's units: degrees for lerobot arms
        with ``use_degrees``)."""
        with self._io:
            return self._positions(self._current())

    def ee_position(self) -> np.ndarray:
        """(3,) the end effector in metres, the robot's base frame: FK with a URDF, ``ee_motors`` without."""
        with self._io:
            q = self._positions(self._current())
            if self.kinematics is not None:  # placo's model is shared state: under the lock
                return self._fk(q)[:3, 3].copy()
        if self.ee_motors is not None:
            return q[[self.motors.index(m) for m in self.ee_motors]]
        raise NotImplementedError(f"{self._where}: ee_position() needs the arm's kinematics: set env.urdf_path "
                                  "(and env.ee_frame), or env.ee_motors for a Cartesian arm")

    def images(self) -> dict[str, np.ndarray]:
        """``{camera: uint8 (image_size, image_size, 3)}`` from the last observation."""
        if not self.cameras:
            return {}
        with self._io:
            obs = self._current()
        return {c: self._resize(c, obs[c]) for c in self.cameras}

    def _resize(self, camera: str, frame) -> np.ndarray:
        img = np.asarray(frame)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"{self._where}: camera {camera!r} gave a frame of shape {img.shape}, not (H, W, 3)")
        img = img if img.dtype == np.uint8 else np.clip(img, 0, 255).astype(np.uint8)
        if img.shape[:2] != (self.image_size, self.image_size):
            img = cv2.resize(img, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(img)

    @property
    def elapsed_steps(self) -> int:
        return self._steps

    # ------------------------------------------------------------------------------------------ commanding
    def set_joint_filter(self, fn: Callable[[np.ndarray], np.ndarray] | None) -> None:
        """``fn(targets (n_motors,)) -> targets``, applied to every joint command (the safety layer's joint clamp,
        :attr:`motors` order); None removes it."""
        self._joint_filter = fn

    def _fk(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(self.kinematics.forward_kinematics(q[self._ik_index]), dtype=np.float64)

    def _arm_targets(self, q: np.ndarray, action: np.ndarray) -> np.ndarray:
        """Joint targets of the arm's motors (gripper untouched) for ``action``."""
        target = q.copy()
        if self.kinematics is None:
            idx = [self.motors.index(m) for m in self._arm]
            target[idx] = q[idx] + action[:len(self._arm)] * self.joint_scale
            return target
        pose = self._fk(q)  # also puts placo's model at q: the IK linearises there
        goal = pose.copy()
        goal[:3, 3] = pose[:3, 3] + action[:3] * self.translation_scale_m
        if self.rotation:
            goal[:3, :3] = Rotation.from_rotvec(action[3:6] * self.rotation_scale_rad).as_matrix() @ pose[:3, :3]
        sol = q[self._ik_index]
        for _ in range(self.ik_iterations):
            sol = np.asarray(self.kinematics.inverse_kinematics(sol, goal,
                                                                orientation_weight=self.ik_orientation_weight))
        target[self._ik_index] = sol
        return target

    def _send(self, target: np.ndarray, q: np.ndarray) -> dict:
        """Filter, cap (max_relative_target) and send joint targets; what the robot reports it sent."""
        if self._joint_filter is not None:
            target = np.asarray(self._joint_filter(target.copy()), dtype=np.float64)
        cap = getattr(self.config, "max_relative_target", None)
        goal = {m: float(t) for m, t in zip(self.motors, target)}
        if cap is not None:
            goal = ensure_safe_goal_position({m: (goal[m], float(p)) for m, p in zip(self.motors, q)}, cap)
        if self.gripper_motor is not None:
            self._link.gripper_target = goal[self.gripper_motor]
        self._link.moves += 1
        return self.robot.send_action({f"{m}.pos": v for m, v in goal.items()})

    def step(self, action: Sequence[float] | np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Send ``action`` (clipped to [-1, 1]) as joint targets; the observation after it."""
        if self._done:
            raise RuntimeError(f"{self._where}: the episode is over (or never started); call reset()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.action_dim,) or not np.all(np.isfinite(a)):
            raise ValueError(f"{self._where}: action must be {self.action_dim} finite numbers, got {action}")
        a = np.clip(a, -1.0, 1.0)
        with self._io:
            q = self._positions(self._current())
            target = self._arm_targets(q, a)
            if self.gripper_motor is not None:
                target[self.motors.index(self.gripper_motor)] = self._grip_mid + a[-1] * self._grip_half
            sent = self._send(target, q)
            obs = self._read()
        self._steps += 1
        success = self.success_key is not None and float(obs[self.success_key]) > 0.5
        truncated = not success and self._steps >= self.max_episode_steps
        self._done = success or truncated
        info = {"success": success, "joint_targets": {f"{m}.pos": v for m, v in zip(self.motors, target.tolist())},
                "sent_action": sent}
        return self._state(obs), (1.0 if success else 0.0), success, truncated, info

    def _send_hold(self) -> None:  # reads no camera: hold() runs on any thread, a GL context renders on one
        q = self._positions(self._link.last_obs if self._link.last_obs is not None else self._read())
        if self.gripper_motor is not None and self._link.gripper_target is not None:
            q[self.motors.index(self.gripper_motor)] = self._link.gripper_target
        self._send(q, q)

    def hold(self) -> None:
        """Keep the pose: the last observed joint positions as targets (nothing is read: a camera may only be read
        on the thread that reads it), the gripper at its last target."""
        if not self._link.connected or self._closed:
            return
        if not self._io.acquire(timeout=_HOLD_WAIT_S):  # a call in progress: hold as soon as it returns
            logger.warning("%s: busy for %.1f s; holding as soon as the call returns", self._where, _HOLD_WAIT_S)
            threading.Thread(target=self._hold_when_free, name=f"hold-{self.robot_type}", daemon=True).start()
            return
        try:
            self._send_hold()
        finally:
            self._io.release()

    def _hold_when_free(self) -> None:
        with self._io:
            if not self._closed:
                self._send_hold()

    def home(self) -> None:
        """Move to ``home``, ``home_step`` units per command, ``home_period_s`` apart, a warning if not within
        ``home_tolerance`` in time (a blocked arm is not pushed on); holds where none is set (``safety.on_exit``)."""
        if self.home_joints is None:
            logger.warning("%s: no home pose set (env.home): holding", self._where)
            return self.hold()
        cap = getattr(self.config, "max_relative_target", None)  # commands it would cap: smaller steps
        step = min([self.home_step, *([cap] if isinstance(cap, float) else (cap or {}).values())])
        with self._io:
            q = self._positions(self._read())
            goal = np.where(np.isnan(self.home_joints), q, self.home_joints)
            for _ in range(int(np.ceil(np.max(np.abs(goal - q)) / max(step, 1e-9))) * 3 + 10):
                if np.all(np.abs(goal - q) <= self.home_tolerance):
                    return
                self._send(q + np.clip(goal - q, -step, step), q)
                time.sleep(self.home_period_s)
                q = self._positions(self._read())
        logger.warning("%s: home %s not reached (at %s)", self._where, goal.tolist(), q.tolist())

    # ------------------------------------------------------------------------------------------ episodes
    def reset(self) -> np.ndarray:
        """A new episode: the robot's scene reset where it has one (a simulated robot), then ``home``."""
        self.connect()
        with self._io:
            reset_scene = getattr(self.robot, "reset_scene", None)
            if callable(reset_scene):
                reset_scene()
                self._link.moves += 1
            self._link.gripper_target = None
            if self.home_joints is not None:
                self.home()
            obs = self._read()
        self._steps, self._done = 0, False
        self.episodes_started += 1
        return self._state(obs)

    def rng_state(self) -> dict:
        """The robot's random state where it keeps one (a simulated robot), else empty."""
        if not callable(getattr(self.robot, "rng_state", None)):
            return {}
        self.connect()
        return {"robot": self.robot.rng_state(), "episodes_started": self.episodes_started}

    def load_rng_state(self, state: dict) -> None:
        if "robot" in state and callable(getattr(self.robot, "load_rng_state", None)):
            self.connect()
            self.robot.load_rng_state(state["robot"])
        self.episodes_started = int(state.get("episodes_started", self.episodes_started))


def make_lerobot_env(task: str, seed: int, max_episode_steps: int = 200, cameras: Sequence[str] = (),
                     image_size: int = 128, *, type: str, robot_cameras: Mapping | None = None,
                     plugins: Sequence[str] = (), adapter: Mapping | None = None, **robot_fields) -> LeRobotEnv:
    """The ``env.robot`` factory: ``type`` and the other keys of ``env.robot`` are the lerobot robot config (its
    ``cameras`` field is ``robot_cameras``: ``cameras`` is the factory contract's), ``adapter`` the keyword
    arguments of :class:`LeRobotEnv` (``urdf_path``, ``state_keys``, ...)."""
    robot = {"type": type, **robot_fields, **({} if robot_cameras is None else {"cameras": robot_cameras})}
    return LeRobotEnv(task, seed, max_episode_steps, cameras, image_size, robot=robot, plugins=plugins,
                      **_plain(adapter or {}))


make_lerobot_env.connects = True  # type: ignore[attr-defined]  # fit reads the robot once before anything starts
