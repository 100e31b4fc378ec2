"""HDF5 talk-and-tweak datasets -> transitions in the per-task buffers.

Reads through ``data_tools.hdf5_format`` only (the schema lives there). Each step becomes a
transition (s_t, a_t, r_t, s_{t+1}, done_t) with the embedding h cached, the Monte-Carlo
return-to-go (Cal-QL's bound) and the refinement-command id. The last step of an episode that
ended without ``done`` (time limit) has no recorded s_{t+1} and is dropped.

Cameras (``DataSpec.cameras``): the episodes' ``obs/<camera>`` images (uint8 (N, H, W, 3) in the
file) are read, turned channel-first, and handed to ``embed`` as the observation mapping
``{"state", "proprio", "images": {camera: uint8 (n, 3, H, W)}}`` in chunks of ``embed_batch_size``
rows (a VLA backbone on a long episode would not fit one batch). With ``store_images`` (the policy's
image encoder reads images) the rows also get ``obs_images`` / ``next_obs_images`` (n, C, 3, H, W)
uint8, cameras in ``cameras`` order. Without cameras nothing changes: images in the file are not read
and ``embed`` gets the state tensor (unless ``as_mapping``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from data_tools.hdf5_format import DatasetFormatError, Episode, read_episodes
from dual_actor import constants as K
from dual_actor.data.buffers import TaskBuffers
from dual_actor.utils import mc_returns


@dataclass
class DataSpec:
    """What the networks expect of the data: observation keys and dims.

    ``cameras``: image keys ``obs/<camera>`` to read (empty: none); ``image_size``: their H = W (None:
    any size, the same within a file); ``store_images``: keep them in the transition rows (the critics'
    and refinement actor's image encoder reads them); ``embed_batch_size``: rows per ``embed`` call
    when images are read; ``as_mapping``: hand ``embed`` the observation mapping even without cameras
    (a ``smolvla`` / ``cls`` backbone reads ``proprio`` from it); ``h_key``: the policy's
    :attr:`~dual_actor.policy.DualActorPolicy.h_key`: an episode that stores h under ``obs/<h_key>`` (written by the
    robot side that acted with the same frozen backbone) is not embedded again; ``state_dims``: the rows' state is
    the leading ``state_dims`` entries of ``obs/<obs_key>`` (``obs_dim`` wide; None: all of it).
    """

    tasks: Sequence[str]
    obs_key: str
    obs_dim: int
    proprio_key: str
    proprio_dim: int
    action_dim: int
    cameras: Sequence[str] = ()
    image_size: int | None = None
    store_images: bool = False
    embed_batch_size: int = 256
    as_mapping: bool = False
    h_key: str | None = None
    state_dims: int | None = None


def _check_shapes(ep: Episode, spec: DataSpec, where: str) -> None:
    for key, dim in ((spec.obs_key, spec.obs_dim), (spec.proprio_key, spec.proprio_dim)):
        if key not in ep.obs:
            raise DatasetFormatError(f"{where}/obs: no key '{key}' (has {sorted(ep.obs)})")
        if ep.obs[key].shape[1:] != (dim,):
            raise DatasetFormatError(
                f"{where}/obs/{key}: shape {ep.obs[key].shape}, but the networks expect (N, {dim})"
            )
    for cam in spec.cameras:
        if cam not in ep.obs:
            raise DatasetFormatError(
                f"{where}/obs: no camera '{cam}' (has {sorted(ep.obs)}); record the dataset with these cameras "
                f"(a simulated bench regenerates its demos at another data.path) or change env.cameras"
            )
        img = ep.obs[cam]
        size = spec.image_size
        if img.dtype != np.uint8 or img.ndim != 4 or img.shape[-1] != 3 or (
                size is not None and img.shape[1:3] != (size, size)):
            want = f"({size}, {size}, 3)" if size is not None else "(H, W, 3)"
            raise DatasetFormatError(f"{where}/obs/{cam}: {img.dtype} images of shape {img.shape}, but the "
                                     f"networks expect uint8 (N, {want[1:]}")
    if ep.actions.shape[1] != spec.action_dim:
        raise DatasetFormatError(
            f"{where}/actions: shape {ep.actions.shape}, but the networks expect (N, {spec.action_dim})"
        )


def episode_transitions(
    ep: Episode,
    task_id: int,
    embed: Callable[[torch.Tensor, Sequence[str]], torch.Tensor],
    command_ids: Callable[[Sequence[str]], torch.Tensor],
    spec: DataSpec,
    gamma: float,
) -> dict[str, torch.Tensor]:
    """One episode as transition rows (see ``dual_actor.constants`` for keys and shapes)."""
    obs = torch.from_numpy(np.asarray(ep.obs[spec.obs_key][:, : spec.state_dims], dtype=np.float32))
    proprio = torch.from_numpy(np.asarray(ep.obs[spec.proprio_key], dtype=np.float32))
    n = len(obs)
    images = None
    stored = spec.h_key is not None and spec.h_key in ep.obs
    if spec.cameras and (spec.store_images or not stored):
        images = {c: torch.from_numpy(np.ascontiguousarray(ep.obs[c].transpose(0, 3, 1, 2))) for c in spec.cameras}
    if stored:  # h as the robot side computed it with this very backbone: never embedded again
        h = torch.from_numpy(np.asarray(ep.obs[spec.h_key], dtype=np.float32))
        if h.shape[0] != n:
            raise ValueError(f"obs/{spec.h_key}: {h.shape[0]} rows for {n} steps")
    elif spec.cameras or spec.as_mapping:
        step = max(1, int(spec.embed_batch_size))
        h = torch.cat([
            embed({"state": obs[i : i + step], "proprio": proprio[i : i + step],
                   "images": {c: x[i : i + step] for c, x in (images or {}).items()}}, [ep.task] * len(obs[i : i + step]))
            for i in range(0, n, step)
        ])
    else:
        h = embed(obs, [ep.task] * n)
    nxt = torch.cat([torch.arange(1, n), torch.tensor([n - 1])])
    rows = {
        K.H: h,
        K.OBS: obs,
        K.PROPRIO: proprio,
        K.ACTION: torch.from_numpy(ep.actions).clamp(-1.0, 1.0),
        K.REWARD: torch.from_numpy(ep.rewards),
        K.DONE: torch.from_numpy(ep.dones.astype(np.float32)),
        K.NEXT_H: h[nxt],
        K.NEXT_OBS: obs[nxt],
        K.NEXT_PROPRIO: proprio[nxt],
        K.MC_RETURN: torch.from_numpy(mc_returns(ep.rewards, gamma)),
        K.COMMAND: command_ids(ep.refinement_command),
        K.TASK: torch.full((n,), task_id, dtype=torch.long),
        K.INTERVENTION: torch.from_numpy(ep.intervention),
        K.POLICY_ACTION: torch.from_numpy(ep.policy_actions),
    }
    if spec.store_images:
        stacked = torch.stack([images[c] for c in spec.cameras], 1)  # (n, C, 3, H, W) uint8
        rows[K.OBS_IMAGES] = stacked
        rows[K.NEXT_OBS_IMAGES] = stacked[nxt]
    if not ep.dones[-1]:
        rows = {k: v[:-1] for k, v in rows.items()}
    return rows


def load_dataset_into(
    buffers: TaskBuffers,
    path: str | Path,
    spec: DataSpec,
    embed: Callable,
    command_ids: Callable,
    gamma: float,
    split: str | None = None,
) -> dict[str, int]:
    """Fill ``buffers`` from a dataset. Demo episodes -> demos; online episodes -> rollouts
    (autonomous steps) and interventions + demos + talk-and-tweak (intervened steps), as
    Algorithm 1 lines 27-34 leave them. Returns episodes per task.

    Raises :class:`DatasetFormatError` for a configured task absent from the data, a task in the
    data that the policy does not know, or a shape mismatch, naming file, key and shape; nothing
    is added to ``buffers`` unless the whole file is valid.
    """
    path = Path(path)
    task_index = {t: i for i, t in enumerate(spec.tasks)}
    staged: list[tuple[str, str, dict]] = []
    counts = {t: 0 for t in spec.tasks}
    if spec.store_images and not spec.cameras:
        raise ValueError("DataSpec.store_images needs cameras")
    for ep in read_episodes(path, split=split, load_images=bool(spec.cameras)):
        where = f"{path}:/data/{ep.name}"
        if ep.task not in task_index:
            raise DatasetFormatError(f"{where}: task {ep.task!r} is not among the configured tasks {list(spec.tasks)}")
        _check_shapes(ep, spec, where)
        try:
            rows = episode_transitions(ep, task_index[ep.task], embed, command_ids, spec, gamma)
        except KeyError as e:
            raise DatasetFormatError(f"{where}/refinement_command: {e.args[0]}") from None
        counts[ep.task] += 1
        if len(rows[K.H]) == 0:
            continue
        staged.append((ep.task, ep.kind, rows))
    missing = [t for t, c in counts.items() if c == 0]
    if missing:
        present = sorted({t for t, _, _ in staged})
        raise DatasetFormatError(f"{path}: no episodes for configured task(s) {missing} (the file has {present})")
    for task, kind, rows in staged:
        buffers.add_episode(task, kind, rows)
    return counts
