"""Ours (dual actor, single actor) beside LeRobot 0.4.4's SAC (its HIL-SERL recipe) on gym-hil's PandaPickCube,
state mode: the same world, the same simulated operator, the same demos, the same budget of environment steps and
the same held-out evaluation trials (docs/gym-hil.md, issue 29).

    python benchmarks/gym_hil_vs_lerobot.py --out /work/gymhil --seeds 0 1 2 --env-steps 5000

Per arm and seed it writes ``OUT/<arm>-s<seed>/result.json`` as soon as that run ends (a killed sweep keeps what
finished; an existing result is not run again), then ``OUT/summary.md``: success on the test trials, take-over
rate, learner updates and wall-clock, and the training episodes' success vs environment steps.

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
        self.episodes: list[dict] = []  # per ended episode: env steps so far, its length, success
        self._obs = None
        self._len = 0

    @property
    def unwrapped(self):
        return self

    def reset(self, seed=None, options=None):
        self._obs, self._len = self.env.reset(), 0
        if self.operator is not None:
            self.operator.reset(TASK)
        return lerobot_obs(self._obs), {}

    def step(self, action):
        proposed = to_lerobot_action(to_our_action(np.asarray(action, dtype=np.float32).reshape(-1)[:4]))
        take = self.operator.observe(self._obs, to_our_action(proposed), {}) if self.operator is not None else None
        intervening = bool(take is not None and take.intervening)
        executed = to_lerobot_action(take.action) if intervening else proposed
        self._obs, reward, terminated, truncated, _ = self.env.step(to_our_action(executed))
        self._len += 1
        self.counts["steps"] += 1
        self.counts["takeover_steps"] += int(intervening)
        if terminated or truncated:
            self.counts["episodes"] += 1
            self.counts["successes"] += int(terminated)
            self.episodes.append({"env_steps": self.counts["steps"], "length": self._len, "success": bool(terminated)})
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


def _learner_main(cfg, ev, pq, tq, iq, res_q) -> None:
    _quiet()
    import lerobot.rl.learner as L

    logging.getLogger().setLevel(logging.WARNING)
    box: dict[str, Any] = {}
    real = L.make_policy

    def keep_policy(**kw):
        box["policy"] = real(**kw)
        return box["policy"]

    L.make_policy = keep_policy

    class Recorder:  # stands in for LeRobot's WandBLogger
        def __init__(self):
            self.steps = 0

        def log_dict(self, d, mode="train", custom_step_key=None):  # noqa: ARG002
            self.steps = max(self.steps, int(d.get("Optimization step", 0) or 0))

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
                    before_learning: int) -> dict:
    """LeRobot's actor and learner, two processes, until the actor has spent ``env_steps``."""
    import torch.multiprocessing as mp

    cfg = sac_config(out, demos_lerobot, env_steps, seed, fps, batch_size, before_learning)
    ctx = mp.get_context("spawn")
    pq, tq, iq, ra, rl = (ctx.Queue() for _ in range(5))
    ev = ctx.Event()
    learner = ctx.Process(target=_learner_main, args=(cfg, ev, pq, tq, iq, rl))
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
    return {"eval": ev, "wall_s": time.perf_counter() - t0, "steps": int(ev.get("online_steps", env_steps)),
            "takeover_steps": int(ev.get("takeover_steps", 0)), "spoken_steps": int(ev.get("spoken_steps", 0)),
            "learner_updates": summary.get("online_updates"), "warmup_updates": summary["updates"] - summary["online_updates"],
            "learner_wall_s": summary.get("online_seconds"), "warmup_wall_s": summary.get("warmup_seconds"),
            "episodes_log": our_episodes(run)}


def our_episodes(run: Path) -> list[dict]:
    """The online phase's episodes from the run's teleop log: env steps so far, length, success."""
    from data_tools.teleop_reader import read_session

    out, steps = [], 0
    for session in sorted((run / "teleop").iterdir()):
        if not (session / "session.json").exists():
            continue
        for ep in read_session(session).episodes(load_images=False):
            steps += len(ep)
            out.append({"env_steps": steps, "length": len(ep), "success": bool(ep.rewards.sum() > 0)})
    return out


# ------------------------------------------------------------------------------------------ the sweep

def curve(episodes: list[dict], every: int, budget: int) -> list[tuple[int, float | None]]:
    """Training episodes' success rate per window of ``every`` environment steps (None: no episode ended in it)."""
    pts = []
    for hi in range(every, budget + every, every):
        xs = [e["success"] for e in episodes if hi - every < e["env_steps"] <= hi]
        pts.append((hi, float(np.mean(xs)) if xs else None))
    return pts


def summary_md(results: dict[str, dict], budget: int, every: int) -> str:
    arms: dict[str, list] = {}
    for name, r in sorted(results.items()):
        arms.setdefault(name.rsplit("-s", 1)[0], []).append(r)
    lines = ["| arm | seeds | test success (per seed) | mean | take-over % of steps | learner updates | wall-clock s |",
             "|---|---|---|---|---|---|---|"]
    for arm, rs in arms.items():
        succ = [r["eval"]["average_success_rate"] for r in rs]
        take = [100.0 * r["takeover_steps"] / max(r["steps"], 1) for r in rs]
        lines.append(f"| {arm} | {len(rs)} | {' / '.join(f'{s:.2f}' for s in succ)} | {np.mean(succ):.2f} "
                     f"| {np.mean(take):.1f} | {np.mean([r.get('learner_updates') or 0 for r in rs]):.0f} "
                     f"| {np.mean([r['wall_s'] for r in rs]):.0f} |")
    lines += ["", f"Training episodes' success per {every} environment steps (mean over seeds):", "",
              "| env steps | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for i, hi in enumerate(range(every, budget + every, every)):
        cells = []
        for rs in arms.values():
            v = [c[i][1] for r in rs for c in [curve(r["episodes_log"], every, budget)] if c[i][1] is not None]
            cells.append(f"{np.mean(v):.2f}" if v else "-")
        lines.append(f"| {hi} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


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
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    demos = make_demos(args.out / "data" / f"demos{args.demos}.hdf5", args.demos)
    results = {}
    for seed in args.seeds:
        for arm in args.arms:
            name = f"{arm}-s{seed}"
            path = args.out / name / "result.json"
            if path.exists():
                results[name] = json.loads(path.read_text())
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
            if arm == "lerobot_sac":
                lr_demos = write_lerobot_demos(demos, args.out / "data" / f"demos{args.demos}_lerobot")
                r = run_lerobot_sac(args.out / name, lr_demos, args.env_steps, seed, args.fps, args.batch_size,
                                    args.before_learning)
                r["eval"] = evaluate_actor(SACActor(args.out / name / "final"), args.trials)
            else:
                r = run_ours(arm, args.out, demos, args.env_steps, seed, args.trials, args.fit)
            r.update(arm=arm, seed=seed, env_steps=args.env_steps, demos=args.demos)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(r, indent=1))
            results[name] = r
            print(f"  {name}: test success {r['eval']['average_success_rate']:.2f}, take-overs "
                  f"{r['takeover_steps']}/{r['steps']}, learner updates {r.get('learner_updates')}, "
                  f"{r['wall_s']:.0f} s", flush=True)
    md = summary_md(results, args.env_steps, args.curve_every)
    (args.out / "summary.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
