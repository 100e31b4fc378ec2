"""Replay buffers: per task demos / rollouts / interventions, plus one global talk-and-tweak buffer.

Storage is one preallocated tensor per batch key (see ``dual_actor.constants``), grown by
doubling; sampling is uniform with replacement. ``state_dict()`` holds every stored row, so a
checkpoint keeps the data of a resumed run.

Camera images (``obs_images`` / ``next_obs_images``, (C, 3, H, W) per row) are stored as given, uint8:
4x less memory than float, converted by the image encoder on the learner's device. They are present
only when the policy's image encoder reads images; s_{t+1}'s images are stored per row like every
``next_*`` key (2 x C x 3 x H x W bytes a row: 196 KB with two 128x128 cameras).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from dual_actor.constants import CORRECTION, POLICY_ACTION

BUFFER_KINDS = ("demos", "rollouts", "interventions")


class TransitionBuffer:
    """Rows of transitions; ``add`` appends a dict of equal-length tensors, ``sample`` draws rows."""

    def __init__(self, initial_capacity: int = 1024):
        self._data: dict[str, torch.Tensor] = {}
        self._size = 0
        self._capacity = initial_capacity

    def __len__(self) -> int:
        return self._size

    @property
    def keys(self) -> list[str]:
        return list(self._data)

    def add(self, rows: Mapping[str, torch.Tensor]) -> None:
        n = {len(v) for v in rows.values()}
        if len(n) != 1:
            raise ValueError(f"rows of unequal length: { {k: len(v) for k, v in rows.items()} }")
        n = n.pop()
        if self._data and set(rows) != set(self._data):
            raise ValueError(f"rows have keys {sorted(rows)}, buffer holds {sorted(self._data)}")
        if not self._data:
            cap = max(self._capacity, n)
            self._data = {k: torch.empty((cap, *v.shape[1:]), dtype=v.dtype) for k, v in rows.items()}
            self._capacity = cap
        if self._size + n > self._capacity:
            cap = max(2 * self._capacity, self._size + n)
            for k, v in self._data.items():
                new = torch.empty((cap, *v.shape[1:]), dtype=v.dtype)
                new[: self._size] = v[: self._size]
                self._data[k] = new
            self._capacity = cap
        for k, v in rows.items():
            if v.shape[1:] != self._data[k].shape[1:]:
                raise ValueError(f"'{k}': row shape {tuple(v.shape[1:])} != buffer {tuple(self._data[k].shape[1:])}")
            self._data[k][self._size : self._size + n] = v
        self._size += n

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if self._size == 0:
            raise RuntimeError("cannot sample from an empty buffer")
        idx = torch.randint(0, self._size, (n,), generator=generator)
        return {k: v[idx] for k, v in self._data.items()}

    def all(self) -> dict[str, torch.Tensor]:
        return {k: v[: self._size] for k, v in self._data.items()}

    def state_dict(self) -> dict:
        return {"rows": {k: v.clone() for k, v in self.all().items()}}

    def load_state_dict(self, state: Mapping) -> None:
        self._data, self._size = {}, 0
        rows = state["rows"]
        if rows:
            self.add(rows)


class TaskBuffers:
    """Per-task ``demos`` / ``rollouts`` / ``interventions`` and the global ``talk_tweak`` buffer."""

    def __init__(self, tasks: Sequence[str]):
        self.tasks = list(tasks)
        self.per_task = {t: {k: TransitionBuffer() for k in BUFFER_KINDS} for t in self.tasks}
        self.talk_tweak = TransitionBuffer()

    def __getitem__(self, task: str) -> dict[str, TransitionBuffer]:
        return self.per_task[task]

    def add_episode(self, task: str, kind: str, rows: Mapping[str, torch.Tensor]) -> None:
        """Algorithm 1 lines 27-34 for one episode's rows (with an ``intervention`` column):
        a demo episode -> D_demos; an online episode's autonomous steps -> D_rollouts and its
        intervened steps -> D_intv, then (after the episode) D_demos and the global
        talk-and-tweak buffer. An optional ``policy_action`` column (the proposals) is kept only in the
        talk-and-tweak buffer, as ``correction`` = action - policy_action (NaN where not known)."""
        rows = dict(rows)
        proposals = rows.pop(POLICY_ACTION, None)
        if kind == "demo":
            self.per_task[task]["demos"].add(rows)
            return
        intv = rows["intervention"]
        auto = {k: v[~intv] for k, v in rows.items()}
        human = {k: v[intv] for k, v in rows.items()}
        if len(intv) - int(intv.sum()):
            self.per_task[task]["rollouts"].add(auto)
        if int(intv.sum()):
            self.per_task[task]["interventions"].add(human)
            self.per_task[task]["demos"].add(human)
            action = human["action"].float()
            correction = (action - proposals[intv].float() if proposals is not None
                          else torch.full_like(action, float("nan")))
            self.talk_tweak.add({**human, CORRECTION: correction})

    def sizes(self) -> dict[str, dict[str, int]]:
        out = {t: {k: len(b) for k, b in d.items()} for t, d in self.per_task.items()}
        out["talk_tweak"] = {"all": len(self.talk_tweak)}
        return out

    def state_dict(self) -> dict:
        return {
            "tasks": self.tasks,
            "per_task": {t: {k: b.state_dict() for k, b in d.items()} for t, d in self.per_task.items()},
            "talk_tweak": self.talk_tweak.state_dict(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        if list(state["tasks"]) != self.tasks:
            raise ValueError(f"buffer state is for tasks {state['tasks']}, expected {self.tasks}")
        for t, d in state["per_task"].items():
            for k, s in d.items():
                self.per_task[t][k].load_state_dict(s)
        tt = dict(state["talk_tweak"])
        rows = dict(tt.get("rows") or {})
        if rows and CORRECTION not in rows:  # saved before the column existed: no proposal known
            rows[CORRECTION] = torch.full_like(rows["action"].float(), float("nan"))
        self.talk_tweak.load_state_dict({**tt, "rows": rows})
