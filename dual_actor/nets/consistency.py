"""Primary actor: one-step consistency policy head pi_theta^w(h) (Eq. 1, 2, 5).

EDM boundary-condition scalings (Karras et al. 2022; Song et al. 2023; CPQL/ConRFT):

    c_skip(s) = sd^2 / ((s - s_min)^2 + sd^2)
    c_out(s)  = (s - s_min) * sd / sqrt(s^2 + sd^2)
    c_in(s)   = 1 / sqrt(s^2 + sd^2)
    t(s)      = 0.25 * log(s)                       (EDM's c_noise)
    f(x, s | h) = c_skip(s) x + c_out(s) F(c_in(s) x, t(s), h)

so f(x, s_min) = x exactly. An action is ``clip(f(w, K | h), -1, 1)`` with
w ~ N(0, K^2 I) (primary mode, Eq. 1) or w ~ N(mu, K^2 I) (refinement mode, Eq. 2), K = s_max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from dual_actor.nets.common import mlp


@dataclass(frozen=True)
class EDMScalings:
    """EDM / consistency-model noise scalings and the Karras level schedule."""

    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    num_levels: int = 40

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.num_levels < 2:
            raise ValueError(f"num_levels must be >= 2, got {self.num_levels}")

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        sd2 = self.sigma_data**2
        return sd2 / ((sigma - self.sigma_min) ** 2 + sd2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma - self.sigma_min) * self.sigma_data / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return 0.25 * torch.log(sigma)

    def karras_sigmas(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """The ``num_levels`` Karras levels, from sigma_max down to sigma_min."""
        ramp = torch.linspace(0, 1, self.num_levels, device=device, dtype=torch.float64)
        inv = 1.0 / self.rho
        s = (self.sigma_max**inv + ramp * (self.sigma_min**inv - self.sigma_max**inv)) ** self.rho
        return s.to(dtype)

    def karras_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """Karras loss weighting lambda(s) = 1/s^2 + 1/sd^2 (CPQL's "karras" schedule)."""
        return sigma.pow(-2) + 1.0 / self.sigma_data**2


class FourierTime(nn.Module):
    """Fixed sinusoidal embedding of the scalar noise level t: (B,) -> (B, dim)."""

    def __init__(self, dim: int = 16):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        freqs = torch.exp(torch.arange(dim // 2) * (-math.log(1000.0) / max(dim // 2 - 1, 1)))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        x = t[:, None] * self.freqs[None] * 100.0
        return torch.cat([x.sin(), x.cos()], dim=-1)


class ConsistencyPolicy(nn.Module):
    """One-step consistency policy head over the backbone embedding ``h`` (and optional proprio).

    Shapes: ``h``: (B, h_dim); ``proprio``: (B, proprio_dim) or None; actions: (B, action_dim).
    """

    def __init__(
        self,
        h_dim: int,
        action_dim: int,
        proprio_dim: int = 0,
        hidden: Sequence[int] = (256, 256, 256),
        time_dim: int = 16,
        scalings: EDMScalings = EDMScalings(),
        layer_norm: bool = True,
    ):
        super().__init__()
        self.h_dim = h_dim
        self.action_dim = action_dim
        self.proprio_dim = proprio_dim
        self.scalings = scalings
        self.time = FourierTime(time_dim)
        self.net = mlp(action_dim + time_dim + h_dim + proprio_dim, hidden, action_dim, layer_norm=layer_norm)

    @property
    def K(self) -> float:
        return self.scalings.sigma_max

    def denoise(
        self, x: torch.Tensor, sigma: torch.Tensor, h: torch.Tensor, proprio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """f(x, sigma | h) with the boundary-condition scalings. ``sigma``: (B,) or scalar."""
        sc = self.scalings
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        parts = [sc.c_in(sigma)[:, None] * x, self.time(sc.c_noise(sigma)), h]
        if self.proprio_dim:
            if proprio is None:
                raise ValueError("this policy head was built with proprio_dim > 0 and needs `proprio`")
            parts.append(proprio)
        out = self.net(torch.cat(parts, dim=-1))
        return sc.c_skip(sigma)[:, None] * x + sc.c_out(sigma)[:, None] * out

    def sample_noise(
        self, batch: int, like: torch.Tensor, noise_mean: torch.Tensor | None = None, generator=None
    ) -> torch.Tensor:
        """w ~ N(noise_mean, K^2 I) (Eq. 2), or N(0, K^2 I) when ``noise_mean`` is None (Eq. 1)."""
        z = torch.randn(batch, self.action_dim, device=like.device, dtype=like.dtype, generator=generator)
        w = self.K * z
        return w if noise_mean is None else w + noise_mean

    def forward(
        self,
        h: torch.Tensor,
        proprio: torch.Tensor | None = None,
        noise_mean: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        clip: bool = True,
    ) -> torch.Tensor:
        """One-step action: clip(f(w, K | h), -1, 1).

        ``noise``: a given standard-normal z (w = noise_mean + K z); drawn fresh when None.
        """
        if noise is None:
            w = self.sample_noise(h.shape[0], h, noise_mean)
        else:
            w = self.K * noise if noise_mean is None else noise_mean + self.K * noise
        a = self.denoise(w, torch.full((h.shape[0],), self.K, device=h.device, dtype=h.dtype), h, proprio)
        return a.clamp(-1.0, 1.0) if clip else a

    def noised_prediction(
        self,
        action: torch.Tensor,
        h: torch.Tensor,
        proprio: torch.Tensor | None = None,
        with_action: bool = False,
        rows: torch.Tensor | None = None,
    ):
        """Consistency BC inputs: pick a Karras level per row (excluding sigma_min, as CPQL does),
        noise the target action, and denoise it. Returns (prediction (B', A), sigma (B',)), and with
        ``with_action`` also the one-step action clip(f(K z, K | h)) (B, A) for every row from the
        same network call (both halves of one batched forward). ``rows`` (bool (B,) or indices)
        restricts the denoising half to those rows (B' of them); the one-step half keeps all B."""
        w_h, w_p = h, proprio
        if rows is not None:
            action, h = action[rows], h[rows]
            proprio = None if proprio is None else proprio[rows]
        b = action.shape[0]
        sigmas = self.scalings.karras_sigmas(device=action.device, dtype=action.dtype)
        sigma = sigmas[torch.randint(0, len(sigmas) - 1, (b,), device=action.device)]
        x = action + sigma[:, None] * torch.randn_like(action)
        if not with_action:
            return self.denoise(x, sigma, h, proprio), sigma
        w = self.K * torch.randn(w_h.shape[0], action.shape[1], device=action.device, dtype=action.dtype)
        sig2 = torch.cat([sigma, torch.full((w_h.shape[0],), self.K, device=sigma.device, dtype=sigma.dtype)])
        p2 = None if proprio is None else torch.cat([proprio, w_p])
        out = self.denoise(torch.cat([x, w]), sig2, torch.cat([h, w_h]), p2)
        return out[:b], sigma, out[b:].clamp(-1.0, 1.0)
