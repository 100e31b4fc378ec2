"""Statistics of a dataset's episodes (already loaded): counts per task and kind, intervention segments, and the
sensitivity of the talk-and-tweak rule to its window J and threshold sigma (:func:`relabel_grid`, with
:func:`data_tools.talk_tweak.label_episode`)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from data_tools.talk_tweak import NULL_COMMAND, label_episode

if TYPE_CHECKING:
    from data_tools.hdf5_format import Episode


def dataset_counts(episodes: Iterable[Episode]) -> list[dict]:
    """One row per (task, kind), sorted: episodes, steps, successes, intervention steps, talk-and-tweak steps
    (steps with a refinement command other than "[null]", spoken or labelled)."""
    rows: dict[tuple[str, str], dict] = {}
    for ep in episodes:
        r = rows.setdefault((ep.task, ep.kind), {"task": ep.task, "kind": ep.kind, "episodes": 0, "steps": 0,
                                                 "successes": 0, "intervention_steps": 0, "talk_tweak_steps": 0})
        r["episodes"] += 1
        r["steps"] += ep.num_samples
        r["successes"] += int(ep.success)
        r["intervention_steps"] += int(np.count_nonzero(ep.intervention))
        r["talk_tweak_steps"] += sum(c != NULL_COMMAND for c in ep.refinement_command)
    return [rows[k] for k in sorted(rows)]


def segments(intervention: np.ndarray) -> list[int]:
    """Lengths of the contiguous runs of True."""
    out, n = [], 0
    for x in np.asarray(intervention, bool):
        if x:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out + ([n] if n else [])


def relabel_grid(episodes: Sequence[Episode], windows: Sequence[int], sigmas: Sequence[float],
                 translation_scale_m: float, label: str = "action") -> dict[tuple[int, float], Counter]:
    """The talk-and-tweak rule (:func:`data_tools.talk_tweak.label_episode`, label source ``label``) re-applied to
    every intervention segment for each window J and threshold sigma (metres): ``{(J, sigma): Counter of the commands
    of intervened steps}`` (``"[null]"`` counted: an intervened step whose window moved less than sigma on every
    axis)."""
    grid = {}
    eps = [ep for ep in episodes if ep.intervention.any()]
    for j in windows:
        for s in sigmas:
            c = Counter()
            for ep in eps:
                labels = label_episode(ep.actions, ep.intervention, window=int(j), sigma=float(s),
                                       translation_scale_m=translation_scale_m, policy_actions=ep.policy_actions,
                                       label=label)
                c.update(lab for lab, i in zip(labels, ep.intervention) if i)
            grid[(int(j), float(s))] = c
    return grid


def relabel_agreement(episodes: Sequence[Episode], window: int, sigma: float, translation_scale_m: float,
                      label: str = "action") -> tuple[int, int]:
    """``(same, intervened)``: intervened steps whose stored command the rule (label source ``label``: the one the
    file was labelled with) gives back at ``(window, sigma)``, of all intervened steps (a spoken command on an
    intervened step may differ from the labelled one)."""
    same = total = 0
    for ep in episodes:
        if not ep.intervention.any():
            continue
        labels = label_episode(ep.actions, ep.intervention, window=int(window), sigma=float(sigma),
                               translation_scale_m=translation_scale_m, policy_actions=ep.policy_actions, label=label)
        for lab, stored, i in zip(labels, ep.refinement_command, ep.intervention):
            if i:
                total += 1
                same += lab == stored
    return same, total
