"""Per-task critic Q_psi_i(s, a) (Fig. 4): observation encoder + proprio MLP + action MLP ->
concat -> MLP head, as a twin ensemble evaluated in one batched matmul per layer.

The observation encoder is shared by the ensemble members (as in lerobot's SAC and
HIL-SERL); the proprio MLP, action MLP and head are per member. Targets use the min over
members; the target network is a Polyak copy (tau = 0.005).

Several actions per state (Cal-QL's sampled actions) are evaluated without repeating the
per-state work: the head's first layer on concat([obs_feat, proprio_feat, action_feat]) is
split as W_s [obs_feat, proprio_feat] + W_a action_feat, and the state term is computed once
per state and broadcast over that state's actions (the same function, ~half the arithmetic).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch import nn


class EnsembleLinear(nn.Module):
    """E independent linear layers: (E, B, in) -> (E, B, out) in one ``baddbmm``."""

    def __init__(self, ensemble: int, in_dim: int, out_dim: int, bias: bool = True, fan_in: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim)) if bias else None
        bound = 1.0 / math.sqrt(fan_in or in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


def ensemble_mlp(
    ensemble: int, in_dim: int, hidden: Sequence[int], out_dim: int | None, layer_norm: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for width in hidden:
        layers.append(EnsembleLinear(ensemble, d, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.ReLU())
        d = width
    if out_dim is not None:
        layers.append(EnsembleLinear(ensemble, d, out_dim))
    return nn.Sequential(*layers)


class TaskCritic(nn.Module):
    """Twin-ensemble critic for one task.

    ``forward(obs (B, Do), proprio (B, Dp), action (B, A) or (B, m, A)) -> Q (E, B) or (E, B, m)``.
    ``obs_encoder`` maps ``obs`` to (B, obs_encoder.out_dim) (state MLP here; ResNet for images).
    """

    def __init__(
        self,
        obs_encoder: nn.Module,
        proprio_dim: int,
        action_dim: int,
        feature_dim: int = 64,
        hidden: Sequence[int] = (256, 256),
        ensemble: int = 2,
        layer_norm: bool = True,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("critic needs at least one hidden layer")
        self.ensemble = ensemble
        self.obs_encoder = obs_encoder
        self.proprio_dim = proprio_dim
        self.proprio_mlp = ensemble_mlp(ensemble, proprio_dim, (feature_dim,), None) if proprio_dim else None
        self.action_mlp = ensemble_mlp(ensemble, action_dim, (feature_dim,), None)
        state_dim = obs_encoder.out_dim + (feature_dim if proprio_dim else 0)
        fan_in = state_dim + feature_dim
        self.state_in = EnsembleLinear(ensemble, state_dim, hidden[0], bias=True, fan_in=fan_in)
        self.action_in = EnsembleLinear(ensemble, feature_dim, hidden[0], bias=False, fan_in=fan_in)
        first = [nn.LayerNorm(hidden[0])] if layer_norm else []
        self.first_act = nn.Sequential(*first, nn.ReLU())
        self.head = ensemble_mlp(ensemble, hidden[0], hidden[1:], 1, layer_norm=layer_norm)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation features (B, F); compute once and pass to :meth:`q` for several actions."""
        return self.obs_encoder(obs)

    def q(self, feat: torch.Tensor, proprio: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q from precomputed observation features: (E, B) for action (B, A); (E, B, m) for (B, m, A)."""
        e, b = self.ensemble, feat.shape[0]
        multi = action.ndim == 3
        m = action.shape[1] if multi else 1
        state = feat.unsqueeze(0).expand(e, *feat.shape)
        if self.proprio_mlp is not None:
            state = torch.cat([state, self.proprio_mlp(proprio.unsqueeze(0).expand(e, *proprio.shape))], -1)
        s_term = self.state_in(state)  # (E, B, H)
        a = action.reshape(b * m, -1)
        a_term = self.action_in(self.action_mlp(a.unsqueeze(0).expand(e, *a.shape)))  # (E, B m, H)
        x = (a_term.view(e, b, m, -1) + s_term.unsqueeze(2)).view(e, b * m, -1)
        out = self.head(self.first_act(x)).view(e, b, m)
        return out if multi else out.squeeze(-1)

    def forward(self, obs: torch.Tensor, proprio: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        return self.q(self.encode(obs), proprio, action)


def make_target(net: nn.Module) -> nn.Module:
    """A frozen copy of ``net`` for Polyak targets."""
    target = copy.deepcopy(net)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, in place (``_foreach_lerp_``)."""
    tp = [p for p in target.parameters()]
    sp = [p.detach() for p in source.parameters()]
    torch._foreach_lerp_(tp, sp, tau)
