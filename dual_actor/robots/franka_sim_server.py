"""The HIL-SERL / ConRFT Franka robot server's HTTP protocol, served from the bench simulation: a robot computer
for tests and for runs without hardware (:class:`FrankaSimServer`, ``python -m dual_actor.robots.franka_sim_server``).

Every route of the upstream server (:mod:`dual_actor.robots.franka_server` describes them; stdlib ``http.server``
+ threads, ``POST`` only, the same bodies, reply keys and reply texts) acts on one Metaworld task of the bench
(:class:`dual_actor.runtime.sim.MetaworldTaskEnv`), the Sawyer standing in for the Franka:

- ``pose`` = the hand's xyz (``obs[:3]``, the bench's state) and a fixed orientation :data:`SIM_QUATERNION`
  (x y z w: pointing down); ``q`` / ``dq`` the Sawyer's 7 arm joints, ``jacobian`` its hand's (MuJoCo
  ``mj_jacBody``, 6 x 7), ``vel`` = ``jacobian @ dq`` as upstream; ``force`` / ``torque`` zeros (no sensor);
  ``gripper_pos`` = ``obs[3]`` (finger distance / 0.1 m: 1 open .. 0 closed, as upstream).
- ``/pose`` steps the simulation once: the target's xyz minus the reported hand xyz, in bench action units
  (/ ``ACTION_SCALE_M``), clipped to [-1, 1], with the current gripper effort; so one adapter step is one bench
  step and ``FrankaServerEnv`` + this server reproduce ``MetaworldTaskEnv``. The orientation is ignored (the
  Sawyer's hand is not rotated). Physics runs only on ``/pose`` (a hold is a zero-motion step).
- ``/open_gripper`` / ``/close_gripper`` (``/close_gripper_slow``) set the effort (the bench action's last dim) to
  -1 / +1; ``/move_gripper`` ``{"gripper_pos": p}`` to ``p / 127.5 - 1`` for ``p`` clipped to 0..255 (Robotiq's
  convention, 255 closed). A real server truncates ``p`` to an integer; the simulated gripper keeps the float.
- The single getters ``/getpos``, ``/getpos_euler`` (xyz + scipy xyz-Euler), ``/getvel``, ``/getforce``,
  ``/gettorque``, ``/getq``, ``/getdq``, ``/getjacobian`` answer ``{key: value}``; ``/get_gripper``
  ``{"gripper": g}``.
- ``/clearerr``, ``/jointreset`` (counted in :attr:`FrankaSimServer.joint_resets`; nothing moves),
  ``/update_param`` (kept in :attr:`~FrankaSimServer.params`), ``/set_load``, ``/startimp``, ``/stopimp``,
  ``/activate_gripper``, ``/reset_gripper`` answer as upstream.

Extras of the simulation, absent on a real server: ``/getstate`` adds ``sim_state`` (the bench's 39-d state),
``sim_success`` (the last step's Metaworld success) and ``sim_steps``; ``/sim/reset`` ``{"task", "seed",
"client"}`` starts an episode of a bench task: each ``client`` (one ``FrankaServerEnv``) has its own scene,
built on its first reset as ``MetaworldTaskEnv(task, seed)`` and reset after that (a fresh configuration each
time, the seeded sequence of the bench), so one server runs every task of a robot, episodes interleaved;
``/sim/close``, ``/sim/rng_state`` and ``/sim/load_rng_state`` (a resumed run continues the sequence). The
scene last reset is the one the protocol routes act on; before any ``/sim/reset`` and after that scene's
``/sim/close`` it is the server's own ``task`` / ``seed`` scene, reset at start (a plain HIL-SERL client drives
one continuing scene). One server serves one robot: two robots sharing it would interleave their commands.

:data:`SIM_ADAPTER` are the adapter settings that make its observation the bench's state (``state_keys:
[sim_state]``, ``success_key: sim_success``, ``sim_reset: true``, continuous gripper); :func:`make_sim_env`
builds such an adapter on a server started once per process (the ``make_env`` contract), so the bench's
simulated operator and policies run unchanged through the real-robot code path. The protocol carries no images:
cameras need ``camera_configs`` as on a real robot.

In-process: ``with FrankaSimServer(port=0) as server: FrankaServerEnv(..., url=server.url)``;
:attr:`~FrankaSimServer.calls` records every request (route, body). Measured here (2-core CPU, localhost): one
adapter step with the :data:`SIM_ADAPTER` settings takes ~2.7 ms with a gripper change every step (random actions:
``/move_gripper``, ``/pose``, ``/getstate``) and ~2.2 ms driven by the scripted expert, against ~0.4 - 0.5 ms for
the bench directly.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import numpy as np

from dual_actor.robots.franka_server import FrankaServerEnv
from dual_actor.runtime.sim import ACTION_SCALE_M, IMAGE_SIZE, MAX_EPISODE_STEPS, ROBOT, MetaworldTaskEnv, resolve_task

SIM_QUATERNION = (1.0, 0.0, 0.0, 0.0)
"""The simulated hand's orientation, x y z w: 180 degrees about x, pointing down (HIL-SERL's usual Euler (pi, 0, 0))."""
SIM_EPISODE_LIMIT = 1_000_000
"""Metaworld's own step limit in a scene (the adapter's ``max_episode_steps`` ends episodes)."""
SIM_ADAPTER: dict[str, Any] = {
    "state_keys": ["sim_state"], "success_key": "sim_success", "sim_reset": True, "gripper_mode": "continuous",
    "home": None, "clear_errors_every_step": False, "translation_scale_m": ACTION_SCALE_M, "action_dim": 4,
}
"""``FrankaServerEnv`` settings whose observation, reward and actions are the bench's."""
DEFAULT_TASK = "place the bolt"


class _BadRequest(ValueError):
    """A request the protocol does not allow (HTTP 400)."""


@dataclass
class _Scene:
    """One client's simulated episode."""

    env: MetaworldTaskEnv
    obs: np.ndarray  # float32 (39,): the bench's state
    success: bool = False
    steps: int = 0
    effort: float = -1.0  # the gripper dim of the bench action: -1 open .. +1 closed

    def reset(self) -> None:
        self.obs = self.env.reset()
        self.success, self.steps, self.effort = False, 0, -1.0


def _numbers(body: Any, key: str, size: int, route: str) -> np.ndarray:
    value = body.get(key) if isinstance(body, dict) else None
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        v = np.zeros(0)
    if value is None or v.size != size or not np.all(np.isfinite(v)):
        raise _BadRequest(f"/{route}: the body must be {{{key!r}: {size} finite numbers}}, got {body!r}")
    return v


class FrankaSimServer:
    """The Franka robot server's protocol on the bench simulation (module docstring).

    Args:
        task, seed: the scene the protocol routes act on until a ``/sim/reset`` (a bench task string or a
            Metaworld v3 env name).
        host, port: where to listen (port 0: a free one; :attr:`url` says which).
        log_calls: how many requests :attr:`calls` keeps.
    """

    def __init__(self, task: str = DEFAULT_TASK, seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 log_calls: int = 10_000) -> None:
        self.task, self.seed = resolve_task(task)[0], int(seed)
        self.host, self.port = str(host), int(port)
        self.calls: deque[tuple[str, Any]] = deque(maxlen=int(log_calls))
        """``(route, JSON body or None)`` of every request, oldest first."""
        self.params: dict[str, Any] = {}
        """The ``/update_param`` values received (merged, as the controller's reconfigure keeps them)."""
        self.joint_resets = 0
        self._lock = threading.RLock()
        self._scenes: dict[str, _Scene] = {}
        self._active: str | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        get = self._get
        self._routes: dict[str, Callable[[Any], Any]] = {
            "getstate": lambda b: self._state(),
            "getpos": get("pose"), "getvel": get("vel"), "getforce": get("force"), "gettorque": get("torque"),
            "getq": get("q"), "getdq": get("dq"), "getjacobian": get("jacobian"),
            "getpos_euler": lambda b: {"pose": self._pose_euler()},
            "get_gripper": lambda b: {"gripper": self._state()["gripper_pos"]},
            "pose": self._move,
            "open_gripper": lambda b: self._grip(-1.0, "Opened"), "close_gripper": lambda b: self._grip(1.0, "Closed"),
            "close_gripper_slow": lambda b: self._grip(1.0, "Closed"),
            "move_gripper": self._move_gripper,
            "activate_gripper": lambda b: "Activated", "reset_gripper": lambda b: "Reset",
            "clearerr": lambda b: "Clear", "jointreset": self._joint_reset, "update_param": self._update_param,
            "set_load": lambda b: "Set Load", "startimp": lambda b: "Started impedance",
            "stopimp": lambda b: "Stopped impedance",
            "sim/reset": self._sim_reset, "sim/close": self._sim_close, "sim/rng_state": self._sim_rng_state,
            "sim/load_rng_state": self._sim_load_rng_state,
        }

    # ------------------------------------------------------------------ lifetime
    @property
    def url(self) -> str:
        """``http://HOST:PORT/`` (the port bound, once started)."""
        port = self._httpd.server_address[1] if self._httpd is not None else self.port
        return f"http://{self.host}:{port}/"

    def start(self) -> "FrankaSimServer":
        """Build the default scene, bind, and serve from a daemon thread."""
        if self._httpd is not None:
            return self
        with self._lock:
            if self._active is None:
                self._scenes["default"] = self._build(self.task, self.seed)
                self._active = "default"
        httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        httpd.daemon_threads = True
        httpd.sim = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"franka-sim-server:{self.url}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every scene."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5.0)
            self._httpd = self._thread = None
        with self._lock:
            for scene in self._scenes.values():
                scene.env.close()
            self._scenes.clear()
            self._active = None

    def __enter__(self) -> "FrankaSimServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ the protocol, transport-free
    def handle(self, route: str, body: Any = None) -> tuple[int, Any]:
        """``(HTTP status, reply)`` of ``POST /route`` with a JSON ``body``: a text or a JSON object."""
        route = route.strip("/")
        with self._lock:
            self.calls.append((route, body))
            fn = self._routes.get(route)
            if fn is None:
                return 404, f"unknown route /{route} (routes: {', '.join(sorted(self._routes))})"
            try:
                return 200, fn(body)
            except _BadRequest as e:
                return 400, str(e)
            except (KeyError, TypeError, ValueError) as e:  # e.g. an unknown task, a seed that is not a number
                return 400, f"/{route}: {e.args[0] if isinstance(e, KeyError) and e.args else e}"

    def _build(self, task: str, seed: int) -> _Scene:
        env = MetaworldTaskEnv(task, int(seed), max_episode_steps=SIM_EPISODE_LIMIT)
        return _Scene(env, env.reset())

    def _scene(self) -> _Scene:
        if self._active is None:
            raise _BadRequest("no scene: the server is not started, or its scene was closed (/sim/reset starts one)")
        return self._scenes[self._active]

    def _state(self) -> dict[str, Any]:
        import mujoco

        scene = self._scene()
        env = scene.env.unwrapped
        model, data = env.model, env.data
        qadr = [int(model.joint(f"right_j{i}").qposadr[0]) for i in range(7)]
        dadr = [int(model.joint(f"right_j{i}").dofadr[0]) for i in range(7)]
        jacp, jacr = np.zeros((3, model.nv)), np.zeros((3, model.nv))
        mujoco.mj_jacBody(model, data, jacp, jacr, data.body("hand").id)
        jac = np.vstack([jacp, jacr])[:, dadr]
        dq = np.asarray(data.qvel[dadr], dtype=np.float64)
        obs = scene.obs
        return {
            "pose": [float(x) for x in obs[:3]] + list(SIM_QUATERNION), "vel": (jac @ dq).tolist(),
            "force": [0.0, 0.0, 0.0], "torque": [0.0, 0.0, 0.0], "q": np.asarray(data.qpos[qadr]).tolist(),
            "dq": dq.tolist(), "jacobian": jac.tolist(), "gripper_pos": float(obs[3]),
            "sim_state": obs.tolist(), "sim_success": bool(scene.success), "sim_steps": int(scene.steps),
        }

    def _get(self, key: str) -> Callable[[Any], dict]:
        return lambda body: {key: self._state()[key]}

    def _pose_euler(self) -> list[float]:
        from scipy.spatial.transform import Rotation

        pose = self._state()["pose"]
        return pose[:3] + Rotation.from_quat(pose[3:]).as_euler("xyz").tolist()

    def _move(self, body: Any) -> str:
        target = _numbers(body, "arr", 7, "pose")
        scene = self._scene()
        delta = (target[:3] - scene.obs[:3].astype(np.float64)) / ACTION_SCALE_M
        action = np.concatenate([np.clip(delta, -1.0, 1.0), [scene.effort]])
        obs, _reward, _term, _trunc, info = scene.env.unwrapped.step(action)
        scene.obs = np.asarray(obs, dtype=np.float32)
        scene.success = bool(info.get("success", 0.0))
        scene.steps += 1
        return "Moved"

    def _grip(self, effort: float, reply: str) -> str:
        self._scene().effort = float(np.clip(effort, -1.0, 1.0))
        return reply

    def _move_gripper(self, body: Any) -> str:
        p = float(np.clip(_numbers(body, "gripper_pos", 1, "move_gripper")[0], 0.0, 255.0))
        return self._grip(p / 127.5 - 1.0, "Moved Gripper")  # Robotiq's rPR: 0 open .. 255 closed

    def _joint_reset(self, body: Any) -> str:
        self.joint_resets += 1
        return "Reset Joint"

    def _update_param(self, body: Any) -> str:
        if not isinstance(body, dict):
            raise _BadRequest(f"/update_param: the body must be a JSON object of parameters, got {body!r}")
        self.params.update(body)
        return "Updated compliance parameters"

    # ------------------------------------------------------------------ the simulation's own routes
    def _client(self, body: Any) -> str:
        return str(body.get("client", "default")) if isinstance(body, dict) else "default"

    def _sim_reset(self, body: Any) -> dict[str, Any]:
        body = body if isinstance(body, dict) else {}
        client = self._client(body)
        task = resolve_task(str(body.get("task", self.task)))[0]
        seed = int(body.get("seed", self.seed))
        scene = self._scenes.get(client)
        if scene is not None and (scene.env.task, scene.env.seed) == (task, seed):
            scene.reset()
        else:
            if scene is not None:
                scene.env.close()
            self._scenes[client] = scene = self._build(task, seed)
        self._active = client
        return {"task": task, "seed": seed, "episode": scene.env.episodes_started}

    def _sim_close(self, body: Any) -> str:
        client = self._client(body)
        scene = self._scenes.pop(client, None)
        if scene is not None:
            scene.env.close()
        if self._active == client:  # the protocol routes act on the server's own scene again
            self._active = "default" if "default" in self._scenes else None
        return "Closed"

    def _sim_rng_state(self, body: Any) -> dict:
        client = self._client(body)
        if client not in self._scenes:
            raise _BadRequest(f"/sim/rng_state: no scene for client {client!r} (/sim/reset starts one)")
        return self._scenes[client].env.rng_state()

    def _sim_load_rng_state(self, body: Any) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("state"), dict):
            raise _BadRequest(f"/sim/load_rng_state: the body must hold a 'state' object, got {body!r}")
        client = self._client(body)
        if client not in self._scenes:
            self._scenes[client] = self._build(str(body.get("task", self.task)), int(body.get("seed", self.seed)))
        try:
            self._scenes[client].env.load_rng_state(body["state"])
        except (KeyError, TypeError, ValueError) as e:
            raise _BadRequest(f"/sim/load_rng_state: not a scene's random state: {e}") from e
        return "Loaded"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client session
    disable_nagle_algorithm = True
    server_version = "FrankaSimServer"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        route = urlparse(self.path).path.strip("/")
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            self._reply(400, f"POST /{route}: the body is not JSON")
            return
        try:
            status, reply = self.server.sim.handle(route, body)  # type: ignore[attr-defined]
        except Exception as e:  # a bug or a broken scene: an HTTP 500 with its message, the server goes on
            status, reply = 500, f"POST /{route}: {type(e).__name__}: {e}"
        self._reply(status, reply)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(405, "the Franka robot server's routes are POST-only")

    def _reply(self, status: int, reply: Any) -> None:
        text = isinstance(reply, str)
        data = (reply if text else json.dumps(reply)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per request would flood a run's log
        pass


# ---------------------------------------------------------------------- the bench over HTTP, as an env factory
_SHARED: dict[int, FrankaSimServer] = {}  # process id -> its server (a forked child starts its own)
_SHARED_LOCK = threading.Lock()


def shared_server() -> FrankaSimServer:
    """This process's simulated server, started on a free port on first use and stopped at exit."""
    with _SHARED_LOCK:
        pid = os.getpid()
        if pid not in _SHARED:
            _SHARED[pid] = FrankaSimServer().start()
            atexit.register(_SHARED[pid].stop)
        return _SHARED[pid]


def make_sim_env(task: str, seed: int, max_episode_steps: int = MAX_EPISODE_STEPS, cameras: Sequence[str] = (),
                 image_size: int = IMAGE_SIZE, url: str | None = None, render_effects: bool = False,
                 **adapter: Any) -> FrankaServerEnv:
    """A bench task through the Franka protocol: ``FrankaServerEnv`` with :data:`SIM_ADAPTER` (``adapter``
    overrides it) on ``url``, or on :func:`shared_server` when null. Its observation, reward and actions are
    ``MetaworldTaskEnv(task, seed)``'s. ``render_effects`` is the bench config's rendering switch (``env=franka_sim``
    inherits ``env=metaworld_bench``'s robot keys); the protocol carries no images, so nothing uses it."""
    return FrankaServerEnv(task, seed, max_episode_steps, cameras, image_size, url=url or shared_server().url,
                           **{**SIM_ADAPTER, **adapter})


make_sim_env.robot_name = ROBOT  # type: ignore[attr-defined]  # the bench's robot, behind HTTP
make_sim_env.connects = True  # type: ignore[attr-defined]  # as FrankaServerEnv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dual_actor.robots.franka_sim_server",
                                     description="Serve the HIL-SERL Franka robot-server protocol from the bench "
                                                 "simulation until killed; prints the URL.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (0: a free one; default 5000, Flask's)")
    parser.add_argument("--task", default=DEFAULT_TASK, help="the scene before any /sim/reset (a bench task)")
    parser.add_argument("--seed", type=int, default=0, help="its seed")
    args = parser.parse_args(argv)
    try:
        server = FrankaSimServer(args.task, args.seed, args.host, args.port).start()
    except (KeyError, OSError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
