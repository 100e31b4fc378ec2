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
                   every: int = 5, lam: float = 1e-2, targets: Mapping[str, slice] = TARGETS,
                   first: int | None = None, tasks: Sequence[str] | None = None) -> dict[str, Any]:
    """Per episode: ``features`` (n, D) h, ``states`` (n, S: the world's full state), ``proprio`` (n, P). Episode j
    is held out when ``j % every == every - 1`` (the others fit). Returns ``{"episodes": {"fit", "held_out"},
    "rows": {...}, <target>: {"h": {"r2": [x, y, z], "rmse_m": float}, "proprio": {...}}}`` for each of ``targets``
    (the bench's :data:`TARGETS` by default).

    ``first``: only each episode's first ``first`` frames (before the hand has moved far, so the hand's position
    says little of the object's: over whole episodes the hand goes to the object and carries it, and proprio alone
    "knows" where it is). ``tasks`` (one per episode): a third feature set, ``proprio_task``, the proprioception
    with the task's one-hot (each task's objects lie in their own region, and h has the instruction)."""
    held = [j % every == every - 1 for j in range(len(features))]
    if all(held) or not any(held):
        raise ValueError(f"the probe needs episodes to fit and to hold out: {len(features)} episodes, every {every}")
    if first is not None:
        features, states, proprio = ([np.asarray(x)[:first] for x in xs] for xs in (features, states, proprio))
    sets = {"h": features, "proprio": proprio}
    if tasks is not None:
        names = sorted(set(tasks))
        sets["proprio_task"] = [np.concatenate([np.asarray(p, dtype=np.float64),
                                                np.tile(np.eye(len(names))[names.index(t)], (len(p), 1))], axis=1)
                                for p, t in zip(proprio, tasks)]

    def stack(xs, flag):
        return np.concatenate([np.asarray(x, dtype=np.float64) for x, h in zip(xs, held) if h == flag])

    out: dict[str, Any] = {"episodes": {"fit": int(len(held) - sum(held)), "held_out": int(sum(held))},
                           "rows": {"fit": int(len(stack(states, False))), "held_out": int(len(stack(states, True)))}}
    for name, sl in targets.items():
        y_fit, y_out = stack(states, False)[:, sl], stack(states, True)[:, sl]
        out[name] = {}
        for what, xs in sets.items():
            w, b, mu, sd = ridge_fit(stack(xs, False), y_fit, lam)
            pred = ((stack(xs, True) - mu) / sd) @ w + b
            out[name][what] = {"r2": r2_scores(y_out, pred),
                               "rmse_m": float(np.sqrt(((y_out - pred) ** 2).sum(1).mean()))}
    return out


def embed_frames(embed: Callable[[Mapping, Sequence[str]], Any], proprio: np.ndarray, images: Mapping[str, np.ndarray],
                 task: str, batch: int = 64) -> np.ndarray:
    """h of one episode's frames: ``embed({"state", "proprio", "images": {camera: (B, 3, H, W) uint8}}, tasks)`` in
    batches of ``batch`` rows; ``images`` as stored (n, H, W, 3)."""
    import torch

    parts = []
    for i in range(0, len(proprio), batch):
        p = torch.from_numpy(np.asarray(proprio[i:i + batch], dtype=np.float32))
        ims = {c: torch.from_numpy(np.ascontiguousarray(x[i:i + batch].transpose(0, 3, 1, 2))) for c, x in images.items()}
        with torch.no_grad():
            parts.append(embed({"state": p, "proprio": p, "images": ims}, [task] * len(p)).cpu().numpy())
    return np.concatenate(parts)


def probe_dataset(path: Any, embed: Callable[[Mapping, Sequence[str]], Any], cameras: Sequence[str],
                  proprio_key: str = "proprio", h_key: str | None = None, batch: int = 64, start_frames: int = 10,
                  **kw) -> dict[str, Any]:
    """:func:`position_probe` over the episodes of an HDF5 file: h from ``obs/<h_key>`` when stored, else
    ``embed({"state", "proprio", "images"}, tasks)`` in batches of ``batch`` rows; the targets of the file's world
    (:func:`targets_for` its tasks) unless ``targets`` is given. With ``start_frames``, also ``"start"``: the same
    probe on each episode's first ``start_frames`` frames, with the ``proprio_task`` baseline (where the object is
    before the hand gets there: what the policy must read from the cameras)."""
    from data_tools.hdf5_format import read_episodes

    feats, states, props, tasks = [], [], [], []
    for ep in read_episodes(path, load_images=True):
        tasks.append(ep.task)
        proprio = np.asarray(ep.obs[proprio_key], dtype=np.float32)
        if h_key is not None and h_key in ep.obs:
            h = np.asarray(ep.obs[h_key], dtype=np.float32)
        else:
            h = embed_frames(embed, proprio, {c: ep.obs[c] for c in cameras}, ep.task, batch)
        feats.append(h)
        states.append(np.asarray(ep.obs["state"], dtype=np.float32))
        props.append(proprio)
    if "targets" not in kw and tasks:
        kw["targets"] = targets_for(sorted(tasks)[0])
    out = position_probe(feats, states, props, **kw)
    if start_frames:
        out["start"] = {"frames": int(start_frames),
                        **position_probe(feats, states, props, first=start_frames, tasks=tasks, **kw)}
    return out


def lever_probes(checkpoint: Any, data: Any, cameras: Sequence[str], layers: Sequence[int] = (-1,),
                 pools: Sequence[str] = ("prefix",), frames: int = 10, every: int | None = None,
                 proprio_key: str = "proprio") -> dict[str, Any]:
    """The start-of-episode probe (:func:`position_probe` with ``first=frames`` and the ``proprio_task`` baseline)
    for each choice of h a frozen SmolVLA offers: ``backbone.layer`` (the VLM layer whose K, V are pooled) x
    ``backbone.pool`` (``prefix``: Eq. 17's mask-pooling over images, language and state; ``images``: the cameras'
    tokens only). Only each episode's first ``frames`` frames are embedded. Returns ``{"frames", "episodes",
    "choices": [{"layer", "pool", "embedding_dim", <target>: {...}}, ...]}`` (``layer`` as resolved: -1 is the
    last layer's index). ``every``: every how many episodes one is held out (default: 5, fewer for fewer episodes,
    as ``python -m dual_actor.train_vla``'s probe.json)."""
    from data_tools.hdf5_format import read_episodes
    from dual_actor.nets.backbones.smolvla import SmolVLABackbone

    eps = [(ep.task, {k: np.asarray(ep.obs[k][:frames]) for k in (*cameras, proprio_key, "state")})
           for ep in read_episodes(data, load_images=True)]
    if not eps:
        raise ValueError(f"{data}: no episodes to probe")
    tasks = [t for t, _ in eps]
    every = int(every) if every is not None else max(2, min(5, len(eps)))
    out: dict[str, Any] = {"frames": int(frames), "episodes": len(eps), "choices": []}
    for layer in layers:
        for pool in pools:
            bb = SmolVLABackbone(checkpoint, camera_map={c: c for c in cameras}, device="cpu", layer=int(layer),
                                 pool=str(pool))
            def embed(obs, ts, bb=bb):
                return bb.embed({"state": obs["proprio"], "images": {c: x.float() / 255.0 for c, x in obs["images"].items()}}, ts)

            feats = [embed_frames(embed, o[proprio_key], {c: o[c] for c in cameras}, task) for task, o in eps]
            res = position_probe(feats, [o["state"] for _, o in eps], [o[proprio_key] for _, o in eps],
                                 every=every, tasks=tasks, targets=targets_for(sorted(tasks)[0]))
            out["choices"].append({"layer": bb.layer, "pool": str(pool), "embedding_dim": int(feats[0].shape[1]),
                                   **{k: v for k, v in res.items() if k not in ("episodes", "rows")}})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dual_actor.vla.probe CHECKPOINT DATA --out probe_levers.json [--layers 0 1 -1] [--pools prefix
    images] [--cameras corner gripperPOV] [--frames 10]``: :func:`lever_probes`, one line per choice."""
    import argparse
    import json
    from pathlib import Path

    from data_tools.atomic import atomic_write_text

    ap = argparse.ArgumentParser(prog="python -m dual_actor.vla.probe", description=main.__doc__.split(":", 1)[1])
    ap.add_argument("checkpoint", help="a SmolVLA policy folder (python -m dual_actor.train_vla's out)")
    ap.add_argument("data", help="an HDF5 dataset with the cameras' images, obs/proprio and obs/state")
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--layers", type=int, nargs="+", default=[-1])
    ap.add_argument("--pools", nargs="+", default=["prefix"], choices=["prefix", "images"])
    ap.add_argument("--cameras", nargs="+", default=["corner", "gripperPOV"])
    ap.add_argument("--frames", type=int, default=10, help="each episode's first frames probed")
    args = ap.parse_args(argv)
    for what, path in (("checkpoint", Path(args.checkpoint)), ("data", Path(args.data))):
        if not path.exists():
            print(f"error: {what} {path} does not exist", flush=True)
            return 2
    try:
        res = lever_probes(args.checkpoint, args.data, args.cameras, args.layers, args.pools, args.frames)
    except (ValueError, KeyError) as e:
        print(f"error: {e}", flush=True)
        return 2
    atomic_write_text(Path(args.out), json.dumps(res, indent=2))
    for c in res["choices"]:
        o = c["object"]
        print(f"layer {c['layer']:>2} pool {c['pool']:<7} object R^2 {' / '.join(f'{v:.2f}' for v in o['h']['r2'])} "
              f"RMSE {100 * o['h']['rmse_m']:.1f} cm (proprio + task: "
              f"{' / '.join(f'{v:.2f}' for v in o['proprio_task']['r2'])})", flush=True)
    return 0



def probe_md(probe: Mapping[str, Any], levers: Mapping[str, Any] | None = None) -> str:
    """docs/results.md's tables of a ``probe.json`` (whole demos and, when there, each episode's start) and of a
    ``python -m dual_actor.vla.probe`` output (``levers``): R^2 x / y / z and the RMSE per target and feature set."""

    def cell(r: Mapping[str, Any]) -> str:
        return f"{' / '.join(f'{v:.2f}' for v in r['r2'])} ({100 * r['rmse_m']:.1f} cm)"

    parts = []
    names = {"h": "h (the frozen VLA)", "proprio": "proprioception", "proprio_task": "proprioception + task"}
    start = probe.get("start")
    for title, res in (("whole demos", probe), (f"first {start['frames']} frames of each demo" if start else "", start)):
        if res is None:
            continue
        targets = [t for t in res if isinstance(res[t], Mapping) and "h" in res[t]]
        lines = [f"| {title}: features | " + " | ".join(f"{t}: R^2 x / y / z (RMSE)" for t in targets) + " |",
                 "|---|" + "---|" * len(targets)]
        for what in names:
            if what in res[targets[0]]:
                lines.append(f"| {names[what]} | " + " | ".join(cell(res[t][what]) for t in targets) + " |")
        parts.append("\n".join(lines))
    if levers is not None:
        lines = [f"| backbone.layer | backbone.pool | object at the start ({levers['frames']} frames): R^2 x / y / z "
                 "(RMSE) | goal: R^2 x / y / z (RMSE) |", "|---|---|---|---|"]
        for c in levers["choices"]:
            goal = cell(c["goal"]["h"]) if "goal" in c else "-"
            lines.append(f"| {c['layer']} | {c['pool']} | {cell(c['object']['h'])} | {goal} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
