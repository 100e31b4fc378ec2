"""notebooks/*.ipynb: committed clean, and each executed end to end on tiny data (TINY = True) with
notebooks/execute.py, the command the maintainer runs them with; a failing cell fails the test."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from statistics import mean, pstdev

import h5py
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ["01_dataset", "02_offline_ablations", "03_results"]
CELL_TIMEOUT = 240  # seconds per cell: 01's tiny dataset and 02's three fits are the long ones

spec = importlib.util.spec_from_file_location("nb_execute", NOTEBOOKS / "execute.py")
ex = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ex)


def run_notebook(name: str, tmp: Path, **params) -> nbformat.NotebookNode:
    """A temporary copy of the notebook, executed with TINY = True and ``params``."""
    copy = tmp / f"{name}.ipynb"
    shutil.copy(NOTEBOOKS / f"{name}.ipynb", copy)
    return ex.execute(copy, {"TINY": True, **params}, timeout=CELL_TIMEOUT, in_place=True)


def outputs(nb, kind: str) -> list[str]:
    """Every output of one kind: "stream" text, "text/markdown" or "image/png"."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if kind == "stream" and o.output_type == "stream":
                out.append(o.text)
            elif o.output_type in ("display_data", "execute_result") and kind in o.data:
                out.append(o.data[kind])
    return out


def pct_spread(values) -> str:
    """Independent of dual_actor.analysis.spread: mean +- population std [min, max], in %, no decimals."""
    v = [100 * x for x in values]
    return f"{mean(v):.0f} +- {pstdev(v):.0f} [{min(v):.0f}, {max(v):.0f}]"


# ------------------------------------------------------------------------------------------- fast


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_are_clean(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3" and set(nb.metadata) <= {"kernelspec", "language_info"}
    code = [c for c in nb.cells if c.cell_type == "code"]
    # committed with the outputs of the real runs (notebooks/README.md), never with a failed cell's
    assert not [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert code[0].metadata.get("tags") == ["parameters"] and "TINY = False" in code[0].source
    assert all("tags" not in c.metadata or c.metadata.tags == [ex.INJECTED] for c in code[1:])
    # the defaults stay in the parameters cell: a committed run's values are in their own cell
    assert "# injected" not in code[0].source
    text = "\n".join(c.source for c in nb.cells)
    assert "argparse" not in text and "matplotlib.use" not in text


def test_inject_adds_a_cell_after_the_defaults_and_refuses_unknown_ones():
    nb = nbformat.read(NOTEBOOKS / "02_offline_ablations.ipynb", as_version=4)
    defaults = ex.parameters_cell(nb).source
    ex.inject(nb, {"SEEDS": [4, 5], "RUN_ROOT": "/x y", "TINY": True})
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == defaults and code[1].metadata.tags == [ex.INJECTED]
    assert "SEEDS = [4, 5]" in code[1].source and "RUN_ROOT = '/x y'" in code[1].source
    ns = {}
    exec(code[0].source + "\n" + code[1].source, ns)  # still valid Python, injected values win
    assert ns["SEEDS"] == [4, 5] and ns["TINY"] is True and ns["TRIALS"] == 25 and ns["ARMS"] is None
    # a second injection starts again from the defaults: nothing of the first one is left
    ex.inject(nb, {"TRIALS": 3})
    injected = [c for c in nb.cells if ex.INJECTED in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "TRIALS = 3" in injected[0].source and "SEEDS" not in injected[0].source
    ex.inject(nb, {})
    assert not [c for c in nb.cells if ex.INJECTED in c.metadata.get("tags", [])]
    nbformat.validate(nb)
    with pytest.raises(KeyError, match="SEED"):
        ex.inject(nb, {"SEED": 1})
    assert ex.parse_value("[0,1]") == [0, 1] and ex.parse_value("checkpoints/x") == "checkpoints/x"
    assert ex.parse_value("True") is True and ex.parse_value("0.5") == 0.5


def test_a_failing_cell_fails_and_keeps_the_outputs(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("print('before')"),
                                         nbformat.v4.new_code_cell("assert X == 1, 'boom'")],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    nbformat.write(nb, tmp_path / "f.ipynb")
    ex.execute(tmp_path / "f.ipynb", {}, out=tmp_path / "ok.ipynb", timeout=60)
    r = subprocess.run([sys.executable, str(NOTEBOOKS / "execute.py"), str(tmp_path / "f.ipynb"), "X=2",
                        "--timeout", "60", "--in-place"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "boom" in r.stderr
    assert "before" in "".join(outputs(nbformat.read(tmp_path / "f.ipynb", as_version=4), "stream"))


def test_execute_needs_to_be_told_where_to_write(tmp_path):
    """Without --out or --in-place nothing runs and the notebook is left as it is (the committed ones included);
    --out DIR writes DIR/<notebook's name>, the notebook untouched."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("X = 1", metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell("print(X * 7)")],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    src = tmp_path / "n.ipynb"
    nbformat.write(nb, src)
    before = src.read_bytes()

    def run(*args):
        return subprocess.run([sys.executable, str(NOTEBOOKS / "execute.py"), str(src), *args],
                              capture_output=True, text=True, timeout=120)

    r = run("X=2")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [f"error: {src}: say where the executed notebook goes: --out OUT.ipynb (or a "
                                     "folder), or --in-place to write its outputs into it"]
    r = run("X=2", "--out", str(tmp_path / "missing" / "o.ipynb"))
    assert r.returncode == 2 and r.stderr.splitlines() == [f"error: --out {tmp_path / 'missing' / 'o.ipynb'}: no such "
                                                          f"folder {tmp_path / 'missing'}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.ipynb"] and src.read_bytes() == before
    (tmp_path / "runs").mkdir()
    r = run("X=2", "--out", str(tmp_path / "runs"), "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert "14" in "".join(outputs(nbformat.read(tmp_path / "runs" / "n.ipynb", as_version=4), "stream"))
    assert src.read_bytes() == before
    with pytest.raises(ValueError, match="--in-place"):
        ex.execute(src, {"X": 3})
    assert src.read_bytes() == before


# ----------------------------------------------------------------------------------- executed (slow)


def h5_counts(path: Path) -> dict:
    """Per (task, kind): episodes, steps, intervened steps, steps with a non-null command; straight from h5py."""
    counts = {}
    with h5py.File(path, "r") as f:
        for g in f["data"].values():
            c = counts.setdefault((g.attrs["task"], g.attrs["kind"]), [0, 0, 0, 0])
            cmds = [x.decode() if isinstance(x, bytes) else x for x in g["refinement_command"][()]]
            c[0] += 1
            c[1] += len(g["actions"])
            c[2] += int(g["intervention"][()].sum())
            c[3] += sum(x != "[null]" for x in cmds)
    return counts


@pytest.mark.slow
def test_01_dataset(tmp_path):
    data = tmp_path / "tiny.hdf5"  # absent: the notebook makes a short smoke run and builds DATA from it
    nb = run_notebook("01_dataset", tmp_path, DATA=str(data))
    md = "\n".join(outputs(nb, "text/markdown"))
    assert f"built from run {tmp_path / 'tiny-runs' / 'tiny'}: its warm-up demos and its online teleop log" \
        in "".join(outputs(nb, "stream"))
    counts = h5_counts(data)
    assert {kind for _, kind in counts} == {"demo", "online"} and sum(c[2] for c in counts.values()) > 0
    for (task, kind), (eps, steps, intv, tt) in counts.items():
        assert f"| {task} | {kind} | {eps} | {steps} | {intv} | {tt} |" in md, md
    intervened = sum(c[2] for c in counts.values())
    assert f"{intervened} intervened steps" in md and "| J \\ sigma (m) | 0.001 | 0.005 |" in md
    stream = "".join(outputs(nb, "stream"))
    # the online steps were labelled with J=5, sigma=1 mm as they happened: the same rule gives them back
    assert f"{intervened} of {intervened} intervened steps get their stored command back" in stream
    assert "state-only dataset" in stream
    assert len(outputs(nb, "image/png")) == 4  # interventions, commands, actions, relabel grid


@pytest.mark.slow
def test_02_offline_ablations(tmp_path):
    run_root = tmp_path / "runs"
    nb = run_notebook("02_offline_ablations", tmp_path, DATA=str(tmp_path / "demos.hdf5"), RUN_ROOT=str(run_root))
    md = "\n".join(outputs(nb, "text/markdown"))
    for arm, label in (("default", "anchored head (default)"), ("plain-consistency", "plain head, consistency BC"),
                       ("shared-critic", "shared critic (no task weights)")):
        run = run_root / f"{arm}-s0"
        ev = json.loads((run / "eval.json").read_text())
        assert ev["online_steps"] == 0 and all(r["trials"] == 1 for r in ev["per_task"].values())
        a = ev["average_success_rate"]
        assert f"| {label} (1) |" in md and f"| {a:.2f} +- 0.00 [{a:.2f}, {a:.2f}] |" in md
    cfg = (run_root / "plain-consistency-s0" / "config.yaml").read_text()
    assert "primary_head: plain" in cfg and "bc_form: consistency" in cfg
    assert "critic: shared" in (run_root / "shared-critic-s0" / "config.yaml").read_text()
    assert len(outputs(nb, "image/png")) == 1
    # run again: every arm's eval.json exists, nothing is refitted
    again = run_notebook("02_offline_ablations", tmp_path, DATA=str(tmp_path / "demos.hdf5"), RUN_ROOT=str(run_root))
    assert "".join(outputs(again, "stream")).count("(done before)") == 3


def _smoke_fit(run_root: Path, name: str, *overrides: str) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "dual_actor.fit", "experiment=smoke", f"run_root={run_root}",
                        f"run_name={name}", "online.env_steps=240", "trainer.progress_bar=false", *overrides],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_root / name


def _second_seed(run: Path, rates: list[float]) -> None:
    """``<arm>-s1``: a copy of ``<arm>-s0`` with another final evaluation and a last curve point at 0.9."""
    dst = run.parent / run.name.replace("-s0", "-s1")
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("last.ckpt", "policy*", "teleop"))
    ev = json.loads((dst / "eval.json").read_text())
    for t, r in zip(ev["per_task"], rates):
        ev["per_task"][t]["success_rate"] = r
    ev["average_success_rate"] = sum(rates) / len(rates)
    (dst / "eval.json").write_text(json.dumps(ev))
    curve = json.loads((dst / "learning_curve.json").read_text())
    curve["points"][-1]["average_success_rate"] = 0.9
    (dst / "learning_curve.json").write_text(json.dumps(curve))


@pytest.mark.slow
def test_03_results(tmp_path):
    from dual_actor.chain import chain_summary

    root = tmp_path / "runs"
    dual = _smoke_fit(root, "dual-s0", "eval.with_commands=true")
    hg = _smoke_fit(root, "hg_dagger-s0", "algo=hg_dagger")
    _second_seed(dual, [1.0, 0.5, 0.5])
    _second_seed(hg, [0.5, 0.0, 0.0])
    # chain results in dual_actor.chain's format, for the dual arm: (ok, ok, ok | ...) outcomes of 4 chains of 2 bolts
    T, F = True, False
    for seed, chains in ((0, [[T] * 6, [T, T, T, F], [F], [T, T, F]]), (1, [[T] * 6, [T] * 6, [T] * 5 + [F], [F]])):
        res = chain_summary([{"outcomes": o, "lengths": [10] * len(o)} for o in chains], bolts=2, max_episode_steps=40,
                            seed=10000, carry_hand=True, with_commands=False)
        (root / f"dual-s{seed}" / "chain.json").write_text(json.dumps(res))
    expert = chain_summary([{"outcomes": o, "lengths": [10] * len(o)} for o in ([T] * 6, [T, F], [T] * 6, [F])],
                           bolts=2, max_episode_steps=40, seed=10000, carry_hand=True, with_commands=False)
    (root / "expert_chain.json").write_text(json.dumps({**expert, "expert": "corrected"}))  # K=1: 2/4, K=2: 2/4
    rq5 = tmp_path / "rq5"  # RQ5: one run tested on A (its eval.json) and on B (eval_B.json: 0.2 / 0 / 0.1)
    shutil.copytree(dual, rq5 / "rq5-r2-s0", ignore=shutil.ignore_patterns("last.ckpt", "policy*", "teleop"))
    ev_b = json.loads((dual / "eval.json").read_text())
    for t, r in zip(ev_b["per_task"], (0.2, 0.0, 0.1)):
        ev_b["per_task"][t]["success_rate"] = r
    ev_b["average_success_rate"] = 0.1
    (rq5 / "rq5-r2-s0" / "eval_B.json").write_text(json.dumps(ev_b))
    nb = run_notebook("03_results", tmp_path, RUN_ROOT=str(root), REGIME_ROOT=str(root), RQ5_ROOT=str(rq5))
    md = "\n".join(outputs(nb, "text/markdown"))
    stream = "".join(outputs(nb, "stream"))
    for arm, label, paper in (("dual", "Ours (dual actor)", "100 / 100 / 100 / 100"), ("hg_dagger", "HG-DAgger", "28 / 28 / 20 / 25.3")):
        evals = [json.loads((root / f"{arm}-s{s}" / "eval.json").read_text()) for s in (0, 1)]
        rows = [line for line in md.splitlines() if line.startswith(f"| {label} (2) |") and paper in line]
        assert len(rows) == 1, md  # Table I's row: both seeds, the paper's numbers beside
        row = rows[0]
        assert pct_spread([e["average_success_rate"] for e in evals]) in row, (row, evals)
        assert pct_spread([e["per_task"]["place the bolt"]["success_rate"] for e in evals]) in row
    for label in ("DSRL (paper)", "DSRL (published)", "HIL-ConRFT flat", "Ours w/o dual actor"):
        assert f"{label:<22} 0 run(s): -  <- no runs" in stream
    assert "dual vs single: needs runs of both arms: skipped" in stream
    # chains: K = 1 succeeded in 2/4 (seed 0) and 3/4 (seed 1); K = 2 in 1/4 and 2/4
    assert "| Ours (dual actor) (2) | 62 +- 12 [50, 75] | 38 +- 12 [25, 50] | - | - |" in md, md
    assert "| paper (ours, real robot) | 90 | 60 | 60 | 50 |" in md
    assert "| the operator's scripted expert (corrected): the ceiling (1) | 50 +- 0 [50, 50] | 50 +- 0 [50, 50] |" in md
    # the low-data regime section reads REGIME_ROOT (here the same runs): its table has no paper column values,
    # and dual is paired with HG-DAgger
    regime = md.split("dual - hg_dagger, paired by seed:")[1]
    assert "paired over seeds 0, 1" in regime and re.search(r"\| average \| [+-]\d+\.\d \|", regime), regime
    assert md.count("| Ours (dual actor) (2) |") >= 2
    # RQ5: tested on B from eval_B.json
    rows_b = md.split("Tested on robot B")[1]
    assert "| + online on A and B (1) | 20 +- 0 [20, 20] | 0 +- 0 [0, 0] | 10 +- 0 [10, 10] | 10 +- 0 [10, 10] |" in rows_b
    assert "Episode length per task" in md
    assert "no chain_commands.json in any run: skipped" in stream
    assert "With a simulated operator speaking refinement commands" in md  # dual-s0 has eval_commands.json
    tb = stream.split("rollout/intervention_rate: ")[1].splitlines()[0]
    assert "dual-s0" in tb and "dual-s0 0 points" not in tb, tb
    assert len(outputs(nb, "image/png")) == 5  # curves, per-task curves, success vs effort, TensorBoard scalar, regime
