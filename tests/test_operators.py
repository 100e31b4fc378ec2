"""Operators: the intervention step, SpaceMouse (fake device at the pyspacemouse boundary),
keyboard (injected key queue, a pty for the terminal reader), and the simulated operator on the
real Metaworld bench."""

from __future__ import annotations

import dataclasses
import os
import queue
import sys
import time

import numpy as np
import pytest

from dual_actor.runtime.operators import (
    NO_INPUT,
    KeyboardOperator,
    NullOperator,
    OperatorInput,
    SimulatedOperator,
    SpaceMouseOperator,
    TerminalKeyReader,
    apply_intervention,
)

# --------------------------------------------------------------------------------------------
# OperatorInput and apply_intervention
# --------------------------------------------------------------------------------------------


def test_operator_input_contract():
    inp = OperatorInput(True, [0.5, 0, 0, 1], "move left")
    assert inp.action.dtype == np.float32 and inp.action.shape == (4,)
    with pytest.raises(ValueError):
        inp.action[0] = 1.0  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        inp.intervening = False
    assert OperatorInput(False, None, "[null]").command is None
    assert OperatorInput(command="").command is None
    assert NO_INPUT == OperatorInput(False, None, None)
    with pytest.raises(ValueError, match="needs an action"):
        OperatorInput(True)
    with pytest.raises(ValueError, match="not intervening"):
        OperatorInput(False, np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        OperatorInput(True, [np.nan, 0, 0, 0])


def test_apply_intervention_clips_policy_or_operator_action():
    policy = np.array([2.0, -3.0, 0.5, 0.0])
    action, intervened = apply_intervention(policy, NO_INPUT)
    assert not intervened and action.dtype == np.float32
    np.testing.assert_array_equal(action, [1.0, -1.0, 0.5, 0.0])

    action, intervened = apply_intervention(policy, OperatorInput(True, [0.3, -2.0, 0.0, 1.0]))
    assert intervened
    np.testing.assert_array_equal(action, np.float32([0.3, -1.0, 0.0, 1.0]))

    low, high = np.array([-0.2, -0.5, -1.0, 0.0]), np.array([0.2, 0.5, 1.0, 1.0])
    action, _ = apply_intervention(policy, OperatorInput(True, [0.3, -2.0, 0.7, -1.0]), low, high)
    np.testing.assert_array_equal(action, np.float32([0.2, -0.5, 0.7, 0.0]))
    action, _ = apply_intervention(policy, NO_INPUT, low, high)
    np.testing.assert_array_equal(action, np.float32([0.2, -0.5, 0.5, 0.0]))


def test_apply_intervention_errors():
    with pytest.raises(ValueError, match="shape"):
        apply_intervention(np.zeros(4), OperatorInput(True, np.zeros(7)))
    with pytest.raises(ValueError, match="NaN"):
        apply_intervention(np.array([0, np.nan, 0, 0]), NO_INPUT)
    with pytest.raises(ValueError, match="low > high"):
        apply_intervention(np.zeros(4), NO_INPUT, 1.0, -1.0)


def test_null_operator():
    with NullOperator(4) as op:
        op.reset("place the bolt")
        assert op.observe(np.zeros(39), np.ones(4), {}) is NO_INPUT


# --------------------------------------------------------------------------------------------
# SpaceMouse
# --------------------------------------------------------------------------------------------


class FakeSpaceMouse:
    """pyspacemouse's device semantics: ``read()`` processes at most one pending report and
    returns the same mutable ``SpaceMouseState``, stamping ``t`` when it processed one."""

    def __init__(self, n_buttons: int = 2):
        import pyspacemouse

        self.state = pyspacemouse.SpaceMouseState(buttons=pyspacemouse.ButtonState([0] * n_buttons))
        self.pending: list[dict] = []
        self.reads = 0
        self.closed = False

    def push(self, buttons=None, **axes):
        """Queue a report: the full pose (unnamed axes 0) and buttons (default: none held)."""
        report = {name: 0.0 for name in ("x", "y", "z", "roll", "pitch", "yaw")}
        report.update(axes)
        report["buttons"] = list(buttons) if buttons is not None else [0] * len(self.state.buttons)
        self.pending.append(report)

    def read(self):
        self.reads += 1
        if self.pending:
            report = self.pending.pop(0)
            for name, value in report.items():
                if name == "buttons":
                    self.state.buttons[:] = value
                else:
                    setattr(self.state, name, value)
            self.state.t = float(self.reads)
        return self.state

    def close(self):
        self.closed = True


POLICY = np.array([0.1, 0.2, 0.3, 0.7], dtype=np.float32)


def test_spacemouse_scripted_sequence_default_mapping():
    """Default map (HID_Z_UP puck -> x forward, y left, z up): action = (y, -x, z) * scale."""
    dev = FakeSpaceMouse()
    op = SpaceMouseOperator(device=dev, translation_scale=0.5)
    op.reset("place the bolt")
    obs = np.zeros(39)
    script = [
        # (report, policy action, expected intervening, expected operator action)
        (dict(), POLICY, False, None),  # at rest: the policy acts; its gripper (0.7) is the last command
        (dict(x=0.5, y=0.02, z=-0.3), -POLICY, True, [0.0, -0.25, -0.15, 0.7]),  # y in deadzone; gripper held
        (dict(buttons=[1, 0]), POLICY, True, [0.0, 0.0, 0.0, 1.0]),  # close button only
        (dict(pitch=0.4), POLICY, False, None),  # rotation is not mapped with action_dim 4
        (dict(y=1.3, yaw=-0.9), POLICY, True, [0.5, 0.0, 0.0, 0.7]),  # y clipped to 1; policy's gripper again
        (dict(buttons=[1, 1]), POLICY, False, None),  # both buttons: the e-stop engages (no action) ...
        (dict(buttons=[0, 0]), POLICY, False, None),  # ... and stays engaged, latched ...
        (dict(buttons=[1, 1]), POLICY, False, None),  # ... until both are pressed again: released
        (dict(buttons=[0, 0]), POLICY, False, None),  # released: the policy acts
        (dict(buttons=[0, 1], z=0.049), POLICY, True, [0.0, 0.0, 0.0, -1.0]),  # open; z in deadzone
        (dict(x=-0.2), -POLICY, True, [0.0, 0.1, 0.0, -1.0]),  # gripper stays open
    ]
    estop = [False] * 5 + [True, True, False, False, False, False]  # the e-stop's state after each step
    for k, (report, policy, intervening, expected) in enumerate(script):
        dev.push(**report)
        inp = op.observe(obs, policy, {})
        assert inp.intervening is intervening, k
        assert inp.estop is estop[k], k
        assert inp.command is None
        if expected is None:
            assert inp.action is None
        else:
            np.testing.assert_allclose(inp.action, expected, atol=1e-7, err_msg=f"step {k}")
    op.close()
    assert not dev.closed  # an injected device belongs to the caller


def test_spacemouse_episode_keys_and_event_buttons_beside_the_puck():
    """Keys typed in the terminal (the default map: g success, b failure, n rerecord, p pause, k e-stop) and a
    spare button (event_buttons) give episode events on the step they arrive; the e-stop key toggles as the two
    buttons do; a key bound to nothing is ignored."""
    import queue

    dev, keys = FakeSpaceMouse(n_buttons=3), queue.Queue()
    op = SpaceMouseOperator(device=dev, keys=keys, event_buttons={2: "success"})
    op.reset("place the bolt")
    obs = np.zeros(39)
    script = [  # (keys typed, buttons, expected event, expected e-stop)
        ("", [0, 0, 0], None, False),
        ("b", [0, 0, 0], "failure", False),
        ("xg", [0, 0, 0], "success", False),  # x: no binding
        ("", [0, 0, 1], "success", False),  # the spare button, on its press ...
        ("", [0, 0, 1], None, False),  # ... not while it stays held
        ("k", [0, 0, 0], None, True),  # the e-stop key engages ...
        ("np", [0, 0, 0], "rerecord", True),  # one event per step ...
        ("k", [0, 0, 0], "pause", False),  # ... the next waits for the next step; the e-stop key releases
        ("kk", [0, 0, 0], None, False),  # twice in one step: unchanged
    ]
    for k, (typed, buttons, event, estop) in enumerate(script):
        for key in typed:
            keys.put(key)
        dev.push(buttons=buttons)
        inp = op.observe(obs, POLICY, {})
        assert (inp.event, inp.estop) == (event, estop), k
    spoken = []  # the talk of talk-and-tweak: "1" speaks "move left" for command_steps (5) steps, "0" ends one
    for typed in ["1", "", "", "", "", "", "3", "", "0", ""]:
        for key in typed:
            keys.put(key)
        dev.push()
        inp = op.observe(obs, POLICY, {})
        spoken.append(inp.command)
        assert not inp.intervening  # speaking is not taking over
    assert spoken == ["move left"] * 5 + [None, "move forward", "move forward", None, None]
    with pytest.raises(ValueError, match="event_keys"):
        SpaceMouseOperator(device=dev, keys=keys, event_keys={"g": "win"})


def test_spacemouse_7dof_custom_axes_and_scales():
    dev = FakeSpaceMouse(n_buttons=4)
    op = SpaceMouseOperator(
        device=dev, action_dim=7, translation_scale=0.4, rotation_scale=0.2, deadzone=0.1,
        axis_map=("x", "y", "z", "roll", "pitch", "yaw"), axis_sign=(-1, -1, 1, 1, 1, -1),
        close_button=2, open_button=3,
    )
    op.reset("t")
    dev.push(x=0.5, y=-0.25, z=0.05, roll=0.3, pitch=-0.6, yaw=0.8, buttons=[0, 0, 0, 1])
    inp = op.observe(np.zeros(39), np.zeros(7), {})
    # x: -0.5*0.4; y: 0.25*0.4; z in deadzone; roll 0.3*0.2; pitch -0.6*0.2; yaw -0.8*0.2; open
    np.testing.assert_allclose(inp.action, [-0.2, 0.1, 0.0, 0.06, -0.12, -0.16, -1.0], atol=1e-7)
    dev.push(buttons=[1, 0, 0, 0])  # any button held intervenes; button 0 is not a gripper button
    np.testing.assert_allclose(op.observe(np.zeros(39), np.zeros(7), {}).action, [0, 0, 0, 0, 0, 0, -1.0])


def test_spacemouse_drains_reports_each_step():
    dev = FakeSpaceMouse()
    op = SpaceMouseOperator(device=dev)
    op.reset("t")
    for x in (0.9, 0.1, -0.6):
        dev.push(x=x)
    inp = op.observe(np.zeros(39), POLICY, {})
    np.testing.assert_allclose(inp.action, [0.0, 0.6, 0.0, 0.7], atol=1e-7)  # the latest report
    assert dev.reads == 4 and not dev.pending  # three reports + one read that found nothing new
    inp = op.observe(np.zeros(39), POLICY, {})  # no new report: the puck is still displaced
    np.testing.assert_allclose(inp.action, [0.0, 0.6, 0.0, 0.7], atol=1e-7)


def test_spacemouse_validation():
    with pytest.raises(ValueError, match="action_dim"):
        SpaceMouseOperator(device=FakeSpaceMouse(), action_dim=5)
    with pytest.raises(ValueError, match="unknown SpaceMouse axis"):
        SpaceMouseOperator(device=FakeSpaceMouse(), axis_map=("x", "y", "w"))
    with pytest.raises(ValueError, match="axis_sign"):
        SpaceMouseOperator(device=FakeSpaceMouse(), axis_sign=(1, 2, 1))
    with pytest.raises(ValueError, match="collides"):
        SpaceMouseOperator(device=FakeSpaceMouse(), action_dim=7, gripper_index=3)
    with pytest.raises(ValueError, match="distinct"):
        SpaceMouseOperator(device=FakeSpaceMouse(), close_button=1, open_button=1)
    op = SpaceMouseOperator(device=FakeSpaceMouse(n_buttons=1))
    op.reset("t")
    with pytest.raises(ValueError, match="reports 1 buttons"):
        op.observe(np.zeros(39), POLICY, {})
    with pytest.raises(ValueError, match="shape"):
        op.observe(np.zeros(39), np.zeros(7), {})


class FakeHID:
    """An easyhid device at the USB edge: scripted raw HID reports, b"" when none is pending."""

    product_string, manufacturer_string, release_number, serial_number = "SpaceMouse Compact", "3Dconnexion", 1, ""

    def __init__(self, reports):
        self.reports = list(reports)
        self.opened = self.closed = False

    def open(self):
        self.opened = True

    def close(self):
        self.closed = True

    def set_nonblocking(self, flag):
        pass

    def read(self, n):
        return bytes(self.reports.pop(0)) if self.reports else b""


def _le16(v: int) -> list[int]:
    return list(int(v).to_bytes(2, "little", signed=True))


def test_spacemouse_through_real_pyspacemouse_device(monkeypatch):
    """Lazy open through ``pyspacemouse.open`` (patched to wrap a fake HID device in the real
    ``SpaceMouseDevice``): raw HID axes -> HID_Z_UP -> action. SpaceMouse Compact reports:
    channel 1 = HID x, y, z (HID: +x right, +y toward the user, +z down), channel 2 = rotations,
    channel 3 = buttons; value = raw / 350."""
    import pyspacemouse
    from pyspacemouse.config_helpers import apply_axis_convention

    # Push away from the user (HID y = -175 -> +0.5 forward) and lift (HID z = -70 -> 0.2 up),
    # a little to the right (HID x = 10 -> 0.029, inside the deadzone); then press LEFT (bit 0).
    reports = [[1, *_le16(10), *_le16(-175), *_le16(-70)], [2, *_le16(5), *_le16(0), *_le16(0)], [3, 0b01, 0]]
    hid = FakeHID(reports)
    calls = {}

    def fake_open(device=None, axis_convention=None, **kw):
        calls.update(device=device, axis_convention=axis_convention)
        spec = apply_axis_convention(pyspacemouse.get_device_specs()["SpaceMouseCompact"], axis_convention)
        dev = pyspacemouse.SpaceMouseDevice(info=spec, device=hid)
        dev.open()
        return dev

    monkeypatch.setattr(pyspacemouse, "open", fake_open)
    op = SpaceMouseOperator(translation_scale=1.0)
    op.reset("place the bolt")
    assert calls == {"device": None, "axis_convention": pyspacemouse.AxisConvention.HID_Z_UP} and hid.opened
    inp = op.observe(np.zeros(39), POLICY, {})
    assert not hid.reports  # all three reports drained in one control step
    np.testing.assert_allclose(inp.action, [0.5, 0.0, 0.2, 1.0], atol=1e-6)  # LEFT = close_button 0
    op.close()
    assert hid.closed


def test_spacemouse_missing_device_or_library(monkeypatch):
    import pyspacemouse

    def no_device(**kw):
        raise RuntimeError("No connected or supported devices found.")

    monkeypatch.setattr(pyspacemouse, "open", no_device)
    with pytest.raises(RuntimeError, match="no SpaceMouse opened.*No connected.*KeyboardOperator"):
        SpaceMouseOperator().reset("t")
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)
    with pytest.raises(RuntimeError, match="cannot import pyspacemouse"):
        SpaceMouseOperator().observe(np.zeros(39), POLICY, {})


# --------------------------------------------------------------------------------------------
# Keyboard
# --------------------------------------------------------------------------------------------


def _step(op, q, keys, policy=POLICY):
    for k in keys:
        q.put(k)
    return op.observe(np.zeros(39), policy, {})


def test_keyboard_mapping_with_injected_queue():
    q = queue.Queue()
    op = KeyboardOperator(keys=q, translation_scale=0.5, command_steps=2)
    op.reset("place the bolt")
    inp = _step(op, q, [])
    assert inp == NO_INPUT
    inp = _step(op, q, ["w", "r"])  # +x, +z; gripper: the policy's last command (0.7)
    np.testing.assert_allclose(inp.action, [0.5, 0.0, 0.5, 0.7])
    inp = _step(op, q, ["a", "a", "s", "f", "r", "?"])  # y: clip(2) = 1; x: -1; z: 0; unknown key ignored
    np.testing.assert_allclose(inp.action, [-0.5, 0.5, 0.0, 0.7])
    inp = _step(op, q, ["space"])  # toggle: 0.7 > 0 (closed) -> open
    np.testing.assert_allclose(inp.action, [0, 0, 0, -1.0])
    inp = _step(op, q, ["space", "space", "space"])  # -> close -> open -> close
    np.testing.assert_allclose(inp.action, [0, 0, 0, 1.0])
    assert _step(op, q, ["3"]) == OperatorInput(False, None, "move forward")  # speaking is not intervening
    assert _step(op, q, []).command == "move forward"  # held for command_steps = 2
    assert _step(op, q, []).command is None
    assert _step(op, q, ["5"]).command == "move up"
    assert _step(op, q, ["0"]).command is None  # cleared
    inp = _step(op, q, ["i"])  # latch: hold (zero motion) with the last executed gripper (0.7)
    assert inp.intervening
    np.testing.assert_allclose(inp.action, [0, 0, 0, 0.7])
    inp = _step(op, q, ["d", "6"])
    assert inp.command == "move down"
    np.testing.assert_allclose(inp.action, [0, -0.5, 0, 0.7])
    assert _step(op, q, [], policy=-POLICY).intervening  # still latched
    assert _step(op, q, ["i"]) == NO_INPUT
    op.reset("place the bolt")
    assert not op.latched


def test_keyboard_7dof_and_validation():
    q = queue.Queue()
    op = KeyboardOperator(keys=q, action_dim=7, translation_scale=1.0, rotation_scale=0.25)
    op.reset("t")
    inp = _step(op, q, ["z", "v", "q", "s"], policy=np.zeros(7))
    np.testing.assert_allclose(inp.action, [-1.0, 0, 0, 0.25, -0.25, 0.25, 0.0])
    with pytest.raises(ValueError, match="not a talk-and-tweak command"):
        KeyboardOperator(keys=q, commands={"1": "go left"})
    with pytest.raises(ValueError, match="bound twice"):
        KeyboardOperator(keys=q, commands={"w": "move left"})
    with pytest.raises(ValueError, match="motion dim"):
        KeyboardOperator(keys=q, key_map={"w": (3, 1)})
    custom = KeyboardOperator(keys=q, commands={"1": "move dexter"}, words={"y": ("sinister", "dexter")})
    custom.reset("t")
    assert _step(custom, q, ["1"]).command == "move dexter"


def test_terminal_key_reader_on_a_pty():
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()

    class Stream:
        def fileno(self):
            return slave

    q = queue.Queue()
    reader = TerminalKeyReader(q, stream=Stream())
    try:
        os.write(master, b"w 3")
        keys, deadline = [], time.monotonic() + 5
        while len(keys) < 3 and time.monotonic() < deadline:
            try:
                keys.append(q.get(timeout=0.1))
            except queue.Empty:
                pass
        assert keys == ["w", "space", "3"]
    finally:
        reader.close()
        os.close(master)
        os.close(slave)


def test_terminal_key_reader_refuses_a_non_terminal():
    r, w = os.pipe()

    class Stream:
        def fileno(self):
            return r

    try:
        with pytest.raises(RuntimeError, match="not a terminal"):
            TerminalKeyReader(queue.Queue(), stream=Stream())
    finally:
        os.close(r)
        os.close(w)


# --------------------------------------------------------------------------------------------
# Simulated operator (real Metaworld bench)
# --------------------------------------------------------------------------------------------

BENCH = ["place the bolt", "pick up the bolt", "assemble the bolt"]


def _rollout(task, policy_fn, op, episodes=1, seed=0, max_steps=None):
    """The control loop in miniature: observe before acting, execute apply_intervention's action.
    Returns per step (intervened, operator input, obs, policy action)."""
    from dual_actor.runtime.sim import MetaworldTaskEnv

    steps = []
    with MetaworldTaskEnv(task, seed=seed) as env:
        for _ in range(episodes):
            obs, info, done = env.reset(), {}, False
            op.reset(task)
            while not done and (max_steps is None or len(steps) < max_steps):
                policy = policy_fn(obs)
                inp = op.observe(obs, policy, info)
                action, intervened = apply_intervention(policy, inp)
                steps.append((intervened, inp, obs, policy))
                obs, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
    return steps


def _rate(steps):
    return float(np.mean([s[0] for s in steps]))


@pytest.mark.parametrize("task", BENCH)
def test_simulated_operator_rate_falls_as_the_policy_improves(task):
    """A random policy is corrected most of the time; the expert's noisy actions less; the
    noise-free expert itself (the operator's own variant) never."""
    from dual_actor.runtime.sim import ScriptedExpert

    expert = ScriptedExpert(task, noise=0.0, variant="corrected")
    noisy = ScriptedExpert(task, noise=0.5, rng=np.random.default_rng(1), variant="corrected")
    rng = np.random.default_rng(2)
    rates = {}
    for name, policy_fn, episodes in (
        ("random", lambda o: rng.uniform(-1, 1, 4).astype(np.float32), 1),
        ("noisy expert", noisy.act, 1),
        ("expert", expert.act, 2),
    ):
        op = SimulatedOperator(task, talk_then_tweak=False, seed=0, expert="corrected")
        rates[name] = _rate(_rollout(task, policy_fn, op, episodes=episodes))
    assert rates["random"] > 0.5, rates  # at most 10 of every 15 steps (patience 3 + delay 2)
    assert rates["random"] > rates["noisy expert"] > rates["expert"], rates
    assert rates["expert"] == 0.0, rates


def _offset_policy(task, start):
    """The expert, except that from step ``start`` its x action is moved 0.8 away (towards 0
    and beyond), so ||policy[:3] - expert[:3]|| = 0.8 > 0.5; it stays within [-1, 1]."""
    from dual_actor.runtime.sim import ScriptedExpert

    expert = ScriptedExpert(task, noise=0.0)
    t = {"k": 0}

    def act(obs):
        a = expert.act(obs).copy()
        if t["k"] >= start:
            a[0] = a[0] - 0.8 if a[0] >= 0 else a[0] + 0.8
        t["k"] += 1
        return a

    return act


def test_simulated_operator_takeover_timing_and_correction_actions():
    """Disagreement from step 4: the streak reaches patience 3 at step 6, the takeover starts
    reaction_delay 2 later (step 8) for 10 steps (8..17); watching again from step 18, the next
    trigger is at step 20 and the next takeover at 22. During a takeover the action is
    clip(expert(obs) + N(0, 0.1^2)) with the operator's seeded generator."""
    from dual_actor.runtime.sim import ScriptedExpert

    task = "assemble the bolt"
    op = SimulatedOperator(task, expert_noise=0.1, talk_then_tweak=False, seed=7)
    steps = _rollout(task, _offset_policy(task, start=4), op, max_steps=32)
    assert len(steps) == 32
    expected = [8 <= k < 18 or 22 <= k < 32 for k in range(32)]
    assert [s[0] for s in steps] == expected
    assert op.trigger_counts == {"disagree": 2, "no_progress": 0}

    reference, noise = ScriptedExpert(task, noise=0.0), np.random.default_rng(7)
    for intervened, inp, obs, _ in steps:
        if intervened:
            want = np.clip(reference.act(obs) + noise.normal(0.0, 0.1, 4), -1, 1)
            np.testing.assert_allclose(inp.action, want, atol=1e-6)
            assert inp.command is None


def test_simulated_operator_no_progress_rule():
    """A policy that keeps the hand still, with disagreement switched off (threshold above the
    largest possible distance 2*sqrt(3)): the hand stays still from step 0, so the no-progress
    count reaches 5 at step 5; the takeover starts at step 5 + 2 = 7 and lasts 4 steps."""
    task = "place the bolt"
    op = SimulatedOperator(task, disagree_threshold=10.0, no_progress_steps=5, correction_steps=4,
                           talk_then_tweak=False, seed=0)
    steps = _rollout(task, lambda o: np.zeros(4, np.float32), op, max_steps=11)
    assert [s[0] for s in steps] == [k >= 7 for k in range(11)]
    assert op.last_trigger == "no_progress" and op.trigger_counts["disagree"] == 0


def test_simulated_operator_speaks_instead_of_taking_over():
    """speak_commands: same segments as the takeover test (8..17, 22..), never intervening; the
    command is the talk-and-tweak sentence of the last 5 (expert - policy) translations in metres:
    only x differs, by +-0.8 per step, so the command is "move forward" or "move backward"
    (x words) by the sign of the window's x sum."""
    from dual_actor.runtime.sim import ScriptedExpert

    task = "assemble the bolt"
    op = SimulatedOperator(task, speak_commands=True, seed=0)
    steps = _rollout(task, _offset_policy(task, start=4), op, max_steps=32)
    assert not any(s[0] for s in steps)
    reference = ScriptedExpert(task, noise=0.0)
    diffs = [reference.act(obs)[0] - policy[0] for _, _, obs, policy in steps]
    for k, (_, inp, _, _) in enumerate(steps):
        if 8 <= k < 18 or 22 <= k < 32:
            total = 0.01 * sum(diffs[max(0, k - 4): k + 1])
            assert abs(total) > 0.001
            assert inp.command == ("move forward" if total > 0 else "move backward"), k
        else:
            assert inp.command is None, k


def test_simulated_operator_talk_then_tweak_escalates_when_speaking_does_not_help():
    """talk_then_tweak: the segments of the takeover test (8..17, 22..31, 36..45); the first
    speaks, the second starts 5 steps after it (within escalate_window 20) and takes over, the
    third follows a take-over and speaks again. With escalate_window 2 every segment speaks."""
    task = "assemble the bolt"
    op = SimulatedOperator(task, talk_then_tweak=True, seed=0)
    steps = _rollout(task, _offset_policy(task, start=4), op, max_steps=46)
    for k, (intv, inp, _, _) in enumerate(steps):
        if 8 <= k < 18 or 36 <= k < 46:
            assert not intv and inp.command in ("move forward", "move backward"), k
        elif 22 <= k < 32:
            assert intv and inp.command is None, k
        else:
            assert not intv and inp.command is None, k
    assert op.segment_counts == {"speak": 2, "takeover": 1}
    patient = SimulatedOperator(task, talk_then_tweak=True, escalate_window=2, seed=0)
    steps = _rollout(task, _offset_policy(task, start=4), patient, max_steps=46)
    assert not any(s[0] for s in steps) and patient.segment_counts == {"speak": 3, "takeover": 0}


def test_simulated_operator_silent_for_the_expert_and_switches_tasks():
    from dual_actor.runtime.sim import ScriptedExpert

    op = SimulatedOperator("place the bolt", speak_commands=True, seed=0)
    steps = _rollout("pick up the bolt", ScriptedExpert("pick up the bolt", noise=0.0).act, op)
    assert op.expert.env_name == "pick-out-of-hole-v3"
    assert all(s[1] == NO_INPUT for s in steps)
    with pytest.raises(ValueError, match="patience"):
        SimulatedOperator("place the bolt", patience=0)
