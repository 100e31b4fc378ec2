"""The deployable policy: save/load round trip, acting modes, clear errors."""

import json

import pytest
import torch

from dual_actor.policy import DualActorPolicy
from factories import TASKS, tiny_policy_kwargs


def test_roundtrip_same_actions_and_no_training_state(tmp_path):
    torch.manual_seed(0)
    pol = DualActorPolicy(**tiny_policy_kwargs())
    with torch.no_grad():
        for p in pol.refinement.head[-1].parameters():
            p.normal_()  # a non-zero refinement actor
    pol.save_pretrained(tmp_path / "p")
    assert sorted(x.name for x in (tmp_path / "p").iterdir()) == ["config.json", "model.safetensors"]
    back = DualActorPolicy.from_pretrained(tmp_path / "p")
    for k, v in pol.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    s = torch.randn(5, 6)
    h = pol.embed(s, [TASKS[1]] * 5)
    assert h.shape == (5, 9) and torch.equal(h[:, 6:], torch.tensor([[0.0, 1.0, 0.0]] * 5))
    z = torch.randn(5, 4)
    assert torch.equal(pol.primary(h, s[:, :2], noise=z), back.primary(h, s[:, :2], noise=z))


def test_act_modes():
    """Rows with a command act in refinement mode (w = mu + temperature K z), the others in primary mode
    (mu = 0): at temperature 0 both are deterministic and primary mode is the mean head M(h)."""
    torch.manual_seed(0)
    pol = DualActorPolicy(**tiny_policy_kwargs())
    assert pol.primary.head == "anchored" and pol.primary.temperature == 0.0
    with torch.no_grad():
        for p in pol.refinement.head[-1].parameters():
            p.normal_()
    s = torch.randn(3, 6)
    h, pr = pol.embed(s, TASKS), s[:, :2]
    a = pol.act(h, s, pr, commands=["move left", None, "[null]"])
    assert a.shape == (3, 4) and a.abs().max() <= 1.0
    assert torch.equal(a, pol.act(h, s, pr, commands=["move left", None, "[null]"]))  # deterministic
    mu = pol.refinement(s[:1], pol.command_ids(["move left"]))
    assert torch.allclose(a[0], pol.primary.action_at(mu, h[:1], pr[:1])[0], atol=1e-6)
    assert torch.allclose(a[1:], pol.primary.mean_action(h[1:], pr[1:]).clamp(-1, 1), atol=1e-6)
    assert not torch.allclose(a[0], pol.primary.mean_action(h[:1], pr[:1]).clamp(-1, 1))
    # temperature 1: Eq. 1 / 2 as printed, w = mu + K z (rows differ from draw to draw)
    hot = DualActorPolicy(**tiny_policy_kwargs(), temperature=1.0)
    hot.load_state_dict(pol.state_dict())
    a1 = hot.act(h, s, pr, commands=["move left", None, "[null]"])
    assert not torch.equal(a1, hot.act(h, s, pr, commands=["move left", None, "[null]"]))
    with pytest.raises(KeyError, match="not in the policy's command vocabulary"):
        pol.act(h, s, pr, commands=["jump", None, None])


def test_version_1_policy_loads_as_the_plain_head(tmp_path):
    """A folder saved before the anchored head (format version 1, ``refine_act``) loads as the plain head
    sampling w ~ N(mu, K^2 I), with its weights."""
    torch.manual_seed(0)
    pol = DualActorPolicy(**tiny_policy_kwargs(), primary_head="plain", temperature=1.0)
    pol.save_pretrained(tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    for key in ("primary_head", "temperature", "ode_steps"):
        del cfg[key]
    cfg.update(version=1, refine_act="sample")
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    back = DualActorPolicy.from_pretrained(tmp_path / "p")
    assert back.primary.head == "plain" and back.primary.temperature == 1.0 and back.primary.mean_net is None
    for k, v in pol.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        DualActorPolicy.from_pretrained(tmp_path)
    pol = DualActorPolicy(**tiny_policy_kwargs())
    pol.save_pretrained(tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    cfg["actor_hidden"] = [8]
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(Exception, match="size mismatch|does not match"):
        DualActorPolicy.from_pretrained(tmp_path / "p")


def test_policy_saved_before_the_encoder_keys_still_loads(tmp_path):
    """config.json without text_encoder / image_encoder / cameras / image_size (older saves): the defaults
    (learned command embedding of width command_dim, state encoder, no cameras) rebuild the same policy."""
    torch.manual_seed(0)
    pol = DualActorPolicy(**tiny_policy_kwargs())
    pol.save_pretrained(tmp_path / "p")
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["text_encoder"] == {"kind": "learned", "out_dim": 8} and cfg["image_encoder"] == {"kind": "state"}
    assert cfg["cameras"] == [] and "backbone_fingerprint" not in cfg  # the state backbone has no weights
    for key in ("text_encoder", "image_encoder", "cameras", "image_size"):
        del cfg[key]
    cfg["command_dim"] = 8  # those saves held the learned command embedding's width here
    (tmp_path / "p" / "config.json").write_text(json.dumps(cfg))
    back = DualActorPolicy.from_pretrained(tmp_path / "p")
    assert not back.training and not back.uses_images
    for k, v in pol.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
