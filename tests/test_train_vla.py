"""python -m dual_actor.train_vla: the bench VLA (lerobot's SmolVLA trained here) -- its samples, its folder (which
lerobot itself loads), its own evaluation, and h from it through backbone=smolvla."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from data_tools.hdf5_format import Episode
from dual_actor.eval import trial_seeds
from dual_actor.vla.bench import DemoChunks

ROOT = Path(__file__).resolve().parents[1]


def _episode(n: int, task: str, offset: float) -> Episode:
    obs = {"proprio": np.arange(n * 4, dtype=np.float32).reshape(n, 4) + offset,
           "corner": np.full((n, 8, 8, 3), 51, np.uint8), "gripperPOV": np.zeros((n, 8, 8, 3), np.uint8)}
    actions = (np.arange(n, dtype=np.float32)[:, None] + offset) * np.ones((1, 4), np.float32)
    return Episode(obs=obs, actions=actions, rewards=np.zeros(n), dones=np.arange(n) == n - 1, task=task)


def test_demo_chunks_pad_past_the_episode_end_and_carry_the_task():
    data = DemoChunks([_episode(3, "place the bolt", 0.0), _episode(2, "pick up the bolt", 100.0)],
                      ["corner", "gripperPOV"], chunk=3)
    assert len(data) == 5
    s = data[1]  # step 1 of episode 0 (3 steps): actions 1, 2, then the last one repeated and masked
    assert s["action"][:, 0].tolist() == [1.0, 2.0, 2.0] and s["action_is_pad"].tolist() == [False, False, True]
    assert torch.equal(s["actions_id_pad"], s["action_is_pad"])  # the key lerobot 0.4.4's SmolVLA reads
    assert s["task"] == "place the bolt" and s["observation.state"].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert s["observation.images.corner"].shape == (3, 8, 8) and float(s["observation.images.corner"].max()) == pytest.approx(0.2)
    s = data[3]  # the second episode starts: its own actions, never the first episode's
    assert s["action"][:, 0].tolist() == [100.0, 101.0, 101.0] and s["task"] == "pick up the bolt"
    stats = data.stats()
    assert torch.allclose(stats["action"]["mean"], torch.full((4,), (0 + 1 + 2 + 100 + 101) / 5))
    with pytest.raises(ValueError, match="obs/wrist"):
        DemoChunks([_episode(2, "place the bolt", 0.0)], ["wrist"], chunk=2)


def test_position_probe_reads_what_the_features_carry():
    """The probe (dual_actor/vla/probe.py) on hand-made features: features that hold the object's position score
    R^2 ~ 1 on held-out episodes, noise scores ~0 or below, and proprio (the hand) is scored beside them."""
    from dual_actor.vla.probe import position_probe

    rng = np.random.default_rng(0)
    states = [rng.uniform(-0.3, 0.3, size=(40, 39)) for _ in range(10)]
    proprio = [s[:, :4] for s in states]
    good = [np.concatenate([s[:, 4:7] * 3 + 1, rng.normal(size=(40, 5))], 1) for s in states]
    noise = [rng.normal(size=(40, 8)) for _ in states]
    res = position_probe(good, states, proprio)
    assert res["episodes"] == {"fit": 8, "held_out": 2} and res["rows"] == {"fit": 320, "held_out": 80}
    assert min(res["object"]["h"]["r2"]) > 0.95 and res["object"]["h"]["rmse_m"] < 0.02
    assert max(res["goal"]["h"]["r2"]) < 0.1  # the goal's entries are not in these features
    assert max(position_probe(noise, states, proprio)["object"]["h"]["r2"]) < 0.1
    assert max(res["object"]["proprio"]["r2"]) < 0.1  # the hand does not say where the (independent) object is
    with pytest.raises(ValueError, match="hold out"):
        position_probe(good[:2], states[:2], proprio[:2], every=5)


def test_position_probe_at_the_start_separates_seeing_from_following_the_hand():
    """Over whole episodes the hand goes to the object, so proprio alone predicts where it is; on each episode's first
    frames (``first``) the hand has not moved and only features that see the object do. ``tasks`` adds the baseline
    proprio + task one-hot: here each task's objects lie around their own centre (+-0.05 m on x), the task explains
    var 0.05^2 / (0.05^2 + 0.1^2 / 3) ~ 0.43 of x's variance and nothing of y's, z's."""
    from dual_actor.vla.probe import position_probe

    rng = np.random.default_rng(1)
    states, proprio, seen, tasks = [], [], [], []
    for j in range(1000):  # 200 held out: the task's share of x's variance within a few points of 0.43
        task = ("a", "b")[j % 2]
        obj = rng.uniform(-0.1, 0.1, size=3) + np.array([0.05 if task == "a" else -0.05, 0.0, 0.0])
        st = np.zeros((40, 39))
        st[:, 4:7] = obj
        hand = np.zeros((40, 4))
        hand[:10, :3] = rng.normal(scale=0.01, size=(10, 3))  # the first frames: near the start pose
        hand[10:, :3] = obj  # then at the object, carrying it
        states.append(st), proprio.append(hand), tasks.append(task)
        seen.append(np.concatenate([st[:, 4:7] + rng.normal(scale=0.002, size=(40, 3)), rng.normal(size=(40, 4))], 1))
    whole = position_probe(seen, states, proprio, tasks=tasks)
    start = position_probe(seen, states, proprio, first=10, tasks=tasks)
    assert start["rows"] == {"fit": 8000, "held_out": 2000} and whole["rows"] == {"fit": 32000, "held_out": 8000}
    assert min(whole["object"]["proprio"]["r2"]) > 0.6  # the hand carries the object for 30 of 40 frames
    assert max(start["object"]["proprio"]["r2"]) < 0.1  # at the start it says nothing
    assert min(start["object"]["h"]["r2"]) > 0.95
    x, y, z = start["object"]["proprio_task"]["r2"]
    assert 0.25 < x < 0.6 and max(y, z) < 0.05
    assert "proprio_task" not in position_probe(seen, states, proprio)["object"]


def test_probe_md_writes_each_feature_set_and_lever():
    from dual_actor.vla.probe import probe_md

    r = lambda a, b, c, m: {"r2": [a, b, c], "rmse_m": m}  # noqa: E731
    probe = {"episodes": {"fit": 4, "held_out": 1}, "rows": {"fit": 40, "held_out": 10},
             "object": {"h": r(0.5, 0.25, 1.0, 0.0123), "proprio": r(0.0, -0.1, 0.2, 0.05)},
             "start": {"frames": 10, "episodes": {"fit": 4, "held_out": 1}, "rows": {"fit": 40, "held_out": 10},
                       "object": {"h": r(0.9, 0.8, 0.7, 0.02), "proprio": r(0, 0, 0, 0.1),
                                  "proprio_task": r(0.5, 0.5, 0.5, 0.07)}}}
    levers = {"frames": 10, "episodes": 5, "choices": [{"layer": 3, "pool": "images", "embedding_dim": 8,
                                                         "object": {"h": r(0.1, 0.2, 0.3, 0.04)}}]}
    md = probe_md(probe, levers)
    assert "| h (the frozen VLA) | 0.50 / 0.25 / 1.00 (1.2 cm) |" in md
    assert "| proprioception | 0.00 / -0.10 / 0.20 (5.0 cm) |" in md
    assert "| first 10 frames of each demo: features | object: R^2 x / y / z (RMSE) |" in md
    assert "| proprioception + task | 0.50 / 0.50 / 0.50 (7.0 cm) |" in md
    assert "| 3 | images | 0.10 / 0.20 / 0.30 (4.0 cm) | - |" in md
    assert md.count("proprioception + task") == 1  # the whole-demos table has no task baseline


def _train_vla(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "dual_actor.train_vla", "experiment=smoke", f"run_root={tmp_path}",
                           "trainer.progress_bar=false", "eval.max_episode_steps=20", "env.image_size=64",
                           "env.demos.episodes_per_task=1", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_train_vla_saves_a_folder_lerobot_loads_and_evaluates_it(tmp_path):
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from safetensors.torch import load_file

    from dual_actor.nets.backbones.smolvla import SmolVLABackbone

    out = tmp_path / "vla"
    r = _train_vla(tmp_path, f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((out / "train.json").read_text())
    assert info["steps"] == 6 and [p["step"] for p in info["log"]] == [2, 4, 6] and info["cameras"] == ["corner", "gripperPOV"]
    assert info["state_dim"] == 4 and info["episodes"] == 3  # proprio only (hand xyz + gripper): nothing privileged
    assert all(np.isfinite(p["loss"]) for p in info["log"])
    # lerobot's own loader reads the folder, and its weights are the saved ones
    policy = SmolVLAPolicy.from_pretrained(out)
    saved = load_file(out / "model.safetensors")
    state = policy.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items())
    assert set(policy.config.input_features) == {"observation.state", "observation.images.corner",
                                                 "observation.images.gripperPOV"}
    assert not policy.config.freeze_vision_encoder and not policy.config.train_expert_only
    ev = json.loads((out / "eval.json").read_text())
    assert ev["split"] == "test" and ev["seeds"] == trial_seeds("test", 1, 10_000)
    assert set(ev["per_task"]) == {"place the bolt", "pick up the bolt", "assemble the bolt"}
    assert "average" in r.stdout and f"saved to {out}" in r.stdout
    probe = json.loads((out / "probe.json").read_text())  # what h knows of the hidden positions, on held-out demos
    assert probe["episodes"] == {"fit": 2, "held_out": 1} and len(probe["object"]["h"]["r2"]) == 3
    assert "what h knows" in r.stdout and probe["start"]["frames"] == 10 and "proprio_task" in probe["start"]["object"]
    # which h sees the object best: the start-of-episode probe per VLM layer x pooling (python -m dual_actor.vla.probe)
    data = info["data"]
    lev = subprocess.run([sys.executable, "-m", "dual_actor.vla.probe", str(out), data, "--out", str(tmp_path / "lev.json"),
                          "--layers", "0", "-1", "--pools", "prefix", "images", "--frames", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert lev.returncode == 0, lev.stderr[-3000:]
    levers = json.loads((tmp_path / "lev.json").read_text())
    assert levers["frames"] == 3 and levers["episodes"] == 3
    assert [(c["layer"], c["pool"]) for c in levers["choices"]] == [(0, "prefix"), (0, "images"), (1, "prefix"), (1, "images")]
    assert all(c["embedding_dim"] == 64 and len(c["object"]["h"]["r2"]) == 3 for c in levers["choices"])
    assert lev.stdout.count("object R^2") == 4
    bad = subprocess.run([sys.executable, "-m", "dual_actor.vla.probe", str(out), data, "--out", str(tmp_path / "b.json"),
                          "--layers", "7"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "backbone.layer must be in [-2, 1]" in bad.stdout and not (tmp_path / "b.json").exists()
    # h from the frozen bench VLA (Eq. 17): 2 * kv_heads * head_dim = 2 * 2 * 16
    bb = SmolVLABackbone(out, camera_map={"corner": "corner", "gripperPOV": "gripperPOV"})
    obs = {"state": torch.zeros(2, 4), "images": {"corner": torch.rand(2, 3, 64, 64), "gripperPOV": torch.rand(2, 3, 64, 64)}}
    h = bb.embed(obs, ["place the bolt", "assemble the bolt"])
    assert h.shape == (2, 64) and torch.isfinite(h).all() and not torch.allclose(h[0], h[1])
    # the pixel bench: a learning run with h from this VLA, proprio as the state, nothing privileged
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    fit = subprocess.run([sys.executable, "-m", "dual_actor.fit", "experiment=smoke", "env=metaworld_pixels",
                          "backbone=smolvla", f"backbone.checkpoint={out}", "image_encoder=h", f"run_root={tmp_path}",
                          "run_name=px", "env.image_size=64", f"data.path={info['data']}",  # the VLA's demos
                          "online.env_steps=80", "eval.curve_every_env_steps=80", "trainer.progress_bar=false"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert fit.returncode == 0, fit.stderr[-3000:]
    saved = json.loads((tmp_path / "px" / "policy" / "config.json").read_text())
    assert saved["state_slice"] == [0, 4] and saved["obs_dim"] == 4 and saved["image_encoder"] == {"kind": "h"}
    assert saved["cameras"] == ["corner", "gripperPOV"]
    assert json.loads((tmp_path / "px" / "eval.json").read_text())["split"] == "test"
    # h rides with each logged step, keyed by the VLA: converted into the HDF5, read back without running the VLA
    from data_tools.convert import convert
    from data_tools.hdf5_format import read_episodes
    from dual_actor.data.buffers import TaskBuffers
    from dual_actor.data.hdf5 import DataSpec, load_dataset_into
    from dual_actor.policy import DualActorPolicy

    pol = DualActorPolicy.from_pretrained(tmp_path / "px" / "policy")
    key = pol.h_key
    assert key.startswith("h.smolvla-")
    online = tmp_path / "online.hdf5"
    convert(sorted((tmp_path / "px" / "teleop").iterdir()), online, progress=False)
    ep = next(read_episodes(online))
    assert ep.obs[key].shape == (len(ep.actions), pol.h_dim)
    obs = {"state": torch.from_numpy(ep.obs["proprio"][:3]), "proprio": torch.from_numpy(ep.obs["proprio"][:3]),
           "images": {c: torch.from_numpy(ep.obs[c][:3].transpose(0, 3, 1, 2).copy()) for c in pol.cameras}}
    torch.testing.assert_close(pol.embed(obs, [ep.task] * 3), torch.from_numpy(ep.obs[key][:3]), rtol=1e-4, atol=1e-5)
    calls = []

    def embed(observation, tasks):
        calls.append(len(tasks))
        return pol.embed(observation, tasks)

    tasks = ["place the bolt", "pick up the bolt", "assemble the bolt"]
    loaded = []
    for h_key, recomputed in ((key, False), ("h.smolvla-000000000000", True)):  # another VLA's key: embedded again
        calls.clear()
        spec = DataSpec(tasks, "proprio", 4, "proprio", 4, 4, cameras=["corner", "gripperPOV"], as_mapping=True,
                        h_key=h_key)
        bufs = TaskBuffers(tasks)
        load_dataset_into(bufs, online, spec, embed, pol.command_ids, 0.99)
        assert bool(calls) == recomputed
        loaded.append(torch.cat([b.all()["h"] for t in tasks for b in bufs[t].values() if len(b)]))
    torch.testing.assert_close(loaded[0], loaded[1], rtol=1e-4, atol=1e-5)  # the stored h is the VLA's
    # the folder is never overwritten; a bad size is one error line naming the key
    again = _train_vla(tmp_path, f"out={out}")
    assert again.returncode == 2 and "already holds a trained VLA" in again.stderr
    bad = _train_vla(tmp_path, f"out={tmp_path / 'other'}", "vla.image_size=72")
    assert bad.returncode == 2 and "vla.image_size" in bad.stderr and not (tmp_path / "other").exists()
