"""env=gym_hil: gym-hil's Panda pick-cube world through our RobotEnv protocol -- seeded trials, gym-hil's action
scale and reward, the scripted expert, demos, and a smoke run with evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gym_hil  # noqa: F401  (the gymhil extra, in the README's set-up: missing must fail, not skip)

from dual_actor.runtime.sim.gym_hil import (
    BLOCK, EE_STEP_M, OBS_DIM, SAMPLING_BOUNDS, TASK, GymHilTaskEnv, PickCubeExpert)

ROOT = Path(__file__).resolve().parents[1]


def blocks(env: GymHilTaskEnv, n: int) -> np.ndarray:
    return np.stack([env.reset()[BLOCK][:2] for _ in range(n)])


def test_block_positions_come_from_the_envs_own_seed_not_numpys_global_generator():
    with GymHilTaskEnv(seed=3) as a, GymHilTaskEnv(seed=3) as b, GymHilTaskEnv(seed=4) as c:
        np.random.seed(0)
        first = blocks(a, 4)
        np.random.seed(123)  # gym-hil would draw from here; ours does not
        np.testing.assert_allclose(blocks(b, 4), first, atol=1e-6)
        assert not np.allclose(blocks(c, 4), first, atol=1e-3)
        a.reseed(3)  # a trial's env seed: the positions of a fresh env of that seed
        np.testing.assert_allclose(blocks(a, 2), first[:2], atol=1e-6)
        lo, hi = SAMPLING_BOUNDS
        assert ((first >= lo - 1e-6) & (first <= hi + 1e-6)).all()
        obs = a.reset()
        assert obs.shape == (OBS_DIM,) and obs.dtype == np.float32 and a.elapsed_steps == 0
        saved = a.rng_state()  # a resumed run continues the stream
        nxt = blocks(a, 2)
        a.load_rng_state(saved)
        np.testing.assert_allclose(blocks(a, 2), nxt, atol=1e-6)


def test_actions_move_the_end_effector_target_as_gym_hils_wrapper_does():
    with GymHilTaskEnv(seed=0) as env:
        env.reset()
        before = env._env.data.mocap_pos[0].copy()
        env.step(np.array([1.0, 0.0, -0.5, 0.0], np.float32))
        np.testing.assert_allclose(env._env.data.mocap_pos[0] - before, [EE_STEP_M, 0.0, -0.5 * EE_STEP_M], atol=1e-9)
        grip = env.reset()[3]
        for _ in range(3):
            obs, *_ = env.step(np.array([0.0, 0.0, 0.0, 1.0], np.float32))
        assert grip == 0.0 and obs[3] == 1.0  # +1 closes: the closure goes 0 -> 1 (clipped)
        with pytest.raises(ValueError, match="4-d"):
            env.step(np.zeros(7))


def test_the_expert_lifts_the_cube_and_success_terminates_a_pushed_block_truncates():
    with GymHilTaskEnv(seed=1, max_episode_steps=100) as env:
        expert = PickCubeExpert()
        for _ in range(3):
            obs, done = env.reset(), False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(expert.act(obs))
                done = terminated or truncated
            assert terminated and reward == 1.0 and env.elapsed_steps < 40
        env.reset()
        env._env.data.jnt("block").qpos[:2] = (0.8, 0.0)  # outside gym-hil's area: gym-hil ends the episode ...
        _, reward, terminated, truncated, _ = env.step(np.zeros(4))
        assert truncated and not terminated and reward == 0.0  # ... as a failure here
    with pytest.raises(KeyError, match="pick up the cube"):
        GymHilTaskEnv(task="place the bolt")


@pytest.mark.slow
def test_expert_reference_demos_and_a_smoke_run_evaluated_twice(tmp_path):
    from data_tools.hdf5_format import read_episodes
    from dual_actor.eval import evaluate_expert
    from dual_actor.eval.cli import main
    from dual_actor.runtime.sim import generate_demos

    res = evaluate_expert([TASK], trials=4, max_episode_steps=100)
    assert res["per_task"][TASK]["success_rate"] == 1.0 and res["split"] == "test"
    demos = generate_demos(tmp_path / "d.hdf5", tasks=[TASK], episodes_per_task=2, seed=0, noise=0.1,
                           max_episode_steps=100, world="gym_hil")
    eps = list(read_episodes(demos))
    assert len(eps) == 2 and all(e.dones[-1] for e in eps) and eps[0].obs["state"].shape[1] == OBS_DIM
    np.testing.assert_array_equal(eps[0].obs["proprio"], eps[0].obs["state"][:, :4])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "dual_actor.fit", "experiment=smoke", "env=gym_hil", f"run_root={tmp_path}",
                        "run_name=g", "online.env_steps=200", "online.max_episode_steps=100", "eval.max_episode_steps=100",
                        "online.translation_scale_m=0.025", "trainer.progress_bar=false"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads((tmp_path / "g" / "eval.json").read_text())
    assert list(ev["per_task"]) == [TASK] and ev["split"] == "test"
    outs = []
    for k in range(2):  # python -m dual_actor.eval on a gym-hil policy, twice: the same trials, the same result
        out = tmp_path / f"e{k}.json"
        assert main([str(tmp_path / "g" / "policy"), "--trials", "2", "--out", str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1] and outs[0]["per_task"][TASK]["trials"] == 2
    assert outs[0]["per_task"][TASK]["mean_episode_length"] <= 100
    out = tmp_path / "expert.json"
    assert main(["--expert", "--tasks", TASK, "--trials", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["per_task"][TASK]["success_rate"] == 1.0
