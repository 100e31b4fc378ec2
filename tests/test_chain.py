"""Long-horizon chains (paper RQ4): hand carried, stop at the first failure, K=1 = the per-task protocol, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import metaworld  # noqa: F401  (a hard dependency: missing must fail, not skip)

from dual_actor.chain import SUBTASKS, chain_summary, evaluate_chain, format_chain_table
from dual_actor.eval import eval_seeds, evaluate
from dual_actor.eval.cli import main
from dual_actor.policy import DualActorPolicy
from dual_actor.runtime.operators import OperatorInput
from dual_actor.runtime.sim import HAND_TOLERANCE, MetaworldTaskEnv, ScriptedExpert
from factories import tiny_policy_kwargs

PLACE, PICK, ASSEMBLE = SUBTASKS


def bench_policy(tasks=SUBTASKS, seed: int = 0) -> DualActorPolicy:
    """A tiny random policy on the bench's 39-d state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DualActorPolicy(**tiny_policy_kwargs(tasks=list(tasks), obs_dim=39, proprio_dim=4))


def expert_policy(fails=lambda task, obs: False) -> DualActorPolicy:
    """A bench policy that acts as Metaworld's noise-free scripted expert of the instructed task, and
    with zeros (a sure failure) in episodes where ``fails(task, obs)``: a function of the goal only."""
    pol = bench_policy()
    experts = {t: ScriptedExpert(t, noise=0.0) for t in SUBTASKS}
    current: list[str] = []
    embed = pol.embed

    def instructed(observation, tasks):
        current[:] = tasks
        return embed(observation, tasks)

    def act(h, obs, proprio, commands=None):
        o, task = obs[0].numpy(), current[0]
        return torch.zeros(1, 4) if fails(task, o) else torch.from_numpy(experts[task].act(o))[None]

    pol.embed, pol.act = instructed, act
    return pol


def recorder(log: list):
    """A ``make_env`` building the real bench env that logs every reset as an episode record."""

    class RecordingEnv(MetaworldTaskEnv):
        def reset(self, hand_pos=None):
            obs = super().reset(hand_pos) if hand_pos is not None else super().reset()
            self.ep = {"task": self.task, "hand_pos": None if hand_pos is None else np.array(hand_pos),
                       "start": obs.copy(), "end": obs.copy(), "steps": 0, "success": False}
            log.append(self.ep)
            return obs

        def step(self, action):
            obs, r, terminated, truncated, info = super().step(action)
            self.ep.update(end=obs.copy(), steps=self.ep["steps"] + 1, success=terminated)
            return obs, r, terminated, truncated, info

    return RecordingEnv


def default_start(task: str) -> np.ndarray:
    """The 4 proprio entries (hand xyz, gripper opening) at a plain reset of ``task``'s scene."""
    with MetaworldTaskEnv(task, seed=0) as env:
        return env.reset()[:4]


def split_chains(log: list, result: dict) -> list[list[dict]]:
    """The episodes that ran (stepped), grouped by chain."""
    ran = iter([e for e in log if e["steps"] > 0])
    return [[next(ran) for _ in c["outcomes"]] for c in result["chains"]]


# ----------------------------------------------------------------------------------- the hand hook
def test_reset_with_hand_pos_moves_only_the_hand():
    target = np.array([-0.08, 0.72, 0.11])
    with MetaworldTaskEnv(PICK, seed=3) as env, MetaworldTaskEnv(PICK, seed=3) as ref:
        base = ref.reset()
        obs = env.reset(hand_pos=target)
        assert np.linalg.norm(obs[:3] - target) <= HAND_TOLERANCE
        assert env.hand_start_error == pytest.approx(np.linalg.norm(obs[:3] - target), abs=1e-6)  # obs is float32
        assert np.linalg.norm(base[:3] - target) > 5 * HAND_TOLERANCE
        # the configuration a plain reset draws (object and goal), the gripper opened as at a plain reset
        np.testing.assert_array_equal(obs[4:7], base[4:7])
        np.testing.assert_array_equal(obs[36:39], base[36:39])
        assert obs[3] == pytest.approx(base[3], abs=1e-3)
        assert env.episodes_started == 1
        # the env's own default start is restored for later resets
        np.testing.assert_allclose(env.reset()[:3], ref.reset()[:3], atol=1e-9)
        assert env.hand_start_error is None
        with pytest.raises(ValueError, match="hand_pos"):
            env.reset(hand_pos=[0.0, np.nan, 0.1])

        # a start right above the peg (tool centre within Metaworld's 3 cm x-z caging threshold of it, where its
        # dense reward raised 'margin must be non-negative'): the episode steps
        obs = env.reset(hand_pos=[0.0, 0.81, 0.07])
        assert np.linalg.norm((env.unwrapped.tcp_center - obs[4:7])[[0, 2]]) < 0.03
        assert np.isfinite(env.step(np.zeros(4))[4]["dense_reward"])

        # held back by the scene (the pick-up platform, hand z ~0.10): reported, and the mocap is put where the
        # hand is, so an upward action lifts it at once (4 steps: >1 cm; a mocap left inside the platform: ~0)
        obs = env.reset(hand_pos=[0.0, 0.6, 0.0])
        assert env.hand_start_error > 5 * HAND_TOLERANCE and obs[2] > 0.09
        for _ in range(4):
            last = env.step(np.array([0.0, 0.0, 1.0, 0.0]))[0]
        assert last[2] - obs[2] > 0.01


# ------------------------------------------------------------------------- (a) the hand is carried
def test_hand_is_carried_from_one_subtask_to_the_next():
    log: list = []
    res = evaluate_chain(expert_policy(), bolts=1, trials=2, max_episode_steps=200, make_env=recorder(log))
    carried = 0
    for chain in split_chains(log, res):
        assert chain[0]["task"] == PLACE and chain[0]["hand_pos"] is None
        np.testing.assert_allclose(chain[0]["start"][:3], default_start(PLACE)[:3], atol=1e-6)
        for prev, ep in zip(chain, chain[1:]):
            np.testing.assert_allclose(ep["hand_pos"], prev["end"][:3], atol=1e-6)  # where the last one left it
            assert np.linalg.norm(ep["start"][:3] - prev["end"][:3]) <= HAND_TOLERANCE
            default = default_start(ep["task"])
            assert np.linalg.norm(ep["start"][:3] - default[:3]) > 3 * HAND_TOLERANCE
            # the gripper opens at every sub-task start (it had closed on the bolt)
            assert prev["end"][3] < default[3] - 0.2 and ep["start"][3] == pytest.approx(default[3], abs=1e-3)
            carried += 1
    assert carried >= 2, "the scripted expert places the bolt in every trial: each chain carries the hand once"
    assert res["hand_carry"]["starts"] == carried and res["hand_carry"]["beyond_tolerance"] == 0


# ---------------------------------------------------------- (b) the chain stops at its first failure
class ScriptedEnv:
    """A stand-in bench env: the hand (obs[:3]) starts where asked (else at the origin) and moves +1 cm in x
    per step; an episode succeeds at its 2nd step unless (task, reset index) is in ``fail``, then it
    truncates at the step limit. The seed it is built at and every ``reseed`` (one env per task for the whole run) are logged."""

    def __init__(self, task, seed, max_episode_steps, cameras=(), image_size=128, *, fail, log):
        self.task, self.limit, self.fail, self.log = task, max_episode_steps, fail, log
        self.resets, self.t = 0, 0
        self.log.append(("seed", task, seed, None))  # built at a trial's seed ...

    def reseed(self, seed):
        self.log.append(("seed", self.task, seed, None))  # ... or put at the next one

    def reset(self, hand_pos=None):
        self.obs = np.zeros(39, np.float32)
        if hand_pos is not None:
            self.obs[:3] = hand_pos
        self.index, self.t = self.resets, 0
        self.resets += 1
        self.log.append(("reset", self.task, self.index, None if hand_pos is None else np.array(hand_pos)))
        return self.obs.copy()

    def step(self, action):
        self.t += 1
        self.obs[0] += 0.01
        self.log.append(("step", self.task, self.index, self.obs[:3].copy()))
        done = self.t >= 2 and (self.task, self.index) not in self.fail
        return self.obs.copy(), float(done), done, (not done) and self.t >= self.limit, {}

    @property
    def elapsed_steps(self):
        return self.t

    def close(self):
        pass


def test_chain_stops_at_its_first_failed_subtask():
    log: list = []
    # chain 0 fails the pick-up of its bolt 2 (pick's reset 1); chain 1 the assembly of its bolt 3 (assemble's reset
    # 3: one in chain 0, then bolts 1-3 of chain 1; a sub-task a chain does not reach is not reset)
    fail = {(PICK, 1), (ASSEMBLE, 3)}

    class Speaker:
        def __init__(self):
            self.resets = []

        def reset(self, task):
            self.resets.append(task)

        def observe(self, obs, policy_action, info):
            return OperatorInput(command=None)

    speaker = Speaker()
    res = evaluate_chain(bench_policy(), bolts=3, trials=2, max_episode_steps=4, speaker=speaker,
                         make_env=lambda **kw: ScriptedEnv(**kw, fail=fail, log=log))
    run0, run1 = [PLACE, PICK, ASSEMBLE, PLACE, PICK], [PLACE, PICK, ASSEMBLE] * 3
    assert [c["outcomes"] for c in res["chains"]] == [[True] * 4 + [False], [True] * 8 + [False]]
    assert [c["lengths"] for c in res["chains"]] == [[2, 2, 2, 2, 4], [2] * 8 + [4]]
    # no env is stepped after a failure: the stepped episodes are exactly those the chains ran, in order ...
    stepped = [(task, i) for kind, task, i, _ in log if kind == "step"]
    count = {t: 0 for t in SUBTASKS}
    ran = []
    for t in run0 + run1:
        ran.append((t, count[t]))
        count[t] += 1
    assert list(dict.fromkeys(stepped)) == ran
    assert speaker.resets == run0 + run1 and res["with_commands"]
    # ... each put, before its reset, at the chain's trial seed for that sub-task and bolt (test split: 10001, 10003)
    seeds = [(t, s) for kind, t, s, _ in log if kind == "seed"]
    bolts = [b for b in range(2) for _ in SUBTASKS][:5] + [b for b in range(3) for _ in SUBTASKS]
    assert seeds == [(t, eval_seeds(chain, t, stage=b)[0]) for chain, t, b in
                     zip([10_001] * 5 + [10_003] * 9, run0 + run1, bolts)]
    assert res["split"] == "test" and res["seeds"] == [10_001, 10_003]
    # the hand: each chain starts at the default; every later sub-task where the previous one ended
    starts = [(t, i, h) for kind, t, i, h in log if kind == "reset"]
    ran = set(stepped)
    ends = {(t, i): h for kind, t, i, h in log if kind == "step"}
    previous = None
    for t, i, h in starts:
        if (t, i) not in ran:
            continue
        if (t, i) in {(PLACE, 0), (PLACE, 2)}:
            assert h is None
        else:
            np.testing.assert_array_equal(h, ends[previous])
        previous = (t, i)
    # success for k = 1..3: the fraction of chains whose first k bolts all succeeded
    assert [(r["k"], r["successes"], r["success_rate"]) for r in res["success_at_k"]] == [
        (1, 2, 1.0), (2, 1, 0.5), (3, 0, 0.0)]
    assert res["per_subtask"] == {
        PLACE: {"reached": 5, "succeeded": 5, "success_rate": 1.0},
        PICK: {"reached": 5, "succeeded": 4, "success_rate": 0.8},
        ASSEMBLE: {"reached": 4, "succeeded": 3, "success_rate": 0.75},
    }
    assert [(s["bolt"], s["reached"], s["succeeded"]) for s in res["per_stage"]] == [
        (1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 1), (2, 1, 1), (3, 1, 1), (3, 1, 1), (3, 1, 0)]
    assert res["mean_subtasks_completed"] == 6.0 and res["hand_carry"]["max_error"] == pytest.approx(0.0, abs=1e-6)
    table = format_chain_table(res).splitlines()
    assert table[4].split() == ["2", "50.0%", "1/2"] and table[9].split() == ["pick", "up", "the", "bolt", "80.0%", "5"]
    assert json.loads(json.dumps(res)) == res

    with pytest.raises(ValueError, match="stops at its first failure"):
        chain_summary([{"outcomes": [False, True], "lengths": [4, 2]}], 1, 4, 0, True, False)
    with pytest.raises(ValueError, match="bolts"):
        evaluate_chain(bench_policy(), bolts=0)
    with pytest.raises(ValueError, match="not trained on"):
        evaluate_chain(bench_policy(tasks=[PLACE, PICK]), bolts=1)


# ------------------------------------------------- (c) K=1 without the carry = the per-task protocol
def test_one_bolt_without_carry_reproduces_evaluate_trial_by_trial():
    # the expert fails (acts with zeros) on about a third of the goals, differently per task
    salt = {PLACE: 0, PICK: 1, ASSEMBLE: 2}
    pol = expert_policy(fails=lambda task, o: int(np.abs(o[36:39]).sum() * 1000 + salt[task]) % 3 == 0)
    trials, steps = 8, 130
    chain_log: list = []
    res = evaluate_chain(pol, bolts=1, trials=trials, max_episode_steps=steps, carry_hand=False,
                         make_env=recorder(chain_log))
    eval_log: list = []
    per_task = evaluate(pol, list(SUBTASKS), trials=trials, max_episode_steps=steps, make_env=recorder(eval_log))
    per_trial = {t: [e for e in eval_log if e["task"] == t] for t in SUBTASKS}
    assert all(len(v) == trials for v in per_trial.values())
    chains = split_chains(chain_log, res)
    for j, (chain, outcomes) in enumerate(zip(chains, (c["outcomes"] for c in res["chains"]))):
        for i, (ep, ok) in enumerate(zip(chain, outcomes)):
            ref = per_trial[SUBTASKS[i]][j]
            assert ep["hand_pos"] is None
            np.testing.assert_array_equal(ep["start"], ref["start"])  # evaluate's trial-j configuration
            assert ok == ref["success"] and ep["steps"] == ref["steps"], (j, SUBTASKS[i])
    for t in SUBTASKS:  # the library's success rates agree with the logged outcomes
        assert per_task["per_task"][t]["success_rate"] == np.mean([e["success"] for e in per_trial[t]])
    # not trivial: a chain stopped before pick-up (and one before assembly) and a later one reached it
    reached = [len(c["outcomes"]) for c in res["chains"]]
    for i in (1, 2):
        first_short = next(j for j, n in enumerate(reached) if n <= i)
        assert any(n > i for n in reached[first_short + 1:]), reached
    assert {o for c in res["chains"] for o in c["outcomes"][1:]} == {True, False}
    assert res["success_at_k"][0]["success_rate"] == np.mean([sum(c["outcomes"]) == 3 for c in res["chains"]])


def test_sampling_policy_draws_each_subtask_from_evaluates_noise_stream():
    """A policy whose actions sample (plain head, temperature 1): the place episodes (reached by every chain) act
    with the noise of evaluate's place trials, and the caller's torch RNG is left where it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pol = DualActorPolicy(**tiny_policy_kwargs(obs_dim=39, proprio_dim=4), primary_head="plain", temperature=1.0)
    actions = {}
    real = pol.act
    for name in ("chain", "evaluate"):
        log = actions[name] = []

        def act(h, obs, proprio, commands=None, log=log):
            log.append(real(h, obs, proprio, commands))
            return log[-1]

        pol.act = act
        torch.manual_seed(123)
        if name == "chain":
            res = evaluate_chain(pol, bolts=1, trials=2, max_episode_steps=5, carry_hand=False)
        else:
            evaluate(pol, [PLACE], trials=2, max_episode_steps=5)
        after = torch.rand(2)
        torch.manual_seed(123)
        assert torch.equal(after, torch.rand(2)), "the caller's torch RNG is untouched"
    assert [c["outcomes"] for c in res["chains"]] == [[False], [False]]  # a random policy: place only, 5 steps each
    assert len(actions["chain"]) == 10 and torch.equal(torch.cat(actions["chain"]), torch.cat(actions["evaluate"]))


def test_expert_chains_act_the_scripted_expert_on_the_same_trials(tmp_path, capsys):
    """``evaluate_chain(None, expert=...)`` / ``eval --expert --chain K``: the operator's expert acts every sub-task.
    Derived independently: one bolt without the carry is, trial by trial, the noisy expert rolled out on the
    sub-task's env seed with its noise drawn from a generator seeded by the sub-task's torch seed."""
    trials, steps, noise = 4, 150, 0.5
    log: list = []
    res = evaluate_chain(None, bolts=1, trials=trials, max_episode_steps=steps, carry_hand=False, expert="metaworld",
                         expert_noise=noise, make_env=recorder(log))
    assert res["expert"] == "metaworld" and res["trials"] == trials
    for chain, trial_seed in zip(res["chains"], res["seeds"]):
        for task, ok, length in zip(SUBTASKS, chain["outcomes"], chain["lengths"]):
            env_seed, torch_seed = eval_seeds(trial_seed, task)
            expert = ScriptedExpert(task, noise=noise, rng=np.random.default_rng(torch_seed), variant="metaworld")
            with MetaworldTaskEnv(task, seed=env_seed, max_episode_steps=steps) as env:
                obs, done, n = env.reset(), False, 0
                while not done:
                    obs, _, terminated, truncated, _ = env.step(expert.act(obs))
                    done, n = terminated or truncated, n + 1
            assert (ok, length) == (bool(terminated), n), (trial_seed, task)
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_chain(bench_policy(), bolts=1, expert="corrected")
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_chain(None, bolts=1)
    out = tmp_path / "expert_chain.json"  # the CLI: the same call, the hand carried (the default)
    assert main(["--expert", "metaworld", "--chain", "2", "--trials", "2", "--max-episode-steps", "20",
                 "--out", str(out)]) == 0
    lib = evaluate_chain(None, 2, trials=2, max_episode_steps=20, expert="metaworld")
    assert json.loads(out.read_text()) == json.loads(json.dumps(lib)) and lib["carry_hand"]
    assert "success (first k bolts)" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- (d) CLI
def test_cli_chain_writes_json_and_rejects_bad_input(tmp_path, capsys):
    pol = bench_policy()
    pol.save_pretrained(tmp_path / "pol")
    out = tmp_path / "chain.json"
    assert main([str(tmp_path / "pol"), "--chain", "2", "--trials", "2", "--max-episode-steps", "5",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["bolts"] == 2 and res["trials"] == 2 and not res["with_commands"] and res["carry_hand"]
    rates = [r["success_rate"] for r in res["success_at_k"]]
    assert [r["k"] for r in res["success_at_k"]] == [1, 2] and rates == sorted(rates, reverse=True)
    lib = evaluate_chain(DualActorPolicy.from_pretrained(tmp_path / "pol"), 2, trials=2, max_episode_steps=5)
    assert res == json.loads(json.dumps(lib))  # the library call, the same trials
    assert "success (first k bolts)" in capsys.readouterr().out

    spoken = tmp_path / "spoken.json"
    assert main([str(tmp_path / "pol"), "--chain", "1", "--trials", "1", "--max-episode-steps", "3",
                 "--with-commands", "--out", str(spoken)]) == 0
    assert json.loads(spoken.read_text())["with_commands"] is True
    capsys.readouterr()

    bench_policy(tasks=[PLACE, PICK]).save_pretrained(tmp_path / "two_tasks")
    for args, says in (
        ([str(tmp_path / "pol"), "--chain", "0"], "--chain"),
        ([str(tmp_path / "pol"), "--chain", "-2"], "--chain"),
        ([str(tmp_path / "two_tasks"), "--chain", "1"], ASSEMBLE),
        ([str(tmp_path / "pol"), "--chain", "1", "--tasks", PLACE], "--tasks"),
    ):
        bad = tmp_path / "bad.json"
        assert main([*args, "--trials", "1", "--out", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and says in err
        assert not bad.exists()
