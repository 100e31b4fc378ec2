"""HDF5 schema round trip and errors, buffers, batch composition (Algorithm 1)."""

import h5py
import numpy as np
import pytest
import torch

from data_tools.hdf5_format import DatasetFormatError, Episode, dataset_info, read_episodes, write_dataset
from dual_actor import constants as K
from dual_actor.data.buffers import TaskBuffers, TransitionBuffer
from dual_actor.data.datamodule import BufferSampler
from dual_actor.data.hdf5 import DataSpec, load_dataset_into
from dual_actor.policy import DualActorPolicy
from factories import TASKS, synthetic_episode, tiny_policy_kwargs, write_synthetic_dataset

SPEC = DataSpec(TASKS, "state", 6, "proprio", 2, 4)


def _load(path, policy=None):
    policy = policy or DualActorPolicy(**tiny_policy_kwargs())
    bufs = TaskBuffers(TASKS)
    counts = load_dataset_into(bufs, path, SPEC, policy.embed, policy.command_ids, gamma=0.5)
    return bufs, counts


def test_roundtrip_and_transitions(tmp_path):
    rng = np.random.default_rng(0)
    ep = synthetic_episode(TASKS[0], 4, rng)
    ep.rewards[:] = [0, 0, 0, 1]
    ep.refinement_command = ["[null]", "move left", "[null]", "move up"]
    eps = [ep] + [synthetic_episode(t, 3, rng) for t in TASKS[1:]]
    path = write_dataset(tmp_path / "d.hdf5", eps, fps=10, masks={"train": ["demo_0"]})
    back = list(read_episodes(path))
    assert [e.task for e in back] == TASKS and back[0].refinement_command == ep.refinement_command
    assert np.array_equal(back[0].actions, ep.actions) and np.isnan(back[0].policy_actions).all()
    assert dataset_info(path).masks == {"train": ["demo_0"]}
    assert [e.name for e in read_episodes(path, split="train")] == ["demo_0"]
    bufs, counts = _load(path)
    assert counts == {t: 1 for t in TASKS}
    rows = bufs[TASKS[0]]["demos"].all()
    assert torch.allclose(rows[K.MC_RETURN], torch.tensor([0.125, 0.25, 0.5, 1.0]))  # gamma 0.5
    assert torch.equal(rows[K.NEXT_OBS][:3], rows[K.OBS][1:]) and rows[K.DONE].tolist() == [0, 0, 0, 1]
    policy = DualActorPolicy(**tiny_policy_kwargs())
    assert rows[K.COMMAND].tolist() == policy.command_ids(ep.refinement_command).tolist()
    # h = [state, one_hot(task)]
    assert torch.equal(rows[K.H][:, -3:], torch.tensor([[1.0, 0, 0]] * 4))


def test_write_refuses_overwrite_and_leaves_nothing_on_failure(tmp_path):
    path = write_synthetic_dataset(tmp_path / "d.hdf5")
    with pytest.raises(FileExistsError):
        write_synthetic_dataset(path)
    bad = synthetic_episode(TASKS[0], 3, np.random.default_rng(0))
    bad.actions[1, 0] = np.nan
    with pytest.raises(DatasetFormatError, match="demo_0/actions: contains NaN"):
        write_dataset(tmp_path / "bad.hdf5", [bad], fps=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.hdf5"]


def test_truncated_episode_drops_last_transition(tmp_path):
    ep = synthetic_episode(TASKS[0], 5, np.random.default_rng(0), success=False)
    others = [synthetic_episode(t, 3, np.random.default_rng(1)) for t in TASKS[1:]]
    bufs, _ = _load(write_dataset(tmp_path / "d.hdf5", [ep, *others], fps=10))
    assert len(bufs[TASKS[0]]["demos"]) == 4


def test_online_episode_split_into_buffers(tmp_path):
    rng = np.random.default_rng(0)
    ep = synthetic_episode(TASKS[1], 6, rng, kind="online")
    ep.intervention = np.array([0, 1, 1, 0, 0, 0], bool)
    ep.refinement_command = ["[null]", "move left", "move up", "[null]", "[null]", "[null]"]
    eps = [synthetic_episode(t, 3, rng) for t in TASKS] + [ep]
    bufs, _ = _load(write_dataset(tmp_path / "d.hdf5", eps, fps=10))
    sizes = bufs.sizes()
    assert sizes[TASKS[1]] == {"demos": 3 + 2, "rollouts": 4, "interventions": 2}
    assert sizes["talk_tweak"] == {"all": 2}
    # the proposals live on only in the talk-and-tweak buffer, as executed - proposed (NaN: none recorded)
    assert all(K.POLICY_ACTION not in b.keys for kinds in bufs.per_task.values() for b in kinds.values())
    assert torch.isnan(bufs.talk_tweak.all()[K.CORRECTION]).all()


def test_talk_tweak_rows_keep_the_correction():
    """``policy_action`` in an episode's rows becomes the talk-and-tweak rows' ``correction`` = action - proposal
    (hand-computed), per-task buffers never hold it, and a buffer state saved before the column existed loads
    with NaN corrections (no proposal known), so a resumed run can keep adding rows."""
    n = 4
    action = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, -0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 1.0, 0.2, 0.0]])
    proposal = torch.tensor([[0.0, 0.2, 0.1, 0.4], [0.5, 0.5, 0.0, 1.0], [9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0]])
    rows = {"action": action, "x": torch.arange(n, dtype=torch.float32)[:, None],
            "intervention": torch.tensor([True, True, False, True]), K.POLICY_ACTION: proposal}
    bufs = TaskBuffers(TASKS)
    bufs.add_episode(TASKS[0], "online", rows)
    tt = bufs.talk_tweak.all()
    want = torch.tensor([[0.1, 0.0, 0.2, 0.0], [0.0, -1.0, 0.0, 0.0], [-1.0, 1.0, 0.2, 0.0]])
    assert torch.allclose(tt[K.CORRECTION], want) and torch.equal(tt["x"][:, 0], torch.tensor([0.0, 1.0, 3.0]))
    assert set(bufs[TASKS[0]]["rollouts"].keys) == set(bufs[TASKS[0]]["demos"].keys) == {"action", "x", "intervention"}
    bufs.add_episode(TASKS[1], "demo", rows)  # a demo's proposals are dropped
    assert K.POLICY_ACTION not in bufs[TASKS[1]]["demos"].keys
    old = bufs.state_dict()
    del old["talk_tweak"]["rows"][K.CORRECTION]
    again = TaskBuffers(TASKS)
    again.load_state_dict(old)
    assert torch.isnan(again.talk_tweak.all()[K.CORRECTION]).all() and len(again.talk_tweak) == 3
    again.add_episode(TASKS[0], "online", rows)
    assert len(again.talk_tweak) == 6


def _corrupt(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda f: f.attrs.__setitem__("format", "robomimic"), "attribute 'format'"),
        (lambda f: f.attrs.__setitem__("format_version", 7), "format_version 7"),
        (lambda f: f["data/demo_1"].__delitem__("actions"), "demo_1: missing dataset 'actions'"),
        (lambda f: f["data/demo_2"].attrs.__setitem__("num_samples", 99), "demo_2: attribute num_samples=99"),
        (lambda f: f["data"].create_group("junk"), "/data/junk: unexpected entry"),
    ],
)
def test_malformed_file_errors_name_file_and_key(tmp_path, mutate, match):
    path = write_synthetic_dataset(tmp_path / "d.hdf5", episodes_per_task=1)
    _corrupt(path, mutate)
    with pytest.raises(DatasetFormatError, match=match) as e:
        _load(path)
    assert str(path) in str(e.value)


def test_not_hdf5_and_missing(tmp_path):
    (tmp_path / "x.hdf5").write_text("not hdf5")
    with pytest.raises(DatasetFormatError, match="not a readable HDF5"):
        _load(tmp_path / "x.hdf5")
    with pytest.raises(DatasetFormatError, match="no such file"):
        _load(tmp_path / "nope.hdf5")


def test_task_absent_and_shape_mismatch(tmp_path):
    path = write_synthetic_dataset(tmp_path / "two.hdf5", tasks=TASKS[:2])
    with pytest.raises(DatasetFormatError, match=r"no episodes for configured task\(s\) \['assemble the bolt'\]"):
        _load(path)
    path = write_synthetic_dataset(tmp_path / "wide.hdf5", obs_dim=9)
    with pytest.raises(DatasetFormatError, match=r"demo_0/obs/state: shape \(20, 9\), but the networks expect \(N, 6\)"):
        _load(path)
    bufs = TaskBuffers(TASKS)
    with pytest.raises(DatasetFormatError):
        load_dataset_into(bufs, path, SPEC, lambda *a: None, lambda c: None, 0.9)
    assert all(len(b) == 0 for d in bufs.per_task.values() for b in d.values())  # nothing half-loaded


def _marked(n, value):
    return {"x": torch.full((n, 1), float(value))}


def test_warmup_batch_composition():
    bufs = TaskBuffers(TASKS)
    for i, t in enumerate(TASKS):
        bufs[t]["demos"].add(_marked(50, 10 * i + 1))
        bufs[t]["rollouts"].add(_marked(500, 10 * i + 2))
    batch = BufferSampler(bufs, batch_size=12, phase="warmup").sample()
    for i, sl in enumerate(batch[K.TASKS]):
        assert sl["x"].squeeze(1).tolist() == [10 * i + 1] * 4  # B/N rows, all demos of task i
    assert batch[K.TALK_TWEAK] is None


def test_online_batch_composition_and_wait():
    bufs = TaskBuffers(TASKS)
    for i, t in enumerate(TASKS):
        bufs[t]["demos"].add(_marked(50, 10 * i + 1))
        bufs[t]["rollouts"].add(_marked(99 if i == 2 else 150, 10 * i + 2))
    bufs.talk_tweak.add(_marked(7, 99))
    sampler = BufferSampler(bufs, batch_size=24, phase="online", refine_batch_size=5)
    assert not sampler.ready()  # task 2 has 99 < 100 rollouts
    with pytest.raises(RuntimeError, match="not ready"):
        next(iter(sampler))
    bufs[TASKS[2]]["rollouts"].add(_marked(1, 22))
    batch = next(iter(sampler))
    for i, sl in enumerate(batch[K.TASKS]):
        vals = sl["x"].squeeze(1).tolist()
        assert vals.count(10 * i + 1) == 4 and vals.count(10 * i + 2) == 4  # B/(2N) + B/(2N)
    assert batch[K.TALK_TWEAK]["x"].squeeze(1).tolist() == [99] * 5


def test_buffer_state_roundtrip():
    b = TransitionBuffer(initial_capacity=2)
    b.add({"a": torch.arange(5.0)[:, None]})
    b.add({"a": torch.arange(3.0)[:, None]})
    c = TransitionBuffer()
    c.load_state_dict(b.state_dict())
    assert len(c) == 8 and torch.equal(c.all()["a"], b.all()["a"])
    with pytest.raises(ValueError, match="keys"):
        b.add({"b": torch.zeros(1, 1)})
