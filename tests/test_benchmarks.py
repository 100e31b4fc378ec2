"""Every script in benchmarks/ runs at a tiny size, as a user runs it (a subprocess with its own options), and
writes the figures it promises: the keys are there and the numbers finite and positive. Speed is never asserted:
a figure belongs in docs/benchmarks.md with its machine and date, not in a test (STYLE.md)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
       "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "EGL_PLATFORM": os.environ.get("EGL_PLATFORM", "surfaceless")}
# the learner benchmarks' toy sizes: every arm in its own process, as a real run does, on a toy batch
LEARNER_TINY = ["--updates", "2", "--warmup", "1", "--rounds", "1", "--gemm-size", "128", "--lerobot-no-compile"]


def run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{script} exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def figure(d: dict, path: str) -> float:
    """The number at ``a.b.c`` in ``d`` (a number in the path indexes a list): present, finite and positive."""
    value = d
    for key in path.split("."):
        if isinstance(value, list):
            assert key.isdigit() and int(key) < len(value), f"{path}: no item {key} in a list of {len(value)}"
            value = value[int(key)]
        else:
            assert isinstance(value, dict) and key in value, f"{path}: no {key!r} in {value!r:.300}"
            value = value[key]
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{path} = {value!r}"
    assert math.isfinite(value) and value > 0, f"{path} = {value!r}"
    return value


def figures(d: dict, *paths: str) -> None:
    for p in paths:
        figure(d, p)


COVERED = {"acting_latency.py", "bench_vla_latency.py", "convert_throughput.py", "gym_hil_vs_lerobot.py",
           "image_learner_memory.py", "learner_update.py",
           "lerobot_sac_anchor.py", "multi_robot.py", "smolvla_embedding.py", "gpu_session.sh"}


def test_every_benchmark_script_has_a_test_here():
    """A new script in benchmarks/ gets its tiny run in this file (the rule: every entry point runs in the tests)."""
    scripts = {p.name for p in BENCH.iterdir() if p.suffix in (".py", ".sh")}
    assert scripts == COVERED, f"not run here: {sorted(scripts - COVERED)}; gone: {sorted(COVERED - scripts)}"


def test_acting_latency(tmp_path):
    out = tmp_path / "acting.json"
    run("acting_latency.py", "--steps", "20", "--hz-steps", "5", "--max-episode-steps", "10", "--json", str(out))
    res = json.loads(out.read_text())
    for k in ("primary", "refinement"):
        figures(res, f"{k}.p50_ms", f"{k}.p99_ms", f"{k}.mean_ms")
    figures(res, "loop_fast.rate_hz", "loop_10hz.rate_hz")
    assert res["loop_fast"]["steps"] >= 20 and res["loop_10hz"]["steps"] >= 5 and res["loop_10hz"]["overruns"] >= 0


def test_convert_throughput(tmp_path):
    out = tmp_path / "convert.json"
    r = run("convert_throughput.py", "--episodes", "2", "--steps", "4", "--lerobot-episodes", "1", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["frames"] == 8 and res["lerobot"]["frames"] == 4
    for k in ("convert", "filter", "merge"):
        figures(res, f"{k}.frames_per_s", f"{k}.input_MB_per_s", f"{k}.output_bytes", f"ratio_over_lerobot.{k}")
    figures(res, "lerobot.frames_per_s", "lerobot.input_MB_per_s", "writer.ms_per_step", "input_bytes")
    assert "ratio to the LeRobotDataset writer" in r.stdout


def test_image_learner_memory(tmp_path):
    out = tmp_path / "memory.json"
    run("image_learner_memory.py", "--cameras", "1", "--image-size", "32", "--batch-size", "6", "--updates", "2",
        "--rounds", "1", "--json", str(out))
    res = json.loads(out.read_text())
    assert res["current"]["trunks"] == 1  # one frozen trunk per run
    figures(res, "current.state_dict_mib", "current.optimizer_state_mib", "current.s_per_update")
    assert res["current"]["peak_mem_growth_mib"] >= 0


def _learner_figures(res: dict, lerobot: bool = True) -> None:
    arms = ("dual_actor_warmup", "dual_actor_online") + (("lerobot_sac",) if lerobot else ())
    figures(res, *arms, "gemm_peak_fp32_gflops", "gemm_peak_bf16_gflops")
    if lerobot:
        figures(res, "dual_actor_warmup_x_lerobot", "dual_actor_online_x_lerobot")
    assert sorted(res["rates"]) == sorted(arms) and all(len(res["rates"][a]) == 1 for a in arms)


@pytest.mark.slow
def test_learner_update_state(tmp_path):
    out = tmp_path / "state.json"
    r = run("learner_update.py", *LEARNER_TINY, "--batch-size", "12", "--breakdown", "--breakdown-updates", "2",
            "--json", str(out))
    res = json.loads(out.read_text())
    _learner_figures(res)
    assert res["image_encoder"] == "state" and res["batch_size"] == 12
    for ph in ("warmup", "online"):
        b = f"breakdown_{ph}"
        figures(res, f"{b}.profiled_ms_per_update", f"{b}.gflop_per_update", f"{b}.matmul_gflops",
                f"{b}.arithmetic_bound_updates_per_s", f"{b}.ms_per_update.matmul")
    assert "| state (39-d) |" in r.stdout  # the markdown row of docs/benchmarks.md


@pytest.mark.slow
def test_learner_update_one_camera(tmp_path):
    """Images through a trained ResNet-10 on both sides; the arms in one process (the state test above runs each
    in a fresh one, as the figures are measured)."""
    out = tmp_path / "camera.json"
    r = run("learner_update.py", *LEARNER_TINY, "--batch-size", "6", "--cameras", "1", "--image-size", "32",
            "--image-encoder", "resnet10", "--same-process", "--json", str(out))
    res = json.loads(out.read_text())
    _learner_figures(res)
    assert res["cameras"] == 1 and res["image_size"] == 32 and res["lerobot_vision_encoder"] == "resnet10"
    assert "resnet10 trained, 1 x 32x32" in r.stdout


def test_learner_update_pixel_bench(tmp_path):
    """--pixel-bench: the pixel bench's learner (proprio state, h of a frozen bench VLA with random weights,
    image_encoder=h) beside the state bench's, both phases, and their ratio; the arm fails if the learner ran the
    VLA (its embed raises)."""
    out = tmp_path / "pixel.json"
    run("learner_update.py", "--updates", "2", "--warmup", "1", "--rounds", "1", "--batch-size", "12", "--gemm-size",
        "128", "--skip-lerobot", "--same-process", "--pixel-bench", "--json", str(out))
    res = json.loads(out.read_text())
    figures(res, "pixel_warmup", "pixel_online", "pixel_warmup_x_state", "pixel_online_x_state")


def test_learner_update_count_work(tmp_path):
    """The arithmetic per update (FLOPs, trunk images per row), both sides, one camera through a frozen trunk."""
    out = tmp_path / "work.json"
    run("learner_update.py", "--count-work", "--cameras", "1", "--image-size", "32", "--image-encoder", "resnet10",
        "--freeze-encoder", "--json", str(out))
    res = json.loads(out.read_text())
    figures(res, "dual_actor_warmup_tflop", "dual_actor_online_tflop", "lerobot_sac_tflop")
    # one frozen trunk, run once per row and image: obs + next obs of the task rows (online also the
    # talk-and-tweak rows' obs), none of it recorded for autograd
    assert res["dual_actor_warmup_trunk_images_per_row"] == {"fwd": 2.0, "graph": 0.0}
    assert res["dual_actor_online_trunk_images_per_row"] == {"fwd": 3.0, "graph": 0.0}


def test_lerobot_sac_anchor(tmp_path):
    out = tmp_path / "anchor.json"
    run("lerobot_sac_anchor.py", "--updates", "2", "--warmup", "1", "--batch-size", "4", "--no-compile",
        "--num-cameras", "1", "--image-shape", "3", "32", "32", "--vision-encoder", "resnet10", "--json", str(out))
    res = json.loads(out.read_text())
    figures(res, "updates_per_s", "ms_per_update", "warmup_s", "params")
    assert res["cameras"] == 1 and res["vision_encoder"] == "resnet10" and res["use_torch_compile"] is False


@pytest.mark.slow
def test_multi_robot_both_runtimes(tmp_path):
    """One robot, in-process and on Ray, a tiny free-running budget on the smoke networks."""
    out = tmp_path / "multi.json"
    run("multi_robot.py", "--robots", "1", "--modes", "free", "--free-steps", "300", "--min-rollout", "5",
        "--warmup-updates", "2", "--fit-args", "experiment=smoke", "--json", str(out), timeout=600)
    res = json.loads(out.read_text())
    assert sorted(c["runtime"] for c in res["cells"]) == ["inprocess", "ray"]
    for i in range(2):
        figures(res, f"cells.{i}.env_steps_per_s", f"cells.{i}.updates_per_s", f"cells.{i}.online_seconds")
    (row,) = res["table"]
    figures(row, "inprocess_env_steps_per_s", "ray_env_steps_per_s", "ray_vs_inprocess_env_steps",
            "inprocess_updates_per_s", "ray_updates_per_s", "ray_vs_inprocess_updates")


def test_bench_vla_latency_tiny(tmp_path):
    """The bench VLA's acting step (h + primary action) and its own chunk, at experiment=smoke's sizes."""
    out = tmp_path / "vla.json"
    run("bench_vla_latency.py", "--smoke", "--iters", "3", "--warmup", "1", "--image-size", "64", "--json", str(out))
    res = json.loads(out.read_text())
    for k in ("embed_plus_primary_action", "vla_chunk_alone"):
        figures(res, f"{k}.p50_ms", f"{k}.p99_ms", f"{k}.mean_ms")
    assert res["h_dim"] == 64 and res["cameras"] == ["corner", "gripperPOV"]


def test_smolvla_embedding_tiny(tmp_path):
    """The tests' tiny SmolVLA through the same code path as the real-size one (no Hub, no network)."""
    out = tmp_path / "smolvla.json"
    run("smolvla_embedding.py", "--tiny", "--device", "cpu", "--iters", "2", "--warmup", "1", "--batch", "2",
        "--image-size", "48", "--json-out", str(out))
    res = json.loads(out.read_text())
    for k in ("embed_b1", "embed_plus_action_b1", "action_only_b1"):
        figures(res, f"{k}.p50_ms", f"{k}.p99_ms")
    figures(res, "embed_throughput_per_s", "embed_plus_action_throughput_per_s", "prefix_tokens", "params_total_M")
    assert res["embedding_dim"] == 64 and res["model"].startswith("tiny")


@pytest.mark.slow
def test_gpu_session_dry_run_on_the_cpu(tmp_path):
    """``DEVICE=cpu TINY=1 bash benchmarks/gpu_session.sh``: its three python steps at toy sizes (our side of the
    learner steps; the lerobot arm is the learner_update tests' above), each JSON written. No wheel set: the
    wheels come from PyPI (``--fetch-wheels``), and this venv has lerobot already."""
    out = tmp_path / "gpu_out"
    env = {**ENV, "DEVICE": "cpu", "TINY": "1", "OUT": str(out), "WHEELS": str(tmp_path / "no_wheels"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    r = subprocess.run(["bash", str(BENCH / "gpu_session.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    for name in ("learner_state.json", "learner_2cam.json"):
        _learner_figures(json.loads((out / name).read_text()), lerobot=False)
    assert json.loads((out / "learner_2cam.json").read_text())["cameras"] == 2
    figure(json.loads((out / "smolvla.json").read_text()), "embed_b1.p99_ms")
    assert (out / "env.txt").read_text().strip()


def _gym_hil_vs_lerobot():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gym_hil_vs_lerobot", BENCH / "gym_hil_vs_lerobot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gym_hil_vs_lerobot_layouts_are_gym_hils_own():
    """What LeRobot's actor sees of our gym-hil env is gym-hil's own observation (its ``_compute_observation``:
    agent_pos = qpos, qvel, gripper command, TCP; environment_state = the block), and actions map both ways."""
    import numpy as np

    from dual_actor.runtime.sim.gym_hil import GymHilTaskEnv, PickCubeExpert

    m = _gym_hil_vs_lerobot()
    with GymHilTaskEnv(seed=5) as env:
        obs, expert = env.reset(), PickCubeExpert()
        for _ in range(25):  # far enough for the gripper to close
            ours = m.lerobot_obs(obs)
            theirs = env._env._compute_observation()
            np.testing.assert_allclose(ours["agent_pos"], theirs["agent_pos"], rtol=1e-6, atol=1e-5)
            np.testing.assert_allclose(ours["environment_state"], theirs["environment_state"], rtol=1e-6, atol=1e-6)
            obs, *_ = env.step(expert.act(obs))
    assert m.to_lerobot_action(np.array([0.5, -2.0, 0.1, 0.93])).tolist() == [0.5, -1.0, np.float32(0.1), 2.0]
    assert m.to_lerobot_action(np.array([0, 0, 0, -1.0]))[3] == 0.0 and m.to_lerobot_action(np.zeros(4))[3] == 1.0
    assert m.to_our_action(np.array([0.2, 0.0, -0.3, 2.0])).tolist() == [np.float32(0.2), 0.0, np.float32(-0.3), 1.0]


def test_gym_hil_vs_lerobot_tiny(tmp_path):
    """Both learners at a tiny budget through the script as a user runs it: LeRobot's SAC (its actor and learner
    processes, the operator's take-overs through gym-hil's intervention keys, the demos as a LeRobotDataset) and
    ours; each writes its result on the same held-out trials, and the summary table lists both."""
    out = tmp_path / "sweep"
    run("gym_hil_vs_lerobot.py", "--out", str(out), "--arms", "dual", "lerobot_sac", "--seeds", "0", "--env-steps", "120",
        "--demos", "2", "--trials", "2", "--fps", "0", "--batch-size", "16", "--before-learning", "20",
        "--curve-every", "60", "--snapshot-every", "50", "--curve-trials", "2", "--fit", "experiment=smoke",
        "eval.curve_every_env_steps=120",
        "online.max_episode_steps=60", "eval.max_episode_steps=100", timeout=900)
    res = {arm: json.loads((out / f"{arm}-s0" / "result.json").read_text()) for arm in ("dual", "lerobot_sac")}
    assert res["dual"]["eval"]["seeds"] == res["lerobot_sac"]["eval"]["seeds"] == [10001, 10003]
    assert all(r["eval"]["split"] == "test" and r["eval"]["per_task"]["pick up the cube"]["trials"] == 2
               for r in res.values())
    sac = res["lerobot_sac"]
    assert sac["steps"] == 120 and 0 < sac["takeover_steps"] <= 120  # the operator took over, within the budget
    assert sum(e["length"] for e in sac["episodes_log"]) <= 120 and sac["learner_updates"] > 0
    assert (out / "lerobot_sac-s0" / "final" / "config.json").exists()
    info = json.loads((out / "data" / "demos2_lerobot" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["features"]["observation.state"]["shape"] == [18]
    assert res["dual"]["steps"] >= 120 and res["dual"]["episodes_log"]
    assert res["dual"]["eval_warmup"]["seeds"] == [10001, 10003]  # ours' warm-up on the same trials
    for r in res.values():  # seconds so far, growing with the env steps
        log = r["episodes_log"]
        assert all(a["wall_s"] <= b["wall_s"] and a["env_steps"] < b["env_steps"] for a, b in zip(log, log[1:]))
    table = (out / "summary.md").read_text()
    assert "| dual (1) |" in table and "| lerobot_sac (1) |" in table and "| dual - lerobot_sac | 0 |" in table
    assert (out / "curves.png").stat().st_size > 0
    # the policy alone as it learned: our learning curve (0 = the warm-up), LeRobot's snapshots, on dev trials
    assert res["dual"]["curve"][0]["env_steps"] == 0 and all(p["split"] == "dev" for p in res["dual"]["curve"])
    snaps = sorted(p.name for p in (out / "lerobot_sac-s0" / "snapshots").iterdir())
    assert snaps and [p["env_steps"] for p in sac["curve"]] == [int(n) for n in snaps]
    assert all(p["env_steps"] >= 50 and p["trials"] == 2 and 0 <= p["success"] <= 1 for p in sac["curve"])
    assert "- lerobot_sac-s0: " in table


@pytest.mark.parametrize("name, arms, seeds, every", [("gym_hil_state", {"dual", "single", "lerobot_sac"}, 3, 500),
                                                      ("gym_hil_long", {"lerobot_sac"}, 1, 2500)])
def test_gym_hil_results_md_block_is_generated_from_the_records(name, arms, seeds, every):
    """docs/results.md's gym-hil tables are ``summary_md`` of the kept records (docs/runs/<name>: each run's
    result.json as the script wrote it), pasted verbatim between their marks: nothing typed by hand. The comparison
    (gym_hil_state) has >= 3 seeds per arm, one budget and one set of test trials for every arm."""
    m = _gym_hil_vs_lerobot()
    results = m.load_results(ROOT / "docs" / "runs" / name)
    assert {r["arm"] for r in results.values()} == arms
    assert all(sum(r["arm"] == arm for r in results.values()) >= seeds for arm in arms)
    budget = {r["env_steps"] for r in results.values()}
    assert len(budget) == 1  # the same budget for every arm
    trials = {tuple(r["eval"]["seeds"]) for r in results.values()}
    assert len(trials) == 1 and all(r["eval"]["split"] == "test" for r in results.values())  # the same test trials
    generated = m.summary_md(results, budget.pop(), every)
    text = (ROOT / "docs" / "results.md").read_text()
    mark = f"<!-- generated: benchmarks/gym_hil_vs_lerobot.py summary_md(docs/runs/{name}) -->\n"
    assert mark in text, f"docs/results.md has no block generated from docs/runs/{name}"
    block = text[text.index(mark) + len(mark):]
    assert block[: block.index("<!-- /generated -->")] == generated, f"docs/results.md's {name} block is stale"


def test_gym_hil_curve_windows():
    """Training episodes' success per window, by environment steps or seconds, hand-computed."""
    m = _gym_hil_vs_lerobot()
    log = [{"env_steps": 40, "wall_s": 3.0, "success": True}, {"env_steps": 90, "wall_s": 9.5, "success": False},
           {"env_steps": 100, "wall_s": 10.0, "success": True}, {"env_steps": 250, "wall_s": 31.0, "success": True}]
    assert m.curve(log, 100, 300) == [(100, 2 / 3), (200, None), (300, 1.0)]
    assert m.curve(log, 10.0, 31.0, key="wall_s") == [(10.0, 2 / 3), (20.0, None), (30.0, None), (40.0, 1.0)]
