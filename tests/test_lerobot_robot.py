"""``env=lerobot_robot``: the lerobot ``Robot`` adapter (dual_actor.robots.lerobot_robot) over the simulated arm
(dual_actor.robots.lerobot_sim) and over a fake arm with a small URDF (tests/data/three_joint_arm.urdf)."""

from __future__ import annotations

import math
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from lerobot.robots import Robot, RobotConfig

from dual_actor.robots.lerobot_robot import LeRobotEnv, RobotConnectionError, make_lerobot_env, register_robots
from dual_actor.robots.lerobot_sim import SIM_TYPE
from dual_actor.runtime.env import Arm, RandomStateful, RobotEnv
from dual_actor.runtime.sim import MetaworldTaskEnv, ScriptedExpert

URDF = str(Path(__file__).parent / "data" / "three_joint_arm.urdf")
SIM = "dual_actor.robots.lerobot_sim"
SIM_ADAPTER = dict(plugins=[SIM], joint_scale=0.01, gripper_range=[-1.0, 1.0], ee_motors=["x", "y", "z"],
                   state_keys=["sim.state.*"], success_key="sim.success")
"""The simulated arm as the bench: joint deltas of 1 cm per unit, gripper = the bench's, the bench's state."""


def sim_env(task="place the bolt", seed=0, steps=200, cameras=(), size=32, robot=None, **kw) -> LeRobotEnv:
    spec = {"type": SIM_TYPE, "render_cameras": list(cameras), "image_size": size, **(robot or {})}
    return LeRobotEnv(task, seed, steps, cameras, size, robot=spec, **{**SIM_ADAPTER, **kw})


# ---------------------------------------------------------------------------------------------- a fake arm
@RobotConfig.register_subclass("test_three_joint_arm")
@dataclass
class ThreeJointArmConfig(RobotConfig):
    port: str | None = None
    max_relative_target: float | dict[str, float] | None = None
    start: list[float] = field(default_factory=lambda: [0.0, 0.0, 90.0, 50.0])
    connect_fails: str = ""  # "refuse" | "hang"
    calibrated: bool = True
    send_delay_s: float = 0.0


class ThreeJointArm(Robot):
    """pan / shoulder / elbow (degrees, tests/data/three_joint_arm.urdf) + gripper: a perfect servo that records
    what it is sent and, like a plugin that skips it, applies no max_relative_target of its own."""

    config_class = ThreeJointArmConfig
    name = "test_three_joint_arm"
    MOTORS = ("pan", "shoulder", "elbow", "gripper")

    def __init__(self, config):
        super().__init__(config)
        self.config, self.q = config, np.array(config.start, dtype=np.float64)
        self.sent: list[dict] = []
        self.connected = False
        self.calibrations = self.connects = 0

    observation_features = property(lambda self: {f"{m}.pos": float for m in self.MOTORS})
    action_features = property(lambda self: {f"{m}.pos": float for m in self.MOTORS})
    is_connected = property(lambda self: self.connected)
    is_calibrated = property(lambda self: self.config.calibrated)

    def connect(self, calibrate=True):
        if self.config.connect_fails == "refuse":
            raise ConnectionRefusedError("[Errno 111] the arm refused")
        if self.config.connect_fails == "hang":
            time.sleep(3)
        self.connected = True
        self.connects += 1

    def calibrate(self):
        self.calibrations += 1
        self.config.calibrated = True

    def configure(self):
        pass

    def get_observation(self):
        return {f"{m}.pos": float(v) for m, v in zip(self.MOTORS, self.q)}

    def send_action(self, action):
        time.sleep(self.config.send_delay_s)
        self.sent.append(dict(action))
        self.q = np.array([action[f"{m}.pos"] for m in self.MOTORS])
        return dict(action)

    def disconnect(self):
        self.connected = False


def arm_env(tmp_path, robot=None, **kw) -> LeRobotEnv:
    spec = {"type": "test_three_joint_arm", "calibration_dir": str(tmp_path), **(robot or {})}
    return LeRobotEnv("any task", 0, 50, robot=spec, **{"urdf_path": URDF, "ee_frame": "ee",
                                                         "gripper_range": [0.0, 100.0], **kw})


def hand_fk(q_deg) -> np.ndarray:
    """The URDF's forward kinematics, by hand (its header comment)."""
    q1, q2, q3 = np.deg2rad(np.asarray(q_deg, dtype=np.float64)[:3])
    r = 0.2 * math.cos(q2) + 0.15 * math.cos(q2 + q3)
    return np.array([r * math.cos(q1), r * math.sin(q1), 0.1 + 0.2 * math.sin(q2) + 0.15 * math.sin(q2 + q3)])


# ---------------------------------------------------------------------------------------------- the simulated arm
def test_the_simulated_arm_reproduces_the_bench_with_its_cameras():
    """Same seed, same actions: the same states, rewards, ends and frames as MetaworldTaskEnv itself."""
    env = sim_env(seed=3, steps=25, cameras=["corner"])
    bench = MetaworldTaskEnv("place the bolt", 3, 25, cameras=["corner"], image_size=32)
    assert isinstance(env, RobotEnv) and isinstance(env, Arm) and isinstance(env, RandomStateful)
    assert (env.action_dim, env.observation_dim, env.translation_scale_m) == (4, 39, 0.01)
    rng = np.random.default_rng(0)
    try:
        for _ in range(2):  # two episodes: the second draws the bench's next configuration
            np.testing.assert_array_equal(env.reset(), bench.reset())
            np.testing.assert_array_equal(env.images()["corner"], bench.images()["corner"])
            assert env.images()["corner"].shape == (32, 32, 3) and env.images()["corner"].dtype == np.uint8
            for _ in range(25):
                a = rng.uniform(-1, 1, 4).astype(np.float32)
                obs, r, term, trunc, info = env.step(a)
                b_obs, b_r, b_term, b_trunc, _ = bench.step(a)
                np.testing.assert_array_equal(obs, b_obs)
                assert (r, term, trunc) == (b_r, b_term, b_trunc)
                np.testing.assert_allclose(env.ee_position(), obs[:3], atol=1e-7)
            assert trunc and env.elapsed_steps == 25
        np.testing.assert_array_equal(env.images()["corner"], bench.images()["corner"])
    finally:
        env.close()
        bench.close()


def test_a_scripted_expert_episode_succeeds_through_the_adapter():
    env = sim_env(seed=0)
    expert = ScriptedExpert("place the bolt", noise=0.0)
    try:
        obs, rewards = env.reset(), []
        for _ in range(200):
            obs, r, term, trunc, info = env.step(expert.act(obs))
            rewards.append(r)
            if term or trunc:
                break
        assert term and not trunc and info["success"] and rewards[-1] == 1.0 and sum(rewards) == 1.0
        with pytest.raises(RuntimeError, match="episode is over"):
            env.step(np.zeros(4))
    finally:
        env.close()


def test_a_joint_delta_is_the_bench_action_capped_by_max_relative_target():
    """1 unit = 1 cm; the gripper dim is the finger target; max_relative_target (per motor: 4 mm for the hand, 2 for
    the gripper) caps the goal around the present position (lerobot's ensure_safe_goal_position)."""
    env = sim_env(robot={"max_relative_target": {"x": 0.004, "y": 0.004, "z": 0.004, "gripper": 2.0}})
    try:
        x0, y0, z0 = env.reset()[:3].astype(np.float64)
        info = env.step(np.array([0.2, 1.0, -1.0, 0.3]))[4]
        sent = info["sent_action"]
        assert info["joint_targets"]["x.pos"] == pytest.approx(x0 + 0.002)  # before the cap
        assert info["joint_targets"]["y.pos"] == pytest.approx(y0 + 0.01)
        assert sent["x.pos"] == pytest.approx(x0 + 0.002, abs=1e-9)  # within the cap
        assert sent["y.pos"] == pytest.approx(y0 + 0.004, abs=1e-9)  # capped
        assert sent["z.pos"] == pytest.approx(z0 - 0.004, abs=1e-9)
        assert sent["gripper.pos"] == pytest.approx(0.3)  # from -1 (open after a reset): within its cap
    finally:
        env.close()


def test_a_resumed_simulated_arm_continues_the_configuration_sequence():
    a, b = sim_env(seed=5), sim_env(seed=5)
    try:
        a.reset()
        state = a.rng_state()
        second = a.reset()
        b.load_rng_state(state)
        np.testing.assert_array_equal(b.reset(), second)
        assert b.episodes_started == 2
    finally:
        a.close()
        b.close()


def test_the_hydra_factory_fills_the_simulated_arms_task_and_seed():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.create({"_target_": "dual_actor.robots.lerobot_robot.make_lerobot_env", "_partial_": True,
                             "type": SIM_TYPE, "image_size": 32, "plugins": [SIM],
                             "adapter": {k: v for k, v in SIM_ADAPTER.items() if k != "plugins"}})
    make_env = instantiate(node)
    env = make_env(task="pick up the bolt", seed=7, max_episode_steps=10, cameras=[], image_size=32)
    bench = MetaworldTaskEnv("pick up the bolt", 7, 10)
    try:
        assert (env.config.task, env.config.seed) == ("pick up the bolt", 7)
        np.testing.assert_array_equal(env.reset(), bench.reset())
    finally:
        env.close()
        bench.close()


# ---------------------------------------------------------------------------------------------- URDF: EE deltas
def test_forward_kinematics_places_the_end_effector(tmp_path):
    """q = (0, 0, 90) deg: upper arm level (0.2 m), forearm straight up (0.15 m), shoulder at z = 0.1."""
    env = arm_env(tmp_path, robot={"start": [0.0, 0.0, 90.0, 50.0]})
    np.testing.assert_allclose(env.ee_position(), [0.2, 0.0, 0.25], atol=1e-9)
    np.testing.assert_array_equal(env.joint_positions(), [0.0, 0.0, 90.0, 50.0])
    env = arm_env(tmp_path, robot={"start": [30.0, 20.0, 60.0, 50.0]})
    # r = 0.2 cos 20 + 0.15 cos 80 = 0.2139857, z = 0.1 + 0.2 sin 20 + 0.15 sin 80 = 0.3161252
    np.testing.assert_allclose(env.ee_position(), [0.2139857 * math.cos(math.radians(30)),
                                                   0.2139857 * math.sin(math.radians(30)), 0.3161252], atol=1e-7)


def test_a_translation_delta_becomes_joint_targets_that_reach_it(tmp_path):
    """+1 unit of x (1 cm) from (0.2, 0, 0.25): the targets' FK (by hand) is (0.21, 0, 0.25); the closed-form
    two-link IK gives the same joints (elbow-up branch: cos q3 = (0.21^2 + 0.15^2 - 0.2^2 - 0.15^2) / 0.06)."""
    env = arm_env(tmp_path)
    env.reset()
    env.step(np.array([1.0, 0.0, 0.0, 1.0]))
    sent = env.robot.sent[-1]
    q = [sent["pan.pos"], sent["shoulder.pos"], sent["elbow.pos"]]
    np.testing.assert_allclose(hand_fk(q), [0.21, 0.0, 0.25], atol=1e-6)
    q3 = math.acos((0.21**2 + 0.15**2 - 0.2**2 - 0.15**2) / (2 * 0.2 * 0.15))
    q2 = math.atan2(0.15, 0.21) - math.atan2(0.15 * math.sin(q3), 0.2 + 0.15 * math.cos(q3))
    np.testing.assert_allclose(q, [0.0, math.degrees(q2), math.degrees(q3)], atol=1e-4)
    assert sent["gripper.pos"] == 100.0  # +1: closed, the end of gripper_range [open 0, closed 100]
    np.testing.assert_allclose(env.ee_position(), [0.21, 0.0, 0.25], atol=1e-6)  # the perfect servo got there


def test_a_rotation_about_the_vertical_turns_the_pan_joint(tmp_path):
    """7-d: yaw 0.1 rad with the translation that turning the pan joint by 0.1 rad makes
    (0.2 (cos 0.1 - 1), 0.2 sin 0.1, 0) = 2 cm units (-0.0499584, 0.9983342): pan = 0.1 rad, the rest unchanged."""
    env = arm_env(tmp_path, action_dim=7, translation_scale_m=0.02, rotation_scale_rad=0.1)
    env.reset()
    env.step(np.array([0.2 * (math.cos(0.1) - 1) / 0.02, 0.2 * math.sin(0.1) / 0.02, 0, 0, 0, 1.0, -1.0]))
    sent = env.robot.sent[-1]
    np.testing.assert_allclose([sent["pan.pos"], sent["shoulder.pos"], sent["elbow.pos"], sent["gripper.pos"]],
                               [math.degrees(0.1), 0.0, 90.0, 0.0], atol=1e-4)


def test_the_joint_filter_and_max_relative_target_shape_what_is_sent(tmp_path):
    """The +1 cm x move asks elbow 90 -> 86.08 and shoulder 0 -> 0.10 deg: the filter clamps the elbow at >= 88,
    then max_relative_target 1 deg caps every motor's change around the present position (the gripper 50 -> 100
    to 51)."""
    env = arm_env(tmp_path, robot={"max_relative_target": 1})
    env.set_joint_filter(lambda q: np.maximum(q, [-180.0, -180.0, 88.0, 0.0]))
    env.reset()
    info = env.step(np.array([1.0, 0.0, 0.0, 1.0]))[4]
    assert info["joint_targets"]["elbow.pos"] == pytest.approx(86.0815, abs=1e-3)  # the IK's, before the filter
    sent = env.robot.sent[-1]
    assert sent["elbow.pos"] == pytest.approx(89.0)  # filtered to 88, then capped at 90 - 1
    assert sent["gripper.pos"] == pytest.approx(51.0)
    assert sent["shoulder.pos"] == pytest.approx(info["joint_targets"]["shoulder.pos"])  # within the cap
    env.set_joint_filter(None)
    env.step(np.array([0.0, 0.0, 0.0, 1.0]))
    assert env.robot.sent[-1]["gripper.pos"] == pytest.approx(52.0)


def test_hold_sends_the_last_observed_joints_and_the_last_gripper_target(tmp_path):
    """Zero motion from (10, 20, 30) with the gripper closing (100) onto an object that stops it at 70: a hold
    keeps the joints and squeezes on (100), it does not let go to the 70 it reads."""
    env = arm_env(tmp_path, robot={"start": [10.0, 20.0, 30.0, 40.0]})
    env.hold()  # not connected yet: nothing to hold
    assert env.robot.sent == []
    env.reset()
    env.step(np.array([0.0, 0.0, 0.0, 1.0]))
    env.robot.q[3] = 70.0
    env.observe()
    env.hold()
    np.testing.assert_allclose([env.robot.sent[-1][f"{m}.pos"] for m in ThreeJointArm.MOTORS], [10, 20, 30, 100],
                               atol=1e-6)


def test_a_hold_while_the_robot_is_busy_follows_the_call_in_progress(tmp_path):
    """A step whose command takes 1 s; a hold from another thread returns at once (0.5 s) and is sent right after
    the step: the joints the step left the arm at, the gripper at the step's target (closed: 100)."""
    import threading

    env = arm_env(tmp_path, robot={"send_delay_s": 1.0})
    env.reset()
    stepping = threading.Thread(target=env.step, args=(np.array([0.0, 0.0, 0.0, 1.0]),))
    stepping.start()
    time.sleep(0.1)
    start = time.monotonic()
    env.hold()
    assert time.monotonic() - start < 0.9 and len(env.robot.sent) == 0
    stepping.join()
    for _ in range(50):
        if len(env.robot.sent) == 2:
            break
        time.sleep(0.1)
    assert [s["gripper.pos"] for s in env.robot.sent] == [100.0, 100.0]
    np.testing.assert_allclose([env.robot.sent[1][f"{m}.pos"] for m in ThreeJointArm.MOTORS[:3]], [0, 0, 90],
                               atol=1e-6)


def test_reset_moves_home_in_steps(tmp_path):
    """home (0, 0, 90, 50) from (30, 20, 60, 50), 10 deg per command: 3 commands, each within 10 of the last."""
    env = arm_env(tmp_path, robot={"start": [30.0, 20.0, 60.0, 50.0]}, home=[0, 0, 90, 50], home_step=10,
                  home_period_s=0)
    env.reset()
    got = [[s[f"{m}.pos"] for m in ThreeJointArm.MOTORS] for s in env.robot.sent]
    assert got == [[20.0, 10.0, 70.0, 50.0], [10.0, 0.0, 80.0, 50.0], [0.0, 0.0, 90.0, 50.0]]


# ---------------------------------------------------------------------------------------------- errors
def test_an_unknown_type_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown lerobot robot type 'no_such_arm'") as e:
        LeRobotEnv("t", 0, robot={"type": "no_such_arm"}, plugins=[SIM])
    assert "so101_follower" in str(e.value) and "koch_follower" in str(e.value) and SIM_TYPE in str(e.value)
    with pytest.raises(ValueError, match="env.robot.type is missing"):
        LeRobotEnv("t", 0, robot={"port": "/dev/ttyACM0"})


def test_a_missing_field_and_a_missing_port_are_named():
    with pytest.raises(ValueError, match="port"):
        LeRobotEnv("t", 0, robot={"type": "so101_follower"})
    start = time.monotonic()
    with pytest.raises(RobotConnectionError, match="so101_follower.*'/dev/ttyDUALACTOR_MISSING' does not exist"):
        LeRobotEnv("t", 0, robot={"type": "so101_follower", "port": "/dev/ttyDUALACTOR_MISSING"})
    assert time.monotonic() - start < 10


def test_a_refused_or_silent_connection_is_one_error_naming_the_address(tmp_path):
    env = arm_env(tmp_path, robot={"connect_fails": "refuse", "port": "/dev/null"})
    with pytest.raises(RobotConnectionError, match="port '/dev/null': cannot connect: .*refused"):
        env.reset()
    env = arm_env(tmp_path, robot={"connect_fails": "hang", "port": "/dev/null"}, connect_timeout_s=0.2)
    start = time.monotonic()
    with pytest.raises(RobotConnectionError, match="port '/dev/null': no connection within 0.2 s"):
        env.reset()
    assert time.monotonic() - start < 2


def test_a_missing_motor_sdk_or_a_silent_port_fails_fast(tmp_path):
    """so101_follower on a port that exists but has no arm: without the Feetech SDK, an ImportError naming it and
    the extra; with it, lerobot's motor check fails (one RobotConnectionError naming the port)."""
    start = time.monotonic()
    try:
        import scservo_sdk  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="'so101_follower' needs scservo_sdk: pip install 'dual-actor\\[robot"):
            LeRobotEnv("t", 0, robot={"type": "so101_follower", "port": "/dev/null", "calibration_dir": str(tmp_path)},
                       gripper_range=[0, 100])
    else:  # pragma: no cover - where the robot extra is installed
        env = LeRobotEnv("t", 0, robot={"type": "so101_follower", "port": "/dev/null",
                                        "calibration_dir": str(tmp_path)}, gripper_range=[0, 100])
        with pytest.raises(RobotConnectionError, match="so101_follower' on port '/dev/null': cannot connect"):
            env.reset()
    assert time.monotonic() - start < 10


def test_the_envs_of_one_robot_share_it(tmp_path):
    """One env per task, one arm: connected once, each env sees the other's commands, disconnected with the last."""
    a, b = arm_env(tmp_path), arm_env(tmp_path)
    assert a.robot is b.robot
    a.reset()
    b.reset()
    a.step(np.array([0.0, 0.0, 0.0, 1.0]))  # gripper 50 -> 100
    assert b.joint_positions()[3] == 100.0 and a.robot.connects == 1
    a.close()
    assert a.robot.connected
    b.close()
    assert not a.robot.connected
    c = arm_env(tmp_path)
    assert c.robot is not a.robot
    c.close()


def test_an_uncalibrated_robot_is_refused_unless_asked_to_calibrate(tmp_path):
    with pytest.raises(RuntimeError, match="not calibrated.*lerobot-calibrate"):
        arm_env(tmp_path, robot={"calibrated": False}).reset()
    env = arm_env(tmp_path, robot={"calibrated": False}, calibrate=True)
    env.reset()
    assert env.robot.calibrations == 1


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="camera.*'wrist'.*image features \\['corner'\\]"):
        LeRobotEnv("place the bolt", 0, 10, ["wrist"], 32, robot={"type": SIM_TYPE, "render_cameras": ["corner"]},
                   **SIM_ADAPTER)
    with pytest.raises(ValueError, match="state_keys entry 'joint.\\*' matches none"):
        sim_env(state_keys=["joint.*"])
    with pytest.raises(ValueError, match="gripper_range"):
        sim_env(gripper_range=None)
    with pytest.raises(ValueError, match="action_dim is 4 .* or 7"):
        arm_env(tmp_path, action_dim=5)
    with pytest.raises(ValueError, match="Frame with name hand not found"):
        arm_env(tmp_path, ee_frame="hand")
    with pytest.raises(RuntimeError, match="ee_position\\(\\) needs the arm's kinematics"):
        arm_env(tmp_path, urdf_path=None, joint_scale=1.0).ee_position()


# ---------------------------------------------------------------------------------------------- plugin discovery
def test_lerobots_plugin_discovery_finds_an_installed_distribution(tmp_path, monkeypatch):
    """A ``lerobot_robot_*`` distribution (a module + its .dist-info) on sys.path: lerobot's
    register_third_party_plugins imports it, and its type builds an env like any robot."""
    name = "lerobot_robot_dual_actor_test"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from lerobot.robots import RobotConfig
        from dual_actor.robots.lerobot_sim import DualActorSimArm, DualActorSimArmConfig

        @RobotConfig.register_subclass("dual_actor_test_plugin_arm")
        @dataclass
        class PluginArmConfig(DualActorSimArmConfig):
            pass

        class PluginArm(DualActorSimArm):
            config_class = PluginArmConfig
            name = "dual_actor_test_plugin_arm"
    '''))
    dist = tmp_path / f"{name}-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "dual_actor_test_plugin_arm" not in RobotConfig.get_known_choices()
    try:
        assert "dual_actor_test_plugin_arm" in register_robots()
        env = make_lerobot_env("place the bolt", 2, 20, type="dual_actor_test_plugin_arm",
                               adapter={k: v for k, v in SIM_ADAPTER.items() if k != "plugins"})
        assert type(env.robot).__name__ == "PluginArm"
        bench = MetaworldTaskEnv("place the bolt", 2, 20)
        np.testing.assert_array_equal(env.reset(), bench.reset())
        env.close()
        bench.close()
    finally:
        sys.modules.pop(name, None)
