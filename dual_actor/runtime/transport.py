"""The actor <-> learner boundary: send episodes of transitions, receive policy weights.

One small interface; :class:`InProcessTransport` is the single-machine implementation. A robot's control loop
needs only the :class:`RobotTransport` half: ``runtime=ray``'s robot process implements that half
(``dual_actor/runtime/ray_robot.py``), its learner side lives in ``dual_actor/data/ray_interaction.py``.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class EpisodeRecord:
    """One finished episode from an actor: transition rows (``dual_actor.constants`` keys, incl.
    ``intervention``) and its statistics."""

    task: str
    rows: dict[str, torch.Tensor]
    success: bool
    length: int
    interventions: int
    overruns: int = 0
    spoken: int = 0  # steps with a spoken refinement command in effect while the policy acted (no take-over)
    actor_id: str = "actor-0"
    weights_version: int = -1
    extra: dict = field(default_factory=dict)


class RobotTransport(Protocol):
    """What a robot's control loop needs: send a finished episode, read the newest weights."""

    def send_episode(self, episode: EpisodeRecord) -> None: ...

    def latest_weights(self) -> tuple[int, dict[str, torch.Tensor]] | None: ...


class Transport(RobotTransport, Protocol):
    """Both ends in one object (the in-process runtime): the learner also polls episodes and publishes weights."""

    def poll_episodes(self) -> list[EpisodeRecord]: ...

    def publish_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None: ...


class InProcessTransport:
    """Thread-safe queues in one process; weights are copied to CPU when published."""

    def __init__(self) -> None:
        self._episodes: deque[EpisodeRecord] = deque()
        self._lock = threading.Lock()
        self._weights: tuple[int, dict[str, torch.Tensor]] | None = None

    def send_episode(self, episode: EpisodeRecord) -> None:
        with self._lock:
            self._episodes.append(episode)

    def poll_episodes(self) -> list[EpisodeRecord]:
        with self._lock:
            out = list(self._episodes)
            self._episodes.clear()
        return out

    def publish_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        copy = {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}
        with self._lock:
            self._weights = (version, copy)

    def latest_weights(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        with self._lock:
            return self._weights
