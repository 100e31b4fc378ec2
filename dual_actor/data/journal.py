"""A write-ahead journal of ingested online episodes: what the learner acknowledged survives ``kill -9``.

Every episode the learner takes into its buffers is first written to ``<run>/journal/<seq:09d>.pt`` (temporary
file, fsync, rename: a file is whole or absent). The checkpoint records the last sequence number it holds; a
resumed run loads the checkpoint and replays the journal entries after it, so it holds every transition that
was acknowledged before the kill. Entries the checkpoint already holds are pruned after the next checkpoint.
``<run>/journal/acks.jsonl`` gets one line per acknowledged episode (robot, task, rows, running total).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import torch

from data_tools.atomic import atomic_path


class EpisodeJournal:
    ACKS = "acks.jsonl"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._acks = open(self.root / self.ACKS, "a", encoding="utf-8")

    def path(self, seq: int) -> Path:
        return self.root / f"{int(seq):09d}.pt"

    def append(self, seq: int, task: str, rows: dict[str, torch.Tensor], meta: dict) -> None:
        """Durably write one episode (returns once it is on disk under its final name)."""
        with atomic_path(self.path(seq), suffix=".pt") as tmp:
            with open(tmp, "wb") as f:
                torch.save({"seq": int(seq), "task": task, "rows": rows, "meta": meta}, f)
                f.flush()
                os.fsync(f.fileno())

    def ack(self, line: dict) -> None:
        self._acks.write(json.dumps(line, sort_keys=True) + "\n")
        self._acks.flush()

    def seqs(self) -> list[int]:
        return sorted(int(p.stem) for p in self.root.glob("*.pt") if p.stem.isdigit())

    def replay(self, after: int) -> Iterator[dict]:
        """The journalled episodes with a sequence number above ``after``, in order."""
        for seq in self.seqs():
            if seq > after:
                yield torch.load(self.path(seq), map_location="cpu", weights_only=False)

    def prune(self, upto: int) -> int:
        """Delete the entries up to ``upto`` (a checkpoint on disk holds them); returns how many."""
        n = 0
        for seq in self.seqs():
            if seq <= upto:
                self.path(seq).unlink(missing_ok=True)
                n += 1
        return n

    def close(self) -> None:
        self._acks.close()
