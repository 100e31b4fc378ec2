"""Refinement actor pi_phi(s, l_rf) -> mu (Eq. 7).

An observation encoder and a command encoder, each projected by its own MLP to a common
width, concatenated, then a final MLP. The output is bounded: mu = mean_bound * K * tanh(out).
The policy head sees c_in(K) w ~ w / K, so a noise mean only matters at the scale of K; with
mean_bound = 1 the mean can move w by up to one noise standard deviation. The last layer is
zero-initialised, so an untrained refinement actor gives mu = 0: refinement mode starts out
identical to primary mode (and Eq. 10's regulariser starts at 0).

``gaussian=True`` (published DSRL, DSRL-NA: ``null_latent="gaussian"``) adds a log-std head beside the mean
head: the latent policy is the tanh-squashed Gaussian of SAC (Haarnoja et al. 2018, as Stable-Baselines3's,
which DSRL's code runs), ``w = bound K tanh(u)``, ``u ~ N(m(s, l), exp(2 log_std(s, l)))``, log-std clamped
to [-20, 2]; its log-density is taken in the squashed [-1, 1] units (as SB3's: the bound's constant is left
out, so DSRL's target entropy 0 means the same here). Its mean path, ``bound K tanh(m)``, is ``forward``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from dual_actor.nets.common import mlp


def vocabulary_ids(index: dict[str, int], vocabulary: Sequence[str], commands: Sequence[str], device=None):
    """Command strings -> ids ``(B,)`` long through ``index``; an unknown command is a clear
    ``KeyError`` naming it (shared by every command encoder)."""
    try:
        return torch.tensor([index[c] for c in commands], dtype=torch.long, device=device)
    except KeyError as e:
        raise KeyError(
            f"refinement command {e.args[0]!r} is not in the policy's command vocabulary "
            f"({len(vocabulary)} commands, e.g. {list(vocabulary)[:3]})"
        ) from None


class LearnedCommandEncoder(nn.Module):
    """Command encoder over a finite command vocabulary: ids (B,) -> (B, out_dim).

    The T5 encoder implements the same interface with a frozen, cached embedding table.
    """

    def __init__(self, vocabulary: Sequence[str], out_dim: int = 64):
        super().__init__()
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("command vocabulary has duplicates")
        self.vocabulary = list(vocabulary)
        self._index = {c: i for i, c in enumerate(self.vocabulary)}
        self.out_dim = out_dim
        self.embedding = nn.Embedding(len(self.vocabulary), out_dim)

    def ids(self, commands: Sequence[str], device=None) -> torch.Tensor:
        """Command strings -> ids; an unknown command is a clear error."""
        return vocabulary_ids(self._index, self.vocabulary, commands, device)

    def forward(self, command_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(command_ids)


class RefinementActor(nn.Module):
    """mu = pi_phi(s, l_rf): ``obs (B, Do), command_ids (B,) -> mu (B, A)``."""

    def __init__(
        self,
        obs_encoder: nn.Module,
        command_encoder: nn.Module,
        action_dim: int,
        sigma_max: float = 80.0,
        proj_dim: int = 128,
        hidden: Sequence[int] = (256, 256),
        mean_bound: float = 1.0,
        gaussian: bool = False,
    ):
        super().__init__()
        self.obs_encoder = obs_encoder
        self.command_encoder = command_encoder
        self.obs_proj = mlp(obs_encoder.out_dim, (proj_dim,), proj_dim)
        self.cmd_proj = mlp(command_encoder.out_dim, (proj_dim,), proj_dim)
        self.head = mlp(2 * proj_dim, hidden, action_dim)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.mean_bound = float(mean_bound)
        self.scale = float(mean_bound) * float(sigma_max)
        self.log_std_head = None
        if gaussian:  # drawn from a forked RNG: every other weight is initialised as without it
            with torch.random.fork_rng(devices=[]):
                self.log_std_head = mlp(2 * proj_dim, hidden, action_dim)

    LOG_STD_RANGE = (-20.0, 2.0)  # SB3's SAC actor

    def encode_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Projected observation features (B, proj_dim): compute once for several commands."""
        return self.obs_proj(self.obs_encoder(obs))

    def _joint(self, obs_feat: torch.Tensor, command_ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs_feat, self.cmd_proj(self.command_encoder(command_ids))], -1)

    def from_features(self, obs_feat: torch.Tensor, command_ids: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.tanh(self.head(self._joint(obs_feat, command_ids)))

    def sample_from_features(self, obs_feat: torch.Tensor, command_ids: torch.Tensor,
                             eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w, log pi(w))`` of the tanh-Gaussian latent policy (``gaussian=True``), reparameterised: ``w = bound K
        tanh(m + std eps)`` (B, A), ``eps`` standard normal (drawn when None); the log-density (B,) is that of
        ``tanh(u)`` in [-1, 1] (module docstring)."""
        if self.log_std_head is None:
            raise ValueError("sample_from_features needs the Gaussian latent policy (gaussian=True)")
        joint = self._joint(obs_feat, command_ids)
        m = self.head(joint)
        log_std = self.log_std_head(joint).clamp(*self.LOG_STD_RANGE)
        eps = torch.randn_like(m) if eps is None else eps
        u = m + log_std.exp() * eps
        return self.scale * torch.tanh(u), squashed_log_prob(u, m, log_std)

    def forward(self, obs: torch.Tensor, command_ids: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.encode_obs(obs), command_ids)


def squashed_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log-density (over the last dim, summed) of ``tanh(u)`` for ``u ~ N(mean, exp(log_std)^2)``: the Gaussian's
    minus ``log(1 - tanh(u)^2)``, in the stable form ``2 (log 2 - u - softplus(-2 u))`` (SAC, Appendix C)."""
    gauss = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_det = 2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))
    return (gauss - log_det).sum(-1)
