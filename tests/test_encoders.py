"""Command encoders (T5, sentence, table) and ResNet image encoders, on tiny local models.

Every pretrained model here is built from a tiny config with random weights and saved to a tmp
folder, then loaded back through the public loaders; nothing touches the Hub.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from dual_actor.nets.common import StateEncoder
from dual_actor.nets.image import (
    MultiCameraEncoder,
    ResNetEncoder,
    ResNetTrunk,
    build_obs_encoder,
)
from dual_actor.nets.refinement import LearnedCommandEncoder, RefinementActor
from dual_actor.nets.text import (
    CheckpointMismatchError,
    CommandTableEncoder,
    SentenceCommandEncoder,
    T5CommandEncoder,
    build_command_encoder,
)

COMMANDS = ["[null]", "move left", "move right a bit", "move left and up", "move forward and down"]
WORDS = ["move", "left", "right", "a", "bit", "and", "up", "down", "forward", "[null]", "go"]


def _word_tokenizer(specials: list[str], template: str, pad: str, unk: str, **special_kw):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = TemplateProcessing(
        single=template, special_tokens=[(s, vocab[s]) for s in specials if s in template]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token=unk, **special_kw), len(vocab)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    from transformers import T5Config, T5EncoderModel

    d = tmp_path_factory.mktemp("tiny_t5")
    tok, n = _word_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", "<pad>", "<unk>", eos_token="</s>")
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=n, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny_bert")
    tok, n = _word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "[CLS] $A [SEP]", "[PAD]", "[UNK]",
                             cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=n, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _direct_mean_pool(model_cls, folder, texts):
    """Independent reference: one text at a time (no padding), plain mean over its tokens."""
    from transformers import AutoTokenizer

    model, tok = model_cls.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return torch.stack([
            model(input_ids=tok(t, return_tensors="pt")["input_ids"]).last_hidden_state[0].mean(0) for t in texts
        ])


# ----------------------------------------------------------------------------------- text


def test_t5_table_equals_direct_mean_pool_and_is_cached(t5_dir):
    from transformers import T5EncoderModel

    enc = build_command_encoder("t5", COMMANDS, model_name_or_path=str(t5_dir), batch_size=2)
    assert isinstance(enc, T5CommandEncoder) and enc.out_dim == 16
    ids = enc.ids(COMMANDS)
    e1 = enc(ids)
    # Batched with padding (batch_size=2 mixes lengths) == one-at-a-time unpadded mean.
    torch.testing.assert_close(e1, _direct_mean_pool(T5EncoderModel, t5_dir, COMMANDS), atol=1e-5, rtol=1e-5)
    assert torch.equal(enc(ids), e1)  # repeat: identical
    assert not torch.allclose(e1[1], e1[2])  # "move left" vs "move right a bit"
    assert not e1.requires_grad and list(enc.parameters()) == []  # frozen, model not a submodule
    # A second build from the same folder gives the same table (deterministic, eval mode); same
    # batching, since a different padding may change the last bits of the float sums.
    assert torch.equal(T5CommandEncoder(COMMANDS, str(t5_dir), batch_size=2).table, enc.table)
    torch.testing.assert_close(T5CommandEncoder(COMMANDS, str(t5_dir)).table, enc.table, atol=1e-5, rtol=1e-5)
    # encode_texts: vocabulary rows come from the table; new strings are encoded once and cached.
    assert torch.equal(enc.encode_texts(["move left"])[0], e1[1])
    new = enc.encode_texts(["go up", "move left"])
    assert torch.equal(enc.encode_texts(["go up"])[0], new[0]) and list(enc._cache) == ["go up"]
    torch.testing.assert_close(new[0], _direct_mean_pool(T5EncoderModel, t5_dir, ["go up"])[0], atol=1e-5, rtol=1e-5)


def test_unknown_command_and_bad_sources_are_clear_errors(t5_dir, bert_dir, tmp_path):
    enc = build_command_encoder("t5", COMMANDS, model_name_or_path=str(t5_dir))
    with pytest.raises(KeyError, match="'jump' is not in the policy's command vocabulary"):
        enc.ids(["move left", "jump"])
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_command_encoder("t5", COMMANDS, model_name_or_path=str(tmp_path / "missing"))
    with pytest.raises(OSError, match="no-such-org/no-such-t5.*pass its local path"):
        build_command_encoder("t5", COMMANDS, model_name_or_path="no-such-org/no-such-t5")
    with pytest.raises(CheckpointMismatchError, match="'bert' model, not T5"):
        build_command_encoder("t5", COMMANDS, model_name_or_path=str(bert_dir))
    with pytest.raises(CheckpointMismatchError, match="kind='t5'"):
        build_command_encoder("sentence", COMMANDS, model_name_or_path=str(t5_dir))
    with pytest.raises(ValueError, match="unknown command encoder kind 'clip'.*learned"):
        build_command_encoder("clip", COMMANDS)
    with pytest.raises(ValueError, match="needs model_name_or_path"):
        build_command_encoder("t5", COMMANDS)


def test_saved_refinement_actor_reloads_without_the_language_model(t5_dir, tmp_path):
    enc = build_command_encoder("t5", COMMANDS, model_name_or_path=str(t5_dir), keep_model=False)
    torch.manual_seed(0)
    actor = RefinementActor(StateEncoder(6, 8), enc, action_dim=3, proj_dim=8, hidden=(8,))
    torch.nn.init.normal_(actor.head[-1].weight)  # non-zero output so the comparison means something
    sd = actor.state_dict()
    assert "command_encoder.table" in sd and not any("SelfAttention" in k or "shared" in k for k in sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "actor.safetensors"))

    spec = enc.reload_config()
    assert spec["kind"] == "table" and spec["out_dim"] == 16 and spec["source"]["kind"] == "t5"
    kind = spec.pop("kind")
    table = build_command_encoder(kind, COMMANDS, **spec)
    assert isinstance(table, CommandTableEncoder)
    with pytest.raises(RuntimeError, match="command table is empty"):
        table(table.ids(["move left"]))
    reloaded = RefinementActor(StateEncoder(6, 8), table, action_dim=3, proj_dim=8, hidden=(8,))
    reloaded.load_state_dict(load_file(str(tmp_path / "actor.safetensors")), strict=True)

    obs, ids = torch.randn(4, 6), enc.ids(COMMANDS[1:])
    torch.testing.assert_close(reloaded(obs, ids), actor(obs, ids), rtol=0, atol=0)
    assert torch.equal(reloaded.command_encoder.encode_texts(["move left"]), enc.encode_texts(["move left"]))
    # Only the projection learns: the command table gets no gradient.
    actor(obs, ids).sum().backward()
    assert actor.cmd_proj[0].weight.grad is not None and enc.table.grad is None
    with pytest.raises(RuntimeError, match="released"):
        enc.encode_texts(["go up"])


def test_sentence_encoder_is_l2_normalised_mean_pool(bert_dir):
    from transformers import BertModel

    enc = build_command_encoder("sentence", COMMANDS, model_name_or_path=str(bert_dir))
    assert isinstance(enc, SentenceCommandEncoder) and enc.out_dim == 16
    e = enc(enc.ids(COMMANDS))
    torch.testing.assert_close(e.norm(dim=1), torch.ones(len(COMMANDS)), atol=1e-6, rtol=0)
    ref = torch.nn.functional.normalize(_direct_mean_pool(BertModel, bert_dir, COMMANDS), dim=1)
    torch.testing.assert_close(e, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(enc(enc.ids(COMMANDS)), e) and not torch.allclose(e[1], e[2])
    raw = SentenceCommandEncoder(COMMANDS, str(bert_dir), normalize=False)
    assert not torch.allclose(raw.table.norm(dim=1), torch.ones(len(COMMANDS)))


def test_learned_kind_is_the_existing_trainable_embedding():
    enc = build_command_encoder("learned", COMMANDS, out_dim=8)
    assert type(enc) is LearnedCommandEncoder and enc(enc.ids(["[null]"])).shape == (1, 8)
    assert sum(p.numel() for p in enc.parameters() if p.requires_grad) == len(COMMANDS) * 8


# ---------------------------------------------------------------------------------- image


@pytest.mark.parametrize("arch,blocks", [("resnet18", 2), ("resnet10", 1)])
def test_resnet_output_shapes(arch, blocks):
    torch.manual_seed(0)
    for size in (128, 64):
        x = torch.rand(2, 3, size, size)
        for pooling, raw_dim in (("spatial", 512 * 8), ("avg", 512)):
            enc = ResNetEncoder(arch, pooling=pooling, image_size=size, out_dim=32).eval()
            assert len(enc.trunk.layer1) == blocks and enc(x).shape == (2, 32) and enc.out_dim == 32
            raw = ResNetEncoder(arch, pooling=pooling, image_size=size, out_dim=None).eval()
            assert raw(x).shape == (2, raw_dim) and raw.out_dim == raw_dim
    spatial64 = ResNetEncoder(arch, pooling="spatial", image_size=64)
    with pytest.raises(ValueError, match="image_size does not match"):
        spatial64(torch.rand(2, 3, 128, 128))


def test_frozen_trunk_has_no_trainable_params_and_keeps_batchnorm_still():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    frozen = ResNetEncoder("resnet10", freeze=True, pooling="avg", out_dim=None)
    assert [p for p in frozen.parameters() if p.requires_grad] == []
    frozen.train()
    assert not frozen.trunk.training and not frozen.trunk.bn1.training
    bn_before = frozen.trunk.bn1.running_mean.clone()
    y1, y2 = frozen(x), frozen(x)
    assert torch.equal(y1, y2) and not y1.requires_grad
    assert torch.equal(frozen.trunk.bn1.running_mean, bn_before)
    # Frozen trunk + spatial head: only the head trains.
    head_only = ResNetEncoder("resnet10", freeze=True, image_size=64)
    assert {n.split(".")[0] for n, p in head_only.named_parameters() if p.requires_grad} == {"head"}
    # Control: a fine-tuned trunk in train mode does move its BatchNorm statistics.
    tuned = ResNetEncoder("resnet10", freeze=False, pooling="avg", out_dim=None).train()
    before = tuned.trunk.bn1.running_mean.clone()
    tuned(x)
    assert not torch.equal(tuned.trunk.bn1.running_mean, before)


def test_weights_file_loads_into_matching_arch_and_mismatch_is_clear(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    full = resnet18()  # torchvision layout, fc included (ignored by the trunk)
    torch.save(full.state_dict(), tmp_path / "r18.pth")
    save_file(full.state_dict(), str(tmp_path / "r18.safetensors"))
    for name in ("r18.pth", "r18.safetensors"):
        enc = ResNetEncoder("resnet18", weights_path=tmp_path / name, pooling="avg", image_size=64)
        assert torch.equal(enc.trunk.layer4[1].conv2.weight, full.layer4[1].conv2.weight)
        assert torch.equal(enc.trunk.bn1.running_var, full.bn1.running_var)
    with pytest.raises(ValueError, match=r"does not match resnet10.*unexpected.*layer1\.1\..*deeper ResNet"):
        ResNetEncoder("resnet10", weights_path=tmp_path / "r18.pth")
    torch.save(full, tmp_path / "module.pth")  # a pickled module, not a state_dict
    with pytest.raises(ValueError, match="state_dict"):
        ResNetTrunk("resnet18", weights_path=tmp_path / "module.pth")
    with pytest.raises(FileNotFoundError):
        ResNetTrunk("resnet18", weights_path=tmp_path / "nope.pth")


def test_uint8_and_float_images_agree():
    torch.manual_seed(0)
    enc = ResNetEncoder("resnet10", image_size=64, out_dim=16).eval()
    u8 = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    torch.testing.assert_close(enc(u8), enc(u8.float() / 255.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.rand(2, 64, 64))


def test_multi_camera_encoder_contract_sharing_and_errors():
    torch.manual_seed(0)
    cams = ["front", "wrist.left"]
    obs = {"images": {c: torch.rand(2, 3, 64, 64) for c in cams}, "state": torch.randn(2, 5)}
    shared = MultiCameraEncoder(cams, arch="resnet10", image_size=64, camera_dim=8, state_dim=5,
                                state_feature_dim=4, out_dim=12).eval()
    out = shared(obs)
    assert out.shape == (2, 12) and shared.out_dim == 12
    # Cameras batched through one trunk == one call per camera; cached features reuse == recompute.
    feats = shared.image_features(obs)
    for c, f in zip(cams, feats):
        torch.testing.assert_close(f, shared.trunk(obs["images"][c]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared(obs, features=feats), out, rtol=0, atol=0)
    per_cam = MultiCameraEncoder(cams, arch="resnet10", shared=False, image_size=64, state_dim=5)
    assert set(per_cam.trunks) == {"front", "wrist_left"} and per_cam(obs).shape == (2, per_cam.out_dim)
    # Two encoders (e.g. two critics) on one frozen trunk share its parameters.
    trunk = ResNetTrunk("resnet10", freeze=True)
    a = MultiCameraEncoder(cams, trunk=trunk, image_size=64)
    b = MultiCameraEncoder(cams, trunk=trunk, image_size=64)
    assert a.trunk is b.trunk and not any(p.requires_grad for p in a.trunk.parameters())
    with pytest.raises(KeyError, match="wrist.left"):
        shared({"images": {"front": obs["images"]["front"]}, "state": obs["state"]})
    with pytest.raises(KeyError, match="state_dim=5"):
        shared({"images": obs["images"]})


def test_build_obs_encoder_plugs_into_the_refinement_actor():
    assert type(build_obs_encoder("state", obs_dim=6, out_dim=8)) is StateEncoder
    enc = build_obs_encoder("resnet10", cameras=["front"], image_size=64, camera_dim=8, state_dim=3, out_dim=16)
    assert isinstance(enc, MultiCameraEncoder) and len(enc.trunk.layer1) == 1
    with pytest.raises(ValueError, match="unknown observation encoder kind 'vit'"):
        build_obs_encoder("vit")
    with pytest.raises(ValueError, match="conflicts"):
        build_obs_encoder("resnet10", arch="resnet18", cameras=["front"])
    actor = RefinementActor(enc, LearnedCommandEncoder(COMMANDS, 8), action_dim=3, proj_dim=8, hidden=(8,))
    obs = {"images": {"front": torch.rand(2, 3, 64, 64)}, "state": torch.randn(2, 3)}
    mu = actor(obs, actor.command_encoder.ids(["move left", "[null]"]))
    assert mu.shape == (2, 3)
    mu.sum().backward()
    assert enc.trunk.conv1.weight.grad is not None  # not frozen: the trunk fine-tunes
