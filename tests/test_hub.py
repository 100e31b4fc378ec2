"""Policies to and from the Hub: push against an autospecced HfApi, load from a cache laid out as
huggingface_hub lays it (offline), the model card, the CLI. No network."""

import json
import logging
import shutil
from pathlib import Path
from unittest.mock import create_autospec

import pytest
import torch
import yaml

from dual_actor import hub
from dual_actor.policy import DualActorPolicy
from dual_actor.push import main as push_main
from factories import tiny_policy_kwargs

SECRET = "hf_" + "S3cretTokenValue12345"
EVAL = {"per_task": {"place the bolt": {"success_rate": 0.96, "mean_episode_length": 58.1, "trials": 25},
                     "pick up the bolt": {"success_rate": 0.8, "mean_episode_length": 144.6, "trials": 25}},
        "average_success_rate": 0.88, "online_steps": 15000, "intervention_rate": 0.31}


def fake_api(uploaded: dict, fail=None):
    from huggingface_hub import HfApi

    api = create_autospec(HfApi, instance=True, spec_set=True)
    if fail is not None:
        api.create_repo.side_effect = fail
        return api
    api.create_repo.side_effect = lambda repo_id, **kw: f"https://huggingface.co/{repo_id}"

    def upload(**kw):  # the staged folder is temporary: read it while it exists
        folder = Path(kw["folder_path"])
        uploaded.update({p.name: p.read_bytes() for p in folder.iterdir()})

    api.upload_folder.side_effect = upload
    return api


@pytest.fixture
def online(monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants  # noqa: F401  (a submodule: not loaded by the package import)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def policy_dir(tmp_path):
    torch.manual_seed(0)
    pol = DualActorPolicy(**tiny_policy_kwargs())
    run = tmp_path / "run"
    pol.save_pretrained(run / "policy")
    (run / "eval.json").write_text(json.dumps(EVAL))
    (run / "config.yaml").write_text("algo:\n  primary_head: anchored\nseed: 0\n")
    return run / "policy"


def test_push_uploads_the_policy_with_its_card_and_never_shows_the_token(policy_dir, online, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    files: dict = {}
    api = fake_api(files)
    before = sorted(p.name for p in policy_dir.iterdir())
    url = hub.push_policy(policy_dir, "tester/bolts-policy", private=True, token=SECRET, eval_result=EVAL,
                          train_config="seed: 0\n", datasets=["tester/bolts"], api=api)
    assert url == "https://huggingface.co/tester/bolts-policy"
    api.create_repo.assert_called_once_with("tester/bolts-policy", token=SECRET, private=True, repo_type="model",
                                            exist_ok=True)
    kw = api.upload_folder.call_args.kwargs
    assert (kw["repo_id"], kw["repo_type"], kw["token"]) == ("tester/bolts-policy", "model", SECRET)
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    assert files["model.safetensors"] == (policy_dir / "model.safetensors").read_bytes()
    assert sorted(p.name for p in policy_dir.iterdir()) == before  # the folder itself is untouched
    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "dual-actor"
    assert "dual-actor" in meta["tags"] and meta["datasets"] == ["tester/bolts"] and "base_model" not in meta
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.88
    assert "| place the bolt | 0.96 | 58.1 | 25 |" in card and "| **average** | **0.88** | | |" in card
    assert "```yaml\nseed: 0\n```" in card and 'DualActorPolicy.from_pretrained("tester/bolts-policy")' in card
    out = capsys.readouterr()
    for text in (out.out, out.err, "\n".join(r.getMessage() for r in caplog.records)):
        assert SECRET not in text


def test_card_names_the_smolvla_base_model():
    cfg = {"tasks": ["a"], "backbone": {"name": "smolvla", "checkpoint": "lerobot/smolvla_base"}, "commands": ["[null]"]}
    meta = yaml.safe_load(hub.model_card(cfg, "me/p").split("---\n")[1])
    assert meta["base_model"] == "lerobot/smolvla_base" and "datasets" not in meta and "model-index" not in meta


def test_push_errors_are_clear_and_redacted(policy_dir, tmp_path, online, monkeypatch):
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(hub.HubError, match="repo id"):
        hub.push_policy(policy_dir, "no-owner", api=fake_api({}))
    with pytest.raises(hub.HubError, match="not a policy folder"):
        hub.push_policy(tmp_path, "a/b", api=fake_api({}))
    with pytest.raises(hub.HubError, match="refused") as e:
        hub.push_policy(policy_dir, "a/b", token=SECRET, api=fake_api({}, fail=HfHubHTTPError(f"403 {SECRET}")))
    assert SECRET not in str(e.value)
    with pytest.raises(hub.HubError, match="unreachable") as e:
        hub.push_policy(policy_dir, "a/b", token=SECRET, api=fake_api({}, fail=httpx.ConnectError(f"refused {SECRET}")))
    assert SECRET not in str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.HubError, match="offline"):
        hub.push_policy(policy_dir, "a/b", api=fake_api({}))


def _cache_layout(cache: Path, repo_id: str, refs: dict[str, Path]) -> None:
    """``models--<owner>--<name>/snapshots/<commit>/<files>`` and ``refs/<revision>`` holding the commit, as
    huggingface_hub lays out its cache (blobs omitted: snapshot files may be plain files)."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    for i, (ref, folder) in enumerate(refs.items()):
        commit = f"{i + 1:040x}"
        snap = root / "snapshots" / commit
        snap.mkdir(parents=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy2(folder / f, snap / f)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)


def test_from_pretrained_by_repo_id_offline_from_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants  # noqa: F401  (a submodule: not loaded by the package import)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)
    a, b = DualActorPolicy(**tiny_policy_kwargs()), DualActorPolicy(**tiny_policy_kwargs())
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    cache = tmp_path / "hub"
    _cache_layout(cache, "tester/bolts-policy", {"main": tmp_path / "a", "v1": tmp_path / "b"})
    got = DualActorPolicy.from_pretrained("tester/bolts-policy", cache_dir=cache)
    assert all(torch.equal(v, got.state_dict()[k]) for k, v in a.state_dict().items())
    got_v1 = DualActorPolicy.from_pretrained("tester/bolts-policy", revision="v1", cache_dir=cache)
    assert all(torch.equal(v, got_v1.state_dict()[k]) for k, v in b.state_dict().items())
    with pytest.raises(FileNotFoundError, match="offline: not in the local Hub cache"):
        DualActorPolicy.from_pretrained("tester/other", cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="no such policy folder"):
        DualActorPolicy.from_pretrained(str(tmp_path / "missing"), cache_dir=cache)


def test_push_cli(policy_dir, online, monkeypatch, capsys):
    import huggingface_hub
    import huggingface_hub.constants  # noqa: F401  (a submodule: not loaded by the package import)

    files: dict = {}
    cls = create_autospec(huggingface_hub.HfApi, spec_set=True)
    cls.return_value = fake_api(files)
    monkeypatch.setattr(huggingface_hub, "HfApi", cls)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    assert push_main([str(policy_dir), "--repo-id", "tester/p", "--private", "--dataset", "tester/bolts"]) == 0
    cls.assert_called_once_with(token=None)  # huggingface_hub reads HF_TOKEN itself
    out = capsys.readouterr()
    assert "pushed" in out.out and "https://huggingface.co/tester/p" in out.out and SECRET not in out.out + out.err
    card = files["README.md"].decode()
    assert "| pick up the bolt | 0.80 |" in card and "primary_head: anchored" in card  # eval.json, config.yaml found
    assert push_main([str(policy_dir), "--repo-id", "bad"]) == 2
    assert capsys.readouterr().err.startswith("error: repo id")
    assert push_main([str(policy_dir), "--repo-id", "a/b", "--eval", str(policy_dir / "nope.json")]) == 2
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert push_main([str(policy_dir), "--repo-id", "a/b"]) == 2
    assert "offline" in capsys.readouterr().err
