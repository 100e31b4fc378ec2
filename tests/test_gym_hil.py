"""env=gym_hil: gym-hil's Panda pick-cube world through our RobotEnv protocol -- seeded trials, gym-hil's action
scale and reward, the scripted expert, demos, a smoke run with evaluation, and the pixels mode (gym-hil's cameras
rendered by us, the policy's state without the block, h from a bench VLA trained on this world's demos)."""

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
    AGENT_POS_DIMS, BLOCK, EE_STEP_M, OBS_DIM, SAMPLING_BOUNDS, TASK, GymHilTaskEnv, PickCubeExpert)

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
                        "trainer.progress_bar=false"],
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


def test_our_frames_are_gym_hils_own_with_its_effects_and_cheaper_without():
    """front / wrist through our renderer: with shadows and reflections on, pixel for pixel what gym-hil's own
    ``render()`` gives for the same state (same cameras, same size); off, the same scene (the default: cheaper)."""
    with GymHilTaskEnv(seed=3, cameras=["front", "wrist"], render_effects=True) as env:
        obs, expert = env.reset(), PickCubeExpert()
        for _ in range(6):
            obs, *_ = env.step(expert.act(obs))
        ours, theirs = env.images(), env._env.render()
        assert list(ours) == ["front", "wrist"]
        for (cam, a), b in zip(ours.items(), theirs):
            assert a.shape == (128, 128, 3) and a.dtype == np.uint8
            np.testing.assert_array_equal(a, b, err_msg=cam)
    with GymHilTaskEnv(seed=3, cameras=["wrist"], image_size=64) as env:
        env.reset()
        im = env.images()
        assert list(im) == ["wrist"] and im["wrist"].shape == (64, 64, 3) and im["wrist"].std() > 0
    with pytest.raises(ValueError, match="front"):
        GymHilTaskEnv(cameras=["corner"])


def test_obs_mode_picks_the_cameras_and_the_state_the_policy_reads():
    """env.obs_mode=state: the 21-d state, no cameras; pixels: front + wrist and the 18 entries of gym-hil's
    agent_pos (no block position); an unknown mode is refused naming the key; the env's metres per action unit
    reach the talk-and-tweak rule."""
    from hydra import compose, initialize_config_dir

    from dual_actor.config.fields import ConfigError
    from dual_actor.config.store import check_config
    from dual_actor.training import build

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        state = compose("config", overrides=["env=gym_hil"])
        pixels = compose("config", overrides=["env=gym_hil", "env.obs_mode=pixels"])
        bogus = compose("config", overrides=["env=gym_hil", "env.obs_mode=rgb"])
        bench = compose("config")
    for cfg in (state, pixels, bench):
        check_config(cfg)
    ps, pp = build.policy_config(state), build.policy_config(pixels)
    assert (ps.obs_dim, ps.state_slice, ps.cameras) == (OBS_DIM, None, [])
    assert (pp.obs_dim, pp.state_slice, pp.cameras) == (AGENT_POS_DIMS, [0, 18], ["front", "wrist"])
    assert str(state.env.name) != str(pixels.env.name)  # their default demo files differ (a pixels one holds images)
    assert state.online.translation_scale_m == EE_STEP_M and bench.online.translation_scale_m == 0.01
    assert state.operator.translation_scale_m == EE_STEP_M
    with pytest.raises(ConfigError, match="env.obs_mode=rgb.*state, pixels"):
        check_config(bogus)
    obs = np.arange(OBS_DIM, dtype=np.float32)
    from dual_actor.policy import DualActorPolicy

    pol = DualActorPolicy(tasks=[TASK], obs_dim=18, proprio_dim=4, action_dim=4, state_slice=[0, 18],
                          actor_hidden=[8], refine_hidden=[8])
    assert pol.state_of(obs).tolist() == list(range(18))  # the block (entries 18..20) never reaches it


def test_pixels_mode_bench_vla_and_a_learning_run_without_the_block(tmp_path):
    """``train_vla`` on this world's demos (front + wrist rendered, tiny), then a pixels-mode smoke run with h from
    that VLA: the warm-up rows hold the 18-d agent_pos (the demos' state without the block), the saved policy reads
    [0, 18) of the robot's vector, and evaluating it twice gives the same result."""
    from data_tools.hdf5_format import read_episodes
    from dual_actor.data.buffers import TaskBuffers
    from dual_actor.data.hdf5 import DataSpec, load_dataset_into
    from dual_actor.eval.cli import main
    from dual_actor.policy import DualActorPolicy
    import dual_actor.constants as K

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    common = ["experiment=smoke", "env=gym_hil", "env.obs_mode=pixels", f"run_root={tmp_path}", "env.image_size=64",
              "trainer.progress_bar=false"]
    vla = subprocess.run([sys.executable, "-m", "dual_actor.train_vla", *common, "vla.cameras=[front,wrist]",
                          f"out={tmp_path / 'vla'}", "eval.max_episode_steps=20"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert vla.returncode == 0, vla.stderr[-3000:]
    assert json.loads((tmp_path / "vla" / "eval.json").read_text())["per_task"][TASK]["trials"] == 1
    probe = json.loads((tmp_path / "vla" / "probe.json").read_text())
    assert set(probe) == {"episodes", "rows", "object", "start"}  # gym-hil's hidden position: the block
    assert set(probe["start"]) == {"frames", "episodes", "rows", "object"}  # ... and at each episode's start
    assert set(probe["start"]["object"]) == {"h", "proprio", "proprio_task"}
    data = tmp_path / "data" / "gym_hil_pixels_smoke_vla_demos.hdf5"
    fit = subprocess.run([sys.executable, "-m", "dual_actor.fit", *common, "backbone=smolvla",
                          f"backbone.checkpoint={tmp_path / 'vla'}", "image_encoder=h", "run_name=px",
                          f"data.path={data}", "online.env_steps=60", "online.max_episode_steps=30",
                          "eval.max_episode_steps=30", "eval.curve_every_env_steps=60"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert fit.returncode == 0, fit.stderr[-3000:]
    saved = json.loads((tmp_path / "px" / "policy" / "config.json").read_text())
    assert (saved["state_slice"], saved["obs_dim"], saved["cameras"]) == ([0, 18], 18, ["front", "wrist"])
    pol = DualActorPolicy.from_pretrained(tmp_path / "px" / "policy")
    bufs = TaskBuffers([TASK])
    load_dataset_into(bufs, data, DataSpec([TASK], "state", OBS_DIM, "proprio", 4, 4, cameras=["front", "wrist"],
                                           as_mapping=True, h_key=pol.h_key, state_dims=18),
                      pol.embed, pol.command_ids, 0.99)
    ep = next(read_episodes(data))
    obs = bufs[TASK]["demos"].all()[K.OBS]
    assert obs.shape[1] == 18
    np.testing.assert_allclose(obs[: len(ep.actions)].numpy(), ep.obs["state"][:, :18], rtol=0, atol=0)
    outs = []
    for k in range(2):
        out = tmp_path / f"e{k}.json"
        assert main([str(tmp_path / "px" / "policy"), "--trials", "1", "--max-episode-steps", "20", "--out", str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1]
