"""Teleoperation log format v1: writer and validating reader (hand-derived values)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from data_tools.errors import DataToolsError, TeleopLogError
from data_tools.teleop_log import (
    SessionWriter,
    TeleopLogWarning,
    decode_png,
    iter_step_records,
    read_session,
)

WRIST = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)  # (H=4, W=5, 3)


def _write_small(root, **kw):
    """Session: 1 camera, one episode of 3 steps with hand-picked values."""
    w = SessionWriter(root, fps=10, robot="ur5", action_dim=4, translation_scale_m=0.01, cameras=("wrist",), **kw)
    with w, w.episode("ep0") as ep:
        ep.step(t=0.0, task="pick", obs={"proprio": [1.0, 2.0]}, action=[0.1, 0.2, 0.3, 1.0],
                policy_action=[0.0, 0.0, 0.0, 1.0], images={"wrist": WRIST})
        ep.step(t=0.1, task="pick", obs={"proprio": np.array([3.0, 4.0])}, action=np.array([1.0, 0.0, -1.0, 0.0]),
                intervention=True, command="move left", images={"wrist": WRIST[::-1].copy()})
        ep.step(t=0.2, task="pick", obs={"proprio": [5, 6]}, action=[0, 0, 0, 0], reward=1.0, done=True,
                images={"wrist": np.zeros((4, 5, 3), np.uint8)})
    return w


def test_writer_files_are_exactly_the_format(tmp_path):
    _write_small(tmp_path / "s", metadata={"operator": "alice"})
    meta = json.loads((tmp_path / "s/session.json").read_text())
    assert meta == {"format": "dual-actor-teleop-log", "version": 1, "fps": 10, "robot": "ur5", "action_dim": 4,
                    "translation_scale_m": 0.01, "cameras": ["wrist"], "operator": "alice"}
    raw = (tmp_path / "s/episodes/ep0/steps.jsonl").read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 3
    lines = [json.loads(x) for x in raw.splitlines()]
    assert lines[1] == {"step": 1, "t": 0.1, "task": "pick", "obs": {"proprio": [3.0, 4.0]},
                        "action": [1.0, 0.0, -1.0, 0.0], "policy_action": None, "intervention": True,
                        "command": "move left", "reward": 0.0, "done": False}
    assert lines[0]["policy_action"] == [0.0, 0.0, 0.0, 1.0]
    assert lines[2]["done"] is True and lines[2]["reward"] == 1.0
    files = sorted(p.name for p in (tmp_path / "s/episodes/ep0/wrist").iterdir())
    assert files == ["000000.png", "000001.png", "000002.png"]  # no temporary files left
    np.testing.assert_array_equal(decode_png(tmp_path / "s/episodes/ep0/wrist/000001.png"), WRIST[::-1])


def test_reader_arrays(tmp_path):
    _write_small(tmp_path / "s")
    s = read_session(tmp_path / "s")
    assert (s.fps, s.robot, s.action_dim, s.translation_scale_m, s.cameras) == (10.0, "ur5", 4, 0.01, ("wrist",))
    assert s.episode_ids == ("ep0",)
    (ep,) = list(s.episodes())
    assert len(ep) == 3 and not ep.truncated
    np.testing.assert_array_equal(ep.steps, [0, 1, 2])
    np.testing.assert_allclose(ep.t, [0.0, 0.1, 0.2])
    assert ep.tasks == ["pick"] * 3
    np.testing.assert_array_equal(ep.obs["proprio"], [[1, 2], [3, 4], [5, 6]])
    assert ep.obs["proprio"].dtype == np.float32 and ep.actions.dtype == np.float32
    np.testing.assert_array_equal(ep.actions, np.float32([[0.1, 0.2, 0.3, 1], [1, 0, -1, 0], [0, 0, 0, 0]]))
    np.testing.assert_array_equal(ep.policy_actions[0], [0, 0, 0, 1])
    assert np.isnan(ep.policy_actions[1:]).all()
    np.testing.assert_array_equal(ep.has_policy_action, [True, False, False])
    np.testing.assert_array_equal(ep.intervention, [False, True, False])
    assert ep.commands == [None, "move left", None]
    np.testing.assert_array_equal(ep.rewards, [0, 0, 1])
    np.testing.assert_array_equal(ep.dones, [False, False, True])
    assert ep.image_shapes == {"wrist": (4, 5, 3)}
    imgs = ep.images["wrist"]
    assert imgs.shape == (3, 4, 5, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs[0], WRIST)
    np.testing.assert_array_equal(imgs[1], WRIST[::-1])
    np.testing.assert_array_equal(imgs[2], 0)


def test_lazy_images_and_streaming(tmp_path):
    _write_small(tmp_path / "s")
    s = read_session(tmp_path / "s")
    ep = s.read_episode("ep0", load_images=False)
    assert ep.images == {} and [p.name for p in ep.image_paths["wrist"]] == ["000000.png", "000001.png", "000002.png"]
    imgs = ep.load_images(workers=2)
    np.testing.assert_array_equal(imgs["wrist"][0], WRIST)
    it = s.iter_steps("ep0")
    first = next(it)  # streamed one line at a time
    assert first["step"] == 0 and first["action"] == [0.1, 0.2, 0.3, 1.0]
    assert [r["step"] for r in it] == [1, 2]


def test_each_step_is_on_disk_before_close(tmp_path):
    w = SessionWriter(tmp_path / "s", action_dim=3, cameras=(), fsync=True)
    ep = w.episode("a")
    for k in range(2):
        ep.step(task="t", obs={"proprio": [k]}, action=[0, 0, k])
        text = (tmp_path / "s/episodes/a/steps.jsonl").read_text()  # other handle, file still open
        assert text.count("\n") == k + 1 and json.loads(text.splitlines()[-1])["step"] == k
    ep.close()
    assert [r["obs"]["proprio"] for r in iter_step_records(ep.steps_path, w.meta)] == [[0], [1]]


def test_default_step_and_time(tmp_path):
    with SessionWriter(tmp_path / "s", action_dim=3) as w, w.episode() as ep:
        assert ep.episode_id == "000000"
        assert ep.step(task="t", obs={"proprio": [0]}, action=[0, 0, 0]) == 0
        assert ep.step(task="t", obs={"proprio": [0]}, action=[0, 0, 0]) == 1
    recs = list(read_session(tmp_path / "s").iter_steps("000000"))
    assert recs[0]["t"] == 0.0 and 0.0 <= recs[1]["t"] < 5.0
    with SessionWriter(tmp_path / "s", action_dim=3, force=True) as w:
        assert w.episode().episode_id == "000001"


def test_writer_rejects_bad_steps_and_writes_nothing(tmp_path):
    w = SessionWriter(tmp_path / "s", action_dim=3, cameras=("cam",))
    ep = w.episode("e")
    img = np.zeros((2, 2, 3), np.uint8)
    ep.step(task="t", obs={"proprio": [0]}, action=[0, 0, 0], images={"cam": img})
    bad = [
        (dict(action=[0, 0]), "action has 2 values, expected 3"),
        (dict(action=[0, math.nan, 0]), "action[1] is nan"),
        (dict(obs={"state": [1]}), "no 'proprio'"),
        (dict(images={}), "no image for camera 'cam'"),
        (dict(images={"cam": img, "other": img}), "not listed"),
        (dict(images={"cam": np.zeros((3, 2, 3), np.uint8)}), "differs from the first"),
        (dict(images={"cam": np.zeros((2, 2, 3), np.float32)}), "must be uint8"),
        (dict(step=5), "step 5 found, expected 1"),
        (dict(command=""), "'command' must be a non-empty string"),
    ]
    for change, message in bad:
        kw = dict(task="t", obs={"proprio": [0]}, action=[0, 0, 0], images={"cam": img}) | change
        with pytest.raises(TeleopLogError, match=r"steps\.jsonl:2: .*" + message.replace("[", r"\[")):
            ep.step(**kw)
    ep.step(task="t", obs={"proprio": [0]}, action=[0, 0, 0], images={"cam": img}, done=True)
    with pytest.raises(TeleopLogError, match="done = true"):
        ep.step(task="t", obs={"proprio": [0]}, action=[0, 0, 0], images={"cam": img})
    ep.close()
    assert len(list(read_session(tmp_path / "s").iter_steps("e"))) == 2
    assert sorted(p.name for p in (tmp_path / "s/episodes/e/cam").iterdir()) == ["000000.png", "000001.png"]


def test_writer_never_overwrites(tmp_path):
    with SessionWriter(tmp_path / "s", action_dim=3) as w:
        with w.episode("e") as ep:
            ep.step(task="t", obs={"proprio": [0]}, action=[0, 0, 0])
        with pytest.raises(FileExistsError):
            w.episode("e")
        with pytest.raises(TeleopLogError, match="not a valid name"):
            w.episode("../escape")
    with pytest.raises(FileExistsError, match="session.json"):
        SessionWriter(tmp_path / "s", action_dim=3)
    with pytest.raises(TeleopLogError, match="'action_dim' must be a positive integer"):
        SessionWriter(tmp_path / "t", action_dim=0)
    SessionWriter(tmp_path / "s", action_dim=3, force=True, robot="other")
    assert read_session(tmp_path / "s").robot == "other"
    assert read_session(tmp_path / "s").episode_ids == ("e",)  # recorded episodes kept


def test_episode_without_steps_leaves_nothing(tmp_path):
    with SessionWriter(tmp_path / "s", action_dim=3, cameras=("c",)) as w:
        w.episode("empty")
    assert list((tmp_path / "s/episodes").iterdir()) == []


def test_truncated_final_line_is_recovered(tmp_path):
    with SessionWriter(tmp_path / "s", action_dim=3) as w, w.episode("e") as ep:
        for k in range(4):
            ep.step(task="t", obs={"proprio": [k]}, action=[k, 0, 0])
    path = tmp_path / "s/episodes/e/steps.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # crash in the middle of the 4th line
    s = read_session(tmp_path / "s")
    with pytest.warns(TeleopLogWarning, match=rf"{path}:4: truncated final line.*kept the 3 complete"):
        ep = s.read_episode("e")
    assert ep.truncated and len(ep) == 3
    np.testing.assert_array_equal(ep.actions[:, 0], [0, 1, 2])
    # a final line that is complete JSON but lost only its newline is a normal step
    path.write_bytes(data[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ep = s.read_episode("e")
    assert len(ep) == 4 and not ep.truncated
    # a bad line that is not the last one is an error, not a recovery
    path.write_bytes(data.replace(b'"step":2', b'"step":2,'))
    with pytest.raises(TeleopLogError, match=rf"{path}:3: not valid JSON"):
        s.read_episode("e")


def test_reader_errors_name_file_and_line(tmp_path):
    with SessionWriter(tmp_path / "s", action_dim=3) as w, w.episode("e") as ep:
        for k in range(3):
            ep.step(task="t", obs={"proprio": [k]}, action=[k, 0, 0])
    path = tmp_path / "s/episodes/e/steps.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + lines[1].replace('"action":[1,0,0]', '"action":[1,0,NaN]') + lines[2])
    with pytest.raises(TeleopLogError) as err:
        read_session(tmp_path / "s").read_episode("e")
    assert str(err.value) == f"{path}:2: action[2] is nan (values must be finite)"
    assert (err.value.path, err.value.line) == (str(path), 2)
    assert isinstance(err.value, DataToolsError)


def test_session_json_validation(tmp_path):
    s = tmp_path / "s"
    SessionWriter(s, action_dim=3, cameras=("a",))
    meta = json.loads((s / "session.json").read_text())
    for change, message in [
        ({"version": 2}, "format version 2 is not supported"),
        ({"version": True}, "format version True"),
        ({"format": "x"}, "'format' is 'x'"),
        ({"fps": 0}, "'fps' must be a positive number"),
        ({"translation_scale_m": -1}, "'translation_scale_m'"),
        ({"cameras": ["a", "a"]}, "twice"),
        ({"cameras": ["a/b"]}, "not a valid name"),
        ({"robot": ""}, "'robot'"),
    ]:
        (s / "session.json").write_text(json.dumps(meta | change))
        with pytest.raises(TeleopLogError, match=f"{s / 'session.json'}: .*{message}"):
            read_session(s)
    (s / "session.json").write_text(json.dumps(meta | {"operator": "bob"}))
    assert read_session(s).meta.extra == {"operator": "bob"}
    with pytest.raises(TeleopLogError, match="no such directory"):
        read_session(tmp_path / "nope")


def test_episode_order_is_natural(tmp_path):
    with SessionWriter(tmp_path / "s", action_dim=3) as w:
        for eid in ("ep10", "ep2", "ep1"):
            with w.episode(eid) as ep:
                ep.step(task="t", obs={"proprio": [0]}, action=[0, 0, 0])
    (tmp_path / "s/episodes/.hidden").mkdir()
    (tmp_path / "s/episodes/notes.txt").write_text("x")
    assert read_session(tmp_path / "s").episode_ids == ("ep1", "ep2", "ep10")


def test_staged_episodes_appear_whole_and_a_dead_ones_is_discarded(tmp_path):
    """staging=True: an episode is invisible to readers until it is closed, then appears whole; one never
    closed (its process died) stays in .staging/ and discard_staging deletes it."""
    from data_tools.teleop_log import SessionWriter, discard_staging, read_session

    sw = SessionWriter(tmp_path / "s", action_dim=2, staging=True)
    ep = sw.episode()
    for i in range(3):
        ep.step(task="t", obs={"proprio": [0.0, float(i)]}, action=[0.1, 0.2])
    assert read_session(tmp_path / "s").episode_ids == ()  # being written: not an episode yet
    ep.close()
    s = read_session(tmp_path / "s")
    assert s.episode_ids == ("000000",) and len(next(iter(s.episodes())).steps) == 3
    dead = sw.episode()  # the next id, written and never closed
    dead.step(task="t", obs={"proprio": [0.0, 0.0]}, action=[0.0, 0.0])
    assert dead.episode_id == "000001"
    assert read_session(tmp_path / "s").episode_ids == ("000000",)
    assert discard_staging(tmp_path / "s") == 1
    assert not (tmp_path / "s" / ".staging").exists()
    assert read_session(tmp_path / "s").episode_ids == ("000000",)
