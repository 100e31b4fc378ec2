"""Curation commands (data_tools.curate) on tiny hand-built HDF5 datasets."""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from data_tools import curate
from data_tools.cli import add_curate_subcommands as add_subcommands
from data_tools.curate import CurateError, CurateWarning
from data_tools.errors import DataToolsError
from data_tools.hdf5_format import DatasetFormatError, Episode, dataset_info, read_episodes, write_dataset

NULL = "[null]"


def ep(task, n, kind="demo", success=False, intervention=(), commands=None, actions=None, images=False,
       action_dim=4, episode_id="", seed=0):
    """An episode of ``n`` steps; ``intervention``: intervened step indices."""
    rng = np.random.default_rng(seed)
    iv = np.zeros(n, bool)
    iv[list(intervention)] = True
    rewards = np.zeros(n, np.float32)
    if success:
        rewards[-1] = 1.0
    if actions is None:
        actions = rng.uniform(-1, 1, size=(n, action_dim)).astype(np.float32)
    obs = {"state": rng.normal(size=(n, 2)).astype(np.float32)}
    if images:
        obs["wrist"] = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    if commands is None:
        commands = ["move left" if v else NULL for v in iv]
    return Episode(obs=obs, actions=actions, rewards=rewards, dones=rewards > 0, task=task, kind=kind,
                   intervention=iv, refinement_command=commands, episode_id=episode_id)


def five_episodes(images=False):
    """demo_0 pick/demo 4 steps success; demo_1 pick/online 6 steps fail, intervened 1..2;
    demo_2 place/demo 3 steps success; demo_3 place/online 8 steps success, intervened 2..5
    (commands: 2x "move left", "move right", "move left"); demo_4 pick/demo 5 steps fail."""
    cmds3 = [NULL, NULL, "move left", "move left", "move right", "move left", NULL, NULL]
    return [
        ep("pick", 4, "demo", True, images=images, episode_id="s0/e0", seed=0),
        ep("pick", 6, "online", False, intervention=[1, 2], images=images, episode_id="s0/e1", seed=1),
        ep("place", 3, "demo", True, images=images, episode_id="s0/e2", seed=2),
        ep("place", 8, "online", True, intervention=[2, 3, 4, 5], commands=cmds3, images=images,
           episode_id="s0/e3", seed=3),
        ep("pick", 5, "demo", False, images=images, episode_id="s0/e4", seed=4),
    ]


@pytest.fixture
def ds(tmp_path) -> Path:
    return write_dataset(tmp_path / "a.hdf5", five_episodes(images=True), fps=10,
                         env_args={"translation_scale_m": 0.01, "robot": "sim"},
                         masks={"train": ["demo_0", "demo_1", "demo_2", "demo_3"], "valid": ["demo_4"]})


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def episodes(path, **kw):
    return list(read_episodes(path, **kw))


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="data_tools")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_errors_are_data_tools_errors():
    assert issubclass(CurateError, DataToolsError)


# ---------------------------------------------------------------------------------- info


def test_info_counts_per_task_and_kind(ds):
    before = sha(ds)
    s = curate.info(ds)
    assert sha(ds) == before
    groups = {(g["task"], g["kind"]): g for g in s["groups"]}
    assert list(groups) == [("pick", "demo"), ("pick", "online"), ("place", "demo"), ("place", "online")]
    g = groups[("pick", "demo")]
    assert (g["episodes"], g["steps"], g["successes"], g["intervened_steps"]) == (2, 9, 1, 0)
    assert g["success_rate"] == 0.5 and g["intervention_ratio"] == 0.0 and g["commands"] == {}
    g = groups[("pick", "online")]
    assert (g["episodes"], g["steps"], g["successes"]) == (1, 6, 0)
    assert g["intervention_ratio"] == pytest.approx(2 / 6)
    assert g["commands"] == {"move left": 2}
    g = groups[("place", "online")]
    assert g["intervention_ratio"] == 0.5 and g["success_rate"] == 1.0
    assert list(g["commands"].items()) == [("move left", 3), ("move right", 1)]
    t = s["total"]
    assert (t["episodes"], t["steps"], t["successes"], t["intervened_steps"]) == (5, 26, 3, 6)
    assert t["success_rate"] == pytest.approx(0.6) and t["intervention_ratio"] == pytest.approx(6 / 26)
    assert list(t["commands"].items()) == [("move left", 5), ("move right", 1)]
    assert s["masks"] == {"train": 4, "valid": 1} and s["fps"] == 10.0
    json.dumps(s)  # serialisable


def test_info_cli_table_and_json(ds, capsys):
    assert run_cli(["info", str(ds)]) == 0
    out = capsys.readouterr().out
    assert "5 episodes, 26 steps" in out
    row = next(line for line in out.splitlines() if line.startswith("place ") and "online" in line)
    assert row.split()[-4:] == ["1", "8", "100.0%", "50.0%"]
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "5", "26", "60.0%", "23.1%"]
    assert "5  move left" in out
    assert run_cli(["info", str(ds), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["steps"] == 26


def test_info_cli_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    assert run_cli(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.hdf5" in err[0]


# ---------------------------------------------------------------------------------- filter


@pytest.mark.parametrize(
    "criteria, kept_ids",
    [
        (dict(task=["pick"]), ["s0/e0", "s0/e1", "s0/e4"]),
        (dict(task="place"), ["s0/e2", "s0/e3"]),
        (dict(success=True), ["s0/e0", "s0/e2", "s0/e3"]),
        (dict(success=False), ["s0/e1", "s0/e4"]),
        (dict(kind="online"), ["s0/e1", "s0/e3"]),
        (dict(min_length=5), ["s0/e1", "s0/e3", "s0/e4"]),
        (dict(max_length=4), ["s0/e0", "s0/e2"]),
        (dict(min_length=4, max_length=5), ["s0/e0", "s0/e4"]),
        (dict(has_intervention=True), ["s0/e1", "s0/e3"]),
        (dict(has_intervention=False), ["s0/e0", "s0/e2", "s0/e4"]),
        (dict(task=["pick", "place"], success=True, kind="demo"), ["s0/e0", "s0/e2"]),
    ],
)
def test_filter_criteria(ds, tmp_path, criteria, kept_ids):
    before = sha(ds)
    out = tmp_path / "f.hdf5"
    assert curate.filter_dataset(ds, out, **criteria) == len(kept_ids)
    assert sha(ds) == before
    got = episodes(out)
    assert [e.episode_id for e in got] == kept_ids
    assert [e.name for e in got] == [f"demo_{i}" for i in range(len(kept_ids))]


def test_filter_copies_data_and_remaps_masks(ds, tmp_path):
    out = tmp_path / "f.hdf5"
    assert curate.filter_dataset(ds, out, task=["pick"]) == 3  # demo_0, demo_1, demo_4
    src = {e.episode_id: e for e in episodes(ds)}
    for e in episodes(out):
        s = src[e.episode_id]
        for key in ("state", "wrist"):
            np.testing.assert_array_equal(e.obs[key], s.obs[key])
        np.testing.assert_array_equal(e.actions, s.actions)
        np.testing.assert_array_equal(e.intervention, s.intervention)
        assert e.refinement_command == s.refinement_command and e.task == s.task and e.kind == s.kind
    info = dataset_info(out)
    assert info.masks == {"train": ["demo_0", "demo_1"], "valid": ["demo_2"]}
    assert info.env_args == {"translation_scale_m": 0.01, "robot": "sim"} and info.fps == 10.0


def test_filter_nothing_kept_writes_nothing(ds, tmp_path):
    out = tmp_path / "f.hdf5"
    with pytest.raises(CurateError, match="no episode matches"):
        curate.filter_dataset(ds, out, kind="online", success=True, has_intervention=False)
    assert not out.exists() and leftovers(tmp_path) == []


def test_filter_unknown_task_warns(ds, tmp_path):
    with pytest.warns(CurateWarning, match="'pik'"):
        assert curate.filter_dataset(ds, tmp_path / "f.hdf5", task=["pik", "place"]) == 2


def test_filter_bad_arguments(ds, tmp_path):
    for kw in (dict(kind="teleop"), dict(min_length=0), dict(min_length=6, max_length=5), dict(task=[])):
        with pytest.raises(CurateError):
            curate.filter_dataset(ds, tmp_path / "f.hdf5", **kw)
    assert not (tmp_path / "f.hdf5").exists()


def test_filter_refuses_overwrite_and_its_input(ds, tmp_path):
    out = tmp_path / "f.hdf5"
    out.write_bytes(b"keep me")
    with pytest.raises(CurateError, match="exists"):
        curate.filter_dataset(ds, out, task=["pick"])
    assert out.read_bytes() == b"keep me"
    assert curate.filter_dataset(ds, out, task=["pick"], force=True) == 3
    before = sha(ds)
    with pytest.raises(CurateError, match="input"):
        curate.filter_dataset(ds, ds, task=["pick"], force=True)
    assert sha(ds) == before


def test_filter_cli(ds, tmp_path, capsys):
    out = tmp_path / "f.hdf5"
    assert run_cli(["filter", str(ds), "-o", str(out), "--task", "pick", "place", "--success", "--kind", "demo",
                    "--min-length", "3", "--no-intervention", "-q"]) == 0
    assert "kept 2 of 5 episodes" in capsys.readouterr().out
    assert [e.episode_id for e in episodes(out)] == ["s0/e0", "s0/e2"]
    assert run_cli(["filter", str(ds), "-o", str(out), "--failure"]) == 2  # exists
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--force" in err[0]
    assert run_cli(["filter", str(ds), "-o", str(out), "--failure", "--has-intervention", "--force"]) == 0
    assert [e.episode_id for e in episodes(out)] == ["s0/e1"]
    out2 = tmp_path / "none.hdf5"
    assert run_cli(["filter", str(ds), "-o", str(out2), "--task", "nothing"]) == 2
    err = capsys.readouterr().err
    assert "warning: " in err and "error: " in err and not out2.exists()


# ---------------------------------------------------------------------------------- merge


def test_merge_concatenates_and_renumbers(ds, tmp_path):
    b = write_dataset(tmp_path / "b.hdf5", [ep("stack", 7, "online", True, intervention=[0], images=True,
                                               episode_id="s1/e0", seed=9)],
                      fps=10, env_args={"translation_scale_m": 0.01, "robot": "real"},
                      masks={"train": [], "valid": ["demo_0"], "extra": ["demo_0"]})
    hashes = sha(ds), sha(b)
    out = tmp_path / "m.hdf5"
    with pytest.warns(CurateWarning, match="'extra' dropped"):
        assert curate.merge([ds, b], out) == 6
    assert (sha(ds), sha(b)) == hashes
    got = episodes(out)
    assert [e.name for e in got] == [f"demo_{i}" for i in range(6)]
    assert [e.episode_id for e in got] == ["s0/e0", "s0/e1", "s0/e2", "s0/e3", "s0/e4", "s1/e0"]
    np.testing.assert_array_equal(got[5].obs["wrist"], episodes(b)[0].obs["wrist"])
    info = dataset_info(out)
    assert info.masks == {"train": ["demo_0", "demo_1", "demo_2", "demo_3"], "valid": ["demo_4", "demo_5"]}
    assert info.env_args == {
        "translation_scale_m": 0.01,
        "sources": [{"file": "a.hdf5", "env_args": {"translation_scale_m": 0.01, "robot": "sim"}},
                    {"file": "b.hdf5", "env_args": {"translation_scale_m": 0.01, "robot": "real"}}],
    }
    assert info.fps == 10.0


def test_merge_fps_mismatch_names_both_files(ds, tmp_path):
    b = write_dataset(tmp_path / "b.hdf5", [ep("stack", 3, images=True)], fps=20)
    out = tmp_path / "m.hdf5"
    with pytest.raises(CurateError) as e:
        curate.merge([ds, b], out)
    assert "a.hdf5" in str(e.value) and "b.hdf5" in str(e.value) and "fps" in str(e.value)
    assert not out.exists() and leftovers(tmp_path) == []


def test_merge_shape_mismatch_leaves_no_output(ds, tmp_path):
    b = write_dataset(tmp_path / "b.hdf5", [ep("stack", 3, images=True, action_dim=7)], fps=10)
    c = write_dataset(tmp_path / "c.hdf5", [ep("stack", 3, images=False)], fps=10)
    out = tmp_path / "m.hdf5"
    with pytest.raises(CurateError, match=r"b.hdf5:/data/demo_0 does not match .*a.hdf5:/data/demo_0.*actions"):
        curate.merge([ds, b], out)
    with pytest.raises(CurateError, match=r"obs/wrist only in the first"):
        curate.merge([ds, c], out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_merge_translation_scale_conflict(ds, tmp_path):
    b = write_dataset(tmp_path / "b.hdf5", [ep("stack", 3, images=True)], fps=10,
                      env_args={"translation_scale_m": 1.0})
    with pytest.raises(CurateError, match="translation_scale_m differs") as e:
        curate.merge([ds, b], tmp_path / "m.hdf5")
    assert f"({ds}: 0.01, {b}: 1.0)" in str(e.value)
    assert not (tmp_path / "m.hdf5").exists()


RULE = {"window": 5, "sigma": 0.001, "label": "correction", "translation_scale_m": 0.01,
        "words": {"x": ["forward", "backward"], "y": ["left", "right"], "z": ["up", "down"]}}


def proposed_ep(episode_id="s1/e0"):
    """RELABEL_ACTIONS intervened on RELABEL_IV, the policy having proposed x = +1 unit on every step."""
    e = ep("pick", 7, "online", intervention=RELABEL_IV, actions=RELABEL_ACTIONS, episode_id=episode_id,
           commands=["stop", NULL, NULL, "move up", NULL, NULL, NULL])
    e.policy_actions = np.tile(np.float32([1, 0, 0, 0]), (7, 1))
    return e


def test_merge_split_filter_keep_what_relabel_needs(tmp_path):
    """The README's recipe: the bench demos (no scale, no rule: nothing intervened) merged with a converted teleop
    log. The merged file keeps the log's translation_scale_m and labelling rule, and so do split and filter, so
    relabel runs on each of them (the labels: test_relabel_correction_labels' hand derivation)."""
    demos = write_dataset(tmp_path / "demos.hdf5", [ep("pick", 4, episode_id="bench/0")], fps=10,
                          env_args={"bench": "metaworld", "seed": 0})
    online = write_dataset(tmp_path / "online.hdf5", [proposed_ep()], fps=10,
                           env_args={"source": "log", "sessions": ["s1"], "translation_scale_m": 0.01,
                                     "talk_tweak": RULE})
    week = tmp_path / "week.hdf5"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the demos record neither, but have no intervened step: no warning
        assert curate.merge([demos, online], week) == 2
    args = dataset_info(week).env_args
    assert args["translation_scale_m"] == 0.01 and args["talk_tweak"] == RULE
    assert [src["file"] for src in args["sources"]] == ["demos.hdf5", "online.hdf5"]
    curate.split(week, tmp_path / "split.hdf5", valid_fraction=0.5)
    curate.filter_dataset(week, tmp_path / "filtered.hdf5", kind="online")
    want = ["stop", "move right and backward", "move right and backward", "move backward", NULL,
            "move left, backward and down", "move left and backward"]
    for name in ("week", "split", "filtered"):
        path = tmp_path / f"{name}.hdf5"
        assert {k: dataset_info(path).env_args[k] for k in ("translation_scale_m", "talk_tweak")} == \
            {"translation_scale_m": 0.01, "talk_tweak": RULE}, name
        stats = curate.relabel(path, tmp_path / f"{name}-j2.hdf5", window=2)
        assert stats["translation_scale_m"] == 0.01
        assert episodes(tmp_path / f"{name}-j2.hdf5")[-1].refinement_command == want, name


def test_merge_labelling_rules_must_agree(tmp_path):
    a = write_dataset(tmp_path / "a.hdf5", [proposed_ep("s1/e0")], fps=10,
                      env_args={"translation_scale_m": 0.01, "talk_tweak": {**RULE, "label": "action"}})
    b = write_dataset(tmp_path / "b.hdf5", [proposed_ep("s2/e0")], fps=10,
                      env_args={"translation_scale_m": 0.01, "talk_tweak": {**RULE, "window": 3}})
    out = tmp_path / "m.hdf5"
    with pytest.raises(CurateError) as e:
        curate.merge([a, b], out)
    assert str(e.value).startswith("merge: env_args talk_tweak differs between inputs (")
    assert f"{a}: label 'action', window 5; {b}: label 'correction', window 3" in str(e.value)
    assert "relabel the inputs with the same" in str(e.value) and "nothing written" in str(e.value)
    assert not out.exists() and leftovers(tmp_path) == []
    # a rule recorded before the label option was labelled with "action": it agrees with an explicit "action"
    old = {k: v for k, v in RULE.items() if k != "label"}
    c = write_dataset(tmp_path / "c.hdf5", [proposed_ep("s3/e0")], fps=10,
                      env_args={"translation_scale_m": 0.01, "talk_tweak": old})
    assert curate.merge([a, c], out) == 2
    assert dataset_info(out).env_args["talk_tweak"] == {**RULE, "label": "action"}


def test_merge_warns_when_an_input_with_interventions_records_no_scale(ds, tmp_path):
    b = write_dataset(tmp_path / "b.hdf5", [ep("stack", 5, "online", intervention=[1, 2, 3], images=True)], fps=10,
                      masks={"train": ["demo_0"], "valid": []})
    with pytest.warns(CurateWarning) as caught:
        curate.merge([ds, b], tmp_path / "m.hdf5")
    assert [str(w.message) for w in caught] == [
        f"merge: {b} records no env_args translation_scale_m; the merged file's (from {ds}) now covers its 3 "
        "intervened step(s)"]
    assert dataset_info(tmp_path / "m.hdf5").env_args["translation_scale_m"] == 0.01


def test_merge_cli(ds, tmp_path, capsys):
    b = write_dataset(tmp_path / "b.hdf5", [ep("stack", 3, images=True)], fps=10, masks={"train": ["demo_0"]})
    out = tmp_path / "m.hdf5"
    assert run_cli(["merge", str(ds), str(b), "-o", str(out), "-q"]) == 0
    cap = capsys.readouterr()
    assert "merged 6 episodes from 2 files" in cap.out
    assert "warning: merge: mask 'valid' dropped" in cap.err
    assert dataset_info(out).masks == {"train": ["demo_0", "demo_1", "demo_2", "demo_3", "demo_5"]}
    before = sha(out)
    assert run_cli(["merge", str(ds), str(b), "-o", str(out)]) == 2
    assert sha(out) == before
    assert run_cli(["merge", str(ds), "-o", str(ds), "--force"]) == 2
    assert "input" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- split


def many(tmp_path, per_task=(10, 10), name="s.hdf5"):
    eps = [ep(f"task{t}", 2, seed=100 * t + i, episode_id=f"t{t}/{i}") for t, k in enumerate(per_task)
           for i in range(k)]
    return write_dataset(tmp_path / name, eps, fps=10, masks={"keep": ["demo_1"]})


def test_split_stratified_exact_counts(tmp_path):
    src = many(tmp_path)  # task0: demo_0..9, task1: demo_10..19
    before = sha(src)
    masks = curate.split(src, tmp_path / "o.hdf5", valid_fraction=0.2, seed=0)
    assert sha(src) == before
    info = dataset_info(tmp_path / "o.hdf5")
    assert info.masks["train"] == masks["train"] and info.masks["valid"] == masks["valid"]
    assert info.masks["keep"] == ["demo_1"]  # other masks kept
    valid = masks["valid"]
    assert len(valid) == 4 and len(masks["train"]) == 16
    assert sum(int(n[5:]) < 10 for n in valid) == 2  # two of each task
    assert set(valid).isdisjoint(masks["train"]) and set(valid) | set(masks["train"]) == set(info.episode_names)
    assert valid == sorted(valid, key=lambda n: int(n[5:]))  # file order
    # deterministic from the seed; another seed gives another split
    assert curate.split(src, tmp_path / "o2.hdf5", valid_fraction=0.2, seed=0) == masks
    assert curate.split(src, tmp_path / "o3.hdf5", valid_fraction=0.2, seed=1)["valid"] != valid
    # read back through the mask
    assert len(list(read_episodes(tmp_path / "o.hdf5", split="valid", load_images=False))) == 4


def test_split_small_tasks(tmp_path):
    # 3 episodes -> round(0.3) = 0 -> at least 1; 1 episode -> train only; 2 -> 1 valid
    src = many(tmp_path, per_task=(3, 1, 2))
    masks = curate.split(src, tmp_path / "o.hdf5", valid_fraction=0.1)
    tasks = {e.name: e.task for e in episodes(src, load_images=False)}
    assert sorted(tasks[n] for n in masks["valid"]) == ["task0", "task2"]
    assert len(masks["train"]) == 4
    # not stratified: round(0.1 * 6) = 1
    assert len(curate.split(src, tmp_path / "o2.hdf5", valid_fraction=0.1, by_task=False)["valid"]) == 1


def test_split_in_place(ds, tmp_path):
    before = episodes(ds)
    masks = curate.split(ds, in_place=True, valid_fraction=0.5, seed=3)
    info = dataset_info(ds)
    assert info.masks["valid"] == masks["valid"] and info.masks["train"] == masks["train"]
    assert len(masks["valid"]) == 2 + 1  # pick: 3 episodes -> round(1.5) = 2; place: 2 -> 1
    after = episodes(ds)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a.obs["wrist"], b.obs["wrist"])
        assert a.refinement_command == b.refinement_command and a.episode_id == b.episode_id
    assert info.env_args == {"translation_scale_m": 0.01, "robot": "sim"}
    assert leftovers(tmp_path) == []


def test_split_errors(ds, tmp_path):
    with pytest.raises(CurateError, match="exactly one"):
        curate.split(ds)
    with pytest.raises(CurateError, match="exactly one"):
        curate.split(ds, tmp_path / "o.hdf5", in_place=True)
    for frac in (0.0, 1.0, -0.1):
        with pytest.raises(CurateError, match="valid_fraction"):
            curate.split(ds, tmp_path / "o.hdf5", valid_fraction=frac)
    with pytest.raises(CurateError, match="input"):
        curate.split(ds, ds, force=True)
    assert not (tmp_path / "o.hdf5").exists()


def test_split_cli(tmp_path, capsys):
    src = many(tmp_path)
    out = tmp_path / "o.hdf5"
    assert run_cli(["split", str(src), "-o", str(out), "--valid-fraction", "0.3", "--seed", "5", "-q"]) == 0
    assert "train 14 / valid 6" in capsys.readouterr().out
    assert dataset_info(out).masks["valid"] == curate.split(src, tmp_path / "x.hdf5", 0.3, seed=5)["valid"]
    assert run_cli(["split", str(src), "--in-place", "--valid-fraction", "0.3", "--seed", "5"]) == 0
    assert dataset_info(src).masks["valid"] == dataset_info(out).masks["valid"]
    with pytest.raises(SystemExit):  # neither -o nor --in-place: argparse usage error
        run_cli(["split", str(src)])


# ---------------------------------------------------------------------------------- relabel

# actions in units of 0.01 m; intervened steps 1..3 and 5..6
RELABEL_ACTIONS = np.array([
    [5, 0, 0, 0],
    [1, 0, 0, 0],
    [0, -1, 0, 0],
    [0, 0, 0.05, 0],
    [0, 0, 0, 0],
    [0, 0, -1, 0],
    [0.2, 0.2, 0, 0],
], np.float32)
RELABEL_IV = [1, 2, 3, 5, 6]


def relabel_src(tmp_path, env_args=None, commands=None):
    commands = commands or ["stop", NULL, NULL, "move up", NULL, NULL, NULL]
    e = ep("pick", 7, "online", intervention=RELABEL_IV, actions=RELABEL_ACTIONS, commands=commands)
    return write_dataset(tmp_path / "r.hdf5", [e], fps=10, env_args=env_args or {"translation_scale_m": 0.01},
                         masks={"train": ["demo_0"]})


def test_relabel_hand_derived_windows(tmp_path):
    src = relabel_src(tmp_path)
    before = sha(src)
    stats = curate.relabel(src, tmp_path / "o.hdf5", window=2, label="action")  # the file has no policy actions
    assert sha(src) == before
    # J=2, metres = units * 0.01, sigma 1 mm:
    # t1: t1+t2 = (+0.01, -0.01, 0)       -> right, forward
    # t2: t2+t3 = (0, -0.01, +0.0005)     -> right (z below sigma)
    # t3: t3 only (segment ends) = z 0.0005 -> [null]
    # t5: t5+t6 = (0.002, 0.002, -0.01)   -> left, forward, down
    # t6: t6 only = (0.002, 0.002, 0)     -> left, forward
    # t0 / t4 not intervened: kept ("stop" was spoken)
    (e,) = episodes(tmp_path / "o.hdf5")
    assert e.refinement_command == ["stop", "move right and forward", "move right", NULL, NULL,
                                    "move left, forward and down", "move left and forward"]
    assert stats == {"episodes": 1, "steps": 7, "intervened_steps": 5, "changed": 5, "translation_scale_m": 0.01}
    info = dataset_info(tmp_path / "o.hdf5")
    assert info.masks == {"train": ["demo_0"]}
    assert info.env_args["talk_tweak"]["window"] == 2 and info.env_args["translation_scale_m"] == 0.01


def test_relabel_correction_labels(tmp_path):
    e = ep("pick", 7, "online", intervention=RELABEL_IV, actions=RELABEL_ACTIONS,
           commands=["stop", NULL, NULL, "move up", NULL, NULL, NULL])
    e.policy_actions = np.tile(np.float32([1, 0, 0, 0]), (7, 1))  # the policy proposed x = +1 unit every step
    src = write_dataset(tmp_path / "r.hdf5", [e], fps=10, env_args={"translation_scale_m": 0.01})
    stats = curate.relabel(src, tmp_path / "o.hdf5", window=2, label="correction")
    # corrections (units): t1 (0,0,0) t2 (-1,-1,0) t3 (-1,0,0.05) t5 (-1,0,-1) t6 (-0.8,0.2,0); J=2, x0.01 m:
    # t1: (-1,-1,0) -> right, backward; t2: (-2,-1,0.05) -> right, backward; t3: (-1,0,0.05) -> backward;
    # t5: (-1.8,0.2,-1) -> left, backward, down; t6: (-0.8,0.2,0) -> left, backward
    (o,) = episodes(tmp_path / "o.hdf5")
    assert o.refinement_command == ["stop", "move right and backward", "move right and backward", "move backward",
                                    NULL, "move left, backward and down", "move left and backward"]
    assert stats["changed"] == 5 and dataset_info(tmp_path / "o.hdf5").env_args["talk_tweak"]["label"] == "correction"
    e.policy_actions[5] = np.nan  # an intervened step without a proposal
    src2 = write_dataset(tmp_path / "r2.hdf5", [e], fps=10, env_args={"translation_scale_m": 0.01})
    with pytest.raises(CurateError, match=r"demo_0: relabel --label correction \(the default\): step 5 is intervened "
                                          r"but its policy_actions row is not finite \(1 such step"):
        curate.relabel(src2, tmp_path / "o2.hdf5", label="correction")
    # correction is the default: the same labels without saying so
    assert curate.relabel(src, tmp_path / "d.hdf5", window=2) == stats
    assert episodes(tmp_path / "d.hdf5")[0].refinement_command == o.refinement_command
    with pytest.raises(CurateError, match="label must be one of"):
        curate.relabel(src, tmp_path / "o2.hdf5", label="delta")
    assert not (tmp_path / "o2.hdf5").exists() and leftovers(tmp_path) == []


def test_relabel_default_window_and_words(tmp_path):
    src = relabel_src(tmp_path)
    curate.relabel(src, tmp_path / "o.hdf5", words={"y": ("port", "starboard")}, sigma=0.001, label="action")
    # J=5: t1: t1..t3 = (0.01, -0.01, 0.0005); t2: t2..t3; t3; t5: t5..t6; t6
    (e,) = episodes(tmp_path / "o.hdf5")
    assert e.refinement_command[1:4] == ["move starboard and forward", "move starboard", NULL]
    assert e.refinement_command[5:] == ["move port, forward and down", "move port and forward"]
    assert dataset_info(tmp_path / "o.hdf5").env_args["talk_tweak"]["words"]["y"] == ["port", "starboard"]
    # a large sigma: nothing passes -> every intervened step [null]
    stats = curate.relabel(src, tmp_path / "o2.hdf5", sigma=0.1, label="action")
    assert episodes(tmp_path / "o2.hdf5")[0].refinement_command == ["stop"] + [NULL] * 6
    assert stats["changed"] == 1  # only t3 ("move up") changed


def test_relabel_translation_scale(tmp_path):
    src = relabel_src(tmp_path, env_args={"robot": "x"})
    out = tmp_path / "o.hdf5"
    with pytest.raises(CurateError, match="--translation-scale-m"):
        curate.relabel(src, out)
    assert not out.exists() and leftovers(tmp_path) == []
    stats = curate.relabel(src, out, window=2, translation_scale_m=0.01, label="action")
    assert stats["translation_scale_m"] == 0.01
    assert dataset_info(out).env_args["translation_scale_m"] == 0.01
    assert episodes(out)[0].refinement_command[1] == "move right and forward"
    with pytest.raises(CurateError, match="0.01 but 1 was given"):
        curate.relabel(out, tmp_path / "o2.hdf5", translation_scale_m=1.0)
    # scale 0.0001: t1 window sums to 0.0001 m per axis < sigma -> [null]
    curate.relabel(src, tmp_path / "o3.hdf5", window=2, translation_scale_m=0.0001, label="action")
    assert episodes(tmp_path / "o3.hdf5")[0].refinement_command[1] == NULL


def test_relabel_bad_arguments(tmp_path):
    src = relabel_src(tmp_path)
    for kw in (dict(window=0), dict(sigma=-1.0), dict(words={"w": ("a", "b")}), dict(words={"x": ("a",)})):
        with pytest.raises(CurateError):
            curate.relabel(src, tmp_path / "o.hdf5", **kw)
    assert not (tmp_path / "o.hdf5").exists()


def test_relabel_cli(tmp_path, capsys):
    src = relabel_src(tmp_path)
    out = tmp_path / "o.hdf5"
    assert run_cli(["relabel", str(src), "-o", str(out), "--window", "2", "--words", "x=ahead,back",
                    "--words", "y=left,right", "-q", "--label", "action"]) == 0
    assert "(label action): 5 commands changed" in capsys.readouterr().out
    assert episodes(out)[0].refinement_command[1] == "move right and ahead"
    assert run_cli(["relabel", str(src), "-o", str(out), "--force", "--words", "q=a,b"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --words")
    # the JSON form convert takes
    assert run_cli(["relabel", str(src), "-o", str(out), "--force", "-q", "--window", "2",
                    "--words", '{"y": ["port", "starboard"]}', "--label", "action"]) == 0
    assert episodes(out)[0].refinement_command[1] == "move starboard and forward"
    assert run_cli(["relabel", str(src), "-o", str(out), "--force", "--words", '{"y": "port"}']) == 2
    capsys.readouterr()
    # the default label (correction) on a file without policy actions: one error line saying what to pass instead,
    # the output as it was
    before = episodes(out)[0].refinement_command
    assert run_cli(["relabel", str(src), "-o", str(out), "--force", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "r.hdf5:/data/demo_0" in err[0]
    assert "relabel --label correction (the default): step 1 is intervened" in err[0]
    assert "(5 such step(s) in this episode)" in err[0] and err[0].endswith("pass --label action")
    assert episodes(out)[0].refinement_command == before


# ---------------------------------------------------------------------------------- preview


def test_preview_gif_frames(ds, tmp_path):
    before = sha(ds)
    out = tmp_path / "p.gif"
    r = curate.preview(ds, "demo_3", out)
    assert sha(ds) == before
    assert r["frames"] == 8 and r["stride"] == 1 and r["cameras"] == ["wrist"]
    with Image.open(out) as im:
        assert im.format == "GIF" and im.n_frames == 8
        assert im.info["duration"] == 100  # 10 fps
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")).astype(int))
    # intervened frames (steps 2..5) carry a red border, the others do not
    for t, f in enumerate(frames):
        corner = f[1, 1]
        is_red = corner[0] > 180 and corner[1] < 80 and corner[2] < 80
        assert is_red == (2 <= t <= 5), t


def test_preview_png_strip_every_and_max_frames(ds, tmp_path):
    r = curate.preview(ds, 3, tmp_path / "p.png", every=3)  # steps 0, 3, 6
    assert r["frames"] == 3 and r["episode"] == "demo_3"
    with Image.open(tmp_path / "p.png") as im:
        w, h = im.size
    curate.preview(ds, 3, tmp_path / "one.png", every=100)  # one frame: its size
    with Image.open(tmp_path / "one.png") as one:
        fw, fh = one.size
    assert (w, h) == (3 * fw + 2 * 4, fh)
    with pytest.warns(CurateWarning, match="one step in 3"):
        r = curate.preview(ds, 3, tmp_path / "m.gif", max_frames=3)  # 8 steps, at most 3 frames
    assert r["stride"] == 3 and r["frames"] == 3


def test_preview_without_images_plots_actions(tmp_path):
    src = write_dataset(tmp_path / "n.hdf5", five_episodes(images=False), fps=10)
    r = curate.preview(src, "demo_1", tmp_path / "p.png")
    assert r["cameras"] == [] and r["frames"] == 6
    with Image.open(tmp_path / "p.png") as im:
        assert im.size[0] > 6 * 400


def test_preview_errors(ds, tmp_path, capsys):
    with pytest.raises(CurateError, match="demo_9"):
        curate.preview(ds, "demo_9", tmp_path / "p.gif")
    with pytest.raises(CurateError, match="image keys: wrist"):
        curate.preview(ds, "demo_0", tmp_path / "p.gif", camera="head")
    with pytest.raises(CurateError, match=".gif"):
        curate.preview(ds, "demo_0", tmp_path / "p.jpg")
    (tmp_path / "p.gif").write_bytes(b"x")
    with pytest.raises(CurateError, match="exists"):
        curate.preview(ds, "demo_0", tmp_path / "p.gif")
    assert (tmp_path / "p.gif").read_bytes() == b"x" and leftovers(tmp_path) == []


def test_preview_cli(ds, tmp_path, capsys):
    out = tmp_path / "p.png"
    assert run_cli(["preview", str(ds), "--episode", "demo_1", "-o", str(out), "--camera", "wrist",
                    "--every", "2"]) == 0
    assert "3 frames" in capsys.readouterr().out and out.exists()
    assert run_cli(["preview", str(ds), "--episode", "demo_1", "-o", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    # a progress bar (frames drawn) on stderr, which -q silences, as for every command that draws one
    assert run_cli(["preview", str(ds), "--episode", "demo_1", "-o", str(out), "--force"]) == 0
    assert "preview" in capsys.readouterr().err
    assert run_cli(["preview", str(ds), "--episode", "demo_1", "-o", str(out), "--force", "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_corrupt_episode_midway_leaves_no_output(ds, tmp_path):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(ds.read_bytes())
    with h5py.File(bad, "a") as f:
        f["data/demo_3/actions"][0, 0] = np.nan
    before = sha(bad)
    for fn in (lambda o: curate.filter_dataset(bad, o, task=["pick", "place"]),
               lambda o: curate.merge([ds, bad], o),
               lambda o: curate.relabel(bad, o, label="action"),
               lambda o: curate.split(bad, o)):
        out = tmp_path / "o.hdf5"
        with pytest.raises(Exception, match="demo_3/actions: contains NaN"):
            fn(out)
        assert not out.exists() and leftovers(tmp_path) == []
    assert sha(bad) == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_cli(["relabel", str(bad), "-o", str(tmp_path / "o.hdf5"), "--label", "action"]) == 2


# ---------------------------------------------------------------------------------- image chunks


def chunk_ds(tmp_path, name="c.hdf5", seed=0) -> Path:
    """Two episodes whose 64x64 wrist frames alternate a gradient (deflated) and noise (stored raw).

    The deflated chunks are then re-stored at gzip level 9, bytes the writer (level 1) never
    produces: a rewrite that decompressed and recompressed them could not reproduce them.
    """
    rng = np.random.default_rng(seed)
    grad = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, :, None], (64, 64, 3))
    eps = []
    for k, n in enumerate((4, 3)):
        e = ep("pick", n, "online", intervention=[1], episode_id=f"s{seed}/e{k}", seed=seed + k)
        e.obs["wrist"] = np.stack([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) if t % 2 else grad + t
                                   for t in range(n)])
        eps.append(e)
    path = write_dataset(tmp_path / name, eps, fps=10, env_args={"translation_scale_m": 0.01},
                         masks={"train": ["demo_0", "demo_1"]})
    with h5py.File(path, "r+") as f:
        for k, e in enumerate(eps):
            d = f[f"data/demo_{k}/obs/wrist"]
            for t in range(0, len(d), 2):
                level1 = d.id.read_direct_chunk((t, 0, 0, 0))[1]
                level9 = zlib.compress(e.obs["wrist"][t].tobytes(), 9)
                assert level9 != level1
                d.id.write_direct_chunk((t, 0, 0, 0), level9, 0)
    return path


def stored_chunks(path: Path) -> dict[str, list]:
    """episode_id -> [(chunk shape, compression, [(filter mask, chunk bytes) per frame])]."""
    out = {}
    with h5py.File(path, "r") as f:
        for g in f["data"].values():
            d = g["obs/wrist"]
            out[g.attrs["episode_id"]] = [d.chunks, d.compression,
                                          [d.id.read_direct_chunk((i, 0, 0, 0)) for i in range(len(d))]]
    return out


def test_rewrites_copy_image_chunks_byte_for_byte(tmp_path):
    src, other = chunk_ds(tmp_path), chunk_ds(tmp_path, "d.hdf5", seed=1)
    want = {**stored_chunks(src), **stored_chunks(other)}
    masks = {m for _, _, frames in want.values() for m, _ in frames}
    assert masks == {0, 1}  # both deflated and raw chunks are covered
    pixels = {e.episode_id: e.obs["wrist"] for path in (src, other) for e in episodes(path)}
    outs = {
        "filter": lambda o: curate.filter_dataset(src, o, task="pick"),
        "merge": lambda o: curate.merge([src, other], o),
        "split": lambda o: curate.split(src, o, valid_fraction=0.5),
        "relabel": lambda o: curate.relabel(src, o, window=1, label="action"),
    }
    for name, run in outs.items():
        out = tmp_path / f"{name}.hdf5"
        run(out)
        got = stored_chunks(out)
        assert got == {k: want[k] for k in got} and len(got) >= 2, name
        for e in episodes(out):  # read back through the normal reader
            np.testing.assert_array_equal(e.obs["wrist"], pixels[e.episode_id])


def test_rewrite_refuses_a_damaged_image_chunk(tmp_path):
    src = chunk_ds(tmp_path)
    with h5py.File(src, "r") as f:
        info = f["data/demo_1/obs/wrist"].id.get_chunk_info(2)  # frame 2: a deflated gradient
    assert info.filter_mask == 0
    with open(src, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xff" * 8)
    before = sha(src)
    out = tmp_path / "o.hdf5"
    with pytest.raises(DatasetFormatError, match=r"c.hdf5:/data/demo_1/obs/wrist: frame 2: stored chunk"):
        curate.filter_dataset(src, out)
    assert not out.exists() and leftovers(tmp_path) == [] and sha(src) == before


def test_rewrite_normalises_images_stored_otherwise(tmp_path):
    src = chunk_ds(tmp_path)
    with h5py.File(src, "r+") as f:  # e.g. written by another tool: one contiguous block
        g = f["data/demo_0/obs"]
        frames = g["wrist"][()]
        del g["wrist"]
        g.create_dataset("wrist", data=frames)
    out = tmp_path / "o.hdf5"
    curate.filter_dataset(src, out)
    with h5py.File(out, "r") as f:
        d = f["data/demo_0/obs/wrist"]
        assert d.chunks == (1, 64, 64, 3) and d.compression == "gzip"
    np.testing.assert_array_equal(episodes(out)[0].obs["wrist"], frames)


# ---------------------------------------------------------------------------------- shared helpers


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path):
    from data_tools.atomic import atomic_path

    target = tmp_path / "sub" / "model.ckpt"
    with atomic_path(target, suffix=".ckpt") as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model.ckpt.") and tmp.suffix == ".ckpt"
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["model.ckpt"]


def test_check_output_refusals(ds, tmp_path):
    from data_tools.errors import OutputExistsError
    from data_tools.outputs import check_output

    with pytest.raises(DataToolsError, match="is the input file"):
        check_output(tmp_path / "." / "a.hdf5", [ds], force=True)
    with pytest.raises(DataToolsError, match="would replace the input"):
        check_output(tmp_path, [ds], force=True, folder=True)
    with pytest.raises(DataToolsError, match="inside the input session"):
        check_output(tmp_path / "x.hdf5", [tmp_path], noun="session")
    with pytest.raises(DataToolsError, match="is a directory"):
        check_output(tmp_path, force=True)
    with pytest.raises(OutputExistsError, match="--force") as e:
        check_output(ds)
    assert isinstance(e.value, FileExistsError)
    assert check_output(ds, force=True) == ds


def test_one_words_syntax_for_every_command():
    from data_tools.cli import build_parser, parse_words

    assert parse_words(["y=right,left", "x=a,b"]) == {"y": ("right", "left"), "x": ("a", "b")}
    assert parse_words(['{"y": ["right", "left"]}']) == {"y": ("right", "left")}
    assert parse_words(None) is None
    for bad in (["q=a,b"], ["y=a"], ['{"w": ["a", "b"]}'], ["{"]):
        with pytest.raises(DataToolsError, match="^--words"):
            parse_words(bad)
    parser = build_parser()
    for argv in (["convert", "s", "-o", "o.hdf5"], ["relabel", "s", "-o", "o.hdf5"]):
        args = parser.parse_args([*argv, "--words", "y=r,l", "--words", "z=u,d"])
        assert parse_words(args.words) == {"y": ("r", "l"), "z": ("u", "d")}


def test_info_and_dataset_card_count_the_same(ds):
    from data_tools.stats import format_markdown, summarize

    s, table = summarize(ds), curate.info(ds)
    assert (s.episodes, s.steps, s.intervened) == (5, 26, 6)
    assert table["total"]["intervened_steps"] == s.intervened and table["total"]["steps"] == s.steps
    assert "| place | online | 1 | 8 | 1 | 4 | 0.5000 |" in format_markdown(s)
    assert s.command_order == [NULL, "move left", "move right"]
