"""The docs, run: every shell block of README.md and docs/*.md, as written, and every repository path they name.

**Which blocks.** Fenced blocks typed ``bash``, ``sh``, ``shell`` or ``console``, and untyped fenced blocks with a
line starting ``python``, ``bash`` or ``$``. A block is split into commands: ``\\`` joins continuation lines,
``# comments`` and blank lines are dropped, and in a ``$`` transcript only the ``$`` lines are commands (the
rest is output). Usage synopses (``[--append | --force]``, ``a|b|c``) are fenced as ``text`` and not run.
Commands in indented (non-fenced) code blocks are refused, so that a new command cannot escape the test:
fence it (docs/results.md, a record of past runs, is the one exception).

**How each command runs.** In a fresh scratch folder of its own, through ``bash``, with the environment the
docs state (``python`` is the venv's, ``MUJOCO_GL=egl EGL_PLATFORM=surfaceless PYOPENGL_PLATFORM=egl
HF_HUB_OFFLINE=1``). The scratch folder holds the inputs the command names (:data:`INPUTS`: each made once per
test session, the way a reader would make it) and ``checkpoints/data/``, the bench demos. Words a reader
replaces are replaced by :data:`PLACEHOLDERS`. Then, visibly:

* a command that trains (``python -m dual_actor.fit`` without ``--cfg`` / ``--help``) gets :data:`FIT_SMOKE`
  appended (``bash .ci/env ...``, which runs from the repository root, also gets ``run_root=<scratch>/checkpoints``
  so that nothing lands in the repository); ``python -m dual_actor.eval`` gets :data:`EVAL_SMOKE`;
* ``tensorboard`` gets ``--port 0`` and is stopped once it serves;
* :data:`NOT_RUN` lists the commands not run here, each with its reason (no pytest skips: the suite's skip
  count is for optional extras).

It must exit 0. Commands that need what this machine lacks are marked in the doc, either for a whole block (an
HTML comment on the line before the fence: ``<!-- needs: gpu -->``) or for one command (a trailing ``# needs:
robot`` comment); the markers are ``robot`` (a device: SpaceMouse, a robot), ``gpu`` and ``hub`` (a checkpoint
from, or an upload to, the Hugging Face Hub). Such a command must fail here cleanly: exit 2, exactly one stderr
line, starting ``error:``, and nothing written. Commands identical after substitution run once.

**Speed.** Most commands are ``python -m MODULE ...``: those run in a child forked from one server process that
imported torch / Lightning / Hydra / MuJoCo once (:func:`serve`), which executes the module as ``python -m``
does (``runpy``, ``sys.argv`` as bash splits the command, its own cwd, stdout, stderr and exit status). The
server's own import-time stderr is counted as every such command's stderr. Anything else (``bash``, a command
with shell operators or an environment prefix) runs as a plain subprocess.

**Paths.** :func:`test_repository_paths_exist`: every repository path a doc names (``dual_actor/...``,
``docs/...``, ``conf/...``, ``tests/...``, ``benchmarks/...``, ``notebooks/...``, ``data_tools/...``,
``.ci/...``, a ``*.md`` file, ``tests/x.py::name``, a Markdown link or image) exists; a file that is gone is
cited as git keeps it, ``git show <commit>:<path>``, which is checked against the history when the clone has it.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
VENV_BIN = str(Path(sys.executable).parent)
DOC_ENV = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""), "MUJOCO_GL": "egl",
           "EGL_PLATFORM": "surfaceless", "PYOPENGL_PLATFORM": "egl", "HF_HUB_OFFLINE": "1"}
TIMEOUT_S = 600

# ------------------------------------------------------------------------------------------ the tables

#: Appended to every command that trains (README says so beside its commands), less the keys the command sets
#: itself: a few learner updates, a few online steps, one evaluation trial per task of short episodes. Key
#: overrides, not ``experiment=smoke``: a second ``experiment=`` would replace the command's own
#: (``experiment=paper``) instead of shrinking it.
FIT_SMOKE = ("algo.warmup_updates=5 online.env_steps=60 online.min_rollout=10 online.max_episode_steps=40 "
             "eval.trials=1 eval.max_episode_steps=40 eval.curve_every_env_steps=1000")
#: Appended to ``python -m dual_actor.train_vla`` (less the keys the command sets): the tiny sizes of
#: ``experiment=smoke``, two updates, one evaluation trial per task of short episodes, small frames.
VLA_SMOKE = "experiment=smoke vla.steps=2 vla.eval_trials=1 eval.max_episode_steps=20 env.image_size=64"
#: Appended to ``python -m dual_actor.eval`` (after the command's own ``--trials``: the last one counts): one
#: trial (one chain) per task, short episodes.
EVAL_SMOKE = "--trials 1 --max-episode-steps 40"

#: What a placeholder stands for here: (as written, replaced by, what it is).
PLACEHOLDERS = [
    ("<run>", "r1", "a run folder: checkpoints/r1 (INPUTS)"),
    ("SESSION...", "s1 s2", "teleoperation-log sessions: s1 and s2 (INPUTS)"),
    ("[--private]", "--private", "an optional flag: given"),
    ("[--dataset me/bolts]", "--dataset me/bolts", "an optional flag: given"),
]

#: Inputs a command may name, made once per test session (each command gets a copy of those it names).
INPUTS = {
    "s1": "a teleoperation session written by data_tools.teleop_log.SessionWriter: 2 episodes of pure "
          "teleoperation (pick up, place), cameras wrist + head",
    "s2": "the same with a policy acting and a human intervening (policy actions, interventions)",
    "bolts.hdf5": "python -m data_tools convert s1 s2 -o bolts.hdf5",
    "week.hdf5": "python -m data_tools convert s1 s2 -o week.hdf5",
    "monday.hdf5": "python -m data_tools convert s1 -o monday.hdf5",
    "tuesday.hdf5": "python -m data_tools convert s2 -o tuesday.hdf5",
    "lr": "python -m data_tools export-lerobot bolts.hdf5 -o lr/ --repo-id me/bolts",
    "my.hdf5": "a dataset of 'pick up the bolt' episodes (tests/factories.py)",
    "checkpoints/r1": f"python -m dual_actor.fit run_name=r1 env.demos.episodes_per_task=2 {FIT_SMOKE}",
    "checkpoints/recordings/rehearsal": "python -m dual_actor.record env=lerobot_sim record.session=rehearsal "
                                        "record.episodes=1 'record.tasks=[pick up the bolt]' "
                                        "online.max_episode_steps=20",
}
#: In every scratch folder: the demos checkpoints/r1 recorded (2 per task), under the default names of both
#: the default run and experiment=smoke (read only).
BENCH_DEMOS = ("metaworld_bench_demos.hdf5", "metaworld_bench_smoke_demos.hdf5")

#: Commands not run here: (as written) -> why.
NOT_RUN = {
    "bash .ci/env python -m pytest": "the test suite itself: CI runs exactly this command (.ci/run)",
    **{f'pip install "dual-actor[{extras}]"': "installs the package from an index (the suite uses no network); "
                                               "bash .ci/env installs every extra from pyproject.toml"
       for extras in ("robot", "learner", "learner,robot", "robot,realsense")},
    "bash benchmarks/gpu_session.sh --fetch-wheels": "downloads wheels from PyPI (the suite uses no network); "
                                                      "tests/test_benchmarks.py runs the script itself (TINY=1)",
}

#: Commands that do not (yet) behave as the doc says, because of the code: (as written) -> reason.
XFAIL: dict[str, str] = {}

NEEDS = {"robot", "gpu", "hub"}
SHELL_LANGS = {"bash", "sh", "shell", "console"}
COMMAND_START = ("python ", "bash ", "$ ")
OUTPUT_FLAGS = {"-o", "--out", "--output", "--json"}
#: Docs whose indented code blocks are records, not instructions.
INDENTED_OK = {"docs/results.md": "a record of past runs (their commands, as run then)"}

# ------------------------------------------------------------------------------------------ parsing


@dataclass
class Block:
    doc: str
    line: int  # the opening fence
    lang: str
    lines: list[tuple[int, str]]
    needs: set[str] = field(default_factory=set)

    @property
    def is_shell(self) -> bool:
        if self.lang in SHELL_LANGS:
            return True
        return self.lang == "" and any(t.strip().startswith(COMMAND_START) for _, t in self.lines)


@dataclass
class Command:
    doc: str
    line: int
    text: str  # as written, without its comment
    needs: set[str]

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}: `{self.text}`"


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
NEEDS_MARK = re.compile(r"\bneeds:\s*(\w+(?:\s*,\s*\w+)*)")


def blocks(doc: str, source: str | None = None) -> list[Block]:
    """The fenced blocks of ``doc`` (any language), with the ``<!-- needs: ... -->`` marker before each."""
    out, open_, prev = [], None, ""
    source = (ROOT / doc).read_text() if source is None else source
    for no, text in enumerate(source.splitlines(), 1):
        m = FENCE.match(text)
        if open_ is None:
            if m:
                needs = set()
                if prev.strip().startswith("<!--") and (n := NEEDS_MARK.search(prev)):
                    needs = {w.strip() for w in n.group(1).split(",") if w.strip()}
                open_ = (Block(doc, no, m.group(3).lower(), [], needs), m.group(2))
            elif text.strip():
                prev = text
        elif m and m.group(2).startswith(open_[1]) and not m.group(3):
            out.append(open_[0])
            open_, prev = None, ""
        else:
            open_[0].lines.append((no, text))
    assert open_ is None, f"{doc}:{open_[0].line}: a fenced block that is never closed"
    return out


def split_comment(text: str) -> tuple[str, str]:
    """``cmd  # comment`` -> (cmd, comment); a ``#`` inside quotes or inside a word is not a comment."""
    quote = None
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1].isspace()):
            return text[:i].rstrip(), text[i + 1:].strip()
    return text.rstrip(), ""


def commands(block: Block) -> list[Command]:
    transcript = block.lang == "console" or any(t.strip().startswith("$ ") for _, t in block.lines)
    out, start, parts = [], None, []
    for no, raw in block.lines:
        text = raw.strip()
        if start is None:
            if transcript:
                if not text.startswith("$ "):
                    continue  # output of the command above
                text = text[2:].strip()
            if not text or text.startswith("#"):
                continue
            start = no
        more = text.endswith("\\")
        parts.append(text[:-1].rstrip() if more else text)
        if not more:
            cmd, comment = split_comment(" ".join(parts))
            needs = set(block.needs)
            if n := NEEDS_MARK.search(comment):
                needs |= {w.strip() for w in n.group(1).split(",") if w.strip()}
            out.append(Command(block.doc, start, cmd, needs))
            start, parts = None, []
    return out


def indented_commands(doc: str) -> list[tuple[int, str]]:
    """Lines of indented code blocks (outside fences and lists) that start a command."""
    lines = (ROOT / doc).read_text().splitlines()
    fenced, out, prev_blank_or_code = False, [], True
    for no, text in enumerate(lines, 1):
        if FENCE.match(text):
            fenced = not fenced
            continue
        if fenced:
            continue
        code = text.startswith("    ") and prev_blank_or_code
        if code and text.strip().startswith(("python ", "bash ")):
            out.append((no, text.strip()))
        prev_blank_or_code = not text.strip() or code
    return out


ALL_BLOCKS = [b for doc in DOCS for b in blocks(doc)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.is_shell]
COMMANDS = [c for b in SHELL_BLOCKS for c in commands(b)]

# ------------------------------------------------------------------------------------------ running


def substitute(text: str) -> str:
    for written, here, _ in PLACEHOLDERS:
        text = text.replace(written, here)
    return text


def words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def trains(ws: list[str]) -> bool:
    if "dual_actor.fit" not in ws:
        return False
    return not any(w in ("--cfg", "-c", "--help", "-h", "--info") for w in ws)


@dataclass
class Plan:
    """How a command runs here."""

    run: str  # the command line handed to bash
    cwd_root: bool = False  # runs from the repository root (bash .ci/env)
    server: bool = False  # a long-running server: stopped once it serves


def plan(cmd: Command, scratch: Path) -> Plan:
    run = substitute(cmd.text)
    ws = words(run)
    p = Plan(run)
    if ws[:2] == ["bash", ".ci/env"]:
        p.cwd_root = True
    if trains(ws) and not cmd.needs:
        given = {w.lstrip("+~").split("=", 1)[0] for w in ws if "=" in w}
        smoke = [kv for kv in FIT_SMOKE.split() if kv.split("=", 1)[0] not in given]
        p.run += " " + " ".join(smoke) + (f" run_root={scratch / 'checkpoints'}" if p.cwd_root else "")
    if "dual_actor.train_vla" in ws and not cmd.needs:
        given = {w.split("=", 1)[0] for w in ws if "=" in w}
        p.run += " " + " ".join(kv for kv in VLA_SMOKE.split() if kv.split("=", 1)[0] not in given)
    if "dual_actor.eval" in ws and not cmd.needs:
        p.run += " " + EVAL_SMOKE
    if ws[0] == "tensorboard":
        p.run += " --port 0"
        p.server = True
    return p


def named_inputs(text: str) -> list[str]:
    """The :data:`INPUTS` a command names as inputs (not after an output flag such as ``-o``)."""
    ws = words(text)
    found = []
    for i, w in enumerate(ws):
        if i and ws[i - 1] in OUTPUT_FLAGS:
            continue
        values = [w, w.split("=", 1)[-1]]
        if w.startswith("run_name="):  # a run of the run root
            values.append("checkpoints/" + values[1])
        for v in values:
            for name in INPUTS:
                if (v == name or v.rstrip("/") == name or v.startswith(name + "/")) and name not in found:
                    found.append(name)
    return found


def tree(path: Path) -> set[str]:
    """Every path under ``path`` (symbolic links not followed)."""
    out = set()
    for d, dirs, files in os.walk(path):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(d, name), path))
    return out


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    how: str  # "server" or "subprocess"


class Server:
    """The client side of :func:`serve`."""

    def __init__(self, log: Path):
        self.log, self.log_file = log, open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                                   "import test_docs; test_docs.serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log_file, cwd=log.parent, env=DOC_ENV,
            bufsize=0)
        ready = self._read(TIMEOUT_S)
        assert ready.get("ready"), f"the command server did not start: {self.log.read_text()[-3000:]}"
        self.import_stderr = self.log.read_text()

    def _read(self, timeout: float) -> dict:
        buf, end = b"", time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while not buf.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return {}
            chunk = os.read(fd, 1)
            if not chunk:
                return {}
            buf += chunk
        return json.loads(buf)

    def run(self, module: str, argv: list[str], cwd: Path, out: Path, err: Path, timeout: float) -> int:
        req = {"module": module, "argv": argv, "cwd": str(cwd), "out": str(out), "err": str(err)}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        pid = self._read(60)["pid"]
        done = self._read(timeout)
        if not done:
            os.kill(pid, signal.SIGKILL)
            self._read(60)
            return 124
        return done["rc"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log_file.close()


#: What the server imports before forking (never a module it will run as ``__main__``).
PRELOAD = ("torch", "lightning", "hydra", "omegaconf", "dual_actor.training.build", "dual_actor.module",
           "dual_actor.data.datamodule", "dual_actor.runtime.sim", "dual_actor.eval.cli", "data_tools.cli")


def serve() -> None:
    """Fork server: import :data:`PRELOAD` once, then per request fork a child that runs ``python -m MODULE
    ARGV`` as Python would (``runpy.run_module(..., run_name="__main__", alter_sys=True)``) in its cwd, with its
    stdout / stderr to files, and report its pid and exit status (one JSON line each)."""
    import importlib

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the server's own output goes to its log, never into the protocol
    for name in PRELOAD:
        importlib.import_module(name)
    print(json.dumps({"ready": True}), file=proto, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the command: never returns into this loop
            os.chdir(req["cwd"])
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 1)
            os.dup2(os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
            proto.close()
            main = req["module"]  # as in a fresh interpreter: the module to run is not imported yet
            for name in (main, main + ".__main__"):
                if name in sys.modules and not hasattr(sys.modules[name], "__path__"):
                    del sys.modules[name]
            sys.argv = ["-m", *req["argv"]]
            os._exit(_run_main(main))
        print(json.dumps({"pid": pid}), file=proto, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), file=proto, flush=True)


def _run_main(module: str) -> int:
    """``python -m module`` in this (forked) process, up to its exit status: an uncaught exception is printed
    and gives 1, ``SystemExit`` its code; then non-daemon threads are joined and ``atexit`` handlers run, as at
    interpreter exit. What is skipped is only the final teardown of every module (seconds, with torch loaded)."""
    import atexit
    import runpy
    import threading

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - printed as the interpreter would
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return code


def shell_argv(run: str, cwd: Path) -> list[str] | None:
    """``python -m MODULE ...`` as bash would split it (quotes, globs in ``cwd``), or None when the command is
    more than that (an environment prefix, shell operators)."""
    lex = shlex.shlex(run, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        toks = list(lex)
    except ValueError:
        return None
    if len(toks) < 3 or toks[:2] != ["python", "-m"] or any(set(t) <= set("();<>|&") for t in toks):
        return None
    r = subprocess.run(["bash", "-c", "printf '%s\\0' " + run[len("python"):]], cwd=cwd, env=DOC_ENV,
                       capture_output=True)
    if r.returncode != 0:
        return None
    return ["python", *r.stdout.decode().split("\0")[:-1]]


@dataclass
class Workspace:
    root: Path
    server: Server
    results: dict = field(default_factory=dict)  # (run line, cwd_root) -> (Result, where it first ran)

    def scratch(self, cmd: Command) -> Path:
        d = self.root / "runs" / f"{Path(cmd.doc).stem}-{cmd.line}"
        shutil.rmtree(d, ignore_errors=True)
        (d / "checkpoints").mkdir(parents=True)
        (d / "checkpoints" / "data").symlink_to(self.root / "prepared" / "checkpoints" / "data")
        return d

    def provide(self, text: str, scratch: Path) -> None:
        for name in named_inputs(text):
            src, dst = self.root / "prepared" / name, scratch / name
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
            else:
                shutil.copy2(src, dst)

    def execute(self, p: Plan, scratch: Path, timeout: float = TIMEOUT_S) -> Result:
        cwd = ROOT if p.cwd_root else scratch
        out, err = scratch.parent / f"{scratch.name}.out", scratch.parent / f"{scratch.name}.err"
        argv = None if p.server else shell_argv(p.run, cwd)
        if argv is not None:
            rc = self.server.run(argv[2], argv[3:], cwd, out, err, timeout)
            stderr = self.server.import_stderr + err.read_text(errors="replace")
            return Result(rc, out.read_text(errors="replace"), stderr, "server")
        with open(out, "wb") as o, open(err, "wb") as e:
            proc = subprocess.Popen(["bash", "-c", p.run], cwd=cwd, env=DOC_ENV, stdout=o, stderr=e,
                                    start_new_session=True)
            if p.server:
                rc = self._until_serving(proc, err)
            else:
                try:
                    rc = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
        return Result(rc, out.read_text(errors="replace"), err.read_text(errors="replace"), "subprocess")

    @staticmethod
    def _until_serving(proc: subprocess.Popen, err: Path, timeout: float = 120) -> int:
        """A server: 0 once it says where it serves (then stopped), its exit status if it ends first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                return proc.returncode or 1
            if re.search(r"at http://\S+:\d+", err.read_text(errors="replace")):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
                return 0
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return 124


def write_session(root: Path, online: bool, seed: int) -> None:
    """2 episodes (pick up, place) of 24 steps that succeed; online: a policy acts and a human takes over for
    steps 8-15, moving the arm left."""
    import numpy as np

    from data_tools.teleop_log import SessionWriter

    rng = np.random.default_rng(seed)
    with SessionWriter(root, fps=10, robot="sim-arm", action_dim=4, translation_scale_m=0.01,
                       cameras=("wrist", "head")) as w:
        for task in ("pick up the bolt", "place the bolt"):
            with w.episode() as ep:
                for t in range(24):
                    human = online and 8 <= t < 16
                    action = rng.uniform(-0.2, 0.2, 4)
                    if human:
                        action[1] = 0.9
                    ep.step(t=0.1 * t, task=task, obs={"proprio": rng.normal(size=3), "state": rng.normal(size=5)},
                            action=action, policy_action=rng.uniform(-0.2, 0.2, 4) if online else None,
                            intervention=human, reward=float(t == 23), done=t == 23,
                            images={"wrist": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                                    "head": rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)})


def prepare(root: Path, server: Server) -> None:
    """Make :data:`INPUTS` under ``root`` (the way their row says) and the bench demos."""
    from factories import write_synthetic_dataset

    root.mkdir(parents=True)
    write_session(root / "s1", online=False, seed=1)
    write_session(root / "s2", online=True, seed=2)
    for name in ("bolts.hdf5", "week.hdf5", "monday.hdf5", "tuesday.hdf5", "lr", "checkpoints/r1",
                 "checkpoints/recordings/rehearsal"):
        how = INPUTS[name]
        argv = shlex.split(how)
        assert argv[:2] == ["python", "-m"], how
        err = root / "prepare.err"
        rc = server.run(argv[2], argv[3:], root, root / "prepare.out", err, TIMEOUT_S)
        assert rc == 0, f"preparing {name} with `{how}` failed ({rc}):\n{err.read_text()[-3000:]}"
    write_synthetic_dataset(root / "my.hdf5", tasks=["pick up the bolt"], obs_dim=12, proprio_dim=4)
    data = root / "checkpoints" / "data"
    assert (data / BENCH_DEMOS[0]).is_file(), sorted(tree(data))
    os.link(data / BENCH_DEMOS[0], data / BENCH_DEMOS[1])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    server = Server(root / "server.log")
    try:
        prepare(root / "prepared", server)
        yield Workspace(root, server)
    finally:
        server.close()


# ------------------------------------------------------------------------------------------ tests


SAMPLE = """\
<!-- needs: gpu -->
```bash
python -m x a=1 \\
    b='c # d'   # a comment; needs: hub
# a comment line
```

```
$ python -m data_tools info f.hdf5
f.hdf5: 5 episodes
```

```text
python -m x [--a | --b]
```
"""


def test_blocks_split_into_commands_as_a_reader_reads_them():
    shell, transcript, synopsis = blocks("sample.md", SAMPLE)
    assert shell.is_shell and transcript.is_shell and not synopsis.is_shell
    (c,) = commands(shell)
    assert (c.line, c.text, c.needs) == (3, "python -m x a=1 b='c # d'", {"gpu", "hub"})
    assert [c.text for c in commands(transcript)] == ["python -m data_tools info f.hdf5"]


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=lambda b: f"{b.doc}:{b.line}")
def test_every_shell_block_yields_commands(block):
    cmds = commands(block)
    assert cmds, f"{block.doc}:{block.line}: a shell block without a command (fence a synopsis or a layout as text)"
    for c in cmds:
        assert c.needs <= NEEDS, f"{c.where}: unknown marker needs: {sorted(c.needs - NEEDS)} (one of {sorted(NEEDS)})"


@pytest.mark.parametrize("doc", [d for d in DOCS if d not in INDENTED_OK])
def test_no_command_outside_a_fenced_block(doc):
    bad = [f"{doc}:{no}: `{text}`" for no, text in indented_commands(doc)]
    assert not bad, "commands in indented code blocks (fence them as ```bash so the docs test runs them):\n" + \
        "\n".join(bad)


def test_every_table_row_is_used():
    """The placeholder, skip and xfail tables stay as short as the docs need."""
    texts = [c.text for c in COMMANDS]
    unused = [w for w, _, _ in PLACEHOLDERS if not any(w in t for t in texts)]
    unused += [t for t in (*NOT_RUN, *XFAIL) if t not in texts]
    unused += [n for n in INPUTS if not any(n in named_inputs(substitute(t)) for t in texts)]
    assert not unused, f"table rows no doc command uses: {unused}"


def test_readme_states_what_the_test_appends():
    text = " ".join((ROOT / "README.md").read_text().split())
    for appended in (FIT_SMOKE, EVAL_SMOKE, VLA_SMOKE):
        assert f"`{appended}`" in text, f"README.md should say that the docs test appends `{appended}`"


def _param(c: Command):
    marks = [pytest.mark.slow]
    if c.text in XFAIL:
        marks.append(pytest.mark.xfail(strict=True, reason=XFAIL[c.text]))
    return pytest.param(c, marks=marks, id=f"{c.doc}:{c.line}")


LEFTOVER = re.compile(r"<[a-z_]+>|\.\.\.|/path/to/|\[--|\bSESSION\b")


def test_the_test_command_is_what_ci_runs():
    assert "bash .ci/env python -m pytest" in NOT_RUN
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "bash .ci/env python -m pytest"


@pytest.mark.parametrize("cmd", [_param(c) for c in COMMANDS if c.text not in NOT_RUN])
def test_doc_command_runs_as_written(cmd, workspace):
    scratch = workspace.scratch(cmd)
    p = plan(cmd, scratch)
    left = [] if cmd.needs else LEFTOVER.findall(p.run)
    assert not left, f"{cmd.where}: placeholder(s) {left} left: make the doc concrete or add them to PLACEHOLDERS"
    key = (p.run.replace(str(scratch), "<scratch>"), p.cwd_root)
    if key in workspace.results:
        res, first = workspace.results[key]
        assert res, f"{cmd.where}: failed as {first}"
        return
    workspace.provide(p.run, scratch)
    before = tree(scratch), tree(workspace.root / "prepared" / "checkpoints" / "data")
    res = workspace.execute(p, scratch)
    workspace.results[key] = (None, cmd.where)
    shown = f"{cmd.where}\n  ran ({res.how}, in {ROOT if p.cwd_root else scratch}): {p.run}\n  exit status {res.rc}"
    tail = f"\n--- stdout (end)\n{res.stdout[-2000:]}\n--- stderr (end)\n{res.stderr[-4000:]}"
    if cmd.needs:
        lines = res.stderr.strip().splitlines()
        after = tree(scratch), tree(workspace.root / "prepared" / "checkpoints" / "data")
        assert res.rc == 2, f"{shown}: needs {sorted(cmd.needs)}, so it must fail here with exit status 2{tail}"
        assert len(lines) == 1 and lines[0].startswith("error:"), \
            f"{shown}: needs {sorted(cmd.needs)}: must fail with exactly one `error:` line on stderr{tail}"
        assert after == before, f"{shown}: failed but left {sorted((after[0] - before[0]) | (after[1] - before[1]))}"
    else:
        assert res.rc == 0, f"{shown}{tail}"
    workspace.results[key] = (res, cmd.where)


# ------------------------------------------------------------------------------------------ paths

PREFIXES = ("dual_actor", "docs", "conf", "tests", "benchmarks", "notebooks", "data_tools", ".ci")
PATH_RE = re.compile(r"(?<![\w./<>-])((?:%s)/[\w./*{}<>|-]*|[\w.-]+\.md)(::\w+)?" % "|".join(re.escape(p) for p in PREFIXES))
LINK_RE = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)")
GIT_PATH = re.compile(r"git show ([0-9a-f]{7,40}\^?):([\w./-]+)")


def named_paths(doc: str) -> list[tuple[int, str, str]]:
    """(line, path, ``::name`` or "") for every repository path ``doc`` names; patterns (``*``, ``<run>``,
    ``{a,b}``, ``a|b``) and git-history citations are left out."""
    out = []
    for no, text in enumerate((ROOT / doc).read_text().splitlines(), 1):
        text = GIT_PATH.sub("", text)
        text = re.sub(r"https?://\S+", "", text)
        for m in LINK_RE.finditer(text):  # [text](target): relative to the doc
            out.append((no, os.path.relpath((ROOT / doc).parent / m.group(1), ROOT), ""))
        for m in PATH_RE.finditer(text):
            path = m.group(1).rstrip(".,:;")
            if any(c in path for c in "*{}<>|") or "..." in path:
                continue
            out.append((no, path, (m.group(2) or "")[2:]))
    return out


def resolves(doc: str, path: str) -> bool:
    here = (ROOT / doc).parent
    if path.endswith(".md") and "/" not in path:
        return (here / path).exists() or (ROOT / path).exists()
    return (ROOT / path).exists() or (here / path).exists()


@pytest.mark.parametrize("doc", DOCS)
def test_repository_paths_exist(doc):
    missing = []
    for no, path, name in named_paths(doc):
        if not resolves(doc, path):
            missing.append(f"{doc}:{no}: {path} does not exist")
        elif name and not re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b",
                                    (ROOT / path).read_text(errors="replace"), re.M):
            missing.append(f"{doc}:{no}: {path} has no `{name}`")
    assert not missing, "\n".join(missing)


def test_history_citations_exist():
    """``git show <commit>:<path>`` (a file that is gone, as git keeps it) names a file of that commit (checked
    where the clone has the commit: a shallow clone or an export may not)."""
    def git(*args: str) -> bool:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True).returncode == 0

    cites = [(doc, no, m.group(1), m.group(2)) for doc in DOCS
             for no, text in enumerate((ROOT / doc).read_text().splitlines(), 1) for m in GIT_PATH.finditer(text)]
    bad = [f"{doc}:{no}: git show {rev}:{path}: no such file in {rev}" for doc, no, rev, path in cites
           if git("cat-file", "-e", f"{rev}^{{commit}}") and not git("cat-file", "-e", f"{rev}:{path}")]
    assert not bad, "\n".join(bad)
