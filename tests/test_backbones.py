"""Backbones: Eq. 17 pooling, the SmolVLA embedding on a tiny offline SmolVLA, the CLS route."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny_models import (
    build_tiny_cls_model,
    build_tiny_smolvla_checkpoint,
    tiny_smolvla_config,
    tiny_state_stats,
)

from dual_actor.nets.backbones import BACKBONES, CLSBackbone, FirstTokenAdapter, build_backbone, pool_kv
from dual_actor.nets.backbones.pooling import masked_mean_pool

STATE_DIM = 5
SHORT, LONG = "place the bolt", "pick up the red cube"  # 3 and 5 words: a batch of both pads the first


# ----------------------------------------------------------------------------- Eq. 17 pooling


@pytest.mark.parametrize("pad_value", [1e6, float("inf")])
def test_masked_mean_pool_matches_hand_computed_example(pad_value):
    x = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [pad_value, pad_value], [pad_value, pad_value]],
                      [[0.0, 1.0], [2.0, 2.0], [4.0, 0.0], [pad_value, pad_value]]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    expected = torch.tensor([[2.0, 4.0], [2.0, 1.0]])  # (1+3)/2, (2+6)/2 ; (0+2+4)/3, (1+2+0)/3
    torch.testing.assert_close(masked_mean_pool(x, mask), expected)
    torch.testing.assert_close(masked_mean_pool(x, mask.float()), expected)


def test_pool_kv_flattens_heads_and_puts_k_before_v():
    # B=1, L=3 (last padded), H=2 heads, D=2
    k = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[3.0, 4.0], [5.0, 6.0]], [[1e6, 1e6], [1e6, 1e6]]]])
    v = -k
    h = pool_kv(k, v, torch.tensor([[True, True, False]]))
    # K_pool = [[2, 3], [4, 5]] -> flatten (H, D) -> [2, 3, 4, 5]; V_pool = -K_pool
    torch.testing.assert_close(h, torch.tensor([[2.0, 3.0, 4.0, 5.0, -2.0, -3.0, -4.0, -5.0]]))


def test_masked_mean_pool_rejects_an_empty_row_and_bad_shapes():
    x = torch.ones(2, 3, 4)
    with pytest.raises(ValueError, match=r"rows \[1\].*empty"):
        masked_mean_pool(x, torch.tensor([[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="mask must be"):
        masked_mean_pool(x, torch.ones(2, 4))


# ----------------------------------------------------------------------------- SmolVLA


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_smolvla_checkpoint(tmp_path_factory.mktemp("smolvla") / "ckpt", state_dim=STATE_DIM)


@pytest.fixture(scope="module")
def smolvla(ckpt):
    return build_backbone("smolvla", checkpoint=str(ckpt), device="cpu")


def _obs(b: int, seed: int = 0, names=("front", "wrist")) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"state": torch.randn(b, STATE_DIM, generator=g),
            "images": {names[0]: torch.rand(b, 3, 64, 64, generator=g),
                       names[1]: torch.rand(b, 3, 48, 64, generator=g)}}


def _rows(obs: dict, rows: slice) -> dict:
    return {"state": obs["state"][rows], "images": {k: v[rows] for k, v in obs["images"].items()}}


def test_smolvla_embedding_has_2HD_dims_is_deterministic_and_frozen(smolvla):
    # tiny SmolVLM text config: 2 KV heads of width 16 -> 2 * 2 * 16
    assert smolvla.embedding_dim == 64
    obs = _obs(2)
    h1, h2 = smolvla.embed(obs, [SHORT, LONG]), smolvla.embed(obs, [SHORT, LONG])
    assert h1.shape == (2, 64) and h1.dtype == torch.float32 and not h1.requires_grad
    assert torch.equal(h1, h2)
    assert all(not p.requires_grad for p in smolvla.parameters())
    smolvla.train()
    assert not smolvla.training and not smolvla.policy.training


def test_smolvla_embedding_depends_on_the_task_string_not_on_batch_padding(smolvla):
    obs = _obs(2)
    same_obs = _rows(obs, slice(0, 1))
    alone = smolvla.embed(same_obs, [SHORT])
    other_task = smolvla.embed(same_obs, [LONG])
    assert (alone - other_task).abs().max() > 1e-3
    # batch row 0 holds the same observation and task, padded by two language tokens
    padded = smolvla.embed(obs, [SHORT, LONG])
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)


def test_smolvla_v_half_is_the_masked_mean_of_the_last_layers_values(smolvla):
    """Eq. 17 derived independently: hook the last VLM layer's v_proj and average its output
    over the tokens we know are real: 2 cameras x 4 image tokens, the task words, 1 state token."""
    layers = smolvla.policy.model.vlm_with_expert.get_vlm_model().text_model.layers
    captured = []
    handle = layers[-1].self_attn.v_proj.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        h = smolvla.embed(_obs(2), [SHORT, LONG])
    finally:
        handle.remove()
    v = captured[0]  # (B, L, H*D) with L = 8 image + 5 language + 1 state
    assert v.shape[1] == 14
    real = torch.ones(2, 14, dtype=torch.bool)
    real[0, 8 + 3: 8 + 5] = False  # SHORT has 3 words, padded to LONG's 5
    expected = torch.stack([v[b][real[b]].mean(dim=0) for b in range(2)])
    torch.testing.assert_close(h[:, 32:], expected, atol=1e-5, rtol=1e-5)


def test_smolvla_layer_and_image_token_pooling(ckpt, smolvla):
    """backbone.layer / backbone.pool, derived independently: the first layer's V over the 8 image tokens (hooked
    v_proj) is what layer=0, pool=images gives; those K, V precede any attention, so they cannot depend on the
    task or the state (the whole prefix's do); layer=-1 is Eq. 17's last layer."""
    first = build_backbone("smolvla", checkpoint=str(ckpt), device="cpu", layer=0, pool="images")
    layers = first.policy.model.vlm_with_expert.get_vlm_model().text_model.layers
    captured = []
    handle = layers[0].self_attn.v_proj.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        h = first.embed(_obs(2), [SHORT, LONG])
    finally:
        handle.remove()
    torch.testing.assert_close(h[:, 32:], captured[0][:, :8].mean(dim=1), atol=1e-5, rtol=1e-5)
    obs = _obs(1)
    other_state = {**obs, "state": obs["state"] + 1.0}
    torch.testing.assert_close(first.embed(obs, [SHORT]), first.embed(other_state, [LONG]))
    prefix0 = build_backbone("smolvla", checkpoint=str(ckpt), device="cpu", layer=0)
    assert (prefix0.embed(obs, [SHORT]) - prefix0.embed(obs, [LONG])).abs().max() > 1e-4
    last = build_backbone("smolvla", checkpoint=str(ckpt), device="cpu", layer=1)
    assert torch.equal(last.embed(obs, [SHORT]), smolvla.embed(obs, [SHORT]))
    for bad in ({"layer": 2}, {"layer": -3}, {"pool": "language"}):
        with pytest.raises(ValueError, match="backbone."):
            build_backbone("smolvla", checkpoint=str(ckpt), device="cpu", **bad)


def test_smolvla_uses_the_checkpoints_state_normalisation(ckpt, smolvla, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):  # no saved preprocessor -> no stats
        shutil.copy(ckpt / name, bare / name)
    unnormalised = build_backbone("smolvla", checkpoint=bare, device="cpu")
    obs = _obs(1)
    stats = tiny_state_stats(STATE_DIM, 4)["observation.state"]
    normalised = dict(obs, state=(obs["state"] - stats["mean"]) / (stats["std"] + 1e-8))
    torch.testing.assert_close(smolvla.embed(obs, [SHORT]), unnormalised.embed(normalised, [SHORT]))
    assert (smolvla.embed(obs, [SHORT]) - unnormalised.embed(obs, [SHORT])).abs().max() > 1e-4


def test_smolvla_camera_map_and_camera_errors(ckpt, smolvla):
    mapped = build_backbone("smolvla", checkpoint=ckpt, device="cpu",
                            camera_map={"cam_a": "front", "cam_b": "observation.images.wrist"})
    renamed = _obs(1, names=("cam_a", "cam_b"))
    torch.testing.assert_close(mapped.embed(renamed, [SHORT]), smolvla.embed(_obs(1), [SHORT]))
    with pytest.raises(KeyError, match="no camera 'wrist'"):
        smolvla.embed({"state": _obs(1)["state"], "images": {"front": _obs(1)["images"]["front"]}}, [SHORT])
    with pytest.raises(ValueError, match="not an image feature"):
        build_backbone("smolvla", checkpoint=ckpt, device="cpu", camera_map={"a": "front", "b": "top"})
    with pytest.raises(ValueError, match=r"observation\.images\.wrist.*no camera"):
        build_backbone("smolvla", checkpoint=ckpt, device="cpu", camera_map={"a": "front"})
    with pytest.raises(ValueError, match="trained on a 5-d"):
        smolvla.embed(dict(_obs(1), state=torch.zeros(1, 6)), [SHORT])


def test_smolvla_from_config_builds_random_weights_reproducibly(ckpt):
    vlm_dir = ckpt.parent / f"{ckpt.name}_smolvlm"
    cls = BACKBONES["smolvla"]
    b1 = cls.from_config(tiny_smolvla_config(vlm_dir), device="cpu", seed=3)
    b2 = cls.from_config(tiny_smolvla_config(vlm_dir), device="cpu", seed=3)
    assert b1.embedding_dim == 64 and b1.checkpoint is None
    torch.testing.assert_close(b1.embed(_obs(1), [SHORT]), b2.embed(_obs(1), [SHORT]))


def test_smolvla_loading_errors_are_clear(ckpt, tmp_path, monkeypatch):
    cls = BACKBONES["smolvla"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cls(tmp_path / "missing", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        cls(empty, device="cpu")
    # the tiny SmolVLM folder holds a transformers config.json, not a SmolVLA policy
    with pytest.raises(ValueError, match="not a SmolVLA policy config.*model_type='smolvlm'"):
        cls(ckpt.parent / f"{ckpt.name}_smolvlm", device="cpu")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="'nobody-here/no-such-smolvla'.*HF_HUB_OFFLINE"):
        cls("nobody-here/no-such-smolvla", device="cpu")


def test_smolvla_rejects_weights_that_do_not_match_the_architecture(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    cls = BACKBONES["smolvla"]
    weights = load_file(str(ckpt / "model.safetensors"))
    for name, edit, pattern in [
        ("reshaped", lambda w: w.update({"model.state_proj.weight": torch.zeros(64, 16)}),
         r"shape mismatch.*model\.state_proj\.weight: checkpoint \(64, 16\) vs architecture \(64, 32\)"),
        ("dropped", lambda w: w.pop("model.action_out_proj.bias"), r"1 missing keys.*action_out_proj\.bias"),
    ]:
        bad = tmp_path / name
        bad.mkdir()
        shutil.copy(ckpt / "config.json", bad / "config.json")
        w = dict(weights)
        edit(w)
        save_file(w, str(bad / "model.safetensors"))
        with pytest.raises(ValueError, match=pattern):
            cls(bad, device="cpu")
    cls(tmp_path / "dropped", device="cpu", strict=False)  # a missing key may be tolerated on request


# ----------------------------------------------------------------------------- CLS


def test_cls_backbone_returns_the_models_cls_token_and_is_frozen():
    model = build_tiny_cls_model(state_dim=STATE_DIM, d_model=32)
    obs = _obs(2)
    with torch.no_grad():
        direct = model.eval()(obs, [SHORT, LONG])[:, 0]
    bb = CLSBackbone(model, FirstTokenAdapter(embedding_dim=32), device="cpu")
    h = bb.embed(obs, [SHORT, LONG])
    assert bb.embedding_dim == 32 and h.shape == (2, 32) and not h.requires_grad
    torch.testing.assert_close(h, direct)
    assert (h[0] - bb.embed(_rows(obs, slice(0, 1)), [LONG])[0]).abs().max() > 1e-4  # the task matters
    assert all(not p.requires_grad for p in bb.parameters())
    bb.train()
    assert not model.training


def test_cls_backbone_from_config_mappings_and_errors():
    bb = build_backbone(
        "cls", device="cpu",
        model={"_target_": "tiny_models.build_tiny_cls_model", "state_dim": STATE_DIM, "d_model": 32},
        adapter={"_target_": "dual_actor.nets.backbones.cls.FirstTokenAdapter", "embedding_dim": 32},
    )
    direct = build_tiny_cls_model(state_dim=STATE_DIM, d_model=32).eval()
    with torch.no_grad():
        torch.testing.assert_close(bb.embed(_obs(1), [SHORT]), direct(_obs(1), [SHORT])[:, 0])
    with pytest.raises(ValueError, match=r"returned \(1, 32\); expected \(1, 16\)"):
        CLSBackbone(direct, FirstTokenAdapter(32), embedding_dim=16, device="cpu").embed(_obs(1), [SHORT])
    with pytest.raises(ValueError, match="embedding_dim"):
        CLSBackbone(direct, lambda m, o, t: m(o, t)[:, 0], device="cpu")
    with pytest.raises(ValueError, match="unknown backbone 'octo'"):
        build_backbone("octo")
    assert set(BACKBONES) == {"state", "smolvla", "cls"}
