"""Learner side of the online phase: driving the robots' control loops in one process, and the glue.

The robot side (``dual_actor.runtime``) never imports this module, the learner or Lightning.

:class:`Interaction` owns one :class:`ControlLoop` per task and runs episodes round-robin over
the tasks; the learner drains finished episodes from the transport into the buffers. In one
process the streaming dataset calls :meth:`Interaction.before_batch` before drawing each batch:
it earns ``env_steps_per_update`` interaction steps per learner update and spends them on whole
episodes, and before the first batch it runs until every rollout buffer holds ``min_rollout``
transitions (Algorithm 1 line 13). :class:`InteractionCallback` publishes the learner's policy
weights every ``weight_sync_every`` updates, stops training at the interaction budget, logs
rollout statistics and keeps the buffers in the checkpoint (a resumed run keeps every transition).
"""

from __future__ import annotations

from collections import Counter

import json
import time
from typing import Sequence

import lightning as L
import numpy as np

from dual_actor.data.buffers import TaskBuffers
from dual_actor.runtime.loop import ControlLoop
from dual_actor.runtime.transport import EpisodeRecord, Transport
from dual_actor.utils import slug


def rollout_stats(recent: Sequence[dict]) -> dict[str, float]:
    """TensorBoard ``rollout/*`` of the episodes since the last log (dicts with task, success, length,
    interventions, overruns)."""
    out: dict[str, float] = {}
    steps = sum(r["length"] for r in recent)
    out["rollout/intervention_rate"] = sum(r["interventions"] for r in recent) / max(steps, 1)
    out["rollout/overruns"] = float(sum(r["overruns"] for r in recent))
    for task in {r["task"] for r in recent}:
        rs = [r for r in recent if r["task"] == task]
        out[f"rollout/success_{slug(task)}"] = float(np.mean([r["success"] for r in rs]))
        out[f"rollout/length_{slug(task)}"] = float(np.mean([r["length"] for r in rs]))
    return out


class OperatorEffort:
    """The person's effort over the online phase, per task: ``takeover_steps`` (the operator moved the robot),
    ``spoken_steps`` (a spoken refinement command in effect while the policy acted, no take-over) and their sum
    ``effort_steps`` (steps the person was busy), beside ``env_steps``. What eval.json, summary.json, the learning
    curve's points and TensorBoard's ``effort/*`` report (the success-vs-effort figure reads the curve)."""

    KEYS = ("env_steps", "takeover_steps", "spoken_steps")

    def __init__(self) -> None:
        self.per_task: dict[str, dict[str, int]] = {}

    def add(self, rec: EpisodeRecord) -> None:
        c = self.per_task.setdefault(rec.task, dict.fromkeys(self.KEYS, 0))
        c["env_steps"] += int(rec.length)
        c["takeover_steps"] += int(rec.interventions)
        c["spoken_steps"] += int(rec.spoken)

    def totals(self) -> dict:
        def with_sum(c: dict) -> dict:
            return {**c, "effort_steps": c["takeover_steps"] + c["spoken_steps"]}

        total = {k: sum(c[k] for c in self.per_task.values()) for k in self.KEYS}
        return {**with_sum(total), "per_task": {t: with_sum(c) for t, c in self.per_task.items()}}

    def log_scalars(self) -> dict[str, float]:
        t = self.totals()
        return {f"effort/{k}": float(t[k]) for k in ("takeover_steps", "spoken_steps", "effort_steps")}

    def state_dict(self) -> dict:
        return {t: dict(c) for t, c in self.per_task.items()}

    def load_state_dict(self, state: dict | None) -> None:
        self.per_task = {t: {k: int(c.get(k, 0)) for k in self.KEYS} for t, c in (state or {}).items()}


def after_fill(filled: tuple[float, int] | None, env_steps: int) -> dict[str, float] | None:
    if filled is None:
        return None
    return {"seconds": time.perf_counter() - filled[0], "env_steps": env_steps - filled[1]}


def ingest(buffers: TaskBuffers, episodes: Sequence[EpisodeRecord]) -> None:
    """Learner side: each finished episode into the task's buffers (Algorithm 1 lines 27-34)."""
    for ep in episodes:
        buffers.add_episode(ep.task, "online", ep.rows)


class Interaction:
    """One robot's control loops in the learner's process, episodes round-robin over the tasks. What the progress
    bar reads (``dual_actor.watch.OnlineProgress``): ``env_steps``, ``max_env_steps``, ``intervention_rate()``;
    :class:`~dual_actor.data.ray_interaction.RayInteraction` provides the same."""

    def __init__(self, loops: Sequence[ControlLoop], transport: Transport, buffers: TaskBuffers,
                 env_steps_per_update: float = 1.0, min_rollout: int = 100, max_env_steps: int | None = None):
        self.loops = list(loops)
        self.transport = transport
        self.buffers = buffers
        self.env_steps_per_update = env_steps_per_update
        self.min_rollout = min_rollout
        self.max_env_steps = max_env_steps
        self.credit = 0.0
        self.env_steps = 0
        self.episodes = 0
        self.next_loop = 0
        self.recent: list[dict] = []  # per-episode stats since the last log
        self.safety: Counter = Counter()  # the safety layer's events over the online phase (summary.json)
        self.filled: tuple[float, int] | None = None  # (clock, env steps) when learning began (this process)
        self.effort = OperatorEffort()

    @property
    def done(self) -> bool:
        return self.max_env_steps is not None and self.env_steps >= self.max_env_steps

    def run_episode(self) -> None:
        loop = self.loops[self.next_loop]
        self.next_loop = (self.next_loop + 1) % len(self.loops)
        rec = loop.run_episode()
        self.env_steps += rec.length
        self.episodes += 1
        self.credit -= rec.length
        self.safety.update(rec.extra.get("safety") or {})  # the safety layer's events, every robot
        self.effort.add(rec)
        self.recent.append({"task": rec.task, "success": rec.success, "length": rec.length,
                            "interventions": rec.interventions, "overruns": rec.overruns})
        ingest(self.buffers, self.transport.poll_episodes())

    def ready(self) -> bool:
        return all(len(self.buffers[t]["rollouts"]) >= self.min_rollout for t in self.buffers.tasks)

    def before_batch(self) -> None:
        if not self.ready():
            while not self.ready():  # Alg. 1 line 13: wait for 100 rollouts per task
                self.run_episode()
            self.credit = 0.0  # the initial fill is not charged to the update budget
        if self.filled is None:
            self.filled = (time.perf_counter(), self.env_steps)
        self.credit += self.env_steps_per_update
        while self.credit > 0 and not self.done:
            self.run_episode()

    def pop_stats(self) -> dict[str, float]:
        if not self.recent:
            return {}
        out = {**rollout_stats(self.recent), **self.effort.log_scalars()}
        out["rollout/env_steps"] = float(self.env_steps)
        self.recent = []
        return out

    def after_fill(self) -> dict[str, float] | None:
        """Seconds and env steps since the first learner batch of this process (the steady state, without the
        initial fill or a runtime's start-up): the throughput benchmark's window."""
        return after_fill(self.filled, self.env_steps)

    def publish_weights(self, state_dict, version: int) -> None:
        """Learner -> the acting side (through the transport)."""
        self.transport.publish_weights(state_dict, version)

    def intervention_rate(self) -> float:
        """Operator take-over steps / interaction steps over the online phase so far."""
        steps = sum(l.stats.env_steps for l in self.loops)
        return sum(l.stats.interventions for l in self.loops) / steps if steps else 0.0

    def close(self) -> None:
        """Close every loop's env that can be closed (simulators free their renderers)."""
        for loop in self.loops:
            loop.env.close()

    def state_dict(self) -> dict:
        return {"buffers": self.buffers.state_dict(), "env_steps": self.env_steps, "episodes": self.episodes,
                "credit": self.credit, "next_loop": self.next_loop,
                "intervention_steps": sum(l.stats.interventions for l in self.loops),
                "effort": self.effort.state_dict(), "loops_rng": [l.rng_state() for l in self.loops]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("runtime", "inprocess") != "inprocess":
            raise ValueError(f"this checkpoint's online phase ran with runtime={state['runtime']}; resume it with that runtime")
        self.buffers.load_state_dict(state["buffers"])
        self.env_steps, self.episodes = int(state["env_steps"]), int(state["episodes"])
        self.credit, self.next_loop = float(state["credit"]), int(state["next_loop"])
        for loop, rng in zip(self.loops, state.get("loops_rng", [])):
            loop.load_rng_state(rng)
        self.effort.load_state_dict(state.get("effort"))


class InteractionCallback(L.Callback):
    """Weights to the acting side, the interaction budget, rollout logs, and the interaction's state in the
    checkpoint: buffers, counters, each robot's env / operator random state and the batch sampler's
    generator (``sampler``), so that a resumed run continues every random sequence."""

    def __init__(self, interaction, weight_sync_every: int = 1, log_every: int = 50, sampler=None):
        self.interaction = interaction
        self.sampler = sampler
        self.weight_sync_every = max(1, weight_sync_every)
        self.log_every = log_every

    def _publish(self, pl_module) -> None:
        # the frozen backbone never changes: only the rest of the policy travels to the acting side
        # (with actor_ema on, the averaged primary actor is what acts)
        sd = pl_module.deploy_state_dict()
        # the version is the learner's update count: a Ray robot's weight age is measured in updates
        self.interaction.publish_weights(sd, pl_module.num_updates)

    def on_train_start(self, trainer, pl_module) -> None:
        self._publish(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.num_updates % self.weight_sync_every == 0:
            self._publish(pl_module)
        if pl_module.num_updates % self.log_every == 0 and pl_module.logger is not None:
            stats = self.interaction.pop_stats()
            if stats:
                pl_module.logger.log_metrics(stats, step=pl_module.num_updates)
        if self.interaction.done:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        state = self.interaction.state_dict()
        if self.sampler is not None:
            state["sampler_rng"] = self.sampler.generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.interaction.load_state_dict(state_dict)
        if self.sampler is not None and "sampler_rng" in state_dict:
            self.sampler.generator.set_state(state_dict["sampler_rng"])
        print(f"[online] resumed: {self.interaction.env_steps} interaction steps, buffers "
              f"{json.dumps(self.interaction.buffers.sizes(), sort_keys=True)}", flush=True)
