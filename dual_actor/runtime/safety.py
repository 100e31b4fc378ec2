"""The one safety layer between the control loop and every robot (``safety.*``; the bench's simulation included).

:class:`SafeEnv` wraps any :class:`~dual_actor.runtime.env.RobotEnv` and is one itself. Each ``step(action)``, in
this order:

1. a non-finite action (NaN / inf) is never sent: the hold action goes instead (:func:`hold_action`: zero motion,
   the gripper as last sent), a warning names the action;
2. the per-step limits: the translation the action commands, ``||a[0:3]|| * translation_scale_m``, above
   ``max_step_m`` scales ``a[0:3]`` down to it; the same for the rotation dims 3..5 of a 7-d action
   (``rotation_scale_rad``, ``max_step_rad``);
3. the workspace box: with ``p = ee_position()``, the target ``p + a[0:3] * translation_scale_m`` is clipped into
   ``[workspace_min, workspace_max]`` and ``a[0:3]`` recomputed from the clipped target. Per axis, motion is only
   ever taken away: an end effector already outside the box may move back towards it, never further out, and is
   not pulled in by the layer (an action of zero stays zero);
4. the inner ``step``; then, where ``joint_limits`` are set and the arm reports its joints, a joint beyond its limit
   holds the arm and ends the episode.

``info["safety"]`` lists the events of the step (empty when nothing happened): ``non_finite_action_held``,
``translation_limited``, ``rotation_limited``, ``workspace_clipped``, ``joint_target_clamped``, ``joint_limit``,
``watchdog``; ``info["safety_detail"]`` holds their numbers (``{event: {...}}``) and ``info["executed_action"]`` the
action the robot received (what a transition should record). :attr:`SafeEnv.events` counts every event of the
env's life (a ``Counter``, for the run's summary; ``stalled`` too).

Joint limits: :meth:`SafeEnv.clamp_joints` clamps joint targets into ``joint_limits``; an env with
``set_joint_filter(fn)`` (an adapter that commands joints) gets it at construction.

The watchdog. Every call into the robot (``reset``, ``step``, ``images``, the reads ``observe`` / ``ee_position``
/ ``joint_positions``, ``close``) runs on one long-lived worker thread per env, the calling thread waiting for it:

- a call slower than ``timeout_s`` holds the arm (``hold()``, at once when ``timeout_s`` passes, from the calling
  thread: :class:`~dual_actor.runtime.env.Arm` makes ``hold`` callable at any time) and ends the episode: a slow
  ``step`` returns ``truncated=True``; after a slow ``reset`` / ``images`` / read the next ``step`` sends the hold
  action instead of the policy's and returns ``truncated=True`` (``info["safety_detail"]["watchdog"]``: the calls
  and their durations);
- a call still running ``stall_s`` after it started (default ``2 * timeout_s``) is stalled: the arm was told to
  hold, :class:`RobotStalled` is raised and the worker is abandoned (a daemon thread); ``step`` / ``reset`` /
  ``images`` then raise :class:`RobotStalled` again, ``close()`` still runs on a fresh worker.

A ``hold()`` that raises is logged and does not stop the watchdog (the episode still ends; a stall still raises).

Why one worker and not a thread per call. On the bench's step (``MetaworldTaskEnv`` pick-place, random actions,
2-core CPU, medians of 7 rounds of 2000 steps): unwrapped 0.49 ms/step; a thread per call 0.84 ms (+0.35); the
long-lived worker 0.61 ms (+0.12; a no-op call's hand-over alone is ~15 us, the rest is the cross-thread wake-up and
cache cost around real work); ``timeout_s=None`` (no worker) 0.50 ms (+0.015); with the box and ``max_step_m`` on,
0.72 ms (``ee_position`` is a second call). The worker also keeps every call on one thread, as the cameras' GL
context (made current on the thread that renders) and many robot drivers require.

Exit: :meth:`SafeEnv.close` leaves the robot as ``on_exit`` says (``hold``; ``home``: the env's ``home()`` if it
has one, else a warning and hold), then closes the inner env even if that raised; it is idempotent, and
``SafeEnv`` is a context manager (Ctrl-C and crashes inside ``with`` close it too).

:func:`safe_factory` turns an env factory into one whose envs are wrapped (``env.robot`` through ``safety.*``).
``rng_state`` / ``load_rng_state`` pass through, and ``isinstance(safe, RandomStateful)`` holds exactly when the
wrapped env is one; any other attribute is the wrapped env's (``__getattr__``).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import weakref
from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dual_actor.runtime.env import RandomStateful

logger = logging.getLogger(__name__)

ON_EXIT = ("hold", "home")
"""What :meth:`SafeEnv.close` leaves the robot doing (``safety.on_exit``)."""

EVENTS = ("non_finite_action_held", "translation_limited", "rotation_limited", "workspace_clipped",
          "joint_target_clamped", "joint_limit", "watchdog")
"""The events ``info["safety"]`` may list, in the order a step meets them."""

CONFIG_FIELDS = ("workspace_min", "workspace_max", "max_step_m", "max_step_rad", "joint_limits", "timeout_s",
                 "on_exit")
"""The keys of ``safety.*`` (:class:`dual_actor.config.sections.SafetyConfig`) :meth:`SafeEnv.from_config` reads."""


def hold_action(previous: np.ndarray | None, action_dim: int, gripper_index: int | None = -1) -> np.ndarray:
    """Zero motion; the gripper keeps its last command (a held robot must not drop the part)."""
    a = np.zeros(action_dim, dtype=np.float32)
    if gripper_index is not None and previous is not None:
        a[gripper_index] = previous[gripper_index]
    return a


class RobotStalled(RuntimeError):
    """A call into the robot did not return within the watchdog's limit: the arm was told to hold; stop the run."""


def _serve(jobs: queue.SimpleQueue, results: queue.SimpleQueue) -> None:
    """The worker thread: runs ``(id, fn, args, kwargs)`` jobs in order until a None."""
    while True:
        job = jobs.get()
        if job is None:
            return
        jid, fn, args, kwargs = job
        try:
            results.put((jid, True, fn(*args, **kwargs)))
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which raises it
            results.put((jid, False, e))


class _Worker:
    """One daemon thread that makes an env's calls, one at a time, in the order they are submitted."""

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._last = 0
        threading.Thread(target=_serve, args=(self._jobs, self._results), name=name, daemon=True).start()

    def submit(self, fn: Callable, args: tuple, kwargs: dict) -> int:
        self._last += 1
        self._jobs.put((self._last, fn, args, kwargs))
        return self._last

    def wait(self, job: int, timeout: float | None) -> tuple[bool, Any]:
        """``(ok, value or exception)`` of ``job``; ``queue.Empty`` after ``timeout`` s (None: no limit). Results of
        earlier jobs whose wait was interrupted (Ctrl-C) are dropped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            jid, ok, value = self._results.get(timeout=left)
            if jid == job:
                return ok, value

    def stop(self) -> None:
        self._jobs.put(None)


def _vector(values, n: int, name: str) -> np.ndarray | None:
    if values is None:
        return None
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if v.shape != (n,) or not np.all(np.isfinite(v)):
        raise ValueError(f"safety.{name} must be {n} finite numbers, got {list(values)}")
    return v


class SafeEnv:
    """``env`` behind the safety layer (see the module's docstring).

    Args:
        env: any :class:`~dual_actor.runtime.env.RobotEnv`; the checks that need the arm read its
            :class:`~dual_actor.runtime.env.Arm` members (a check configured on an env without them: ValueError).
        workspace_min, workspace_max: ``[x, y, z]`` metres, the end effector's box (None: no box).
        max_step_m, max_step_rad: the largest translation / rotation one action may command (None: off).
        joint_limits: ``[[low, high], ...]`` per joint, the arm's units (None: off).
        timeout_s: the watchdog (None: no watchdog, calls made directly on the calling thread).
        stall_s: a call still running this long after it started is stalled (None: ``2 * timeout_s``).
        on_exit: ``"hold"`` | ``"home"``: what :meth:`close` leaves the robot doing.
        gripper_index: the gripper's dim in an action (None: no gripper).
        clock: measures the calls' durations (injectable for tests).

    Raises:
        ValueError: a bad value, or a configured check whose arm members the env lacks (the message names both).
    """

    def __new__(cls, env: Any, *args, **kwargs):
        if cls is SafeEnv and isinstance(env, RandomStateful):
            cls = _RandomStatefulSafeEnv  # isinstance(safe, RandomStateful) exactly when the wrapped env is one
        return super().__new__(cls)

    def __init__(
        self,
        env: Any,
        *,
        workspace_min: Sequence[float] | None = None,
        workspace_max: Sequence[float] | None = None,
        max_step_m: float | None = None,
        max_step_rad: float | None = None,
        joint_limits: Sequence[Sequence[float]] | None = None,
        timeout_s: float | None = 5.0,
        stall_s: float | None = None,
        on_exit: str = "hold",
        gripper_index: int | None = -1,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.env = env
        self.workspace_min = _vector(workspace_min, 3, "workspace_min")
        self.workspace_max = _vector(workspace_max, 3, "workspace_max")
        if (self.workspace_min is None) != (self.workspace_max is None):
            raise ValueError("safety.workspace_min and safety.workspace_max go together (both, or neither)")
        if self.workspace_min is not None and not np.all(self.workspace_min < self.workspace_max):
            raise ValueError(f"safety.workspace_min < safety.workspace_max on every axis, got "
                             f"{self.workspace_min.tolist()} / {self.workspace_max.tolist()}")
        for name, v in (("max_step_m", max_step_m), ("max_step_rad", max_step_rad), ("timeout_s", timeout_s)):
            if v is not None and not float(v) > 0:
                raise ValueError(f"safety.{name} must be > 0, got {v}")
        self.max_step_m = None if max_step_m is None else float(max_step_m)
        self.max_step_rad = None if max_step_rad is None else float(max_step_rad)
        self.joint_limits = None
        if joint_limits is not None:
            lim = np.asarray([[float(lo), float(hi)] for lo, hi in joint_limits], dtype=np.float64).reshape(-1, 2)
            if not np.all(lim[:, 0] < lim[:, 1]):
                raise ValueError(f"safety.joint_limits must be [low, high] with low < high, got {lim.tolist()}")
            self.joint_limits = lim
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.stall_s = None if self.timeout_s is None else float(stall_s if stall_s is not None else 2 * self.timeout_s)
        if self.stall_s is not None and self.stall_s < self.timeout_s:
            raise ValueError(f"stall_s ({self.stall_s}) must be >= timeout_s ({self.timeout_s})")
        if on_exit not in ON_EXIT:
            raise ValueError(f"safety.on_exit must be one of {list(ON_EXIT)}, got {on_exit!r}")
        self.on_exit = on_exit
        self.gripper_index = gripper_index
        self.clock = clock
        self.events: Counter = Counter()
        self._check_arm()
        self._worker: _Worker | None = None
        self._closed = False
        self._stalled: str | None = None  # the call that stalled
        self._watchdog: list[dict] = []  # slow calls not yet reported by a step
        self._filter_events: list[tuple[str, dict]] = []  # the joint filter's, during the inner step
        self._last_sent: np.ndarray | None = None
        self._ended: str | None = None  # why the layer ended the episode (steps refused until reset)
        self._joints_unknown_warned = False
        if self.joint_limits is not None and callable(getattr(env, "set_joint_filter", None)):
            env.set_joint_filter(self.clamp_joints)

    def _check_arm(self) -> None:
        env, name = self.env, type(self.env).__name__
        needs = []
        if self.workspace_min is not None:
            needs.append(("the workspace box (safety.workspace_min / workspace_max)",
                          ("ee_position", "translation_scale_m")))
        if self.max_step_m is not None:
            needs.append(("the per-step translation limit (safety.max_step_m)", ("translation_scale_m",)))
        if self.max_step_rad is not None:
            needs.append(("the per-step rotation limit (safety.max_step_rad)", ("rotation_scale_rad",)))
        for check, members in needs:
            missing = [m for m in members if not hasattr(env, m)]
            if missing:
                raise ValueError(f"{check} needs the env's {' and '.join(missing)} (dual_actor.runtime.env.Arm); "
                                 f"{name} has none")
        if self.joint_limits is not None and not (hasattr(env, "joint_positions") or hasattr(env, "set_joint_filter")):
            raise ValueError(f"the joint limits (safety.joint_limits) need the env's joint_positions() or "
                             f"set_joint_filter(fn) (dual_actor.runtime.env.Arm); {name} has neither")
        if not callable(getattr(env, "hold", None)):
            logger.warning("%s has no hold() (dual_actor.runtime.env.Arm): the safety layer can end its episodes "
                           "but cannot hold it", name)

    @classmethod
    def from_config(cls, env: Any, safety: Any, **kwargs) -> "SafeEnv":
        """``SafeEnv(env, ...)`` from the ``safety`` section: a ``SafetyConfig``, an OmegaConf node or a mapping with
        its fields (:data:`CONFIG_FIELDS`; absent ones keep their defaults). ``kwargs``: the other arguments."""
        if dataclasses.is_dataclass(safety):
            values = {f.name: getattr(safety, f.name) for f in dataclasses.fields(safety)}
        elif isinstance(safety, Mapping) or hasattr(safety, "keys"):
            values = {str(k): safety[k] for k in safety.keys()}
        else:
            raise TypeError(f"safety: a SafetyConfig, an OmegaConf node or a mapping, got {type(safety).__name__}")
        unknown = sorted(set(values) - set(CONFIG_FIELDS))
        if unknown:
            raise ValueError(f"unknown safety setting(s) {unknown}; known: {list(CONFIG_FIELDS)}")
        if values.get("joint_limits") is not None:
            values["joint_limits"] = [[float(v) for v in lim] for lim in values["joint_limits"]]
        return cls(env, **values, **kwargs)

    # ------------------------------------------------------------------------------------------ the watchdog
    def _call(self, name: str, fn: Callable, *args, watch: bool = True, **kwargs) -> Any:
        """``fn(*args, **kwargs)`` on the worker, timed (``watch=False``: waited for without a limit)."""
        if self.timeout_s is None:
            return fn(*args, **kwargs)
        if self._worker is None:
            self._worker = _Worker(f"safety-{type(self.env).__name__}")
            weakref.finalize(self, self._worker.stop)
        worker = self._worker
        start = self.clock()
        job = worker.submit(fn, args, kwargs)
        held = False
        try:
            ok, value = worker.wait(job, self.timeout_s if watch else None)
        except queue.Empty:
            self._hold_now(f"watchdog: {name}() has not returned after {self.timeout_s:g} s (safety.timeout_s)")
            held = True
            try:
                ok, value = worker.wait(job, self.stall_s - self.timeout_s)
            except queue.Empty:
                self._worker = None  # stuck in fn: abandoned (a daemon thread; it stops once fn returns)
                worker.stop()
                self._stalled = name
                self.events["stalled"] += 1
                logger.error("safety: the robot's %s() has not returned within %g s: the arm was told to hold; "
                             "stopping", name, self.stall_s)
                raise RobotStalled(f"the robot's {name}() has not returned within {self.stall_s:g} s "
                                   f"(safety.timeout_s = {self.timeout_s:g} s): the arm was told to hold; "
                                   f"stopping the run") from None
        duration = self.clock() - start
        if watch and (held or duration > self.timeout_s):
            if not held:
                self._hold_now(f"watchdog: {name}() took {duration:.3f} s > {self.timeout_s:g} s (safety.timeout_s)")
            self._watchdog.append({"call": name, "duration_s": float(duration), "timeout_s": self.timeout_s})
            self.events["watchdog"] += 1
        if not ok:
            raise value
        return value

    def _hold_now(self, why: str) -> None:
        """Hold for the watchdog or a joint limit; a hold that raises is logged and does not stop the check."""
        logger.warning("safety: %s; holding the arm and ending the episode", why)
        try:
            self.hold()
        except Exception:  # noqa: BLE001 - the episode still ends (a stall still raises RobotStalled)
            logger.exception("safety: %s.hold() raised", type(self.env).__name__)

    def _refuse_if_stalled(self, name: str) -> None:
        if self._stalled is not None:
            raise RobotStalled(f"{name}(): the robot's {self._stalled}() stalled earlier; close() this env")
        if self._closed:
            raise RuntimeError(f"{name}(): the env is closed")

    # ------------------------------------------------------------------------------------------ RobotEnv
    @property
    def cameras(self) -> Sequence[str]:
        return self.env.cameras

    @property
    def elapsed_steps(self) -> int:
        return self.env.elapsed_steps

    def reset(self, **kwargs) -> np.ndarray:
        """The inner ``reset(**kwargs)`` (the bench's ``hand_pos=``), watched; a new episode for the layer."""
        self._refuse_if_stalled("reset")
        if self._watchdog:
            logger.info("safety: slow calls after the episode's end not reported by a step: %s", self._watchdog)
        self._watchdog, self._last_sent, self._ended = [], None, None
        return self._call("reset", self.env.reset, **kwargs)

    def images(self) -> dict[str, np.ndarray]:
        """The inner ``images()``, watched (a slow read ends the episode at the next step)."""
        self._refuse_if_stalled("images")
        return self._call("images", self.env.images)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The checks of the module's docstring, then the inner step; ``info["safety"]`` lists what happened."""
        self._refuse_if_stalled("step")
        if self._ended is not None:
            raise RuntimeError(f"the safety layer ended this episode ({self._ended}); call reset()")
        events: list[str] = []
        detail: dict[str, Any] = {}
        a = action
        if not np.all(np.isfinite(np.asarray(action, dtype=np.float64))):
            a = hold_action(self._last_sent, len(action), self.gripper_index)
            logger.warning("safety: non-finite action %s held (the hold action %s sent instead)",
                           np.asarray(action).tolist(), a.tolist())
            self._event(events, detail, "non_finite_action_held", {"action": np.asarray(action).tolist()})
        elif not self._watchdog:
            a = self._limit(action, events, detail)
        if self._watchdog:  # a slow reset / images / read since the last step: hold, end the episode
            a = hold_action(self._last_sent, len(action), self.gripper_index)
        self._filter_events = []
        obs, reward, terminated, truncated, info = self._call("step", self.env.step, a)
        self._last_sent = np.array(a)
        for event, d in self._filter_events:
            self._event(events, detail, event, d)
        if self._watchdog:
            self._event(events, detail, "watchdog", list(self._watchdog), count=False)
            self._watchdog = []
            truncated = True
            self._ended = "watchdog"
        if self.joint_limits is not None and not self._joints_ok(events, detail):
            truncated = True
            self._ended = "joint_limit"
        info = dict(info)
        info["safety"] = events
        info["safety_detail"] = detail
        info["executed_action"] = self._last_sent
        return obs, reward, terminated, truncated, info

    def _event(self, events: list, detail: dict, event: str, d: Any, count: bool = True) -> None:
        if event not in events:
            events.append(event)
        detail[event] = d
        if count:
            self.events[event] += 1

    def _limit(self, action: np.ndarray, events: list, detail: dict) -> np.ndarray:
        """The per-step limits, then the workspace box; ``action`` itself when nothing applies."""
        if self.max_step_m is None and self.max_step_rad is None and self.workspace_min is None:
            return action
        a = np.array(action, dtype=np.float64)
        changed = False
        limits = [(slice(0, 3), self.max_step_m, self.env.translation_scale_m, "translation_limited", "m")]
        if len(a) >= 7:
            limits.append((slice(3, 6), self.max_step_rad, self.env.rotation_scale_rad, "rotation_limited", "rad"))
        for dims, cap, scale, name, unit in limits:  # the norm of the commanded motion, scaled down to the cap
            if cap is None:
                continue
            v = np.clip(a[dims], -1.0, 1.0)
            commanded = float(np.linalg.norm(v)) * float(scale)
            if commanded > cap:
                a[dims] = v * (cap / commanded)
                changed = True
                self._event(events, detail, name, {f"commanded_{unit}": commanded, f"max_step_{unit}": cap})
        if self.workspace_min is not None:
            scale = float(self.env.translation_scale_m)
            p = np.asarray(self._call("ee_position", self.env.ee_position), dtype=np.float64).reshape(3)
            d = np.clip(a[0:3], -1.0, 1.0) * scale
            # per axis: inside the box, the target clipped into it; outside, no motion further out (none added)
            low = np.minimum(self.workspace_min - p, 0.0)
            high = np.maximum(self.workspace_max - p, 0.0)
            kept = np.clip(d, low, high)
            if np.any(kept != d):
                a[0:3] = np.clip(kept / scale, -1.0, 1.0)
                changed = True
                axes = ["xyz"[i] for i in np.flatnonzero(kept != d)]
                self._event(events, detail, "workspace_clipped", {"axes": axes, "ee_position": p.tolist(),
                                                                  "target": (p + d).tolist(),
                                                                  "clipped_target": (p + kept).tolist()})
                logger.debug("safety: target %s clipped to %s (workspace box)", (p + d).tolist(), (p + kept).tolist())
        return a.astype(np.float32) if changed else action

    # ------------------------------------------------------------------------------------------ joints
    def clamp_joints(self, q: np.ndarray) -> np.ndarray:
        """Joint targets ``q`` (n_joints,) clamped into ``joint_limits`` (``q`` itself when none are set)."""
        if self.joint_limits is None:
            return q
        q = np.asarray(q)
        if q.shape != (len(self.joint_limits),):
            raise ValueError(f"joint targets of shape {q.shape} for {len(self.joint_limits)} safety.joint_limits")
        out = np.clip(q, self.joint_limits[:, 0], self.joint_limits[:, 1]).astype(q.dtype, copy=False)
        if np.any(out != q):
            self.events["joint_target_clamped"] += 1
            self._filter_events.append(("joint_target_clamped", {"joints": np.flatnonzero(out != q).tolist(),
                                                                 "target": q.tolist(), "clamped": out.tolist()}))
        return out

    def _joints_ok(self, events: list, detail: dict) -> bool:
        """After a step: False (the arm held) when a joint is beyond its limit; True when none is or none is known."""
        q = None
        if hasattr(self.env, "joint_positions"):
            q = self._call("joint_positions", self.env.joint_positions)
        if q is None:
            if not self._joints_unknown_warned and not hasattr(self.env, "set_joint_filter"):
                logger.warning("safety.joint_limits are set but %s reports no joints: they are not checked",
                               type(self.env).__name__)
                self._joints_unknown_warned = True
            return True
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        lim = self.joint_limits
        if q.shape != (len(lim),):
            raise ValueError(f"{type(self.env).__name__} reports {q.size} joints for {len(lim)} safety.joint_limits")
        beyond = np.flatnonzero((q < lim[:, 0]) | (q > lim[:, 1]))
        if beyond.size == 0:
            return True
        d = {"joints": beyond.tolist(), "positions": q[beyond].tolist(), "limits": lim[beyond].tolist()}
        self._hold_now(f"joint(s) {d['joints']} beyond their limits ({d})")
        self._event(events, detail, "joint_limit", d)
        return False

    # ------------------------------------------------------------------------------------------ Arm
    @property
    def translation_scale_m(self) -> float:
        return self.env.translation_scale_m

    @property
    def rotation_scale_rad(self) -> float:
        return self.env.rotation_scale_rad

    def observe(self) -> np.ndarray:
        """The inner ``observe()`` (the current observation, nothing moved), watched like every read."""
        self._refuse_if_stalled("observe")
        return self._call("observe", self.env.observe)

    def ee_position(self) -> np.ndarray:
        return self._call("ee_position", self.env.ee_position)

    def joint_positions(self) -> np.ndarray | None:
        return self._call("joint_positions", self.env.joint_positions)

    def hold(self) -> None:
        """The inner ``hold()``, on the calling thread (callable at any time); nothing where the env has none."""
        hold = getattr(self.env, "hold", None)
        if callable(hold):
            hold()

    # ------------------------------------------------------------------------------------------ exit
    def close(self) -> None:
        """Leave the robot as ``on_exit`` says, then close the inner env (even if that raised); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            home = getattr(self.env, "home", None)
            if self.on_exit == "home" and callable(home):
                self._call("home", home, watch=False)  # a deliberate motion: no time limit
            else:
                if self.on_exit == "home":
                    logger.warning("safety.on_exit=home but %s has no home(): holding instead",
                                   type(self.env).__name__)
                self.hold()
        finally:
            try:
                self._call("close", self.env.close)
            finally:
                if self._worker is not None:
                    self._worker.stop()
                    self._worker = None

    def __enter__(self) -> "SafeEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        """Everything else is the wrapped env's (code written for it keeps working)."""
        env = self.__dict__.get("env")
        if env is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(env, name)

    def __repr__(self) -> str:
        return f"SafeEnv({self.env!r})"


def safe_factory(make_env: Callable[..., Any], safety: Any, **kwargs) -> Callable[..., SafeEnv]:
    """``make_env`` whose every env is behind the safety layer (:meth:`SafeEnv.from_config` of ``safety``)."""

    def make(*args, **kw) -> SafeEnv:
        return SafeEnv.from_config(make_env(*args, **kw), safety, **kwargs)

    return make


class _RandomStatefulSafeEnv(SafeEnv):
    """A :class:`SafeEnv` around a :class:`~dual_actor.runtime.env.RandomStateful` env: its random state passes
    through (a resumed run continues the env's sequence)."""

    def rng_state(self) -> dict:
        return self.env.rng_state()

    def load_rng_state(self, state: dict) -> None:
        self.env.load_rng_state(state)
