"""Intervals for success rates: one run's (Wilson), an arm's over seeds (bootstrap), two arms paired.

- :func:`wilson_interval`: the Wilson score interval of ``k`` successes in ``n`` trials (one task of one run;
  25 trials give roughly +-0.15 around 0.8). Unlike the normal approximation it stays inside [0, 1] and is
  not empty at 0 or n successes.
- :func:`bootstrap_interval`: the percentile bootstrap of the mean over seeds (an arm's runs), resampling
  seeds with replacement; with 3-5 seeds it is wide and honest about it.
- :func:`paired_difference`: arm A minus arm B where run i of each shares its warm-up and its evaluation trials
  (same seed): the mean of the per-seed differences, its bootstrap interval, and how many seeds A won, tied,
  lost (a sign count, with its exact two-sided binomial p-value).

All deterministic (a fixed generator seed), numpy only.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``successes`` / ``trials`` (95% for the default ``z``)."""
    k, n = int(successes), int(trials)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= trials and trials >= 1, got {k} / {n}")
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per seed)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size < 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"bootstrap_interval needs at least one finite value, got {list(x)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(int(resamples), x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> dict:
    """``a[i] - b[i]`` over seeds i (the same warm-up and trials for both): ``{"mean", "interval", "wins",
    "ties", "losses", "sign_p"}``; ``sign_p``: the exact two-sided sign test over the untied seeds."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 1:
        raise ValueError(f"paired_difference needs two equal-length lists of per-seed values, got {x.shape} and "
                         f"{y.shape}")
    d = x - y
    wins, losses = int(np.sum(d > 0)), int(np.sum(d < 0))
    return {"mean": float(d.mean()), "interval": list(bootstrap_interval(d, level, resamples, seed)),
            "wins": wins, "ties": int(d.size - wins - losses), "losses": losses,
            "sign_p": sign_test_p(wins, losses)}


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided binomial p-value of ``wins`` vs ``losses`` under p = 1/2 (1.0 with no untied pair)."""
    n, k = int(wins) + int(losses), min(int(wins), int(losses))
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))
