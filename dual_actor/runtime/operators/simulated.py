"""The simulated operator: Metaworld's scripted expert as the human in the loop (bench tasks only).

:class:`SimulatedOperator` watches the rollout, takes over when the policy goes astray and hands
back; or, with ``speak_commands``, speaks refinement commands; by default (``talk_then_tweak``) it
speaks first and takes over when speaking did not help. It acts with the scripted experts of
:mod:`dual_actor.runtime.sim.experts` (the dependency goes this way only: the bench knows nothing of
operators). The rule is documented in ``docs/operators.md``.
"""

from __future__ import annotations

from collections import deque
from typing import Mapping, Sequence

import numpy as np

from data_tools.talk_tweak import SIGMA_M, WINDOW, refinement_command
from dual_actor.runtime.operators.base import NO_INPUT, Operator, OperatorInput
from dual_actor.runtime.sim.bench import ACTION_SCALE_M
from dual_actor.runtime.sim.experts import EXPERTS, ScriptedExpert, make_expert


class SimulatedOperator(Operator):
    """A simulated human: Metaworld's scripted expert watching the rollout (bench tasks only).

    Each step it computes the noise-free expert action ``a*`` for ``obs`` and, while watching:

    - disagreement: ``||policy[:3] - a*[:3]||_2 > disagree_threshold`` (both clipped to
      [-1, 1]) for ``patience`` consecutive steps, or
    - no progress: the hand (``obs[:3]``) stays within ``progress_eps`` metres of where it was
      when it last moved that far, for ``no_progress_steps`` steps,

    triggers it. ``reaction_delay`` steps after the triggering step it takes over for
    ``correction_steps`` steps, executing ``clip(a* + N(0, expert_noise^2), -1, 1)`` (all action
    dims), then hands back and watches afresh (streak and progress reset).

    With ``speak_commands`` it never takes over: during the same segments it speaks
    ``refinement_command(sum of the last command_window (a*[:3] - policy[:3]) * translation_scale_m)``
    (recomputed every step; "[null]" is silence). Used at evaluation time.

    With ``talk_then_tweak`` (the default; the paper's online phase: language interventions first, physical
    ones when they do not help) a segment speaks as above, unless the previous segment spoke and
    ended at most ``escalate_window`` steps before this trigger: then it takes over (and the
    segment after a take-over speaks again). ``segment_counts`` counts both kinds.

    Args:
        task: the first task (``reset(task)`` may switch; experts are built per task).
        expert_noise, reaction_delay, disagree_threshold, patience, correction_steps,
        no_progress_steps, progress_eps: the rule above.
        speak_commands, command_window, translation_scale_m (metres per action unit, the bench's
        ``ACTION_SCALE_M``), sigma, words: the speaking rule (``command_window`` / ``sigma`` / ``words``
        as ``window`` / ``sigma`` / ``words`` of ``data_tools.talk_tweak``, with its defaults).
        seed: seeds the correction noise (one generator for the operator's lifetime).
        expert: the scripted expert's variant (``dual_actor.runtime.sim.EXPERTS``): ``corrected`` (default: its known
            loops fixed, ``sim.experts._corrected_policy``; docs/operators.md) or ``metaworld`` as shipped.
    """

    action_dim = ScriptedExpert.action_dim

    def __init__(
        self,
        task: str,
        expert_noise: float = 0.1,
        reaction_delay: int = 2,
        disagree_threshold: float = 0.5,
        patience: int = 3,
        correction_steps: int = 10,
        no_progress_steps: int = 30,
        progress_eps: float = 0.01,
        speak_commands: bool = False,
        talk_then_tweak: bool = True,
        escalate_window: int = 20,
        command_window: int = WINDOW,
        translation_scale_m: float = ACTION_SCALE_M,
        sigma: float = SIGMA_M,
        words: Mapping[str, Sequence[str]] | None = None,
        seed: int = 0,
        expert: str = "corrected",
    ) -> None:
        if expert not in EXPERTS:
            raise ValueError(f"expert must be one of {EXPERTS}, got {expert!r}")
        self.expert_variant = expert
        for name, value, lo in (
            ("reaction_delay", reaction_delay, 0), ("patience", patience, 1),
            ("correction_steps", correction_steps, 1), ("no_progress_steps", no_progress_steps, 1),
            ("command_window", command_window, 1),
        ):
            if int(value) < lo:
                raise ValueError(f"{name} must be >= {lo}, got {value}")
        if expert_noise < 0 or disagree_threshold < 0 or progress_eps < 0:
            raise ValueError("expert_noise, disagree_threshold and progress_eps must be >= 0")
        self.expert_noise = float(expert_noise)
        self.reaction_delay = int(reaction_delay)
        self.disagree_threshold = float(disagree_threshold)
        self.patience = int(patience)
        self.correction_steps = int(correction_steps)
        self.no_progress_steps = int(no_progress_steps)
        self.progress_eps = float(progress_eps)
        self.speak_commands = bool(speak_commands)
        self.talk_then_tweak = bool(talk_then_tweak)
        self.escalate_window = int(escalate_window)
        self.segment_counts = {"speak": 0, "takeover": 0}
        """Correction segments so far, by kind (the operator's lifetime)."""
        self.command_window = int(command_window)
        self.translation_scale_m = float(translation_scale_m)
        self.sigma = float(sigma)
        self.words = words
        self.rng = np.random.default_rng(seed)
        self._experts: dict[str, ScriptedExpert] = {}
        self.trigger_counts = {"disagree": 0, "no_progress": 0}
        """Triggers so far, by reason (the operator's lifetime)."""
        self.reset(task)

    def rng_state(self) -> dict:
        """The correction-noise generator's state (saved with a run so that a resumed run does not replay it)."""
        return {"rng": self.rng.bit_generator.state}

    def load_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]

    def _expert(self, task: str) -> ScriptedExpert:
        if task not in self._experts:  # the bench's (Metaworld) or gym-hil's scripted expert
            self._experts[task] = make_expert(task, noise=0.0, variant=self.expert_variant)
        return self._experts[task]

    def reset(self, task: str) -> None:
        self.task = task
        self.expert = self._expert(task)
        self.phase = "watch"  # "watch" -> "react" (reaction delay) -> "act" (correct / speak) -> "watch"
        self._countdown = 0
        self._streak = 0
        self._ref_hand: np.ndarray | None = None
        self._still = 0
        self._diffs: deque[np.ndarray] = deque(maxlen=self.command_window)
        self.last_trigger: str | None = None
        self._segment_speaks = self.speak_commands
        self._last_spoke = False  # the previous segment of this episode spoke
        self._since_segment = None  # steps since the previous segment ended (None: none yet)

    def _watch(self, disagree: bool, hand: np.ndarray) -> str | None:
        self._streak = self._streak + 1 if disagree else 0
        if self._ref_hand is None or np.linalg.norm(hand - self._ref_hand) > self.progress_eps:
            self._ref_hand, self._still = hand, 0
        else:
            self._still += 1
        if self._streak >= self.patience:
            return "disagree"
        if self._still >= self.no_progress_steps:
            return "no_progress"
        return None

    def _next_segment_speaks(self) -> bool:
        if self.speak_commands:
            return True
        if not self.talk_then_tweak:
            return False
        recent = self._since_segment is not None and self._since_segment <= self.escalate_window
        return not (self._last_spoke and recent)  # speaking did not help -> take over

    def observe(self, obs, policy_action, info) -> OperatorInput:
        policy = self._check_action(policy_action)
        obs = np.asarray(obs, dtype=np.float64)
        expert = self.expert.act(obs).astype(np.float64)
        policy = np.clip(policy, -1.0, 1.0) if policy is not None else np.zeros(self.action_dim)
        diff = expert[:3] - policy[:3]
        self._diffs.append(diff)
        hand = obs[:3].copy()

        if self.phase == "watch":
            if self._since_segment is not None:
                self._since_segment += 1
            reason = self._watch(float(np.linalg.norm(diff)) > self.disagree_threshold, hand)
            if reason is not None:
                self.trigger_counts[reason] += 1
                self.last_trigger = reason
                self.phase, self._countdown = "react", self.reaction_delay
        if self.phase == "react":
            if self._countdown == 0:
                self.phase, self._countdown = "act", self.correction_steps
                self._segment_speaks = self._next_segment_speaks()
                self.segment_counts["speak" if self._segment_speaks else "takeover"] += 1
            else:
                self._countdown -= 1
        if self.phase != "act":
            return NO_INPUT

        self._countdown -= 1
        if self._countdown == 0:  # last step of the segment: watch afresh from the next step
            self.phase, self._streak, self._ref_hand, self._still = "watch", 0, hand, 0
            self._last_spoke, self._since_segment = self._segment_speaks, 0
        if self._segment_speaks:
            window = np.stack(self._diffs) * self.translation_scale_m
            return OperatorInput(False, None, refinement_command(window, self.sigma, self.words))
        action = expert + self.rng.normal(0.0, self.expert_noise, size=expert.shape) if self.expert_noise else expert
        return OperatorInput(True, np.clip(action, -1.0, 1.0), None)
