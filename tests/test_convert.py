"""convert: teleoperation logs -> HDF5 talk-and-tweak dataset; the malformed-input corpus via the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from data_tools.cli import main
from data_tools.convert import convert
from data_tools.errors import DataToolsError, TeleopLogError
from data_tools.hdf5_format import DatasetFormatError, append_episodes, dataset_info, read_episodes
from data_tools.teleop_log import SessionWriter, read_session
from malformed_corpus import CASES, STEPS, make_session, tree_hash

REPO = Path(__file__).resolve().parents[1]
IMG = {"cam": (3, 4)}


def _img(k: int) -> np.ndarray:
    return np.full((3, 4, 3), k, np.uint8)


def _hand_session(root: Path, policy: bool, robot="arm", scale=0.01, task="pick up the bolt",
                  proposal_at_3: bool = False) -> Path:
    """One episode of 6 steps with hand-picked translations (action units; x0.01 -> metres).

    Steps 2..4: x = +0.5, +0.5, -0.08 -> 5, 5, -0.8 mm; y = -0.2 each -> -2 mm; z = 0. Step 3
    carries a spoken command. ``policy``: a policy acted (policy actions except at step 3) and the
    operator intervened on steps 2..4 (one segment); otherwise pure teleoperation (no flags).
    ``proposal_at_3``: the policy action is logged at step 3 too.
    """
    actions = np.zeros((6, 4))
    actions[2:5, 0] = [0.5, 0.5, -0.08]
    actions[2:5, 1] = -0.2
    actions[:, 3] = 1.0
    with SessionWriter(root, fps=10, robot=robot, action_dim=4, translation_scale_m=scale, cameras=("cam",)) as w:
        with w.episode("e0") as ep:
            for t in range(6):
                ep.step(t=t / 10, task=task, obs={"proprio": [t, -t], "joints": [0.5 * t]}, action=actions[t],
                        policy_action=(np.full(4, 0.25) if policy and (t != 3 or proposal_at_3) else None),
                        intervention=policy and 2 <= t <= 4, command="slow down" if t == 3 else None,
                        reward=float(t == 5), done=t == 5, images={"cam": _img(t)})
    return root


def test_convert_hand_derived(tmp_path):
    online = _hand_session(tmp_path / "online", policy=True)
    demo = _hand_session(tmp_path / "teleop", policy=False, robot="arm2")
    before = tree_hash(tmp_path)
    # label "action": the hand derivation below sums the executed actions, and step 3 logged no proposal
    summary = convert([online, demo], tmp_path / "out/ds.hdf5", progress=False, label="action")
    assert (summary.episodes, summary.steps, summary.sessions, summary.kinds) == (2, 12, 2, {"online": 1, "demo": 1})
    # convert never writes into the inputs
    assert tree_hash(tmp_path) != before  # out/ was added ...
    shutil.rmtree(tmp_path / "out")
    assert tree_hash(tmp_path) == before  # ... and nothing else changed
    summary = convert([online, demo], tmp_path / "out/ds.hdf5", progress=False, label="action")
    eps = list(read_episodes(tmp_path / "out/ds.hdf5"))
    assert [e.name for e in eps] == ["demo_0", "demo_1"]
    a, b = eps
    assert (a.task, a.robot, a.kind, a.episode_id) == ("pick up the bolt", "arm", "online", "online/e0")
    assert (b.robot, b.kind, b.episode_id) == ("arm2", "demo", "teleop/e0")
    # step 2: window 2..4 (cut at segment end): x 5+5-0.8 = 9.2 mm > 1 -> forward; y -6 mm -> right
    # step 3: spoken command wins; step 4: x -0.8 mm (not < -1 mm) -> nothing, y -2 mm -> right
    assert a.refinement_command == ["[null]", "[null]", "move right and forward", "slow down", "move right",
                                    "[null]"]
    # a command spoken without a take-over labels no step (Eq. 13; what the runtime's buffers hold): "[null]"
    assert b.refinement_command == ["[null]"] * 6
    np.testing.assert_array_equal(a.intervention, [0, 0, 1, 1, 1, 0])
    assert not b.intervention.any()
    np.testing.assert_array_equal(a.obs["proprio"], [[t, -t] for t in range(6)])
    np.testing.assert_array_equal(a.obs["joints"], [[0.5 * t] for t in range(6)])
    assert a.obs["cam"].shape == (6, 3, 4, 3) and a.obs["cam"].dtype == np.uint8
    for t in range(6):
        np.testing.assert_array_equal(a.obs["cam"][t], _img(t))
    np.testing.assert_array_equal(a.policy_actions[0], [0.25] * 4)
    assert np.isnan(a.policy_actions[3]).all() and np.isnan(b.policy_actions).all()
    np.testing.assert_allclose(a.actions[2:5, 0], [0.5, 0.5, -0.08])
    np.testing.assert_array_equal(a.rewards, [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(a.dones, [0, 0, 0, 0, 0, 1])
    info = dataset_info(tmp_path / "out/ds.hdf5")
    assert info.fps == 10.0 and info.env_args["talk_tweak"]["window"] == 5
    assert info.env_args["talk_tweak"]["label"] == "action"
    assert info.env_args["translation_scale_m"] == 0.01
    with h5py.File(tmp_path / "out/ds.hdf5") as f:
        assert f["data"].attrs["total"] == 12
        img = f["data/demo_0/obs/cam"]
        assert img.chunks == (1, 3, 4, 3) and img.compression == "gzip"
        assert f["data/demo_0"].attrs["translation_scale_m"] == 0.01
    assert sorted(os.listdir(tmp_path / "out")) == ["ds.hdf5"]  # no temporary file left


def test_images_stored_raw_when_noise_and_deflated_otherwise(tmp_path):
    """Frames over 8 KiB go through the compressibility probe: noise is stored raw (filter
    skipped in the chunk's filter mask), a gradient deflated; both read back pixel for pixel."""
    rng = np.random.default_rng(0)
    grad = np.broadcast_to(np.arange(64, dtype=np.uint8)[None, :, None], (64, 64, 3))
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) if t % 2 else grad + t for t in range(4)]
    with SessionWriter(tmp_path / "s", fps=10, action_dim=4, cameras=("cam",)) as w, w.episode("e") as ep:
        for t, img in enumerate(frames):
            ep.step(t=t / 10, task="t", obs={"proprio": [0.0]}, action=[0.0] * 4, images={"cam": img})
    convert([tmp_path / "s"], tmp_path / "ds.hdf5", progress=False)
    (e,) = read_episodes(tmp_path / "ds.hdf5")
    np.testing.assert_array_equal(e.obs["cam"], np.stack(frames))
    with h5py.File(tmp_path / "ds.hdf5") as f:
        d = f["data/demo_0/obs/cam"]
        assert [d.id.get_chunk_info(t).filter_mask for t in range(4)] == [0, 1, 0, 1]


def test_labelling_options(tmp_path):
    s = _hand_session(tmp_path / "s", policy=True)
    convert([s], tmp_path / "a.hdf5", sigma=0.007, progress=False, label="action")  # only |x| 9.2 mm clears 7 mm
    (a,) = read_episodes(tmp_path / "a.hdf5", load_images=False)
    assert a.refinement_command[2] == "move forward" and a.refinement_command[4] == "[null]"
    convert([s], tmp_path / "b.hdf5", window=1, words={"y": ("right", "left")}, progress=False, label="action")
    (b,) = read_episodes(tmp_path / "b.hdf5", load_images=False)
    assert b.refinement_command[2] == "move left and forward"  # x 5 mm, y -2 mm with flipped words
    assert b.refinement_command[4] == "move left"  # x -0.8 mm is not < -1 mm
    for bad in (dict(window=0), dict(sigma=-1.0), dict(words={"w": ("a", "b")})):
        with pytest.raises(DataToolsError):
            convert([s], tmp_path / "c.hdf5", progress=False, **bad)
    assert not (tmp_path / "c.hdf5").exists()


def test_correction_labels(tmp_path, capsys):
    # policy proposes 0.25 on every dim; corrections on steps 2..4 (mm): x 2.5, 2.5, -3.3; y -4.5 each; z -2.5 each
    s = _hand_session(tmp_path / "s", policy=True, proposal_at_3=True)
    convert([s], tmp_path / "c.hdf5", label="correction", progress=False)
    (c,) = read_episodes(tmp_path / "c.hdf5", load_images=False)
    # t2: x +1.7, y -13.5, z -7.5 -> right, forward, down; t3: spoken; t4: x -3.3, y -4.5, z -2.5
    assert c.refinement_command == ["[null]", "[null]", "move right, forward and down", "slow down",
                                    "move right, backward and down", "[null]"]
    assert dataset_info(tmp_path / "c.hdf5").env_args["talk_tweak"]["label"] == "correction"
    assert main(["convert", str(s), "-o", str(tmp_path / "cli.hdf5"), "-q", "--label", "correction"]) == 0
    assert next(iter(read_episodes(tmp_path / "cli.hdf5", load_images=False))).refinement_command == c.refinement_command
    # correction is the default (DEFAULT_LABEL, what a training run labels with), in the library and the CLI
    convert([s], tmp_path / "d.hdf5", progress=False)
    assert main(["convert", str(s), "-o", str(tmp_path / "cli-d.hdf5"), "-q"]) == 0
    for name in ("d.hdf5", "cli-d.hdf5"):
        (d,) = read_episodes(tmp_path / name, load_images=False)
        assert d.refinement_command == c.refinement_command
        assert dataset_info(tmp_path / name).env_args["talk_tweak"]["label"] == "correction"
    # the same session labelled as printed (Eq. 12 on executed actions): x +9.2, -0.8 mm; y -6, -2 mm
    convert([s], tmp_path / "a.hdf5", progress=False, label="action")
    (a,) = read_episodes(tmp_path / "a.hdf5", load_images=False)
    assert a.refinement_command[2] == "move right and forward" and a.refinement_command[4] == "move right"
    assert dataset_info(tmp_path / "a.hdf5").env_args["talk_tweak"]["label"] == "action"
    # appending under the other label is refused, the file untouched
    before = hashlib.sha256((tmp_path / "a.hdf5").read_bytes()).hexdigest()
    with pytest.raises(DataToolsError, match="label 'action' \\(now 'correction'\\).*--label"):
        convert([_hand_session(tmp_path / "s2", policy=True, proposal_at_3=True)], tmp_path / "a.hdf5",
                append=True, label="correction", progress=False)
    assert hashlib.sha256((tmp_path / "a.hdf5").read_bytes()).hexdigest() == before
    # an intervened step without a logged proposal (a log from another runtime): the file and line, what to pass
    # instead, and no output; the same with the default label, in the library and on the command line
    bad = _hand_session(tmp_path / "bad", policy=True)
    for kw in (dict(label="correction"), {}):
        with pytest.raises(TeleopLogError, match=r"steps.jsonl:4: --label correction \(the default\): step 3 is "
                                                 r"intervened but has no policy_action \(1 such step\(s\) in this "
                                                 r"episode\).*pass --label action$"):
            convert([bad], tmp_path / "x.hdf5", progress=False, **kw)
    capsys.readouterr()
    assert main(["convert", str(bad), "-o", str(tmp_path / "x.hdf5"), "-q"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad / 'episodes/e0/steps.jsonl'}:4: ")
    assert main(["convert", str(bad), "-o", str(tmp_path / "y.hdf5"), "-q", "--label", "action"]) == 0
    with pytest.raises(DataToolsError, match="label must be one of"):
        convert([s], tmp_path / "x.hdf5", label="delta", progress=False)
    assert not (tmp_path / "x.hdf5").exists()


def test_overwrite_and_append(tmp_path):
    s1 = _hand_session(tmp_path / "s1", policy=True, proposal_at_3=True)
    s2 = _hand_session(tmp_path / "s2", policy=False)
    out = tmp_path / "ds.hdf5"
    convert([s1], out, progress=False)
    with pytest.raises(FileExistsError):
        convert([s2], out, progress=False)
    convert([s2], out, force=True, progress=False)
    assert [e.episode_id for e in read_episodes(out, load_images=False)] == ["s2/e0"]
    summary = convert([s1], out, append=True, progress=False)
    assert summary.episode_names == ["demo_1"] and summary.appended
    eps = list(read_episodes(out))
    assert [(e.name, e.episode_id, e.kind) for e in eps] == [("demo_0", "s2/e0", "demo"), ("demo_1", "s1/e0", "online")]
    with h5py.File(out) as f:
        assert f["data"].attrs["total"] == 12
    digest = tree_hash(tmp_path)
    with pytest.raises(DataToolsError, match="already holds episode"):
        convert([s1], out, append=True, progress=False)
    with pytest.raises(DataToolsError, match=r"labelled with window 5 \(now 3\)"):
        convert([_hand_session(tmp_path / "s3", policy=True, proposal_at_3=True)], out, append=True, window=3,
                progress=False)
    shutil.rmtree(tmp_path / "s3")
    with pytest.raises(DataToolsError, match="needs an existing dataset"):
        convert([s1], tmp_path / "new.hdf5", append=True, progress=False)
    other = SessionWriter(tmp_path / "fast", fps=20, action_dim=4, cameras=("cam",))
    with other, other.episode("e") as ep:
        ep.step(task="t", obs={"proprio": [0, 0], "joints": [0]}, action=[0] * 4, images={"cam": _img(0)})
    with pytest.raises(DataToolsError, match="dataset fps 10 differs from the sessions. fps 20"):
        convert([tmp_path / "fast"], out, append=True, progress=False)
    big = SessionWriter(tmp_path / "big", fps=10, action_dim=4, translation_scale_m=0.01, cameras=("cam",))
    with big, big.episode("e") as ep:
        ep.step(task="t", obs={"proprio": [0, 0], "joints": [0]}, action=[0] * 4,
                images={"cam": np.zeros((5, 4, 3), np.uint8)})
    with pytest.raises(DatasetFormatError, match="obs/cam: image"):
        convert([tmp_path / "big"], out, append=True, progress=False)
    assert tree_hash(tmp_path) != digest  # the two new sessions ...
    shutil.rmtree(tmp_path / "fast")
    shutil.rmtree(tmp_path / "big")
    assert tree_hash(tmp_path) == digest  # ... and the dataset is byte-identical


def test_append_episodes_rolls_back(tmp_path):
    from factories import synthetic_episode, write_synthetic_dataset

    path = write_synthetic_dataset(tmp_path / "d.hdf5", tasks=["a"], episodes_per_task=2, steps=5)
    rng = np.random.default_rng(1)
    digest = tree_hash(tmp_path)
    bad = synthetic_episode("a", 5, rng)
    bad.actions[2, 0] = np.nan
    with pytest.raises(DatasetFormatError, match=r"demo_3/actions: contains NaN"):
        append_episodes(path, [synthetic_episode("a", 5, rng), bad])  # a list: checked before opening
    assert tree_hash(tmp_path) == digest

    def stream():
        yield synthetic_episode("a", 5, rng)
        yield synthetic_episode("a", 7, rng)
        raise KeyboardInterrupt  # e.g. Ctrl-C while a session is being appended

    with pytest.raises(KeyboardInterrupt):
        append_episodes(path, stream())
    info = dataset_info(path)
    assert info.episode_names == ["demo_0", "demo_1"]
    with h5py.File(path) as f:
        assert f["data"].attrs["total"] == 10
    names = append_episodes(path, (synthetic_episode("a", 3, rng) for _ in range(2)))
    assert names == ["demo_2", "demo_3"]
    assert [e.num_samples for e in read_episodes(path)] == [5, 5, 3, 3]
    with h5py.File(path) as f:
        assert f["data"].attrs["total"] == 16
    wrong = synthetic_episode("a", 3, rng, action_dim=2)
    with pytest.raises(DatasetFormatError, match=r"actions: width \(2,\) != \(4,\)"):
        append_episodes(path, [wrong])


def test_bad_arguments(tmp_path):
    s = _hand_session(tmp_path / "s", policy=True, proposal_at_3=True)
    with pytest.raises(DataToolsError, match="inside the input session"):
        convert([s], s / "ds.hdf5", progress=False)
    with pytest.raises(DataToolsError, match="given twice"):
        convert([s, tmp_path / "." / "s"], tmp_path / "ds.hdf5", progress=False)
    with pytest.raises(DataToolsError, match="exclude each other"):
        convert([s], tmp_path / "ds.hdf5", append=True, force=True, progress=False)
    with pytest.raises(DataToolsError, match="is a directory"):
        convert([s], tmp_path, progress=False)
    other = SessionWriter(tmp_path / "o", fps=10, action_dim=5, cameras=("cam",))
    with other, other.episode("e") as ep:
        ep.step(task="t", obs={"proprio": [0, 0], "joints": [0]}, action=[0] * 5, images={"cam": _img(0)})
    with pytest.raises(TeleopLogError, match=r"o/session.json: action_dim 5 differs from 4"):
        convert([s, tmp_path / "o"], tmp_path / "ds.hdf5", progress=False)
    metres = _hand_session(tmp_path / "metres", policy=True, scale=1.0, proposal_at_3=True)
    with pytest.raises(TeleopLogError, match=r"metres/session.json: translation_scale_m 1.0 differs from 0.01"):
        convert([s, metres], tmp_path / "ds.hdf5", progress=False)
    empty = SessionWriter(tmp_path / "empty", action_dim=4)
    with pytest.raises(TeleopLogError, match="no episodes"):
        convert([empty.root], tmp_path / "ds.hdf5", progress=False)
    assert not (tmp_path / "ds.hdf5").exists()


def test_cli_in_process(tmp_path, capsys):
    s = _hand_session(tmp_path / "s", policy=True, proposal_at_3=True)
    assert main(["convert", str(s), "-o", str(tmp_path / "ds.hdf5")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"wrote {tmp_path / 'ds.hdf5'}: 1 episodes (1 online), 6 steps from 1 session(s)")
    assert "converting" in err  # the progress bar goes to stderr
    assert main(["convert", str(s), "-o", str(tmp_path / "ds.hdf5"), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and "exists" in err and err.count("\n") == 1
    assert main(["convert", str(s), "-o", str(tmp_path / "ds.hdf5"), "--force", "-q", "--window", "1",
                 "--words", '{"y": ["right", "left"]}']) == 0
    assert capsys.readouterr() == ("", "")
    (ep,) = read_episodes(tmp_path / "ds.hdf5", load_images=False)
    # default label correction, J=1: step 2's correction (0.5, -0.2, 0) - 0.25 = x +2.5, y -4.5, z -2.5 mm; y's words
    # flipped
    assert ep.refinement_command[2] == "move left, forward and down"
    assert main(["convert", str(s), "-o", str(tmp_path / "x.hdf5"), "--words", "[1]"]) == 2
    assert "--words" in capsys.readouterr().err
    assert main([]) == 2


# ------------------------------------------------------------------- malformed corpus, via the CLI


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_tools", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_missing_session_folder_is_one_error_line_and_writes_nothing(tmp_path):
    (tmp_path / "work").mkdir()
    missing, out = tmp_path / "work" / "no-such-session", tmp_path / "work" / "new-folder" / "ds.hdf5"
    r = _run_cli("convert", str(missing), "-o", str(out))
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {missing}: not a session folder (no such directory)", r.stderr
    assert os.listdir(tmp_path / "work") == []  # neither the output nor its folder


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    make_session(root / "good", seed=1)
    make_session(root / "bad", seed=0)
    return root


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_corpus(name, pristine, tmp_path):
    case = CASES[name]
    inputs = tmp_path / "in"
    shutil.copytree(pristine, inputs)
    original = read_session(inputs / "bad").read_episode("000001") if case.recoverable else None
    case.damage(inputs / "bad")
    digest = tree_hash(inputs)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "ds.hdf5"
    r = _run_cli("convert", str(inputs / "good"), str(inputs / "bad"), "-o", str(out), "--quiet")
    assert tree_hash(inputs) == digest, "the input was modified"
    where = str(inputs / "bad" / case.file) + ("" if case.line is None else f":{case.line}:")
    if case.recoverable:
        assert r.returncode == 0, r.stderr
        assert r.stderr.startswith("warning: ") and where in r.stderr
        eps = list(read_episodes(out))
        assert [e.num_samples for e in eps] == [STEPS, STEPS, STEPS, STEPS - 1]
        kept = eps[3]
        np.testing.assert_array_equal(kept.actions, original.actions[: STEPS - 1])
        np.testing.assert_array_equal(kept.obs["wrist"], original.images["wrist"][: STEPS - 1])
        return
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert where in lines[0], (where, lines[0])
    for word in case.words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert os.listdir(tmp_path / "out") == [], "output left behind"


@pytest.mark.parametrize("name", ["truncated_png", "nan_in_obs", "missing_png", "task_changes"])
def test_malformed_append_leaves_dataset_untouched(name, pristine, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(pristine, inputs)
    out = tmp_path / "out" / "ds.hdf5"
    assert _run_cli("convert", str(inputs / "good"), "-o", str(out), "-q").returncode == 0
    CASES[name].damage(inputs / "bad")
    digest = tree_hash(tmp_path)
    r = _run_cli("convert", str(inputs / "bad"), "-o", str(out), "--append", "-q")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and CASES[name].file in r.stderr
    assert tree_hash(tmp_path) == digest


def test_truncated_episode_of_a_single_partial_line_is_an_error(tmp_path):
    make_session(tmp_path / "s", episodes=1, steps=2)
    steps = tmp_path / "s/episodes/000000/steps.jsonl"
    steps.write_bytes(steps.read_bytes()[:30])
    r = _run_cli("convert", str(tmp_path / "s"), "-o", str(tmp_path / "ds.hdf5"), "-q")
    assert r.returncode == 2
    assert f"warning: {steps}:1: truncated" in r.stderr and f"error: {steps}: empty episode" in r.stderr
    assert not (tmp_path / "ds.hdf5").exists()


def test_corpus_has_at_least_15_kinds():
    assert len(CASES) >= 15
    assert json.loads(json.dumps(sorted(CASES)))  # names are plain strings
