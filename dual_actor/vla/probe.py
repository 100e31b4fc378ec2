"""What h knows: a linear probe from a frozen backbone's h to the bench's privileged state.

The pixel bench hides the object's and the goal's positions from every learned part (docs/vla.md); whatever the
policy knows of them comes through h. :func:`position_probe` fits a ridge regression from h (standardised) to
those positions on some episodes and scores it on the others (R^2 per coordinate and the RMSE in metres), beside
the same probe from the proprioception alone (what the policy would know without the cameras). A low R^2 for
the object's position means the frozen h does not carry where the bolt is, whatever the learner does with it.

:func:`probe_dataset` runs it on an HDF5 file with the cameras' images (h computed by ``embed``, or read from
``obs/<h_key>`` when the file stores it); ``python -m dual_actor.train_vla`` writes it for its own demos as
``probe.json``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

TARGETS: dict[str, slice] = {"object": slice(4, 7), "goal": slice(36, 39)}
"""Entries of the Metaworld bench's 39-d state probed: the object's position (its first object) and the goal's."""
GYM_HIL_TARGETS: dict[str, slice] = {"object": slice(18, 21)}
"""gym-hil's pick-cube state (21-d): the block's position (its last three entries)."""


def targets_for(task: str) -> dict[str, slice]:
    """The hidden positions probed for ``task``'s world: gym-hil's block, else the bench's object and goal."""
    from dual_actor.runtime.sim.gym_hil import TASK as GYM_HIL_TASK

    return GYM_HIL_TARGETS if task == GYM_HIL_TASK else TARGETS


def ridge_fit(x: np.ndarray, y: np.ndarray, lam: float = 1e-2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge regression on standardised inputs: ``(weights, bias, x mean, x std)`` with ``y ~ ((x - mean) / std) W + b``."""
    mu, sd = x.mean(0), x.std(0) + 1e-8
    z = (x - mu) / sd
    b = y.mean(0)
    w = np.linalg.solve(z.T @ z + lam * len(z) * np.eye(z.shape[1]), z.T @ (y - b))
    return w, b, mu, sd


def r2_scores(y: np.ndarray, pred: np.ndarray) -> list[float]:
    """Coefficient of determination per column (1 - SSE / SST; 0: the mean's score)."""
    sse = ((y - pred) ** 2).sum(0)
    sst = ((y - y.mean(0)) ** 2).sum(0) + 1e-12
    return [float(v) for v in 1.0 - sse / sst]


def position_probe(features: Sequence[np.ndarray], states: Sequence[np.ndarray], proprio: Sequence[np.ndarray],
                   every: int = 5, lam: float = 1e-2, targets: Mapping[str, slice] = TARGETS) -> dict[str, Any]:
    """Per episode: ``features`` (n, D) h, ``states`` (n, S: the world's full state), ``proprio`` (n, P). Episode j
    is held out when ``j % every == every - 1`` (the others fit). Returns ``{"episodes": {"fit", "held_out"},
    "rows": {...}, <target>: {"h": {"r2": [x, y, z], "rmse_m": float}, "proprio": {...}}}`` for each of ``targets``
    (the bench's :data:`TARGETS` by default)."""
    held = [j % every == every - 1 for j in range(len(features))]
    if all(held) or not any(held):
        raise ValueError(f"the probe needs episodes to fit and to hold out: {len(features)} episodes, every {every}")

    def stack(xs, flag):
        return np.concatenate([np.asarray(x, dtype=np.float64) for x, h in zip(xs, held) if h == flag])

    out: dict[str, Any] = {"episodes": {"fit": int(len(held) - sum(held)), "held_out": int(sum(held))},
                           "rows": {"fit": int(len(stack(states, False))), "held_out": int(len(stack(states, True)))}}
    for name, sl in targets.items():
        y_fit, y_out = stack(states, False)[:, sl], stack(states, True)[:, sl]
        out[name] = {}
        for what, xs in (("h", features), ("proprio", proprio)):
            w, b, mu, sd = ridge_fit(stack(xs, False), y_fit, lam)
            pred = ((stack(xs, True) - mu) / sd) @ w + b
            out[name][what] = {"r2": r2_scores(y_out, pred),
                               "rmse_m": float(np.sqrt(((y_out - pred) ** 2).sum(1).mean()))}
    return out


def probe_dataset(path: Any, embed: Callable[[Mapping, Sequence[str]], Any], cameras: Sequence[str],
                  proprio_key: str = "proprio", h_key: str | None = None, batch: int = 64, **kw) -> dict[str, Any]:
    """:func:`position_probe` over the episodes of an HDF5 file: h from ``obs/<h_key>`` when stored, else
    ``embed({"state", "proprio", "images"}, tasks)`` in batches of ``batch`` rows; the targets of the file's world
    (:func:`targets_for` its tasks) unless ``targets`` is given."""
    import torch

    from data_tools.hdf5_format import read_episodes

    feats, states, props, tasks = [], [], [], set()
    for ep in read_episodes(path, load_images=True):
        tasks.add(ep.task)
        proprio = np.asarray(ep.obs[proprio_key], dtype=np.float32)
        if h_key is not None and h_key in ep.obs:
            h = np.asarray(ep.obs[h_key], dtype=np.float32)
        else:
            parts = []
            for i in range(0, len(proprio), batch):
                p = torch.from_numpy(proprio[i:i + batch])
                images = {c: torch.from_numpy(np.ascontiguousarray(ep.obs[c][i:i + batch].transpose(0, 3, 1, 2)))
                          for c in cameras}
                with torch.no_grad():
                    parts.append(embed({"state": p, "proprio": p, "images": images}, [ep.task] * len(p)).cpu().numpy())
            h = np.concatenate(parts)
        feats.append(h)
        states.append(np.asarray(ep.obs["state"], dtype=np.float32))
        props.append(proprio)
    if "targets" not in kw and tasks:
        kw["targets"] = targets_for(sorted(tasks)[0])
    return position_probe(feats, states, props, **kw)
