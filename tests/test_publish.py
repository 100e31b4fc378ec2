"""Publishing: export-hf, export-lerobot and push (up to the HfApi boundary, with a fake)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from unittest.mock import create_autospec

import numpy as np
import pytest
import yaml

from data_tools import hf_export, publish
from data_tools.cli import add_publish_subcommands
from data_tools.errors import DataToolsError
from data_tools.hdf5_format import DatasetFormatError, Episode, write_dataset
from data_tools.talk_tweak import command_vocabulary

REPO = Path(__file__).resolve().parents[1]
SPOKEN = "a bit more to the left"  # an operator's own words: not in the rule's vocabulary
SECRET = "hf_TESTsecretTOKEN0123456789abcdef"


def _episodes() -> list[Episode]:
    """Three episodes, hand-written so that every count in the tests can be derived by hand.

    ep0 "place the bolt"/demo, 6 steps, intervened 2..4, success;
    ep1 "pick up the bolt"/online, 5 steps, intervened 1..2 (one spoken command), success;
    ep2 "place the bolt"/online, 4 steps, no intervention, failure.
    """
    rng = np.random.default_rng(7)
    specs = [
        ("place the bolt", "demo", [0, 0, 1, 1, 1, 0],
         ["[null]", "[null]", "move left", "move left", "move right and forward", "[null]"], True),
        ("pick up the bolt", "online", [0, 1, 1, 0, 0], ["[null]", SPOKEN, "move up", "[null]", "[null]"], True),
        ("place the bolt", "online", [0, 0, 0, 0], ["[null]"] * 4, False),
    ]
    eps = []
    for k, (task, kind, inter, cmds, success) in enumerate(specs):
        n = len(inter)
        rewards = np.zeros(n, np.float32)
        rewards[-1] = 1.0 if success else 0.0
        policy = rng.normal(size=(n, 4)).astype(np.float32)
        policy[np.asarray(inter, bool)] = np.nan
        eps.append(Episode(
            obs={
                "state": rng.normal(size=(n, 6)).astype(np.float32),
                "proprio": rng.normal(size=(n, 2)).astype(np.float32),
                "wrist": rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8),
            },
            actions=rng.uniform(-1, 1, size=(n, 4)).astype(np.float32),
            rewards=rewards, dones=np.arange(n) == n - 1, task=task, robot="sim-arm", kind=kind,
            episode_id=f"session-{k}", policy_actions=policy if k != 1 else None,
            intervention=np.asarray(inter, bool), refinement_command=cmds,
        ))
    return eps


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "talk_tweak.hdf5"
    write_dataset(path, _episodes(), fps=10, env_args={"synthetic": True})
    return path


@pytest.fixture(scope="module")
def hf_dir(source, tmp_path_factory) -> Path:
    return publish.export_hf(source, tmp_path_factory.mktemp("hf") / "export", progress=False)


@pytest.fixture(scope="module")
def lerobot_dir(source, tmp_path_factory) -> Path:
    return publish.export_lerobot(source, tmp_path_factory.mktemp("lr") / "export", "tester/bolts", progress=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Hub offline in this process, and a private datasets cache."""
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path / "hf-cache"


# ---------------------------------------------------------------------------------------------
# export-hf


def test_export_hf_round_trips_every_value(source, hf_dir, offline):
    import datasets

    shards = sorted(p.name for p in (hf_dir / "data").iterdir())
    assert shards == ["train-00000-of-00001.parquet"]
    assert _leftovers(hf_dir.parent) == []
    ds = datasets.load_dataset(str(hf_dir), split="train", cache_dir=str(offline))
    assert ds.num_rows == 6 + 5 + 4
    assert isinstance(ds.features["observation.wrist"], datasets.Image)
    assert ds.features["observation.state"] == datasets.List(datasets.Value("float32"), length=6)
    assert ds.features["intervention"] == datasets.Value("bool")
    row = 0
    for k, ep in enumerate(_episodes()):
        for t in range(ep.num_samples):
            r = ds[row]
            assert (r["episode"], r["episode_id"], r["task"], r["kind"], r["robot"], r["step"]) == (
                f"demo_{k}", f"session-{k}", ep.task, ep.kind, "sim-arm", t)
            np.testing.assert_array_equal(np.asarray(r["observation.state"], np.float32), ep.obs["state"][t])
            np.testing.assert_array_equal(np.asarray(r["observation.proprio"], np.float32), ep.obs["proprio"][t])
            np.testing.assert_array_equal(np.asarray(r["observation.wrist"]), ep.obs["wrist"][t])
            np.testing.assert_array_equal(np.asarray(r["action"], np.float32), ep.actions[t])
            np.testing.assert_array_equal(np.asarray(r["policy_action"], np.float32), ep.policy_actions[t])
            assert r["reward"] == ep.rewards[t] and r["done"] == ep.dones[t]
            assert r["intervention"] == ep.intervention[t]
            assert r["refinement_command"] == ep.refinement_command[t]
            row += 1
    # NaN kept where the policy proposed nothing: ep0 steps 2..4 and all of ep1
    assert np.isnan(np.asarray(ds["policy_action"], np.float32)).all(axis=1).sum() == 3 + 5


def test_export_hf_shards(source, tmp_path, monkeypatch, offline):
    import datasets

    monkeypatch.setattr(hf_export, "_SHARD_BYTES", 1)  # one shard per episode
    out = publish.export_hf(source, tmp_path / "sharded", progress=False)
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        f"train-0000{i}-of-00003.parquet" for i in range(3)]
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(offline))
    assert ds["episode"] == ["demo_0"] * 6 + ["demo_1"] * 5 + ["demo_2"] * 4
    assert ds["step"] == [*range(6), *range(5), *range(4)]
    assert "3 parquet shard(s)" in (out / "README.md").read_text()


def test_export_hf_card(hf_dir):
    text = (hf_dir / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert {"dual-actor", "talk-and-tweak", "robotics"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert names == ["episode", "episode_id", "task", "kind", "robot", "step", "observation.proprio",
                     "observation.state", "observation.wrist", "action", "policy_action", "reward", "done",
                     "intervention", "refinement_command"]
    assert {"name": "observation.wrist", "dtype": "image"} in meta["dataset_info"]["features"]
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_examples": 15}]
    # counts by hand: 15 steps, 5 intervened
    assert "3 episodes, 15 steps at 10 fps; 5 intervened steps (intervention ratio 0.3333)" in text
    assert "| place the bolt | demo | 1 | 6 | 1 | 3 | 0.5000 |" in text
    assert "| place the bolt | online | 1 | 4 | 0 | 0 | 0.0000 |" in text
    assert "| pick up the bolt | online | 1 | 5 | 1 | 2 | 0.4000 |" in text
    assert "| [null] | 10 | 0 | 0.6667 |" in text
    assert "| move left | 2 | 2 | 0.1333 |" in text
    assert f"| {SPOKEN} | 1 | 1 | 0.0667 |" in text
    assert "| `observation.wrist` | Image (PNG) |" in text


def test_exports_load_in_a_fresh_offline_process(hf_dir, lerobot_dir, tmp_path):
    """HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 from the start, an empty HF_HOME."""
    script = (
        "import sys, json, datasets\n"
        "from lerobot.datasets.lerobot_dataset import LeRobotDataset\n"
        "hf = datasets.load_dataset(sys.argv[1], split='train')\n"
        "lr = LeRobotDataset('tester/bolts', root=sys.argv[2])\n"
        "print(json.dumps([hf.num_rows, sum(hf['intervention']), hf[3]['refinement_command'],\n"
        "                  len(lr), lr.num_episodes, int(lr[3]['refinement_command_id'])]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", script, str(hf_dir), str(lerobot_dir)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        15, 5, "move left", 15, 3, command_vocabulary().index("move left")]


def test_export_refuses_existing_output_and_force_replaces_it(source, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataToolsError, match="exists"):
        publish.export_hf(source, out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    publish.export_hf(source, out, force=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "README.md").is_file()
    assert _leftovers(tmp_path) == []
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode
    with pytest.raises(DataToolsError, match="would replace the input"):
        publish.export_hf(source, source.parent, force=True, progress=False)
    with pytest.raises(DataToolsError, match="would replace the input"):
        publish.export_lerobot(source, source, "a/b", force=True, progress=False)
    assert source.is_file()


def test_failed_export_leaves_nothing_and_keeps_the_old_output(source, tmp_path, monkeypatch):
    calls = []

    def broken_png(frame):
        calls.append(1)
        if len(calls) > 3:
            raise OSError("disk full")
        return b"png"

    monkeypatch.setattr(hf_export, "_png", broken_png)
    with pytest.raises(OSError, match="disk full"):
        publish.export_hf(source, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("mine")
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        publish.export_hf(source, old, force=True, progress=False)
    assert (old / "keep.txt").read_text() == "mine"
    assert _leftovers(tmp_path) == []


def test_bad_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DatasetFormatError, match="bad.hdf5"):
        publish.export_hf(bad, tmp_path / "out", progress=False)
    write_dataset(tmp_path / "empty.hdf5", [], fps=10)
    with pytest.raises(DataToolsError, match="no episodes"):
        publish.export_lerobot(tmp_path / "empty.hdf5", tmp_path / "out", "a/b", progress=False)
    write_dataset(tmp_path / "odd_fps.hdf5", _episodes()[:1], fps=7.5)
    with pytest.raises(DataToolsError, match="fps 7.5"):
        publish.export_lerobot(tmp_path / "odd_fps.hdf5", tmp_path / "out", "a/b", progress=False)
    eps = _episodes()[:2]
    eps[1].obs["state"] = eps[1].obs["state"][:, :5]
    write_dataset(tmp_path / "mixed.hdf5", eps, fps=10)
    with pytest.raises(DataToolsError, match="demo_1/obs"):
        publish.export_hf(tmp_path / "mixed.hdf5", tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.hdf5", "empty.hdf5", "mixed.hdf5", "odd_fps.hdf5"]


# ---------------------------------------------------------------------------------------------
# export-lerobot


def test_export_lerobot_frames_match_the_source(lerobot_dir, offline):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("tester/bolts", root=lerobot_dir)
    assert (len(ds), ds.num_episodes, ds.fps) == (15, 3, 10)
    vocab = publish.read_lerobot_commands(lerobot_dir)
    assert vocab[:27] == command_vocabulary() and vocab[27:] == [SPOKEN]
    info = json.loads((lerobot_dir / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["robot_type"] == "sim-arm"
    assert info["features"]["observation.images.wrist"]["dtype"] == "image"
    assert info["features"]["observation.state"]["names"][:3] == ["proprio_0", "proprio_1", "state_0"]
    assert info["features"]["refinement_command_id"] == {"dtype": "int64", "shape": [1], "names": None}
    i = 0
    for k, ep in enumerate(_episodes()):
        for t in range(ep.num_samples):
            f = ds[i]
            assert (int(f["episode_index"]), int(f["frame_index"]), f["task"]) == (k, t, ep.task)
            np.testing.assert_array_equal(f["action"].numpy(), ep.actions[t])
            np.testing.assert_array_equal(
                f["observation.state"].numpy(), np.concatenate([ep.obs["proprio"][t], ep.obs["state"][t]]))
            img = np.round(f["observation.images.wrist"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
            np.testing.assert_array_equal(img, ep.obs["wrist"][t])
            assert int(f["intervention"]) == int(ep.intervention[t])
            assert vocab[int(f["refinement_command_id"])] == ep.refinement_command[t]
            assert float(f["next.reward"]) == ep.rewards[t] and bool(f["next.done"]) == ep.dones[t]
            i += 1
    assert int(ds[1 + 6]["refinement_command_id"]) == 27  # ep1 step 1: the spoken command
    card = (lerobot_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert {"LeRobot", "dual-actor", "talk-and-tweak", "robotics"} <= set(meta["tags"])
    assert "| move left | 2 | 2 | 0.1333 |" in card
    assert not (lerobot_dir / "images").exists() and _leftovers(lerobot_dir.parent) == []


# ---------------------------------------------------------------------------------------------
# push


class FakeApi:
    """The HfApi calls push makes, recorded by a ``create_autospec(HfApi)`` mock (no network): a call with a
    keyword or argument that the real ``HfApi`` method does not take fails here as it would there."""

    METHODS = ("create_repo", "upload_folder", "upload_file", "delete_tag", "create_tag")

    def __init__(self, fail: BaseException | None = None):
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RevisionNotFoundError

        self.mock = create_autospec(HfApi, instance=True, spec_set=True)
        if fail is not None:
            for name in self.METHODS:
                getattr(self.mock, name).side_effect = fail
        else:
            self.mock.create_repo.side_effect = lambda repo_id, **kw: f"https://huggingface.co/datasets/{repo_id}"
            self.mock.delete_tag.side_effect = RevisionNotFoundError("no such tag")

    def __getattr__(self, name):
        return getattr(self.mock, name)

    @property
    def calls(self) -> list[tuple[str, tuple, dict]]:
        return [(c[0], tuple(c[1]), dict(c[2])) for c in self.mock.mock_calls]

    def names(self):
        return [c[0] for c in self.calls]


def test_fake_api_keeps_the_real_signatures():
    api = FakeApi()
    with pytest.raises(TypeError):
        api.upload_folder(repo_id="a/b", folder="x")  # HfApi.upload_folder has folder_path, not folder
    with pytest.raises(AttributeError):
        api.push_everything("a/b")


@pytest.fixture
def online(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _assert_no_secret(capsys, caplog):
    out = capsys.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (out.out, out.err, logged):
        assert SECRET not in text


def test_push_hf_export(hf_dir, online, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    api = FakeApi()
    url = publish.push(hf_dir, "tester/bolts", private=True, token=SECRET, api=api)
    assert url == "https://huggingface.co/datasets/tester/bolts"
    assert api.names() == ["create_repo", "upload_folder"]  # the card already has the tags
    _, args, kw = api.calls[0]
    assert args == ("tester/bolts",)
    assert kw == {"token": SECRET, "private": True, "repo_type": "dataset", "exist_ok": True}
    kw = api.calls[1][2]
    assert (kw["repo_id"], kw["folder_path"], kw["repo_type"], kw["token"]) == (
        "tester/bolts", str(hf_dir), "dataset", SECRET)
    assert "README.md" not in kw["ignore_patterns"]
    _assert_no_secret(capsys, caplog)


def test_push_lerobot_export_tags_the_codebase_version(lerobot_dir, online, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    api = FakeApi()
    publish.push(lerobot_dir, "tester/bolts", token=SECRET, api=api)
    assert api.names() == ["create_repo", "upload_folder", "delete_tag", "create_tag"]
    assert api.calls[0][2]["private"] is False
    assert "images/**" in api.calls[1][2]["ignore_patterns"]
    assert api.calls[3][1:] == (("tester/bolts",), {"tag": "v3.0", "token": SECRET, "repo_type": "dataset"})
    _assert_no_secret(capsys, caplog)


def test_push_adds_missing_tags_without_touching_the_folder(tmp_path, online):
    folder = tmp_path / "plain"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "x.parquet").write_bytes(b"")
    original = "---\nlicense: mit\ntags:\n- mine\n---\n\n# Mine\n"
    (folder / "README.md").write_text(original)
    api = FakeApi()
    publish.push(folder, "tester/plain", api=api)
    assert api.names() == ["create_repo", "upload_folder", "upload_file"]
    assert "README.md" in api.calls[1][2]["ignore_patterns"]
    card = api.calls[2][2]["path_or_fileobj"].decode()
    assert api.calls[2][2]["path_in_repo"] == "README.md"
    assert yaml.safe_load(card.split("---\n")[1])["tags"] == ["mine", "dual-actor", "talk-and-tweak", "robotics"]
    assert "# Mine" in card
    assert (folder / "README.md").read_text() == original


def test_push_offline_or_unreachable_is_a_clear_error(hf_dir, monkeypatch, online, capsys, caplog):
    import httpx
    import requests

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    api = FakeApi()
    with pytest.raises(publish.HubUnreachableError, match="Hugging Face Hub is unreachable / offline mode is on"):
        publish.push(hf_dir, "tester/bolts", token=SECRET, api=api)
    assert api.calls == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    api = FakeApi(fail=requests.exceptions.ConnectionError(f"no route to host (Authorization: Bearer {SECRET})"))
    with pytest.raises(publish.HubUnreachableError, match="unreachable") as e:
        publish.push(hf_dir, "tester/bolts", token=SECRET, api=api)
    assert SECRET not in str(e.value) and "no route to host" in str(e.value)
    for err in (requests.exceptions.Timeout(f"read timed out {SECRET}"), httpx.ConnectError(f"connection refused {SECRET}"),
                httpx.ReadTimeout(f"timed out {SECRET}")):  # huggingface_hub 0.3x uses requests, 1.x httpx
        with pytest.raises(publish.HubUnreachableError, match="unreachable") as e:
            publish.push(hf_dir, "tester/bolts", token=SECRET, api=FakeApi(fail=err))
        assert SECRET not in str(e.value)
    _assert_no_secret(capsys, caplog)


def test_push_refusal_and_bad_arguments(hf_dir, tmp_path, online):
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(DataToolsError, match="refused") as e:
        publish.push(hf_dir, "tester/bolts", token=SECRET, api=FakeApi(fail=HfHubHTTPError(f"403 {SECRET}")))
    assert not isinstance(e.value, publish.HubUnreachableError) and SECRET not in str(e.value)
    with pytest.raises(DataToolsError, match="no such folder"):
        publish.push(tmp_path / "missing", "tester/bolts", api=FakeApi())
    with pytest.raises(DataToolsError, match="neither a LeRobotDataset"):
        publish.push(tmp_path, "tester/bolts", api=FakeApi())
    with pytest.raises(DataToolsError, match="repo id"):
        publish.push(hf_dir, "no-owner", api=FakeApi())
    with pytest.raises(DataToolsError, match="only 'dataset'"):
        publish.push(hf_dir, "tester/bolts", kind="model", api=FakeApi())


def test_push_token_is_resolved_by_huggingface_hub(hf_dir, tmp_path, monkeypatch, online, capsys, caplog):
    import huggingface_hub

    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(DataToolsError, match="no Hugging Face token.*hf auth login"):
        publish.push(hf_dir, "tester/bolts")
    fake = FakeApi()
    cls = create_autospec(huggingface_hub.HfApi, spec_set=True)  # the constructor's signature is checked too
    cls.return_value = fake.mock
    monkeypatch.setattr(huggingface_hub, "HfApi", cls)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    publish.push(hf_dir, "tester/bolts")
    cls.assert_called_once_with(token=None)  # huggingface_hub reads HF_TOKEN itself
    assert fake.names() == ["create_repo", "upload_folder"]
    _assert_no_secret(capsys, caplog)


# ---------------------------------------------------------------------------------------------
# command line


def _parse(argv):
    parser = argparse.ArgumentParser(prog="data_tools")
    add_publish_subcommands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli(source, hf_dir, tmp_path, monkeypatch, capsys, online):
    out = tmp_path / "cli-hf"
    args = _parse(["export-hf", str(source), "-o", str(out), "--quiet"])
    assert args.func(args) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == f"wrote {out}" and cap.err == ""
    assert args.func(args) == 2  # exists, no --force
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "exists" in err and err.count("\n") == 1
    args = _parse(["export-hf", str(source), "-o", str(out), "--force", "-q"])
    assert args.func(args) == 0
    args = _parse(["export-lerobot", str(tmp_path / "missing.hdf5"), "-o", str(tmp_path / "lr"), "--repo-id", "a/b"])
    assert args.func(args) == 2 and "missing.hdf5" in capsys.readouterr().err
    assert not (tmp_path / "lr").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = _parse(["push", str(hf_dir), "--repo-id", "tester/bolts", "--private"])
    assert args.private and args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Hugging Face Hub is unreachable / offline mode is on")
