"""Batch and dataset factories for tests (tiny, deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data_tools.hdf5_format import Episode, write_dataset
from dual_actor import constants as K

TASKS = ["place the bolt", "pick up the bolt", "assemble the bolt"]
OBS_DIM, PROPRIO_DIM, ACTION_DIM = 6, 2, 4


def tiny_policy_kwargs(tasks=TASKS, obs_dim=OBS_DIM, proprio_dim=PROPRIO_DIM, action_dim=ACTION_DIM) -> dict:
    return dict(
        tasks=list(tasks), obs_dim=obs_dim, proprio_dim=proprio_dim, action_dim=action_dim,
        actor_hidden=[32, 32], refine_hidden=[32], refine_proj_dim=16, text_encoder={"kind": "learned", "out_dim": 8}, obs_feature_dim=16,
    )


MODULE_ARGS = ("policy", "learner", "phase", "max_updates", "log_every")


def tiny_module_kwargs(**over) -> dict:
    """``DualActorModule(**...)`` arguments: the tiny policy, tiny critics, and ``over``: the module's own
    arguments (:data:`MODULE_ARGS`) or fields of its ``LearnerConfig``."""
    learner = dict(critic_hidden=[32, 32], critic_feature_dim=8, critic_obs_feature_dim=16)
    kw = dict(policy=tiny_policy_kwargs(), log_every=1)
    for k, v in over.items():
        (kw if k in MODULE_ARGS else learner)[k] = v
    kw["learner"] = {**learner, **kw.get("learner", {})}
    return kw


def transition_batch(b: int, task_id: int, h_dim: int, gen: torch.Generator, commands: int = 27,
                     images: tuple[int, int] | None = None) -> dict:
    """A random per-task batch with every key of ``dual_actor.constants``; ``images=(cameras, size)`` adds
    uint8 ``obs_images`` / ``next_obs_images`` (b, cameras, 3, size, size)."""
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    extra = {}
    if images is not None:
        c, size = images
        extra = {k: torch.randint(0, 256, (b, c, 3, size, size), generator=gen, dtype=torch.uint8)
                 for k in (K.OBS_IMAGES, K.NEXT_OBS_IMAGES)}
    return {**extra,
        K.H: r(b, h_dim), K.OBS: r(b, OBS_DIM), K.PROPRIO: r(b, PROPRIO_DIM),
        K.ACTION: torch.rand(b, ACTION_DIM, generator=gen) * 2 - 1,
        K.REWARD: (torch.rand(b, generator=gen) > 0.8).float(), K.DONE: (torch.rand(b, generator=gen) > 0.9).float(),
        K.NEXT_H: r(b, h_dim), K.NEXT_OBS: r(b, OBS_DIM), K.NEXT_PROPRIO: r(b, PROPRIO_DIM),
        K.MC_RETURN: torch.rand(b, generator=gen), K.COMMAND: torch.randint(0, commands, (b,), generator=gen),
        K.TASK: torch.full((b,), task_id, dtype=torch.long),
        # the sampler's marks (no generator draws: the random values above do not move)
        K.FROM_DEMOS: torch.arange(b) < b // 2, K.INTERVENTION: torch.zeros(b, dtype=torch.bool),
    }


def training_batch(n_tasks: int = 3, per_task: int = 8, h_dim: int = OBS_DIM + 3, talk_tweak: bool = True,
                   seed: int = 0, images: tuple[int, int] | None = None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    tasks = [transition_batch(per_task, i, h_dim, gen, images=images) for i in range(n_tasks)]
    tt = None
    if talk_tweak:
        tt = transition_batch(per_task, 0, h_dim, gen, images=images)
        tt[K.TASK] = torch.arange(per_task) % n_tasks
    return {K.TASKS: tasks, K.TALK_TWEAK: tt}


def synthetic_episode(task: str, n: int, rng: np.random.Generator, obs_dim=OBS_DIM, proprio_dim=PROPRIO_DIM,
                      action_dim=ACTION_DIM, kind="demo", success=True) -> Episode:
    """An episode whose expert action is a fixed linear function of the state (learnable by BC)."""
    state = rng.normal(size=(n, obs_dim)).astype(np.float32)
    w = np.linspace(-0.5, 0.5, obs_dim * action_dim).reshape(obs_dim, action_dim)
    actions = np.tanh(state @ w).astype(np.float32)
    rewards = np.zeros(n, np.float32)
    dones = np.zeros(n, bool)
    if success:
        rewards[-1] = 1.0
        dones[-1] = True
    return Episode(obs={"state": state, "proprio": state[:, :proprio_dim].copy()}, actions=actions,
                   rewards=rewards, dones=dones, task=task, kind=kind)


def write_synthetic_dataset(path: Path, tasks=TASKS, episodes_per_task=3, steps=20, seed=0, **kw) -> Path:
    rng = np.random.default_rng(seed)
    eps = [synthetic_episode(t, steps, rng, **kw) for t in tasks for _ in range(episodes_per_task)]
    return write_dataset(path, eps, fps=10, env_args={"synthetic": True})
