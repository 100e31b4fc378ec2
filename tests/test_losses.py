"""Equation tests with hand-computed numbers."""

import math

import numpy as np
import pytest
import torch

from data_tools.talk_tweak import command_vocabulary, label_episode, refinement_command
from dual_actor import losses
from dual_actor.nets.consistency import ConsistencyPolicy, EDMScalings


def test_task_weights_hand_computed():
    # sum = 3.3; eps_i = 3.3 / (3 Qbar_i + 0.3): 3.3/3.3, 3.3/3.6, 3.3/3.9
    eps = losses.task_weights(torch.tensor([1.0, 1.1, 1.2]))
    assert torch.allclose(eps, torch.tensor([1.0, 0.916667, 0.846154]), atol=1e-5)
    assert not eps.requires_grad


def test_task_weights_clipping_and_detached():
    q = torch.tensor([0.1, 2.0, 5.0], requires_grad=True)
    eps = losses.task_weights(q)
    # raw: 7.1/(0.3+0.3)=11.83 -> 1.2 ; 7.1/6.3=1.127 ; 7.1/15.3=0.464 -> 0.8
    assert torch.allclose(eps, torch.tensor([1.2, 7.1 / 6.3, 0.8]), atol=1e-5)
    assert eps.grad_fn is None
    # custom bounds and c
    eps2 = losses.task_weights(torch.tensor([1.0, 3.0]), c=0.0, eps_min=0.0, eps_max=10.0)
    assert torch.allclose(eps2, torch.tensor([4.0 / 2.0, 4.0 / 6.0]))


def test_actor_q_loss_eq15():
    q = [torch.tensor([1.0, 3.0]), torch.tensor([2.0]), torch.tensor([0.0, 0.0, 6.0])]
    eps = torch.tensor([1.0, 0.5, 2.0])
    # -(1/3)(1*2 + 0.5*2 + 2*2) = -7/3
    assert losses.actor_q_loss(q, eps).item() == pytest.approx(-7.0 / 3.0)
    assert losses.actor_q_loss(q).item() == pytest.approx(-2.0)  # Eq. 4/14: uniform


def test_actor_loss_eq6():
    assert losses.actor_loss(torch.tensor(2.0), torch.tensor(-4.0), 1.0, 0.1).item() == pytest.approx(1.6)
    assert losses.actor_loss(torch.tensor(2.0), torch.tensor(-4.0), 0.5, 0.5).item() == pytest.approx(-1.0)


def test_calql_clamp_and_regularizer():
    q_pi = torch.tensor([[[0.2, 1.5], [-1.0, 0.0]]])  # (E=1, B=2, n=2)
    g = torch.tensor([1.0, -0.5])
    assert torch.equal(losses.calql_clamp(q_pi, g), torch.tensor([[[1.0, 1.5], [-0.5, 0.0]]]))
    # regulariser by hand, B=1, n=1, T=1: candidates [rand 0, max(pi=-2, G=1)=1, max(next=0.5, 1)=1, data 2]
    q_data = torch.tensor([[2.0]])
    r = losses.calql_regularizer(q_data, torch.tensor([[[0.0]]]), torch.tensor([[[-2.0]]]),
                                 torch.tensor([[[0.5]]]), torch.tensor([1.0]), alpha=2.0)
    expect = 2.0 * (math.log(math.exp(0) + 2 * math.exp(1) + math.exp(2)) - 2.0)
    assert r.item() == pytest.approx(expect, rel=1e-6)


def test_td_target_and_bellman():
    next_q = torch.tensor([[1.0, 2.0], [0.5, 3.0]])  # (E=2, B=2): min -> [0.5, 2.0]
    y = losses.td_target(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), next_q, gamma=0.9)
    assert torch.allclose(y, torch.tensor([1.0 + 0.9 * 0.5, 0.0]))
    q = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    # ((1-1.45)^2 + 1 + (2-1.45)^2 + 0) / 4
    assert losses.bellman_loss(q, y).item() == pytest.approx((0.2025 + 1 + 0.3025 + 0) / 4)


def test_td_target_clipped_to_return_bounds():
    next_q = torch.tensor([[3.0, -2.0, 0.4]])  # an overestimated, an impossible negative, a fine value
    y = losses.td_target(torch.zeros(3), torch.zeros(3), next_q, gamma=0.5, bounds=(0.0, 1.0))
    assert torch.allclose(y, torch.tensor([1.0, 0.0, 0.2]))  # 0.5*3 -> 1, 0.5*-2 -> 0, 0.5*0.4
    y_terminal = losses.td_target(torch.ones(3), torch.ones(3), next_q, gamma=0.5, bounds=(0.0, 1.0))
    assert torch.allclose(y_terminal, torch.ones(3))


def test_mc_returns():
    g = losses.mc_returns(np.array([0, 0, 1], np.float32), 0.5)
    assert np.allclose(g, [0.25, 0.5, 1.0])


def test_consistency_scalings_boundary():
    sc = EDMScalings()
    s_min = torch.tensor(0.002)
    assert sc.c_skip(s_min).item() == pytest.approx(1.0)
    assert sc.c_out(s_min).item() == pytest.approx(0.0)
    # at sigma = K = 80: c_skip = 0.25 / (79.998^2 + 0.25); c_in = 1/sqrt(6400.25)
    k = torch.tensor(80.0)
    assert sc.c_skip(k).item() == pytest.approx(0.25 / (79.998**2 + 0.25), rel=1e-5)
    assert sc.c_in(k).item() == pytest.approx(1 / math.sqrt(6400.25), rel=1e-6)
    levels = sc.karras_sigmas()
    assert len(levels) == 40
    assert levels[0].item() == pytest.approx(80.0, rel=1e-5) and levels[-1].item() == pytest.approx(0.002, rel=1e-4)
    assert torch.all(levels[:-1] > levels[1:])


def test_denoise_is_identity_at_sigma_min():
    torch.manual_seed(0)
    pol = ConsistencyPolicy(h_dim=5, action_dim=3, hidden=(16,))
    x = torch.randn(4, 3)
    out = pol.denoise(x, torch.full((4,), 0.002), torch.randn(4, 5))
    assert torch.allclose(out, x, atol=1e-6)


@pytest.mark.parametrize("head", ["plain", "anchored"])
def test_refinement_mode_shifts_noise_mean(head):
    """Eq. 2 at temperature 1: w = mu + K z; with the same z a mean of K * delta equals noise z + delta."""
    torch.manual_seed(0)
    pol = ConsistencyPolicy(h_dim=5, action_dim=3, hidden=(16,), head=head, temperature=1.0)
    h, z, d = torch.randn(4, 5), torch.randn(4, 3), torch.randn(4, 3)
    a1 = pol(h, noise_mean=pol.K * d, noise=z, clip=False)
    a2 = pol(h, noise=z + d, clip=False)
    assert torch.allclose(a1, a2, atol=1e-5)
    assert torch.allclose(a1, pol.action_at(pol.K * (z + d), h, clip=False), atol=1e-5)


@pytest.mark.parametrize("head,temperature", [("plain", 1.0), ("anchored", 0.0), ("anchored", 1.0)])
def test_refine_reg_zero_when_mu_zero_and_bc_eq8(head, temperature):
    torch.manual_seed(0)
    pol = ConsistencyPolicy(h_dim=5, action_dim=3, hidden=(16,), head=head, temperature=temperature)
    h, z = torch.randn(4, 5), torch.randn(4, 3)
    a_ref = pol(h, noise_mean=torch.zeros(4, 3), noise=z)
    a_base = pol(h, noise=z)
    assert losses.refine_reg_loss(a_ref, a_base).item() == 0.0
    a = torch.tensor([[1.0, 0.0]]); t = torch.tensor([[0.0, 2.0]])
    assert losses.refine_bc_loss(a, t).item() == pytest.approx(5.0)  # 1 + 4
    assert losses.refine_q_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    assert losses.refine_loss(torch.tensor(1.0), torch.tensor(-2.0), torch.tensor(4.0)).item() == pytest.approx(
        1.0 - 0.2 + 0.4)


def test_bc_losses():
    pred = torch.tensor([[1.0, 3.0]]); tgt = torch.tensor([[0.0, 1.0]])
    # literal: ||.||^2 = 1 + 4
    assert losses.bc_literal_loss(pred, tgt).item() == pytest.approx(5.0)
    # consistency: (1/s^2 + 1/0.25) * mean(1, 4) at s = 0.5 -> 8 * 2.5
    assert losses.bc_consistency_loss(pred, tgt, torch.tensor([0.5])).item() == pytest.approx(20.0)


# ----------------------------------------------------------------- talk-and-tweak rule (Eq. 12-13)
def test_refinement_command_words_and_order():
    assert refinement_command(np.array([[0.002, -0.002, 0.0]])) == "move right and forward"
    assert refinement_command(np.array([[0.0005, 0.0, 0.0]] * 5)) == "move forward"  # sum 0.0025
    assert refinement_command(np.array([[0.0002, 0.0, 0.0]] * 5)) == "[null]"  # sum 0.001 not > sigma
    assert refinement_command(np.array([[-0.01, 0.01, -0.01]])) == "move left, backward and down"
    assert refinement_command(np.array([[0, 0, 0.01]]), words={"z": ("higher", "lower")}) == "move higher"


def test_label_episode_windows_cut_at_segment_end():
    # translation units of 0.01 m (Metaworld); intervention on steps 1..3 only
    a = np.zeros((6, 4))
    a[1, 0] = 0.05   # +0.5 mm
    a[2, 0] = 0.1    # +1 mm
    a[3, 1] = -0.2   # -2 mm y
    a[4, 0] = 5.0    # not intervened: must not leak into step 3's window
    intv = np.array([0, 1, 1, 1, 0, 0], bool)
    cmds = label_episode(a, intv, window=5, translation_scale_m=0.01)
    # t=1: x 1.5mm, y -2mm -> right, forward ; t=2: x 1mm (not > 1mm), y -2mm -> right ; t=3: right
    assert cmds == ["[null]", "move right and forward", "move right", "move right", "[null]", "[null]"]


def test_label_episode_correction_hand_derived():
    from data_tools.talk_tweak import tweaks

    # steps 1..3 intervened; the operator executes x = +0.3 while the policy proposed x = +0.5, y = -0.1
    a = np.zeros((5, 4))
    a[1:4, 0] = 0.3
    pol = np.zeros((5, 4))
    pol[1:4, 0], pol[1:4, 1] = 0.5, -0.1
    pol[0] = pol[4] = np.nan  # no proposal where nobody intervened: never read
    intv = np.array([0, 1, 1, 1, 0], bool)
    # "action" (Eq. 12 as printed): x 9, 6, 3 mm -> forward each time
    assert label_episode(a, intv, translation_scale_m=0.01) == ["[null]"] + ["move forward"] * 3 + ["[null]"]
    # "correction": per step x -2 mm, y +1 mm; t1: x -6, y +3 -> left, backward; t2: x -4, y +2;
    # t3: x -2, y +1 (not > 1 mm) -> backward
    assert label_episode(a, intv, translation_scale_m=0.01, policy_actions=pol, label="correction") == [
        "[null]", "move left and backward", "move left and backward", "move backward", "[null]"]
    assert label_episode(a, intv, policy_actions=pol, label="action") == label_episode(a, intv)
    pol[2, 1] = np.nan
    with pytest.raises(ValueError, match="step 2 has none"):
        label_episode(a, intv, policy_actions=pol, label="correction")
    with pytest.raises(ValueError, match="no policy actions"):
        tweaks(a, None, intv, "correction")
    with pytest.raises(ValueError, match="must be one of"):
        label_episode(a, intv, label="delta")


def test_command_vocabulary():
    v = command_vocabulary()
    assert len(v) == 27 and v[0] == "[null]" and len(set(v)) == 27
    assert "move right and forward" in v and "move left, backward and down" in v


def test_parse_command_inverts_the_rule():
    from data_tools.talk_tweak import parse_command

    assert parse_command("[null]") == []
    assert parse_command("move right and forward") == [(1, -1), (0, 1)]
    assert parse_command("move left, backward and down") == [(1, 1), (0, -1), (2, -1)]
    assert parse_command("move higher", words={"z": ("higher", "lower")}) == [(2, 1)]
    # every sentence the rule produces parses back to the signs of the displacement that produced it
    rng = np.random.default_rng(0)
    for _ in range(200):
        delta = rng.choice([-0.01, 0.0, 0.01], size=3)
        cmd = refinement_command(delta[None])
        assert sorted(parse_command(cmd)) == [(d, int(np.sign(delta[d]))) for d in range(3) if delta[d] != 0], cmd
    for bad in ("go left", "move sideways", "move left and left", "move left and right", "move left, up",
                "move left and forward and up"):
        with pytest.raises(ValueError, match="refinement command|not a refinement"):
            parse_command(bad)


def test_streaming_labeler_equals_label_episode():
    from data_tools.talk_tweak import StreamingLabeler

    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        actions = rng.normal(scale=0.3, size=(n, 4))
        intv = rng.random(n) < 0.5
        window = int(rng.integers(1, 7))
        label = ("action", "correction")[trial % 2]
        proposed = rng.normal(scale=0.3, size=(n, 4))
        expect = label_episode(actions, intv, window=window, translation_scale_m=0.01, policy_actions=proposed,
                               label=label)
        lab = StreamingLabeler(window=window, translation_scale_m=0.01, label=label)
        got = {}
        for a, i, p in zip(actions, intv, proposed):
            for s, c in lab.push(a, bool(i), p):
                assert s not in got
                got[s] = c
        for s, c in lab.flush():
            got[s] = c
        assert [got[s] for s in range(n)] == expect, trial
    lab = StreamingLabeler(label="correction")
    lab.push([0.1, 0, 0, 0], False)  # no proposal needed where nobody intervenes
    with pytest.raises(ValueError, match="step 1: label 'correction' needs"):
        lab.push([0.1, 0, 0, 0], True, None)
