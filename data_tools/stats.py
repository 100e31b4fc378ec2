"""What is in a dataset: one pass without images (:func:`summarize`) and its renderings.

:func:`summarize` is the one place where a dataset's counts are taken; ``info`` (the JSON-able
dict and the plain-text table the ``info`` command prints) and the dataset cards of the
exporters (:func:`format_markdown`) are views of its :class:`DatasetSummary`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from data_tools.errors import DataToolsError
from data_tools.hdf5_format import DatasetInfo, Episode, dataset_info, read_episodes
from data_tools.talk_tweak import NULL_COMMAND

__all__ = ["GroupStats", "DatasetSummary", "summarize", "info", "format_info", "format_markdown"]


@dataclass
class GroupStats:
    """Counts of one (task, kind) group, or of the whole dataset."""

    episodes: int = 0
    steps: int = 0
    successes: int = 0
    intervened: int = 0
    commands: Counter = field(default_factory=Counter)  # every command, "[null]" included

    def add(self, ep: Episode, intervened: int, commands: Counter) -> None:
        self.episodes += 1
        self.steps += ep.num_samples
        self.successes += int(ep.success)
        self.intervened += intervened
        self.commands.update(commands)


@dataclass
class DatasetSummary:
    """What a first pass over a dataset (no images) learns; used by ``info``, both exporters
    and the dataset cards."""

    path: Path
    fps: float
    env_args: dict = field(default_factory=dict)
    masks: dict[str, int] = field(default_factory=dict)  # split -> number of episodes
    total: GroupStats = field(default_factory=GroupStats)
    lowdim: dict[str, int] = field(default_factory=dict)  # obs key -> d, of the first episode
    action_dim: int = 0
    robots: list[str] = field(default_factory=list)
    groups: dict[tuple[str, str], GroupStats] = field(default_factory=dict)  # (task, kind)
    intervened_commands: Counter = field(default_factory=Counter)
    command_order: list[str] = field(default_factory=list)  # first appearance

    @property
    def episodes(self) -> int:
        return self.total.episodes

    @property
    def steps(self) -> int:
        return self.total.steps

    @property
    def intervened(self) -> int:
        return self.total.intervened

    @property
    def commands(self) -> Counter:
        return self.total.commands

    @property
    def intervention_ratio(self) -> float:
        return self.intervened / self.steps if self.steps else 0.0


def _check_schema(s: DatasetSummary, ep: Episode, lowdim: dict[str, int], where: str) -> None:
    if lowdim != s.lowdim:
        raise DataToolsError(
            f"{where}/obs: low-dim keys/sizes {lowdim} differ from the first episode's {s.lowdim}; "
            "an export needs one schema"
        )
    if ep.actions.shape[1] != s.action_dim:
        raise DataToolsError(f"{where}/actions: {ep.actions.shape[1]}-d, the first episode's are {s.action_dim}-d")


def summarize(path: str | os.PathLike, one_schema: bool = False) -> DatasetSummary:
    """One pass over ``path`` without images: per (task, kind) and total counts, commands,
    robots, low-dim shapes, fps, env_args and mask sizes.

    ``one_schema``: raise :class:`DataToolsError` when episodes disagree on the low-dim
    observation keys / sizes or the action size (an export needs one schema); otherwise
    ``lowdim`` / ``action_dim`` are the first episode's. Raises
    :class:`~data_tools.hdf5_format.DatasetFormatError` when the file does not follow the layout.
    """
    path = Path(path)
    meta: DatasetInfo = dataset_info(path)
    s = DatasetSummary(path=path, fps=meta.fps, env_args=meta.env_args,
                       masks={split: len(names) for split, names in sorted(meta.masks.items())})
    for ep in read_episodes(path, load_images=False):
        lowdim = {k: int(v.shape[1]) for k, v in ep.obs.items()}
        if s.episodes == 0:
            s.lowdim, s.action_dim = lowdim, int(ep.actions.shape[1])
        elif one_schema:
            _check_schema(s, ep, lowdim, f"{path}:/data/{ep.name}")
        if ep.robot not in s.robots:
            s.robots.append(ep.robot)
        commands = Counter(ep.refinement_command)
        intervened = int(np.count_nonzero(ep.intervention))
        s.groups.setdefault((ep.task, ep.kind), GroupStats()).add(ep, intervened, commands)
        s.total.add(ep, intervened, commands)
        s.intervened_commands.update(c for c, i in zip(ep.refinement_command, ep.intervention) if i)
        s.command_order += [c for c in commands if c not in s.command_order]
    return s


# --------------------------------------------------------------------------------------------
# info: a JSON-able dict and a plain-text table


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _histogram(counter: Mapping[str, int]) -> dict[str, int]:
    """Counts sorted by decreasing count, then alphabetically."""
    return {k: v for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))}


def _group_dict(g: GroupStats) -> dict:
    return {
        "episodes": g.episodes,
        "steps": g.steps,
        "successes": g.successes,
        "success_rate": _rate(g.successes, g.episodes),
        "intervened_steps": g.intervened,
        "intervention_ratio": _rate(g.intervened, g.steps),
        "commands": _histogram({c: n for c, n in g.commands.items() if c != NULL_COMMAND}),
    }


def info(path: str | os.PathLike) -> dict:
    """Summary of a dataset, per (task, kind) and in total. Reads low-dim arrays only.

    Returns a JSON-serialisable dict::

        {"path", "fps", "env_args", "masks": {split: n_episodes},
         "groups": [{"task", "kind", "episodes", "steps", "successes", "success_rate",
                     "intervened_steps", "intervention_ratio", "commands": {command: count}}, ...],
         "total": {same keys without task/kind}}

    An episode succeeded when any reward is > 0; ``intervention_ratio`` is intervened steps /
    steps; ``commands`` counts ``refinement_command`` strings other than ``"[null]"`` (most
    frequent first). Rates are ``None`` when there is nothing to divide by. Groups are sorted by
    task, then kind. Raises :class:`DatasetFormatError` on a malformed file.
    """
    s = summarize(path)
    return {
        "path": str(s.path),
        "fps": s.fps,
        "env_args": s.env_args,
        "masks": s.masks,
        "groups": [{"task": t, "kind": k, **_group_dict(s.groups[(t, k)])} for t, k in sorted(s.groups)],
        "total": _group_dict(s.total),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _table(summary: Mapping) -> list[str]:
    tot = summary["total"]
    header = ("task", "kind", "episodes", "steps", "success", "intervention")
    rows = [
        (g["task"], g["kind"], str(g["episodes"]), str(g["steps"]), _pct(g["success_rate"]),
         _pct(g["intervention_ratio"]))
        for g in summary["groups"]
    ]
    total_row = ("total", "", str(tot["episodes"]), str(tot["steps"]), _pct(tot["success_rate"]),
                 _pct(tot["intervention_ratio"]))
    widths = [max(len(r[i]) for r in [header, *rows, total_row]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        return "  ".join(cells).rstrip()

    return [fmt(header), *map(fmt, rows), "-" * len(fmt(header)), fmt(total_row)]


def _command_lines(title: str, commands: Mapping[str, int]) -> list[str]:
    lines = [f"  {title}:"]
    if not commands:
        lines.append("    (none)")
    width = max((len(str(v)) for v in commands.values()), default=1)
    lines.extend(f"    {str(v).rjust(width)}  {k}" for k, v in commands.items())
    return lines


def format_info(summary: Mapping) -> str:
    """The output of :func:`info` as a plain-text table (what ``info`` prints)."""
    tot = summary["total"]
    masks = ", ".join(f"{k} {v}" for k, v in summary["masks"].items()) or "none"
    lines = [
        f"{summary['path']}: {tot['episodes']} episodes, {tot['steps']} steps, "
        f"fps {summary['fps']:g}, masks: {masks}",
        "",
        *_table(summary),
        "",
        f'refinement commands (excluding "{NULL_COMMAND}"):',
        *_command_lines("all", tot["commands"]),
    ]
    for g in summary["groups"]:
        if g["commands"]:
            lines += _command_lines(f"{g['task']} / {g['kind']}", g["commands"])
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Markdown (dataset cards)


def _md(text: object) -> str:
    """A value made safe for one Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def format_markdown(s: DatasetSummary) -> str:
    """The "Counts" and "Refinement commands" sections of a dataset card (Markdown)."""
    lines = [
        "## Counts",
        "",
        f"{s.episodes} episodes, {s.steps} steps at {s.fps:g} fps; {s.intervened} intervened steps "
        f"(intervention ratio {s.intervention_ratio:.4f}). Robots: {', '.join(s.robots)}.",
        "",
        "| task | kind | episodes | steps | successes | intervened steps | intervention ratio |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (task, kind), g in sorted(s.groups.items()):
        ratio = g.intervened / g.steps if g.steps else 0.0
        lines.append(
            f"| {_md(task)} | {kind} | {g.episodes} | {g.steps} | {g.successes} | {g.intervened} | {ratio:.4f} |"
        )
    lines += [
        "",
        "## Refinement commands",
        "",
        f"Talk-and-tweak refinement commands per step (`{NULL_COMMAND}` where there is none), "
        "most frequent first.",
        "",
        "| command | steps | intervened steps | share of steps |",
        "|---|---:|---:|---:|",
    ]
    for cmd, n in _histogram(s.commands).items():
        lines.append(f"| {_md(cmd)} | {n} | {s.intervened_commands.get(cmd, 0)} | {n / s.steps:.4f} |")
    return "\n".join(lines) + "\n"
