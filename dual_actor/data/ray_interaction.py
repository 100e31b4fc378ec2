"""Learner side of ``runtime=ray``: robots as Ray actors, episodes streamed into the buffers as they finish.

:class:`RayInteraction` has the interface of the in-process :class:`~dual_actor.data.interaction.Interaction`
(``before_batch``, ``done``, ``env_steps``, ``pop_stats``, ``state_dict`` ...), so the Lightning fit loop, the
streaming sampler and the callbacks are the same for both runtimes. What differs:

- Robots run concurrently with the learner, one process each (:class:`~dual_actor.runtime.ray_robot.RobotWorker`,
  ``runtime.robots`` of them; odd ones are robot B). Ray restarts a killed robot (``runtime.max_restarts``); the
  learner re-issues its episode loop and never waits on it.
- ``before_batch`` drains the inbox into the buffers, waits (before the first batch) until every task's rollout
  buffer holds ``online.min_rollout`` transitions (Alg. 1 line 13), and keeps the learner within
  ``online.updates_per_env_step`` updates per collected step (plus ``runtime.max_updates_ahead``).
- Weights go through the object store (:meth:`publish_weights`, every ``online.weight_sync_every`` updates); robots
  pick them up between episodes.
- Every ingested episode is journalled before it counts (:class:`~dual_actor.data.journal.EpisodeJournal`): a
  ``kill -9`` of the run followed by ``resume=true`` holds every acknowledged transition; episodes that were
  still in flight (being collected, or in the inbox) are lost and collected again by the resumed run.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dual_actor.data.buffers import TaskBuffers
from dual_actor.data.interaction import OperatorEffort, after_fill, rollout_stats
from dual_actor.data.journal import EpisodeJournal
from dual_actor.runtime.transport import EpisodeRecord


def online_transitions(buffers: TaskBuffers) -> int:
    """Online transitions held: autonomous (rollouts) + operator (interventions) rows over all tasks."""
    return sum(len(buffers[t]["rollouts"]) + len(buffers[t]["interventions"]) for t in buffers.tasks)


def check_token_auth(rt) -> None:
    """An existing cluster (``runtime.address``) is joined only with Ray's token authentication on: the robot
    computer's cluster must not accept a process without the token (``runtime.require_auth``)."""
    import os

    if not rt.require_auth:
        return
    from pathlib import Path

    token = (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
             or (Path.home() / ".ray" / "auth_token").is_file())  # Ray's own default token file
    if os.environ.get("RAY_AUTH_MODE") != "token" or not token:
        raise ConnectionError(f"runtime.address={rt.address}: Ray's token authentication is not set up in this process "
                              f"(RAY_AUTH_MODE=token, and the token the cluster was started with in ~/.ray/auth_token, "
                              f"RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH; docs/real-robot.md); runtime.require_auth=false "
                              f"skips this")


def _robot_stats() -> dict:
    return {"env_steps": 0, "episodes": 0, "interventions": 0, "successes": 0, "weight_age": 0, "restarts": 0,
            "recent_success": deque(maxlen=20)}


class RayInteraction:
    """The learner's side of ``runtime=ray``. For the progress bar (``dual_actor.watch.OnlineProgress``) it gives
    ``env_steps``, ``max_env_steps`` and ``intervention_rate()``, as the in-process ``Interaction`` does."""

    def __init__(self, cfg: DictConfig, policy, buffers: TaskBuffers, run_dir: str | Path, version: int = 0):
        from dual_actor.runtime.robot import robot_name

        self.cfg = cfg
        self.rt = cfg.runtime
        on = cfg.online
        self.policy = policy  # the acting copy the robots start from (learner update ``version``)
        self.version = int(version)
        self.buffers = buffers
        self.run_dir = Path(run_dir)
        self.env_steps_per_update = 1.0 / float(on.updates_per_env_step)
        self.updates_per_env_step = float(on.updates_per_env_step)
        self.min_rollout = int(on.min_rollout)
        self.max_env_steps = int(on.env_steps)
        self.max_ahead = int(self.rt.max_updates_ahead)
        self.max_steps_ahead = None if self.rt.max_steps_ahead is None else int(self.rt.max_steps_ahead)
        self._paused = False
        self.n_robots = int(self.rt.robots)
        if self.n_robots < 1:
            raise ValueError(f"runtime.robots must be >= 1, got {self.n_robots}")
        self.names = [robot_name(i, cfg) for i in range(self.n_robots)]
        self.env_steps = 0
        self.episodes = 0
        self.seq = 0                    # last journalled / ingested episode
        self.ready_at: int | None = None  # env steps when learning could start
        self.filled: tuple[float, int] | None = None  # (clock, env steps) at this process's first batch
        self.batches = 0                # learner batches drawn since then
        self.learner_updates = self.version
        self.journal = EpisodeJournal(self.run_dir / "journal") if self.rt.journal else None
        self._prune_upto = 0
        self.recent: list[dict] = []
        self.safety: Counter = Counter()  # the safety layer's events over the online phase (summary.json)
        self.effort = OperatorEffort()
        self.robot = {n: _robot_stats() for n in self.names}
        self._started = False
        self._owns_ray = False
        self._pending_weights = None  # published before the robots started
        self.workers: dict = {}
        self.runs: dict = {}        # robot -> its running episode loop
        self.restarting: dict = {}  # robot -> a pid() call on its restarting actor
        self.pids: dict = {}
        self.dropped_at_stop: dict | None = None  # episodes in the inbox when the robots were stopped (close)

    # ------------------------------------------------------------------------------ robots
    def start(self) -> None:
        """Start Ray (locally unless ``runtime.address``), the board, the inbox and one actor per robot."""
        if self._started:
            return
        import ray

        from dual_actor.runtime.ray_robot import EpisodeInbox, RobotWorker, WeightBoard

        if not ray.is_initialized():
            kw = dict(include_dashboard=False, configure_logging=False, log_to_driver=True)
            if self.rt.address:
                check_token_auth(self.rt)
                ray.init(address=str(self.rt.address), **kw)
            else:
                # "local": always a new cluster of this run's own (never a stale one left by a killed run)
                ray.init(address="local", num_cpus=self.rt.num_cpus,
                         object_store_memory=int(self.rt.object_store_mb) * 2**20, **kw)
            self._owns_ray = True
        self.board = ray.remote(WeightBoard).options(num_cpus=0).remote()
        self.inbox = ray.remote(EpisodeInbox).options(num_cpus=0).remote()
        if self._pending_weights is not None:
            self.publish_weights(*self._pending_weights)
        cfg = OmegaConf.to_container(self.cfg, resolve=True)
        # kept referenced for the whole run: Ray rebuilds a restarted robot from these constructor arguments
        self._policy_ref = policy_ref = ray.put(self.policy)
        teleop = str(self.run_dir / "teleop") if self.cfg.online.log_teleop else None
        Worker = ray.remote(RobotWorker)
        for i, name in enumerate(self.names):
            w = Worker.options(num_cpus=0, max_restarts=int(self.rt.max_restarts), max_task_retries=0,
                               max_concurrency=2, resources=dict(self.rt.robot_resources or {})).remote(cfg, i, name, policy_ref, self.board, self.inbox, teleop,
                                                          self.version)
            self.workers[name] = w
            self.runs[name] = w.run.remote()
        self.pids = dict(zip(self.names, ray.get([self.workers[n].pid.remote() for n in self.names])))
        self._started = True
        print(f"[online] ray: {self.n_robots} robot(s) {self.names}, weights every {self.cfg.online.weight_sync_every} updates",
              flush=True)

    def publish_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Learner -> robots: the weights into the object store, their reference on the board."""
        self.learner_updates = int(version)
        if not self._started:
            self._pending_weights = (state_dict, version)
            return
        import ray

        ref = ray.put({k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()})
        self.board.publish.remote(int(version), [ref])

    def _check_robots(self) -> None:
        """A robot whose episode loop ended with an error (its process died) is waited for without blocking: once
        Ray's restarted actor answers (a new process id), it gets a new episode loop and counts one restart. One
        that Ray gave up on (``runtime.max_restarts``) is reported and left out. The learner waits for neither."""
        import ray

        if not self.runs and not self.restarting:
            raise RuntimeError("runtime=ray: every robot is gone (restarts exhausted); see the Ray logs above")
        refs = list(self.runs.values())
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        for name in [n for n, r in self.runs.items() if r in done]:
            try:
                ray.get(self.runs.pop(name))  # the robot stopped on its own (the board said stop)
            except Exception as e:  # noqa: BLE001 - the robot's process died
                print(f"[online] robot {name} died ({type(e).__name__}); its partial episode is dropped, Ray "
                      f"restarts it", flush=True)
                self.restarting[name] = self.workers[name].pid.remote()
        for name, ref in list(self.restarting.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            st = self.robot[name]
            try:
                pid = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - still restarting, or gone for good
                if isinstance(e, ray.exceptions.ActorDiedError) and "restart" not in str(e).lower():
                    print(f"[online] robot {name} is gone ({type(e).__name__}); training goes on without it",
                          flush=True)
                    del self.restarting[name]
                else:
                    self.restarting[name] = self.workers[name].pid.remote()
                continue
            del self.restarting[name]
            if pid != self.pids.get(name):
                st["restarts"] += 1
                self.pids[name] = pid
            print(f"[online] robot {name} is back (pid {pid}, restart {st['restarts']})", flush=True)
            self.runs[name] = self.workers[name].run.remote()

    # ------------------------------------------------------------------------------ ingestion
    def _ingest(self, rec: EpisodeRecord, replayed_seq: int | None = None) -> None:
        """One finished episode into the buffers: journalled first (durable before it counts), then acknowledged.
        ``replayed_seq``: an episode read back from the journal on resume (on disk already: not written again)."""
        journal = self.journal if replayed_seq is None else None
        self.seq = self.seq + 1 if replayed_seq is None else int(replayed_seq)
        robot = rec.extra.get("robot", rec.actor_id)
        meta = {"robot": robot, "success": bool(rec.success), "length": int(rec.length),
                "interventions": int(rec.interventions), "spoken": int(rec.spoken),
                "weights_version": int(rec.weights_version)}
        if journal is not None:
            journal.append(self.seq, rec.task, rec.rows, meta)
        self.buffers.add_episode(rec.task, "online", rec.rows)
        self.env_steps += rec.length
        self.episodes += 1
        st = self.robot.setdefault(robot, _robot_stats())
        st["env_steps"] += rec.length
        st["episodes"] += 1
        st["interventions"] += rec.interventions
        st["successes"] += int(rec.success)
        st["recent_success"].append(float(rec.success))
        st["weight_age"] = max(0, self.learner_updates - int(rec.weights_version))
        self.safety.update(rec.extra.get("safety") or {})  # the safety layer's events, every robot
        self.effort.add(rec)
        self.recent.append({"task": rec.task, "success": rec.success, "length": rec.length,
                            "interventions": rec.interventions, "overruns": rec.overruns})
        if journal is not None:
            journal.ack({"seq": self.seq, "robot": robot, "task": rec.task, "rows": int(rec.length),
                         "online_transitions": online_transitions(self.buffers)})

    def drain(self) -> int:
        import ray

        episodes = ray.get(self.inbox.drain.remote())
        for rec in episodes:
            self._ingest(rec)
        return len(episodes)

    def _wait(self) -> None:
        self._check_robots()
        if not self.drain():
            time.sleep(0.01)

    # ------------------------------------------------------------------------------ the Interaction interface
    @property
    def done(self) -> bool:
        return self.env_steps >= self.max_env_steps

    def ready(self) -> bool:
        return all(len(self.buffers[t]["rollouts"]) >= self.min_rollout for t in self.buffers.tasks)

    def before_batch(self) -> None:
        self.start()
        self._check_robots()
        self.drain()
        while not self.ready():  # Alg. 1 line 13
            self._wait()
        if self.ready_at is None:
            self.ready_at = self.env_steps  # the initial fill is not charged to the update budget
        if self.filled is None:
            self.filled = (time.perf_counter(), self.env_steps)
        self.batches += 1
        while not self.done and self.batches > (self.env_steps - self.ready_at) * self.updates_per_env_step + self.max_ahead:
            self._wait()
        if self.max_steps_ahead is not None:  # robots that outpace the learner wait between episodes
            pause = self.env_steps - self.ready_at > self.batches * self.env_steps_per_update + self.max_steps_ahead
            if pause != self._paused:
                self.board.set_pause.remote(pause)
                self._paused = pause

    def after_fill(self) -> dict[str, float] | None:
        """Seconds and env steps since this process's first learner batch (see Interaction.after_fill)."""
        return after_fill(self.filled, self.env_steps)

    def intervention_rate(self) -> float:
        """Operator take-over steps / interaction steps over every robot's episodes so far."""
        steps = sum(s["env_steps"] for s in self.robot.values())
        return sum(s["interventions"] for s in self.robot.values()) / steps if steps else 0.0

    def robot_summary(self) -> dict[str, dict]:
        """Per-robot figures (summary.json)."""
        return {n: {"env_steps": s["env_steps"], "episodes": s["episodes"], "successes": s["successes"],
                    "intervention_rate": s["interventions"] / s["env_steps"] if s["env_steps"] else 0.0,
                    "weight_age": s["weight_age"], "restarts": s["restarts"]} for n, s in self.robot.items()}

    def pop_stats(self) -> dict[str, float]:
        out = {**(rollout_stats(self.recent) if self.recent else {}), **self.effort.log_scalars()}
        self.recent = []
        out["rollout/env_steps"] = float(self.env_steps)
        for n, s in self.robot.items():
            out[f"robot/{n}/env_steps"] = float(s["env_steps"])
            out[f"robot/{n}/intervention_rate"] = s["interventions"] / s["env_steps"] if s["env_steps"] else 0.0
            if s["recent_success"]:
                out[f"robot/{n}/success"] = float(np.mean(s["recent_success"]))
            out[f"robot/{n}/weight_age"] = float(s["weight_age"])
        return out

    def close(self) -> None:
        """Stop the robots (each finishes its episode; nothing after the stop is ingested), then Ray."""
        if self.journal is not None:
            self.journal.close()
        if not self._started:
            return
        import ray

        try:
            ray.get(self.board.stop.remote(), timeout=10)
            ray.wait(list(self.runs.values()), num_returns=len(self.runs), timeout=60)
            left = ray.get(self.inbox.drain.remote(), timeout=10)  # finished after the budget: counted, not ingested
            self.dropped_at_stop = {"episodes": len(left), "steps": int(sum(r.length for r in left))}
        except Exception:  # noqa: BLE001 - shutting down regardless
            pass
        for w in self.workers.values():
            ray.kill(w)
        if self._owns_ray:
            ray.shutdown()
        self._started = False

    def state_dict(self) -> dict:
        if self.journal is not None:  # the previous checkpoint is on disk (renamed) by now: prune what it holds
            self.journal.prune(self._prune_upto)
            self._prune_upto = self.seq
        robots = {n: {k: (list(v) if isinstance(v, deque) else v) for k, v in s.items()} for n, s in self.robot.items()}
        return {"buffers": self.buffers.state_dict(), "env_steps": self.env_steps, "episodes": self.episodes,
                "seq": self.seq, "ready_at": self.ready_at, "batches": self.batches, "robots": robots,
                "effort": self.effort.state_dict(), "runtime": "ray"}

    def load_state_dict(self, state: dict) -> None:
        if state.get("runtime") != "ray":
            raise ValueError("this checkpoint's online phase ran with runtime=inprocess; resume it with the same runtime")
        self.buffers.load_state_dict(state["buffers"])
        self.env_steps, self.episodes, self.seq = int(state["env_steps"]), int(state["episodes"]), int(state["seq"])
        self.ready_at, self.batches = state["ready_at"], int(state["batches"])
        for n, s in state.get("robots", {}).items():
            self.robot[n] = {**s, "recent_success": deque(s["recent_success"], maxlen=20)}
        self.effort.load_state_dict(state.get("effort"))
        replayed = 0
        if self.journal is not None:
            for entry in self.journal.replay(self.seq):
                rec = EpisodeRecord(task=entry["task"], rows=entry["rows"], success=entry["meta"]["success"],
                                    length=entry["meta"]["length"], interventions=entry["meta"]["interventions"],
                                    spoken=int(entry["meta"].get("spoken", 0)),
                                    weights_version=entry["meta"]["weights_version"],
                                    extra={"robot": entry["meta"]["robot"]})
                self._ingest(rec, replayed_seq=entry["seq"])
                replayed += 1
            self._prune_upto = 0
        print(f"[online] journal: {replayed} episode(s) after the checkpoint replayed; "
              f"{online_transitions(self.buffers)} online transitions held", flush=True)
