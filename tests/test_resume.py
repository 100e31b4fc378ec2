"""Resume continues; it does not replay: SIGKILL a running fit after its first online checkpoint, resume it,
and compare what the resumed run holds with what the checkpoint held (values, not sizes)."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BASE = ["experiment=smoke", "eval.trials=0", "eval.warmup_point=false", "eval.curve_every_env_steps=1000000",
        "trainer.checkpoint_every=10", "online.log_teleop=false"]


def _online_ckpt(path: Path):
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - replaced while reading: try again
        return None
    return state if state.get("dual_actor", {}).get("phase") == "online" else None


def _kill_after_first_online_checkpoint(run_root: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dual_actor.fit", *BASE, f"run_root={run_root}", "run_name=k",
                             "online.env_steps=100000"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    ckpt = run_root / "k" / "last.ckpt"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if _online_ckpt(ckpt) is not None:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)  # a real kill: no handler, no cleanup
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    state = _online_ckpt(ckpt)  # what is on disk after the kill (it may be newer than the one seen)
    assert state is not None, "no complete online checkpoint after the kill"
    return state


class Capture:
    """What the resumed run holds when it starts: the learner's weights and optimizers (``on_train_start``), and,
    at the first online batch (before it collects anything), the buffers, each robot's random state, the
    process's torch RNG and the batch sampler's generator."""

    def __init__(self):
        self.seen = {}

    def on_train_start(self, trainer, pl_module):
        if pl_module.phase != "online" or "state_dict" in self.seen:
            return
        self.seen["state_dict"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.seen["optimizers"] = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]  # live tensors: copy
        self.seen["num_updates"] = pl_module.num_updates

    def before_batch(self, interaction):
        if "buffers" not in self.seen:
            self.seen["buffers"] = interaction.buffers.state_dict()
            self.seen["loops_rng"] = copy.deepcopy([l.rng_state() for l in interaction.loops])
            self.seen["torch_rng"] = torch.get_rng_state().clone()

    def sample(self, sampler):
        if "sampler_rng" not in self.seen and sampler.phase == "online":
            self.seen["sampler_rng"] = sampler.generator.get_state().clone()


def _resume_in_process(run_root: Path, env_steps: int, monkeypatch) -> Capture:
    import lightning as L
    from hydra import compose, initialize_config_dir

    from dual_actor import fit

    cap = Capture()
    cb = type("CaptureCallback", (L.Callback,), {"on_train_start": lambda self, t, m: cap.on_train_start(t, m)})()
    real = fit.make_trainer
    monkeypatch.setattr(fit, "make_trainer", lambda cfg, logger, callbacks: real(cfg, logger, [cb, *callbacks]))
    from dual_actor.data.datamodule import BufferSampler
    from dual_actor.data.interaction import Interaction

    real_before, real_sample = Interaction.before_batch, BufferSampler.sample
    monkeypatch.setattr(Interaction, "before_batch", lambda self: (cap.before_batch(self), real_before(self))[1])
    monkeypatch.setattr(BufferSampler, "sample", lambda self: (cap.sample(self), real_sample(self))[1])
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*BASE, f"run_root={run_root}", "run_name=k", "resume=true",
                                           f"online.env_steps={env_steps}"])
    fit.run(cfg)
    return cap


def _equal_nested(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            _equal_nested(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.slow
def test_sigkill_then_resume_restores_everything_and_does_not_replay(tmp_path, monkeypatch):
    ckpt = _kill_after_first_online_checkpoint(tmp_path)
    (inter_state,) = [v for k, v in ckpt["callbacks"].items() if "InteractionCallback" in k]
    (rng_state,) = [v for k, v in ckpt["callbacks"].items() if "RNGCheckpoint" in k]
    held = inter_state["env_steps"]
    cap = _resume_in_process(tmp_path, held + 150, monkeypatch)
    seen = cap.seen
    assert seen["num_updates"] == ckpt["dual_actor"]["num_updates"]
    # weights: primary, refinement, critics, targets, the actor EMA -- every tensor equal to the checkpoint's
    sd = seen["state_dict"]
    assert any(k.startswith("primary_ema.") for k in sd) and any(k.startswith("target_critics.") for k in sd)
    _equal_nested(ckpt["state_dict"], sd, "state_dict")
    # optimizer state (Adam moments and step counts of every optimizer)
    _equal_nested(ckpt["optimizer_states"], seen["optimizers"], "optimizers")
    # buffers, per key and per row (not sizes)
    _equal_nested(inter_state["buffers"], seen["buffers"], "buffers")
    # random states: the batch sampler, each robot's env and operator, the process (torch)
    assert torch.equal(inter_state["sampler_rng"], seen["sampler_rng"])
    _equal_nested(inter_state["loops_rng"], seen["loops_rng"], "loops_rng")
    assert all("env" in r and "operator" in r for r in seen["loops_rng"])
    assert torch.equal(rng_state["torch"], seen["torch_rng"])

    # the episodes after the resume are new: no row of the new rollouts repeats an observation already held
    final = torch.load(tmp_path / "k" / "last.ckpt", map_location="cpu", weights_only=False)
    (after,) = [v for k, v in final["callbacks"].items() if "InteractionCallback" in k]
    assert after["env_steps"] >= held + 150
    old_rows = _rollout_obs(inter_state["buffers"])
    new_rows = _rollout_obs(after["buffers"])
    for task in old_rows:
        n_old = len(old_rows[task])
        assert torch.equal(new_rows[task][:n_old], old_rows[task])  # nothing held was lost or changed
        fresh = new_rows[task][n_old:]
        assert len(fresh) > 0
        dup = (fresh[:, None, :] == old_rows[task][None, :, :]).all(-1).any(-1)
        assert not bool(dup.any()), f"{task}: {int(dup.sum())} new rows repeat held observations (a replay)"


def _rollout_obs(buffer_state: dict) -> dict:
    from dual_actor.data.buffers import TaskBuffers

    bufs = TaskBuffers(buffer_state["tasks"])
    bufs.load_state_dict(buffer_state)
    return {t: bufs[t]["rollouts"].all()["obs"] for t in bufs.tasks}
