"""The anchored primary head (mean head + ODE-distilled noise -> action map) and the authority probes."""

import json
import math

import numpy as np
import pytest
import torch

from data_tools.hdf5_format import Episode, write_dataset
from dual_actor import losses
from dual_actor.nets.consistency import ConsistencyPolicy, EDMScalings
from dual_actor.policy import DualActorPolicy
from dual_actor.probe import command_authority, latent_authority, main as probe_main, single_axis_commands, spread_ratio
from factories import TASKS, tiny_policy_kwargs

MODE = 0.4  # toy action dim 0: +-MODE with probability 1/2 each
PHI1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # P(z < 1)


def toy_batch(n, g):
    """h in R^4; action dim 0 bimodal +-0.4 (independent of h), dim 1 unimodal around 0.3 tanh(h0)."""
    h = torch.randn(n, 4, generator=g)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    a0 = MODE * sign + 0.02 * torch.randn(n, generator=g)
    a1 = 0.3 * torch.tanh(h[:, 0]) + 0.05 * torch.randn(n, generator=g)
    return h, torch.stack([a0, a1], 1)


def train_toy(head: str, steps: int = 500):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    pol = ConsistencyPolicy(4, 2, 0, hidden=(64, 64), head=head, temperature=0.0)
    opt = torch.optim.Adam(pol.parameters(), lr=1e-3)
    for _ in range(steps):
        h, a = toy_batch(256, g)
        if head == "anchored":  # the module's BC term for this head
            t = pol.anchored_terms(a, h)
            loss = (losses.bc_consistency_loss(t["pred"], t["target"], t["sigma"]) + losses.bc_literal_loss(t["mean"], a)
                    + losses.ode_distillation_loss(t["distill_pred"], t["distill_target"]))
        else:  # denoising regression only (ConRFT's / CPQL's trained loss)
            pred, sigma = pol.noised_prediction(a, h)
            loss = losses.bc_consistency_loss(pred, a, sigma)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return pol


def test_latent_shift_on_bimodal_toy_anchored_vs_denoising_only():
    """Hand-derived: the exact noise -> action map of a +-0.4 mixture sends w = K (mu/K + z) to 0.4 sign(mu/K + z),
    so mu = +-K e_0 moves E_z a_0 by G_0 = 0.4 (2 P(z < 1) - 1) = 0.273. The optimal denoiser at sigma = K has
    d f / d w = Var(a|h) / K^2, so a denoising-only head gives at most Var / K = 0.16 / 80 = 0.002."""
    ideal = MODE * (2 * PHI1 - 1)
    bound_denoise = MODE**2 / 80.0
    assert ideal == pytest.approx(0.2731, abs=1e-4)
    held, _ = toy_batch(64, torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(1)
    anchored = latent_authority(train_toy("anchored"), held, None, n_z=256, dims=(0, 1), generator=g)
    plain = latent_authority(train_toy("plain"), held, None, n_z=256, dims=(0, 1), generator=g)
    assert anchored["abs"][0] > 0.5 * ideal, anchored
    assert anchored["signed"][0] > 0.5 * ideal  # +K e_0 moves towards +0.4 (the ODE keeps the orientation)
    assert plain["abs"][0] < 10 * bound_denoise, plain  # network error only, no authority
    # the unimodal dim: its spread is 0.05, so the map's shift is about 0.05, the plain head's ~0
    assert 0.02 < anchored["abs"][1] < 0.1 and plain["abs"][1] < 10 * 0.05**2 / 80.0 + 0.01


def test_anchored_primary_mode_is_the_mean_head():
    torch.manual_seed(0)
    pol = ConsistencyPolicy(5, 3, 2, hidden=(16,), head="anchored", temperature=0.0)
    h, p = torch.randn(7, 5), torch.randn(7, 2)
    with torch.no_grad():
        for prm in pol.mean_net.parameters():
            prm.mul_(3.0)  # some actions beyond +-1 to see the clip
        m = pol.mean_action(h, p)
        assert torch.equal(pol(h, p), m.clamp(-1, 1))
        assert torch.allclose(pol.action_at(torch.zeros(7, 3), h, p, clip=False), m, atol=1e-6)
        w = 80.0 * torch.randn(7, 3)
        f = lambda x: pol.denoise(x, torch.full((7,), 80.0), h, p)  # noqa: E731
        assert torch.allclose(pol.action_at(w, h, p, clip=False), m + f(w) - f(torch.zeros(7, 3)), atol=1e-5)
        # refinement mode at temperature 0 acts with w = mu
        mu = 40.0 * torch.randn(7, 3)
        assert torch.allclose(pol(h, p, noise_mean=mu), pol.action_at(mu, h, p), atol=1e-6)
        pol.temperature = 0.5
        z = torch.randn(7, 3)
        assert torch.allclose(pol(h, p, noise_mean=mu, noise=z), pol.action_at(mu + 0.5 * 80.0 * z, h, p), atol=1e-6)
    with pytest.raises(ValueError, match="head"):
        ConsistencyPolicy(5, 3, head="ct")
    with pytest.raises(ValueError, match="plain head has no mean"):
        ConsistencyPolicy(5, 3, head="plain").mean_action(h)


def test_ode_action_is_euler_on_the_gaussian_optimal_denoiser():
    """For a ~ N(m, s^2) the optimal denoiser is D(x, sigma) = m + s^2 / (s^2 + sigma^2) (x - m). Euler's
    x' = D + (sigma'/sigma)(x - D) on y = x - m is y' = y (r + (1 - r) s^2 / (s^2 + sigma^2)), r = sigma'/sigma;
    the first step from w with centre m gives y_1 = (sigma_1 / K) y_K; the exact flow scales y by
    sqrt(s^2 + sigma^2), i.e. ends at m + s (w - m) / sqrt(s^2 + K^2)."""
    pol = ConsistencyPolicy(1, 1, 0, hidden=(4,), head="anchored", ode_steps=8)
    m, s = 0.3, 0.2
    pol.denoise = lambda x, sigma, h, p=None: m + s**2 / (s**2 + sigma[:, None] ** 2) * (x - m)
    levels = EDMScalings().karras_sigmas().double()
    idx = np.round(np.linspace(0, 39, 9)).astype(int)
    lv = levels[idx].tolist()
    gain = lv[1] / lv[0]
    for i in range(1, 8):
        r = lv[i + 1] / lv[i]
        gain *= r + (1 - r) * s**2 / (s**2 + lv[i] ** 2)
    w = torch.tensor([[-80.0], [0.0], [80.0], [160.0]])
    out = pol.ode_action(w, torch.zeros(4, 1), None, center=torch.full((4, 1), m))
    assert torch.allclose(out, m + gain * (w - m), atol=1e-5)
    exact = s / math.sqrt(s**2 + 80.0**2)
    assert 0.6 < gain / exact < 0.75  # 8 Euler steps shrink a Gaussian's spread by about a third (docs/algorithm.md)


class LinearPrimary:
    """a(w | s) = c + L w / K, no clipping reached: G_d = L[d, d], spread_d = ||L[d]||."""

    def __init__(self, L, K=80.0, temperature=0.0):
        self.L, self.K, self.action_dim, self.temperature, self.head = L, K, L.shape[0], temperature, "stub"

    def action_at(self, w, h, proprio=None, clip=True):
        return 0.1 + (w / self.K) @ self.L.T + 0.0 * h[:, :1]

    def latent(self, z, mean=None):  # the acting latent, as ConsistencyPolicy.latent
        w = self.temperature * self.K * z
        return w if mean is None else w + mean


def test_latent_authority_and_spread_of_a_known_linear_map():
    L = torch.tensor([[0.2, 0.05, 0.0], [0.0, -0.1, 0.0], [0.0, 0.0, 0.03]])
    prim = LinearPrimary(L)
    h = torch.randn(10, 2)
    lat = latent_authority(prim, h, None, n_z=16, generator=torch.Generator().manual_seed(0))
    assert lat["abs"] == pytest.approx([0.2, 0.1, 0.03], abs=1e-6)  # linear: exact whatever the z draws
    assert lat["signed"] == pytest.approx([0.2, -0.1, 0.03], abs=1e-6)
    spread = spread_ratio(prim, h, None, torch.tensor([0.5, 0.1, 0.03]), n_z=4000,
                          generator=torch.Generator().manual_seed(0))
    assert spread == pytest.approx([math.hypot(0.2, 0.05) / 0.5, 0.1 / 0.1, 0.03 / 0.03], rel=0.05)


class StubRefinement:
    """mu(s, c) = scale * K * direction(c) for every state; "[null]" -> 0."""

    def __init__(self, table, K=80.0):
        self.table, self.K = table, K

    def encode_obs(self, obs):
        return obs

    def from_features(self, feat, ids):
        return torch.stack([self.table[int(i)] for i in ids]) * self.K


class StubPolicy:
    def __init__(self, primary, table, commands):
        self.primary, self.refinement = primary, StubRefinement(table)
        self.commands, self.null_command_id = commands, commands.index("[null]")

    def command_ids(self, cmds, device=None):
        return torch.tensor([self.commands.index(c) for c in cmds])


def test_command_authority_signs_fractions_and_operator_ratio():
    cmds = [c for c, _, _ in single_axis_commands()] + ["[null]"]
    table = {}
    for i, (c, d, sign) in enumerate(single_axis_commands()):
        v = torch.zeros(3)
        v[d] = 0.5 * sign * (-1 if c == "move up" else 1)  # "move up" is steered the wrong way
        table[i] = v
    table[len(cmds) - 1] = torch.zeros(3)
    L = torch.diag(torch.tensor([0.2, 0.1, 0.04]))
    pol = StubPolicy(LinearPrimary(L, temperature=1.0), table, cmds)
    h = torch.randn(6, 2)
    labels = ["move left", "move left", "move up", "[null]", "[null]", "[null]"]
    corr = torch.full((6, 3), float("nan"))
    corr[0], corr[1] = torch.tensor([0.0, 0.2, 0.0]), torch.tensor([0.0, 0.3, 0.0])
    res = command_authority(pol, h, h, None, n_z=3, labels=labels, corrections=corr,
                            generator=torch.Generator().manual_seed(0))
    assert res["move left"]["mean"] == pytest.approx(0.5 * 0.1, abs=1e-6)  # s_c (L mu / K)_y, noise cancels
    assert res["move left"]["positive_fraction"] == 1.0
    assert res["move left"]["vs_operator"] == pytest.approx(0.05 / 0.25, abs=1e-6)
    assert res["move forward"]["mean"] == pytest.approx(0.1, abs=1e-6) and res["move forward"]["vs_operator"] is None
    assert res["move up"]["mean"] == pytest.approx(-0.02, abs=1e-6) and res["move up"]["positive_fraction"] == 0.0
    assert res["move up"]["vs_operator"] is None  # labelled once, but no correction recorded there (NaN)


def test_probe_cli_on_a_smoke_policy(tmp_path, capsys):
    torch.manual_seed(0)
    pol = DualActorPolicy(**tiny_policy_kwargs())
    pol.save_pretrained(tmp_path / "policy")
    rng = np.random.default_rng(0)
    eps = []
    for t in TASKS:
        n = 12
        state = rng.normal(size=(n, 6)).astype(np.float32)
        inter = np.arange(n) >= 6
        cmd = ["move left" if i else "[null]" for i in inter]
        acts = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        pacts = np.where(inter[:, None], acts - np.array([0, 0.1, 0, 0], np.float32), np.nan).astype(np.float32)
        eps.append(Episode(obs={"state": state, "proprio": state[:, :2].copy()}, actions=acts,
                           rewards=np.zeros(n, np.float32), dones=np.zeros(n, bool), task=t, kind="online",
                           policy_actions=pacts, intervention=inter, refinement_command=cmd))
    data = write_dataset(tmp_path / "tt.hdf5", eps, fps=10)
    out = tmp_path / "probe.json"
    assert probe_main([str(tmp_path / "policy"), "--data", str(data), "--json", str(out), "--noise-draws", "8"]) == 0
    res = json.loads(out.read_text())
    assert res["states"] == 36 and res["talk_tweak_states"] == 18 and res["head"] == "anchored"
    assert set(res["latent_authority"]) == {"x", "y", "z"} and all(v >= 0 for v in res["latent_authority"].values())
    left = res["command_authority"]["move left"]
    # an untrained refinement actor gives mu = 0 for every command: no command authority at all
    assert left["mean"] == 0.0 and left["positive_fraction"] == 0.0 and left["vs_operator"] == 0.0
    assert left["operator_correction"] == pytest.approx(0.1, abs=1e-6)
    assert "latent authority x/y/z" in capsys.readouterr().out
    # refuses to overwrite; bad data path; nothing half-written
    assert probe_main([str(tmp_path / "policy"), "--data", str(data), "--json", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert probe_main([str(tmp_path / "policy"), "--data", str(tmp_path / "none.hdf5"),
                       "--json", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()
    assert probe_main([str(tmp_path / "policy"), "--data", str(data), "--obs-key", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
