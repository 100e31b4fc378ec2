"""Ours (dual actor, single actor) beside LeRobot 0.4.4's SAC (its HIL-SERL recipe) on gym-hil's PandaPickCube,
state mode: the same world, the same simulated operator, the same demos, the same budget of environment steps and
the same held-out evaluation trials (docs/gym-hil.md, issue 29).

    python benchmarks/gym_hil_vs_lerobot.py --out /work/gymhil --seeds 0 1 2 --env-steps 5000

Per arm and seed it writes ``OUT/<arm>-s<seed>/result.json`` as soon as that run ends (a killed sweep keeps what
finished; an existing result is not run again; arms can run as separate invocations on one folder), then, over
every result in the folder, ``OUT/summary.md`` (:func:`summary_md`: success on the test trials, ours' warm-up on
them, take-over and spoken rates, learner updates and seconds, paired differences, the training episodes' success
vs environment steps) and ``OUT/curves.png`` (:func:`figure`: success vs environment steps and vs seconds).

**The same terms.**
- World: :class:`dual_actor.runtime.sim.gym_hil.GymHilTaskEnv` for both (gym-hil's ``PandaPickCubeGymEnv``, its
  EE action scale, reward and 100-step limit; the block from the env's own seeded generator). LeRobot's actor sees
  it through :class:`LeRobotView`, a gymnasium env in gym-hil's own observation layout (``agent_pos`` 18-d:
  joint positions, velocities, gripper command 0..255, TCP; ``environment_state``: the block) and action layout
  (xyz in [-1, 1] + a gripper in {0, 1, 2}, LeRobot's discrete gripper). Training episodes use the env seeds our
  online phase uses (``online.seed``); evaluation trials are :func:`dual_actor.eval.trial_seeds` (split test).
- Operator: :class:`~dual_actor.runtime.operators.SimulatedOperator` with the same rule and seed. LeRobot's SAC
  has no language channel, so for it the operator takes over instead of speaking (``talk_then_tweak=False``, as
  our HG-DAgger baseline); the take-over reaches LeRobot's unchanged actor through the intervention keys its
  gym-hil adapter reads (``info["is_intervention"]``, ``info["teleop_action"]``: what gym-hil's own
  ``InputsControlWrapper`` writes for a gamepad). Its gripper command is rounded to LeRobot's three values.
- Demos: one file of scripted-expert demos (``generate_demos(world="gym_hil")``, seed 0) for every arm and seed:
  our runs read the HDF5 file, LeRobot's learner the same episodes as a LeRobotDataset (:func:`write_lerobot_demos`:
  gym-hil's layout, LeRobot's discrete gripper; our own ``data_tools export-lerobot`` writes one
  ``observation.state``, which SAC's gym-hil recipe splits in two).
- Budget: ``--env-steps`` environment steps (policy and operator steps alike) for each.

**LeRobot's side, as shipped.** Its actor loop (``lerobot.rl.actor.act_with_policy``) and learner loop
(``lerobot.rl.learner.add_actor_information_and_train``) run unchanged, in two local processes joined by
``torch.multiprocessing`` queues (LeRobot's gRPC service only carries the same bytes between them). Replaced: its
env factory (``make_robot_env`` builds gym-hil with images only), the per-step frequency warning, the wandb logger
(a recorder) and, for evaluation, ``select_action``'s sampling (the actor's mean and the discrete critic's argmax,
as a deterministic policy is evaluated). The actor paces itself to ``--fps`` (10: LeRobot's real-time default;
0: as fast as it can): the learner trains while the actor acts, so its updates per environment step depend on
that pace, and are reported. SAC settings: ``sac_config`` (HF's gym-hil example: discount 0.97, utd 2,
temperature 0.01, latent 64, batch 256, 3 discrete gripper actions).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dual_actor.runtime.sim.gym_hil import (  # noqa: E402
    AGENT_POS_DIMS, BLOCK, MAX_EPISODE_STEPS, MAX_GRIPPER, TASK, GymHilTaskEnv)

ARMS = ("dual", "single", "lerobot_sac")
ONLINE_SEED = 1000
"""Our online phase's env seed for the first task (``online.seed``): LeRobot's training episodes use the same."""
REPO_ID = "local/gym_hil_pick_demos"


# ------------------------------------------------------------------------------------------ the two layouts

def lerobot_obs(obs: np.ndarray) -> dict[str, np.ndarray]:
    """Our 21-d observation [tcp 3, gripper 0..1, qpos 7, qvel 7, block 3] in gym-hil's own layout:
    ``agent_pos`` [qpos 7, qvel 7, gripper command 0..255, tcp 3] and ``environment_state`` [block 3]."""
    o = np.asarray(obs, dtype=np.float32)
    agent = np.concatenate([o[4:11], o[11:18], o[3:4] * MAX_GRIPPER, o[0:3]]).astype(np.float32)
    return {"agent_pos": agent, "environment_state": o[BLOCK].astype(np.float32)}


def to_lerobot_action(a: np.ndarray) -> np.ndarray:
    """Our action [xyz in [-1, 1], gripper change in [-1, 1]] as LeRobot's [xyz, gripper in {0, 1, 2}]
    (gym-hil's gripper command is ours plus 1; LeRobot's SAC picks one of three)."""
    a = np.asarray(a, dtype=np.float32).reshape(-1)
    return np.concatenate([np.clip(a[:3], -1.0, 1.0), [float(np.clip(np.rint(a[3] + 1.0), 0.0, 2.0))]]).astype(np.float32)


def to_our_action(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32).reshape(-1)
    return np.concatenate([np.clip(a[:3], -1.0, 1.0), [float(np.clip(a[3], 0.0, 2.0)) - 1.0]]).astype(np.float32)


class LeRobotView:
    """:class:`GymHilTaskEnv` as the gymnasium env LeRobot's gym-hil pipeline drives, with the simulated operator
    taking over through gym-hil's intervention keys (module docstring). Counts steps, take-overs and episodes."""

    def __init__(self, seed: int, operator: Any = None, max_episode_steps: int = MAX_EPISODE_STEPS):
        import gymnasium as gym

        self.env = GymHilTaskEnv(seed=seed, max_episode_steps=max_episode_steps)
        self.operator = operator
        box = gym.spaces.Box
        self.observation_space = gym.spaces.Dict({
            "agent_pos": box(-np.inf, np.inf, (AGENT_POS_DIMS,), np.float32),
            "environment_state": box(-np.inf, np.inf, (3,), np.float32)})
        self.action_space = box(np.array([-1, -1, -1, 0], np.float32), np.array([1, 1, 1, 2], np.float32))
        self.counts = {"steps": 0, "takeover_steps": 0, "episodes": 0, "successes": 0}
        self.episodes: list[dict] = []  # per ended episode: env steps so far, length, success, take-overs, seconds so far
        self._obs = None
        self._t0: float | None = None
        self._len = self._taken = 0

    @property
    def unwrapped(self):
        return self

    def reset(self, seed=None, options=None):
        self._obs, self._len, self._taken = self.env.reset(), 0, 0
        if self.operator is not None:
            self.operator.reset(TASK)
        return lerobot_obs(self._obs), {}

    def step(self, action):
        proposed = to_lerobot_action(to_our_action(np.asarray(action, dtype=np.float32).reshape(-1)[:4]))
        take = self.operator.observe(self._obs, to_our_action(proposed), {}) if self.operator is not None else None
        intervening = bool(take is not None and take.intervening)
        executed = to_lerobot_action(take.action) if intervening else proposed
        self._obs, reward, terminated, truncated, _ = self.env.step(to_our_action(executed))
        if self._t0 is None:
            self._t0 = time.perf_counter()
        self._len += 1
        self._taken += int(intervening)
        self.counts["steps"] += 1
        self.counts["takeover_steps"] += int(intervening)
        if terminated or truncated:
            self.counts["episodes"] += 1
            self.counts["successes"] += int(terminated)
            self.episodes.append({"env_steps": self.counts["steps"], "length": self._len, "success": bool(terminated),
                                  "takeover_steps": self._taken, "wall_s": time.perf_counter() - self._t0})
        info = {"is_intervention": intervening, "teleop_action": executed, "succeed": bool(terminated)}
        return lerobot_obs(self._obs), float(reward), bool(terminated), bool(truncated), info

    def close(self):
        self.env.close()


# ------------------------------------------------------------------------------------------ demos

def make_demos(path: Path, episodes: int) -> Path:
    """The scripted-expert demos every arm learns from (seed 0, the env's demo noise, 100-step episodes)."""
    from dual_actor.runtime.sim import generate_demos

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_demos(path, tasks=[TASK], episodes_per_task=episodes, seed=0, noise=0.1,
                       max_episode_steps=MAX_EPISODE_STEPS, world="gym_hil")
    return path


def write_lerobot_demos(hdf5: Path, out: Path) -> Path:
    """The HDF5 demos as a LeRobotDataset in gym-hil's layout for LeRobot's learner: ``observation.state`` (18),
    ``observation.environment_state`` (3), ``action`` (4, LeRobot's gripper), ``next.reward``, ``next.done``
    (True on each episode's last frame), ``complementary_info.discrete_penalty`` (0: no gripper penalty)."""
    from data_tools.atomic import atomic_dir
    from data_tools.hdf5_format import read_episodes
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if (out / "meta" / "info.json").exists():
        return out
    f32 = "float32"
    features = {
        "observation.state": {"dtype": f32, "shape": (AGENT_POS_DIMS,), "names": None},
        "observation.environment_state": {"dtype": f32, "shape": (3,), "names": None},
        "action": {"dtype": f32, "shape": (4,), "names": None},
        "next.reward": {"dtype": f32, "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        "complementary_info.discrete_penalty": {"dtype": f32, "shape": (1,), "names": None},
    }
    with atomic_dir(out, force=False) as tmp:
        ds = LeRobotDataset.create(REPO_ID, fps=10, features=features, root=tmp / "dataset", use_videos=False)
        for ep in read_episodes(hdf5):
            n = len(ep.actions)
            for t in range(n):
                o = lerobot_obs(ep.obs["state"][t])
                ds.add_frame({"observation.state": o["agent_pos"], "observation.environment_state": o["environment_state"],
                              "action": to_lerobot_action(ep.actions[t]),
                              "next.reward": np.array([ep.rewards[t]], np.float32),
                              "next.done": np.array([t == n - 1]),
                              "complementary_info.discrete_penalty": np.zeros(1, np.float32), "task": ep.task})
            ds.save_episode()
        ds.finalize()
        for p in (tmp / "dataset").iterdir():
            p.rename(tmp / p.name)
        (tmp / "dataset").rmdir()
    return out


# ------------------------------------------------------------------------------------------ LeRobot's SAC

def sac_config(out: Path, demos: Path, env_steps: int, seed: int, fps: int, batch_size: int = 256,
               before_learning: int = 100):
    """LeRobot's train-RL config for gym-hil's pick-cube in state mode (module docstring)."""
    from lerobot.configs.default import DatasetConfig
    from lerobot.configs.train import TrainRLServerPipelineConfig
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.envs.configs import GripperConfig, HILSerlProcessorConfig, HILSerlRobotEnvConfig, ResetConfig
    from lerobot.policies.sac.configuration_sac import ConcurrencyConfig, SACConfig

    env = HILSerlRobotEnvConfig(
        name="gym_hil", task="PandaPickCubeBase-v0", fps=fps or None,
        features={"action": PolicyFeature(FeatureType.ACTION, (3,)),
                  "agent_pos": PolicyFeature(FeatureType.STATE, (AGENT_POS_DIMS,)),
                  "environment_state": PolicyFeature(FeatureType.ENV, (3,))},
        features_map={"action": "action", "agent_pos": "observation.state",
                      "environment_state": "observation.environment_state"},
        processor=HILSerlProcessorConfig(gripper=GripperConfig(use_gripper=True, gripper_penalty=0.0),
                                         reset=ResetConfig(terminate_on_success=True)))
    policy = SACConfig(device="cpu", storage_device="cpu", num_discrete_actions=3, use_torch_compile=False,
                       push_to_hub=False, online_steps=int(env_steps), online_step_before_learning=int(before_learning),
                       utd_ratio=2, discount=0.97, temperature_init=0.01, latent_dim=64, grad_clip_norm=10.0,
                       concurrency=ConcurrencyConfig("threads", "threads"))
    return TrainRLServerPipelineConfig(policy=policy, env=env, dataset=DatasetConfig(repo_id=REPO_ID, root=str(demos)),
                                       output_dir=out, job_name="sac_gym_hil", seed=int(seed), batch_size=batch_size,
                                       log_freq=1, save_checkpoint=False)


def _quiet() -> None:
    import torch

    torch.set_num_threads(1)
    logging.getLogger().setLevel(logging.WARNING)


def _actor_main(cfg, ev, pq, tq, iq, res_q, seed: int) -> None:
    _quiet()
    import lerobot.rl.actor as A

    from dual_actor.runtime.operators import SimulatedOperator

    logging.getLogger().setLevel(logging.WARNING)
    box: dict[str, LeRobotView] = {}

    def make_robot_env(cfg=None):  # noqa: ARG001 -- LeRobot's signature
        op = SimulatedOperator(TASK, talk_then_tweak=False, translation_scale_m=0.025, seed=seed)
        box["env"] = LeRobotView(ONLINE_SEED, op)
        return box["env"], None

    A.make_robot_env = make_robot_env
    A.log_policy_frequency_issue = lambda **kw: None
    t0 = time.perf_counter()
    try:
        A.act_with_policy(cfg, ev, pq, tq, iq)
    finally:
        env = box.get("env")
        res_q.put({**(env.counts if env else {}), "episodes_log": env.episodes if env else [],
                   "actor_wall_s": time.perf_counter() - t0})
        time.sleep(1.0)  # the last transitions reach the learner before it is told to stop
        ev.set()
        for q in (pq, tq, iq):
            q.cancel_join_thread()


def _learner_main(cfg, ev, pq, tq, iq, res_q, snapshot_every: int = 0) -> None:
    _quiet()
    import lerobot.rl.learner as L

    logging.getLogger().setLevel(logging.WARNING)
    box: dict[str, Any] = {}
    real = L.make_policy

    def keep_policy(**kw):
        box["policy"] = real(**kw)
        return box["policy"]

    L.make_policy = keep_policy

    class Recorder:  # stands in for LeRobot's WandBLogger; saves the policy every ``snapshot_every`` env steps
        def __init__(self):
            self.steps = self.env_steps = 0
            self.next_snapshot = snapshot_every

        def log_dict(self, d, mode="train", custom_step_key=None):  # noqa: ARG002
            self.steps = max(self.steps, int(d.get("Optimization step", 0) or 0))
            self.env_steps = max(self.env_steps, int(d.get("Interaction step", 0) or 0))  # the actor's, per episode
            if snapshot_every and self.env_steps >= self.next_snapshot and "policy" in box:
                box["policy"].save_pretrained(Path(cfg.output_dir) / "snapshots" / f"{self.env_steps:07d}")
                self.next_snapshot = (self.env_steps // snapshot_every + 1) * snapshot_every

    rec = Recorder()
    t0 = time.perf_counter()
    try:
        L.add_actor_information_and_train(cfg, rec, ev, tq, iq, pq)
    finally:
        wall = time.perf_counter() - t0
        if "policy" in box:
            box["policy"].save_pretrained(Path(cfg.output_dir) / "final")
        res_q.put({"learner_wall_s": wall, "learner_updates": rec.steps})
        for q in (pq, tq, iq):
            q.cancel_join_thread()


def run_lerobot_sac(out: Path, demos_lerobot: Path, env_steps: int, seed: int, fps: int, batch_size: int,
                    before_learning: int, snapshot_every: int = 0) -> dict:
    """LeRobot's actor and learner, two processes, until the actor has spent ``env_steps``; with ``snapshot_every``
    the learner also saves its policy to ``out/snapshots/<env steps>`` each time the actor's reported env steps pass
    a multiple of it (the actor reports them once per episode)."""
    import torch.multiprocessing as mp

    cfg = sac_config(out, demos_lerobot, env_steps, seed, fps, batch_size, before_learning)
    ctx = mp.get_context("spawn")
    pq, tq, iq, ra, rl = (ctx.Queue() for _ in range(5))
    ev = ctx.Event()
    learner = ctx.Process(target=_learner_main, args=(cfg, ev, pq, tq, iq, rl, snapshot_every))
    actor = ctx.Process(target=_actor_main, args=(cfg, ev, pq, tq, iq, ra, seed))
    t0 = time.perf_counter()
    learner.start()
    actor.start()
    a, lr = ra.get(), rl.get()
    actor.join(60)
    learner.join(60)
    if not (out / "final" / "config.json").exists():
        raise RuntimeError(f"LeRobot's learner saved no policy in {out / 'final'} (see {out}/logs)")
    return {**a, **lr, "wall_s": time.perf_counter() - t0}


class SACActor:
    """LeRobot's trained SAC policy acting deterministically on our observation: the actor's mean (tanh) and the
    discrete critic's best gripper value, as LeRobot's own actor selects them less the sampling."""

    def __init__(self, folder: Path):
        from lerobot.policies.sac.modeling_sac import SACPolicy

        self.policy = SACPolicy.from_pretrained(str(folder), strict=True).eval()

    def act(self, obs: np.ndarray) -> np.ndarray:
        import torch

        o = lerobot_obs(obs)
        batch = {"observation.state": torch.from_numpy(o["agent_pos"])[None],
                 "observation.environment_state": torch.from_numpy(o["environment_state"])[None]}
        with torch.no_grad():
            mean = torch.tanh(self.policy.actor(batch, None)[2])
            grip = self.policy.discrete_critic(batch, None).argmax(-1, keepdim=True).float()
        return to_our_action(torch.cat([mean, grip], -1)[0].numpy())


def evaluate_actor(actor: Any, trials: int, seed: int = 10_000, split: str = "test",
                   max_episode_steps: int = MAX_EPISODE_STEPS) -> dict:
    """``actor.act(obs)`` alone on the trials ``python -m dual_actor.eval`` gives our policies (same env seeds)."""
    from dual_actor.eval.protocol import TrialEnv, eval_result, expert_episode, run_trials, trial_seeds

    seeds = trial_seeds(split, trials, seed)
    with TrialEnv(lambda env_seed: GymHilTaskEnv(seed=env_seed, max_episode_steps=max_episode_steps)) as envs:
        per_task = {TASK: run_trials(TASK, seeds, envs, lambda _t, env, obs, _s: expert_episode(actor, env, obs)[0])}
    return eval_result(per_task, online_steps=0, intervention_rate=0.0, split=split, seeds=seeds)


# ------------------------------------------------------------------------------------------ ours

def run_ours(arm: str, out: Path, demos: Path, env_steps: int, seed: int, trials: int, extra: list[str]) -> dict:
    """``python -m dual_actor.fit env=gym_hil`` on the same demos, budget and trials."""
    name = f"{arm}-s{seed}"
    cmd = [sys.executable, "-m", "dual_actor.fit", "env=gym_hil", f"seed={seed}", f"run_root={out}", f"run_name={name}",
           f"data.path={demos}", f"online.env_steps={env_steps}", f"eval.trials={trials}", "warmup.share=true",
           "trainer.progress_bar=false", *(["algo.refine_enabled=false"] if arm == "single" else []), *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    (out / f"{name}.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    run = out / name
    ev = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    warm = run / "eval_warmup.json"  # the warm-up policy on the same trials: where the online phase started
    return {"eval": ev, "eval_warmup": json.loads(warm.read_text()) if warm.exists() else None,
            "wall_s": time.perf_counter() - t0, "steps": int(ev.get("online_steps", env_steps)),
            "takeover_steps": int(ev.get("takeover_steps", 0)), "spoken_steps": int(ev.get("spoken_steps", 0)),
            "learner_updates": summary.get("online_updates"), "warmup_updates": summary["updates"] - summary["online_updates"],
            "learner_wall_s": summary.get("online_seconds"), "warmup_wall_s": summary.get("warmup_seconds"),
            "episodes_log": our_episodes(run), "curve": our_curve(run)}


def our_curve(run: Path) -> list[dict]:
    """The run's learning curve (the policy alone on dev trials, ``learning_curve.json``): env steps, success."""
    path = run / "learning_curve.json"
    points = json.loads(path.read_text())["points"] if path.exists() else []
    return [{"env_steps": int(p["online_steps"]), "success": float(p["average_success_rate"]), "trials": int(p["trials"]),
             "split": p.get("split", "dev")} for p in points]


def our_episodes(run: Path) -> list[dict]:
    """The online phase's episodes from the run's teleop log: env steps so far, length, success, steps taken over
    (spoken steps are not take-overs) and seconds since the online phase began (each episode's file is written as
    it ends, its session's ``session.json`` as the phase begins: acting, the learner's updates and the learning
    curve's evaluations; a resumed run's sessions follow one another)."""
    from data_tools.teleop_reader import read_session

    out, steps, before = [], 0, 0.0
    for session in sorted((run / "teleop").iterdir()):
        if not (session / "session.json").exists():
            continue
        t0, last = (session / "session.json").stat().st_mtime, 0.0
        for ep in read_session(session).episodes(load_images=False):
            steps += len(ep)
            last = ep.steps_path.stat().st_mtime - t0
            out.append({"env_steps": steps, "length": len(ep), "success": bool(ep.rewards.sum() > 0),
                        "takeover_steps": int(np.sum(ep.intervention)), "wall_s": before + last})
        before += last
    return out


# ------------------------------------------------------------------------------------------ the sweep

def curve(episodes: list[dict], every: float, budget: float, key: str = "env_steps") -> list[tuple[float, float | None]]:
    """Training episodes' success rate per window of ``every`` units of ``key`` (``env_steps``; ``wall_s``: seconds of
    the online phase) up to ``budget`` (None: no episode ended in the window)."""
    pts = []
    for k in range(1, int(np.ceil(budget / every)) + 1):
        hi = k * every
        xs = [e["success"] for e in episodes if hi - every < e[key] <= hi]
        pts.append((hi, float(np.mean(xs)) if xs else None))
    return pts


def takeover_curve(episodes: list[dict], every: float, budget: float) -> list[tuple[float, float | None]]:
    """Steps the operator took over, % of the steps of the episodes that ended in each window of ``every``
    environment steps (None: no episode ended there, or the log has no per-episode take-overs)."""
    pts = []
    for k in range(1, int(np.ceil(budget / every)) + 1):
        hi = k * every
        xs = [e for e in episodes if hi - every < e["env_steps"] <= hi]
        ok = xs and all("takeover_steps" in e for e in xs)
        pts.append((hi, 100.0 * sum(e["takeover_steps"] for e in xs) / sum(e["length"] for e in xs) if ok else None))
    return pts


def load_results(out: Path) -> dict[str, dict]:
    """``{<arm>-s<seed>: result}`` of every ``OUT/<arm>-s<seed>/result.json`` (a sweep's folder or its kept records)."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(out).glob("*-s*/result.json"))}


def _by_arm(results: dict[str, dict]) -> dict[str, list[dict]]:
    arms: dict[str, list] = {}
    for name, r in sorted(results.items(), key=lambda kv: (ARMS.index(kv[1]["arm"]) if kv[1]["arm"] in ARMS else 99,
                                                            kv[1]["seed"])):
        arms.setdefault(r["arm"], []).append(r)
    return arms


def summary_md(results: dict[str, dict], budget: int, every: int) -> str:
    """The sweep's tables (docs/results.md "gym-hil" holds this text for the kept records, checked by a test): per arm
    over seeds, success on the held-out test trials (the warm-up's too, for ours), operator effort (steps taken
    over / spoken, % of the online steps), the learner's updates and wall-clock; paired differences by seed; the
    training episodes' success per ``every`` environment steps."""
    from dual_actor.analysis.tables import spread as _spread
    from dual_actor.eval.stats import paired_difference

    arms = _by_arm(results)
    lines = ["| arm (seeds) | test success | per seed | warm-up (same trials) | taken over % | spoken % "
             "| learner updates, online | updates per env step | online s |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, rs in arms.items():
        succ = [r["eval"]["average_success_rate"] for r in rs]
        warm = [r["eval_warmup"]["average_success_rate"] for r in rs if r.get("eval_warmup")]
        pct = lambda k: _spread([100.0 * r.get(k, 0) / max(r["steps"], 1) for r in rs], digits=1)  # noqa: E731
        upd = [r.get("learner_updates") or 0 for r in rs]
        online_s = [r["episodes_log"][-1]["wall_s"] if r["episodes_log"] and "wall_s" in r["episodes_log"][-1]
                    else r.get("learner_wall_s") or r["wall_s"] for r in rs]
        lines.append(f"| {arm} ({len(rs)}) | {_spread(succ)} | {' / '.join(f'{x:.2f}' for x in succ)} "
                     f"| {_spread(warm) if len(warm) == len(rs) else '-'} | {pct('takeover_steps')} "
                     f"| {pct('spoken_steps') if arm != 'lerobot_sac' else '- (no language channel)'} "
                     f"| {np.mean(upd):.0f} | {np.mean([u / max(r['steps'], 1) for u, r in zip(upd, rs)]):.2f} "
                     f"| {np.mean(online_s):.0f} |")
    pairs = [(a, b) for a, b in (("dual", "lerobot_sac"), ("single", "lerobot_sac"), ("dual", "single"))
             if a in arms and b in arms]
    if pairs:
        lines += ["", "Paired by seed (the same training episodes, operator seed and test trials), test success:", "",
                  "| | seeds | mean difference (points) | 95% bootstrap | wins / ties / losses | sign test p |",
                  "|---|---|---|---|---|---|"]
        for a, b in pairs:
            sa = {r["seed"]: r["eval"]["average_success_rate"] for r in arms[a]}
            sb = {r["seed"]: r["eval"]["average_success_rate"] for r in arms[b]}
            seeds = sorted(set(sa) & set(sb))
            d = paired_difference([sa[k] for k in seeds], [sb[k] for k in seeds])
            lines.append(f"| {a} - {b} | {', '.join(map(str, seeds))} | {100 * d['mean']:+.1f} "
                         f"| [{100 * d['interval'][0]:+.1f}, {100 * d['interval'][1]:+.1f}] "
                         f"| {d['wins']} / {d['ties']} / {d['losses']} | {d['sign_p']:.2f} |")
    lines += ["", f"Training episodes' success per {every} environment steps (mean over seeds; the operator's take-overs "
              "and, for ours, spoken commands included):", "",
              "| env steps | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    lines += _window_rows(arms, every, budget, lambda log: curve(log, every, budget), "{:.2f}")
    runs = [(f"{r['arm']}-s{r['seed']}", r["curve"]) for rs in arms.values() for r in rs if r.get("curve")]
    if runs:
        lines += ["", "The policy alone on dev trials as it learned (ours: the learning curve at 0 = the warm-up; "
                  "LeRobot: its snapshots), env steps: success (trials):", ""]
        lines += [f"- {name}: " + ", ".join(f"{p['env_steps']}: {p['success']:.2f} ({p['trials']})" for p in c)
                  for name, c in runs]
    if any("takeover_steps" in e for rs in arms.values() for r in rs for e in r["episodes_log"]):
        lines += ["", f"Steps the operator took over, % of the training episodes' steps per {every} environment steps "
                  "(mean over seeds; -: not logged per episode):", "",
                  "| env steps | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        lines += _window_rows(arms, every, budget, lambda log: takeover_curve(log, every, budget), "{:.0f}")
    return "\n".join(lines) + "\n"


def _window_rows(arms: dict[str, list[dict]], every: int, budget: int, per_run: Any, fmt: str) -> list[str]:
    rows = []
    for i, (hi, _) in enumerate(curve([], every, budget)):
        cells = []
        for rs in arms.values():
            v = [c[i][1] for r in rs for c in [per_run(r["episodes_log"])] if c[i][1] is not None]
            cells.append(fmt.format(np.mean(v)) if v else "-")
        rows.append(f"| {hi:.0f} | " + " | ".join(cells) + " |")
    return rows


def figure(results: dict[str, dict], budget: int, every: int, path: Path, windows: int = 10) -> None:
    """The policy alone on dev trials as it learned (where the runs have curves), the training episodes' success vs
    environment steps and vs seconds of the online phase, and the steps taken over vs environment steps (each arm:
    mean over seeds, the band min to max; windows of ``every`` steps and of 1/``windows`` of the longest run's
    seconds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = _by_arm(results)
    longest = max((e["wall_s"] for rs in arms.values() for r in rs for e in r["episodes_log"][-1:] if "wall_s" in e),
                  default=0.0)
    panels = []
    if any(r.get("curve") for rs in arms.values() for r in rs):
        panels.append((None, "environment steps", "the policy alone: success on dev trials"))
    panels.append((lambda log: curve(log, every, budget), "environment steps", "training episodes' success"))
    if longest:
        panels.append((lambda log: curve(log, longest / windows, longest, "wall_s"),
                       "seconds of the online phase (acting + learning)", "training episodes' success"))
    if any("takeover_steps" in e for rs in arms.values() for r in rs for e in r["episodes_log"]):
        panels.append((lambda log: takeover_curve(log, every, budget), "environment steps", "steps taken over (%)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (per_run, xlabel, ylabel) in zip(axes[0], panels):
        for arm, rs in arms.items():
            if per_run is None:  # learning curves / snapshots: the k-th points of the seeds together, at their mean x
                cs = [r["curve"] for r in rs if r.get("curve")]
                n = min((len(c) for c in cs), default=0)
                pts = [[(float(np.mean([c[k]["env_steps"] for c in cs])), c[k]["success"]) for k in range(n)] for c in cs]
                if not n:  # no curve: the final policy on the test trials, one mark per seed
                    ax.plot([r["env_steps"] for r in rs], [r["eval"]["average_success_rate"] for r in rs], "x",
                            color=f"C{list(arms).index(arm)}", label=f"{arm}: final, test trials")
                    continue
            else:
                pts = [per_run(r["episodes_log"]) for r in rs]
            ys = np.array([[np.nan if v is None else v for _, v in c] for c in pts], dtype=np.float64)
            ok = ~np.all(np.isnan(ys), axis=0)
            if not ok.any():
                continue
            x, color = np.array([p[0] for p in pts[0]])[ok], f"C{list(arms).index(arm)}"  # an arm's colour in every panel
            ax.plot(x, np.nanmean(ys[:, ok], axis=0), marker="o", ms=3, color=color, label=f"{arm} ({len(rs)} seeds)")
            ax.fill_between(x, np.nanmin(ys[:, ok], axis=0), np.nanmax(ys[:, ok], axis=0), color=color, alpha=0.15)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if "success" in ylabel:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("gym-hil PandaPickCube, state: ours beside LeRobot 0.4.4's SAC", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the sweep's folder")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--env-steps", type=int, default=5000, help="environment steps per run (policy + operator)")
    ap.add_argument("--demos", type=int, default=20, help="scripted-expert demos")
    ap.add_argument("--trials", type=int, default=25, help="held-out evaluation trials (split test)")
    ap.add_argument("--fps", type=int, default=10, help="LeRobot's actor pace (0: unpaced)")
    ap.add_argument("--batch-size", type=int, default=256, help="LeRobot's batch (half online, half demos)")
    ap.add_argument("--before-learning", type=int, default=100, help="LeRobot's online steps before it learns")
    ap.add_argument("--curve-every", type=int, default=500, help="environment steps per curve window")
    ap.add_argument("--fit", nargs="*", default=[], help="extra overrides for our runs (e.g. the tiny sizes)")
    ap.add_argument("--figure", type=Path, default=None, help="the curves' PNG (default: OUT/curves.png)")
    ap.add_argument("--snapshot-every", type=int, default=0,
                    help="LeRobot: save its policy every N env steps and evaluate each on --curve-trials dev trials "
                         "(the policy alone vs env steps, as our runs' learning curve; 0: final policy only)")
    ap.add_argument("--curve-trials", type=int, default=10, help="dev trials per snapshot (ours: eval.curve_trials)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    demos = make_demos(args.out / "data" / f"demos{args.demos}.hdf5", args.demos)
    for seed in args.seeds:
        for arm in args.arms:
            name = f"{arm}-s{seed}"
            path = args.out / name / "result.json"
            if path.exists():
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
            if arm == "lerobot_sac":
                lr_demos = write_lerobot_demos(demos, args.out / "data" / f"demos{args.demos}_lerobot")
                r = run_lerobot_sac(args.out / name, lr_demos, args.env_steps, seed, args.fps, args.batch_size,
                                    args.before_learning, args.snapshot_every)
                r["eval"] = evaluate_actor(SACActor(args.out / name / "final"), args.trials)
                r["curve"] = [{"env_steps": int(snap.name), "trials": args.curve_trials, "split": "dev",
                               "success": evaluate_actor(SACActor(snap), args.curve_trials, split="dev")
                               ["average_success_rate"]}
                              for snap in sorted((args.out / name / "snapshots").glob("*"))]
            else:
                r = run_ours(arm, args.out, demos, args.env_steps, seed, args.trials, args.fit)
            r.update(arm=arm, seed=seed, env_steps=args.env_steps, demos=args.demos)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(r, indent=1))
            tmp.replace(path)  # whole or absent
            print(f"  {name}: test success {r['eval']['average_success_rate']:.2f}, take-overs "
                  f"{r['takeover_steps']}/{r['steps']}, learner updates {r.get('learner_updates')}, "
                  f"{r['wall_s']:.0f} s", flush=True)
    results = load_results(args.out)  # every run in the folder, earlier invocations' arms and seeds included
    md = summary_md(results, args.env_steps, args.curve_every)
    (args.out / "summary.md").write_text(md)
    figure(results, args.env_steps, args.curve_every, args.figure or args.out / "curves.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
