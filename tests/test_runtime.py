"""Control loop, in-process transport and the streaming interaction (Algorithm 1, online)."""

from dataclasses import dataclass

import numpy as np
import torch

from data_tools.talk_tweak import NULL_COMMAND, label_episode
from dual_actor import constants as K
from dual_actor.data.buffers import TaskBuffers
from dual_actor.data.datamodule import BufferSampler
from dual_actor.policy import DualActorPolicy
from dual_actor.data.interaction import Interaction
from dual_actor.runtime.loop import ControlLoop, hold_action
from dual_actor.runtime.transport import InProcessTransport
from factories import TASKS, tiny_policy_kwargs


class FakeEnv:
    """6-d state; the action's first 2 dims move state[0:2]; success after `horizon` steps if
    `succeed`, else truncated."""

    cameras = ()

    def __init__(self, horizon=12, succeed=True, seed=0):
        self.horizon, self.succeed = horizon, succeed
        self.rng = np.random.default_rng(seed)
        self.actions = []
        self.t = 0

    def images(self):
        return {}

    @property
    def elapsed_steps(self):
        return self.t

    def close(self):
        pass

    def reset(self):
        self.t = 0
        self.s = self.rng.normal(size=6).astype(np.float32)
        return self.s.copy()

    def step(self, a):
        self.actions.append(np.array(a))
        self.t += 1
        self.s[:2] += 0.1 * np.asarray(a[:2])
        self.s[2:] = self.rng.normal(size=4)
        done = self.t >= self.horizon
        term = done and self.succeed
        return self.s.copy(), float(term), term, done and not term, {}


@dataclass(frozen=True)
class Human:
    intervening: bool
    action: np.ndarray | None
    command: str | None = None


class ScriptedOperator:
    """Intervenes on steps [3, 9) with a known action sequence."""

    def __init__(self):
        self.rng = np.random.default_rng(1)

    def reset(self, task):
        self.t = 0

    def observe(self, obs, policy_action, info):
        t = self.t
        self.t += 1
        if 3 <= t < 9:
            return Human(True, self.rng.normal(scale=0.3, size=4).astype(np.float32))
        return Human(False, None)


def make_loop(env, transport=None, **kw):
    torch.manual_seed(0)
    policy = DualActorPolicy(**tiny_policy_kwargs())
    return ControlLoop(env, TASKS[0], policy, kw.pop("operator", ScriptedOperator()), transport or InProcessTransport(),
                       proprio_slice=slice(0, 2), translation_scale_m=0.01, **kw)


def test_runtime_labels_equal_label_episode_and_rows():
    env = FakeEnv(horizon=12)
    loop = make_loop(env, label="action")  # Eq. 12 as printed; the default (correction): the tests below
    rec = loop.run_episode()
    acts = np.stack(env.actions)
    intv = np.array([3 <= t < 9 for t in range(12)])
    assert rec.rows[K.INTERVENTION].numpy().tolist() == intv.tolist()
    assert rec.extra["commands"] == label_episode(acts, intv, window=5, translation_scale_m=0.01)
    assert rec.rows[K.COMMAND].tolist() == loop.policy.command_ids(rec.extra["commands"]).tolist()
    r = rec.rows
    assert torch.equal(r[K.NEXT_OBS][:-1], r[K.OBS][1:]) and torch.equal(r[K.NEXT_H][:-1], r[K.H][1:])
    assert r[K.DONE].tolist() == [0.0] * 11 + [1.0] and rec.success
    assert torch.allclose(r[K.H], loop.policy.embed(r[K.OBS], [TASKS[0]] * 12))
    assert np.allclose(r[K.ACTION].numpy(), acts)
    assert transport_has(loop.transport, 1)


def test_runtime_correction_labels_and_logged_proposals(tmp_path):
    """label="correction": the window sums executed - proposed; the teleop log keeps the proposal on
    intervened steps too, so a converted dataset can be relabelled either way."""
    from data_tools.teleop_log import SessionWriter, read_session

    env = FakeEnv(horizon=12)
    with SessionWriter(tmp_path / "s", fps=10, action_dim=4, translation_scale_m=0.01) as w:
        loop = make_loop(env, label="correction", log_episode=w.episode)
        rec = loop.run_episode("e0")
    acts, pol = np.stack(env.actions), np.stack(rec.extra["policy_actions"])
    intv = np.array([3 <= t < 9 for t in range(12)])
    corr = label_episode(acts - pol, intv, window=5, translation_scale_m=0.01)
    assert rec.extra["commands"] == corr
    assert corr != label_episode(acts, intv, window=5, translation_scale_m=0.01)  # the scripted takeover
    log = read_session(tmp_path / "s").read_episode("e0")
    assert log.has_policy_action.all()
    np.testing.assert_allclose(log.policy_actions, pol, atol=1e-6)


def test_converted_teleop_log_holds_the_commands_the_run_trained_on(tmp_path):
    """One default label source: a ControlLoop at its default (the run's online labeller), its teleop log converted
    with ``data_tools convert`` at its default, gives every step the command the run's buffer rows hold; relabelling
    the dataset at the defaults changes nothing. The commands are correction labels (executed - proposed)."""
    from data_tools import curate
    from data_tools.convert import convert
    from data_tools.hdf5_format import dataset_info, read_episodes
    from data_tools.talk_tweak import DEFAULT_LABEL
    from data_tools.teleop_log import SessionWriter

    env = FakeEnv(horizon=12)
    with SessionWriter(tmp_path / "s", fps=10, action_dim=4, translation_scale_m=0.01) as w:
        loop = make_loop(env, log_episode=w.episode)
        records = [loop.run_episode("e0"), loop.run_episode("e1")]
    acts, pol = np.stack(env.actions[:12]), np.stack(records[0].extra["policy_actions"])
    intv = np.array([3 <= t < 9 for t in range(12)])
    corr = label_episode(acts - pol, intv, window=5, translation_scale_m=0.01)
    assert records[0].extra["commands"] == corr != label_episode(acts, intv, window=5, translation_scale_m=0.01)
    convert([tmp_path / "s"], tmp_path / "ds.hdf5", progress=False)
    episodes = list(read_episodes(tmp_path / "ds.hdf5", load_images=False))
    assert [e.episode_id for e in episodes] == ["s/e0", "s/e1"]
    for rec, ep in zip(records, episodes):
        assert ep.refinement_command == rec.extra["commands"]
        assert loop.policy.command_ids(ep.refinement_command).tolist() == rec.rows[K.COMMAND].tolist()
        assert ep.intervention.tolist() == rec.rows[K.INTERVENTION].tolist()
    assert dataset_info(tmp_path / "ds.hdf5").env_args["talk_tweak"]["label"] == DEFAULT_LABEL == "correction"
    stats = curate.relabel(tmp_path / "ds.hdf5", tmp_path / "again.hdf5")
    assert stats["intervened_steps"] == 12 and stats["changed"] == 0


def transport_has(transport, n):
    return len(transport.poll_episodes()) == n


def test_overrun_holds_instead_of_stale_action():
    env = FakeEnv(horizon=6)
    ticks = iter(np.arange(0, 100, 0.3))  # every clock read advances 0.3 s: inference overruns 0.1 s
    loop = make_loop(env, operator=None, period_s=0.1, clock=lambda: next(ticks), sleep=lambda s: None)
    rec = loop.run_episode()
    assert rec.overruns == 6
    for a in env.actions:
        assert np.array_equal(a, hold_action(None, 4))  # zero motion (no previous gripper command yet)
    prev = np.array([0.2, -0.1, 0.3, 0.7], np.float32)
    assert hold_action(prev, 4).tolist() == [0, 0, 0, pytest_approx(0.7)]


def pytest_approx(x):
    import pytest

    return pytest.approx(x)


def test_truncated_episode_keeps_last_transition_not_done():
    env = FakeEnv(horizon=5, succeed=False)
    rec = make_loop(env, operator=None).run_episode()
    assert rec.length == 5 and not rec.success and rec.rows[K.DONE].sum() == 0


def test_interaction_fills_buffers_per_algorithm_1_and_weights_sync():
    transport = InProcessTransport()
    buffers = TaskBuffers(TASKS)
    torch.manual_seed(0)
    policy = DualActorPolicy(**tiny_policy_kwargs())
    loops = [ControlLoop(FakeEnv(horizon=10, seed=i), t, policy, ScriptedOperator(), transport,
                         proprio_slice=slice(0, 2)) for i, t in enumerate(TASKS)]
    inter = Interaction(loops, transport, buffers, env_steps_per_update=5, min_rollout=12, max_env_steps=200)
    sampler = BufferSampler(buffers, batch_size=12, phase="online", min_rollout=12, before_batch=inter.before_batch)
    it = iter(sampler)
    batch = next(it)
    # 12 rollouts per task need 3 episodes each (4 autonomous steps of 10); 6 intervened per episode
    sizes = buffers.sizes()
    for t in TASKS:
        assert sizes[t]["rollouts"] >= 12
        assert sizes[t]["interventions"] == sizes[t]["demos"] == 6 * (sizes[t]["rollouts"] // 4)
    assert sizes["talk_tweak"]["all"] == sum(sizes[t]["interventions"] for t in TASKS)
    assert [len(s[K.H]) for s in batch[K.TASKS]] == [4, 4, 4] and len(batch[K.TALK_TWEAK][K.H]) == 12
    assert inter.env_steps == 90 + 10  # 9 episodes to fill, then 5 credits buy one 10-step episode
    next(it)  # credit -5 + 5 = 0: no episode
    assert inter.env_steps == 100
    next(it)  # credit 5: one more
    assert inter.env_steps == 110
    # weight sync: the actor's policy takes the published weights
    new = {k: torch.zeros_like(v) for k, v in policy.state_dict().items()}
    transport.publish_weights(new, version=7)
    loops[0].sync_weights()
    assert loops[0].weights_version == 7 and all(float(v.abs().sum()) == 0 for v in policy.state_dict().values())
    # buffers survive a state_dict round trip, row for row
    state = inter.state_dict()
    other = Interaction(loops, transport, TaskBuffers(TASKS))
    other.load_state_dict(state)
    assert other.buffers.sizes() == buffers.sizes() and other.env_steps == inter.env_steps
    for t in TASKS:
        for kind, buf in buffers[t].items():
            got = other.buffers[t][kind].all()
            assert all(torch.equal(v, got[k]) for k, v in buf.all().items()), (t, kind)


class ScriptedClock:
    """Time moves only when the loop's work happens: inference (``infer[i]`` s), env step (``env[i]`` s), and
    ``sleep`` (recorded)."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def test_10hz_loop_on_time_sleeps_late_holds_and_counts_overruns_exactly():
    import pytest

    period = 0.1
    infer = [0.02, 0.15, 0.03, 0.12, 0.13, 0.01]  # steps 1, 3, 4: inference alone overruns the period
    env_s = [0.01, 0.01, 0.09, 0.01, 0.01, 0.01]  # step 2: on time for acting, but the env step overruns
    clock = ScriptedClock()
    env = FakeEnv(horizon=6)
    real_step = env.step

    def timed_step(a):
        clock.now += env_s[len(env.actions)]
        return real_step(a)

    env.step = timed_step
    loop = make_loop(env, operator=None, period_s=period, clock=clock, sleep=clock.sleep)
    with torch.no_grad():
        for p in loop.policy.primary.parameters():
            p.add_(0.3 * torch.randn_like(p))  # a policy whose gripper command is clearly nonzero
    proposed = []
    real_act = loop._policy_action

    def timed_act(observation, command):
        clock.now += infer[len(proposed)]
        a, h = real_act(observation, command)
        proposed.append(a.copy())
        return a, h

    loop._policy_action = timed_act
    rec = loop.run_episode()
    sent = [np.asarray(a, np.float32) for a in env.actions]
    late = [d > period for d in infer]
    prev = None
    for i, (a, pa) in enumerate(zip(sent, proposed)):
        if late[i]:  # zero motion, the gripper keeps the previous real action's command
            want = np.zeros(4, np.float32)
            if prev is not None:
                want[-1] = prev[-1]
            assert np.array_equal(a, want), (i, a, want)
        else:
            assert np.allclose(a, np.clip(pa, -1, 1)), i  # the policy's own action is sent
        prev = a
    assert abs(sent[3][-1]) > 0.05 and sent[3][-1] == sent[2][-1] == proposed[2][-1]  # held through 3 and 4
    assert sent[4][-1] == sent[2][-1]
    # sleeps: only on-time steps, exactly the rest of the period (steps 0 and 5)
    assert clock.sleeps == [pytest.approx(period - 0.03), pytest.approx(period - 0.02)]
    assert rec.overruns == 4 and loop.stats.overruns == 4  # steps 1, 2, 3, 4


def test_spacemouse_reporting_without_pause_does_not_starve_the_loop():
    from dual_actor.runtime.operators import SpaceMouseOperator

    class Chatty:
        """A device with a new report on every read, forever (t always new)."""

        def __init__(self):
            self.reads = 0

        def read(self):
            self.reads += 1
            return type("S", (), {"t": float(self.reads), "x": 0.001 * self.reads, "y": 0.0, "z": 0.0, "roll": 0.0,
                                  "pitch": 0.0, "yaw": 0.0, "buttons": [0, 0]})()

    dev = Chatty()
    op = SpaceMouseOperator(device=dev, max_reads=7, deadzone=0.0)
    op.reset("t")
    inp = op.observe(np.zeros(39), np.zeros(4, np.float32), {})
    assert dev.reads == 7  # returns after max_reads reads
    assert inp.intervening and inp.action[1] != 0.0  # with the latest of them (x -> action y in the robot frame)
    op.observe(np.zeros(39), np.zeros(4, np.float32), {})
    assert dev.reads == 14


def test_build_loops_robot_b_is_shifted_and_seeded_apart():
    """Robot 0 is the bench as configured (the one-robot seeds); robot 1 is robot B: its envs are seen through
    env.robot_shift, its operator watches the world, its env seeds are 100 apart."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from dual_actor.runtime.robot import build_loops, robot_name
    from dual_actor.runtime.safety import SafeEnv
    from dual_actor.runtime.sim import MetaworldTaskEnv, ShiftedEnv, ShiftedOperator
    from dual_actor.runtime.transport import InProcessTransport
    from factories import tiny_policy_kwargs
    from dual_actor.policy import DualActorPolicy

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke"])
    policy = DualActorPolicy(**tiny_policy_kwargs(tasks=list(cfg.env.tasks), obs_dim=39, proprio_dim=4, action_dim=4))
    a = build_loops(cfg, policy, InProcessTransport(), index=0)
    b = build_loops(cfg, policy, InProcessTransport(), index=1, name=robot_name(1, cfg))
    try:
        assert [robot_name(i, cfg) for i in range(4)] == ["A", "B", "A2", "B2"]
        # every env behind the safety layer (in the robot's own frame), robot B's seen through its shift
        assert all(isinstance(l.env, SafeEnv) and isinstance(l.env.env, MetaworldTaskEnv) for l in a)
        assert all(isinstance(l.env, ShiftedEnv) and isinstance(l.env.env, SafeEnv) for l in b)
        assert all(isinstance(l.operator, ShiftedOperator) for l in b)
        assert [l.env.seed for l in a] == [int(cfg.online.seed) + i for i in range(3)]
        assert [l.env.env.seed for l in b] == [int(cfg.online.seed) + 100 + i for i in range(3)]
        assert [l.actor_id for l in a] == ["sim-0", "sim-1", "sim-2"] and b[0].actor_id == "B-0"
        world = b[0].env.env.reset()
        seen = b[0].env.shift.observation(world)
        assert not np.allclose(seen[:3], world[:3])  # B reads its hand elsewhere
    finally:
        for l in a + b:
            l.env.close()


class TalkingOperator(ScriptedOperator):
    """ScriptedOperator's take-over on steps [3, 9), and it speaks: "move left" on steps 0-1 (the policy acts), also
    on step 4 (while taking over), the null command on step 10."""

    def observe(self, obs, policy_action, info):
        t, human = self.t, super().observe(obs, policy_action, info)
        command = {0: "move left", 1: "move left", 4: "move left", 10: NULL_COMMAND}.get(t)
        return Human(human.intervening, human.action, command)


def test_operator_effort_counts_steps_taken_over_and_spoken_apart():
    """Per episode (12 steps): taken over 6 (steps 3-8); spoken 2 (steps 0-1: a command while the policy acts; step
    4 is a take-over step, step 10's null command is silence); effort 8. Two tasks' episodes sum per task, and the
    counts survive the interaction's checkpoint."""
    transport = InProcessTransport()
    torch.manual_seed(0)
    policy = DualActorPolicy(**tiny_policy_kwargs())
    loops = [ControlLoop(FakeEnv(horizon=12, seed=i), t, policy, TalkingOperator(), transport,
                         proprio_slice=slice(0, 2)) for i, t in enumerate(TASKS[:2])]
    inter = Interaction(loops, transport, TaskBuffers(TASKS))
    for _ in range(3):  # task 0, task 1, task 0
        inter.run_episode()
    assert (loops[0].stats.interventions, loops[0].stats.spoken) == (12, 4)
    want = {TASKS[0]: {"env_steps": 24, "takeover_steps": 12, "spoken_steps": 4, "effort_steps": 16},
            TASKS[1]: {"env_steps": 12, "takeover_steps": 6, "spoken_steps": 2, "effort_steps": 8}}
    totals = inter.effort.totals()
    assert totals == {"env_steps": 36, "takeover_steps": 18, "spoken_steps": 6, "effort_steps": 24, "per_task": want}
    assert inter.pop_stats()["effort/effort_steps"] == 24.0
    other = Interaction(loops, transport, TaskBuffers(TASKS))
    other.load_state_dict(inter.state_dict())
    assert other.effort.totals() == totals
