"""Loss maths: pure functions, one per equation of the paper (equation numbers are the paper's).

Nothing here holds parameters or touches a network; ``DualActorModule.training_step`` computes
the network outputs and calls these. Shapes are in each docstring: B batch, E critic ensemble,
A action dim, n sampled actions per state, N tasks.

Conventions (documented choices, see ``docs/algorithm.md``):
- ``||x||^2`` in Eq. 5 (literal), 8 and 10 is the squared L2 norm over action dims, averaged
  over the batch. The default consistency form of Eq. 5 follows CPQL/ConRFT exactly: per-dim
  mean of the squared error, times the Karras weight of the noise level.
- Critic regressions average over ensemble members and the batch.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np  # noqa: F401
import torch

from dual_actor.utils import mc_returns  # noqa: F401  (Cal-QL bound; lives where the runtime can import it)


# ---------------------------------------------------------------------------- primary actor
def bc_consistency_loss(
    pred: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, sigma_data: float = 0.5
) -> torch.Tensor:
    """Eq. 5, consistency (denoising) form used by CPQL/ConRFT (default).

    E[ lambda(sigma) * mean_d (f(a* + sigma z, sigma | h) - a*)_d^2 ],
    lambda(sigma) = 1/sigma^2 + 1/sigma_data^2 (Karras weighting).
    ``pred``, ``target``: (B, A) with ``pred = f(a* + sigma z, sigma | h)``; ``sigma``: (B,).
    """
    weight = sigma.pow(-2) + 1.0 / sigma_data**2
    return (weight * (pred - target).pow(2).mean(-1)).mean()


def bc_literal_loss(action: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 5, literal form: E ||pi_theta^w(h) - a*||^2 with the one-step action (B, A)."""
    return (action - target).pow(2).sum(-1).mean()


def ode_distillation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The anchored head's map term (not in the paper; docs/algorithm.md): E_w ||f(w, K | h) - sg(x_0(w))||^2,
    x_0(w) the denoiser's probability-flow ODE solution from x_K = w (knowledge distillation of the ODE
    into one step, Luhman & Luhman 2021). Makes f(., K) a noise -> action map whose latent moves the
    action. ``pred``, ``target``: (B, A); ``target`` carries no gradient."""
    return (pred - target.detach()).pow(2).sum(-1).mean()


def task_weights(q_means: torch.Tensor, c: float = 0.1, eps_min: float = 0.8, eps_max: float = 1.2) -> torch.Tensor:
    """Eq. 16: eps_i = (sum_j Qbar_j) / (N Qbar_i + N c), clipped to [eps_min, eps_max].

    ``q_means``: (N,) per-task Qbar_i = E_s[Q_i(s, pi(h))]. Returned detached (constants in
    Eq. 15). Non-positive denominators (Q far below zero) give a clipped weight as the
    formula's sign dictates; NaN never leaves this function.
    """
    q = q_means.detach().to(torch.float64)
    n = q.numel()
    eps = q.sum() / (n * q + n * c)
    eps = torch.nan_to_num(eps, nan=1.0, posinf=eps_max, neginf=eps_min)
    return eps.clamp(eps_min, eps_max).to(q_means.dtype)


def actor_q_loss(q_per_task: Sequence[torch.Tensor], eps: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 15 (Eq. 4 when ``eps`` is None): -(1/N) sum_i eps_i E_s[Q_i(s, pi(h))].

    ``q_per_task``: N tensors (B_i,) of Q_i at the policy's actions, or one (N, B) tensor (equal rows per
    task); ``eps``: (N,) constants.
    """
    n = len(q_per_task)
    if isinstance(q_per_task, torch.Tensor):
        means = q_per_task.mean(-1)
    else:
        means = torch.stack([q.mean() for q in q_per_task])
    if eps is None:
        eps = torch.ones_like(means)
    return -(eps.detach() * means).sum() / n


def actor_loss(bc: torch.Tensor, q: torch.Tensor, lam1: float, lam2: float) -> torch.Tensor:
    """Eq. 6: L = lambda1 L^BC + lambda2 L^Q ((1.0, 0.1) warm-up, (0.5, 0.5) online)."""
    return lam1 * bc + lam2 * q


# ---------------------------------------------------------------------------------- critics
def td_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_q: torch.Tensor,
    gamma: float,
    bounds: Sequence[float] | None = None,
) -> torch.Tensor:
    """Bellman target r + gamma (1 - d) min_e Q'_e(s', a'), a' ~ pi(h').

    ``reward``, ``done``: (..., B); ``next_q``: (..., E, B) from the target critic (leading dims: e.g. the
    stacked tasks). Returns (..., B), no grad.
    ``bounds``: (lo, hi) the returns can reach (e.g. (0, 1) for a sparse success reward that ends
    the episode); the target is clipped to it so bootstrapping cannot inflate Q past what any
    policy can earn (``algo.q_bounds``, not in the paper; None: no clipping).
    """
    with torch.no_grad():
        y = reward + gamma * (1.0 - done) * next_q.min(dim=-2).values
        return y if bounds is None else y.clamp(float(bounds[0]), float(bounds[1]))


def bellman_loss(q: torch.Tensor, q_target: torch.Tensor) -> torch.Tensor:
    """Online critic loss (plain Bellman TD): mean over members and batch of (Q_e(s,a) - y)^2.

    ``q``: (..., E, B); ``q_target``: (..., B). Returns (...,): one loss per leading index (a scalar for
    one critic; (N,) for N stacked task critics).
    """
    return (q - q_target.detach().unsqueeze(-2)).pow(2).mean((-2, -1))


def calql_clamp(q_policy: torch.Tensor, mc_return: torch.Tensor) -> torch.Tensor:
    """Cal-QL's calibration: Q of policy actions bounded below by the Monte-Carlo return-to-go.

    ``q_policy``: (..., E, B, n); ``mc_return``: (..., B). Returns max(Q, G) elementwise.
    """
    return torch.maximum(q_policy, mc_return.unsqueeze(-2).unsqueeze(-1).to(q_policy.dtype))


def calql_regularizer(
    q_data: torch.Tensor,
    q_rand: torch.Tensor,
    q_pi: torch.Tensor,
    q_next_pi: torch.Tensor,
    mc_return: torch.Tensor,
    alpha: float = 5.0,
    temperature: float = 1.0,
    copies: int = 1,
) -> torch.Tensor:
    """Cal-QL's conservative regulariser (Nakamoto et al. 2023, used by ConRFT for warm-up).

    alpha * E_s[ T logsumexp_j(Q(s, a_j) / T) - Q(s, a_data) ] over the candidate set
    {uniform random actions, max(Q(s, pi(s)), G), max(Q(s, pi(s')), G), the data action}
    (no importance weights: a consistency policy has no tractable log-density).

    ``q_data``: (..., E, B); ``q_rand``: (..., E, B, n); ``q_pi``, ``q_next_pi``: (..., E, B, m);
    ``mc_return``: (..., B). Returns (...,) (a scalar for one critic).
    ``copies``: each policy candidate stands for that many identical draws (a deterministic policy's n
    samples are one action n times, so it is evaluated once with ``copies = n``): its term enters the
    sum ``copies`` times, i.e. T log(copies) is added inside the logsumexp.
    """
    bonus = temperature * math.log(copies) if copies != 1 else 0.0
    cat = torch.cat(
        [q_rand, calql_clamp(q_pi, mc_return) + bonus, calql_clamp(q_next_pi, mc_return) + bonus,
         q_data.unsqueeze(-1)], dim=-1
    )
    ood = temperature * torch.logsumexp(cat / temperature, dim=-1)
    return alpha * (ood - q_data).mean((-2, -1))


def calql_loss(
    q_data: torch.Tensor,
    q_target: torch.Tensor,
    q_rand: torch.Tensor,
    q_pi: torch.Tensor,
    q_next_pi: torch.Tensor,
    mc_return: torch.Tensor,
    alpha: float = 5.0,
    temperature: float = 1.0,
    copies: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warm-up critic loss: Bellman TD + Cal-QL regulariser (shapes and ``copies``: :func:`calql_regularizer`).
    Returns (total, td, regulariser), each (...,)."""
    td = bellman_loss(q_data, q_target)
    reg = calql_regularizer(q_data, q_rand, q_pi, q_next_pi, mc_return, alpha, temperature, copies)
    return td + reg, td, reg


# ------------------------------------------------------------------------- refinement actor
def refine_bc_loss(action: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 8: E_(s,a*)~D_intv ||pi_theta^w(h) - a*||^2 with w ~ N(mu(s, l_rf), K^2 I). (B, A)."""
    return (action - target).pow(2).sum(-1).mean()


def refine_q_loss(q: torch.Tensor) -> torch.Tensor:
    """Eq. 9: -E_w~N(mu, K^2 I)[Q(s, pi_theta^w(h))]. ``q``: (B,) from each row's task critic."""
    return -q.mean()


def refine_reg_loss(action_refined: torch.Tensor, action_primary: torch.Tensor) -> torch.Tensor:
    """Eq. 10: E ||pi_theta^{w = mu(s, "[null]") + K z}(h) - pi_theta^{w = K z}(h)||^2, same z.

    Both (B, A); zero exactly when mu = 0.
    """
    return (action_refined - action_primary).pow(2).sum(-1).mean()


def refine_loss(
    bc: torch.Tensor, q: torch.Tensor, reg: torch.Tensor, eta: Sequence[float] = (1.0, 0.1, 0.1)
) -> torch.Tensor:
    """Eq. 11: L = eta1 L^BC + eta2 L^Q + eta3 L^Reg."""
    return eta[0] * bc + eta[1] * q + eta[2] * reg
