"""Small helpers both sides use (the robot runtime and the learner), so neither imports the other."""

from __future__ import annotations

import re

import numpy as np


def slug(task: str) -> str:
    """A task string as a TensorBoard-friendly tag: "place the bolt" -> "place_the_bolt"."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", task).strip("_").lower()


def mc_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return-to-go G_t = r_t + gamma G_{t+1} within one episode (G after the end = 0).

    ``rewards``: (N,). Returns float32 (N,). The Cal-QL lower bound for every step.
    """
    out = np.zeros(len(rewards), dtype=np.float64)
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = float(rewards[t]) + gamma * g
        out[t] = g
    return out.astype(np.float32)
