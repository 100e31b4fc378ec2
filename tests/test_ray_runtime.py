"""``runtime=ray``: one learner, robots as Ray actors (a local Ray, no cluster). End to end as a user runs it,
a robot killed mid-episode, the learner killed mid-online and resumed, and a robot that must hold."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.teleop_log import read_session

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
FAST = ["eval.warmup_point=false", "eval.curve_every_env_steps=1000000"]
QUIET = [*FAST, "trainer.progress_bar=false"]

pytestmark = pytest.mark.slow


def _fit(*args, run_root, timeout=600, quiet=QUIET, **popen):
    cmd = [sys.executable, "-m", "dual_actor.fit", "runtime=ray", "experiment=smoke", f"run_root={run_root}",
           *quiet, *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def _sessions(run_dir: Path, robot: str) -> list[Path]:
    return sorted((run_dir / "teleop").glob(f"online-{robot}-*"))


def _whole(session: Path, max_steps: int) -> list[int]:
    """Every episode of a teleop session read back: each ends at success (done) or at the time limit."""
    s = read_session(session)
    lengths = []
    for ep in s.episodes():
        assert not ep.truncated
        assert ep.dones[-1] or len(ep.steps) == max_steps, (session, ep.episode_id, len(ep.steps))
        lengths.append(len(ep.steps))
    return lengths


def test_two_robots_end_to_end(tmp_path):
    """`python -m dual_actor.fit runtime=ray runtime.robots=2 experiment=smoke`: robots A and B act, their
    episodes reach the buffers and the teleop log whole, per-robot figures land in summary.json and TensorBoard."""
    r = _fit("runtime.robots=2", "run_name=r", run_root=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "r"
    summary = json.loads((run / "summary.json").read_text())
    robots = summary["robots"]
    assert set(robots) == {"A", "B"}
    assert all(v["env_steps"] > 0 and v["restarts"] == 0 for v in robots.values())
    assert sum(v["env_steps"] for v in robots.values()) == summary["online_env_steps"] >= 400
    acks = [json.loads(line) for line in (run / "journal" / "acks.jsonl").read_text().splitlines()]
    assert sum(a["rows"] for a in acks) == summary["online_env_steps"]
    assert acks[-1]["online_transitions"] == summary["online_env_steps"]  # every ingested row is held
    assert {a["robot"] for a in acks} == {"A", "B"}
    for robot in ("A", "B"):
        (session,) = _sessions(run, robot)
        assert _whole(session, 40)
    assert (run / "eval.json").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(run / "tb")).Reload().Tags()["scalars"]
    for robot in ("A", "B"):
        for what in ("env_steps", "intervention_rate", "success", "weight_age"):
            assert f"robot/{robot}/{what}" in tags


def test_the_cli_with_its_progress_bar(tmp_path):
    """`python -m dual_actor.fit experiment=smoke runtime=ray runtime.robots=2` exactly as a user types it, the
    progress bar on (the other tests here turn it off): the online bar reads the Ray interaction as it reads the
    in-process one, to the end of the run."""
    cmd = [sys.executable, "-m", "dual_actor.fit", "experiment=smoke", "runtime=ray", "runtime.robots=2",
           f"run_root={tmp_path}", "run_name=bar", "trainer.progress_bar=true", "online.env_steps=300", "eval.trials=1",
           *FAST]
    r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "bar"
    assert (run / "eval.json").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["robots"]) == {"A", "B"} and summary["online_env_steps"] >= 300
    # summary.json reconciles the teleop log with the buffers: what the robots finished after the budget was in
    # flight at the stop (logged, not ingested), and it says so
    eps = summary["online_episodes"]
    assert eps["ingested"] == {"episodes": sum(r["episodes"] for r in summary["robots"].values()),
                               "steps": summary["online_env_steps"]}
    flight, logged = eps["in_flight_at_stop"], eps["teleop_log"]
    assert logged["episodes"] == eps["ingested"]["episodes"] + flight["episodes"]
    assert logged["steps"] == eps["ingested"]["steps"] + flight["steps"]
    assert eps["logged_not_ingested"] == flight and (("why" in eps) == (flight["episodes"] > 0))
    online_bar = [line for line in re.split(r"[\r\n]", r.stdout) if line.lstrip().startswith("online:")]
    assert online_bar and "updates=" in online_bar[-1] and "intv=" in online_bar[-1], online_bar[-3:]


def test_the_progress_bar_reads_only_the_public_interface(tmp_path):
    """Both interactions are an ``OnlineProgress`` (env_steps, max_env_steps, intervention_rate()), and the bar's
    figures come from that alone."""
    from types import SimpleNamespace

    from hydra import compose, initialize_config_dir

    import dual_actor.fit  # noqa: F401  (registers the config schemas)
    from dual_actor.data.interaction import Interaction
    from dual_actor.data.ray_interaction import RayInteraction
    from dual_actor.watch import OnlineProgress, RunProgressBar

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["runtime=ray", "experiment=smoke", "runtime.journal=false"])
    both = [Interaction([], transport=None, buffers=None, max_env_steps=400),
            RayInteraction(cfg, policy=None, buffers=None, run_dir=tmp_path)]  # neither starts anything
    for inter in both:
        assert isinstance(inter, OnlineProgress) and inter.max_env_steps == 400 and inter.intervention_rate() == 0.0

    class Stub:  # the interface and nothing else
        env_steps, max_env_steps = 120, 400

        def intervention_rate(self) -> float:
            return 0.25

    bar = RunProgressBar("online", interaction=Stub())
    module = SimpleNamespace(num_updates=7, last_logs={"loss/actor_bc": 0.5, "loss/critic_a": 1.0, "q_pi/a": 2.0})
    assert bar._total() == 400 and bar._count(module) == 120
    assert bar.get_metrics(None, module) == {"updates": 7, "bc": "0.500", "critic": "1.000", "Q(s,pi)": "2.00",
                                             "intv": "0.25"}


def test_a_killed_robot_is_restarted_and_its_partial_episode_dropped(tmp_path):
    """kill -9 of robot B's process mid-episode: Ray restarts it, it rejoins, the run finishes; the partial
    episode is in neither the buffers nor the teleop log (every acknowledged episode and every logged one is
    whole)."""
    args = ["runtime.robots=2", "run_name=k", "online.env_steps=1600", "online.period_s=0.01", "eval.trials=0",
            f"run_root={tmp_path}"]
    proc = subprocess.Popen([sys.executable, "-m", "dual_actor.fit", "runtime=ray", "experiment=smoke", *QUIET, *args],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    run = tmp_path / "k"
    killed = None
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and killed is None:
            for session in _sessions(run, "B"):
                staged = list((session / ".staging").glob("*")) if (session / ".staging").exists() else []
                done = list((session / "episodes").glob("*"))
                if staged and done:  # mid-episode, after at least one whole one
                    pid = int(session.name.rsplit("-", 1)[1])
                    os.kill(pid, signal.SIGKILL)
                    killed = (session, staged[0].name)
                    break
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed is not None, out[-3000:]
    assert proc.returncode == 0, out[-4000:]
    assert "robot B died" in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["robots"]["B"]["restarts"] == 1 and summary["robots"]["A"]["restarts"] == 0
    sessions = _sessions(run, "B")
    assert len(sessions) == 2 and killed[0] in sessions  # the restarted robot logs into a session of its own
    old, partial = killed
    assert not (old / ".staging").exists()  # the restarted robot discarded the dead one's partial episode
    assert partial not in {p.name for p in (old / "episodes").iterdir()}
    for session in sessions + _sessions(run, "A"):
        _whole(session, 40)
    assert sum(len(list((s / "episodes").iterdir())) for s in _sessions(run, "B")[1:]) > 0  # B rejoined
    acks = [json.loads(line) for line in (run / "journal" / "acks.jsonl").read_text().splitlines()]
    assert all(1 <= a["rows"] <= 40 for a in acks)
    assert sum(a["rows"] for a in acks) == acks[-1]["online_transitions"] == summary["online_env_steps"]


def _online_transitions(state: dict) -> tuple[int, int]:
    cb = next(v for k, v in state["callbacks"].items() if k.startswith("InteractionCallback"))
    per_task = cb["buffers"]["per_task"]
    n = sum(len(next(iter(d[k]["rows"].values()), ())) if d[k]["rows"] else 0
            for d in per_task.values() for k in ("rollouts", "interventions"))
    return n, int(cb["seq"])


def test_kill_9_of_the_run_and_resume_loses_no_acknowledged_transition(tmp_path):
    """kill -9 of the whole run mid-online, then resume=true: the resumed run holds exactly the transitions of
    last.ckpt plus the journalled episodes after it, which include every acknowledged one (acks.jsonl). Episodes
    in flight at the kill were never acknowledged and are collected again."""
    args = ["runtime.robots=1", "run_name=d", "online.env_steps=2400", "eval.trials=0", "trainer.checkpoint_every=40",
            "online.log_teleop=false", f"run_root={tmp_path}"]
    cmd = [sys.executable, "-m", "dual_actor.fit", "runtime=ray", "experiment=smoke", *QUIET, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    run = tmp_path / "d"
    acks_path = run / "journal" / "acks.jsonl"
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            ckpt = run / "last.ckpt"
            if acks_path.exists() and ckpt.exists() and len(acks_path.read_text().splitlines()) >= 25:
                try:
                    state = torch.load(ckpt, map_location="cpu", weights_only=False)
                except Exception:  # noqa: BLE001 - replaced while reading: try again
                    continue
                seq = _online_transitions(state)[1] if state.get("dual_actor", {}).get("phase") == "online" else 0
                newer = [p for p in (run / "journal").glob("[0-9]*.pt") if int(p.stem) > seq]
                # between two checkpoints (40 updates apart: the kill lands well before the next one), with
                # acknowledged episodes after the last one
                if seq >= 3 and newer:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    acks = [json.loads(line) for line in acks_path.read_text().splitlines() if line.endswith("}")]
    acked = acks[-1]["online_transitions"]
    held_ckpt, seq = _online_transitions(torch.load(run / "last.ckpt", map_location="cpu", weights_only=False))
    journal = sorted((run / "journal").glob("[0-9]*.pt"))
    after = [torch.load(p, weights_only=False) for p in journal if int(p.stem) > seq]
    expected = held_ckpt + sum(int(e["meta"]["length"]) for e in after)
    assert expected >= acked  # nothing acknowledged is lost ...
    assert expected - acked <= 40  # ... at most the one episode journalled but not yet acknowledged at the kill
    assert after, "the kill should fall between checkpoints (journal entries after last.ckpt)"
    r = subprocess.run([*cmd, "resume=true"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    line = next(l for l in r.stdout.splitlines() if l.startswith("[online] journal:"))
    assert f"{len(after)} episode(s) after the checkpoint replayed; {expected} online transitions held" in line


def test_a_robot_holds_without_fresh_weights(tmp_path):
    """A robot whose weights are older than runtime.max_weight_age updates, or that cannot reach the learner,
    holds (zero motion, gripper kept) instead of acting; with fresh weights it acts; asked to wait for the
    learner, it starts no episode."""
    import ray
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dual_actor.runtime.ray_robot import EpisodeInbox, RobotWorker, WeightBoard
    from dual_actor.policy import DualActorPolicy
    from factories import tiny_policy_kwargs

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["runtime=ray", "experiment=smoke", "runtime.max_weight_age=100",
                                           "runtime.timeout_s=20", "runtime.age_check_every=1", "online.log_teleop=false"])
    ray.init(address="local", num_cpus=1, include_dashboard=False, configure_logging=False,
             object_store_memory=100 * 2**20)
    try:
        board, inbox = ray.remote(WeightBoard).remote(), ray.remote(EpisodeInbox).remote()
        policy = DualActorPolicy(**tiny_policy_kwargs(tasks=list(cfg.env.tasks), obs_dim=39, proprio_dim=4, action_dim=4))
        ray.get(board.publish.remote(0, [ray.put(policy.state_dict_to_save())]))
        robot = RobotWorker(OmegaConf.to_container(cfg, resolve=True), 0, "A", policy, board, inbox)
        robot.loops = robot.loops[:1]
        assert robot._sync() == (True, False)
        rec = robot.loops[0].run_episode()
        assert rec.extra["held"] == 0 and rec.extra["robot"] == "A"
        ray.get(board.set_pause.remote(True))  # the learner is behind (runtime.max_steps_ahead): no new episode
        assert robot._sync() == (False, False)
        ray.get(board.set_pause.remote(False))
        assert robot._sync() == (True, False)
        ray.get(board.tick.remote(101))  # the learner moved on; these weights are 101 updates old
        assert robot._sync() == (False, False)
        ray.kill(board)  # the learner cannot be reached
        assert robot._sync() == (False, False)
        rec = robot.loops[0].run_episode()
        assert rec.extra["held"] == rec.length
        executed = rec.rows["action"].numpy()
        assert np.all(executed[~rec.rows["intervention"].numpy(), :3] == 0.0)
    finally:
        ray.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_hosts_with_token_authentication(tmp_path):
    """The paper's split on one machine: a head node (the GPU machine's, 1 CPU) and a second node offering the
    ``robot`` resource (the robot computer's), both started with Ray's token authentication. The learner joins with
    the token and its robots run where ``robot`` is (``runtime.robot_resources``); without the token, or with
    another one, the learner is refused with one error line before anything is written."""
    import secrets

    ray_bin = str(Path(sys.executable).parent / "ray")
    token = secrets.token_hex(32)
    auth = {**ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # AF_UNIX socket paths must stay under 107 bytes
    common = ["--num-cpus=1", "--disable-usage-stats", f"--temp-dir={short}"]
    try:
        for cmd in ([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                    [ray_bin, "start", f"--address={address}", '--resources={"robot": 2}', *common[:2]]):
            r = subprocess.run(cmd, env=auth, capture_output=True, text=True, timeout=180)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        over = [f"runtime.address={address}", "runtime.robots=2", "runtime.robot_resources={robot: 1}",
                "online.env_steps=200"]
        home = tmp_path / "home"  # no ~/.ray/auth_token (Ray's default token file) in the refused processes
        home.mkdir()
        no_token = {k: v for k, v in auth.items() if k != "RAY_AUTH_TOKEN"}
        for env, why in (({**no_token, "HOME": str(home)}, "token authentication is not set up"),
                         ({**auth, "HOME": str(home), "RAY_AUTH_TOKEN": secrets.token_hex(32)},
                          "cannot join the Ray cluster")):
            cmd = [sys.executable, "-m", "dual_actor.fit", "runtime=ray", "experiment=smoke", f"run_root={tmp_path}",
                   "run_name=refused", *QUIET, *over]
            r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 2 and lines[-1].startswith("error:") and why in lines[-1], r.stderr[-2000:]
            assert not (tmp_path / "refused").exists()
        cmd = [sys.executable, "-m", "dual_actor.fit", "runtime=ray", "experiment=smoke", f"run_root={tmp_path}",
               "run_name=r", *QUIET, *over]
        r = subprocess.run(cmd, cwd=ROOT, env=auth, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        summary = json.loads((tmp_path / "r" / "summary.json").read_text())
        assert set(summary["robots"]) == {"A", "B"} and summary["online_env_steps"] >= 200
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=auth, capture_output=True, timeout=120)
        import shutil

        shutil.rmtree(short, ignore_errors=True)


def test_the_token_check_reads_the_token_where_ray_does(tmp_path, monkeypatch):
    """RAY_AUTH_MODE=token with the token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or Ray's default file
    ~/.ray/auth_token (what `ray get-auth-token --generate` writes); refused without one, or without the mode."""
    from types import SimpleNamespace

    from dual_actor.data.ray_interaction import check_token_auth

    rt = SimpleNamespace(require_auth=True, address="10.0.0.2:6379")
    monkeypatch.setenv("HOME", str(tmp_path))
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(ConnectionError, match="token authentication is not set up"):
        check_token_auth(rt)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("a" * 64)
    check_token_auth(rt)
    monkeypatch.delenv("RAY_AUTH_MODE")
    with pytest.raises(ConnectionError, match="RAY_AUTH_MODE=token"):
        check_token_auth(rt)
    check_token_auth(SimpleNamespace(require_auth=False, address="10.0.0.2:6379"))


def test_an_unreachable_ray_address_fails_in_seconds_not_minutes():
    """Ray's own join retries an unreachable GCS address for minutes; the preflight probes it first."""
    import socket
    import time

    from dual_actor.training.build import reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        reachable(f"127.0.0.1:{s.getsockname()[1]}")
        reachable(f"ray://127.0.0.1:{s.getsockname()[1]}")
    closed = _free_port()
    t0 = time.perf_counter()
    for address in (f"127.0.0.1:{closed}", "no-such-host.invalid:6379", "127.0.0.1"):
        with pytest.raises(ConnectionError, match="nothing answers"):
            reachable(address, timeout_s=2)
    assert time.perf_counter() - t0 < 8
    reachable("auto")
