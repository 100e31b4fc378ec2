"""The safety layer (dual_actor/runtime/safety.py): each check with hand-computed numbers on a fake arm, the watchdog
on a fake arm that is slow or never returns, the exit path, and a bit-identical pass-through on the bench."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from dual_actor.runtime.env import Arm, RandomStateful, RobotEnv
from dual_actor.runtime.safety import RobotStalled, SafeEnv, hold_action

BOX = dict(workspace_min=[-0.05, -0.05, 0.05], workspace_max=[0.05, 0.05, 0.30])


class FakeClock:
    """A clock the fake arm moves forward by its calls' fake durations (no sleeping)."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeArm:
    """A pure-numpy arm. The end effector moves by ``clip(a[0:3], -1, 1) * 0.01`` m per step; every action received
    and every call (step, hold, close, ...) is recorded. ``joints``: what ``joint_positions()`` reports (None:
    unknown). ``delay``: ``{call: seconds}`` a call takes, slept for real or, with ``clock``, added to the fake clock.
    ``block``: ``{call: Event}`` the call waits for (a robot that never answers)."""

    translation_scale_m = 0.01
    rotation_scale_rad = 0.1

    def __init__(self, ee=(0.0, 0.0, 0.1), joints=None, delay=None, clock=None, block=None, hold_raises=False):
        self.cameras = ["wrist"]
        self.p = np.array(ee, dtype=np.float64)
        self.joints = None if joints is None else np.array(joints, dtype=np.float64)
        self.delay, self.clock, self.block = delay or {}, clock, block or {}
        self.hold_raises = hold_raises
        self.received: list[np.ndarray] = []
        self.calls: list[str] = []
        self.steps = 0

    def _take_time(self, call: str) -> None:
        if call in self.block:
            self.block[call].wait(30)
        d = self.delay.get(call)
        if d and self.clock is not None:
            self.clock.t += d
        elif d:
            time.sleep(d)

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.p, [0.0]]).astype(np.float32)

    def reset(self) -> np.ndarray:
        self._take_time("reset")
        self.calls.append("reset")
        self.steps = 0
        return self._obs()

    def step(self, action):
        self._take_time("step")
        a = np.array(action, dtype=np.float64)
        self.received.append(a)
        self.calls.append("step")
        self.p = self.p + np.clip(a[0:3], -1.0, 1.0) * self.translation_scale_m
        self.steps += 1
        return self._obs(), 0.0, False, False, {"inner": True}

    def images(self):
        self._take_time("images")
        return {"wrist": np.zeros((2, 2, 3), np.uint8)}

    @property
    def elapsed_steps(self) -> int:
        return self.steps

    def close(self) -> None:
        self.calls.append("close")

    def observe(self) -> np.ndarray:
        self._take_time("observe")
        return self._obs()

    def ee_position(self) -> np.ndarray:
        return self.p.copy()

    def joint_positions(self):
        return None if self.joints is None else self.joints.copy()

    def hold(self) -> None:
        self.calls.append("hold")
        if self.hold_raises:
            raise RuntimeError("hold failed")


class JointArm(FakeArm):
    """An arm whose adapter commands joints: the joint target is ``joints + a[0:3]``, through the joint filter."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.joint_filter = None

    def set_joint_filter(self, fn) -> None:
        self.joint_filter = fn

    def step(self, action):
        target = self.joints + np.asarray(action, dtype=np.float64)[0:3]
        self.joints = self.joint_filter(target) if self.joint_filter is not None else target
        return super().step(action)


class HomingArm(FakeArm):
    def home(self) -> None:
        self.calls.append("home")


class BareEnv:
    """A RobotEnv and nothing more: no Arm members, no random state."""

    cameras = ()
    elapsed_steps = 0

    def reset(self):
        return np.zeros(3, np.float32)

    def step(self, a):
        return np.zeros(3, np.float32), 0.0, False, False, {}

    def images(self):
        return {}

    def close(self):
        pass


def started(env: FakeArm, **kw) -> SafeEnv:
    safe = SafeEnv(env, **kw)
    safe.reset()
    return safe


# --------------------------------------------------------------------------------------------------- the box
def test_the_box_clips_the_target_and_recomputes_the_action():
    env = FakeArm(ee=(0.045, 0.0, 0.055))
    safe = started(env, **BOX)
    # target = p + a * 0.01 = (0.055, 0.005, 0.045): x above 0.05, z below 0.05 -> (0.05, 0.005, 0.05)
    obs, _, _, truncated, info = safe.step(np.array([1.0, 0.5, -1.0, 0.3], np.float32))
    np.testing.assert_allclose(env.received[-1], [0.5, 0.5, -0.5, 0.3], atol=1e-6)  # (clipped - p) / 0.01
    np.testing.assert_allclose(env.p, [0.05, 0.005, 0.05], atol=1e-8)
    assert info["safety"] == ["workspace_clipped"] and info["safety_detail"]["workspace_clipped"]["axes"] == ["x", "z"]
    np.testing.assert_allclose(info["safety_detail"]["workspace_clipped"]["clipped_target"], [0.05, 0.005, 0.05])
    np.testing.assert_allclose(info["executed_action"], env.received[-1])
    assert not truncated and info["inner"] and safe.events == {"workspace_clipped": 1}
    inside = np.array([-1.0, 0.0, 1.0, 0.3], np.float32)  # target (0.04, 0.005, 0.06): inside, sent as it is
    _, _, _, _, info = safe.step(inside)
    assert info["safety"] == [] and np.array_equal(env.received[-1], inside)


def test_the_box_only_takes_motion_away_outside_it():
    """An end effector already outside the box (x = 0.08 > 0.05) is not pulled in, and may not go further out."""
    env = FakeArm(ee=(0.08, 0.0, 0.1))
    safe = started(env, **BOX)
    still = np.array([0.0, 0.0, 0.0, 1.0], np.float32)
    _, _, _, _, info = safe.step(still)
    assert info["safety"] == [] and np.array_equal(env.received[-1], still)
    _, _, _, _, info = safe.step(np.array([0.5, 0.2, 0.0, 1.0], np.float32))  # further out in x: x motion taken
    np.testing.assert_allclose(env.received[-1], [0.0, 0.2, 0.0, 1.0], atol=1e-7)
    assert info["safety"] == ["workspace_clipped"]
    back = np.array([-1.0, 0.0, 0.0, 1.0], np.float32)  # towards the box (0.07, still outside): allowed
    _, _, _, _, info = safe.step(back)
    assert info["safety"] == [] and np.array_equal(env.received[-1], back)


# --------------------------------------------------------------------------------------------------- step limits
def test_the_per_step_translation_limit_scales_the_motion_down():
    env = FakeArm()
    safe = started(env, max_step_m=0.005)
    # ||(0.6, 0.8, 0)|| * 0.01 = 0.01 m > 0.005 m: halved; the gripper untouched
    _, _, _, _, info = safe.step(np.array([0.6, 0.8, 0.0, -1.0], np.float32))
    np.testing.assert_allclose(env.received[-1], [0.3, 0.4, 0.0, -1.0], atol=1e-7)
    assert info["safety"] == ["translation_limited"]
    assert info["safety_detail"]["translation_limited"]["commanded_m"] == pytest.approx(0.01)
    # a command beyond [-1, 1] counts as what the arm would do with it: (2, 0, 0) -> (1, 0, 0) -> 0.01 m -> (0.5, 0, 0)
    safe.step(np.array([2.0, 0.0, 0.0, 0.0], np.float32))
    np.testing.assert_allclose(env.received[-1], [0.5, 0.0, 0.0, 0.0], atol=1e-7)
    under = np.array([0.3, 0.3, 0.0, 1.0], np.float32)  # 0.0042 m: sent as it is
    _, _, _, _, info = safe.step(under)
    assert info["safety"] == [] and np.array_equal(env.received[-1], under)
    assert safe.events == {"translation_limited": 2}


def test_the_per_step_rotation_limit_on_a_7d_action():
    env = FakeArm()
    safe = started(env, max_step_rad=0.05)
    # ||(0.6, 0.8, 0)|| * 0.1 rad = 0.1 rad > 0.05: halved; translation and gripper untouched
    _, _, _, _, info = safe.step(np.array([0.2, 0.0, 0.0, 0.6, 0.8, 0.0, 1.0], np.float32))
    np.testing.assert_allclose(env.received[-1], [0.2, 0.0, 0.0, 0.3, 0.4, 0.0, 1.0], atol=1e-7)
    assert info["safety"] == ["rotation_limited"]
    four = np.array([0.0, 0.0, 0.0, 1.0], np.float32)  # 4-d: dim 3 is the gripper, no rotation to limit
    _, _, _, _, info = safe.step(four)
    assert info["safety"] == [] and np.array_equal(env.received[-1], four)


def test_the_step_limit_applies_before_the_box():
    env = FakeArm(ee=(0.048, 0.0, 0.1))
    safe = started(env, max_step_m=0.005, **BOX)
    _, _, _, _, info = safe.step(np.array([1.0, 1.0, 0.0, 0.0], np.float32))
    # limit: (1, 1) * 0.005 / (sqrt(2) * 0.01) = (0.35355, 0.35355); box: x target 0.048 + 0.0035355 > 0.05 -> 0.2
    # (the box first would give (0.2, 1) and then the limit (0.098, 0.490))
    np.testing.assert_allclose(env.received[-1], [0.2, 0.5 / np.sqrt(2), 0.0, 0.0], atol=1e-6)
    assert info["safety"] == ["translation_limited", "workspace_clipped"]


# --------------------------------------------------------------------------------------------------- joints
def test_joint_targets_are_clamped_through_the_adapters_filter():
    limits = [[-1.0, 1.0], [-0.5, 0.5], [0.0, 2.0]]
    env = JointArm(joints=[0.9, 0.0, 1.0])
    safe = started(env, joint_limits=limits)
    assert env.joint_filter == safe.clamp_joints
    np.testing.assert_array_equal(safe.clamp_joints(np.array([1.5, -0.7, 1.0])), [1.0, -0.5, 1.0])
    _, _, _, truncated, info = safe.step(np.array([0.5, 0.0, 0.0, 0.0], np.float32))  # target (1.4, 0, 1)
    np.testing.assert_array_equal(env.joints, [1.0, 0.0, 1.0])  # at the limit, not beyond: the episode goes on
    assert info["safety"] == ["joint_target_clamped"] and not truncated
    assert info["safety_detail"]["joint_target_clamped"]["joints"] == [0]


def test_a_joint_beyond_its_limit_holds_and_ends_the_episode():
    env = FakeArm(joints=[0.0, 0.0, 1.0])
    safe = started(env, joint_limits=[[-1.0, 1.0], [-0.5, 0.5], [0.0, 2.0]])
    _, _, _, truncated, info = safe.step(np.zeros(4, np.float32))
    assert not truncated and info["safety"] == [] and "hold" not in env.calls
    env.joints = np.array([0.0, 0.6, 1.0])  # joint 1 drifts past 0.5
    _, _, _, truncated, info = safe.step(np.zeros(4, np.float32))
    assert truncated and info["safety"] == ["joint_limit"] and env.calls[-2:] == ["step", "hold"]
    assert info["safety_detail"]["joint_limit"]["joints"] == [1]
    with pytest.raises(RuntimeError, match="joint_limit"):  # nothing more is sent until a reset
        safe.step(np.zeros(4, np.float32))
    assert len(env.received) == 2
    env.joints = np.array([0.0, 0.0, 1.0])
    safe.reset()
    safe.step(np.zeros(4, np.float32))
    assert len(env.received) == 3


# --------------------------------------------------------------------------------------------------- watchdog
def test_the_watchdog_holds_and_truncates_on_a_slow_step():
    clock = FakeClock()
    env = FakeArm(delay={"step": 1.0}, clock=clock)  # every step "takes" 1 s on the clock
    safe = started(env, timeout_s=0.5, clock=clock)
    _, _, terminated, truncated, info = safe.step(np.zeros(4, np.float32))
    assert truncated and not terminated and env.calls[-2:] == ["step", "hold"]
    assert info["safety"] == ["watchdog"]
    assert info["safety_detail"]["watchdog"] == [{"call": "step", "duration_s": 1.0, "timeout_s": 0.5}]
    assert safe.events == {"watchdog": 1}
    env.delay = {}
    safe.reset()
    _, _, _, truncated, info = safe.step(np.zeros(4, np.float32))
    assert not truncated and info["safety"] == []


def test_the_watchdog_holds_while_the_slow_call_is_still_running():
    env = FakeArm(delay={"step": 0.5})  # a real sleep past timeout_s, returning before stall_s
    safe = started(env, timeout_s=0.1, stall_s=20.0)
    _, _, _, truncated, info = safe.step(np.zeros(4, np.float32))
    assert env.calls == ["reset", "hold", "step"]  # held at timeout_s, before the step came back
    assert truncated and info["safety"] == ["watchdog"]
    assert info["safety_detail"]["watchdog"][0]["duration_s"] > 0.1


@pytest.mark.parametrize("call", ["images", "observe", "reset"])
def test_a_slow_read_holds_and_ends_the_episode_at_the_next_step(call):
    clock = FakeClock()
    env = FakeArm(clock=clock)
    safe = started(env, timeout_s=0.5, clock=clock)
    safe.step(np.array([0.0, 0.0, 0.0, 0.7], np.float32))
    env.delay = {call: 2.0}
    getattr(safe, call)()
    assert env.calls[-1] == "hold"
    env.delay = {}
    _, _, _, truncated, info = safe.step(np.array([1.0, 0.0, 0.0, -1.0], np.float32))
    expected = np.float32([0.0, 0.0, 0.0, 0.0 if call == "reset" else 0.7])  # after a reset: no gripper sent yet
    np.testing.assert_array_equal(env.received[-1], expected)  # the hold action, not the policy's
    assert truncated and info["safety"] == ["watchdog"]
    assert info["safety_detail"]["watchdog"] == [{"call": call, "duration_s": 2.0, "timeout_s": 0.5}]


@pytest.mark.parametrize("hold_raises", [False, True])
def test_a_step_that_never_returns_raises_robot_stalled(hold_raises):
    never = threading.Event()
    env = FakeArm(block={"step": never}, hold_raises=hold_raises)
    safe = started(env, timeout_s=0.05, stall_s=0.3)
    try:
        with pytest.raises(RobotStalled, match=r"step\(\) has not returned within 0.3 s \(safety.timeout_s = 0.05 s\)"):
            safe.step(np.zeros(4, np.float32))
        assert isinstance(RobotStalled("x"), RuntimeError)
        assert env.calls == ["reset", "hold"]  # held from the calling thread; the step is still stuck
        assert safe.events["stalled"] == 1
        with pytest.raises(RobotStalled, match="stalled earlier"):
            safe.step(np.zeros(4, np.float32))
        env.hold_raises = False
        safe.close()  # on a fresh worker: holds, then closes
        assert env.calls == ["reset", "hold", "hold", "close"]
    finally:
        never.set()


# --------------------------------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_action_is_never_sent(bad, caplog):
    env = FakeArm()
    safe = started(env)
    safe.step(np.array([0.1, 0.0, 0.0, 0.7], np.float32))
    with caplog.at_level(logging.WARNING, logger="dual_actor.runtime.safety"):
        _, _, _, truncated, info = safe.step(np.array([0.1, bad, 0.0, -1.0], np.float32))
    np.testing.assert_array_equal(env.received[-1], np.float32([0.0, 0.0, 0.0, 0.7]))  # zero motion, gripper as sent
    assert all(np.all(np.isfinite(a)) for a in env.received)
    assert info["safety"] == ["non_finite_action_held"] and not truncated
    assert "non-finite action [0.10000000149011612, " + str(bad) in caplog.text
    safe.step(np.array([np.nan] * 4, np.float32))
    np.testing.assert_array_equal(env.received[-1], np.float32([0.0, 0.0, 0.0, 0.7]))
    assert safe.events == {"non_finite_action_held": 2}


def test_a_non_finite_first_action_sends_zero_motion_and_zero_gripper():
    env = FakeArm()
    started(env).step(np.array([np.nan, 0.0, 0.0, 1.0], np.float32))
    np.testing.assert_array_equal(env.received, [[0.0, 0.0, 0.0, 0.0]])


def test_hold_action_is_defined_once():
    from dual_actor.runtime import loop

    assert loop.hold_action is hold_action
    np.testing.assert_array_equal(hold_action(np.float32([0.5, 0.5, 0.5, -0.3]), 4), np.float32([0, 0, 0, -0.3]))
    np.testing.assert_array_equal(hold_action(np.float32([0.5, 0.5, 0.5, -0.3]), 4, None), np.zeros(4))


# --------------------------------------------------------------------------------------------------- exit
def test_close_holds_then_closes_even_when_holding_raises():
    env = FakeArm(hold_raises=True)
    safe = started(env)
    with pytest.raises(RuntimeError, match="hold failed"):
        safe.close()
    assert env.calls == ["reset", "hold", "close"]
    safe.close()  # idempotent
    assert env.calls == ["reset", "hold", "close"]


def test_close_on_exit_home_homes_or_holds_with_a_warning(caplog):
    homing = HomingArm()
    started(homing, on_exit="home").close()
    assert homing.calls == ["reset", "home", "close"]
    plain = FakeArm()
    with caplog.at_level(logging.WARNING, logger="dual_actor.runtime.safety"):
        started(plain, on_exit="home").close()
    assert plain.calls == ["reset", "hold", "close"] and "has no home(): holding instead" in caplog.text


def test_ctrl_c_inside_the_context_leaves_the_robot_holding_and_closed():
    env = FakeArm()
    with pytest.raises(KeyboardInterrupt):
        with SafeEnv(env) as safe:
            safe.reset()
            raise KeyboardInterrupt
    assert env.calls == ["reset", "hold", "close"]


# --------------------------------------------------------------------------------------------------- construction
@pytest.mark.parametrize("kw, check", [
    (BOX, "the workspace box"),
    (dict(max_step_m=0.01), "per-step translation limit"),
    (dict(max_step_rad=0.1), "per-step rotation limit"),
    (dict(joint_limits=[[0, 1]]), "joint limits"),
])
def test_a_check_the_env_cannot_serve_is_refused(kw, check):
    with pytest.raises(ValueError, match=check):
        SafeEnv(BareEnv(), **kw)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="go together"):
        SafeEnv(FakeArm(), workspace_min=[0, 0, 0])
    with pytest.raises(ValueError, match="workspace_min < safety.workspace_max"):
        SafeEnv(FakeArm(), workspace_min=[0, 0, 0], workspace_max=[1, 0, 1])
    with pytest.raises(ValueError, match="on_exit"):
        SafeEnv(FakeArm(), on_exit="dance")
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        SafeEnv(FakeArm(), timeout_s=0)


def test_from_config_takes_the_safety_section():
    from omegaconf import OmegaConf

    from dual_actor.config.sections import SafetyConfig

    cfg = SafetyConfig(workspace_min=[-0.1, -0.2, 0.0], workspace_max=[0.1, 0.2, 0.3], max_step_m=0.02,
                       max_step_rad=0.1, joint_limits=[[-1.0, 1.0]], timeout_s=2.0, on_exit="home")
    for section in (cfg, OmegaConf.structured(cfg), dict(workspace_min=[-0.1, -0.2, 0.0],
                                                         workspace_max=[0.1, 0.2, 0.3], max_step_m=0.02,
                                                         max_step_rad=0.1, joint_limits=[[-1, 1]], timeout_s=2,
                                                         on_exit="home")):
        safe = SafeEnv.from_config(FakeArm(), section)
        assert safe.workspace_min.tolist() == [-0.1, -0.2, 0.0] and safe.workspace_max.tolist() == [0.1, 0.2, 0.3]
        assert (safe.max_step_m, safe.max_step_rad, safe.timeout_s, safe.stall_s, safe.on_exit) == (
            0.02, 0.1, 2.0, 4.0, "home")
        assert safe.joint_limits.tolist() == [[-1.0, 1.0]]
    with pytest.raises(ValueError, match="unknown safety setting"):
        SafeEnv.from_config(FakeArm(), {"max_step": 0.1})


def test_it_is_a_robot_env_and_an_arm_and_random_stateful_only_around_one():
    env = FakeArm(ee=(0.1, 0.2, 0.3), joints=[0.5])
    safe = SafeEnv(env)
    assert isinstance(safe, RobotEnv) and isinstance(safe, Arm)
    assert not isinstance(safe, RandomStateful) and not hasattr(safe, "rng_state")
    assert safe.ee_position().tolist() == [0.1, 0.2, 0.3] and safe.joint_positions().tolist() == [0.5]
    np.testing.assert_array_equal(safe.observe(), np.float32([0.1, 0.2, 0.3, 0.0]))
    assert (safe.translation_scale_m, safe.rotation_scale_rad, safe.cameras) == (0.01, 0.1, ["wrist"])
    assert safe.hold_raises is False  # anything else: the wrapped env's
    safe.hold()
    assert env.calls == ["hold"]


# --------------------------------------------------------------------------------------------------- the bench
def test_the_bench_with_its_settings_is_unchanged_bit_for_bit():
    from dual_actor.config.sections import SafetyConfig
    from dual_actor.runtime.sim import MetaworldTaskEnv

    raw = MetaworldTaskEnv("place the bolt", seed=7, max_episode_steps=25)
    safe = SafeEnv.from_config(MetaworldTaskEnv("place the bolt", seed=7, max_episode_steps=25), SafetyConfig())
    assert isinstance(safe, RandomStateful) and isinstance(safe, Arm) and safe.timeout_s == 5.0
    assert safe.task == "place the bolt" and safe.cameras == []
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, (2, 25, 4)).astype(np.float32)
    with safe:
        for episode in actions:
            assert np.array_equal(raw.reset(), safe.reset())
            for a in episode:
                o1, r1, t1, u1, _ = raw.step(a)
                o2, r2, t2, u2, info = safe.step(a)
                assert np.array_equal(o1, o2) and (r1, t1, u1) == (r2, t2, u2) and info["safety"] == []
                if t1 or u1:
                    break
            assert safe.elapsed_steps == raw.elapsed_steps
        state = safe.rng_state()
        assert state["episodes_started"] == 2 and state == raw.rng_state()
        safe.load_rng_state(state)
    assert safe.events == {}
    raw.close()


def test_the_bench_renders_through_the_worker():
    """The cameras' GL context lives on the worker thread, where every call into the env runs."""
    from dual_actor.runtime.sim import MetaworldTaskEnv

    raw = MetaworldTaskEnv("pick up the bolt", seed=1, cameras=["corner"], image_size=16)
    with SafeEnv(MetaworldTaskEnv("pick up the bolt", seed=1, cameras=["corner"], image_size=16)) as safe:
        raw.reset(), safe.reset()
        a = np.array([0.5, -0.5, 0.2, 1.0], np.float32)
        raw.step(a), safe.step(a)
        assert np.array_equal(raw.images()["corner"], safe.images()["corner"])
    raw.close()
