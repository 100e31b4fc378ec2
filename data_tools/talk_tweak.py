"""Talk-and-tweak labelling (paper Eq. 12, 13; the exact rule below; label source: docs/algorithm.md).

For an intervened step t, Delta_t = sum of the translations (dims 0..2, in metres) of the
intervened actions t .. t+J-1, cut at the end of the contiguous intervention segment holding t.
Per axis: Delta > sigma -> positive word, Delta < -sigma -> negative word, else nothing.

What is summed is the label source (``label``): ``"action"`` sums the executed actions a^intv (Eq. 12
as printed: where the operator's hand went); ``"correction"`` sums a^intv - a^pi, the executed action
minus what the policy proposed at that step (which way the operator corrected the policy: what a
refinement command is asked to do, and what the simulated operator speaks). docs/algorithm.md.
Sentence order: y word, x word, z word: "move A", "move A and B", "move A, B and C".
No word, and every non-intervened step: "[null]".
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np

NULL_COMMAND = "[null]"
WINDOW = 5          # J (Eq. 12): intervened steps summed from t on, cut at the end of the segment
SIGMA_M = 0.001     # sigma (Eq. 13): per-axis threshold on the summed translation, metres
DEFAULT_WORDS: dict[str, tuple[str, str]] = {
    "x": ("forward", "backward"),
    "y": ("left", "right"),
    "z": ("up", "down"),
}
_AXIS_INDEX = {"x": 0, "y": 1, "z": 2}
SENTENCE_ORDER = ("y", "x", "z")
LABELS = ("action", "correction")
DEFAULT_LABEL = "correction"  # the label source of the run's online labelling, convert and relabel (docs/algorithm.md)
_ONE_INTERVENED = np.ones(1, dtype=bool)


class MissingProposalError(ValueError):
    """Label ``"correction"`` on an intervened step without a finite policy action; ``step`` is the first such
    step's index, ``count`` how many there are."""

    def __init__(self, message: str, step: int, count: int = 1):
        super().__init__(message)
        self.step, self.count = step, count


def check_label(label: str) -> str:
    if label not in LABELS:
        raise ValueError(f"talk-and-tweak label must be one of {LABELS}, got {label!r}")
    return label


def recorded_rule(record: Mapping) -> dict:
    """A dataset's env_args ``"talk_tweak"`` record (``window``, ``sigma``, ``label``, ``translation_scale_m``,
    ``words``, as convert and relabel write it), with ``label`` filled in for records written before the option
    existed: those commands were labelled with ``"action"`` (Eq. 12 as printed)."""
    return {"label": "action", **dict(record)}


def tweaks(actions: np.ndarray, policy_actions: np.ndarray | None, intervention: np.ndarray,
           label: str = "action") -> np.ndarray:
    """The per-step vectors Eq. 12 sums: ``actions`` (``"action"``) or, on intervened steps,
    ``actions - policy_actions`` (``"correction"``; other steps are never summed). Raises
    :class:`MissingProposalError` for the first intervened step without a finite policy action
    under ``"correction"``."""
    actions = np.asarray(actions, dtype=np.float64)
    if check_label(label) == "action":
        return actions
    pol = np.full_like(actions, np.nan) if policy_actions is None else np.asarray(policy_actions, dtype=np.float64)
    if pol.shape != actions.shape:
        raise ValueError(f"policy_actions shape {pol.shape} != actions {actions.shape}")
    intervention = np.asarray(intervention, dtype=bool)
    missing = np.flatnonzero(intervention & ~np.isfinite(pol[:, :3]).all(axis=1))
    if len(missing):
        raise MissingProposalError(
            f"label 'correction' needs the policy's proposed action on every intervened step; step "
            f"{int(missing[0])} has none ({len(missing)} such step(s)"
            f"{'; there are no policy actions' if policy_actions is None else ''}); use label 'action'",
            int(missing[0]), len(missing))
    return np.where(intervention[:, None], actions - np.nan_to_num(pol), actions)


def _words(words: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, str]]:
    out = dict(DEFAULT_WORDS)
    for axis, pair in (words or {}).items():
        if axis not in _AXIS_INDEX or len(pair) != 2:
            raise ValueError(f"words: expected axis x|y|z -> (positive, negative), got {axis!r}: {pair!r}")
        out[axis] = (str(pair[0]), str(pair[1]))
    return out


def sentence(parts: Sequence[str]) -> str:
    """Join direction words: [] -> "[null]", [A] -> "move A", [A, B] -> "move A and B", ..."""
    if not parts:
        return NULL_COMMAND
    if len(parts) == 1:
        return f"move {parts[0]}"
    return f"move {', '.join(parts[:-1])} and {parts[-1]}"


def parse_command(command: str, words: Mapping[str, Sequence[str]] | None = None) -> list[tuple[int, int]]:
    """The inverse of :func:`sentence` under ``words``: ``[(axis index, sign), ...]`` in sentence order
    ("move left and up" -> [(1, +1), (2, +1)]; "[null]" -> []). Raises ValueError for a sentence the rule
    cannot produce (an unknown word, an axis named twice, a malformed join)."""
    if command == NULL_COMMAND:
        return []
    table = _words(words)
    lookup = {w: (_AXIS_INDEX[axis], 1 if k == 0 else -1) for axis, pair in table.items() for k, w in enumerate(pair)}
    if not command.startswith("move "):
        raise ValueError(f"not a refinement command: {command!r} (expected 'move ...' or {NULL_COMMAND!r})")
    body = command[len("move "):]
    head, _, last = body.rpartition(" and ")
    parts = ([p for p in head.split(", ")] + [last]) if head else [last]
    out = []
    for p in parts:
        if p not in lookup:
            raise ValueError(f"refinement command {command!r}: unknown direction word {p!r} (words: {sorted(lookup)})")
        out.append(lookup[p])
    if len({a for a, _ in out}) != len(out) or sentence([p for p in parts]) != command:
        raise ValueError(f"refinement command {command!r}: not a sentence of the rule (one word per axis, "
                         f"'move A, B and C')")
    return out


def refinement_command(
    window: np.ndarray, sigma: float = SIGMA_M, words: Mapping[str, Sequence[str]] | None = None
) -> str:
    """Eq. 12-13 for one window: ``window`` (J, >=3) of translations already in metres."""
    w = np.asarray(window, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] < 3:
        raise ValueError(f"window must be (J, >=3), got shape {w.shape}")
    delta = w[:, :3].sum(axis=0)
    table = _words(words)
    parts = []
    for axis in SENTENCE_ORDER:
        d = delta[_AXIS_INDEX[axis]]
        if d > sigma:
            parts.append(table[axis][0])
        elif d < -sigma:
            parts.append(table[axis][1])
    return sentence(parts)


def label_episode(
    actions: np.ndarray,
    intervention: np.ndarray,
    window: int = WINDOW,
    sigma: float = SIGMA_M,
    translation_scale_m: float = 1.0,
    words: Mapping[str, Sequence[str]] | None = None,
    policy_actions: np.ndarray | None = None,
    label: str = "action",
) -> list[str]:
    """One command per step; "[null]" where not intervened. ``actions``: (N, A>=3) in action units;
    ``policy_actions`` (N, A), needed on intervened steps by ``label="correction"``."""
    actions = np.asarray(actions, dtype=np.float64)
    intervention = np.asarray(intervention, dtype=bool)
    n = len(actions)
    if intervention.shape != (n,):
        raise ValueError(f"intervention must have shape ({n},), got {intervention.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    trans = tweaks(actions, policy_actions, intervention, label)[:, :3] * translation_scale_m
    out = [NULL_COMMAND] * n
    t = 0
    while t < n:
        if not intervention[t]:
            t += 1
            continue
        end = t
        while end < n and intervention[end]:
            end += 1
        for s in range(t, end):
            out[s] = refinement_command(trans[s : min(s + window, end)], sigma, words)
        t = end
    return out


def command_vocabulary(words: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Every sentence the rule can produce ("[null]" first): 3^3 = 27 commands."""
    table = _words(words)
    vocab = [NULL_COMMAND]
    for choice in itertools.product((0, 1, None), repeat=3):
        parts = [table[axis][c] for axis, c in zip(SENTENCE_ORDER, choice) if c is not None]
        if parts:
            vocab.append(sentence(parts))
    return vocab


class StreamingLabeler:
    """Talk-and-tweak labels as a control loop produces steps (the runtime's online labeller).

    ``push(action, intervened)`` returns the labels that became final with this step, as
    ``(step_index, command)`` pairs: a non-intervened step is "[null]" at once; an intervened
    step is final once its window of J steps is complete or its intervention segment ends.
    ``flush()`` finalises what is pending at the end of an episode. The labels are exactly
    :func:`label_episode`'s on the same episode (tested). ``label="correction"`` needs
    ``policy_action`` with every intervened step.
    """

    def __init__(self, window: int = WINDOW, sigma: float = SIGMA_M, translation_scale_m: float = 1.0,
                 words: Mapping[str, Sequence[str]] | None = None, label: str = "action"):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window, self.sigma, self.scale, self.words = window, sigma, translation_scale_m, words
        self.label = check_label(label)
        self.reset()

    def reset(self) -> None:
        self._t = 0
        self._seg_start = None  # index of the first step of the open segment
        self._seg: list[np.ndarray] = []  # translations (metres) of the open segment
        self._next = 0  # first step of the open segment not yet labelled

    def _label(self, s: int, end: int) -> tuple[int, str]:
        lo = s - self._seg_start
        hi = min(s + self.window, end) - self._seg_start
        return s, refinement_command(np.asarray(self._seg[lo:hi]), self.sigma, self.words)

    def push(self, action: Sequence[float], intervened: bool,
             policy_action: Sequence[float] | None = None) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        t = self._t
        if intervened:
            try:
                tweak = tweaks(np.asarray(action, dtype=np.float64)[None],
                               None if policy_action is None else np.asarray(policy_action, dtype=np.float64)[None],
                               _ONE_INTERVENED, self.label)[0, :3]
            except MissingProposalError:
                raise MissingProposalError(f"step {t}: label 'correction' needs the policy's proposed action on "
                                           f"every intervened step, got {policy_action!r}", t) from None
            self._t += 1
            if self._seg_start is None:
                self._seg_start, self._seg, self._next = t, [], t
            self._seg.append(tweak * self.scale)
            while self._next + self.window - 1 <= t:
                out.append(self._label(self._next, t + 1))
                self._next += 1
            return out
        self._t += 1
        out.extend(self.flush_segment())
        out.append((t, NULL_COMMAND))
        return out

    def flush_segment(self) -> list[tuple[int, str]]:
        out = []
        if self._seg_start is not None:
            end = self._seg_start + len(self._seg)
            while self._next < end:
                out.append(self._label(self._next, end))
                self._next += 1
            self._seg_start, self._seg = None, []
        return out

    def flush(self) -> list[tuple[int, str]]:
        """End of episode: finalise the open segment and start afresh."""
        out = self.flush_segment()
        self.reset()
        return out
