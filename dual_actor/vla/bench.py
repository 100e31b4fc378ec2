"""The bench VLA: lerobot 0.4.4's SmolVLA, reduced to fit a CPU, trained from scratch on the bench's demos.

What a user does first on a robot (supervised fine-tuning of the VLA on their demos), done here without a model hub:
the VLM is a small SmolVLM built locally (:mod:`dual_actor.vla.smolvlm`: a word-level tokenizer over the bench's
instructions), and everything trains, vision tower and language model included (``freeze_vision_encoder=False,
train_expert_only=False``: a random VLM left frozen would give a random h). The policy is lerobot's own
``SmolVLAPolicy`` and its loss (flow matching on action chunks), its own pre/post-processors (tokenizer, mean/std
normalisation of the state and the actions with the demos' statistics) and its optimiser preset (AdamW, cosine decay
after a linear warm-up).

Inputs, nothing privileged: the rendered cameras (``vla.cameras``, resized with padding to ``vla.image_size``), the
task's instruction and the proprioception (``obs/proprio``: hand xyz + gripper opening). Targets: chunks of
``vla.chunk_size`` demo actions from each step; steps past an episode's end repeat its last action and are masked
out of the loss (lerobot 0.4.4 reads that mask from the batch key ``actions_id_pad``, so the sample carries it
under that name as well as ``action_is_pad``).

:func:`train_bench_vla` writes ``out/``: the lerobot policy folder (``config.json``, ``model.safetensors``,
``policy_preprocessor.json`` / ``policy_postprocessor.json`` + their state files; ``SmolVLAPolicy.from_pretrained``
and ``backbone=smolvla backbone.checkpoint=out`` load it), ``vlm/`` (the SmolVLM folder its ``vlm_model_name``
names, as an absolute path), ``train.json`` (what was trained on, the loss every ``log_every`` updates, seconds),
``tb/`` and ``eval.json`` (the VLA acting alone on the bench's evaluation trials, :func:`evaluate_vla`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from data_tools.atomic import atomic_write_text

STATE_KEY = "observation.state"
IMAGE_KEY = "observation.images."
ACTION_KEY = "action"
PAD_KEYS = ("action_is_pad", "actions_id_pad")  # lerobot's datasets name it the first, its SmolVLA reads the second


def smolvlm_config(v: Any):
    """The SmolVLM architecture of a ``vla`` config section (vision tower + llama text model, 2 x 2 patch merge)."""
    from transformers import SmolVLMConfig

    return SmolVLMConfig(
        vision_config=dict(hidden_size=int(v.vision_hidden), intermediate_size=4 * int(v.vision_hidden),
                           num_hidden_layers=int(v.vision_layers), num_attention_heads=int(v.vision_heads),
                           image_size=int(v.image_size), patch_size=int(v.patch_size)),
        text_config=dict(model_type="llama", vocab_size=128, hidden_size=int(v.text_hidden),
                         intermediate_size=4 * int(v.text_hidden), num_hidden_layers=int(v.text_layers),
                         num_attention_heads=int(v.text_heads), num_key_value_heads=int(v.kv_heads),
                         head_dim=int(v.text_hidden) // int(v.text_heads), max_position_embeddings=512),
        scale_factor=2, pad_token_id=0,
    )


def smolvla_config(v: Any, vlm_dir: str | Path, cameras: Sequence[str], state_dim: int, action_dim: int):
    """lerobot's ``SmolVLAConfig`` for the bench VLA: the VLM at ``vlm_dir`` with all its text layers, everything
    trained, the cameras and the proprio state as inputs, ``action_dim`` actions in chunks."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    size = int(v.image_size)
    inputs = {STATE_KEY: PolicyFeature(FeatureType.STATE, (int(state_dim),))}
    for cam in cameras:
        inputs[IMAGE_KEY + cam] = PolicyFeature(FeatureType.VISUAL, (3, size, size))
    return SmolVLAConfig(
        vlm_model_name=str(Path(vlm_dir).resolve()), load_vlm_weights=False, num_vlm_layers=int(v.text_layers),
        resize_imgs_with_padding=(size, size), chunk_size=int(v.chunk_size), n_action_steps=int(v.n_action_steps),
        num_steps=int(v.num_steps), freeze_vision_encoder=False, train_expert_only=False, device="cpu",
        optimizer_lr=float(v.lr), scheduler_warmup_steps=int(v.warmup_steps), scheduler_decay_steps=int(v.steps),
        input_features=inputs, output_features={ACTION_KEY: PolicyFeature(FeatureType.ACTION, (int(action_dim),))},
    )


class DemoChunks(torch.utils.data.Dataset):
    """Every step of every episode as one SmolVLA training sample: the cameras' frames (float (3, H, W) in [0, 1]),
    the proprio state, the next ``chunk`` actions (padded with the last one past the end, ``action_is_pad`` /
    ``actions_id_pad`` True there) and the task string. Frames stay uint8 in memory."""

    def __init__(self, episodes: Sequence[Any], cameras: Sequence[str], chunk: int, proprio_key: str = "proprio"):
        if not episodes:
            raise ValueError("no episodes to train the VLA on")
        missing = sorted({c for ep in episodes for c in cameras if c not in ep.obs})
        if missing:
            raise ValueError(f"the demos have no obs/{missing[0]} images (cameras {list(cameras)} needed; "
                             f"render them with env.cameras or vla.cameras)")
        self.cameras, self.chunk = list(cameras), int(chunk)
        self.frames = {c: np.concatenate([ep.obs[c] for ep in episodes]) for c in self.cameras}
        self.state = np.concatenate([ep.obs[proprio_key] for ep in episodes]).astype(np.float32)
        self.actions = np.concatenate([ep.actions for ep in episodes]).astype(np.float32)
        self.tasks = [ep.task for ep in episodes]
        lengths = [len(ep.actions) for ep in episodes]
        self.episode = np.repeat(np.arange(len(episodes)), lengths)
        self.end = np.repeat(np.cumsum(lengths), lengths)  # one past each step's episode's last step

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        idx = np.arange(i, i + self.chunk)
        pad = idx >= self.end[i]
        idx = np.minimum(idx, self.end[i] - 1)
        out: dict[str, Any] = {IMAGE_KEY + c: torch.from_numpy(self.frames[c][i]).permute(2, 0, 1).float() / 255.0
                               for c in self.cameras}
        out[STATE_KEY] = torch.from_numpy(self.state[i])
        out[ACTION_KEY] = torch.from_numpy(self.actions[idx])
        for k in PAD_KEYS:
            out[k] = torch.from_numpy(pad)
        out["task"] = self.tasks[self.episode[i]]
        return out

    def stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """Mean / std of the state and the actions over every step (what lerobot's normaliser reads)."""
        def ms(x: np.ndarray) -> dict[str, torch.Tensor]:
            return {"mean": torch.from_numpy(x.mean(0)), "std": torch.from_numpy(np.maximum(x.std(0), 1e-6)),
                    "min": torch.from_numpy(x.min(0)), "max": torch.from_numpy(x.max(0))}
        return {STATE_KEY: ms(self.state), ACTION_KEY: ms(self.actions)}


class VLAActor:
    """A trained SmolVLA acting on the bench: ``reset()`` at each episode start, ``act(state, images, task)`` -> the
    action (numpy, unnormalised). Chunks of ``n_action_steps`` actions are sampled as lerobot's ``select_action``
    does (its action queue)."""

    def __init__(self, policy: Any, pre: Any, post: Any, proprio: slice = slice(0, 4)):
        self.policy, self.pre, self.post, self.proprio = policy.eval(), pre, post, proprio
        self.cameras = [k[len(IMAGE_KEY):] for k in policy.config.input_features if k.startswith(IMAGE_KEY)]

    @classmethod
    def load(cls, folder: str | Path) -> "VLAActor":
        """The policy folder :func:`train_bench_vla` wrote (lerobot's ``from_pretrained`` for the policy and both
        processors)."""
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
        from lerobot.processor import PolicyProcessorPipeline
        from lerobot.processor.converters import (
            batch_to_transition, policy_action_to_transition, transition_to_batch, transition_to_policy_action)

        folder = Path(folder)
        policy = SmolVLAPolicy.from_pretrained(folder)
        pre = PolicyProcessorPipeline.from_pretrained(folder, "policy_preprocessor.json",
                                                      to_transition=batch_to_transition, to_output=transition_to_batch)
        post = PolicyProcessorPipeline.from_pretrained(folder, "policy_postprocessor.json",
                                                       to_transition=policy_action_to_transition,
                                                       to_output=transition_to_policy_action)
        return cls(policy, pre, post)

    def reset(self) -> None:
        self.policy.reset()

    @torch.no_grad()
    def act(self, state: np.ndarray, images: Mapping[str, np.ndarray], task: str) -> np.ndarray:
        batch: dict[str, Any] = {IMAGE_KEY + c: torch.from_numpy(np.ascontiguousarray(images[c])).permute(2, 0, 1)
                                 .float()[None] / 255.0 for c in self.cameras}
        batch[STATE_KEY] = torch.as_tensor(np.asarray(state, dtype=np.float32)[self.proprio])[None]
        batch["task"] = [task]
        action = self.policy.select_action(self.pre(batch))
        return self.post(action)[0].detach().cpu().numpy().astype(np.float32)


def evaluate_vla(actor: VLAActor, tasks: Sequence[str], trials: int = 25, max_episode_steps: int = 200,
                 seed: int = 10_000, split: str = "test", image_size: int = 128, progress: bool = False,
                 make_env: Any = None) -> dict[str, Any]:
    """The bench VLA acting alone on the bench's evaluation trials (the trials :func:`dual_actor.eval.evaluate` gives
    a policy: same env seeds, the torch seed set per trial), its cameras rendered at ``image_size``. ``make_env``:
    ``(task, seed, max_episode_steps, cameras, image_size) -> env`` (default: the task's simulated world, the bench's
    ``MetaworldTaskEnv`` or gym-hil's).
    The ``eval.json`` dict."""
    from tqdm.auto import tqdm

    from dual_actor.eval.protocol import TrialEnv, eval_result, run_trials, trial_seeds
    from dual_actor.runtime.sim import MetaworldTaskEnv, resolve_task
    from dual_actor.runtime.sim.experts import task_env

    seeds = trial_seeds(split, trials, seed)
    per_task = {}
    with tqdm(total=len(tasks) * trials, desc="vla eval", unit="ep", disable=not progress, leave=False) as bar:
        for task in tasks:
            world = task_env(task)
            resolved = resolve_task(task)[0] if world is MetaworldTaskEnv else task

            def episode(_trial: int, env: Any, obs: np.ndarray, torch_seed: int, task: str = resolved) -> bool:
                actor.reset()
                torch.manual_seed(torch_seed)
                terminated = truncated = False
                while not (terminated or truncated):
                    obs, _, terminated, truncated, _ = env.step(actor.act(obs, env.images(), task))
                return bool(terminated)

            with torch.random.fork_rng(devices=[]), TrialEnv(lambda env_seed, task=resolved: (
                    make_env or world)(task=task, seed=env_seed, max_episode_steps=max_episode_steps,
                                                   cameras=actor.cameras, image_size=image_size)) as envs:
                per_task[resolved] = run_trials(resolved, seeds, envs, episode, bar)
    return eval_result(per_task, online_steps=0, intervention_rate=0.0, split=split, seeds=seeds)


def train_bench_vla(cfg: Any, out: str | Path, data_path: str | Path, progress: bool = False) -> dict[str, Any]:
    """Train the bench VLA of ``cfg.vla`` on the demos at ``data_path`` (with the cameras' images) and save it to
    ``out`` (module docstring); evaluate it when ``cfg.vla.eval_trials`` > 0. Returns ``train.json``'s dict."""
    from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from data_tools.hdf5_format import read_episodes
    from dual_actor.vla.smolvlm import write_smolvlm_folder

    v, out = cfg.vla, Path(out)
    cameras = list(v.cameras)
    episodes = [ep for ep in read_episodes(data_path) if ep.task in set(cfg.env.tasks)]
    data = DemoChunks(episodes, cameras, int(v.chunk_size), proprio_key=str(cfg.env.proprio_key))
    state_dim, action_dim = data.state.shape[1], data.actions.shape[1]
    out.mkdir(parents=True, exist_ok=True)
    vlm_dir = write_smolvlm_folder(out / "vlm", smolvlm_config(v))
    config = smolvla_config(v, vlm_dir, cameras, state_dim, action_dim)
    torch.manual_seed(int(cfg.seed))
    policy = SmolVLAPolicy(config)
    pre, post = make_smolvla_pre_post_processors(config, dataset_stats=data.stats())
    params = [p for p in policy.parameters() if p.requires_grad]
    opt_cfg = config.get_optimizer_preset()
    optimizer = torch.optim.AdamW(params, lr=opt_cfg.lr, betas=opt_cfg.betas, eps=opt_cfg.eps,
                                  weight_decay=opt_cfg.weight_decay)
    scheduler = CosineDecayWithWarmupSchedulerConfig(
        peak_lr=config.optimizer_lr, decay_lr=config.scheduler_decay_lr, num_warmup_steps=config.scheduler_warmup_steps,
        num_decay_steps=config.scheduler_decay_steps).build(optimizer, int(v.steps))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    loader = torch.utils.data.DataLoader(data, batch_size=int(v.batch_size), shuffle=True, generator=gen,
                                         drop_last=len(data) >= int(v.batch_size))
    log: list[dict[str, float]] = []
    writer = SummaryWriter(str(out / "tb"))
    policy.train()
    t0, step, window = time.perf_counter(), 0, []
    with tqdm(total=int(v.steps), desc="bench VLA", unit="upd", disable=not progress) as bar:
        while step < int(v.steps):
            for batch in loader:
                loss, _ = policy.forward(pre(batch))
                optimizer.zero_grad()
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(params, opt_cfg.grad_clip_norm)
                optimizer.step()
                scheduler.step()
                step += 1
                window.append(loss.item())
                bar.update(1)
                if step % int(v.log_every) == 0 or step == int(v.steps):
                    point = {"step": step, "loss": float(np.mean(window)), "grad_norm": float(grad_norm),
                             "lr": float(scheduler.get_last_lr()[0]), "seconds": round(time.perf_counter() - t0, 2)}
                    log.append(point)
                    writer.add_scalar("vla/loss", point["loss"], step)
                    writer.add_scalar("vla/lr", point["lr"], step)
                    bar.set_postfix(loss=f"{point['loss']:.4f}")
                    window = []
                    if not math.isfinite(point["loss"]):
                        raise FloatingPointError(f"bench VLA: the loss is {point['loss']} at update {step}")
                if step >= int(v.steps):
                    break
    seconds = time.perf_counter() - t0
    writer.close()
    policy.eval()
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    params_m = sum(p.numel() for p in policy.parameters()) / 1e6
    info = {"data": str(data_path), "episodes": len(episodes), "samples": len(data), "cameras": cameras,
            "tasks": sorted(set(data.tasks)), "state_dim": int(state_dim), "action_dim": int(action_dim),
            "parameters_m": round(params_m, 3), "steps": int(v.steps), "batch_size": int(v.batch_size),
            "seconds": round(seconds, 1), "seed": int(cfg.seed), "log": log}
    atomic_write_text(out / "train.json", json.dumps(info, indent=2))
    return info
