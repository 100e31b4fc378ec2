"""A Franka arm through the HIL-SERL / ConRFT robot server: :class:`FrankaServerEnv` (``env=franka_server``).

HIL-SERL's ``serl_robot_infra/robot_servers/franka_server.py`` (github.com/rail-berkeley/hil-serl; ConRFT,
github.com/cccedric/conrft, ships the same file) is a Flask server on the robot's real-time computer in front of
the ``serl_franka_controllers`` Cartesian impedance controller. Users keep running it: this is a client of its
protocol, after the upstream client ``franka_env/envs/franka_env.py``. Every route is ``POST`` (Flask's port
5000); commands answer a short text, getters a JSON object. The routes used here:

- ``/getstate`` -> ``{"pose": [x, y, z, qx, qy, qz, qw], "vel": [6], "force": [3], "torque": [3], "q": [7],
  "dq": [7], "jacobian": [6][7], "gripper_pos": g}``: ``pose`` the end effector in the base frame (``O_T_EE``;
  metres, scipy ``as_quat`` order x y z w); ``vel`` = ``jacobian @ dq`` (m/s, rad/s); ``force`` / ``torque`` the
  estimated external wrench ``K_F_ext_hat_K`` (N, N m); ``q`` rad, ``dq`` rad/s; ``gripper_pos`` the opening,
  1 open .. 0 closed (Robotiq ``1 - gPO / 255``, Franka Hand finger width / 0.08).
- ``/pose`` ``{"arr": [x, y, z, qx, qy, qz, qw]}``: the controller's equilibrium pose.
- ``/open_gripper``, ``/close_gripper``; ``/move_gripper`` ``{"gripper_pos": p}``: ``int(p)`` clipped to 0..255
  (Robotiq ``rPR``: 255 closed; the Franka Hand server reads a width ``p / 2550`` m: 255 open).
- ``/clearerr`` (error recovery), ``/jointreset`` (joints to the server's ``--reset_joint_target``: tens of
  seconds), ``/update_param`` (the controller's dynamic-reconfigure parameters: stiffness, damping, clips).
  :mod:`dual_actor.robots.franka_sim_server` lists the other routes.

Matched from the upstream client: a step's target is ``measured xyz + action[:3] * scale`` and
``Rotation.from_euler("xyz", action[3:6] * scale) * Rotation.from_quat(measured quat)``, clipped like
``clip_safety_box`` (``pose_limit_*`` = ``ABS_POSE_LIMIT_*``: xyz + xyz-Euler, the roll by its absolute value);
then gripper command, ``/clearerr``, ``/pose``, ``/getstate``. A reset: ``/clearerr``, hold the measured pose,
``/update_param`` precision, ``/jointreset`` at every N-th reset (``JOINT_RESET_PERIOD``), an interpolated move
home, ``/update_param`` compliance, ``/clearerr``. On purpose different: the gripper sign is the project's (+1
closes; HIL-SERL's client closes at ``<= -0.5``: its data needs that dim negated); binary gripper commands go on
a change of the commanded state (SERL's ``gripper_binary_state``; HIL-SERL also checked ``gripper_pos`` against
0.85, ConRFT dropped that); ``gripper_sleep_s`` (upstream ``GRIPPER_SLEEP``: HIL-SERL 0.6 s, ConRFT 1.0 s) is 0
by default; ``gripper_mode: continuous`` uses ``/move_gripper`` (left unimplemented upstream); 4-d actions hold
the orientation measured at reset; ``/pose`` carries float64 (upstream casts to float32); the home move
interpolates the quaternion on the short arc, normalised (upstream: ``np.linspace`` of the components); a 6-number
``home`` is xyz + scipy xyz-Euler (ConRFT's ``new_euler_2_quat``; HIL-SERL's ``euler_2_quat`` flips the yaw and
returns w first). Versions: SERL's server (rail-berkeley/serl) lacks ``/set_load`` and ``/close_gripper_slow``;
ConRFT's sets the Franka Hand grasp force to 1 N (130 N); the routes, bodies and keys used here are the same in
all three. With ``--gripper_type None`` the upstream ``/getstate`` fails (HTTP 500: it has no gripper).

Errors: an unreachable server, a timeout (``timeout_s`` on every call; ``reset_timeout_s`` on ``/jointreset`` and
``/sim/reset``) or an HTTP error raises :class:`FrankaServerError` (a ``ConnectionError``) naming the URL and the
route; a reply the protocol does not allow, :class:`FrankaReplyError` (a ``ValueError``) naming the key.

Cameras: lerobot 0.4.4 camera configs (``{type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}``,
``{type: intelrealsense, serial_number_or_name: "1234", ...}`` or a registered plugin type), decoded with draccus
as lerobot's CLI does, built by ``lerobot.cameras.make_cameras_from_configs``, read with ``async_read(timeout_ms=)``
and resized to ``image_size`` (uint8 RGB, H W 3).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Mapping, Sequence
from urllib.parse import urlparse

import numpy as np
import requests

DEFAULT_URL = "http://127.0.0.1:5000/"
STATE_SIZES: dict[str, int] = {"pose": 7, "vel": 6, "force": 3, "torque": 3, "q": 7, "dq": 7, "jacobian": 42,
                               "gripper_pos": 1}
"""Sizes of the protocol's ``/getstate`` fields (flattened)."""
DEFAULT_STATE_KEYS = ("pose", "gripper_pos", "vel", "force", "torque")
"""The default state vector (20 = 7 + 1 + 6 + 3 + 3; proprio: pose + gripper, 8), HIL-SERL's proprio keys."""
GRIPPER_MODES = ("binary", "continuous")


class FrankaServerError(ConnectionError):
    """The robot server is unreachable, did not answer in time, or refused a request (names the URL, endpoint)."""


class FrankaReplyError(ValueError):
    """A reply the protocol does not allow: not JSON, a key missing, a value of the wrong size (names the key)."""


def state_dim(state_keys: Sequence[str]) -> int:
    """Length of the state vector of protocol keys ``state_keys`` (``env.obs_dim``); other keys: ask the server."""
    unknown = [k for k in state_keys if k not in STATE_SIZES]
    if unknown:
        raise KeyError(f"state keys {unknown} are not /getstate fields of the protocol ({list(STATE_SIZES)}); "
                       "their sizes come from the server's reply")
    return sum(STATE_SIZES[k] for k in state_keys)


def _rotation():
    from scipy.spatial.transform import Rotation

    return Rotation


def clip_pose(pose: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """HIL-SERL's ``clip_safety_box``: xyz into [low[:3], high[:3]], the xyz-Euler angles into [low[3:], high[3:]],
    the roll by its absolute value (it wraps at +-pi), keeping its sign. ``pose``: (7,) xyz + quaternion."""
    rot = _rotation()
    out = np.array(pose, dtype=np.float64)
    out[:3] = np.clip(out[:3], low[:3], high[:3])
    euler = rot.from_quat(out[3:]).as_euler("xyz")
    euler[0] = np.sign(euler[0]) * np.clip(np.abs(euler[0]), low[3], high[3])
    euler[1:] = np.clip(euler[1:], low[4:], high[4:])
    out[3:] = rot.from_euler("xyz", euler).as_quat()
    return out


def _nlerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Quaternion interpolation on the shorter arc, normalised."""
    q1 = -q1 if float(np.dot(q0, q1)) < 0 else q1
    q = (1.0 - t) * q0 + t * q1
    return q / np.linalg.norm(q)


def _home_pose(home: Sequence[float] | None) -> np.ndarray | None:
    if home is None:
        return None
    h = np.asarray(list(home), dtype=np.float64).reshape(-1)
    if h.size not in (3, 6, 7) or not np.all(np.isfinite(h)):
        raise ValueError(f"home must be 3 (xyz, m), 6 (+ xyz-Euler, rad) or 7 (+ quaternion x y z w) finite "
                         f"numbers, got {home}")
    if h.size == 6:
        h = np.concatenate([h[:3], _rotation().from_euler("xyz", h[3:]).as_quat()])
    elif h.size == 7:
        n = np.linalg.norm(h[3:])
        if n < 1e-6:
            raise ValueError(f"home's quaternion has norm {n:g}")
        h[3:] /= n
    return h


def _plain(value: Any) -> Any:
    """A Hydra / OmegaConf node as plain Python containers."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def camera_config(spec: Any):
    """A lerobot ``CameraConfig`` from a mapping with its ``type`` (``opencv``, ``intelrealsense``, ``zmq``,
    ``reachy2_camera`` or a registered third-party type); a ``CameraConfig`` passes through."""
    import draccus
    from lerobot.cameras import CameraConfig

    if isinstance(spec, CameraConfig):
        return spec
    spec = _plain(spec)
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ValueError(f"a camera config is a mapping with a 'type' (e.g. {{type: opencv, index_or_path: 0}}), "
                         f"got {spec!r}")
    _register_camera_types(str(spec["type"]))
    try:
        return draccus.decode(CameraConfig, dict(spec))
    except Exception as e:  # draccus.utils.DecodingError and the configs' own checks
        raise ValueError(f"bad lerobot camera config {dict(spec)}: {e} (known types: "
                         f"{sorted(CameraConfig.get_known_choices())})") from e


def _register_camera_types(wanted: str) -> None:
    """Import lerobot's camera configs (each registers its type) and, for another type, third-party plugins."""
    import importlib

    from lerobot.cameras import CameraConfig

    for mod in ("opencv", "realsense", "zmq", "reachy2_camera"):
        try:
            importlib.import_module(f"lerobot.cameras.{mod}.configuration_{mod}")
        except ImportError:  # pragma: no cover - a camera backend's SDK missing: its type stays unknown
            pass
    if wanted not in CameraConfig.get_known_choices():
        from lerobot.utils.import_utils import register_third_party_plugins

        register_third_party_plugins()


class FrankaServerEnv:
    """One task on a Franka arm through the HIL-SERL / ConRFT robot server: a ``RobotEnv`` and an ``Arm``.

    ``reset() -> obs``: ``/clearerr``; ``/sim/reset`` (``sim_reset``); every ``joint_reset_every``-th reset or with
    a ``home``: hold the measured pose, ``/update_param`` ``precision_param``, [``/jointreset``], ``home_steps``
    interpolated ``/pose`` targets ``home_period_s`` apart, ``/update_param`` ``compliance_param`` (a null param is
    not sent); the gripper opened (``open_gripper_on_reset``); ``/clearerr``; ``/getstate``.
    ``step(action)``: the action clipped to [-1, 1] (``action_dim`` 4: xyz + gripper, 7: xyz + roll pitch yaw +
    gripper); its gripper command (``binary``: ``/close_gripper`` at ``>= gripper_close_at``, ``/open_gripper`` at
    ``<= gripper_open_at``; ``continuous``: ``/move_gripper``, -1 -> open .. +1 -> ``gripper_closed_pos``; each on
    a change only, then ``gripper_sleep_s``); ``/clearerr`` (``clear_errors_every_step``); ``/pose`` with
    :meth:`target_pose`; ``/getstate``. The observation: float32, the reply's ``state_keys`` flattened in order.
    Reward 1 and ``terminated`` when the reply's ``success_key`` is true (null on a real robot, where the
    operator's success ends the episode); ``truncated`` at ``max_episode_steps``; ``info``: ``{"success"}``.

    Args (beyond the ``make_env`` contract; ``seed`` only reaches ``/sim/reset``; every name of ``cameras`` needs
    an entry in ``camera_configs``): ``url`` ``http://HOST:PORT/``; ``home`` 3 (xyz, m) / 6 (+ xyz-Euler, rad) /
    7 (+ quaternion x y z w) numbers, or null (no move), kept as ``home_pose`` (:meth:`home` goes there);
    ``translation_scale_m`` / ``rotation_scale_rad`` per action unit (upstream ``ACTION_SCALE[0]`` / ``[1]``; the
    rotation counts with 7-d actions only, else 0);
    ``gripper_closed_pos`` 255 for a Robotiq server, 0 for a Franka Hand one; ``precision_param`` /
    ``compliance_param`` the ``/update_param`` bodies (upstream ``PRECISION_PARAM`` / ``COMPLIANCE_PARAM``);
    ``pose_limit_low`` / ``_high`` 6 numbers (upstream ``ABS_POSE_LIMIT_*``); ``timeout_s`` requests' timeout of
    every call, ``reset_timeout_s`` of ``/jointreset`` and ``/sim/reset``; ``camera_configs`` ``{name: lerobot
    camera config}``, read with ``async_read(timeout_ms=camera_timeout_ms)``; ``state_keys`` the ``/getstate``
    fields of the state, proprioception first (pose + gripper); ``success_key`` a reply key ending the episode;
    ``sim_reset`` the simulation's ``/sim/reset`` at every reset (:mod:`dual_actor.robots.franka_sim_server`).

    Raises:
        FrankaServerError: the server cannot be reached (at construction: ``/getstate``) or refuses a request.
        FrankaReplyError: a malformed reply. ValueError / KeyError: bad arguments.
    """

    robot_name = "franka"
    connects = True  # fit reads it once before anything starts (dual_actor/training/build.py)

    def __init__(
        self,
        task: str,
        seed: int,
        max_episode_steps: int = 200,
        cameras: Sequence[str] = (),
        image_size: int = 128,
        *,
        url: str = DEFAULT_URL,
        home: Sequence[float] | None = None,
        translation_scale_m: float = 0.01,
        rotation_scale_rad: float = 0.06,
        action_dim: int = 4,
        gripper_mode: str = "binary",
        gripper_close_at: float = 0.5,
        gripper_open_at: float = -0.5,
        gripper_closed_pos: float = 255.0,
        gripper_sleep_s: float = 0.0,
        open_gripper_on_reset: bool = True,
        joint_reset_every: int = 0,
        home_steps: int = 10,
        home_period_s: float = 0.1,
        precision_param: Mapping[str, float] | None = None,
        compliance_param: Mapping[str, float] | None = None,
        pose_limit_low: Sequence[float] | None = None,
        pose_limit_high: Sequence[float] | None = None,
        clear_errors_every_step: bool = True,
        timeout_s: float = 2.0,
        reset_timeout_s: float = 60.0,
        camera_configs: Mapping[str, Any] | None = None,
        camera_timeout_ms: float = 500.0,
        state_keys: Sequence[str] = DEFAULT_STATE_KEYS,
        success_key: str | None = None,
        sim_reset: bool = False,
    ) -> None:
        parsed = urlparse(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"url must be http://HOST:PORT of the Franka robot server, got {url!r}")
        checks = [(int(max_episode_steps) >= 1, "max_episode_steps >= 1"), (int(home_steps) >= 1, "home_steps >= 1"),
                  (int(action_dim) in (4, 7), "action_dim 4 (xyz + gripper) or 7 (xyz + roll pitch yaw + gripper)"),
                  (gripper_mode in GRIPPER_MODES, f"gripper_mode one of {GRIPPER_MODES}"),
                  (-1.0 <= gripper_open_at < gripper_close_at <= 1.0, "-1 <= gripper_open_at < gripper_close_at <= 1"),
                  (float(gripper_closed_pos) in (0.0, 255.0), "gripper_closed_pos 255 (Robotiq) or 0 (Franka Hand)"),
                  (min(translation_scale_m, timeout_s, reset_timeout_s, camera_timeout_ms) > 0,
                   "translation_scale_m, timeout_s, reset_timeout_s, camera_timeout_ms > 0"),
                  (min(rotation_scale_rad, gripper_sleep_s, home_period_s, joint_reset_every) >= 0,
                   "rotation_scale_rad, gripper_sleep_s, home_period_s, joint_reset_every >= 0"),
                  ((pose_limit_low is None) == (pose_limit_high is None), "pose_limit_low and _high both, or neither"),
                  (len(set(cameras)) == len(cameras), "no duplicate cameras"),
                  (int(image_size) >= 1, "image_size >= 1")]
        for ok, need in checks:
            if not ok:
                raise ValueError(f"FrankaServerEnv: need {need}")
        self.url = str(url).rstrip("/") + "/"
        self.task, self.seed, self.max_episode_steps = str(task), int(seed), int(max_episode_steps)
        self.action_dim = int(action_dim)
        self.translation_scale_m = float(translation_scale_m)
        self.rotation_scale_rad = float(rotation_scale_rad) if self.action_dim == 7 else 0.0
        self.gripper_mode, self.gripper_closed_pos = gripper_mode, float(gripper_closed_pos)
        self.gripper_close_at, self.gripper_open_at = float(gripper_close_at), float(gripper_open_at)
        self.gripper_sleep_s, self.open_gripper_on_reset = float(gripper_sleep_s), bool(open_gripper_on_reset)
        self.joint_reset_every = int(joint_reset_every)
        self.home_pose = _home_pose(_plain(home))
        self.home_steps, self.home_period_s = int(home_steps), float(home_period_s)
        self.precision_param = None if precision_param is None else dict(_plain(precision_param))
        self.compliance_param = None if compliance_param is None else dict(_plain(compliance_param))
        self.pose_limits = None
        if pose_limit_low is not None:
            low, high = (np.asarray(_plain(v), dtype=np.float64).reshape(-1) for v in (pose_limit_low, pose_limit_high))
            if low.shape != (6,) or high.shape != (6,) or np.any(low > high):
                raise ValueError(f"pose_limit_low <= pose_limit_high, 6 numbers each (xyz, xyz-Euler), "
                                 f"got {pose_limit_low} / {pose_limit_high}")
            self.pose_limits = (low, high)
        self.clear_errors_every_step = bool(clear_errors_every_step)
        self.timeout_s, self.reset_timeout_s = float(timeout_s), float(reset_timeout_s)
        keys = [str(k) for k in (_plain(state_keys) or [])]
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f"state_keys must name /getstate fields, each once, got {state_keys}")
        self.state_keys = keys
        self.success_key = None if success_key is None else str(success_key)
        self.sim_reset = bool(sim_reset)
        self.cameras = [str(c) for c in cameras]
        self.image_size, self.camera_timeout_ms = int(image_size), float(camera_timeout_ms)
        self._camera_specs = dict(_plain(camera_configs) or {})
        missing = [c for c in self.cameras if c not in self._camera_specs]
        if missing:
            raise KeyError(f"camera(s) {missing} have no entry in camera_configs (configured: "
                           f"{sorted(self._camera_specs)})")
        self._client = uuid.uuid4().hex[:12]  # this env's scene on a simulation server
        self._scene_open = False
        self._sizes: dict[str, int] = {k: STATE_SIZES[k] for k in keys if k in STATE_SIZES}
        self._session = requests.Session()
        self._cams: dict[str, Any] = {}
        self._steps, self._done, self.episodes_started = 0, True, 0
        self._gripper_sent: Any = None  # the last gripper command sent: "open" / "close" / a /move_gripper value
        self._held_quat: np.ndarray | None = None  # 4-d actions: the orientation measured at reset
        self.last_reply: dict[str, Any] = {}
        try:
            self._read_state()  # the server answers (or one clear error now), and the state's layout
            self._open_cameras()
        except BaseException:
            self.close()
            raise
        self.observation_dim = int(self._obs.size)

    # ------------------------------------------------------------------ HTTP
    def _post(self, endpoint: str, body: Any = None, *, timeout: float | None = None, reply_json: bool = False):
        """POST ``/endpoint`` (a JSON body when given): the reply's text, or its JSON object."""
        timeout = self.timeout_s if timeout is None else timeout
        where = f"Franka robot server at {self.url} (POST /{endpoint})"
        if self._session is None:
            raise RuntimeError(f"{where}: the env is closed")
        try:
            r = self._session.post(self.url + endpoint, json=body, timeout=(timeout, timeout))
        except requests.Timeout as e:
            raise FrankaServerError(f"{where}: no answer within {timeout:g} s") from e
        except requests.RequestException as e:
            raise FrankaServerError(f"{where}: unreachable ({type(e).__name__}: is the server running and the URL "
                                    f"right?)") from e
        if not r.ok:
            raise FrankaServerError(f"{where}: HTTP {r.status_code}: {r.text.strip()[:300]!r}")
        if not reply_json:
            return r.text
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise FrankaReplyError(f"{where}: expected a JSON object, got {r.text.strip()[:300]!r}")
        return data

    def _vector(self, reply: Mapping[str, Any], key: str, size: int | None) -> np.ndarray:
        where = f"Franka robot server at {self.url}: /getstate reply"
        if key not in reply:
            raise FrankaReplyError(f"{where} has no key {key!r} (keys: {sorted(reply)})")
        try:
            v = np.asarray(reply[key], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise FrankaReplyError(f"{where}: {key!r} is not numbers: {str(reply[key])[:200]}") from e
        if size is not None and v.size != size:
            raise FrankaReplyError(f"{where}: {key!r} has {v.size} values, expected {size}")
        if not np.all(np.isfinite(v)):
            raise FrankaReplyError(f"{where}: {key!r} is not finite: {v.tolist()}")
        return v

    def _read_state(self) -> np.ndarray:
        """``/getstate``: the observation, the measured pose and the success flag (kept for the next step)."""
        reply = self._post("getstate", reply_json=True)
        pose = self._vector(reply, "pose", 7)
        if abs(np.linalg.norm(pose[3:]) - 1.0) > 1e-2:
            raise FrankaReplyError(f"Franka robot server at {self.url}: /getstate reply: 'pose' has a quaternion of "
                                   f"norm {np.linalg.norm(pose[3:]):.4g} (x y z w expected)")
        parts = []
        for key in self.state_keys:
            v = self._vector(reply, key, self._sizes.get(key))
            self._sizes.setdefault(key, v.size)
            parts.append(v)
        flag = False if self.success_key is None else reply.get(self.success_key)
        if not isinstance(flag, (bool, int, float)):
            raise FrankaReplyError(f"Franka robot server at {self.url}: /getstate reply: success key "
                                   f"{self.success_key!r} is missing or not a truth value (keys: {sorted(reply)})")
        self.last_reply, self._pose, self._success = reply, pose, bool(flag)
        self._obs = np.concatenate(parts).astype(np.float32)
        return self._obs

    @property
    def state_slices(self) -> dict[str, slice]:
        """Where each of ``state_keys`` sits in the observation."""
        ends = np.cumsum([self._sizes[k] for k in self.state_keys])
        return {k: slice(int(e) - self._sizes[k], int(e)) for k, e in zip(self.state_keys, ends)}

    # ------------------------------------------------------------------ commands
    def _send_pose(self, pose: np.ndarray) -> None:
        self._post("pose", {"arr": [float(x) for x in pose]})

    def _command_gripper(self, g: float) -> None:
        """The gripper command of action value ``g`` (+1 closed, -1 open), sent on a change only."""
        if self.gripper_mode == "binary":
            want = "close" if g >= self.gripper_close_at else "open" if g <= self.gripper_open_at else None
            if want is None or want == self._gripper_sent:
                return
            self._post(f"{want}_gripper")
        else:
            closed = self.gripper_closed_pos
            want = (255.0 - closed) + (float(np.clip(g, -1.0, 1.0)) + 1.0) / 2.0 * (2.0 * closed - 255.0)
            if want == self._gripper_sent:
                return
            self._post("move_gripper", {"gripper_pos": want})
        self._gripper_sent = want
        if self.gripper_sleep_s:
            time.sleep(self.gripper_sleep_s)

    def _update_param(self, params: dict | None) -> None:
        if params is not None:
            self._post("update_param", params)

    def target_pose(self, action: np.ndarray) -> np.ndarray:
        """The ``/pose`` target (7,) of a clipped ``action`` from the last measured pose (module docstring)."""
        a = np.asarray(action, dtype=np.float64)
        pose = self._pose.copy()
        pose[:3] = self._pose[:3] + a[:3] * self.translation_scale_m
        if self.action_dim == 7:
            rot = _rotation()
            delta = rot.from_euler("xyz", a[3:6] * self.rotation_scale_rad)
            pose[3:] = (delta * rot.from_quat(self._pose[3:])).as_quat()
        elif self._held_quat is not None:
            pose[3:] = self._held_quat
        if self.pose_limits is not None:
            pose = clip_pose(pose, *self.pose_limits)
        return pose

    # ------------------------------------------------------------------ RobotEnv
    @property
    def elapsed_steps(self) -> int:
        return self._steps

    def reset(self) -> np.ndarray:
        """Start an episode (class docstring); the first observation."""
        self.episodes_started += 1
        self._post("clearerr")
        if self.sim_reset:
            self._post("sim/reset", {"task": self.task, "seed": self.seed, "client": self._client},
                       timeout=self.reset_timeout_s)
            self._scene_open = True
        joint = self.joint_reset_every > 0 and self.episodes_started % self.joint_reset_every == 0
        if self.home_pose is not None or joint:
            self._go_home(joint_reset=joint)
        self._gripper_sent = None
        if self.open_gripper_on_reset:
            self._command_gripper(-1.0)
        self._post("clearerr")
        obs = self._read_state()
        self._held_quat = self._pose[3:].copy()
        self._steps, self._done = 0, False
        return obs.copy()

    def _go_home(self, joint_reset: bool = False) -> None:
        self._read_state()
        self._send_pose(self._pose)  # stop where it is
        self._update_param(self.precision_param)
        if joint_reset:
            self._post("jointreset", timeout=self.reset_timeout_s)
        if self.home_pose is not None:
            self._read_state()
            start = self._pose.copy()
            goal = np.concatenate([self.home_pose[:3], self.home_pose[3:] if self.home_pose.size == 7 else start[3:]])
            for k in range(1, self.home_steps + 1):
                t = k / self.home_steps
                xyz = start[:3] + t * (goal[:3] - start[:3])
                self._send_pose(np.concatenate([xyz, _nlerp(start[3:], goal[3:], t)]))
                if self.home_period_s:
                    time.sleep(self.home_period_s)
        self._update_param(self.compliance_param)

    def home(self) -> None:
        """Move to the ``home`` pose now (hold, precision params, interpolated move, compliance params; ``hold()``
        without one): what the safety layer's ``on_exit: home`` calls."""
        if self.home_pose is None:
            self.hold()
        else:
            self._post("clearerr")
            self._go_home()

    def step(self, action: Sequence[float] | np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError(f"Franka ({self.url}): episode is over (or never started); call reset()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.action_dim,):
            raise ValueError(f"Franka: action must have shape ({self.action_dim},), got {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"Franka: action contains NaN or inf: {a}")
        a = np.clip(a, -1.0, 1.0)
        target = self.target_pose(a)
        self._command_gripper(float(a[-1]))
        if self.clear_errors_every_step:
            self._post("clearerr")
        self._send_pose(target)
        obs = self._read_state()
        self._steps += 1
        terminated = self._success
        truncated = (not terminated) and self._steps >= self.max_episode_steps
        self._done = terminated or truncated
        return obs.copy(), (1.0 if terminated else 0.0), terminated, truncated, {"success": terminated}

    # ------------------------------------------------------------------ Arm
    def observe(self) -> np.ndarray:
        """The current observation (a ``/getstate``), nothing moved."""
        return self._read_state().copy()

    def ee_position(self) -> np.ndarray:
        """(3,) the measured end-effector position, metres, robot base frame (the last ``/getstate``)."""
        return self._pose[:3].copy()

    def joint_positions(self) -> np.ndarray | None:
        """(7,) the measured joint angles (rad) of the last ``/getstate``, or None where the reply has no ``q``."""
        try:
            return self._vector(self.last_reply, "q", 7)
        except FrankaReplyError:
            return None

    def hold(self) -> None:
        """Send the measured pose (a fresh ``/getstate``) as the target; the gripper as it is."""
        self._read_state()
        self._send_pose(self._pose)

    # ------------------------------------------------------------------ RandomStateful (the simulation's scene)
    def rng_state(self) -> dict:
        """The simulated scene's random state (``sim_reset``; a real robot has none: ``{}``)."""
        if not self.sim_reset:
            return {}
        return self._post("sim/rng_state", {"client": self._client}, reply_json=True)

    def load_rng_state(self, state: dict) -> None:
        if self.sim_reset and state:
            self._post("sim/load_rng_state", {"client": self._client, "task": self.task, "seed": self.seed,
                                              "state": state}, timeout=self.reset_timeout_s)
            self._scene_open = True

    # ------------------------------------------------------------------ cameras
    def _open_cameras(self) -> None:
        if not self.cameras:
            return
        from lerobot.cameras import make_cameras_from_configs

        configs = {}
        for name in self.cameras:
            try:
                configs[name] = camera_config(self._camera_specs[name])
            except ValueError as e:
                raise ValueError(f"camera {name!r}: {e}") from e
        for name, cam in make_cameras_from_configs(configs).items():
            try:
                cam.connect()
            except Exception as e:
                raise RuntimeError(f"camera {name!r} ({type(cam).__name__}) did not connect: {e}") from e
            self._cams[name] = cam

    def images(self) -> dict[str, np.ndarray]:
        """``{camera: uint8 (image_size, image_size, 3)}``: each camera's newest frame (lerobot ``async_read``)."""
        out = {}
        for name in self.cameras:
            cam = self._cams[name]
            try:
                frame = cam.async_read(timeout_ms=self.camera_timeout_ms)
            except TimeoutError as e:
                raise TimeoutError(f"camera {name!r}: no frame within {self.camera_timeout_ms:g} ms") from e
            except Exception as e:
                raise RuntimeError(f"camera {name!r} ({type(cam).__name__}) read failed: {e}") from e
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[2] != 3:
                raise RuntimeError(f"camera {name!r}: expected an (H, W, 3) frame, got shape {frame.shape}")
            if frame.shape[:2] != (self.image_size, self.image_size):
                import cv2

                frame = cv2.resize(frame, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
            out[name] = np.ascontiguousarray(frame, dtype=np.uint8)
        return out

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Disconnect the cameras, end the simulated scene (``sim_reset``) and the HTTP session; nothing moves."""
        for cam in self._cams.values():
            try:
                cam.disconnect()
            except Exception:  # already disconnected or unplugged: closing goes on
                pass
        self._cams = {}
        if self._scene_open and self._session is not None:
            try:
                self._post("sim/close", {"client": self._client})
            except (FrankaServerError, FrankaReplyError):
                pass
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> "FrankaServerEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
