"""The robot side of ``runtime=ray``: one Ray actor per robot, a weight board and an episode inbox.

Each :class:`RobotWorker` (its own process) builds its robot's control loops (:func:`~dual_actor.runtime.robot.
build_loops`: envs, operators, the talk-and-tweak labeller, its own teleop-log session) and runs episodes
round-robin over the tasks until the learner says stop. Between episodes (never mid-episode) it picks up the
newest policy weights from the :class:`WeightBoard` (the learner puts them in Ray's object store every
``online.weight_sync_every`` updates); a finished episode goes to the :class:`EpisodeInbox` as one object, so a
robot killed mid-episode sends nothing of it (its teleop episode stays in ``.staging/`` and is discarded on
restart). The robot holds (zero motion) while the learner cannot be reached or its weights are older than
``runtime.max_weight_age`` learner updates.

Nothing here imports the learner: the robot process needs the policy, the runtime and Ray.
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path

import torch

from dual_actor.runtime.transport import EpisodeRecord


class WeightBoard:
    """(Ray actor) The newest published weights (an object-store reference), the learner's update count and the
    stop flag."""

    def __init__(self) -> None:
        self.version = -1
        self.updates = 0
        self.ref = None
        self.stopped = False
        self.pause = False  # the learner is behind (runtime.max_steps_ahead): no new episode

    def set_pause(self, pause: bool) -> None:
        self.pause = bool(pause)

    def publish(self, version: int, refs: list) -> None:
        self.version, self.ref = int(version), refs[0]
        self.updates = max(self.updates, int(version))

    def tick(self, updates: int) -> None:
        self.updates = max(self.updates, int(updates))

    def latest(self) -> tuple[int, int, bool, list, bool]:
        """(version, learner updates, stopped, [weights ref] or [], pause new episodes)."""
        return self.version, self.updates, self.stopped, ([self.ref] if self.ref is not None else []), self.pause

    def stop(self) -> None:
        self.stopped = True


class EpisodeInbox:
    """(Ray actor) Finished episodes from every robot, drained by the learner."""

    def __init__(self) -> None:
        self.queue: deque[EpisodeRecord] = deque()

    def put(self, record: EpisodeRecord) -> None:
        self.queue.append(record)

    def drain(self) -> list[EpisodeRecord]:
        out = list(self.queue)
        self.queue.clear()
        return out


class _RobotTransport:
    """The :class:`~dual_actor.runtime.transport.RobotTransport` of a robot process: episodes to the inbox (the
    call returns once the inbox holds it), weights from what the worker fetched between episodes."""

    def __init__(self, inbox, robot: str, timeout_s: float):
        self.inbox, self.robot, self.timeout_s = inbox, robot, timeout_s
        self.weights: tuple[int, dict[str, torch.Tensor]] | None = None

    def send_episode(self, episode: EpisodeRecord) -> None:
        import ray

        episode.extra["robot"] = self.robot
        ray.get(self.inbox.put.remote(episode), timeout=self.timeout_s)

    def latest_weights(self):
        return self.weights


class RobotWorker:
    """(Ray actor) One robot: its control loops and the episode loop of :meth:`run`.

    Args:
        cfg: the run's resolved config as a plain dict (``OmegaConf.to_container``).
        index: robot index (0: robot A; odd: robot B when ``env.robot_shift`` is set); ``name``: its name.
        policy: the acting-side policy (pickled by Ray) with the weights of learner update ``version``; newer
            weights replace them from the board.
        board, inbox: the :class:`WeightBoard` and :class:`EpisodeInbox` actor handles.
        teleop_root: ``<run>/teleop`` (None: no teleop log); each incarnation writes its own session.
    """

    def __init__(self, cfg: dict, index: int, name: str, policy, board, inbox, teleop_root: str | None = None,
                 version: int = 0):
        from omegaconf import OmegaConf

        from data_tools.teleop_log import discard_staging
        from dual_actor.runtime.robot import build_loops, teleop_session

        torch.set_num_threads(1)
        self.cfg = OmegaConf.create(cfg)
        rt = self.cfg.runtime
        self.index, self.name, self.board = index, name, board
        self.policy = policy
        self.max_weight_age = None if rt.max_weight_age is None else int(rt.max_weight_age)
        self.timeout_s = float(rt.timeout_s)
        self.check_every = max(1, int(rt.age_check_every))
        self.hold_s = float(self.cfg.online.period_s or 0.1)
        self.transport = _RobotTransport(inbox, name, self.timeout_s)
        self.version = int(version)
        self.learner_updates = int(version)
        self._reachable = True
        session = None
        if teleop_root is not None:
            root = Path(teleop_root)
            for old in root.glob(f"online-{name}-*"):  # an earlier incarnation's unfinished episode
                discard_staging(old)
            session = teleop_session(self.cfg, root / f"online-{name}-{int(time.time())}-{os.getpid()}", staging=True)
        self.loops = build_loops(self.cfg, policy, self.transport, index=index, name=name,
                                 log_episode=session.episode if session is not None else None, gate=self._gate)
        self.next_loop = 0

    def pid(self) -> int:
        return os.getpid()

    # ------------------------------------------------------------------------------ learner contact
    def _board(self) -> tuple | None:
        """The board's (version, learner updates, stopped, [weights ref], pause); None: the learner cannot be
        reached within ``runtime.timeout_s`` (said once until it can again)."""
        import ray

        try:
            state = ray.get(self.board.latest.remote(), timeout=self.timeout_s)
        except Exception as e:  # noqa: BLE001 - unreachable / dead learner: the robot holds
            if self._reachable:
                print(f"[robot {self.name}] cannot reach the learner ({type(e).__name__}: {e}); holding", flush=True)
            self._reachable = False
            return None
        self._reachable = True
        self.learner_updates = int(state[1])
        return state

    def _fresh(self) -> bool:
        return self.version >= 0 and (self.max_weight_age is None
                                      or self.learner_updates - self.version <= self.max_weight_age)

    def _gate(self, step: int) -> bool:
        """Mid-episode: every ``age_check_every`` steps ask the board how old our weights are; hold if too old."""
        if step % self.check_every == 0:
            self._board()
        return self._reachable and self._fresh()

    def _sync(self) -> tuple[bool, bool]:
        """Between episodes: (may start one, stopped); fetches newer weights. Not while the weights are stale,
        the learner unreachable, or the learner asks the robots to wait for it (``runtime.max_steps_ahead``)."""
        import ray

        state = self._board()
        if state is None:
            return False, False
        version, _, stopped, refs, pause = state
        if stopped:
            return False, True
        if refs and version != self.version:
            try:
                self.transport.weights = (int(version), ray.get(refs[0], timeout=self.timeout_s))
            except Exception:  # noqa: BLE001 - the weights are gone with the learner: hold, retry
                return False, False
            self.version = int(version)
        return self._fresh() and not pause, False

    # ------------------------------------------------------------------------------ main loop
    def run(self) -> None:
        """Episodes until the learner stops the run; holds while it may not act. However it ends (stopped, an
        error, the process interrupted), every env is closed: the safety layer leaves the robot as
        ``safety.on_exit`` says and closes the connection."""
        try:
            while True:
                may_act, stopped = self._sync()
                if stopped:
                    return
                if not may_act:
                    time.sleep(self.hold_s)  # zero motion: a robot at rest between episodes
                    continue
                loop = self.loops[self.next_loop]
                self.next_loop = (self.next_loop + 1) % len(self.loops)
                loop.run_episode()
        finally:
            for loop in self.loops:
                loop.env.close()
