"""DataModules: an ``IterableDataset`` that samples the live per-task buffers (Algorithm 1).

Warm-up (line 6): B/N rows per task from that task's demos.
Online (line 16): B/(2N) from demos + B/(2N) from rollouts per task; nothing is yielded until
every rollout buffer holds ``min_rollout`` (100) transitions.
Pooled (``pooled=True``, the flat multi-task baseline ``algo=conrft_flat``): one slice instead of one per
task, B rows drawn uniformly over all tasks' demos together (online: B/2 over the pooled demos + B/2 over
the pooled rollouts), so a task is sampled in proportion to its share of the data.
Every row carries ``from_demos`` (it came from a demo buffer).
Refinement (line 20): ``refine_batch_size`` rows from the global talk-and-tweak buffer when
it is not empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from dual_actor import constants as K
from dual_actor.data.buffers import TaskBuffers
from dual_actor.data.hdf5 import DataSpec, load_dataset_into


def _cat(parts: list[dict]) -> dict:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


class BufferSampler(IterableDataset):
    """Yields training batches ``{"tasks": [...], "talk_tweak": ... | None}`` forever."""

    def __init__(
        self,
        buffers: TaskBuffers,
        batch_size: int,
        phase: str = "warmup",
        refine_batch_size: int | None = None,
        min_rollout: int = 100,
        seed: int = 0,
        before_batch=None,
        pooled: bool = False,
    ):
        n = len(buffers.tasks)
        if batch_size % n:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of tasks {n}")
        if phase == "online" and batch_size % (2 * n):
            raise ValueError(f"online batch_size {batch_size} must be divisible by 2 x tasks = {2 * n}")
        self.buffers = buffers
        self.batch_size = batch_size
        self.phase = phase
        self.refine_batch_size = refine_batch_size or batch_size
        self.min_rollout = min_rollout
        self.generator = torch.Generator().manual_seed(seed)
        self.before_batch = before_batch
        self.pooled = bool(pooled)

    def ready(self) -> bool:
        if self.phase == "warmup":
            return all(len(self.buffers[t]["demos"]) > 0 for t in self.buffers.tasks)
        return all(
            len(self.buffers[t]["rollouts"]) >= self.min_rollout and len(self.buffers[t]["demos"]) > 0
            for t in self.buffers.tasks
        )

    def _rows(self, kind: str, n: int, tasks: list[str]) -> dict:
        """``n`` rows of the ``kind`` buffers of ``tasks``, uniform over their transitions together, marked
        ``from_demos``."""
        g = self.generator
        if len(tasks) == 1:
            rows = self.buffers[tasks[0]][kind].sample(n, g)
        else:
            bufs = [self.buffers[t][kind] for t in tasks]
            sizes = torch.tensor([float(len(b)) for b in bufs])
            counts = torch.bincount(torch.multinomial(sizes, n, replacement=True, generator=g), minlength=len(bufs))
            rows = _cat([b.sample(int(c), g) for b, c in zip(bufs, counts.tolist()) if c > 0])
        rows[K.FROM_DEMOS] = torch.full((n,), kind == "demos")
        return rows

    def sample(self) -> dict:
        tasks = list(self.buffers.tasks)
        groups = [tasks] if self.pooled else [[t] for t in tasks]
        rows = self.batch_size // len(groups)
        if self.phase == "warmup":
            slices = [self._rows("demos", rows, g) for g in groups]
        else:
            slices = [_cat([self._rows("demos", rows // 2, g), self._rows("rollouts", rows // 2, g)]) for g in groups]
        g = self.generator
        tt = self.buffers.talk_tweak
        return {K.TASKS: slices, K.TALK_TWEAK: tt.sample(self.refine_batch_size, g) if len(tt) else None}

    def __iter__(self) -> Iterator[dict]:
        while True:
            if self.before_batch is not None:
                self.before_batch()  # in-process interaction: collect, then sample the live buffers
            if not self.ready():
                raise RuntimeError(f"buffers not ready for phase {self.phase!r}: {self.buffers.sizes()}")
            yield self.sample()


class OfflineDataModule(L.LightningDataModule):
    """Warm-up data: an HDF5 talk-and-tweak dataset loaded into per-task buffers.

    ``embed`` / ``command_ids`` come from the policy (h is computed once per observation here).
    Call :meth:`setup` before building run directories: it validates the whole file.
    """

    def __init__(self, path: str | Path, spec: DataSpec, embed, command_ids, batch_size: int = 256,
                 gamma: float = 0.99, refine_batch_size: int | None = None, seed: int = 0, split: str | None = None,
                 pooled: bool = False):
        super().__init__()
        self.path = Path(path)
        self.spec = spec
        self.embed = embed
        self.command_ids = command_ids
        self.batch_size = batch_size
        self.gamma = gamma
        self.refine_batch_size = refine_batch_size
        self.seed = seed
        self.split = split
        self.pooled = pooled
        self.buffers: TaskBuffers | None = None
        self.episode_counts: dict[str, int] = {}
        self.sampler: BufferSampler | None = None
        self._sampler_state: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.buffers is not None:
            return
        buffers = TaskBuffers(self.spec.tasks)
        self.episode_counts = load_dataset_into(
            buffers, self.path, self.spec, self.embed, self.command_ids, self.gamma, self.split
        )
        self.buffers = buffers

    def train_dataloader(self) -> DataLoader:
        self.sampler = BufferSampler(self.buffers, self.batch_size, "warmup", self.refine_batch_size, seed=self.seed,
                                     pooled=self.pooled)
        if self._sampler_state is not None:  # a resumed warm-up continues the sample sequence
            self.sampler.generator.set_state(self._sampler_state)
            self._sampler_state = None
        # the loader's own generator: creating its iterator must not draw from the process RNG (resume)
        return DataLoader(self.sampler, batch_size=None, num_workers=0, generator=torch.Generator())

    def state_dict(self) -> dict:
        """Saved in the checkpoint by Lightning: the warm-up sampler's generator."""
        return {"sampler_rng": self.sampler.generator.get_state()} if self.sampler is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._sampler_state = state_dict.get("sampler_rng")
