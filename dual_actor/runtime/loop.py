"""The robot control loop (Algorithm 1, interaction thread, lines 22-35).

Per control step: embed the observation once (h is cached with the transition), act with the
primary actor (refinement mode while the operator's spoken command is active), let the operator
override, clip to the configured limits, step the robot, label interventions with
talk-and-tweak as they happen, optionally write the teleop log, and at the episode's end send
its transitions (with h) to the learner through the transport.

Timing: with ``period_s`` set (0.1 s for a 10 Hz robot) the loop keeps a fixed rate and counts
its overruns; if inference alone overruns the period the robot holds (zero motion, gripper
unchanged) instead of executing a stale action. With ``period_s=None`` (simulation) it runs as
fast as possible.

Cameras: an env with a non-empty ``cameras`` list and an ``images() -> {camera: uint8 (H, W, 3)}``
method (``MetaworldTaskEnv(cameras=...)``; a real robot's env implements the same two) is read after
every reset and step. The policy then gets the observation mapping of :func:`observation_batch`
(state, proprio, uint8 CHW images); the teleop log gets the frames (``EpisodeWriter.step(images=...)``,
so ``data_tools convert`` puts them in the HDF5 file); the transitions carry ``obs_images`` /
``next_obs_images`` (uint8, cameras in the policy's order) only when the policy's image encoder reads
images (a SmolVLA backbone alone needs none: h is computed here and stored).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from data_tools.talk_tweak import DEFAULT_LABEL, NULL_COMMAND, SIGMA_M, WINDOW, StreamingLabeler
from dual_actor import constants as K
from dual_actor.utils import mc_returns
from dual_actor.policy import DualActorPolicy
from dual_actor.runtime.env import RandomStateful, RobotEnv
from dual_actor.runtime.operators import NO_INPUT, apply_intervention
from dual_actor.runtime.safety import hold_action  # noqa: F401 - defined once, there
from dual_actor.runtime.transport import EpisodeRecord, RobotTransport


def observation_batch(
    state: np.ndarray | torch.Tensor,
    proprio_slice: slice,
    images: Mapping[str, np.ndarray] | None = None,
    device: torch.device | str | None = None,
    as_mapping: bool = False,
):
    """A robot's arrays as the policy's observation (batch of 1).

    Args:
        state: (Do,) float state vector; proprio_slice: proprio inside it.
        images: ``{camera: uint8 (H, W, 3)}`` or None / empty.
        as_mapping: return the mapping even without images (a ``smolvla`` / ``cls`` backbone reads
            ``proprio`` from it: ``policy.wants_mapping``).

    Returns:
        Without images (and not ``as_mapping``): the state as ``(1, Do)`` float32 (what the state-only
        policy has always read). Else ``{"state": (1, Do), "proprio": (1, Dp), "images": {camera: uint8
        (1, 3, H, W)}}``.
    """
    s = torch.as_tensor(np.asarray(state, dtype=np.float32), device=device)[None]
    if not images and not as_mapping:
        return s
    return {
        "state": s,
        "proprio": s[:, proprio_slice],
        "images": {c: torch.from_numpy(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))[None].to(device)
                   for c, img in (images or {}).items()},
    }


HOLD_POLL_S = 0.05
"""Seconds between two looks at the operator while the robot holds (e-stop, pause) in a loop without a period."""


def hold_until_released(env, operator, obs: np.ndarray, held: np.ndarray, info: dict, estop: bool,
                        sleep: Callable[[float], None] = time.sleep, period_s: float | None = None,
                        who: str = "robot") -> None:
    """The operator's e-stop (``estop``) or pause holds the robot (``env.hold()`` every control period, nothing else
    sent; the operator watches the held robot, ``held`` its action) until released: the e-stop disengaged, or a
    second "pause". An e-stop engaged while paused is held for first."""
    hold = getattr(env, "hold", None)
    what = "e-stop" if estop else "pause"
    print(f"[{who}] {what}: the robot holds until the operator releases it", flush=True)
    while True:
        if hold is not None:
            hold()
        sleep(period_s or HOLD_POLL_S)
        human = operator.observe(obs, held, info)
        now_estop, event = bool(getattr(human, "estop", False)), getattr(human, "event", None)
        if (not now_estop) if estop else (event == "pause" and not now_estop):
            break
        if not estop and now_estop:
            estop, what = True, "e-stop"
    print(f"[{who}] {what} released", flush=True)


@dataclass
class LoopStats:
    env_steps: int = 0
    episodes: int = 0
    interventions: int = 0
    spoken: int = 0
    overruns: int = 0
    successes: int = 0
    rerecorded: int = 0
    estops: int = 0
    safety: Counter = field(default_factory=Counter)  # the safety layer's events (info["safety"]) by name


class ControlLoop:
    """Runs episodes of one task on one robot.

    Args:
        env: a :class:`RobotEnv`; ``task``: the task string.
        policy: the acting-side :class:`DualActorPolicy` (weights refreshed from the transport).
        operator: anything with ``reset(task)`` and ``observe(obs, policy_action, info)`` returning
            an object with ``intervening``, ``action``, ``command``; None: no human.
        transport: where finished episodes go; ``proprio_slice``: proprio inside the state vector.
        period_s: control period (None: as fast as possible). ``low``/``high``: action limits.
        window, sigma, translation_scale_m, words, label: the talk-and-tweak rule (``label``: "action" sums
            the executed actions, Eq. 12 as printed; "correction" sums executed - proposed, data_tools.talk_tweak).
        gamma: discount for the Monte-Carlo return-to-go stored with each transition.
        log_episode: optional ``callable(episode_id) -> EpisodeWriter`` (data_tools.teleop_log).
        gate: optional ``callable(step) -> bool`` asked before every step; False: the robot holds (zero
            motion, gripper kept) instead of acting, e.g. a Ray robot whose weights are older than
            ``runtime.max_weight_age`` updates or that cannot reach the learner. Held steps are counted.
        wait_for_operator: after each reset the robot holds until the operator resumes ("pause"): a person resets
            the scene of a real robot first.

    Episode control (the operator's :class:`~dual_actor.runtime.operators.OperatorInput`): ``estop`` holds the
    robot at once (nothing of that step is sent; ``env.hold()`` every period) until released; "pause" holds it
    until a second "pause"; "success" / "failure" end the episode after this step with reward 1 / 0 (the sparse
    reward of a real robot is the person's); "rerecord" drops the episode (its teleop log is moved aside, nothing
    reaches the learner) and records it again.
        clock / sleep: injectable for tests.
    """

    def __init__(
        self,
        env: RobotEnv,
        task: str,
        policy: DualActorPolicy,
        operator: Any | None,
        transport: RobotTransport,
        proprio_slice: slice = slice(0, 4),
        period_s: float | None = None,
        low: float | np.ndarray = -1.0,
        high: float | np.ndarray = 1.0,
        window: int = WINDOW,
        sigma: float = SIGMA_M,
        translation_scale_m: float = 1.0,
        words=None,
        label: str = DEFAULT_LABEL,
        gamma: float = 0.99,
        gripper_index: int | None = -1,
        log_episode: Callable[[str], Any] | None = None,
        actor_id: str = "actor-0",
        gate: Callable[[int], bool] | None = None,
        wait_for_operator: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.env, self.task, self.policy, self.operator, self.transport = env, task, policy, operator, transport
        self.proprio_slice = proprio_slice
        self.period_s = period_s
        self.low, self.high = low, high
        self.labeler = StreamingLabeler(window, sigma, translation_scale_m, words, label)
        self.gamma = gamma
        self.gripper_index = gripper_index
        self.log_episode = log_episode
        self.actor_id = actor_id
        self.gate = gate
        self.wait_for_operator = bool(wait_for_operator)
        self.action_dim = policy.config.action_dim
        self.clock, self.sleep = clock, sleep
        self.stats = LoopStats()
        self.weights_version = -1
        self.task_id = policy.tasks.index(task)
        self.cameras = list(env.cameras or [])
        wanted = list(policy.config.cameras)
        missing = [c for c in wanted if c not in self.cameras]
        if missing:
            raise ValueError(f"the policy reads camera(s) {missing}, which the env does not render "
                             f"(env cameras: {self.cameras})")
        self.policy_cameras = wanted
        self.h_key = policy.h_key  # h is logged under it (a frozen pretrained backbone only)

    # ---------------------------------------------------------------------------- rng state
    def rng_state(self) -> dict:
        """The random state of this robot's env and operator (those that keep one): saved in a run's
        checkpoint, so that a resumed run continues their sequences instead of replaying them."""
        return {name: part.rng_state() for name, part in (("env", self.env), ("operator", self.operator))
                if isinstance(part, RandomStateful)}

    def load_rng_state(self, state: dict) -> None:
        for name, part in (("env", self.env), ("operator", self.operator)):
            if name in state:
                part.load_rng_state(state[name])

    # ------------------------------------------------------------------------------ weights
    def sync_weights(self) -> None:
        """Copy the latest published weights in place (every key of the policy but its frozen backbone)."""
        latest = self.transport.latest_weights()
        if latest is not None and latest[0] != self.weights_version:
            version, state = latest
            frozen = set(self.policy.frozen_state_keys())
            with torch.no_grad():
                for k, v in self.policy.state_dict().items():
                    if k not in frozen:
                        v.copy_(state[k])
            self.weights_version = version

    def _observe(self, obs: np.ndarray) -> tuple[Any, dict[str, np.ndarray]]:
        """(policy observation, camera frames) of the env's current observation."""
        frames = self.env.images() if self.cameras else {}
        observation = observation_batch(self.policy.state_of(obs), self.proprio_slice,
                                        {c: frames[c] for c in self.policy_cameras}, as_mapping=self.policy.wants_mapping)
        return observation, frames

    # ------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def _policy_action(self, observation, command: str | None) -> tuple[np.ndarray, torch.Tensor]:
        state = observation["state"] if isinstance(observation, Mapping) else observation
        h = self.policy.embed(observation, [self.task])
        a = self.policy.act(h, observation, state[:, self.proprio_slice], commands=[command])
        return a[0].numpy(), h[0]

    def _hold_until_released(self, obs: np.ndarray, previous: np.ndarray | None, action_dim: int, info: dict,
                             estop: bool) -> None:
        hold_until_released(self.env, self.operator, obs, hold_action(previous, action_dim, self.gripper_index), info,
                            estop, self.sleep, self.period_s, self.actor_id)

    def run_episode(self, episode_id: str | None = None) -> EpisodeRecord:
        """One episode; returns (and sends) its record. An episode the operator asks to re-record is dropped (its log
        moved aside, nothing sent) and recorded again."""
        while True:
            record = self._episode(episode_id)
            if record is not None:
                return record
            self.stats.rerecorded += 1

    def _episode(self, episode_id: str | None) -> EpisodeRecord | None:
        self.sync_weights()
        self.policy.eval()
        obs = np.asarray(self.env.reset(), dtype=np.float32)
        if self.operator is not None:
            self.operator.reset(self.task)
        self.labeler.reset()
        name = episode_id or f"{self.actor_id}-{self.stats.episodes + self.stats.rerecorded}"
        writer = self.log_episode(name) if self.log_episode else None
        if self.wait_for_operator and self.operator is not None:  # a person resets the scene, then resumes
            self._hold_until_released(obs, None, int(self.action_dim), {}, estop=False)
        states, hs, actions, policy_actions, intervened, rewards, spoken = [], [], [], [], [], [], []
        images: list[torch.Tensor] = []  # (C, 3, H, W) uint8 per step, when the policy's encoders read them
        labels: dict[int, str] = {}
        command: str | None = None
        previous: np.ndarray | None = None
        info: dict = {}
        overruns = held = 0
        safety: Counter = Counter()  # this episode's safety-layer events
        terminated = truncated = False
        t = 0
        while True:
            start = self.clock()
            observation, frames = self._observe(obs)
            a_pi, h = self._policy_action(observation, command)
            late = self.period_s is not None and self.clock() - start > self.period_s
            if late:
                a_pi = hold_action(previous, len(a_pi), self.gripper_index)  # never a stale action
            elif self.gate is not None and not self.gate(t):
                a_pi = hold_action(previous, len(a_pi), self.gripper_index)  # weights too old / learner unreachable
                held += 1
            human = self.operator.observe(obs, a_pi, info) if self.operator is not None else NO_INPUT
            estop, event = bool(getattr(human, "estop", False)), getattr(human, "event", None)
            if estop or event == "pause":  # nothing is sent: hold, then act afresh
                self._hold_until_released(obs, previous, len(a_pi), info, estop=estop)
                self.stats.estops += int(estop)
                continue
            if event == "rerecord":
                if writer is not None:
                    writer.discard("the operator asked to re-record it")
                print(f"[{self.actor_id}] episode dropped (re-record): starting it again", flush=True)
                return None
            executed, intv = apply_intervention(a_pi, human, self.low, self.high)
            executed = np.asarray(executed, dtype=np.float32)
            command = human.command
            next_obs, reward, terminated, truncated, info = self.env.step(executed)
            next_obs = np.asarray(next_obs, dtype=np.float32)
            if info.get("executed_action") is not None:  # what the robot did after the safety layer's clipping
                executed = np.asarray(info["executed_action"], dtype=np.float32)
            safety.update(info.get("safety") or ())
            if event in ("success", "failure"):  # the person ends the episode: the sparse reward is theirs
                reward, terminated, info = float(event == "success"), True, {**info, "operator": event}
            for s, c in self.labeler.push(executed, intv, a_pi):
                labels[s] = c
            states.append(obs)
            hs.append(h)
            if self.policy.uses_images:
                images.append(torch.stack([observation["images"][c][0] for c in self.policy_cameras]))
            actions.append(executed)
            policy_actions.append(a_pi)
            intervened.append(intv)
            rewards.append(float(reward))
            spoken.append(command)
            if writer is not None:
                logged = {"proprio": obs[self.proprio_slice].tolist(), "state": obs.tolist()}
                if self.h_key is not None:  # h as acted on, keyed by the backbone: the learner never recomputes it
                    logged[self.h_key] = h.tolist()
                writer.step(task=self.task, obs=logged,
                            action=executed.tolist(), policy_action=a_pi.tolist(),
                            intervention=intv, command=command, reward=float(reward), done=bool(terminated),
                            images=frames or None)
            previous = executed
            obs = next_obs
            t += 1
            if self.period_s is not None:
                left = self.period_s - (self.clock() - start)
                if left > 0:
                    self.sleep(left)
                overruns += int(late or left < 0)
            if terminated or truncated:
                break
        for s, c in self.labeler.flush():
            labels[s] = c
        if writer is not None:
            writer.close()
        commands = [spoken[s] if (intervened[s] and spoken[s]) else labels[s] for s in range(t)]
        rows = self._rows(states, hs, obs, actions, rewards, terminated, intervened, commands, images)
        rows[K.POLICY_ACTION] = torch.from_numpy(np.stack(policy_actions).astype(np.float32))
        record = EpisodeRecord(
            task=self.task, rows=rows, success=bool(terminated and rewards[-1] > 0), length=t,
            interventions=int(sum(intervened)), overruns=overruns, actor_id=self.actor_id,
            spoken=sum(1 for s in range(t) if not intervened[s] and spoken[s] and spoken[s] != NULL_COMMAND),
            weights_version=self.weights_version,
            extra={"commands": commands, "policy_actions": policy_actions, "held": held, "safety": dict(safety)},
        )
        self.transport.send_episode(record)
        st = self.stats
        st.env_steps += t
        st.episodes += 1
        st.interventions += record.interventions
        st.spoken += record.spoken
        st.overruns += overruns
        st.successes += int(record.success)
        st.safety.update(safety)
        return record

    def _rows(self, states, hs, last_obs, actions, rewards, terminated, intervened, commands, images=()) -> dict:
        n = len(states)
        obs = torch.from_numpy(self.policy.state_of(np.stack(states)))  # what the policy reads of the robot's vector
        h = torch.stack(hs)
        final_observation, _ = self._observe(last_obs)
        h_final = self.policy.embed(final_observation, [self.task])
        final = torch.from_numpy(self.policy.state_of(last_obs))[None]
        next_obs = torch.cat([obs[1:], final])
        next_h = torch.cat([h[1:], h_final])
        done = torch.zeros(n)
        done[-1] = float(terminated)
        r = np.asarray(rewards, dtype=np.float32)
        rows = {
            K.H: h, K.OBS: obs, K.PROPRIO: obs[:, self.proprio_slice],
            K.ACTION: torch.from_numpy(np.stack(actions)), K.REWARD: torch.from_numpy(r), K.DONE: done,
            K.NEXT_H: next_h, K.NEXT_OBS: next_obs, K.NEXT_PROPRIO: next_obs[:, self.proprio_slice],
            K.MC_RETURN: torch.from_numpy(mc_returns(r, self.gamma)),
            K.COMMAND: self.policy.command_ids([c or NULL_COMMAND for c in commands]),
            K.TASK: torch.full((n,), self.task_id, dtype=torch.long),
            K.INTERVENTION: torch.tensor(intervened, dtype=torch.bool),
        }
        if self.policy.uses_images:
            img = torch.stack(list(images))  # (n, C, 3, H, W) uint8
            img_final = torch.stack([final_observation["images"][c][0] for c in self.policy_cameras])[None]
            rows[K.OBS_IMAGES] = img
            rows[K.NEXT_OBS_IMAGES] = torch.cat([img[1:], img_final])
        return rows
