"""One warm-up shared by every run whose warm-up config agrees (``warmup.share=true``).

What the warm-up depends on is declared in the schema (each key's ``warmup``, dual_actor/config/): the
fingerprint is the resolved config seen through those declarations, so a new key is covered by declaring it.
``algo=dual_actor``, ``algo.refine_enabled=false`` and ``algo=dsrl`` agree; ``warmup_fingerprint`` says why two
configs do not. Two runs started together (dual and single side by side) compute it once:
:func:`claim_shared_warmup` lets the first compute it and the others wait for its ``done.json``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from data_tools.atomic import atomic_write_text
from dual_actor.config.fields import warmup_view
from dual_actor.config.sections import Config
from dual_actor.training.callbacks import RNGCheckpoint

SHARED_DONE = "done.json"
# Not the warm-up's evaluations (eval_warmup.json, the curve's first point): how the warm-up policy acts is the run's
# (algo=dsrl_na samples its latent), so each run evaluates its own start.
SHARED_FILES = ("last.ckpt", "policy_warmup", "authority.json")


def warmup_fingerprint(cfg: DictConfig) -> dict:
    """The part of the resolved config that the warm-up depends on (the schema's ``warmup`` declarations)."""
    return warmup_view(Config, OmegaConf.to_container(cfg, resolve=True))


def shared_warmup_dir(cfg: DictConfig) -> Path:
    """``<run_root>/warmups/seed<seed>-<hash of the warm-up fingerprint>``: one warm-up per seed and warm-up
    config, reused by every run (arm) with ``warmup.share=true`` that shares it."""
    fp = json.dumps(warmup_fingerprint(cfg), sort_keys=True)
    return Path(cfg.run_root) / "warmups" / f"seed{int(cfg.seed)}-{hashlib.sha256(fp.encode()).hexdigest()[:12]}"


def _claim_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.claim"


def _holder(claim: Path) -> int | None:
    try:
        return int(claim.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def claim_shared_warmup(dest: Path, poll_s: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Before computing the shared warm-up ``dest``: True when this process holds its claim (it computes the warm-up
    and publishes it; :func:`release_shared_warmup`, also at exit, lets go); False when it is finished, perhaps after
    waiting for the process that holds the claim. The claim is ``.<dest name>.claim`` beside it, holding the
    claimant's pid, made whole by a hard link (never read half-written); a claim whose process is gone (killed) is
    taken over. Pids are a machine's own, so runs on several machines sharing one ``run_root`` may each compute it,
    as before (:func:`publish_shared_warmup` keeps the first)."""
    claim, me = _claim_path(dest), os.getpid()
    dest.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while not (dest / SHARED_DONE).exists():
        mine = claim.with_name(f"{claim.name}.{me}")
        mine.write_text(str(me))
        try:
            os.link(mine, claim)
        except FileExistsError:
            holder = _holder(claim)
            if holder == me:
                return True
            if holder is None or not _alive(holder):  # a killed claimant's (or unreadable): take it over
                claim.unlink(missing_ok=True)
                continue
            if not waited:
                print(f"[warm-up] waiting for process {holder}, which computes the shared warm-up {dest}", flush=True)
                waited = True
            sleep(poll_s)
            continue
        finally:
            mine.unlink(missing_ok=True)
        atexit.register(release_shared_warmup, dest)
        return True
    return False


def release_shared_warmup(dest: Path | None) -> None:
    """Remove this process's claim on ``dest`` (nothing when another process holds it or none is there)."""
    if dest is not None and _holder(_claim_path(dest)) == os.getpid():
        _claim_path(dest).unlink(missing_ok=True)


def copy_shared_files(src: Path, dest: Path) -> None:
    """The :data:`SHARED_FILES` that ``src`` holds, copied into ``dest`` (folders whole)."""
    for name in SHARED_FILES:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name)
        elif (src / name).exists():
            shutil.copy2(src / name, dest / name)


def publish_shared_warmup(cfg: DictConfig, run_dir: Path, dest: Path | None, updates: int) -> None:
    """Copy the finished warm-up of ``run_dir`` (checkpoint, policy, warm-up point, probes) to the shared folder
    ``dest``, whole or not at all: a temporary folder renamed into place, ``done.json`` last. A folder someone
    finished first wins."""
    if dest is None or (dest / SHARED_DONE).exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{run_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    copy_shared_files(run_dir, tmp)
    atomic_write_text(tmp / SHARED_DONE, json.dumps({"from_run": str(run_dir), "updates": updates,
                                                     "fingerprint": warmup_fingerprint(cfg)}, indent=2))
    try:
        tmp.rename(dest)
    except OSError:  # another job published it meanwhile (or a half-written folder from a crash: replace it)
        if (dest / SHARED_DONE).exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
    print(f"[warm-up] shared as {dest}", flush=True)


def load_finished_warmup(module, ckpt: Path) -> None:
    """A finished warm-up's weights, counters and process RNG state, without a trainer (resuming it through
    Lightning would run one more update)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    module.on_load_checkpoint(state)
    module.load_state_dict(state["state_dict"])
    rng = (state.get("callbacks") or {}).get("RNGCheckpoint")
    if rng is not None:
        RNGCheckpoint().load_state_dict(rng)
