"""notebooks/seed_comparison.py: the aggregation over seeds (hand-computed values) and its figure."""

import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location("seed_comparison", Path(__file__).parents[1] / "notebooks" / "seed_comparison.py")
sc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sc)


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
    out = sc.plot(arms, tmp_path / "fig.png")
    assert out.exists() and out.stat().st_size > 1000
