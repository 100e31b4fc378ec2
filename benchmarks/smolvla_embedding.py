"""SmolVLA task embedding (Eq. 17) at its real size, random weights: latency, throughput, + primary action.

What is built (no Hub needed):
* SmolVLM2-500M-Video-Instruct's architecture from its config (values written below, as published:
  SigLIP vision 768 wide, 12 layers, 512x512 input, patch 16; pixel-shuffle scale 4 -> 64 tokens per
  image; llama text model 960 wide, 15 heads, 5 KV heads of width 64, 32 layers of which SmolVLA keeps
  the first 16; vocab 49280 with the image tokens at their real ids), with random weights, inside
  lerobot 0.4.4's SmolVLAPolicy with its default config (num_vlm_layers=16, action expert 0.75 wide,
  cross-attention every other layer, resize_imgs_with_padding=(512, 512), tokenizer_max_length 48).
* A local tokenizer/processor folder (``tests/tiny_models.write_smolvlm_folder``): word-level stand-in
  tokenizer with the real vocab size and special-token ids (one token per word; the real BPE tokenizer
  gives somewhat more tokens per instruction, a few tokens out of a ~140-token prefix).
* Inputs: ``--cameras`` cameras (default 2) of ``--image-size`` (default 256x256, smolvla_base's
  camera shape) that SmolVLA resizes with padding to 512x512, a 6-d state, a 12-word task.
  Prefix = cameras x 64 image tokens + language tokens + 1 state token.
* h = 2 * 5 * 64 = 640 dims; the primary actor is dual_actor's ConsistencyPolicy (one step, Eq. 1) with
  DualActorPolicy's default widths (256, 256, 256), float32, on h and the state as proprio.

Measured (CUDA-synchronised wall clock, after ``--warmup`` calls): embedding latency at batch 1
(p50/p99 over ``--iters`` calls), embedding + one action step at batch 1, and both as throughput at
``--batch`` (default 32). Model dtype: bf16 on CUDA, float32 on CPU (``--dtype`` overrides).

    python benchmarks/smolvla_embedding.py [--device cuda] [--iters 200] [--warmup 20] [--batch 32]
    python benchmarks/smolvla_embedding.py --tiny --device cpu --iters 2 --warmup 1 --batch 2 --image-size 64  # tests
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from dual_actor.nets.backbones.smolvla import SmolVLABackbone  # noqa: E402
from dual_actor.nets.consistency import ConsistencyPolicy  # noqa: E402

# HuggingFaceTB/SmolVLM2-500M-Video-Instruct config.json (architecture fields)
SMOLVLM2_500M = dict(
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=512, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
    text_config=dict(model_type="llama", vocab_size=49280, hidden_size=960, intermediate_size=2560,
                     num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5, head_dim=64,
                     max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                     tie_word_embeddings=False, pad_token_id=2),
    scale_factor=4, image_token_id=49190, pad_token_id=128002, tie_word_embeddings=False,
)
# the real tokenizer's added-token ids (added_tokens.json); <|im_end|> (id 2) is its pad token
SMOLVLM2_SPECIAL_IDS = {"<global-img>": 49152, "<fake_token_around_image>": 49189, "<image>": 49190,
                        "<end_of_utterance>": 49279}
STATE_DIM = ACTION_DIM = 6
TASK = "pick up the red cube and put it in the top drawer"


def build(vlm_dir: Path, cameras: int, image_size: int, device: str, dtype: str | None,
          tiny: bool = False) -> SmolVLABackbone:
    """The measured backbone: SmolVLA at its real size (SmolVLM2-500M, ``num_vlm_layers=16``, lerobot's default
    config) or, with ``tiny``, the tests' tiny one (``tests/tiny_models``: a 2-layer, 64-wide SmolVLM with a
    1-layer vision tower on 64x64 inputs, ``num_vlm_layers=2``): same code path, a check that runs in seconds."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from tiny_models import build_tiny_smolvlm, tiny_smolvla_config, write_smolvlm_folder
    from transformers import SmolVLMConfig

    names = [f"camera{i + 1}" for i in range(cameras)]
    if tiny:
        build_tiny_smolvlm(vlm_dir)
        config = tiny_smolvla_config(vlm_dir, STATE_DIM, ACTION_DIM, cameras=names)
        config.device = device
        for name in names:  # the cameras' own size; SmolVLA resizes them with padding to the VLM's input
            config.input_features[f"observation.images.{name}"] = PolicyFeature(FeatureType.VISUAL,
                                                                                 (3, image_size, image_size))
        return SmolVLABackbone.from_config(config, device=device, dtype=dtype, seed=0)
    write_smolvlm_folder(vlm_dir, SmolVLMConfig(**copy.deepcopy(SMOLVLM2_500M)),
                         special_ids=SMOLVLM2_SPECIAL_IDS, pad_id=2, unk_id=0)
    inputs = {"observation.state": PolicyFeature(FeatureType.STATE, (STATE_DIM,))}
    for name in names:
        inputs[f"observation.images.{name}"] = PolicyFeature(FeatureType.VISUAL, (3, image_size, image_size))
    config = SmolVLAConfig(vlm_model_name=str(vlm_dir), load_vlm_weights=False, device=device,
                           input_features=inputs,
                           output_features={"action": PolicyFeature(FeatureType.ACTION, (ACTION_DIM,))})
    return SmolVLABackbone.from_config(config, device=device, dtype=dtype, seed=0)


def inputs(b: int, cameras: int, image_size: int, device: torch.device):
    g = torch.Generator().manual_seed(b)
    obs = {"state": torch.randn(b, STATE_DIM, generator=g).to(device),
           "images": {f"camera{i + 1}": torch.rand(b, 3, image_size, image_size, generator=g).to(device)
                      for i in range(cameras)}}
    return obs, [TASK] * b


def timed(fn, iters: int, warmup: int, device: torch.device) -> np.ndarray:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return np.asarray(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, help="model dtype (default bf16 on CUDA, float32 on CPU)")
    p.add_argument("--iters", type=int, default=200,
                   help="timed calls per batch-1 latency measurement (throughput: iters // 4, at least 1)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=32, help="batch size of the throughput measurement")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--tiny", action="store_true",
                   help="the tests' tiny SmolVLA instead of the real size (a quick check of this script, no figure)")
    p.add_argument("--json-out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        backbone = build(Path(tmp) / ("tiny-smolvlm" if args.tiny else "smolvlm2-500m"), args.cameras, args.image_size,
                         args.device, args.dtype, tiny=args.tiny)
    build_s = time.perf_counter() - t0
    actor = ConsistencyPolicy(backbone.embedding_dim, ACTION_DIM, proprio_dim=STATE_DIM).to(device).eval()
    n_params = sum(p.numel() for p in backbone.parameters())
    n_vlm = sum(p.numel() for p in backbone.policy.model.vlm_with_expert.vlm.parameters())

    obs1, tasks1 = inputs(1, args.cameras, args.image_size, device)
    obsb, tasksb = inputs(args.batch, args.cameras, args.image_size, device)
    captured = {}

    def embed(obs, tasks):
        return backbone.embed(obs, tasks)

    @torch.no_grad()
    def embed_act(obs, tasks):
        h = backbone.embed(obs, tasks)
        return actor(h, proprio=obs["state"].float())

    h = embed(obs1, tasks1)
    assert h.shape == (1, backbone.embedding_dim)
    # prefix length, from the pad mask the pooling used
    layers = backbone.policy.model.vlm_with_expert.get_vlm_model().text_model.layers
    def record_length(module, args, out):
        captured["L"] = out.shape[1]

    hook = layers[-1].self_attn.v_proj.register_forward_hook(record_length)
    embed(obs1, tasks1)
    hook.remove()

    lat_e = timed(lambda: embed(obs1, tasks1), args.iters, args.warmup, device) * 1e3
    lat_ea = timed(lambda: embed_act(obs1, tasks1), args.iters, args.warmup, device) * 1e3
    with torch.no_grad():
        lat_a = timed(lambda: actor(h, proprio=obs1["state"].float()), args.iters, args.warmup, device) * 1e3
    thr_iters = max(1, args.iters // 4)
    thr_warmup = -(-args.warmup // 4)  # ceil: 0 only when --warmup 0
    t_e = timed(lambda: embed(obsb, tasksb), thr_iters, thr_warmup, device)
    t_ea = timed(lambda: embed_act(obsb, tasksb), thr_iters, thr_warmup, device)

    def pct(a):
        return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}

    import lerobot
    import transformers

    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    result = {
        "device": device_name,
        "model": "tiny (tests/tiny_models)" if args.tiny else "SmolVLA (SmolVLM2-500M, 16 layers)",
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "params_total_M": n_params / 1e6, "params_vlm_M": n_vlm / 1e6,
        "embedding_dim": backbone.embedding_dim, "prefix_tokens": int(captured["L"]),
        "cameras": args.cameras, "image_size": args.image_size, "iters": args.iters, "warmup": args.warmup,
        "build_s": build_s,
        "embed_b1": pct(lat_e), "embed_plus_action_b1": pct(lat_ea), "action_only_b1": pct(lat_a),
        "batch": args.batch,
        "embed_throughput_per_s": args.batch / float(np.mean(t_e)),
        "embed_plus_action_throughput_per_s": args.batch / float(np.mean(t_ea)),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "lerobot": getattr(lerobot, "__version__", "?")},
    }
    r = result
    print("| device | dtype | prefix tokens | embed B=1 p50 / p99 (ms) | embed+action B=1 p50 / p99 (ms) "
          f"| embed B={r['batch']} (obs/s) | embed+action B={r['batch']} (obs/s) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {r['device']} | {r['dtype']} | {r['prefix_tokens']} "
          f"| {r['embed_b1']['p50_ms']:.1f} / {r['embed_b1']['p99_ms']:.1f} "
          f"| {r['embed_plus_action_b1']['p50_ms']:.1f} / {r['embed_plus_action_b1']['p99_ms']:.1f} "
          f"| {r['embed_throughput_per_s']:.3g} | {r['embed_plus_action_throughput_per_s']:.3g} |")
    print(json.dumps(result, indent=2))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
