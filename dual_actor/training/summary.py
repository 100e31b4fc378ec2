"""A run's ``summary.json`` and its last line: what was done, what the robots collected and where it went.

The online phase's episodes are counted three ways and reconciled: those the learner ingested into its buffers,
those the teleop log holds, and (``runtime=ray``) those still in flight when the robots were stopped. They differ
for known reasons, written beside the counts: a Ray robot finishes the episode it is in after the budget is
reached (logged, not ingested), a robot killed mid-episode leaves a partial episode in the log's staging folder,
and a run killed after its last checkpoint logged episodes that its resume collected again.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from data_tools.teleop_format import EPISODES_DIR, STAGING_DIR, STEPS_FILE

RESULT_FILES = ("eval.json", "eval_warmup.json", "eval_commands.json", "eval_B.json", "learning_curve.png", "authority.json",
                "summary.json", "policy", "teleop")


def code_version() -> dict:
    """Which code ran: the package version and, when it runs from a git checkout, the commit and whether files
    differ from it (``{"version", "commit", "dirty"}``; ``commit`` and ``dirty`` None outside git). A kept record of
    a run (docs/runs/) says from this which code produced it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        out = {"version": version("dual-actor"), "commit": None, "dirty": None}
    except PackageNotFoundError:
        out = {"version": None, "commit": None, "dirty": None}
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:
        status = git("status", "--porcelain", "--untracked-files=no")
        out.update(commit=commit, dirty=None if status is None else bool(status))
    return out


def teleop_counts(run_dir: Path) -> dict | None:
    """Episodes and steps in the run's teleop log (``<run>/teleop/<session>/episodes/<id>/steps.jsonl``), and the
    partial episodes a stopped robot left in a session's staging folder; None without a log."""
    root = Path(run_dir) / "teleop"
    if not root.is_dir():
        return None
    episodes = steps = partial = 0
    for session in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted((session / EPISODES_DIR).glob(f"*/{STEPS_FILE}")):
            episodes += 1
            with f.open("rb") as fh:
                steps += sum(1 for line in fh if line.strip())
        staging = session / STAGING_DIR
        partial += sum(1 for _ in staging.iterdir()) if staging.is_dir() else 0
    return {"episodes": episodes, "steps": steps, "partial_episodes": partial}


def online_episodes(interaction, run_dir: Path) -> dict:
    """The online phase's episodes: ingested (in the buffers), in the teleop log, in flight at the stop (Ray), and
    the difference between the log and the buffers, with what explains it."""
    out = {"ingested": {"episodes": int(interaction.episodes), "steps": int(interaction.env_steps)}}
    dropped = getattr(interaction, "dropped_at_stop", None)
    if dropped is not None:
        out["in_flight_at_stop"] = dict(dropped)
    logged = teleop_counts(run_dir)
    if logged is not None:
        out["teleop_log"] = logged
        extra = {"episodes": logged["episodes"] - out["ingested"]["episodes"],
                 "steps": logged["steps"] - out["ingested"]["steps"]}
        out["logged_not_ingested"] = extra
        if extra["episodes"]:
            out["why"] = ("episodes the robots finished after the budget was reached or while the learner stopped "
                          "them (in flight at the stop), and, after a resume, episodes logged after the killed run's "
                          "last checkpoint (collected again): logged, not trained on")
    return out


def existing_results(run_dir: Path) -> list[str]:
    """The result files and folders the run holds, in :data:`RESULT_FILES` order (for its last line)."""
    return [name for name in RESULT_FILES if (Path(run_dir) / name).exists()]
