"""Primary actor: one-step consistency policy head pi_theta^w(h) (Eq. 1, 2, 5).

EDM boundary-condition scalings (Karras et al. 2022; Song et al. 2023; CPQL/ConRFT):

    c_skip(s) = sd^2 / ((s - s_min)^2 + sd^2)
    c_out(s)  = (s - s_min) * sd / sqrt(s^2 + sd^2)
    c_in(s)   = 1 / sqrt(s^2 + sd^2)
    t(s)      = 0.25 * log(s)                       (EDM's c_noise)
    f(x, s | h) = c_skip(s) x + c_out(s) F(c_in(s) x, t(s), h)

so f(x, s_min) = x exactly. K = s_max. Two heads share this:

* ``plain`` (the paper as printed): a(w) = clip(f(w, K | h), -1, 1).
* ``anchored`` (the default; docs/algorithm.md): a(w) = clip(M(h) + f(w, K | h) - f(0, K | h), -1, 1).
  M(h) is a mean head trained by the literal Eq. 5 (precision: it is the action of primary mode at
  temperature 0); f(., K) is a noise -> action map distilled from the probability-flow ODE of the
  denoiser f(., s < K) (authority: moving the mean of w moves the action). The difference
  f(w) - f(0) is the map's displacement from its centre, so a(0) = M(h) exactly.

Acting draws w = mu + temperature * K * z, z ~ N(0, I) (``temperature`` 1: Eq. 1 / 2 as printed;
mu = 0 in primary mode, mu = pi_phi(s, l_rf) in refinement mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from dual_actor.nets.common import mlp


@dataclass
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


HEADS = ("anchored", "plain")


class ConsistencyPolicy(nn.Module):
    """One-step consistency policy head over the backbone embedding ``h`` (and optional proprio).

    Args:
        head: "anchored" (mean head M + distilled noise -> action map; the default) or "plain"
            (f(w, K) alone, as printed). See the module doc.
        temperature: acting noise scale: w = mu + temperature * K * z.
        ode_steps: Euler steps of the probability-flow ODE that the anchored head's one-step map
            is distilled from (:meth:`ode_action`).

    Shapes: ``h``: (B, h_dim); ``proprio``: (B, proprio_dim) or None; actions: (B, action_dim).
    """

    def __init__(
        self,
        h_dim: int,
        action_dim: int,
        proprio_dim: int = 0,
        hidden: Sequence[int] = (256, 256, 256),
        time_dim: int = 16,
        scalings: EDMScalings | None = None,
        layer_norm: bool = True,
        head: str = "anchored",
        temperature: float = 0.0,
        ode_steps: int = 8,
    ):
        super().__init__()
        scalings = scalings if scalings is not None else EDMScalings()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 1 <= ode_steps < scalings.num_levels:
            raise ValueError(f"ode_steps must be in [1, num_levels - 1 = {scalings.num_levels - 1}], got {ode_steps}")
        self.h_dim = h_dim
        self.action_dim = action_dim
        self.proprio_dim = proprio_dim
        self.scalings = scalings
        self.head = head
        self.temperature = float(temperature)
        self.ode_steps = int(ode_steps)
        self.time = FourierTime(time_dim)
        self.net = mlp(action_dim + time_dim + h_dim + proprio_dim, hidden, action_dim, layer_norm=layer_norm)
        self.mean_net = (
            mlp(h_dim + proprio_dim, hidden, action_dim, layer_norm=layer_norm) if head == "anchored" else None
        )

    @property
    def K(self) -> float:
        return self.scalings.sigma_max

    def _cond(self, h: torch.Tensor, proprio: torch.Tensor | None) -> list[torch.Tensor]:
        if not self.proprio_dim:
            return [h]
        if proprio is None:
            raise ValueError("this policy head was built with proprio_dim > 0 and needs `proprio`")
        return [h, proprio]

    def denoise(
        self, x: torch.Tensor, sigma: torch.Tensor, h: torch.Tensor, proprio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """f(x, sigma | h) with the boundary-condition scalings. ``sigma``: (B,) or scalar."""
        sc = self.scalings
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        out = self.net(torch.cat([sc.c_in(sigma)[:, None] * x, self.time(sc.c_noise(sigma)), *self._cond(h, proprio)], -1))
        return sc.c_skip(sigma)[:, None] * x + sc.c_out(sigma)[:, None] * out

    def mean_action(self, h: torch.Tensor, proprio: torch.Tensor | None = None) -> torch.Tensor:
        """M(h) (B, A), unclipped: the anchored head's action at w = 0."""
        if self.mean_net is None:
            raise ValueError("the plain head has no mean head (head='anchored' has)")
        return self.mean_net(torch.cat(self._cond(h, proprio), -1))

    @property
    def deterministic(self) -> bool:
        """Primary mode draws no noise (anchored head at temperature 0: a = M(h)): n samples of pi(h)
        are one action n times."""
        return self.head == "anchored" and self.temperature == 0.0

    def offset_and_action(
        self, h: torch.Tensor, proprio: torch.Tensor | None, noise: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(offset, primary-mode action) for the rows ``h``, from one evaluation of M(h) and f(0, K | h).

        offset: what the anchored map adds to f(w, K | h), M(h) - f(0, K | h) (B, A), so that
        ``action_at(w, offset=...)`` = clip(f(w, K) + offset) needs one map evaluation per latent; None for the
        plain head. It does not depend on w: compute it once (without gradient) for several latents.
        action: ``forward(h, proprio, noise=noise)`` (Eq. 10's primary-mode term), sharing M(h) with the offset."""
        if self.head == "plain":
            return None, self(h, proprio, noise=noise)
        b = h.shape[0]
        f0 = self.denoise(torch.zeros(b, self.action_dim, device=h.device, dtype=h.dtype),
                          torch.full((b,), self.K, device=h.device, dtype=h.dtype), h, proprio)
        mean = self.mean_action(h, proprio)
        offset = mean - f0
        if self.deterministic:  # forward's own shortcut: a(0) = M(h)
            return offset, mean.clamp(-1.0, 1.0)
        return offset, self.action_at(self.latent(noise), h, proprio, offset=offset)

    def action_at(
        self, w: torch.Tensor, h: torch.Tensor, proprio: torch.Tensor | None = None, clip: bool = True,
        offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The action map a(w | h) (B, A) for a given latent w (B, A): f(w, K) (plain) or
        M(h) + f(w, K) - f(0, K) (anchored; with ``offset`` from :meth:`offset_and_action` given, f(w, K) + offset)."""
        b = w.shape[0]
        if self.head == "plain" or offset is not None:
            a = self.denoise(w, torch.full((b,), self.K, device=w.device, dtype=w.dtype), h, proprio)
            a = a if offset is None else a + offset
        else:
            sig = torch.full((2 * b,), self.K, device=w.device, dtype=w.dtype)
            p2 = None if proprio is None else torch.cat([proprio, proprio])
            f = self.denoise(torch.cat([w, torch.zeros_like(w)]), sig, torch.cat([h, h]), p2)
            a = self.mean_action(h, proprio) + (f[:b] - f[b:])  # a(0) = M(h) to the last bit
        return a.clamp(-1.0, 1.0) if clip else a

    def sample_noise(
        self, batch: int, like: torch.Tensor, noise_mean: torch.Tensor | None = None, generator=None
    ) -> torch.Tensor:
        """w ~ N(noise_mean, (temperature K)^2 I) (Eq. 2), noise_mean 0 when None (Eq. 1)."""
        z = torch.randn(batch, self.action_dim, device=like.device, dtype=like.dtype, generator=generator)
        return self.latent(z, noise_mean)

    def latent(self, z: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        """The acting latent w = mean + temperature * K * z for a standard-normal ``z`` (mean 0 when None):
        Eq. 1 (primary mode) / Eq. 2 (refinement mode, mean = mu) at temperature 1."""
        w = self.temperature * self.K * z
        return w if mean is None else w + mean

    def forward(
        self,
        h: torch.Tensor,
        proprio: torch.Tensor | None = None,
        noise_mean: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        clip: bool = True,
    ) -> torch.Tensor:
        """One-step action a(w | h) with w = noise_mean + temperature * K * z.

        ``noise``: a given standard-normal z; drawn fresh when None (and needed).
        """
        if self.head == "anchored" and noise_mean is None and (self.temperature == 0.0):
            a = self.mean_action(h, proprio)  # a(0) = M(h): skip the two map evaluations that cancel
            return a.clamp(-1.0, 1.0) if clip else a
        w = self.sample_noise(h.shape[0], h, noise_mean) if noise is None else self.latent(noise, noise_mean)
        return self.action_at(w, h, proprio, clip)

    # ------------------------------------------------------------------------- training
    def ode_levels(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """``ode_steps + 1`` of the Karras levels, K first and sigma_min last."""
        sigmas = self.scalings.karras_sigmas(device=device, dtype=dtype)
        idx = torch.linspace(0, len(sigmas) - 1, self.ode_steps + 1).round().long()
        return sigmas[idx.to(sigmas.device)]

    @torch.no_grad()
    def ode_action(
        self, w: torch.Tensor, h: torch.Tensor, proprio: torch.Tensor | None, center: torch.Tensor
    ) -> torch.Tensor:
        """The probability-flow ODE of the denoiser from x_K = w down to sigma_min (Euler on
        :meth:`ode_levels`; Karras et al. 2022, Alg. 1 without the Heun correction). No gradient.

        At sigma = K the optimal denoiser is E[a | h] up to O(Var(a | h) / K^2), so the first step uses
        ``center`` (M(h)): x_1 = center + (s_1 / K) (w - center).
        The later steps use the network's own denoiser f(., s < K), trained by denoising regression.
        Returns (B, A), unclipped.
        """
        levels = self.ode_levels(w.device, w.dtype)
        x = center + (levels[1] / levels[0]) * (w - center)
        for i in range(1, len(levels) - 1):
            s, s_next = levels[i], levels[i + 1]
            d = self.denoise(x, s.expand(x.shape[0]), h, proprio)
            x = d + (s_next / s) * (x - d)
        return x  # at sigma_min, f(x, sigma_min) = x

    def _noised(self, action: torch.Tensor, lowest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(a* + sigma z, sigma) with one Karras level per row drawn from indices [lowest, L - 2]: sigma_min is
        never drawn (CPQL), and ``lowest`` = 1 also leaves out K (the anchored head distils that level)."""
        sigmas = self.scalings.karras_sigmas(device=action.device, dtype=action.dtype)
        sigma = sigmas[torch.randint(lowest, len(sigmas) - 1, (action.shape[0],), device=action.device)]
        return action + sigma[:, None] * torch.randn_like(action), sigma

    def noised_prediction(
        self,
        action: torch.Tensor,
        h: torch.Tensor,
        proprio: torch.Tensor | None = None,
        with_action: bool = False,
    ):
        """Consistency BC inputs: pick a Karras level per row (excluding sigma_min, as CPQL does),
        noise the target action, and denoise it. Returns (prediction (B', A), sigma (B',)), and with
        ``with_action`` also the one-step action clip(f(K z, K | h)) (B, A) for every row from the
        same network call (both halves of one batched forward). (The plain head's training inputs.)"""
        w_h, w_p = h, proprio
        b = action.shape[0]
        x, sigma = self._noised(action, lowest=0)
        if not with_action:
            return self.denoise(x, sigma, h, proprio), sigma
        w = self.K * torch.randn(w_h.shape[0], action.shape[1], device=action.device, dtype=action.dtype)
        sig2 = torch.cat([sigma, torch.full((w_h.shape[0],), self.K, device=sigma.device, dtype=sigma.dtype)])
        p2 = None if proprio is None else torch.cat([proprio, w_p])
        out = self.denoise(torch.cat([x, w]), sig2, torch.cat([h, w_h]), p2)
        return out[:b], sigma, out[b:].clamp(-1.0, 1.0)

    def anchored_terms(
        self,
        action: torch.Tensor,
        h: torch.Tensor,
        proprio: torch.Tensor | None = None,
        latent_range: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """The anchored head's training inputs, from one batched call of the map network:

        * ``pred``, ``sigma``: the denoiser f(a* + sigma z, sigma) at a Karras level per row drawn from
          the levels strictly between sigma_min and K (the consistency / denoising form of Eq. 5,
          CPQL's; level K is left to the distillation);
        * ``mean``: M(h) for every row (B, A), unclipped (the literal Eq. 5 and the Q term act on it);
        * ``distill_pred``, ``distill_target``: f(w, K) and the ODE solution from w (no gradient),
          w = K (z + u), u ~ U[-latent_range, latent_range]^A so that every mean the refinement actor
          can give (|mu| <= latent_range K) lies inside the trained range.
        """
        mean = self.mean_action(h, proprio)
        dh, dp, target = h, proprio, action
        b, bw = target.shape[0], h.shape[0]
        x, sigma = self._noised(target, lowest=1)
        z = torch.randn(bw, self.action_dim, device=h.device, dtype=h.dtype)
        u = (torch.rand_like(z) * 2 - 1) * latent_range
        w = self.K * (z + u)
        distill_target = self.ode_action(w, h, proprio, center=mean.detach())
        sig2 = torch.cat([sigma, torch.full((bw,), self.K, device=sigma.device, dtype=sigma.dtype)])
        p2 = None if proprio is None else torch.cat([dp, proprio])
        out = self.denoise(torch.cat([x, w]), sig2, torch.cat([dh, h]), p2)
        return {"pred": out[:b], "sigma": sigma, "target": target, "mean": mean,
                "distill_pred": out[b:], "distill_target": distill_target}
