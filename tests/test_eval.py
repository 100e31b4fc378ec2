"""Evaluation protocol: schema, determinism, shared trials, expert vs zero policy, learning curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import metaworld  # noqa: E402,F401  (a hard dependency: missing must fail, not skip)

from dual_actor.eval import (  # noqa: E402
    LearningCurve,
    eval_seeds,
    evaluate,
    format_table,
    write_eval,
)
from dual_actor.eval.stats import wilson_interval  # noqa: E402
from dual_actor.policy import DualActorPolicy  # noqa: E402
from dual_actor.runtime.sim import (  # noqa: E402
    BENCH_TASKS,
    MetaworldTaskEnv,
    ScriptedExpert,
    task_seeds,
    rollout_expert,
)

TASKS = list(BENCH_TASKS)
PLACE = "place the bolt"


def tiny_policy(seed: int = 0) -> DualActorPolicy:
    torch.manual_seed(seed)
    return DualActorPolicy(
        tasks=TASKS, obs_dim=39, proprio_dim=4, action_dim=4, actor_hidden=[32], refine_hidden=[32],
        refine_proj_dim=16, text_encoder={"kind": "learned", "out_dim": 8}, obs_feature_dim=16,
    )


def recording_act(policy: DualActorPolicy, log: list) -> None:
    """Wrap ``policy.act`` to record (obs, commands, action) of every call."""
    real = policy.act

    def act(h, obs, proprio, commands=None):
        a = real(h, obs, proprio, commands=commands)
        log.append((obs[0].clone(), commands, a[0].clone()))
        return a

    policy.act = act


def test_schema_exact_and_eval_json(tmp_path):
    pol = tiny_policy()
    pol.train()
    res = evaluate(pol, ["pick-place-v3", "assemble the bolt"], trials=2, max_episode_steps=10,
                   online_steps=1234, intervention_rate=0.25)
    assert pol.training, "the policy's train/eval mode is restored"
    assert set(res) == {"per_task", "average_success_rate", "online_steps", "intervention_rate", "split", "seeds"}
    assert res["split"] == "test" and res["seeds"] == [10_001, 10_003]  # the final evaluation's trials by default
    assert list(res["per_task"]) == [PLACE, "assemble the bolt"]  # env names reported as task strings
    for r in res["per_task"].values():
        assert set(r) == {"success_rate", "mean_episode_length", "trials", "successes", "wilson_95"}
        assert type(r["success_rate"]) is float and type(r["mean_episode_length"]) is float
        assert type(r["trials"]) is int and r["trials"] == 2 and r["successes"] == 0
        assert r["wilson_95"][0] == 0.0 and r["wilson_95"][1] == pytest.approx(1.96 ** 2 / (2 + 1.96 ** 2), abs=1e-4)
        # a random tiny policy cannot solve these in 10 steps: every trial runs to the limit
        assert r["success_rate"] == 0.0 and r["mean_episode_length"] == 10.0
    assert type(res["average_success_rate"]) is float and res["average_success_rate"] == 0.0
    assert res["online_steps"] == 1234 and type(res["online_steps"]) is int
    assert res["intervention_rate"] == 0.25 and type(res["intervention_rate"]) is float

    path = write_eval(res, tmp_path / "run")
    assert path == tmp_path / "run" / "eval.json"
    assert json.loads(path.read_text()) == res
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json"], "no temp file left behind"
    res2 = dict(res, online_steps=99)
    write_eval(res2, tmp_path / "run")  # overwrite in place
    assert json.loads(path.read_text())["online_steps"] == 99

    table = format_table(res).splitlines()
    assert table[0].split() == ["task", "success", "mean", "length", "trials"]
    assert table[1].split() == ["place", "the", "bolt", "0.0%", "10.0", "2"]
    assert any(line.split() == ["average", "0.0%", "test"] for line in table)  # the split under the trials
    assert "online steps: 1234 (2.1 min at 10 Hz)" in table
    assert "intervention rate: 25.0%" in table
    assert not any(line.startswith("operator effort") for line in table)  # only a run's evaluation has one
    effort = format_table({**res, "takeover_steps": 300, "spoken_steps": 100, "effort_steps": 400}).splitlines()
    assert effort[-1] == "operator effort: 300 steps taken over + 100 spoken = 400 (32.4% of the online steps)"


def test_bad_arguments():
    pol = tiny_policy()
    with pytest.raises(ValueError, match="not trained on"):
        evaluate(DualActorPolicy(tasks=[PLACE], obs_dim=39, proprio_dim=4, action_dim=4, actor_hidden=[8],
                                 refine_hidden=[8], refine_proj_dim=4, text_encoder={"kind": "learned", "out_dim": 4}, obs_feature_dim=4),
                 ["assemble the bolt"], trials=1)
    with pytest.raises(ValueError, match="trials"):
        evaluate(pol, [PLACE], trials=0)
    with pytest.raises(ValueError, match="duplicate"):
        evaluate(pol, [PLACE, "pick-place-v3"], trials=1)
    with pytest.raises(KeyError, match="unknown task"):
        evaluate(pol, ["juggle the bolt"], trials=1)


def test_deterministic_shared_trials_and_rng_untouched():
    # Same seed, same weights -> identical observations, actions and result whatever the
    # caller's global RNG state; the caller's RNG is left where it was.
    runs = []
    for global_seed in (123, 456):
        pol, log = tiny_policy(0), []
        recording_act(pol, log)
        torch.manual_seed(global_seed)
        res = evaluate(pol, [PLACE], trials=2, max_episode_steps=8)
        after = torch.rand(3)
        torch.manual_seed(global_seed)
        assert torch.equal(after, torch.rand(3)), "evaluate must not consume the global torch RNG"
        runs.append((res, log))
    assert runs[0][0] == runs[1][0]
    assert len(runs[0][1]) == 16
    for (o1, _, a1), (o2, _, a2) in zip(runs[0][1], runs[1][1]):
        assert torch.equal(o1, o2) and torch.equal(a1, a2)

    # A different policy sees the same trial configurations (object + goal at each reset).
    starts = {}
    for name, pol in (("a", tiny_policy(0)), ("b", tiny_policy(7))):
        seen = []
        evaluate(pol, [PLACE], trials=3, max_episode_steps=4,
                 command_fn=lambda task, obs, step: seen.append(obs.copy()) if step == 0 else None)
        starts[name] = np.stack(seen)
    assert starts["a"].shape == (3, 39)
    np.testing.assert_array_equal(starts["a"], starts["b"])
    # ... which are, trial by trial, a fresh MetaworldTaskEnv at eval_seeds(trial seed), distinct from the demos'.
    fresh = []
    for trial_seed in (10_001, 10_003, 10_005):
        with MetaworldTaskEnv(PLACE, seed=eval_seeds(trial_seed, PLACE)[0]) as env:
            fresh.append(env.reset())
    np.testing.assert_array_equal(np.stack(fresh), starts["a"])
    with MetaworldTaskEnv(PLACE, seed=task_seeds(0, "pick-place-v3")[0]) as env:
        demo_first = env.reset()
    assert not np.allclose(demo_first[4:7], starts["a"][0, 4:7]) or not np.allclose(
        demo_first[36:39], starts["a"][0, 36:39]
    )
    # A different eval seed draws different configurations.
    seen = []
    evaluate(tiny_policy(0), [PLACE], trials=1, max_episode_steps=2, seed=1,
             command_fn=lambda task, obs, step: seen.append(obs.copy()) if step == 0 else None)
    assert not np.array_equal(seen[0], starts["a"][0])


def test_command_fn_drives_refinement_mode():
    pol, log = tiny_policy(), []
    recording_act(pol, log)
    calls = []

    def command_fn(task, obs, step):
        calls.append((task, step))
        return "move left" if step % 2 == 0 else None

    evaluate(pol, ["pick-place-v3"], trials=2, max_episode_steps=5, command_fn=command_fn)
    assert calls == [(PLACE, s) for s in range(5)] * 2
    assert [c for _, c, _ in log] == [["move left"], None, ["move left"], None, ["move left"]] * 2


def test_speaker_sees_the_primary_action_and_its_command_drives_refinement_mode():
    from dual_actor.runtime.operators import OperatorInput

    pol, log = tiny_policy(), []
    recording_act(pol, log)

    class Speaker:
        def __init__(self):
            self.resets, self.seen = [], []

        def reset(self, task):
            self.resets.append(task)

        def observe(self, obs, policy_action, info):
            self.seen.append(policy_action.copy())
            return OperatorInput(command="move up" if len(self.seen) % 3 == 1 else None)

    sp = Speaker()
    evaluate(pol, ["pick-place-v3"], trials=2, max_episode_steps=3, speaker=sp)
    assert sp.resets == [PLACE, PLACE] and len(sp.seen) == 6
    # every step acts in primary mode first; steps 1 and 4 (the speaker's 1st and 4th call) again with the command
    assert [c for _, c, _ in log] == [None, ["move up"], None, None, None, ["move up"], None, None]
    with pytest.raises(ValueError, match="not both"):
        evaluate(pol, ["pick-place-v3"], trials=1, max_episode_steps=2, speaker=sp, command_fn=lambda *a: None)


def test_scripted_expert_scores_one_and_zero_policy_scores_zero():
    # Primary actor replaced by the noise-free scripted expert: every trial succeeds, and the
    # mean length equals that of the same expert rolled out directly on the eval seed's env.
    pol = tiny_policy()
    expert = ScriptedExpert(PLACE, noise=0.0)
    pol.act = lambda h, obs, proprio, commands=None: torch.from_numpy(expert.act(obs[0].numpy()))[None]
    res = evaluate(pol, [PLACE], trials=3, max_episode_steps=200)
    lengths = []
    for trial_seed in res["seeds"]:
        with MetaworldTaskEnv(PLACE, seed=eval_seeds(trial_seed, PLACE)[0], max_episode_steps=200) as env:
            lengths.append(len(rollout_expert(env, ScriptedExpert(PLACE, noise=0.0)).actions))
    assert res["per_task"][PLACE] == {"success_rate": 1.0, "mean_episode_length": float(np.mean(lengths)),
                                      "trials": 3, "successes": 3, "wilson_95": list(wilson_interval(3, 3))}
    assert max(lengths) < 200
    assert res["average_success_rate"] == 1.0

    zero = tiny_policy()
    zero.act = lambda h, obs, proprio, commands=None: torch.zeros(1, 4)
    res0 = evaluate(zero, [PLACE], trials=3, max_episode_steps=60)
    assert res0["per_task"][PLACE] == {"success_rate": 0.0, "mean_episode_length": 60.0, "trials": 3,
                                       "successes": 0, "wilson_95": list(wilson_interval(0, 3))}


class FakeWriter:
    def __init__(self):
        self.calls = []

    def add_scalar(self, tag, value, global_step=None):
        self.calls.append((tag, value, global_step))


def _result(rates: dict[str, float], steps: int, irate: float) -> dict:
    return {
        "per_task": {t: {"success_rate": r, "mean_episode_length": 50.0, "trials": 4} for t, r in rates.items()},
        "average_success_rate": float(np.mean(list(rates.values()))),
        "online_steps": steps,
        "intervention_rate": irate,
    }


def test_learning_curve_json_png_tensorboard(tmp_path):
    curve = LearningCurve(tmp_path, fps=10)
    r0 = _result({PLACE: 0.5, "pick up the bolt": 0.25}, 0, 0.0)
    r1 = _result({PLACE: 1.0, "pick up the bolt": 0.75}, 3000, 0.2)
    curve.add(3000, r1)
    curve.add(0, r0)  # out of order: points are kept sorted by online steps
    data = json.loads((tmp_path / "learning_curve.json").read_text())
    assert data == {
        "fps": 10.0,
        "points": [
            {"online_steps": 0, "minutes": 0.0, "per_task": {PLACE: 0.5, "pick up the bolt": 0.25},
             "average_success_rate": 0.375, "intervention_rate": 0.0, "trials": 4},
            {"online_steps": 3000, "minutes": 5.0, "per_task": {PLACE: 1.0, "pick up the bolt": 0.75},
             "average_success_rate": 0.875, "intervention_rate": 0.2, "trials": 4},
        ],
    }
    # A resumed run reads the curve back; re-adding a step replaces that point.
    again = LearningCurve(tmp_path)
    assert again.points == data["points"]
    again.add(3000, _result({PLACE: 0.75, "pick up the bolt": 0.75}, 3000, 0.1))
    pts = json.loads((tmp_path / "learning_curve.json").read_text())["points"]
    assert [p["online_steps"] for p in pts] == [0, 3000] and pts[1]["per_task"][PLACE] == 0.75
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learning_curve.json"]

    # the final table beside the warm-up point: success per task then, and the change in points
    table = format_table(_result({PLACE: 0.75, "pick up the bolt": 0.5}, 3000, 0.1), warmup=pts[0]).splitlines()
    assert table[0].split()[-3:] == ["warm-up", "(4)", "change"]
    assert table[1].split()[-5:] == ["75.0%", "50.0", "4", "50.0%", "+25.0"]  # place: 0.5 -> 0.75
    assert table[2].split()[-2:] == ["25.0%", "+25.0"]  # pick up: 0.25 -> 0.5
    assert [ln.split() for ln in table if ln.startswith("average")] == [["average", "62.5%", "37.5%", "+25.0"]]
    assert format_table(_result({PLACE: 0.5}, 0, 0.0), warmup=dict(pts[0], trials=None)).splitlines()[0].split()[-2:] \
        == ["warm-up", "change"]

    png = again.plot()
    assert png == tmp_path / "learning_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert again.plot(tmp_path / "sub" / "c.png", title="run").exists()
    with pytest.raises(ValueError, match="no evaluations"):
        LearningCurve(tmp_path / "empty").plot()

    w = FakeWriter()
    LearningCurve.log_tensorboard(w, 3000, r1, step=4200)  # x-axis: the learner update; online steps beside it
    assert w.calls == [
        ("eval/success_place_the_bolt", 1.0, 4200),
        ("eval/success_pick_up_the_bolt", 0.75, 4200),
        ("eval/average_success", 0.875, 4200),
        ("eval/online_steps", 3000.0, 4200),
    ]


def test_cli_evaluates_a_saved_policy_and_rejects_a_missing_one(tmp_path, capsys):
    from dual_actor.eval.cli import main

    pol = tiny_policy()
    pol.save_pretrained(tmp_path / "pol")
    out = tmp_path / "res.json"
    assert main([str(tmp_path / "pol"), "--tasks", "place the bolt", "--trials", "2", "--max-episode-steps", "4",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    expect = evaluate(pol, ["place the bolt"], trials=2, max_episode_steps=4)
    assert res["per_task"] == expect["per_task"]  # same shared trials as the library call
    assert "place the bolt" in capsys.readouterr().out
    assert main([str(tmp_path / "nope")]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_on_a_folder_that_is_not_a_policy_is_one_error_line(tmp_path):
    """``python -m dual_actor.eval FOLDER`` on a run folder, a policy folder with a damaged config.json and a missing
    folder: exit 2 within seconds, one ``error:`` line naming the folder (no traceback), no --out written."""
    import os
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    tiny_policy().save_pretrained(run / "policy")
    (run / "config.yaml").write_text("seed: 0\n")
    broken = tmp_path / "broken"
    tiny_policy().save_pretrained(broken)
    cfg = json.loads((broken / "config.json").read_text())
    del cfg["obs_dim"]
    (broken / "config.json").write_text(json.dumps(cfg))
    cases = {
        run: f"error: {run}: not a policy folder (no config.json or model.safetensors; expected a save_pretrained "
             f"folder); a run folder's policy is {run / 'policy'}",
        broken: f"error: {broken}: not a loadable policy folder: ",
        run / "polcy": f"error: {run / 'polcy'}: no such policy folder",
    }
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for folder, want in cases.items():
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        out = tmp_path / "res.json"
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "dual_actor.eval", str(folder), "--trials", "1", "--out", str(out)],
                           capture_output=True, text=True, timeout=120, env=env)
        assert time.monotonic() - t0 < 60
        lines = r.stderr.splitlines()
        assert r.returncode == 2 and r.stdout == "" and len(lines) == 1, r.stderr
        assert lines[0].startswith(want) and "Traceback" not in r.stderr, lines[0]
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_expert_reference_runs_the_policy_trials(tmp_path, capsys):
    """``evaluate_expert`` / ``eval --expert``: the scripted expert alone on the very trials a policy gets. Derived
    independently: the noise-free expert rolled out on each task's eval-seed env, episode after episode; and a
    policy whose act() is that expert scores the same through ``evaluate``."""
    from dual_actor.eval import evaluate_expert
    from dual_actor.eval.cli import main

    res = evaluate_expert([PLACE, "assemble the bolt"], trials=3, max_episode_steps=120)
    for task in (PLACE, "assemble the bolt"):
        eps = []
        for trial_seed in (10_001, 10_003, 10_005):
            with MetaworldTaskEnv(task, seed=eval_seeds(trial_seed, task)[0], max_episode_steps=120) as env:
                eps.append(rollout_expert(env, ScriptedExpert(task, noise=0.0)))
        k = int(sum(e.dones[-1] for e in eps))
        want = {"success_rate": k / 3, "mean_episode_length": float(np.mean([len(e.actions) for e in eps])),
                "trials": 3, "successes": k, "wilson_95": list(wilson_interval(k, 3))}
        assert res["per_task"][task] == want, task
    pol = tiny_policy()
    expert = ScriptedExpert(PLACE, noise=0.0)
    pol.act = lambda h, obs, proprio, commands=None: torch.from_numpy(expert.act(obs[0].numpy()))[None]
    assert evaluate(pol, [PLACE], trials=3, max_episode_steps=120)["per_task"][PLACE] == res["per_task"][PLACE]
    out = tmp_path / "expert.json"
    assert main(["--expert", "--tasks", PLACE, "--trials", "3", "--max-episode-steps", "120", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["per_task"][PLACE] == res["per_task"][PLACE]
    dev = tmp_path / "expert_dev.json"  # --split dev: the dev trials, recorded as such
    assert main(["--expert", "--tasks", PLACE, "--trials", "2", "--max-episode-steps", "5", "--split", "dev",
                 "--out", str(dev)]) == 0
    assert json.loads(dev.read_text())["split"] == "dev" and json.loads(dev.read_text())["seeds"] == [10_000, 10_002]
    assert "intervention rate" not in capsys.readouterr().out
    for argv in ([], [str(tmp_path), "--expert"], ["--expert", "--with-commands"]):
        assert main(argv) == 2
        assert "error:" in capsys.readouterr().err
    # --out refuses an existing file before evaluating (nothing lost); --force overwrites it
    out.write_text("kept")
    base = ["--expert", "--tasks", PLACE, "--trials", "1", "--max-episode-steps", "5", "--out", str(out)]
    assert main(base) == 2
    assert f"error: --out {out}: exists" in capsys.readouterr().err and out.read_text() == "kept"
    assert main(base + ["--force"]) == 0
    assert json.loads(out.read_text())["per_task"][PLACE]["trials"] == 1
    assert main(base[:-1] + [str(tmp_path), "--force"]) == 2 and "is a directory" in capsys.readouterr().err


def test_expert_reference_default_is_the_operators_expert():
    """``eval --expert`` with no variant evaluates the default operator's expert (``corrected``), which differs from
    Metaworld's only on assemble; the simulated operator's code default matches conf/operator/simulated.yaml."""
    import inspect

    from hydra import compose, initialize_config_dir

    from dual_actor.eval.cli import main
    from dual_actor.runtime.operators import SimulatedOperator

    with initialize_config_dir(str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        conf = compose("config").operator  # the default run's simulated operator
    assert inspect.signature(SimulatedOperator).parameters["expert"].default == conf.expert == "corrected"
    calls = []
    import dual_actor.eval.cli as ev  # main looks evaluate_expert up in its own module

    real = ev.evaluate_expert
    ev.evaluate_expert = lambda *a, **k: calls.append(k["variant"]) or real(*a, **{**k, "trials": 1, "max_episode_steps": 2})
    try:
        assert main(["--expert", "--tasks", PLACE]) == 0 and main(["--expert", "metaworld", "--tasks", PLACE]) == 0
    finally:
        ev.evaluate_expert = real
    assert calls == ["corrected", "metaworld"]


def test_evaluate_takes_any_robot_env(tmp_path):
    """A non-Metaworld env following dual_actor/runtime/env.py: succeeds when the action's first dim is positive
    on 3 consecutive steps; the evaluator builds it through ``make_env`` and reads proprio as the first dims."""
    from dual_actor.policy import DualActorPolicy
    from dual_actor.runtime.env import RobotEnv
    from factories import tiny_policy_kwargs

    made = []

    class LineEnv:
        cameras = ("cam",)

        def __init__(self, task, seed, max_episode_steps, cameras=(), image_size=128):
            self.task, self.seed, self.limit, self.t, self.streak = task, seed, max_episode_steps, 0, 0
            made.append(self)

        def reset(self):
            self.t = self.streak = 0
            return np.full(6, 0.5, np.float32)

        def step(self, a):
            self.t += 1
            self.streak = self.streak + 1 if a[0] > 0 else 0
            done = self.streak >= 3
            return np.full(6, 0.5, np.float32), float(done), done, (not done) and self.t >= self.limit, {}

        def images(self):
            return {"cam": np.full((8, 8, 3), self.t, np.uint8)}

        @property
        def elapsed_steps(self):
            return self.t

        def close(self):
            self.closed = True

    assert isinstance(LineEnv("a", 0, 5), RobotEnv)
    torch.manual_seed(0)
    pol = DualActorPolicy(**{**tiny_policy_kwargs(tasks=["reach", "push"]), "cameras": ["cam"], "image_size": 8})
    with torch.no_grad():
        bias = pol.primary.mean_net[-1].bias
        bias.zero_()
        bias[0] = 5.0  # action dim 0 clipped to +1 everywhere: succeeds in 3 steps
    made.clear()
    frames = {}
    res = evaluate(pol, ["reach", "push"], trials=2, max_episode_steps=10, make_env=LineEnv, frames=frames)
    assert res["per_task"]["reach"] == {"success_rate": 1.0, "mean_episode_length": 3.0, "trials": 2,
                                        "successes": 2, "wilson_95": list(wilson_interval(2, 2))}
    # an env that cannot be reseeded is built afresh for every trial, at the trial's env seed, and closed
    assert [e.task for e in made] == ["reach", "reach", "push", "push"] and all(e.closed for e in made)
    assert [e.seed for e in made[:2]] == [eval_seeds(s, "reach")[0] for s in (10_001, 10_003)]  # keyed by the task
    # string off the bench
    # rollout frames for TensorBoard: the first trial of each task, every FRAME_EVERY steps (3-step episodes: one)
    assert sorted(frames) == ["push", "reach"] and [f.shape for f in frames["reach"]] == [(8, 8, 3)]


def test_dev_and_test_trials_never_share_a_seed_or_a_scene():
    """``trial_seeds``: dev ``seed + 2i``, test ``seed + 2i + 1`` (hand-written), disjoint for any count; the scenes
    the two splits start from differ; each result records its split and seeds; a bad split is refused."""
    from dual_actor.eval import trial_seeds

    assert trial_seeds("dev", 3) == [10_000, 10_002, 10_004] and trial_seeds("test", 3) == [10_001, 10_003, 10_005]
    assert trial_seeds("test", 2, seed=7) == [8, 10] and trial_seeds("dev", 0) == []
    for n in (1, 10, 25, 1000):
        assert not set(trial_seeds("dev", n)) & set(trial_seeds("test", n))
    assert not set(trial_seeds("dev", 10)) & set(trial_seeds("test", 25))  # curve points vs the final evaluation
    with pytest.raises(ValueError, match="split must be one of"):
        trial_seeds("val", 3)
    starts = {}
    for split in ("dev", "test"):
        seen = []
        res = evaluate(tiny_policy(0), [PLACE], trials=4, max_episode_steps=2, split=split,
                       command_fn=lambda task, obs, step: seen.append(obs.copy()) if step == 0 else None)
        assert res["split"] == split and res["seeds"] == trial_seeds(split, 4)
        starts[split] = np.stack(seen)
    # object and goal positions: no dev scene is a test scene
    for a in starts["dev"]:
        assert not any(np.allclose(a[4:7], b[4:7]) and np.allclose(a[36:39], b[36:39]) for b in starts["test"])
    # the first k trials of a longer evaluation are the k-trial evaluation's trials (independent of the count)
    seen = []
    evaluate(tiny_policy(0), [PLACE], trials=2, max_episode_steps=2, split="test",
             command_fn=lambda task, obs, step: seen.append(obs.copy()) if step == 0 else None)
    np.testing.assert_array_equal(np.stack(seen), starts["test"][:2])
