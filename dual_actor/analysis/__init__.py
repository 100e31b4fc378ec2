"""What the notebooks (``notebooks/*.ipynb``) compute: run folders and HDF5 datasets in, markdown tables and
matplotlib Figures out. The notebooks use this package as one namespace (``from dual_actor import analysis as an``).

- :mod:`~dual_actor.analysis.loading`: run folders (:func:`load_run`, :func:`load_arms`), TensorBoard scalars,
  datasets (:func:`load_episodes`, :func:`read_frames`, the labelling a dataset records); :func:`repo_path`.
- :mod:`~dual_actor.analysis.tables`: markdown tables over seeds (:func:`spread`, :func:`table_one`,
  :func:`chain_table`, ...) and of dataset statistics.
- :mod:`~dual_actor.analysis.dataset_stats`: counts per task and kind, intervention segments, the talk-and-tweak
  relabelling grid (:func:`relabel_grid`).
- :mod:`~dual_actor.analysis.paper`: the paper's numbers (Table I, RQ4 chains), the arms and the offline ablations.
- :mod:`~dual_actor.analysis.plots`: the figures, from data in memory (imports matplotlib).
- :mod:`~dual_actor.analysis.runner`: :func:`fit_run` (``python -m dual_actor.fit`` in a subprocess, skipping
  finished runs), :func:`run_dataset` (the demos + teleop log a run saw, as one HDF5) and :func:`tiny_bench_run`.

Loading, tables, statistics and the paper's numbers are imported with the package; the plots and the runner on
first use of one of their names (``an.plot_curves``), so that ``import dual_actor.analysis.tables`` does not
import matplotlib.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dual_actor.analysis.dataset_stats import dataset_counts, relabel_agreement, relabel_grid, segments
from dual_actor.analysis.loading import (
    RECORD_FILES,
    REPO_ROOT,
    Frames,
    find_runs,
    keep_record,
    labelling_params,
    load_arms,
    load_episodes,
    load_run,
    read_frames,
    read_scalars,
    repo_path,
    run_scalars,
    translation_scale,
)
from dual_actor.analysis.paper import BENCH_TASKS, OFFLINE_ABLATIONS, PAPER_CHAIN, PAPER_TABLE_I, RESULT_ARMS
from dual_actor.analysis.tables import (
    authority_table,
    chain_table,
    counts_table,
    median_steps,
    paired_table,
    relabel_table,
    results_tables,
    runs_table,
    spread,
    steps_table,
    steps_to,
    success_table,
    table_one,
    wall_minutes_to,
    wall_table,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_PLOTS = ("plot_actions", "plot_commands", "plot_curves", "plot_frames", "plot_interventions", "plot_relabel_grid",
          "plot_scalar", "plot_success_bars", "plot_success_vs_effort", "plot_task_curves")
_RUNNER = ("fit_run", "run_dataset", "tiny_bench_run")


def __getattr__(name: str):
    """The plots' and the runner's names, imported on first use (PEP 562)."""
    if name in _PLOTS:
        from dual_actor.analysis import plots

        return getattr(plots, name)
    if name in _RUNNER:
        from dual_actor.analysis import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PLOTS, *_RUNNER})


def frame_strip(path: str | os.PathLike, episode: str | int | None = None, frames: int = 8, camera: str | None = None,
                out: str | os.PathLike | None = None) -> Figure | None:
    """``frames`` evenly spaced frames of one episode (``demo_K`` or K; default: the first) for each camera (or
    ``camera``), intervened steps titled in red: :func:`read_frames` drawn by :func:`plot_frames`. None when the
    dataset has no images (state-only)."""
    strip = read_frames(path, episode, frames, camera)
    if strip is None:
        return None
    from dual_actor.analysis.plots import plot_frames

    return plot_frames(strip, out)


__all__ = [
    "BENCH_TASKS", "OFFLINE_ABLATIONS", "PAPER_CHAIN", "PAPER_TABLE_I", "RECORD_FILES", "REPO_ROOT", "RESULT_ARMS", "Frames",
    "authority_table", "chain_table", "counts_table", "dataset_counts", "find_runs", "frame_strip", "keep_record",
    "labelling_params", "load_arms", "load_episodes", "load_run", "median_steps", "paired_table", "read_frames",
    "read_scalars", "run_scalars",
    "relabel_agreement", "relabel_grid", "relabel_table", "repo_path", "results_tables", "runs_table", "segments", "spread", "steps_table",
    "steps_to", "success_table", "table_one", "translation_scale", "wall_minutes_to", "wall_table",
    *_PLOTS, *_RUNNER,
]
