"""Runs for the notebooks, as subprocesses: :func:`fit_run` runs ``python -m dual_actor.fit`` (Hydra composes the
config) and skips a run whose ``eval.json`` exists, so a notebook that is run again resumes;
:func:`run_dataset` builds the dataset a run saw (its demos + its online teleop log, converted and merged) and
:func:`tiny_bench_run` a short real run to build one from."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from dual_actor.analysis.loading import REPO_ROOT


def fit_run(run_root: str | os.PathLike, run_name: str, overrides: Sequence[str], log_dir: str | os.PathLike | None = None,
            env: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """``python -m dual_actor.fit run_root=RUN_ROOT run_name=RUN_NAME *overrides`` in a subprocess from
    :data:`REPO_ROOT` (Hydra composes the config as on the command line); its output goes to
    ``log_dir/RUN_NAME.log`` (default ``RUN_ROOT/logs``). Returns ``(run folder, ran)``: a run whose
    ``eval.json`` exists is skipped (``ran`` False), one with a ``last.ckpt`` but no ``eval.json`` (killed) is
    continued with ``resume=true``. A failed run raises ``RuntimeError`` with the end of its log."""
    root = Path(run_root)
    run = root / run_name
    if (run / "eval.json").exists():
        return run, False
    args = [f"run_root={root}", f"run_name={run_name}", "trainer.progress_bar=false", *overrides]
    if run.exists():
        if not (run / "last.ckpt").exists():
            raise RuntimeError(f"{run} exists without eval.json or last.ckpt (a run that died early): delete it to rerun")
        args.append("resume=true")
    log = Path(log_dir) if log_dir is not None else root / "logs"
    log.mkdir(parents=True, exist_ok=True)
    log = log / f"{run_name}.log"
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    with open(log, "w") as f:
        f.write("$ python -m dual_actor.fit " + " ".join(args) + "\n")
        f.flush()
        r = subprocess.run([sys.executable, "-m", "dual_actor.fit", *args], cwd=REPO_ROOT, env=full_env,
                           stdout=f, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"{run_name}: python -m dual_actor.fit exited {r.returncode} (log: {log})\n{tail}")
    return run, True


def run_dataset(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The talk-and-tweak dataset a finished run saw, at ``out``: its warm-up demos (``data.path`` of the run's
    ``config.yaml``) and its online episodes (every session of its ``teleop/`` log, converted with ``data_tools``),
    merged (``python -m data_tools convert`` + ``merge``, as notebooks/README.md writes them out).

    Raises:
        FileNotFoundError: ``run`` has no ``config.yaml``, no teleop session, or its demos file is gone.
    """
    import yaml

    from data_tools.convert import convert
    from data_tools.curate import merge

    run, out = Path(run), Path(out)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run}: no config.yaml (not a run folder)")
    demos = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]["path"])
    if not demos.is_absolute():
        demos = REPO_ROOT / demos
    if not demos.is_file():
        raise FileNotFoundError(f"{run}: its demos {demos} (data.path) are gone")
    sessions = sorted(p for p in (run / "teleop").iterdir() if p.is_dir()) if (run / "teleop").is_dir() else []
    if not sessions:
        raise FileNotFoundError(f"{run}: no teleop session (teleop/) to convert")
    with tempfile.TemporaryDirectory(prefix="run-dataset-") as tmp:
        online = Path(tmp) / "online.hdf5"
        convert(sessions, online, progress=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        merge([demos, online], out)
    return out


def tiny_bench_run(run_root: str | os.PathLike, env_steps: int = 200) -> Path:
    """A short real run in ``run_root/tiny`` (tests, ``TINY`` notebooks): ``experiment=smoke`` on the bench (30 warm-up
    updates, ``env_steps`` online steps with the simulated operator, no evaluation), with its scripted-expert demos
    and its online teleop log (what :func:`run_dataset` reads). About 15-20 s on one core."""
    run, _ = fit_run(run_root, "tiny", ["experiment=smoke", f"online.env_steps={env_steps}", "eval.trials=0",
                                        "eval.warmup_point=false", f"eval.curve_every_env_steps={env_steps}"])
    return run
