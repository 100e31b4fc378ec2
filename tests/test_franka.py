"""The Franka adapter (dual_actor.robots.franka_server) against the simulated robot server
(dual_actor.robots.franka_sim_server) in-process on a free port, and against a stub server for malformed replies.

Hand-computed targets: the simulated hand reports the orientation (x, y, z, w) = (1, 0, 0, 0), 180 degrees about x.
A base-frame delta R_a(t) applied to it, q = q_a(t) * (1, 0, 0, 0) with q_a = (sin(t/2) a, cos(t/2)):
about z (0, 0, s, c) * (1, 0, 0, 0) = (c, s, 0, 0); about y (0, s, 0, c) * (1, 0, 0, 0) = (c, 0, -s, 0);
about x R_x(pi + t) = (cos(t/2), 0, 0, -sin(t/2)) (up to the quaternion's sign), with s, c = sin, cos of t/2.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from lerobot.cameras import Camera, CameraConfig

from dual_actor.robots.franka_server import (
    DEFAULT_STATE_KEYS,
    FrankaReplyError,
    FrankaServerEnv,
    FrankaServerError,
    camera_config,
    state_dim,
)
from dual_actor.robots.franka_sim_server import SIM_QUATERNION, FrankaSimServer, make_sim_env, shared_server
from dual_actor.runtime.env import Arm, RandomStateful, RobotEnv
from dual_actor.runtime.sim import ACTION_SCALE_M, ROBOT, MetaworldTaskEnv, ScriptedExpert

ROOT = Path(__file__).resolve().parents[1]
TASK = "place the bolt"


@pytest.fixture(scope="module")
def server():
    with FrankaSimServer(TASK, seed=0, port=0) as srv:
        yield srv


def routes(srv) -> list[str]:
    return [route for route, _ in srv.calls]


def bodies(srv, route: str) -> list:
    return [body for r, body in srv.calls if r == route]


def same_rotation(q, expected) -> bool:
    q, expected = np.asarray(q), np.asarray(expected)
    return np.allclose(q, expected, atol=1e-12) or np.allclose(q, -expected, atol=1e-12)


# ---------------------------------------------------------------------------------------------- the protocol
def test_getstate_has_the_upstream_keys_and_the_simulations_extras(server):
    reply = requests.post(server.url + "getstate", timeout=5).json()
    upstream = {"pose", "vel", "force", "torque", "q", "dq", "jacobian", "gripper_pos"}
    assert set(reply) == upstream | {"sim_state", "sim_success", "sim_steps"}
    assert reply["pose"][:3] == reply["sim_state"][:3] and tuple(reply["pose"][3:]) == SIM_QUATERNION
    assert np.shape(reply["jacobian"]) == (6, 7) and len(reply["q"]) == len(reply["dq"]) == 7
    assert np.allclose(reply["vel"], np.asarray(reply["jacobian"]) @ np.asarray(reply["dq"]))  # upstream's vel
    assert reply["gripper_pos"] == reply["sim_state"][3] and reply["force"] == reply["torque"] == [0.0] * 3
    assert requests.post(server.url + "getpos", timeout=5).json() == {"pose": reply["pose"]}
    euler = requests.post(server.url + "getpos_euler", timeout=5).json()["pose"]
    assert euler[:3] == reply["pose"][:3] and abs(abs(euler[3]) - math.pi) < 1e-12 and euler[4:] == [0.0, 0.0]
    assert requests.post(server.url + "get_gripper", timeout=5).json() == {"gripper": reply["gripper_pos"]}
    joint_resets = server.joint_resets
    for route, text in (("clearerr", "Clear"), ("jointreset", "Reset Joint"), ("open_gripper", "Opened")):
        assert requests.post(server.url + route, timeout=5).text == text
    assert server.joint_resets == joint_resets + 1
    assert requests.get(server.url + "getstate", timeout=5).status_code == 405  # upstream: POST only
    bad = requests.post(server.url + "pose", json={"arr": [0.1, 0.2]}, timeout=5)
    assert bad.status_code == 400 and "'arr'" in bad.text
    assert requests.post(server.url + "nope", timeout=5).status_code == 404


def test_step_sends_the_hand_computed_target_and_binary_gripper_commands(server):
    env = FrankaServerEnv(TASK, 0, max_episode_steps=7, url=server.url)
    assert isinstance(env, RobotEnv) and isinstance(env, Arm) and isinstance(env, RandomStateful)
    assert env.observation_dim == state_dim(DEFAULT_STATE_KEYS) == 20 and env.rotation_scale_rad == 0.0
    server.calls.clear()
    obs = env.reset()
    assert routes(server) == ["clearerr", "open_gripper", "clearerr", "getstate"]
    p = np.asarray(env.last_reply["pose"])
    assert obs[:3].tolist() == np.float32(p[:3]).tolist() and obs[3:7].tolist() == list(SIM_QUATERNION)
    assert obs[7] == np.float32(env.last_reply["gripper_pos"]) and env.ee_position().tolist() == p[:3].tolist()

    server.calls.clear()
    env.step([0.5, -1.0, 0.25, 1.0])
    assert routes(server) == ["close_gripper", "clearerr", "pose", "getstate"]
    target = bodies(server, "pose")[0]["arr"]
    assert target == pytest.approx([p[0] + 0.005, p[1] - 0.01, p[2] + 0.0025, 1.0, 0.0, 0.0, 0.0], abs=1e-15)

    # gripper: closes at >= 0.5, opens at <= -0.5, sent on a change only; motion clipped to [-1, 1] (1 cm)
    sent = []
    for g in (1.0, 0.3, -0.5, -0.9, 0.5):
        server.calls.clear()
        p = np.asarray(env.last_reply["pose"])
        env.step([3.0, 0.0, 0.0, g])
        sent.append([r for r in routes(server) if r.endswith("_gripper")])
        assert bodies(server, "pose")[0]["arr"][:3] == pytest.approx([p[0] + 0.01, p[1], p[2]], abs=1e-15)
    assert sent == [[], [], ["open_gripper"], [], ["close_gripper"]]
    _, reward, terminated, truncated, info = env.step([0.0, 0.0, 0.0, 0.0])  # the 7th step
    assert (reward, terminated, truncated, info) == (0.0, False, True, {"success": False})
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step([0.0, 0.0, 0.0, 0.0])
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        env.step([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        env.step([np.nan, 0.0, 0.0, 0.0])
    env.close()


def test_7d_actions_rotate_the_measured_orientation(server):
    env = FrankaServerEnv(TASK, 0, url=server.url, action_dim=7, rotation_scale_rad=0.1)
    env.reset()
    s, c = math.sin(0.05), math.cos(0.05)
    for rpy, expected in (([0, 0, 1], (c, s, 0, 0)), ([0, 1, 0], (c, 0, -s, 0)), ([1, 0, 0], (c, 0, 0, -s))):
        server.calls.clear()
        env.step([0.0, 0.0, 0.0, *rpy, 0.0])
        assert same_rotation(bodies(server, "pose")[0]["arr"][3:], expected), (rpy, bodies(server, "pose"))
    env.close()

    # HIL-SERL's clip_safety_box: xyz into the box, the roll by its absolute value (R_x(pi + 0.1) has roll
    # -(pi - 0.1): |roll| clipped up to pi - 0.05, sign kept: R_x(-(pi - 0.05)) = (-cos 0.025, 0, 0, sin 0.025))
    p = np.asarray(requests.post(server.url + "getstate", timeout=5).json()["pose"])
    low = [p[0] - 0.002, -1.0, -1.0, math.pi - 0.05, -0.05, -0.05]
    high = [p[0] + 0.002, 1.0, 1.0, math.pi, 0.05, 0.05]
    env = FrankaServerEnv(TASK, 0, url=server.url, action_dim=7, rotation_scale_rad=0.1, pose_limit_low=low,
                          pose_limit_high=high)
    env.reset()
    x = env.last_reply["pose"][0]
    server.calls.clear()
    env.step([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    target = bodies(server, "pose")[0]["arr"]
    assert target[0] == pytest.approx(min(x + 0.01, p[0] + 0.002), abs=1e-12)
    assert same_rotation(target[3:], (-math.cos(0.025), 0.0, 0.0, math.sin(0.025)))
    env.close()


def test_continuous_gripper_maps_the_action_onto_move_gripper(server):
    """-1 -> open .. +1 -> gripper_closed_pos, linearly; sent on a change only (reset opens it)."""
    for closed, opened, steps in ((255, 0.0, [(0.5, 191.25), (0.5, None), (1.0, 255.0), (-1.0, 0.0)]),
                                  (0, 255.0, [(0.0, 127.5), (1.0, 0.0), (1.0, None), (-1.0, 255.0)])):
        env = FrankaServerEnv(TASK, 0, url=server.url, gripper_mode="continuous", gripper_closed_pos=closed)
        server.calls.clear()
        env.reset()
        assert bodies(server, "move_gripper") == [{"gripper_pos": opened}]
        for g, want in steps:
            server.calls.clear()
            env.step([0.0, 0.0, 0.0, g])
            assert bodies(server, "move_gripper") == ([] if want is None else [{"gripper_pos": want}]), (closed, g)
        env.close()


def test_hold_observe_and_the_arm_readings(server):
    env = FrankaServerEnv(TASK, 0, url=server.url)
    env.reset()
    obs, *_ = env.step([1.0, 0.0, 0.0, 0.0])
    server.calls.clear()
    assert env.observe().tolist() == obs.tolist() and routes(server) == ["getstate"]  # nothing moved
    server.calls.clear()
    env.hold()
    assert routes(server) == ["getstate", "pose"] and bodies(server, "pose") == [{"arr": env.last_reply["pose"]}]
    assert env.ee_position().tolist() == env.last_reply["pose"][:3]
    assert env.joint_positions().tolist() == env.last_reply["q"] and env.joint_positions().shape == (7,)
    env.close()
    env.close()  # idempotent


# ---------------------------------------------------------------------------------------------- errors
def test_an_unreachable_server_fails_within_the_timeout_naming_the_url():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    with pytest.raises(FrankaServerError, match=rf"http://127.0.0.1:{port}/ \(POST /getstate\): unreachable") as e:
        FrankaServerEnv(TASK, 0, url=f"http://127.0.0.1:{port}", timeout_s=1.0)
    assert isinstance(e.value, ConnectionError) and time.perf_counter() - t < 1.0
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = "http://127.0.0.1:%d/" % silent.getsockname()[1]
        t = time.perf_counter()
        with pytest.raises(FrankaServerError, match=r"\(POST /getstate\): no answer within 0.3 s"):
            FrankaServerEnv(TASK, 0, url=url, timeout_s=0.3)
        assert time.perf_counter() - t < 1.5
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        FrankaServerEnv(TASK, 0, url="localhost:5000")


VALID = {"pose": [0.5, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0], "vel": [0.0] * 6, "force": [0.0] * 3, "torque": [0.0] * 3,
         "q": [0.0] * 7, "dq": [0.0] * 7, "jacobian": [[0.0] * 7] * 6, "gripper_pos": 1.0}


class _Stub(BaseHTTPRequestHandler):
    """A robot server that stands still: /getstate answers ``server.reply`` (JSON, or a str as it is), the other
    routes "OK" (/sim/*: 404); ``server.calls`` records (route, body)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each reply waits out a delayed ACK (~40 ms)

    def do_POST(self):  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        route = self.path.strip("/")
        self.server.calls.append((route, json.loads(raw) if raw else None))
        status, data = 200, "OK"
        if route == "getstate":
            data = self.server.reply if isinstance(self.server.reply, str) else json.dumps(self.server.reply)
        elif route.startswith("sim/"):
            status, data = 404, "<h1>Not Found</h1>"
        self.send_response(status)
        self.send_header("Content-Length", str(len(data.encode())))
        self.end_headers()
        self.wfile.write(data.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    httpd.daemon_threads, httpd.reply, httpd.calls = True, dict(VALID), []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_reset_goes_home_with_its_params_and_joint_resets_every_n(stub):
    """From the stub's pose (0.5, 0, 0.3; 1, 0, 0, 0) to home (0.05, 0.6, 0.25; 0, 1, 0, 0) in 2 targets: the
    midpoint (0.275, 0.3, 0.275; 1/sqrt 2, 1/sqrt 2, 0, 0), then home; every 2nd reset a /jointreset first."""
    home = [0.05, 0.6, 0.25, 0.0, 1.0, 0.0, 0.0]
    env = FrankaServerEnv(TASK, 0, url="http://127.0.0.1:%d" % stub.server_address[1], home=home, home_steps=2,
                          home_period_s=0.0, joint_reset_every=2, precision_param={"translational_stiffness": 2000},
                          compliance_param={"translational_stiffness": 1000})
    plain = ["clearerr", "getstate", "pose", "update_param", "getstate", "pose", "pose", "update_param",
             "open_gripper", "clearerr", "getstate"]
    r = 1 / math.sqrt(2)
    for n in range(1, 5):
        stub.calls.clear()
        env.reset()
        assert [c[0] for c in stub.calls] == (plain[:4] + ["jointreset"] + plain[4:] if n % 2 == 0 else plain), n
        assert [b for c, b in stub.calls if c == "update_param"] == [{"translational_stiffness": 2000},
                                                                     {"translational_stiffness": 1000}]
        hold, mid, last = (b["arr"] for c, b in stub.calls if c == "pose")
        assert hold == VALID["pose"]
        np.testing.assert_allclose(mid, [0.275, 0.3, 0.275, r, r, 0.0, 0.0], atol=1e-15)
        np.testing.assert_allclose(last, home, atol=1e-15)
    stub.calls.clear()
    env.home()  # what the safety layer's on_exit: home calls
    assert [c[0] for c in stub.calls] == ["clearerr"] + plain[1:8]
    env.close()
    env = FrankaServerEnv(TASK, 0, url=env.url)
    stub.calls.clear()
    env.home()  # no home pose: hold
    assert stub.calls == [("getstate", None), ("pose", {"arr": VALID["pose"]})]
    env.close()
    assert FrankaServerEnv(TASK, 0, url=env.url, home=[0.1, 0.2, 0.3, math.pi, 0.0, 0.0]).home_pose == pytest.approx(
        [0.1, 0.2, 0.3, 1.0, 0.0, 0.0, 0.0], abs=1e-15)  # xyz + xyz-Euler (pi, 0, 0): pointing down


@pytest.mark.parametrize("reply, match", [
    ({k: v for k, v in VALID.items() if k != "gripper_pos"}, "has no key 'gripper_pos'"),
    ({**VALID, "pose": [0.5, 0.0, 0.3]}, "'pose' has 3 values, expected 7"),
    ({**VALID, "vel": "fast"}, "'vel' is not numbers"),
    ({**VALID, "force": [float("nan"), 0.0, 0.0]}, "'force' is not finite"),
    ({**VALID, "pose": [0.5, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0]}, "'pose' has a quaternion of norm 0"),
    ("Moved", r"POST /getstate\): expected a JSON object, got 'Moved'"),
])
def test_a_malformed_reply_names_the_key(stub, reply, match):
    stub.reply = reply
    with pytest.raises(FrankaReplyError, match=match):
        FrankaServerEnv(TASK, 0, url="http://127.0.0.1:%d" % stub.server_address[1])


def test_a_missing_success_key_or_sim_route_is_named(stub):
    url = "http://127.0.0.1:%d" % stub.server_address[1]
    with pytest.raises(FrankaReplyError, match="success key 'sim_success' is missing"):
        FrankaServerEnv(TASK, 0, url=url, success_key="sim_success")
    env = FrankaServerEnv(TASK, 0, url=url, sim_reset=True)  # a real server has no /sim/reset
    with pytest.raises(FrankaServerError, match=r"POST /sim/reset\): HTTP 404"):
        env.reset()
    env.close()


def test_a_state_key_that_changes_size_is_refused(stub):
    url = "http://127.0.0.1:%d" % stub.server_address[1]
    stub.reply = {**VALID, "extra": [1.0, 2.0]}
    env = FrankaServerEnv(TASK, 0, url=url, state_keys=["pose", "gripper_pos", "extra"])
    assert env.observation_dim == 10 and env.state_slices["extra"] == slice(8, 10)
    stub.reply = {**VALID, "extra": [1.0, 2.0, 3.0]}
    with pytest.raises(FrankaReplyError, match="'extra' has 3 values, expected 2"):
        env.observe()
    env.close()
    with pytest.raises(KeyError, match="extra"):
        state_dim(["pose", "extra"])


# ---------------------------------------------------------------------------------------------- the bench over HTTP
def test_the_adapter_over_the_sim_server_reproduces_the_bench(server):
    """Two tasks on one server, episodes interleaved, each the same as its own MetaworldTaskEnv: the JSON floats
    round-trip exactly; what differs is (p + a s - p) / s != a in float64 (~1e-16), a few 1e-7 after 30 steps."""
    rng = np.random.default_rng(0)
    pairs = {task: (make_sim_env(task, seed, max_episode_steps=30, url=server.url),
                    MetaworldTaskEnv(task, seed, max_episode_steps=30))
             for task, seed in ((TASK, 3), ("pick up the bolt", 5))}
    worst = 0.0
    for task in (TASK, "pick up the bolt", TASK):
        sim, bench = pairs[task]
        a, b = sim.reset(), bench.reset()
        assert a.dtype == np.float32 and a.shape == (39,) and np.array_equal(a, b)
        done = False
        while not done:
            action = rng.uniform(-1.0, 1.0, 4)
            (a, *ra), (b, *rb) = sim.step(action), bench.step(action)
            assert ra[:3] == rb[:3] and ra[3]["success"] == rb[3]["success"]
            worst = max(worst, float(np.abs(a - b).max()))
            done = ra[1] or ra[2]
        assert sim.elapsed_steps == bench.elapsed_steps == 30
    assert worst < 1e-5
    for sim, bench in pairs.values():
        sim.close()
        bench.close()


def test_the_scripted_expert_succeeds_through_the_adapter_as_on_the_bench(server):
    sim = make_sim_env(TASK, 3, url=server.url)
    bench = MetaworldTaskEnv(TASK, 3)
    expert = ScriptedExpert(TASK, noise=0.0)
    lengths = []
    for env in (sim, bench):
        obs, done, reward = env.reset(), False, 0.0
        while not done:
            obs, reward, terminated, truncated, info = env.step(expert.act(obs))
            done = terminated or truncated
        lengths.append((env.elapsed_steps, reward, terminated, info["success"]))
    assert lengths[0] == lengths[1] and lengths[0][1:] == (1.0, True, True), lengths
    sim.close()
    bench.close()


def test_the_control_loop_and_the_simulated_operator_run_through_the_adapter_as_on_the_bench(server):
    """The real-robot code path: ControlLoop + the bench's simulated operator (it watches the 39-d state) + a tiny
    policy, once over HTTP and once on the bench: the same episode."""
    import torch

    from dual_actor.policy import DualActorPolicy
    from dual_actor.runtime.loop import ControlLoop
    from dual_actor.runtime.operators.simulated import SimulatedOperator
    from dual_actor.runtime.transport import InProcessTransport
    from factories import tiny_policy_kwargs

    records = []
    for env in (make_sim_env(TASK, 11, max_episode_steps=40, url=server.url),
                MetaworldTaskEnv(TASK, 11, max_episode_steps=40)):
        torch.manual_seed(0)
        policy = DualActorPolicy(**tiny_policy_kwargs(tasks=[TASK], obs_dim=39, proprio_dim=4, action_dim=4))
        loop = ControlLoop(env, TASK, policy, SimulatedOperator(TASK, seed=0), InProcessTransport(),
                           proprio_slice=slice(0, 4), translation_scale_m=ACTION_SCALE_M)
        records.append(loop.run_episode())
        env.close()
    a, b = records
    assert (a.length, a.interventions, a.success) == (b.length, b.interventions, b.success) and a.interventions > 0
    assert a.extra["commands"] == b.extra["commands"]
    for key in ("obs", "action", "reward", "intervention"):
        np.testing.assert_allclose(a.rows[key].numpy(), b.rows[key].numpy(), atol=1e-5, err_msg=key)


def test_a_resumed_scene_continues_its_sequence(server):
    env = make_sim_env(TASK, 7, url=server.url)
    env.reset()
    state = env.rng_state()
    second = env.reset()
    env.load_rng_state(state)
    assert np.array_equal(env.reset(), second)
    assert FrankaServerEnv(TASK, 0, url=server.url).rng_state() == {}  # a real robot keeps no random state
    env.close()
    assert routes(server)[-1] == "sim/close"


def test_make_sim_env_is_an_env_factory_on_one_server_per_process():
    envs = [make_sim_env(task, seed, max_episode_steps=2) for task, seed in ((TASK, 0), ("assemble the bolt", 1))]
    assert envs[0].url == envs[1].url == shared_server().url and make_sim_env.robot_name == ROBOT
    for env in envs:
        assert isinstance(env, RobotEnv) and isinstance(env, Arm) and env.translation_scale_m == ACTION_SCALE_M
        env.reset()
    for env in envs:
        assert env.step([0.0, 0.0, 0.0, 0.0])[3] is False and env.step([0.0, 0.0, 0.0, 0.0])[3] is True
        env.close()


# ---------------------------------------------------------------------------------------------- cameras
@CameraConfig.register_subclass("franka_test_stub")
@dataclass
class StubCameraConfig(CameraConfig):
    level: int = 40
    late: bool = False


class StubCamera(Camera):
    """lerobot's Camera interface without hardware: a (height, width) frame, left half ``level``, right half
    ``255 - level``; ``late`` cameras time out. lerobot's factory finds it beside its config (this module)."""

    made: list["StubCamera"] = []

    def __init__(self, config: StubCameraConfig):
        super().__init__(config)
        self.config, self.connected, self.timeouts = config, False, []
        StubCamera.made.append(self)

    @property
    def is_connected(self) -> bool:
        return self.connected

    @staticmethod
    def find_cameras():
        return []

    def connect(self, warmup: bool = True) -> None:
        self.connected = True

    def read(self):
        frame = np.full((self.height, self.width, 3), self.config.level, dtype=np.uint8)
        frame[:, self.width // 2:] = 255 - self.config.level
        return frame

    def async_read(self, timeout_ms: float = 200):
        self.timeouts.append(timeout_ms)
        if self.config.late:
            raise TimeoutError("no frame")
        return self.read()

    def disconnect(self) -> None:
        self.connected = False


def test_cameras_are_lerobot_cameras_read_and_resized(server):
    StubCamera.made.clear()
    configs = {"wrist": {"type": "franka_test_stub", "width": 64, "height": 48, "level": 40},
               "front": {"type": "franka_test_stub", "width": 32, "height": 32, "level": 200},
               "unused": {"type": "franka_test_stub", "width": 8, "height": 8}}
    env = FrankaServerEnv(TASK, 0, cameras=["wrist", "front"], image_size=16, url=server.url, camera_configs=configs,
                          camera_timeout_ms=150)
    images = env.images()
    assert list(images) == ["wrist", "front"] and len(StubCamera.made) == 2
    for name, level in (("wrist", 40), ("front", 200)):
        img = images[name]
        assert img.shape == (16, 16, 3) and img.dtype == np.uint8
        assert (img[:, :8] == level).all() and (img[:, 8:] == 255 - level).all()  # halves kept by INTER_AREA
    assert [c.timeouts for c in StubCamera.made] == [[150], [150]]
    env.close()
    assert not any(c.connected for c in StubCamera.made)

    with pytest.raises(KeyError, match=r"\['side'\] have no entry in camera_configs"):
        FrankaServerEnv(TASK, 0, cameras=["side"], url=server.url, camera_configs=configs)
    env = FrankaServerEnv(TASK, 0, cameras=["late"], url=server.url,
                          camera_configs={"late": {"type": "franka_test_stub", "width": 8, "height": 8, "late": True}})
    with pytest.raises(TimeoutError, match="camera 'late': no frame within 500 ms"):
        env.images()
    env.close()
    with pytest.raises(ValueError, match="camera 'x'.*bad lerobot camera config"):
        FrankaServerEnv(TASK, 0, cameras=["x"], url=server.url, camera_configs={"x": {"type": "nope"}})


def test_real_camera_configs_build_lerobots_own():
    """What a real OpenCV / RealSense entry of camera_configs becomes (built, not connected: no hardware here)."""
    from lerobot.cameras.opencv import OpenCVCameraConfig
    from lerobot.cameras.realsense import RealSenseCameraConfig

    cv = camera_config({"type": "opencv", "index_or_path": 0, "width": 640, "height": 480, "fps": 30})
    assert isinstance(cv, OpenCVCameraConfig) and (cv.index_or_path, cv.width, cv.height, cv.fps) == (0, 640, 480, 30)
    rs = camera_config({"type": "intelrealsense", "serial_number_or_name": "127122270146", "width": 640,
                        "height": 480, "fps": 30})
    assert isinstance(rs, RealSenseCameraConfig) and rs.serial_number_or_name == "127122270146"
    with pytest.raises(ValueError, match="not valid for OpenCVCameraConfig"):
        camera_config({"type": "opencv", "index_or_path": 0, "exposure": 3})


# ---------------------------------------------------------------------------------------------- the command line
def test_the_sim_server_command_prints_its_url_and_serves():
    proc = subprocess.Popen([sys.executable, "-m", "dual_actor.robots.franka_sim_server", "--port", "0",
                             "--task", "pick up the bolt", "--seed", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), proc.stderr.read()
        reply = requests.post(url + "getstate", timeout=10).json()
        assert len(reply["sim_state"]) == 39 and tuple(reply["pose"][3:]) == SIM_QUATERNION
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
