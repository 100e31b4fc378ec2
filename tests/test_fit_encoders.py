"""Encoders wired into the framework: camera observations from the bench, SmolVLA / CLS backbones,
T5 command encoder and ResNet image encoders in the policy, the learner, the loaders and the real
entry point (tiny local models, 32x32 images, tiny budgets)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from data_tools.hdf5_format import DatasetFormatError, read_episodes
from dual_actor import constants as K
from dual_actor.data.buffers import TaskBuffers
from dual_actor.data.hdf5 import DataSpec, load_dataset_into
from dual_actor.module import DualActorModule
from dual_actor.policy import DualActorPolicy
from dual_actor.runtime.loop import ControlLoop, observation_batch
from dual_actor.runtime.sim import MetaworldTaskEnv, generate_demos
from dual_actor.runtime.transport import InProcessTransport
from factories import training_batch
from tiny_models import build_tiny_smolvla_checkpoint, build_tiny_t5

ROOT = Path(__file__).resolve().parents[1]
TASKS2 = ["place the bolt", "reach-v3"]  # reach-v3: a short expert demo (fewer frames to render)
CAMS = ["corner", "gripperPOV"]
SIZE = 32
CAMERA_MAP = {"corner": "front", "gripperPOV": "wrist"}
SMALL = dict(actor_hidden=[32], refine_hidden=[32], refine_proj_dim=16, obs_feature_dim=16)
RESNET10 = {"kind": "resnet10", "camera_dim": 8, "state_feature_dim": 8, "pooling": "spatial"}
CLS_MODEL = {"_target_": "tiny_models.build_tiny_cls_model", "state_dim": 4, "d_model": 32}
CLS_ADAPTER = {"_target_": "dual_actor.nets.backbones.FirstTokenAdapter", "embedding_dim": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny SmolVLA checkpoint (4-d state, cameras front + wrist, 64x64) and a tiny T5 folder."""
    d = tmp_path_factory.mktemp("tiny")
    return {"smolvla": build_tiny_smolvla_checkpoint(d / "smolvla", state_dim=4, cameras=("front", "wrist")),
            "t5": build_tiny_t5(d / "t5")}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """One successful expert demo per task for two bench tasks, with both cameras at 32x32."""
    path = tmp_path_factory.mktemp("demos") / "demos.hdf5"
    return generate_demos(path, tasks=TASKS2, episodes_per_task=1, seed=0, cameras=CAMS, image_size=SIZE)


def smolvla_policy(tiny, **kw) -> DualActorPolicy:
    backbone = {"name": "smolvla", "checkpoint": str(tiny["smolvla"]), "camera_map": CAMERA_MAP, "device": "cpu"}
    return DualActorPolicy(**{**dict(tasks=TASKS2, obs_dim=39, proprio_dim=4, action_dim=4, cameras=CAMS,
                                     image_size=SIZE, backbone=backbone), **SMALL, **kw})


def cls_policy(**kw) -> DualActorPolicy:
    backbone = {"name": "cls", "model": CLS_MODEL, "adapter": CLS_ADAPTER, "device": "cpu"}
    return DualActorPolicy(**{**dict(tasks=TASKS2, obs_dim=39, proprio_dim=4, action_dim=4, cameras=["corner"],
                                     image_size=SIZE, backbone=backbone), **SMALL, **kw})


def bench_observation(task="place the bolt", cameras=CAMS, seed=0):
    with MetaworldTaskEnv(task, seed=seed, cameras=cameras, image_size=SIZE) as env:
        state = env.reset()
        return observation_batch(state, slice(0, 4), env.images())


def fit_module(module, batch):
    """Train ``module`` on ``batch`` repeated until its ``max_updates``."""
    import lightning as L
    from torch.utils.data import DataLoader, IterableDataset

    class Repeat(IterableDataset):
        def __iter__(self):
            while True:
                yield batch

    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, DataLoader(Repeat(), batch_size=None))


def seeded_act(policy, h, obs, commands):
    torch.manual_seed(123)
    return policy.act(h, obs, obs["proprio"], commands=commands)


# ------------------------------------------------------------------------------- simulator
def test_env_renders_cameras_and_demos_keep_the_same_states(demos):
    with MetaworldTaskEnv("place the bolt", seed=3, cameras=CAMS, image_size=SIZE) as env:
        s0 = env.reset()
        first = env.images()
        for _ in range(5):
            env.step(np.array([1.0, 0.0, 0.0, 0.0]))
        later = env.images()
    assert set(first) == set(CAMS)
    for cam in CAMS:
        assert first[cam].shape == (SIZE, SIZE, 3) and first[cam].dtype == np.uint8 and first[cam].std() > 0
    assert not np.array_equal(first["corner"], first["gripperPOV"])
    assert not np.array_equal(first["gripperPOV"], later["gripperPOV"])  # the hand moved
    assert s0.shape == (39,)
    with pytest.raises(KeyError, match="unknown Metaworld camera"):
        MetaworldTaskEnv("place the bolt", seed=0, cameras=["nope"])
    # rendering reads the simulation, it does not change it: the same demo as without cameras
    plain = generate_demos(demos.parent / "plain.hdf5", tasks=TASKS2[:1], episodes_per_task=1, seed=0)
    (with_cams, *_), (without,) = list(read_episodes(demos)), list(read_episodes(plain))
    assert np.array_equal(with_cams.obs["state"], without.obs["state"])
    assert with_cams.obs["corner"].shape == (len(without.actions), SIZE, SIZE, 3)
    assert "corner" not in without.obs


# ------------------------------------------------------------------------------------ policy
def test_smolvla_t5_resnet_policy_saves_without_frozen_weights_and_reloads(tiny, tmp_path):
    t5 = shutil.copytree(tiny["t5"], tmp_path / "t5")
    torch.manual_seed(0)
    pol = smolvla_policy(tiny, text_encoder={"kind": "t5", "path": str(t5)}, image_encoder=RESNET10).eval()
    torch.nn.init.normal_(pol.refinement.head[-1].weight, std=0.5)  # zero-initialised: make mu != 0
    assert pol.backbone.embedding_dim == 64 and pol.uses_images
    obs = bench_observation()
    h = pol.embed(obs, ["place the bolt"])
    assert h.shape == (1, 64)
    a_ref = seeded_act(pol, h, obs, ["move left"])
    a_pri = seeded_act(pol, h, obs, None)
    assert not torch.equal(a_ref, seeded_act(pol, h, obs, ["move right"]))  # the command reaches mu
    out = pol.save_pretrained(tmp_path / "policy")
    shutil.rmtree(t5)  # the saved policy must not need T5
    saved = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("backbone.") for k in saved)
    assert pol.frozen_state_keys() and all(k.startswith("backbone.policy.") for k in pol.frozen_state_keys())
    assert set(saved) == set(pol.state_dict()) - set(pol.frozen_state_keys())
    assert saved["refinement.command_encoder.table"].shape == (len(pol.commands), 16)  # T5 d_model, not weights
    assert not any("shared" in k or "block" in k for k in saved)  # no T5 parameter names
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["text_encoder"] == {"kind": "table", "out_dim": 16,
                                   "source": {"kind": "t5", "model_name_or_path": str(t5)}}
    assert cfg["backbone_fingerprint"] and cfg["cameras"] == CAMS and cfg["image_size"] == SIZE

    back = DualActorPolicy.from_pretrained(out)
    assert torch.equal(back.embed(obs, ["place the bolt"]), h)
    assert torch.equal(seeded_act(back, h, obs, ["move left"]), a_ref)
    assert torch.equal(seeded_act(back, h, obs, None), a_pri)
    assert not torch.equal(a_ref, a_pri)  # refinement mode really went through the T5 table + ResNet
    for k, v in pol.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_from_pretrained_backbone_errors(tiny, tmp_path):
    pol = smolvla_policy(tiny)
    out = pol.save_pretrained(tmp_path / "policy")
    other = build_tiny_smolvla_checkpoint(tmp_path / "other", state_dim=4, cameras=("front", "wrist"), seed=1)
    with pytest.raises(ValueError, match="other weights than the one this policy was trained with"):
        DualActorPolicy.from_pretrained(out, backbone={"checkpoint": str(other)})
    assert DualActorPolicy.from_pretrained(out, backbone={"checkpoint": str(other)}, check_backbone=False)
    moved = tmp_path / "moved"
    shutil.copytree(tiny["smolvla"], moved)
    assert DualActorPolicy.from_pretrained(out, backbone={"checkpoint": str(moved)})  # same weights elsewhere
    shutil.rmtree(moved)
    with pytest.raises(FileNotFoundError, match=f"{moved}.*does not exist"):
        DualActorPolicy.from_pretrained(out, backbone={"checkpoint": str(moved)})
    with pytest.raises(ValueError, match=r"reads camera\(s\) \['gripperPOV'\]"):
        smolvla_policy(tiny, cameras=["corner"])
    with pytest.raises(ValueError, match="expects a 4-d state"):
        smolvla_policy(tiny, backbone={"name": "smolvla", "checkpoint": str(tiny["smolvla"]),
                                       "camera_map": CAMERA_MAP, "state_key": "state"})


def test_cls_policy_roundtrip_rebuilds_the_model_from_its_target(tmp_path):
    pol = cls_policy().eval()
    obs = bench_observation(cameras=["corner"])
    h = pol.embed(obs, ["reach-v3"])
    assert h.shape == (1, 32)
    # h is the tiny model's CLS token on [proprio, float image]: computed here independently
    from tiny_models import build_tiny_cls_model

    model = build_tiny_cls_model(state_dim=4, d_model=32).eval()
    with torch.no_grad():
        direct = model({"state": obs["proprio"], "images": {"corner": obs["images"]["corner"].float() / 255}},
                       ["reach-v3"])[:, 0]
    assert torch.allclose(h, direct, atol=1e-6)
    out = pol.save_pretrained(tmp_path / "p")
    assert not any(k.startswith("backbone.") for k in load_file(str(out / "model.safetensors")))
    back = DualActorPolicy.from_pretrained(out)
    assert torch.equal(back.embed(obs, ["reach-v3"]), h)
    assert torch.equal(seeded_act(back, h, obs, ["move up"]), seeded_act(pol, h, obs, ["move up"]))
    # a seed that builds other weights is caught by the fingerprint
    cfg = json.loads((out / "config.json").read_text())
    cfg["backbone"]["model"]["seed"] = 1
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="other weights"):
        DualActorPolicy.from_pretrained(out)


def test_cls_backbone_without_cameras_reads_proprio_everywhere(demos):
    """A VLA backbone on proprio alone: loop, loader and evaluation hand it the observation mapping."""
    from dual_actor.eval import evaluate

    pol = cls_policy(cameras=[]).eval()
    assert pol.wants_mapping and not pol.uses_images
    with MetaworldTaskEnv("place the bolt", seed=0, max_episode_steps=3) as env:
        rows = ControlLoop(env, "place the bolt", pol, None, InProcessTransport(), proprio_slice=slice(0, 4)
                           ).run_episode().rows
    direct = pol.embed({"state": rows[K.OBS], "proprio": rows[K.PROPRIO], "images": {}}, ["place the bolt"] * 3)
    assert torch.allclose(rows[K.H], direct, atol=1e-5)
    assert not torch.allclose(rows[K.H][0], rows[K.H][2])  # h follows the proprio
    bufs = TaskBuffers(TASKS2)
    load_dataset_into(bufs, demos, DataSpec(TASKS2, "state", 39, "proprio", 4, 4, as_mapping=True), pol.embed,
                      pol.command_ids, 0.99)
    got = bufs["reach-v3"]["demos"].all()
    assert torch.allclose(got[K.H], pol.embed({"state": got[K.OBS], "proprio": got[K.PROPRIO], "images": {}},
                                              ["reach-v3"] * len(got[K.H])), atol=1e-5)
    res = evaluate(pol, ["place the bolt"], trials=1, max_episode_steps=3)
    assert res["per_task"]["place the bolt"]["mean_episode_length"] == 3.0


# ------------------------------------------------------------------------------------ learner
def test_learner_trains_image_encoders_and_never_runs_the_backbone():
    torch.manual_seed(0)
    kw = dict(policy=dict(tasks=["a", "b", "c"], obs_dim=6, proprio_dim=2, action_dim=4, cameras=["x", "y"],
                          image_size=SIZE, image_encoder=RESNET10, actor_hidden=[32], refine_hidden=[32],
                          refine_proj_dim=16, obs_feature_dim=16, text_encoder={"kind": "learned", "out_dim": 8},
                          backbone={"name": "cls", "adapter": CLS_ADAPTER, "device": "cpu",
                                    "model": {**CLS_MODEL, "state_dim": 2}, "state_key": "proprio"}),
              learner=dict(critic_hidden=[32, 32], critic_feature_dim=8, critic_obs_feature_dim=16), log_every=1,
              max_updates=2, phase="online")  # the refinement actor trains online
    m = DualActorModule(**kw)
    assert type(m.critics.image_encoders[0]).__name__ == "MultiCameraEncoder"
    assert m.critics.image_encoders[0] is not m.policy.refinement.obs_encoder

    def boom(*a, **k):
        raise AssertionError("the learner ran the backbone")

    m.policy.backbone.embed = boom
    watch = {"critic": m.critics.image_encoders[1].trunk.conv1.weight,
             "refine": m.policy.refinement.obs_encoder.trunk.conv1.weight,
             "critic_head": m.critics.image_encoders[1].heads["y"].pool.kernel}
    before = {k: v.detach().clone() for k, v in watch.items()}
    fit_module(m, training_batch(h_dim=32, per_task=4, images=(2, SIZE)))
    assert m.num_updates == 2
    for k, v in watch.items():
        assert not torch.equal(before[k], v.detach()), k  # gradients reached every image encoder
    assert "loss/refine" in m.last_logs and np.isfinite(m.last_logs["loss/critic_b"])


def _state_dict_bytes(module) -> int:
    import io
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)  # shared tensors are written once, as in last.ckpt
    return buf.getbuffer().nbytes


def test_frozen_trunk_is_one_per_run_computed_once_per_row_and_saved_once():
    """image_encoder.freeze=true: the refinement actor, every critic and every target run on one trunk; its
    features are computed once per batch row (obs and next obs of the task rows, obs of the talk-and-tweak rows)
    and reused by every consumer; the heads train, the trunk does not; the state dict holds the trunk once."""
    from dual_actor.nets.image import ResNetTrunk

    torch.manual_seed(0)
    kw = dict(policy=dict(tasks=["a", "b", "c"], obs_dim=6, proprio_dim=2, action_dim=4, cameras=["x", "y"],
                          image_size=SIZE, image_encoder={**RESNET10, "freeze": True}, actor_hidden=[32],
                          refine_hidden=[32], refine_proj_dim=16, obs_feature_dim=16, text_encoder={"kind": "learned", "out_dim": 8}),
              learner=dict(critic_hidden=[32, 32], critic_feature_dim=8, critic_obs_feature_dim=16), log_every=1,
              max_updates=2, phase="online")  # 2 updates: the refinement actor's zero-initialised last layer passes gradient on
    m = DualActorModule(**kw)
    trunk = m.policy.refinement.obs_encoder.trunk
    trunks = {id(t) for t in m.modules() if isinstance(t, ResNetTrunk)}
    assert trunks == {id(trunk)}  # one trunk object in the whole learner
    assert all(e.trunk is trunk for e in [*m.critics.image_encoders, *m.target_critics.image_encoders])
    assert m.critics.image_encoders[0].heads is not m.target_critics.image_encoders[0].heads  # heads: per consumer
    unfrozen = DualActorModule(**{**kw, "policy": {**kw["policy"], "image_encoder": RESNET10}})
    assert len({id(t) for t in unfrozen.modules() if isinstance(t, ResNetTrunk)}) == 7  # 3 critics, 3 targets, 1
    trunk_bytes = sum(p.numel() * p.element_size() for p in trunk.state_dict().values())
    assert _state_dict_bytes(m) < 1.2 * trunk_bytes < 0.2 * _state_dict_bytes(unfrozen)

    seen = []
    hook = trunk.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    watch = {"trunk": trunk.conv1.weight, "critic_head": m.critics.image_encoders[1].heads["y"].pool.kernel,
             "refine_head": m.policy.refinement.obs_encoder.heads["x"].pool.kernel}
    before = {k: v.detach().clone() for k, v in watch.items()}
    batch = training_batch(per_task=4, images=(2, SIZE))
    fit_module(m, batch)
    hook.remove()
    # per update: 3 tasks x 4 rows x (obs + next obs) + 4 talk-and-tweak rows x obs, each through 2 cameras
    assert sum(seen) == 2 * (3 * 4 * 2 + 4) * 2, seen
    assert torch.equal(before["trunk"], trunk.conv1.weight)
    assert not torch.equal(before["critic_head"], watch["critic_head"].detach())
    assert not torch.equal(before["refine_head"], watch["refine_head"].detach())
    assert all(np.isfinite(v) for k, v in m.last_logs.items() if k.startswith("loss/"))
    # the batch the loader hands over is not written to (features are not carried to the next update)
    assert "obs_features" not in batch[K.TALK_TWEAK] and "obs_features" not in batch[K.TASKS][0]
    # a module built the same way loads the state dict (every consumer's trunk key is the same tensor)
    DualActorModule(**kw).load_state_dict(m.state_dict(), strict=True)


def test_checkpoint_leaves_out_the_frozen_backbone_and_restores_it():
    backbone = {"name": "cls", "adapter": CLS_ADAPTER, "device": "cpu", "model": {**CLS_MODEL, "state_dim": 2}}
    m = DualActorModule(policy=dict(tasks=["a"], obs_dim=6, proprio_dim=2, action_dim=4, actor_hidden=[8],
                                    refine_hidden=[8], backbone=backbone), learner={"critic_hidden": [8, 8]})
    ckpt = {"state_dict": dict(m.state_dict())}
    m.on_save_checkpoint(ckpt)
    assert not any(k.startswith("policy.backbone.") for k in ckpt["state_dict"])
    m.on_load_checkpoint(ckpt)
    m.load_state_dict(ckpt["state_dict"], strict=True)


# ------------------------------------------------------------------------------ acting side
def test_loop_stores_images_and_h_of_the_rendered_observation():
    torch.manual_seed(0)
    pol = cls_policy(image_encoder=RESNET10)
    with MetaworldTaskEnv("place the bolt", seed=0, max_episode_steps=4, cameras=["corner"], image_size=SIZE) as env:
        loop = ControlLoop(env, "place the bolt", pol, None, InProcessTransport(), proprio_slice=slice(0, 4))
        rows = loop.run_episode().rows
        env.reset()
        first = observation_batch(env.reset(), slice(0, 4), env.images())  # not the same episode: check shapes
    n = len(rows[K.H])
    assert n == 4
    assert rows[K.OBS_IMAGES].shape == (n, 1, 3, SIZE, SIZE) and rows[K.OBS_IMAGES].dtype == torch.uint8
    assert torch.equal(rows[K.NEXT_OBS_IMAGES][:-1], rows[K.OBS_IMAGES][1:])
    assert first["images"]["corner"].shape == (1, 3, SIZE, SIZE)
    # h was computed on the acting side from (proprio, image) of each step
    obs = {"state": rows[K.OBS], "proprio": rows[K.PROPRIO], "images": {"corner": rows[K.OBS_IMAGES][:, 0]}}
    assert torch.allclose(rows[K.H], pol.embed(obs, ["place the bolt"] * n), atol=1e-5)
    with pytest.raises(ValueError, match=r"reads camera\(s\) \['corner'\]"):
        with MetaworldTaskEnv("place the bolt", seed=0) as plain:
            ControlLoop(plain, "place the bolt", pol, None, InProcessTransport())


def test_hdf5_loader_reads_cameras_embeds_in_chunks_and_stores_images(demos):
    pol = cls_policy(image_encoder=RESNET10)
    spec = dict(tasks=TASKS2, obs_key="state", obs_dim=39, proprio_key="proprio", proprio_dim=4, action_dim=4,
                cameras=["corner"], image_size=SIZE)
    whole, chunked = TaskBuffers(TASKS2), TaskBuffers(TASKS2)
    load_dataset_into(whole, demos, DataSpec(**spec, store_images=True), pol.embed, pol.command_ids, 0.99)
    load_dataset_into(chunked, demos, DataSpec(**spec, embed_batch_size=7), pol.embed, pol.command_ids, 0.99)
    rows = whole["place the bolt"]["demos"].all()
    with h5py.File(demos) as f:
        img = f["data/demo_0/obs/corner"][()]
    n = len(rows[K.H])
    assert torch.equal(rows[K.OBS_IMAGES][:, 0], torch.from_numpy(img[:n]).permute(0, 3, 1, 2))
    assert torch.equal(rows[K.NEXT_OBS_IMAGES][:-1], rows[K.OBS_IMAGES][1:])
    other = chunked["place the bolt"]["demos"].all()
    assert K.OBS_IMAGES not in other  # only stored when the image encoder needs them
    assert torch.allclose(other[K.H], rows[K.H], atol=1e-5)
    with pytest.raises(DatasetFormatError, match="no camera 'topview'"):
        load_dataset_into(TaskBuffers(TASKS2), demos, DataSpec(**{**spec, "cameras": ["topview"]}), pol.embed,
                          pol.command_ids, 0.99)
    bad_size = r"obs/corner: uint8 images of shape \(\d+, 32, 32, 3\).*\(N, 64, 64, 3\)"
    with pytest.raises(DatasetFormatError, match=bad_size):
        load_dataset_into(TaskBuffers(TASKS2), demos, DataSpec(**{**spec, "image_size": 64}), pol.embed,
                          pol.command_ids, 0.99)


# --------------------------------------------------------------------------- the entry point
def fit(*overrides, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "dual_actor.fit", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


TINY_RUN = ["experiment=smoke", f"env.tasks=[{','.join(TASKS2)}]", f"env.image_size={SIZE}", "algo.batch_size=8",
            "algo.warmup_updates=6", "algo.actor_hidden=[32]", "algo.refine_hidden=[32]", "algo.critic_hidden=[32]",
            "online.env_steps=60", "online.max_episode_steps=20", "online.min_rollout=10", "eval.trials=1",
            "eval.max_episode_steps=20", "eval.warmup_point=false", "eval.curve_every_env_steps=1000",
            "trainer.checkpoint_every=1000", "trainer.log_every=2"]


def check_run(run: Path, cameras, task="place the bolt"):
    ev = json.loads((run / "eval.json").read_text())
    assert list(ev["per_task"]) == TASKS2 and ev["online_steps"] >= 60
    assert all(r["trials"] == 1 and 0.0 <= r["success_rate"] <= 1.0 for r in ev["per_task"].values())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["phase"] == "online" and summary["updates"] > 6
    assert not any(k.startswith("policy.backbone.")
                   for k in torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"])
    pol = DualActorPolicy.from_pretrained(run / "policy")
    obs = bench_observation(task, cameras)
    h = pol.embed(obs, [task])
    a = pol.act(h, obs, obs["proprio"], commands=["move left and up"])
    assert a.shape == (1, 4) and bool(torch.isfinite(a).all()) and float(a.abs().max()) <= 1.0
    return pol, summary


def test_fit_smolvla_with_t5_commands_and_resnet10_cameras(tiny, demos, tmp_path):
    r = fit(*TINY_RUN, f"data.path={demos}", f"run_root={tmp_path}", "run_name=a", f"env.cameras=[{','.join(CAMS)}]",
            "backbone=smolvla", f"backbone.checkpoint={tiny['smolvla']}",
            "backbone.camera_map={corner: front, gripperPOV: wrist}",
            "text_encoder=t5", f"text_encoder.path={tiny['t5']}",
            "image_encoder=resnet10", "image_encoder.camera_dim=8", "image_encoder.state_feature_dim=8")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "EGLError" not in r.stderr  # renderers are freed before MuJoCo's EGL teardown
    pol, summary = check_run(tmp_path / "a", CAMS)
    assert type(pol.backbone).__name__ == "SmolVLABackbone"
    assert type(pol.refinement.command_encoder).__name__ == "CommandTableEncoder"
    assert type(pol.refinement.obs_encoder).__name__ == "MultiCameraEncoder" and pol.cameras == CAMS
    assert summary["last_metrics"]["phase_online"] == 1.0 and "loss/refine" in summary["last_metrics"]
    # the online teleop log carries the frames, and data_tools puts them into the HDF5 file
    sessions = list((tmp_path / "a" / "teleop").iterdir())
    assert json.loads((sessions[0] / "session.json").read_text())["cameras"] == CAMS
    c = subprocess.run([sys.executable, "-m", "data_tools", "convert", *map(str, sessions), "-o",
                        str(tmp_path / "online.hdf5"), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    ep = next(read_episodes(tmp_path / "online.hdf5"))
    assert ep.obs["gripperPOV"].shape == (ep.num_samples, SIZE, SIZE, 3)


def test_fit_cls_backbone(demos, tmp_path):
    r = fit(*TINY_RUN, f"data.path={demos}", f"run_root={tmp_path}", "run_name=b", "env.cameras=[corner]",
            "backbone=cls", "backbone.model._target_=tiny_models.build_tiny_cls_model", "+backbone.model.state_dim=4",
            "backbone.adapter.embedding_dim=32")
    assert r.returncode == 0, r.stderr[-3000:]
    pol, _ = check_run(tmp_path / "b", ["corner"])
    assert type(pol.backbone).__name__ == "CLSBackbone" and not pol.uses_images


def test_fit_resnet10_frozen_trunk_bf16_mixed(demos, tmp_path):
    """The smoke fit with image critics on one frozen ResNet-10 trunk, under bf16-mixed autocast (what
    trainer=gpu chooses): it runs to the end, its losses are finite, last.ckpt holds the trunk once."""
    r = fit(*TINY_RUN, f"data.path={demos}", f"run_root={tmp_path}", "run_name=f", f"env.cameras=[{','.join(CAMS)}]",
            "image_encoder=resnet10", "image_encoder.freeze=true", "image_encoder.camera_dim=8",
            "image_encoder.state_feature_dim=8", "trainer.precision=bf16-mixed")
    assert r.returncode == 0, r.stderr[-3000:]
    pol, summary = check_run(tmp_path / "f", CAMS)
    losses = {k: v for k, v in summary["last_metrics"].items() if k.startswith("loss/")}
    assert "loss/refine" in losses and all(np.isfinite(v) for v in losses.values()), losses
    trunk_bytes = sum(p.numel() * p.element_size() for p in pol.refinement.obs_encoder.trunk.state_dict().values())
    sd = torch.load(tmp_path / "f" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    stored = {v.untyped_storage().data_ptr(): v.untyped_storage().nbytes() for v in sd.values()}
    trunk_keys = [k for k in sd if ".trunk." in k]
    assert len(trunk_keys) == 5 * len(pol.refinement.obs_encoder.trunk.state_dict())  # 5 consumers name it ...
    assert sum(stored.values()) < 1.2 * trunk_bytes  # ... and it is stored once


@pytest.mark.parametrize(
    "overrides, expect",
    [
        (["backbone=smolvla", "backbone.checkpoint={missing}"],
         "SmolVLA checkpoint directory {missing} does not exist"),
        (["backbone=smolvla"], "backbone=smolvla needs backbone.checkpoint=..."),
        (["text_encoder=t5"], "text_encoder=t5 needs text_encoder.path=..."),
        (["image_encoder=resnet18"], "image_encoder=resnet18 needs camera images, but no cameras are configured"),
    ],
)
def test_fit_bad_encoder_config_one_clear_error_nothing_written(tmp_path, overrides, expect):
    missing = tmp_path / "no" / "smolvla"
    runs = tmp_path / "runs"
    r = fit(*TINY_RUN, f"run_root={runs}", "run_name=x", *[o.format(missing=missing) for o in overrides])
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: " in r.stderr and expect.format(missing=missing) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not runs.exists()


# ------------------------------------------------- the pixel bench: h stored with the transition (image_encoder=h)
def test_learner_updates_never_run_the_backbone_with_image_encoder_h(tiny):
    """image_encoder=h: the critics and the refinement actor read [h, state] from the transition batch. A whole
    learner update (critics, primary actor, refinement actor; warm-up and online) runs with the SmolVLA backbone
    made to raise on any call, and the h columns of the batch reach the critics and the refinement actor."""
    from dual_actor import constants as K
    from dual_actor.module import DualActorModule
    from factories import tiny_module_kwargs, training_batch
    from test_module import fit

    backbone = {"name": "smolvla", "checkpoint": str(tiny["smolvla"]), "camera_map": CAMERA_MAP, "device": "cpu"}
    policy = {**dict(tasks=["place the bolt", "pick up the bolt", "assemble the bolt"], obs_dim=6, proprio_dim=2,
                     action_dim=4, cameras=CAMS, image_size=SIZE, backbone=backbone, image_encoder={"kind": "h"}),
              **SMALL}
    with pytest.raises(ValueError, match="proprio"):  # the checkpoint's state is 4-d: proprio must be too
        DualActorModule(**tiny_module_kwargs(policy=policy, max_updates=1))
    policy.update(obs_dim=4, proprio_dim=4)
    for phase in ("warmup", "online"):
        torch.manual_seed(0)
        m = DualActorModule(**tiny_module_kwargs(policy=policy, max_updates=2, phase=phase,
                                                 refine_phases=["warmup", "online"]))
        assert m.policy.reads_h and not m.policy.uses_images and m.policy.h_dim == 64

        def forbidden(*a, **k):
            raise AssertionError("the learner ran the VLA")

        m.policy.backbone.embed = m.policy.backbone.forward = forbidden
        batch = training_batch(h_dim=64, seed=1)
        for part in batch[K.TASKS] + [batch[K.TALK_TWEAK]]:  # the factory's state is 6-d; this policy reads 4
            for k in (K.OBS, K.NEXT_OBS):
                part[k] = part[k][:, :4]
            for k in (K.PROPRIO, K.NEXT_PROPRIO):
                part[k] = part[K.OBS if k == K.PROPRIO else K.NEXT_OBS].clone()
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        fit(m, batch)
        assert m.num_updates == 2
        moved = {n for n, p in m.named_parameters() if not torch.equal(before[n], p.detach())}
        assert any(n.startswith("critics.") for n in moved) and any(n.startswith("policy.refinement.") for n in moved)
        assert not any(n.startswith("policy.backbone.") for n in moved)
    # the encoder input is [h, state], in that order, from the batch and at act time
    x = m.policy.encoder_input_from_batch(batch[K.TASKS][0])
    assert torch.equal(x, torch.cat([batch[K.TASKS][0][K.H], batch[K.TASKS][0][K.OBS]], dim=-1))
    h = torch.randn(2, 64)
    assert torch.equal(m.policy.encoder_input(torch.ones(2, 4), h), torch.cat([h, torch.ones(2, 4)], dim=-1))
    with pytest.raises(ValueError, match="pass h"):
        m.policy.encoder_input(torch.ones(2, 4))


def test_state_slice_keeps_the_policy_off_the_privileged_state():
    """env.obs_key=proprio (env=metaworld_pixels): the policy reads [0, proprio_dim) of the robot's vector; the
    object's and goal's positions (entries 4..38 of the bench's state) never reach it."""
    from dual_actor.training import build

    pol = DualActorPolicy(**{**dict(tasks=TASKS2, obs_dim=4, proprio_dim=4, action_dim=4, state_slice=[0, 4]), **SMALL})
    obs = np.arange(39, dtype=np.float32)
    assert pol.state_of(obs).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert torch.equal(pol.state_of(torch.from_numpy(np.stack([obs, obs]))), torch.from_numpy(np.stack([obs, obs]))[:, :4])
    with pytest.raises(ValueError, match="state_slice"):
        DualActorPolicy(**{**dict(tasks=TASKS2, obs_dim=4, proprio_dim=4, action_dim=4, state_slice=[0, 39]), **SMALL})
    from hydra import compose, initialize_config_dir

    import dual_actor.config.store  # noqa: F401  (the schemas)

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        pixels, bench = compose("config", overrides=["env=metaworld_pixels"]), compose("config")
    assert build.policy_config(pixels).state_slice == [0, 4] and build.policy_config(pixels).cameras == CAMS
    assert build.policy_config(bench).state_slice is None
