"""Refinement actor pi_phi(s, l_rf) -> mu (Eq. 7).

An observation encoder and a command encoder, each projected by its own MLP to a common
width, concatenated, then a final MLP. The output is bounded: mu = mean_bound * K * tanh(out).
The policy head sees c_in(K) w ~ w / K, so a noise mean only matters at the scale of K; with
mean_bound = 1 the mean can move w by up to one noise standard deviation. The last layer is
zero-initialised, so an untrained refinement actor gives mu = 0: refinement mode starts out
identical to primary mode (and Eq. 10's regulariser starts at 0).
"""

from __future__ import annotations

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

    def encode_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Projected observation features (B, proj_dim): compute once for several commands."""
        return self.obs_proj(self.obs_encoder(obs))

    def from_features(self, obs_feat: torch.Tensor, command_ids: torch.Tensor) -> torch.Tensor:
        z = torch.cat([obs_feat, self.cmd_proj(self.command_encoder(command_ids))], -1)
        return self.scale * torch.tanh(self.head(z))

    def forward(self, obs: torch.Tensor, command_ids: torch.Tensor) -> torch.Tensor:
        return self.from_features(self.encode_obs(obs), command_ids)
