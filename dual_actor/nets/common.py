"""Small building blocks shared by the networks."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn


def select_rows(obs, rows):
    """Rows ``rows`` (a bool mask, indices, or one index of a leading dim) of an encoder input: a tensor or
    ``{"state", "images"[, "features"]}`` (the trunk's per-camera features, when the caller computed them)."""
    if isinstance(obs, Mapping):
        out = {"state": obs["state"][rows], "images": {c: x[rows] for c, x in obs["images"].items()}}
        if "features" in obs:
            out["features"] = [f[rows] for f in obs["features"]]
        return out
    return obs[rows]


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int | None = None,
    activation: type[nn.Module] = nn.ReLU,
    layer_norm: bool = False,
    final_activation: bool = False,
) -> nn.Sequential:
    """``Linear -> [LayerNorm] -> act`` per hidden width, then an optional output ``Linear``.

    ReLU by default: on a 2-core CPU Mish (CPQL's choice) costs ~5x ReLU in forward + backward
    and was 30% of a learner update (docs/benchmarks.md).
    """
    layers: list[nn.Module] = []
    d = in_dim
    for width in hidden:
        layers.append(nn.Linear(d, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(activation())
        d = width
    if out_dim is not None:
        layers.append(nn.Linear(d, out_dim))
        if final_activation:
            layers.append(activation())
    return nn.Sequential(*layers)


class StateEncoder(nn.Module):
    """Observation encoder for low-dim state observations: ``obs (B, Do) -> (B, out_dim)``.

    ``Linear -> LayerNorm -> ReLU`` (lerobot's SAC state encoder is the same with tanh), plus
    optional hidden layers. The image route (ResNet) implements the same call and ``out_dim``.
    """

    def __init__(self, obs_dim: int, out_dim: int = 256, hidden: Sequence[int] = ()):
        super().__init__()
        self.obs_dim = obs_dim
        self.out_dim = out_dim
        self.net = mlp(obs_dim, (*hidden, out_dim), None, layer_norm=True)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)
