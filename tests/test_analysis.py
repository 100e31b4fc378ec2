"""dual_actor.analysis: the aggregation over seeds (hand-computed values), Table I, the chain table, the
dataset counts and the talk-and-tweak grid, and the figures the notebooks show."""

import json
from collections import Counter

import numpy as np
import pytest
from matplotlib.figure import Figure

from dual_actor import analysis as sc
from data_tools.hdf5_format import Episode


def _result(rates, avg=None):
    per = {t: {"success_rate": r} for t, r in zip(("a", "b"), rates)}
    return {"per_task": per, "average_success_rate": sum(rates) / len(rates) if avg is None else avg}


def _run(tmp, name, rates, curve_avgs, lat=0.1, pos=(1.0, 0.5)):
    d = tmp / name
    d.mkdir()
    (d / "eval.json").write_text(json.dumps(_result(rates)))
    pts = [{"online_steps": 1500 * i, "average_success_rate": v, "per_task": {}} for i, v in enumerate(curve_avgs)]
    (d / "learning_curve.json").write_text(json.dumps({"fps": 10.0, "points": pts}))
    cmds = {f"c{i}": {"mean": 0.01 * (i + 1), "positive_fraction": p} for i, p in enumerate(pos)}
    (d / "authority.json").write_text(json.dumps([{"latent_authority": {"x": lat, "y": lat, "z": lat},
                                                   "command_authority": cmds}]))
    return sc.load_run(d)


def test_spread_steps_and_tables(tmp_path):
    assert sc.spread([0.6, 0.8, 1.0]) == "0.80 +- 0.16 [0.60, 1.00]"  # pstdev = sqrt(0.08 / 3) = 0.163
    assert sc.steps_to([{"online_steps": 0, "average_success_rate": 0.5},
                        {"online_steps": 1500, "average_success_rate": 0.8}]) == 1500
    assert sc.steps_to([{"online_steps": 0, "average_success_rate": 0.9},  # the warm-up point does not count
                        {"online_steps": 1500, "average_success_rate": 0.5}]) is None
    assert sc.steps_to([{"online_steps": 0, "average_success_rate": 0.79}]) is None
    runs = [_run(tmp_path, "s0", [1.0, 0.6], [0.85, 0.9, 0.9]), _run(tmp_path, "s1", [0.8, 0.4], [0.5, 0.6, 0.85]),
            _run(tmp_path, "s2", [0.6, 0.2], [0.5, 0.6, 0.7], lat=0.3, pos=(0.2, 0.9))]
    arms = {"dual": runs}
    table = sc.success_table(arms)
    assert "| dual (3) | 0.80 +- 0.16 [0.60, 1.00] | 0.40 +- 0.16 [0.20, 0.60] | 0.60 +- 0.16 [0.40, 0.80] |" in table
    steps = sc.steps_table(arms)
    assert "| dual | 1500, 3000, never | 3000 (5.0 min) |" in steps  # median of 1500, 3000, inf
    assert "not reached" in sc.steps_table({"x": runs[2:] + runs[2:] + runs[:1]})
    auth = sc.authority_table(arms)
    assert "| dual | 0.17 +- 0.09 / 0.17 +- 0.09 / 0.17 +- 0.09 | 0.40 +- 0.14 [0.20, 0.50] |" in auth
    fig = sc.plot_curves(arms, out=tmp_path / "fig.png")
    assert isinstance(fig, Figure) and (tmp_path / "fig.png").stat().st_size > 1000


def test_table_one_and_chain_table(tmp_path):
    a = [_run(tmp_path, "a0", [1.0, 0.6], [0.5, 0.85]), _run(tmp_path, "a1", [0.8, 0.4], [0.5, 0.9])]
    b = [_run(tmp_path, "b0", [0.2, 0.0], [0.1, 0.2])]
    table = sc.table_one({"dual": a, "hg_dagger": b})
    # average: (0.8, 0.6) -> 70 +- 10 [60, 80]; steps to 80%: 1500 in both seeds -> 2.5 min at 10 Hz
    assert "| Ours (dual actor) (2) | 90 +- 10 [80, 100] | 50 +- 10 [40, 60] | 70 +- 10 [60, 80] | 100 / 100 / 100 / 100 |" in table
    assert "1500 (2.5 min at 10 Hz) (1500, 1500)" in table
    assert "| HG-DAgger (1) | 20 +- 0 [20, 20] | 0 +- 0 [0, 0] | 10 +- 0 [10, 10] | 28 / 28 / 20 / 25.3 | [10, 10] | - |" in table
    # the average's bootstrap over 2 seeds (0.8, 0.6): resampled means 0.6 / 0.7 / 0.8 -> [60, 80]; no
    # eval_warmup.json, no mean length, no effort in these stand-in evals: "-"
    assert "| 100 / 100 / 100 / 100 | [60, 80] | - | - | - | 1500 (2.5 min" in table
    chains = [{"bolts": 2, "trials": 4, "mean_subtasks_completed": 3.5,
               "success_at_k": [{"k": 1, "success_rate": 0.75}, {"k": 2, "success_rate": 0.5}]},
              {"bolts": 2, "trials": 4, "mean_subtasks_completed": 2.5,
               "success_at_k": [{"k": 1, "success_rate": 0.25}, {"k": 2, "success_rate": 0.0}]}]
    ct = sc.chain_table({"ours": chains})
    assert "| ours (2) | 50 +- 25 [25, 75] | 25 +- 25 [0, 50] | - | - | 3.00 +- 0.50 [2.50, 3.50] | 4, 4 |" in ct
    assert "| paper (ours, real robot) | 90 | 60 | 60 | 50 | - | - |" in ct
    found = sc.load_arms(tmp_path, ["a", "b", "c"])
    assert [r["name"] for r in found["a"]] == [] and found["c"] == []  # folders are <arm>-s<seed>
    for name in ("a-s0", "a-s10", "a-s2", "a-sx"):
        (tmp_path / name).mkdir()
    assert [p.name for p in sc.find_runs(tmp_path, "a")] == ["a-s0", "a-s2", "a-s10"]
    assert [p.name for p in sc.find_runs(tmp_path, "a", [2, 5])] == ["a-s2"]
    bars = sc.plot_success_bars({"dual": a, "hg": b})
    assert len(bars.axes[0].patches) == 2 * 3  # 2 arms x (2 tasks + average)


def _episode(kind, intervention, actions, commands=None, task="t"):
    n = len(intervention)
    return Episode(obs={"state": np.zeros((n, 2), np.float32)}, actions=np.asarray(actions, np.float32),
                   rewards=np.zeros(n), dones=np.zeros(n, bool), task=task, kind=kind,
                   intervention=np.asarray(intervention, bool), refinement_command=commands)


def test_dataset_counts_relabel_grid_and_frames(tmp_path):
    # 4 steps; steps 1-3 intervened; actions in units of 0.01 m: +y 0.2 units a step (2 mm), then x
    acts = [[0, 0, 0, 0], [0, 0.2, 0, 0], [0, 0.2, 0, 0], [0.05, 0, 0, 0]]
    on = _episode("online", [0, 1, 1, 1], acts, ["move up", "move left", "move left", "[null]"])
    demo = _episode("demo", [0, 0, 0, 0], acts)
    rows = sc.dataset_counts([on, demo, demo])
    assert rows == [{"task": "t", "kind": "demo", "episodes": 2, "steps": 8, "successes": 0, "intervention_steps": 0,
                     "talk_tweak_steps": 0},
                    {"task": "t", "kind": "online", "episodes": 1, "steps": 4, "successes": 0,
                     "intervention_steps": 3, "talk_tweak_steps": 3}]
    assert "| **total** | | 3 | 12 | 3 | 3 | 0 |" in sc.counts_table(rows)
    assert sc.segments(np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], bool)) == [2, 1, 3]
    grid = sc.relabel_grid([on, demo], windows=[1, 3], sigmas=[0.001, 0.003], translation_scale_m=0.01)
    # J=1: each step alone: 2 mm left, 2 mm left, 0.5 mm forward (below 1 mm)
    assert grid[(1, 0.001)] == Counter({"move left": 2, "[null]": 1})
    assert grid[(1, 0.003)] == Counter({"[null]": 3})  # 2 mm < 3 mm
    # J=3 (cut at the segment end): step 1 sums 4 mm left + 0.5 mm forward; step 2 2 mm left + 0.5 mm forward
    assert grid[(3, 0.001)] == Counter({"move left": 2, "[null]": 1})
    assert grid[(3, 0.003)] == Counter({"move left": 1, "[null]": 2})
    assert "| 1 | 2 (67%) / 1 | 0 (0%) / 0 |" in sc.relabel_table(grid)
    for fig in (sc.plot_relabel_grid(grid), sc.plot_actions([on, demo]), sc.plot_interventions([on, demo]),
                sc.plot_commands({"t": Counter(on.refinement_command)})):
        assert isinstance(fig, Figure)
    # frames: a dataset with a camera gets a strip (one row per camera); a state-only one gets None
    from data_tools.hdf5_format import write_dataset

    img = _episode("online", [0, 1, 1, 1], acts)
    img.obs["corner"] = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    write_dataset(tmp_path / "img.hdf5", [img], fps=10, env_args={"translation_scale_m": 0.01})
    write_dataset(tmp_path / "state.hdf5", [demo], fps=10, env_args={"sources": [{"env_args": {"translation_scale_m": 0.01}}]})
    strip = sc.frame_strip(tmp_path / "img.hdf5", frames=3)
    assert isinstance(strip, Figure) and len(strip.axes) == 3
    assert sc.frame_strip(tmp_path / "state.hdf5") is None
    assert sc.translation_scale(tmp_path / "img.hdf5") == sc.translation_scale(tmp_path / "state.hdf5") == 0.01


def test_fit_run_skips_finished_runs_and_refuses_dead_ones(tmp_path):
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "eval.json").write_text("{}")
    assert sc.fit_run(tmp_path, "done", ["no_such_key=1"]) == (tmp_path / "done", False)  # no subprocess
    (tmp_path / "dead").mkdir()
    try:
        sc.fit_run(tmp_path, "dead", [])
    except RuntimeError as e:
        assert "delete it" in str(e)
    else:
        raise AssertionError("a run folder without last.ckpt must not be reused")
    assert sc.repo_path("checkpoints") == sc.REPO_ROOT / "checkpoints" and sc.repo_path(tmp_path) == tmp_path


def test_steps_to_counts_an_average_rounded_below_the_threshold():
    avg = float(np.mean([0.9, 0.9, 0.6]))  # 0.7999999999999999 as evaluate averages it: 90 / 90 / 60 % is 80%
    assert avg < 0.8
    curve = [{"online_steps": 0, "average_success_rate": 0.9}, {"online_steps": 1500, "average_success_rate": 0.7},
             {"online_steps": 3000, "average_success_rate": avg}]
    assert sc.steps_to(curve, 0.8) == 3000 and sc.steps_to(curve[:2], 0.8) is None


def _full_run(tmp, name, rates, warm, lengths, effort, online=1000, curve=()):
    d = tmp / name
    d.mkdir()
    per = {t: {"success_rate": r, "mean_episode_length": n} for t, r, n in zip(("a", "b"), rates, lengths)}
    ev = {"per_task": per, "average_success_rate": sum(rates) / 2, "online_steps": online, "effort_steps": effort}
    (d / "eval.json").write_text(json.dumps(ev))
    (d / "eval_warmup.json").write_text(json.dumps({"per_task": per, "average_success_rate": warm}))
    pts = [{"online_steps": 500 * i, "average_success_rate": v, "effort_steps": e, "per_task": {}} for i, (v, e) in
           enumerate(curve)]
    (d / "learning_curve.json").write_text(json.dumps({"fps": 10.0, "points": pts}))
    return sc.load_run(d)


def test_table_one_reports_warmup_length_effort_and_pairs_by_seed(tmp_path):
    dual = [_full_run(tmp_path, "dual-s0", [1.0, 0.8], 0.7, [50, 100], 100, curve=[(0.7, 0), (0.9, 100)]),
            _full_run(tmp_path, "dual-s1", [0.8, 0.6], 0.5, [60, 120], 300, curve=[(0.5, 0), (0.7, 300)])]
    single = [_full_run(tmp_path, "single-s0", [0.8, 0.8], 0.7, [50, 100], 200),
              _full_run(tmp_path, "single-s1", [0.8, 0.4], 0.5, [60, 120], 200),
              _full_run(tmp_path, "single-s2", [0.2, 0.2], 0.1, [60, 120], 200)]
    table = sc.table_one({"dual": dual})
    # warm-up averages 0.7, 0.5 -> 60 +- 10; lengths (50+100)/2, (60+120)/2 = 75, 90 -> 82.5 +- 7.5;
    # effort 100 / 1000, 300 / 1000 -> 20.0 +- 10.0 %
    assert "| 60 +- 10 [50, 70] | 82.5 +- 7.5 [75.0, 90.0] | 20.0 +- 10.0 [10.0, 30.0] |" in table
    # steps to 80%: dual-s0 at its second point (500 steps), dual-s1 never (one of two: not most seeds); runs without curve points: no claim
    assert table.rstrip().endswith("| not reached by most seeds (500, never) |")
    assert sc.table_one({"single": single}).rstrip().endswith("| - (no learning curve) |")
    paired = sc.paired_table(dual, single)
    # seeds 0, 1 only; average: dual 0.9, 0.7 vs single 0.8, 0.6 -> +10.0 both seeds, 2 wins, sign p = 2 / 4
    assert "paired over seeds 0, 1" in paired
    assert "| average | +10.0 | [+10.0, +10.0] | 2 / 0 / 0 | 0.50 |" in paired
    assert "| a | +10.0 | [+0.0, +20.0] | 1 / 1 / 0 | 1.00 |" in paired
    assert sc.paired_table(dual[:1], single[1:2]) == "(no seed has both arms)"
    fig = sc.plot_success_vs_effort({"dual": dual, "single": single}, out=tmp_path / "effort.png")
    line = fig.axes[0].lines[0]  # dual's curve: effort (0, 200) steps -> minutes at 10 Hz, mean success per point
    assert list(line.get_xdata()) == [0.0, 200 / 10 / 60] and list(line.get_ydata()) == [0.6, 0.8]
    assert len(fig.axes[0].lines) == 2  # single's runs have no curve points with effort: left out


def test_keep_record_keeps_results_and_scalars_not_checkpoints(tmp_path):
    """A record (docs/runs/) holds a run's JSON results, config and chosen TensorBoard scalars, and reads back through
    load_run / run_scalars exactly as the run folder does; an unfinished run is refused with nothing written."""
    from torch.utils.tensorboard import SummaryWriter

    (tmp_path / "runs").mkdir()
    run = _run(tmp_path / "runs", "dual-s0", [1.0, 0.5], [0.5, 0.75])["path"]
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "last.ckpt").write_bytes(b"\0" * 4096)
    with pytest.raises(FileNotFoundError, match="no summary.json"):  # eval.json written, the run still writing
        sc.keep_record(run, tmp_path / "records")
    (run / "summary.json").write_text(json.dumps({"updates": 3}))
    (run / "policy").mkdir()
    (run / "policy" / "model.safetensors").write_bytes(b"\0" * 64)
    with SummaryWriter(str(run / "tb")) as w:
        for step, v in ((0, 0.5), (100, 0.25), (200, 0.125)):
            w.add_scalar("rollout/intervention_rate", v, step)
            w.add_scalar("other/tag", 1.0, step)
    rec = sc.keep_record(run, tmp_path / "records")
    assert rec == tmp_path / "records" / "dual-s0"
    assert sorted(p.name for p in rec.iterdir()) == ["authority.json", "config.yaml", "eval.json",
                                                      "learning_curve.json", "scalars.json", "summary.json"]
    assert json.loads((rec / "scalars.json").read_text()) == {"rollout/intervention_rate": [[0, 0.5], [100, 0.25],
                                                                                           [200, 0.125]]}
    kept, orig = sc.load_run(rec), sc.load_run(run)
    assert {k: v for k, v in kept.items() if k != "path"} == {k: v for k, v in orig.items() if k != "path"}
    assert sc.run_scalars(kept, "rollout/intervention_rate") == sc.run_scalars(orig, "rollout/intervention_rate") \
        == [(0, 0.5), (100, 0.25), (200, 0.125)]
    assert sc.run_scalars(kept, "other/tag") == []  # not kept
    (run / "eval.json").write_text(json.dumps(_result([0.0, 0.0])))  # kept again: the record is replaced whole
    assert sc.load_run(sc.keep_record(run, tmp_path / "records"))["eval"]["average_success_rate"] == 0.0
    unfinished = tmp_path / "runs" / "single-s0"
    unfinished.mkdir()
    (unfinished / "learning_curve.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no eval.json"):
        sc.keep_record(unfinished, tmp_path / "records")
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["dual-s0"]


def test_runs_table_rows_by_hand(tmp_path):
    d = tmp_path / "dual-s3"
    d.mkdir()
    ev = {**_result([1.0, 0.5]), "online_steps": 200, "takeover_steps": 10, "spoken_steps": 20, "effort_steps": 30}
    (d / "eval.json").write_text(json.dumps(ev))
    (d / "eval_warmup.json").write_text(json.dumps(_result([0.5, 0.25])))
    table = sc.runs_table([sc.load_run(d)])
    assert "| dual-s3 | 0.50 / 0.25 (0.38) | 1.00 / 0.50 (0.75) | - | 10 | 20 | 30 (15.0%) |" in table


def test_results_md_holds_the_vla_probe_tables_generated_from_the_record():
    """docs/results.md's VLA-bench probe tables are ``dual_actor.vla.probe.probe_md`` of the kept probe.json and
    probe_levers.json, verbatim between their marks."""
    from dual_actor.vla.probe import probe_md

    rec = sc.REPO_ROOT / "docs" / "runs" / "vla_bench" / "bench_vla"
    generated = probe_md(json.loads((rec / "probe.json").read_text()), json.loads((rec / "probe_levers.json").read_text()))
    text = (sc.REPO_ROOT / "docs" / "results.md").read_text()
    mark = "<!-- generated: dual_actor.vla.probe.probe_md(docs/runs/vla_bench/bench_vla) -->\n"
    assert mark in text, "docs/results.md has no block generated from docs/runs/vla_bench/bench_vla"
    block = text[text.index(mark) + len(mark):]
    assert block[:block.index("<!-- /generated -->")].strip() == generated.strip(), (
        "docs/results.md is stale: paste dual_actor.vla.probe.probe_md of docs/runs/vla_bench/bench_vla's probe files")


@pytest.mark.parametrize("name", ["table1", "demos5", "vla_bench"])
def test_results_md_holds_the_tables_generated_from_the_records(name):
    """Nothing in docs/results.md's tables from kept records is typed by hand: the block that
    ``dual_actor.analysis.results_tables("docs/runs/<name>")`` generates from them is there verbatim, between its marks."""
    root = sc.REPO_ROOT / "docs" / "runs" / name
    generated = sc.results_tables(root)
    assert "| Ours (dual actor) (" in generated
    text = (sc.REPO_ROOT / "docs" / "results.md").read_text()
    mark = f'<!-- generated: dual_actor.analysis.results_tables("docs/runs/{name}") -->\n'
    assert mark in text, f"docs/results.md has no block generated from docs/runs/{name}"
    block = text[text.index(mark) + len(mark):]
    assert block[: block.index("\n<!-- /generated -->")] == generated, \
        f"docs/results.md is stale: paste dual_actor.analysis.results_tables('docs/runs/{name}')"
