"""The ``state`` backbone (simulation default): h = [s, one_hot(task)].

No parameters: a frozen random MLP would add nothing a trainable head cannot learn, so the
embedding is the low-dim state with the task one-hot appended (the design's "MLP/identity" state backbone: no pretrained model).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class StateBackbone(nn.Module):
    """``embed(state (B, state_dim), tasks: B strings) -> h (B, state_dim + num_tasks)``."""

    def __init__(self, state_dim: int, tasks: Sequence[str]):
        super().__init__()
        self.state_dim = int(state_dim)
        self.tasks = list(tasks)
        self._task_index = {t: i for i, t in enumerate(self.tasks)}

    @property
    def embedding_dim(self) -> int:
        return self.state_dim + len(self.tasks)

    def task_ids(self, tasks: Sequence[str], device=None) -> torch.Tensor:
        try:
            return torch.tensor([self._task_index[t] for t in tasks], dtype=torch.long, device=device)
        except KeyError as e:
            raise KeyError(f"task {e.args[0]!r} is not one of the policy's tasks {self.tasks}") from None

    @torch.no_grad()
    def embed(self, state: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        if state.ndim != 2 or state.shape[1] != self.state_dim:
            raise ValueError(f"state backbone expects state (B, {self.state_dim}), got {tuple(state.shape)}")
        one_hot = torch.nn.functional.one_hot(self.task_ids(tasks, state.device), len(self.tasks))
        return torch.cat([state, one_hot.to(state.dtype)], dim=-1)
