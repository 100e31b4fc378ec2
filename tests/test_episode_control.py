"""The person controls episodes: success / failure end them with their reward, re-record drops one (its log kept
aside), pause and the e-stop hold the robot (nothing sent) until released, and a real robot's episode starts when
the person resumes. Keys and SpaceMouse buttons give these signals."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from data_tools.teleop_format import DISCARDED_DIR, EPISODES_DIR, STEPS_FILE
from data_tools.teleop_log import SessionWriter
from dual_actor import constants as K
from dual_actor.runtime.operators import KeyboardOperator, OperatorInput
from test_runtime import FakeEnv, make_loop


class HoldCountingEnv(FakeEnv):
    """FakeEnv that counts ``hold()`` calls and never ends by itself."""

    def __init__(self, **kw):
        super().__init__(horizon=10_000, **kw)
        self.holds = 0

    def hold(self):
        self.holds += 1


class ScriptOperator:
    """Returns the scripted inputs in order (then the quiet input); records how often it was asked."""

    def __init__(self, script):
        self.script, self.asked = list(script), 0

    def reset(self, task):
        pass

    def observe(self, obs, policy_action, info):
        self.asked += 1
        return self.script.pop(0) if self.script else OperatorInput()


QUIET, SUCCESS, FAILURE = OperatorInput(), OperatorInput(event="success"), OperatorInput(event="failure")


@pytest.mark.parametrize("event, reward", [("success", 1.0), ("failure", 0.0)])
def test_success_and_failure_end_the_episode_with_the_persons_reward(event, reward):
    env = HoldCountingEnv()
    loop = make_loop(env, operator=ScriptOperator([QUIET, QUIET, OperatorInput(event=event)]))
    rec = loop.run_episode()
    assert rec.length == 3 == len(env.actions)  # the step the signal came with is executed, then the episode ends
    assert rec.rows[K.REWARD].tolist() == [0.0, 0.0, reward] and rec.rows[K.DONE].tolist() == [0.0, 0.0, 1.0]
    assert rec.success is (event == "success")


def test_rerecord_drops_the_take_and_records_it_again(tmp_path):
    env = HoldCountingEnv()
    session = SessionWriter(tmp_path / "s", fps=10, robot="fake", action_dim=4, translation_scale_m=0.01)
    sent = []
    script = [QUIET, QUIET, OperatorInput(event="rerecord"), QUIET, SUCCESS]
    loop = make_loop(env, operator=ScriptOperator(script), log_episode=session.episode)
    loop.transport.send_episode = lambda rec: sent.append(rec)
    rec = loop.run_episode()
    assert len(sent) == 1 and sent[0] is rec and rec.length == 2  # only the second take reaches the learner
    assert len(env.actions) == 2 + 2  # the first take's two steps were executed, the re-record step was not
    session.close()
    kept = sorted(p.name for p in (tmp_path / "s" / EPISODES_DIR).iterdir())
    aside = sorted(p.name for p in (tmp_path / "s" / DISCARDED_DIR).iterdir())
    assert len(kept) == 1 and len(aside) == 1 and kept != aside  # the first take is kept aside, not deleted
    assert len((tmp_path / "s" / DISCARDED_DIR / aside[0] / STEPS_FILE).read_text().splitlines()) == 2
    assert "re-record" in (tmp_path / "s" / DISCARDED_DIR / aside[0] / "reason.txt").read_text()
    assert loop.stats.rerecorded == 1 and loop.stats.episodes == 1


def test_the_estop_sends_nothing_and_holds_until_released():
    """The e-stop at step 2: that step's action is not sent (motion stops within the period), the robot is held
    every period while engaged, and the episode goes on only once it is released."""
    env = HoldCountingEnv()
    engaged = OperatorInput(estop=True)
    op = ScriptOperator([QUIET, QUIET, engaged, engaged, engaged, QUIET, QUIET, SUCCESS])
    sleeps = []
    loop = make_loop(env, operator=op, sleep=sleeps.append)
    rec = loop.run_episode()
    # observe calls: 2 steps, the e-stop, 2 more engaged (held), the release, then 2 steps (the second succeeds)
    assert len(env.actions) == 4 == rec.length
    assert env.holds == 3 and len(sleeps) == 3  # one hold per control period while engaged
    assert op.asked == 8 and loop.stats.estops == 1


def test_pause_holds_until_the_second_pause_and_a_real_robot_waits_for_the_person():
    env = HoldCountingEnv()
    pause = OperatorInput(event="pause")
    loop = make_loop(env, operator=ScriptOperator([QUIET, pause, QUIET, QUIET, pause, SUCCESS]), sleep=lambda s: None)
    rec = loop.run_episode()
    assert rec.length == 2 and env.holds == 3  # held through two quiet looks and the resuming pause
    # wait_for_operator: after the reset (home) the robot holds until the person resumes
    env = HoldCountingEnv()
    loop = make_loop(env, operator=ScriptOperator([QUIET, QUIET, pause, SUCCESS]), sleep=lambda s: None,
                     wait_for_operator=True)
    rec = loop.run_episode()
    assert rec.length == 1 and env.holds == 3 and len(env.actions) == 1


def test_keyboard_event_keys_and_the_estop_key():
    keys = queue.Queue()
    op = KeyboardOperator(keys=keys)
    op.reset("t")
    policy = np.array([0.1, 0.2, 0.3, 0.5], dtype=np.float32)
    for k in ("w", "g"):
        keys.put(k)
    inp = op.observe(np.zeros(6), policy, {})
    assert inp.event == "success" and inp.intervening and not inp.estop  # the motion key still acts this step
    keys.put("b")
    keys.put("n")  # a second event in one step waits for the next
    assert op.observe(np.zeros(6), policy, {}).event == "failure"
    assert op.observe(np.zeros(6), policy, {}).event == "rerecord"
    keys.put("k")
    keys.put("w")
    inp = op.observe(np.zeros(6), policy, {})
    assert inp.estop and not inp.intervening and inp.action is None  # engaged: no action, whatever is pressed
    assert op.observe(np.zeros(6), policy, {}).estop  # latched
    keys.put("k")
    assert not op.observe(np.zeros(6), policy, {}).estop  # released
    with pytest.raises(ValueError, match="keys bound twice"):
        KeyboardOperator(keys=keys, event_keys={"w": "success"})
    with pytest.raises(ValueError, match="events are"):
        KeyboardOperator(keys=keys, event_keys={"y": "done"})


def test_spacemouse_event_buttons_fire_on_the_press():
    from test_operators import FakeSpaceMouse

    from dual_actor.runtime.operators import SpaceMouseOperator

    dev = FakeSpaceMouse(n_buttons=4)
    op = SpaceMouseOperator(device=dev, event_buttons={2: "success", 3: "pause"})
    op.reset("t")
    policy = np.array([0.1, 0.2, 0.3, 0.5], dtype=np.float32)
    dev.push(buttons=[0, 0, 1, 0])
    inp = op.observe(np.zeros(6), policy, {})
    assert inp.event == "success" and not inp.intervening
    assert op.observe(np.zeros(6), policy, {}).event is None  # still held: one event per press
    dev.push(buttons=[0, 0, 0, 1])
    assert op.observe(np.zeros(6), policy, {}).event == "pause"
    with pytest.raises(ValueError, match="event_buttons"):
        SpaceMouseOperator(device=dev, event_buttons={0: "success"})  # a gripper button


def test_operator_input_checks_its_event():
    with pytest.raises(ValueError, match="event must be one of"):
        OperatorInput(event="done")
    assert OperatorInput(estop=1).estop is True
