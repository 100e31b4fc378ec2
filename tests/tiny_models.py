"""Tiny models built locally (random weights, no Hub) for the backbone tests and smoke fits.

* ``write_smolvlm_folder``: a SmolVLM folder that ``AutoConfig`` / ``AutoProcessor.from_pretrained``
  read offline: the given ``SmolVLMConfig``, a word-level stand-in tokenizer carrying SmolVLM's
  special image tokens, and a ``SmolVLMProcessor``. Token ids do NOT match the real SmolVLM tokenizer
  (only the special-token wiring does): fine for random weights, wrong for real ones.
* ``build_tiny_smolvlm``: that folder for a few-layer SmolVLM (the recipe that lerobot 0.4.4 reads offline: a
  SmolVLMConfig with a small vision tower and llama text model, the processor saved beside).
* ``build_tiny_smolvla_checkpoint``: a random-weight ``SmolVLAPolicy`` saved in the
  ``lerobot/smolvla_base`` layout (config.json + model.safetensors + pre/post-processor with stats),
  its ``vlm_model_name`` pointing at a tiny SmolVLM folder.
* ``build_tiny_cls_model``: a one-layer transformer over [CLS, state, image patches, task words].
* ``build_tiny_t5`` / ``build_tiny_bert``: a one-layer ``T5EncoderModel`` / ``BertModel`` folder
  (``save_pretrained`` layout, word-level tokenizer over the command words) for the command encoders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from dual_actor.vla.smolvlm import IMAGE_TOKENS, WORDS, write_smolvlm_folder  # noqa: F401  (re-exported)


def tiny_smolvlm_config(image_size: int = 64):
    """Vision: hidden 32, 1 layer, 2 heads, patch 16; text (llama): vocab 64, hidden 64, 2 layers,
    4 heads, 2 KV heads, head_dim 16; scale_factor 2 -> (image_size/16)^2/4 tokens per image."""
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=16),
        text_config=dict(model_type="llama", vocab_size=64, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=512),
        scale_factor=2, pad_token_id=0,
    )


def build_tiny_smolvlm(dest: str | Path, image_size: int = 64) -> Path:
    """A tiny SmolVLM folder (config + stand-in tokenizer + processor) at ``dest``."""
    return write_smolvlm_folder(dest, tiny_smolvlm_config(image_size))


def tiny_smolvla_config(vlm_dir: str | Path, state_dim: int = 5, action_dim: int = 4,
                        cameras: Sequence[str] = ("front", "wrist"), image_size: int = 64):
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (state_dim,))}
    for cam in cameras:
        inputs[f"observation.images.{cam}"] = PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size))
    return SmolVLAConfig(
        vlm_model_name=str(vlm_dir), num_vlm_layers=2, resize_imgs_with_padding=(image_size, image_size),
        chunk_size=8, n_action_steps=8, num_steps=2, device="cpu",
        input_features=inputs, output_features={"action": PolicyFeature(FeatureType.ACTION, (action_dim,))},
    )


def tiny_state_stats(state_dim: int, action_dim: int) -> dict:
    """Non-trivial normalisation stats (state mean 0.1 i, std 1 + 0.5 i), so a test can see them used."""
    i = torch.arange(state_dim, dtype=torch.float32)
    j = torch.arange(action_dim, dtype=torch.float32)
    return {"observation.state": {"mean": 0.1 * i, "std": 1.0 + 0.5 * i},
            "action": {"mean": torch.zeros(action_dim), "std": torch.ones(action_dim) + j}}


def build_tiny_smolvla_checkpoint(
    dest: str | Path,
    state_dim: int = 5,
    action_dim: int = 4,
    cameras: Sequence[str] = ("front", "wrist"),
    image_size: int = 64,
    *,
    vlm_dir: str | Path | None = None,
    with_processors: bool = True,
    seed: int = 0,
) -> Path:
    """A random-weight SmolVLA checkpoint in the lerobot layout at ``dest`` (returned).

    The tiny SmolVLM folder is built at ``dest/../<name>_smolvlm`` unless ``vlm_dir`` names one.
    ``with_processors`` also saves lerobot's pre/post-processor pipelines with ``tiny_state_stats``.
    """
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    dest = Path(dest)
    if vlm_dir is None:
        vlm_dir = build_tiny_smolvlm(dest.parent / f"{dest.name}_smolvlm", image_size=image_size)
    config = tiny_smolvla_config(vlm_dir, state_dim, action_dim, cameras, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = SmolVLAPolicy(config)
    policy.save_pretrained(dest)
    if with_processors:
        pre, post = make_smolvla_pre_post_processors(config, dataset_stats=tiny_state_stats(state_dim, action_dim))
        pre.save_pretrained(dest)
        post.save_pretrained(dest)
    return dest


class TinyCLSTransformer(nn.Module):
    """``forward(observation, tasks) -> tokens (B, 1 + 1 + P + W, d_model)``, CLS first.

    Tokens: a learned CLS, the projected state, P image patches per camera (``observation`` may be a
    state tensor or ``{"state": ..., "images": {cam: (B, 3, H, W)}}``), and the task words (a fixed word
    list, unknown words share one id; padding words are masked out of attention).
    """

    def __init__(self, state_dim: int = 5, d_model: int = 32, num_heads: int = 2, num_layers: int = 1,
                 patch: int = 16, words: Sequence[str] = WORDS):
        super().__init__()
        self.vocab = {w: i + 2 for i, w in enumerate(words)}  # 0 = pad, 1 = unknown
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.state_proj = nn.Linear(state_dim, d_model)
        self.patchify = nn.Conv2d(3, d_model, kernel_size=patch, stride=patch)
        self.word_emb = nn.Embedding(len(words) + 2, d_model, padding_idx=0)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward=2 * d_model, dropout=0.0,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.d_model = d_model

    def word_ids(self, tasks: Sequence[str], device=None) -> torch.Tensor:
        seqs = [[self.vocab.get(w, 1) for w in t.lower().split()] or [1] for t in tasks]
        n = max(len(s) for s in seqs)
        return torch.tensor([s + [0] * (n - len(s)) for s in seqs], dtype=torch.long, device=device)

    def forward(self, observation, tasks: Sequence[str]) -> torch.Tensor:
        state = observation["state"] if isinstance(observation, dict) else observation
        images = observation.get("images", {}) if isinstance(observation, dict) else {}
        b = state.shape[0]
        parts = [self.cls.expand(b, -1, -1), self.state_proj(state)[:, None]]
        for cam in sorted(images):
            parts.append(self.patchify(images[cam]).flatten(2).transpose(1, 2))
        ids = self.word_ids(tasks, state.device)
        parts.append(self.word_emb(ids))
        x = torch.cat(parts, dim=1)
        pad = torch.zeros(b, x.shape[1], dtype=torch.bool, device=x.device)
        pad[:, x.shape[1] - ids.shape[1]:] = ids == 0
        return self.encoder(x, src_key_padding_mask=pad)


def build_tiny_cls_model(state_dim: int = 5, d_model: int = 32, seed: int = 0, **kwargs) -> TinyCLSTransformer:
    """A seeded ``TinyCLSTransformer`` (the global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyCLSTransformer(state_dim=state_dim, d_model=d_model, **kwargs)


COMMAND_WORDS = ("move", "left", "right", "a", "bit", "and", "up", "down", "forward", "backward", "[null]", "go")


def word_tokenizer(specials: Sequence[str], template: str, pad: str, unk: str, words: Sequence[str] = COMMAND_WORDS,
                   **special_kw):
    """A whitespace word-level ``PreTrainedTokenizerFast`` (specials first, then ``words``) whose post-processor
    follows ``template`` (e.g. ``"$A </s>"``); returns (tokenizer, vocab size)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*specials, *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = TemplateProcessing(
        single=template, special_tokens=[(s, vocab[s]) for s in specials if s in template]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token=unk, **special_kw), len(vocab)


def build_tiny_t5(dest: str | Path, d_model: int = 16, seed: int = 0, words: Sequence[str] = COMMAND_WORDS) -> Path:
    """A random-weight one-layer ``T5EncoderModel`` (d_model 16) + word tokenizer saved at ``dest``."""
    from transformers import T5Config, T5EncoderModel

    dest = Path(dest)
    tok, n = word_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", "<pad>", "<unk>", words, eos_token="</s>")
    cfg = T5Config(vocab_size=n, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=1, num_heads=2,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        T5EncoderModel(cfg).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def build_tiny_bert(dest: str | Path, hidden: int = 16, seed: int = 1, words: Sequence[str] = COMMAND_WORDS) -> Path:
    """A random-weight one-layer ``BertModel`` (hidden 16) + word tokenizer saved at ``dest``."""
    from transformers import BertConfig, BertModel

    dest = Path(dest)
    tok, n = word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "[CLS] $A [SEP]", "[PAD]", "[UNK]", words,
                            cls_token="[CLS]", sep_token="[SEP]")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        BertModel(BertConfig(vocab_size=n, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=2 * hidden, max_position_embeddings=32)).save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest
