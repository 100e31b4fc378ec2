"""The real entry point as a subprocess: smoke run, resume, --help, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dual_actor.policy import DualActorPolicy
from factories import TASKS, write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]


def fit(*overrides, cwd=ROOT, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "dual_actor.fit", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


SYN = ["online.env_steps=0", "eval.trials=0", "env.obs_dim=6", "env.proprio_dim=2", "algo.batch_size=24", "algo.actor_hidden=[32]",
       "algo.refine_hidden=[32]", "algo.critic_hidden=[32]", "trainer.progress_bar=false", "trainer.log_every=2"]


def test_help_lists_groups():
    r = fit("--help")
    assert r.returncode == 0
    for group in ("env:", "backbone:", "algo:", "trainer:", "experiment:"):
        assert group in r.stdout, r.stdout


@pytest.mark.slow
def test_smoke_default_bench(tmp_path):
    """experiment=smoke on the built-in bench: demos -> warm-up -> online with the simulated
    operator -> evaluation (eval.json, learning curve), checkpoint + policy."""
    r = fit("experiment=smoke", f"run_root={tmp_path}", "run_name=smoke", "eval.with_commands=true")
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "smoke"
    for name in ("last.ckpt", "config.yaml", "eval.json", "learning_curve.json", "learning_curve.png"):
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["phase"] == "online" and summary["online_env_steps"] >= 400 and summary["updates"] > 30
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # the code that ran: this checkout's commit (a clean clone in CI)
        assert summary["code"]["commit"] == head.stdout.strip() and isinstance(summary["code"]["dirty"], bool)
    assert summary["code"]["version"]
    ev = json.loads((run / "eval.json").read_text())
    spoken = json.loads((run / "eval_commands.json").read_text())  # the same trials with a speaking operator
    assert set(spoken) == set(ev) and list(spoken["per_task"]) == TASKS and "with spoken refinement commands" in r.stdout
    assert set(ev) == {"per_task", "average_success_rate", "online_steps", "intervention_rate", "split", "seeds",
                       "takeover_steps", "spoken_steps", "effort_steps", "effort_per_task"}
    assert list(ev["per_task"]) == TASKS and ev["online_steps"] == summary["online_env_steps"]
    assert ev["split"] == "test" and ev["seeds"] == [10_001, 10_003]  # the final evaluation: test trials
    for res in ev["per_task"].values():
        assert set(res) == {"success_rate", "mean_episode_length", "trials", "successes", "wilson_95"}
        assert res["trials"] == 2 and 0.0 <= res["success_rate"] <= 1.0
    assert 0.0 < ev["intervention_rate"] < 1.0  # the simulated operator stepped in on a 30-update policy
    # the operator's effort: steps taken over (the intervention rate's numerator), spoken, and their sum, per task
    assert ev["takeover_steps"] == round(ev["intervention_rate"] * ev["online_steps"]) > 0
    assert ev["effort_steps"] == ev["takeover_steps"] + ev["spoken_steps"]
    for key in ("takeover_steps", "spoken_steps", "effort_steps", "env_steps"):
        assert sum(t[key] for t in ev["effort_per_task"].values()) == summary["operator_effort"][key]
    assert summary["operator_effort"]["effort_steps"] == ev["effort_steps"]
    assert summary["operator_effort"]["env_steps"] == ev["online_steps"]
    assert "average" in r.stdout and "intervention rate" in r.stdout and "operator effort:" in r.stdout
    # the warm-up policy on the final evaluation's very trials (eval_warmup.json) is the table's warm-up column;
    # every learning-curve point, the warm-up's included, is on dev trials (disjoint from test's)
    start = json.loads((run / "eval_warmup.json").read_text())
    assert start["split"] == "test" and start["seeds"] == ev["seeds"] and start["online_steps"] == 0
    points = json.loads((run / "learning_curve.json").read_text())["points"]
    assert points[0]["online_steps"] == 0 and points[-1]["online_steps"] == summary["online_env_steps"]
    assert all(p["split"] == "dev" and not set(p["seeds"]) & set(ev["seeds"]) for p in points)
    assert points[-1]["effort_steps"] == ev["effort_steps"] and points[0]["effort_steps"] == 0
    head = [line for line in r.stdout.splitlines() if line.startswith("task ")][-1]  # the last table: the final one
    assert head.split()[-3:] == ["warm-up", "(2)", "change"]
    avg = [line for line in r.stdout.splitlines() if line.startswith("average ")][-1]
    change = 100 * (ev["average_success_rate"] - start["average_success_rate"])
    assert avg.split()[-1] == f"{change:+.1f}"
    # a run you can watch: totals (updates in the warm-up, interaction steps online) and losses, no library tips
    bars = r.stdout.replace("\r", "\n")
    assert "warm-up: 100%" in bars and "30/30" in bars and "bc=" in bars and "critic=" in bars
    assert "online:" in bars and "/400 [" in bars and "updates=" in bars and "intv=" in bars
    for noise in ("0/?", "GPU available", "litlogger", "LeafSpec", "OpenGL_accelerate"):
        assert noise not in r.stdout + r.stderr, noise
    policy = DualActorPolicy.from_pretrained(run / "policy")
    assert policy.tasks == TASKS and not any("critic" in k for k in policy.state_dict())
    ea = EventAccumulator(str(run / "tb")).Reload()
    tags = ea.Tags()["scalars"]
    assert "hp_metric" not in tags and "eval/final_average_success" in tags and "eval/online_steps" in tags
    assert ea.Tags()["images"] == ["eval/learning_curve"]
    # one x-axis (learner updates) for losses and evaluations alike: the final evaluation has its own tags, one
    # value at the last update; the curve's points one value per step
    assert [e.step for e in ea.Scalars("eval_final/average_success")] == [summary["updates"]]
    curve_steps = [e.step for e in ea.Scalars("eval/average_success")]
    assert len(curve_steps) == len(set(curve_steps)) == len(points)
    assert [e.step for e in ea.Scalars("eval_warmup/average_success")] == [curve_steps[0]]
    assert "effort/effort_steps" in tags
    # the episodes the teleop log holds are the ones the buffers hold (in-process: nothing in flight)
    eps = summary["online_episodes"]
    assert eps["teleop_log"]["episodes"] == eps["ingested"]["episodes"] > 0
    assert eps["teleop_log"]["steps"] == eps["ingested"]["steps"] == summary["online_env_steps"]
    assert eps["logged_not_ingested"] == {"episodes": 0, "steps": 0} and "why" not in eps
    last = r.stdout.strip().splitlines()[-1]  # the last line names only what exists
    named = last.split("(", 1)[1].split(";")[0].split(", ")
    assert "eval.json" in named and all((run / n).exists() for n in named), last
    for tag in ("loss/actor", "loss/actor_bc", "loss/critic_place_the_bolt", "q/pick_up_the_bolt",
                "eps/assemble_the_bolt", "grad_norm/actor", "loss/calql_reg_place_the_bolt",
                "eval/average_success", "eval/success_place_the_bolt", "authority/latent_x",
                "authority/command_move_left_positive", "loss/actor_distill"):
        assert tag in tags, tags
    auth = json.loads((run / "authority.json").read_text())  # warm-up, curve points, final
    assert auth[0]["online_steps"] == 0 and auth[-1]["online_steps"] == summary["online_env_steps"]
    assert summary["authority"] == auth[-1] and auth[0]["head"] == "anchored"
    assert len(ea.Scalars("loss/calql_reg_place_the_bolt")) == 6  # warm-up: every 5 of 30 updates
    # the online phase's teleop log converts with data_tools (the real data path)
    sessions = list((run / "teleop").iterdir())
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    c = subprocess.run([sys.executable, "-m", "data_tools", "convert", *map(str, sessions), "-o",
                        str(tmp_path / "online.hdf5"), "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert c.returncode == 0, c.stderr
    # ... with the commands the run trained on: at convert's default label, each task's intervened steps, in the
    # log's order, carry the commands of the talk-and-tweak buffer's rows in the run's last checkpoint, step for step
    from data_tools.hdf5_format import read_episodes
    from dual_actor.data.buffers import TaskBuffers

    converted, trained = {}, {}
    def ran(ep):  # a loop's episodes are "<actor>-<n>": the order it ran them
        actor, n = ep.episode_id.rsplit("-", 1)
        return actor, int(n)

    for ep in sorted(read_episodes(tmp_path / "online.hdf5"), key=ran):  # one loop per task
        converted.setdefault(str(ep.task), []).extend(c for c, i in zip(ep.refinement_command, ep.intervention) if i)
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "InteractionCallback" in k]
    bufs = TaskBuffers(state["buffers"]["tasks"])
    bufs.load_state_dict(state["buffers"])
    rows = bufs.talk_tweak.all()
    for c, t in zip(rows["command"], rows["task"]):
        trained.setdefault(bufs.tasks[int(t)], []).append(policy.commands[int(c)])
    assert converted == trained and sum(map(len, trained.values())) > 0
    assert any(c != "[null]" for cs in trained.values() for c in cs)
    # ... and under the other label source too: the log keeps the policy's proposal on intervened steps
    c = subprocess.run([sys.executable, "-m", "data_tools", "convert", *map(str, sessions), "-o",
                        str(tmp_path / "online_a.hdf5"), "--quiet", "--label", "action"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert c.returncode == 0, c.stderr


def test_bad_talk_tweak_label_is_refused_before_anything_runs(tmp_path):
    r = fit(f"run_root={tmp_path / 'runs'}", "run_name=x", *SYN, "online.label=delta")
    assert r.returncode == 2 and "online.label must be one of ('action', 'correction'), got 'delta'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override, key", [("algo.actor_lr=fast", "algo.actor_lr"), ("algo.actor_rate=0.1", "algo.actor_rate"),
                                           ("+algo.actor_rate=0.1", "algo.actor_rate"), ("online.env_steps=abc", "online.env_steps")])
def test_a_wrong_type_or_an_unknown_key_is_one_error_line_and_writes_nothing(tmp_path, override, key):
    """Refused while the config is composed (or checked, for a key added with '+'), before any file is read or
    written: one ``error:`` line naming the key, exit 2, no run folder, no demos."""
    r = fit(f"run_root={tmp_path / 'runs'}", "run_name=x", override)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and key in lines[0], r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, expect", [
    (["trainer=gpu"], "trainer.accelerator=gpu: no CUDA GPU is visible"),
    (["operator=spacemouse"], "SpaceMouseOperator: no SpaceMouse opened"),
    (["operator=keyboard"], "KeyboardOperator: stdin is not a terminal"),
    (["env=hdf5", "env.tasks=[a]", "data.path=absent.hdf5"], "needs a robot, but env 'hdf5' has none"),
])
def test_a_missing_gpu_or_operator_device_is_one_error_line_before_anything_runs(tmp_path, overrides, expect):
    """The preflight: what the machine lacks is known before any data is generated or read."""
    r = fit(f"run_root={tmp_path / 'runs'}", "run_name=x", "experiment=smoke", *overrides)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], r.stderr
    assert not (tmp_path / "runs").exists()  # no run folder, no generated demos


def test_resuming_a_finished_run_leaves_its_results_alone_and_a_failed_start_can_be_run_again(tmp_path):
    """``resume=true`` on a run that holds its whole budget says so and changes nothing; a folder an earlier start
    left without a checkpoint is started again by a plain re-run (no "exists")."""
    base = ["experiment=smoke", f"run_root={tmp_path}", "run_name=r", "algo.warmup_updates=4", "online.env_steps=60",
            "online.min_rollout=5", "eval.trials=1", "eval.curve_every_env_steps=1000", "trainer.progress_bar=false"]
    r = fit(*base)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "r"
    assert (run / "eval.json").exists()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir() if p.is_file()}
    r = fit(*base, "resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "has finished its budget" in r.stdout and "nothing to do" in r.stdout
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.iterdir() if p.is_file()} == before
    data = write_synthetic_dataset(tmp_path / "d.hdf5")
    failed = tmp_path / "f"
    failed.mkdir()
    (failed / "config.yaml").write_text("a start that stopped before its first checkpoint\n")
    r = fit(f"data.path={data}", f"run_root={tmp_path}", "run_name=f", *SYN, "algo.warmup_updates=4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "starting it again" in r.stdout and (failed / "last.ckpt").exists()


def test_resume_continues_from_last_checkpoint(tmp_path):
    data = write_synthetic_dataset(tmp_path / "d.hdf5")
    base = [f"data.path={data}", f"run_root={tmp_path}", "run_name=r", *SYN, "trainer.checkpoint_every=3"]
    r = fit(*base, "algo.warmup_updates=6")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["updates"] == 6
    r = fit(*base, "algo.warmup_updates=10")  # same run name without resume: refused, untouched
    assert r.returncode == 2 and "exists" in r.stderr
    r = fit(*base, "algo.warmup_updates=10", "resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["updates"] == 10


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "no such file"),
        ("garbage", "not a readable HDF5 file"),
        ("task_absent", "no episodes for configured task(s) ['assemble the bolt']"),
        ("shape", "demo_0/obs/state: shape (20, 9), but the networks expect (N, 6)"),
    ],
)
def test_bad_input_one_clear_error_nothing_written(tmp_path, case, expect):
    data = tmp_path / "in" / "d.hdf5"
    data.parent.mkdir()
    if case == "garbage":
        data.write_bytes(b"\x00" * 100)
    elif case == "task_absent":
        write_synthetic_dataset(data, tasks=TASKS[:2])
    elif case == "shape":
        write_synthetic_dataset(data, obs_dim=9)
    runs = tmp_path / "runs"
    r = fit(f"data.path={data}", "data.generate_if_missing=false", f"run_root={runs}", "run_name=x", *SYN)
    assert r.returncode == 2
    assert expect in r.stderr and str(data) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert not runs.exists()


@pytest.mark.slow
def test_resume_interrupted_online_run_keeps_buffer_sizes_and_counters(tmp_path):
    """Sizes and counters through the real entry point; values after a SIGKILL: tests/test_resume.py."""
    import torch

    from dual_actor.data.buffers import TaskBuffers

    base = ["experiment=smoke", f"run_root={tmp_path}", "run_name=on", "eval.trials=0"]
    r = fit(*base, "online.env_steps=200")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(tmp_path / "on" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["dual_actor"]["phase"] == "online"
    (state,) = [v for k, v in ckpt["callbacks"].items() if "InteractionCallback" in k]
    saved = TaskBuffers(TASKS)
    saved.load_state_dict(state["buffers"])
    r = fit(*base, "online.env_steps=300", "resume=true")
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith("[online] resumed:"))
    assert json.loads(line.split("buffers ", 1)[1]) == json.loads(json.dumps(saved.sizes(), sort_keys=True))
    assert f"resumed: {state['env_steps']} interaction steps" in line
    assert "[warm-up]" not in r.stdout  # the warm-up is not repeated
    summary = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert summary["online_env_steps"] >= 300


@pytest.mark.parametrize("over, expect", [
    (["algo.batch_size=25"], "algo.batch_size=25 must be divisible by 3 tasks"),
    (["algo.batch_size=27", "online.env_steps=10"], "algo.batch_size=27 must be divisible by 2 x tasks"),
])
def test_batch_size_that_alg1_cannot_split_is_refused_at_start(tmp_path, over, expect):
    data = write_synthetic_dataset(tmp_path / "d.hdf5")
    r = fit(f"data.path={data}", f"run_root={tmp_path / 'runs'}", "run_name=x", *SYN, *over)
    assert r.returncode == 2 and expect in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()


def test_resume_with_other_tasks_than_the_checkpoint_is_refused_at_start(tmp_path):
    data = write_synthetic_dataset(tmp_path / "d.hdf5")
    base = [f"data.path={data}", f"run_root={tmp_path}", "run_name=r", *SYN, "algo.warmup_updates=2"]
    assert fit(*base).returncode == 0
    before = (tmp_path / "r" / "last.ckpt").stat().st_mtime_ns
    r = fit(*base, "resume=true", "env.tasks=[place the bolt,pick up the bolt]")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "was trained with tasks=['place the bolt', 'pick up the bolt', 'assemble the bolt'], but env.tasks=" in r.stderr
    assert "Traceback" not in r.stderr and (tmp_path / "r" / "last.ckpt").stat().st_mtime_ns == before
    # a checkpoint of the per-task critic layout (before the critics were stacked) is refused too, untouched
    ckpt = tmp_path / "r" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["state_dict"]["critics.0.obs_encoder.net.0.weight"] = torch.zeros(16, 6)
    torch.save(state, ckpt)
    before = ckpt.stat().st_mtime_ns
    r = fit(*base, "resume=true")
    assert r.returncode == 2 and "one critic module per task" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and ckpt.stat().st_mtime_ns == before


def test_multirun_over_two_seeds_gives_each_job_its_own_run(tmp_path):
    """`-m seed=0,1`: both jobs run (they start within the same second), each in the run folder
    notebooks/03_results.ipynb reads, ``<arm>-s<seed>``; Hydra's multirun.yaml goes under the run root, nothing
    into the working directory."""
    data = write_synthetic_dataset(tmp_path / "d.hdf5")
    r = fit("-m", "seed=0,1", f"data.path={data}", f"run_root={tmp_path / 'runs'}", *SYN, "algo.warmup_updates=2",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["dual-s0", "dual-s1", "multirun"], runs
    for name in runs[:2]:
        assert (tmp_path / "runs" / name / "summary.json").is_file()
    assert len(list((tmp_path / "runs" / "multirun").glob("*/multirun.yaml"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.hdf5", "runs"]  # nothing else in the working dir
    from dual_actor.analysis.loading import find_runs

    assert [p.name for p in find_runs(tmp_path / "runs", "dual")] == ["dual-s0", "dual-s1"]
