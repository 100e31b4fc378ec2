"""The paper's Table I baselines as switches of the one learner (conf/algo/*.yaml): HG-DAgger (no critic, BC on
people's actions), ConRFT flat (one shared critic, pooled sampling), DSRL (frozen policy and critics, a latent
policy steering the noise); the shared warm-up per seed; and each baseline end to end through the entry point."""

import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from dual_actor import constants as K
from dual_actor.data.buffers import TaskBuffers
from dual_actor.data.datamodule import BufferSampler
from dual_actor.module import DualActorModule
from dual_actor.policy import DualActorPolicy
from factories import TASKS, tiny_module_kwargs, training_batch
from test_fit import fit as run_fit
from test_module import changed, fit, snapshot


def online_batch(seed=0, per_task=8):
    """A task-sliced online batch: the first half of each slice from the demo buffer, the second half rollouts
    of which the first rollout row is an intervened step."""
    b = training_batch(per_task=per_task, seed=seed)
    for s in b[K.TASKS]:
        s[K.FROM_DEMOS] = torch.arange(per_task) < per_task // 2
        s[K.INTERVENTION] = torch.arange(per_task) == per_task // 2
    return b


def module(phase="online", **over):
    torch.manual_seed(0)
    return DualActorModule(**tiny_module_kwargs(phase=phase, **over))


# ------------------------------------------------------------------------------------------ HG-DAgger
@pytest.mark.parametrize("bc_rows, invariant", [("people", True), ("all", False)])
def test_people_rows_bc_ignores_the_policy_own_actions(bc_rows, invariant):
    """bc_rows=people: the update does not depend on the actions of rollout rows nobody corrected (changing
    them leaves the trained weights bit-identical); with bc_rows=all it does (the control)."""
    weights = []
    for garbage in (0.9, -0.9):
        m = module(critic="none", task_weighting=False, bc_rows=bc_rows, refine_enabled=False, max_updates=1)
        b = online_batch()
        for s in b[K.TASKS]:
            own = ~(s[K.FROM_DEMOS] | s[K.INTERVENTION])
            s[K.ACTION][own] = garbage
        torch.manual_seed(1)
        fit(m, b)
        weights.append(snapshot(m.policy.primary))
    same = all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert same == invariant


@pytest.mark.parametrize("changed_row, invariant", [(7, True), (5, False), (6, False)])
def test_successes_rows_bc_imitates_successful_rollouts_only(changed_row, invariant):
    """bc_rows=successes (the bench default): besides demo rows and interventions, BC imitates the rollout rows
    with a positive return-to-go. Rows 5 and 6 are uncorrected rollout steps of a successful episode
    (mc_return 0.9, 0.95), row 7 one of a failed episode (0): changing row 7's action leaves the trained weights
    bit-identical, changing row 5's or 6's does not."""
    weights = []
    for garbage in (0.9, -0.9):
        m = module(critic="none", task_weighting=False, bc_rows="successes", refine_enabled=False, max_updates=1)
        b = online_batch()
        for s in b[K.TASKS]:
            s[K.MC_RETURN][5:] = torch.tensor([0.9, 0.95, 0.0])
            s[K.ACTION][changed_row] = garbage
        torch.manual_seed(1)
        fit(m, b)
        weights.append(snapshot(m.policy.primary))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0]) == invariant
    assert m.last_logs["bc/imitated_rows"] == pytest.approx(7 / 8)  # 4 demo rows + 1 intervention + 2 successful


def test_no_critic_learner_is_supervised_only():
    m = module(critic="none", task_weighting=False, bc_rows="people", refine_enabled=False, max_updates=3)
    assert m.critics is None and m.target_critics is None
    assert not any(k.startswith(("critics.", "target_critics.")) for k in m.state_dict())
    fit(m, online_batch())
    assert len(m.trainer.optimizers) == 2 and m.num_updates == 3
    logs = m.last_logs
    assert logs["loss/actor_q"] == 0.0 and not any(k.startswith(("q/", "eps/", "loss/critic")) for k in logs)
    assert logs["bc/imitated_rows"] == pytest.approx(5 / 8)  # 4 demo rows + 1 intervention of 8 per task


@pytest.mark.parametrize("bc_rows", ["people", "successes"])
def test_bc_rows_need_the_sampler_mark(bc_rows):
    m = module(critic="none", task_weighting=False, bc_rows=bc_rows, refine_enabled=False, max_updates=1)
    b = training_batch()
    for s in b[K.TASKS]:
        del s[K.FROM_DEMOS]
    with pytest.raises(KeyError, match=f"bc_rows='{bc_rows}' needs the sampler's 'from_demos' mark"):
        fit(m, b)


# ------------------------------------------------------------------------------------------ ConRFT flat
def _buffers(sizes):
    bufs = TaskBuffers(TASKS)
    for i, (t, n) in enumerate(zip(TASKS, sizes)):
        rows = training_batch(per_task=n, seed=i, talk_tweak=False)[K.TASKS][0]
        rows[K.TASK] = torch.full((n,), i)
        bufs[t]["demos"].add(rows)
        bufs[t]["rollouts"].add({k: v[: n // 2] for k, v in rows.items()})
    return bufs


def test_pooled_sampler_draws_tasks_in_proportion_to_their_data():
    """Pooled: one slice, rows uniform over all tasks' transitions together, so task i's share is
    n_i / sum n (here 1/10, 3/10, 6/10), in the demo half and the rollout half alike."""
    bufs = _buffers([20, 60, 120])
    s = BufferSampler(bufs, 600, "online", pooled=True, min_rollout=1, seed=0)
    counts = torch.zeros(2, 3)
    for _ in range(20):
        (rows,) = s.sample()[K.TASKS]
        assert rows[K.H].shape[0] == 600 and rows[K.FROM_DEMOS][:300].all() and not rows[K.FROM_DEMOS][300:].any()
        for half in (0, 1):
            counts[half] += torch.bincount(rows[K.TASK][half * 300:(half + 1) * 300], minlength=3)
    share = counts / counts.sum(1, keepdim=True)
    expect = torch.tensor([0.1, 0.3, 0.6])
    assert torch.allclose(share, expect.expand(2, 3), atol=0.02), share  # 6000 draws: sd <= 0.0063


def test_per_task_sampler_is_unchanged_and_marks_demo_rows():
    bufs = _buffers([20, 60, 120])
    s = BufferSampler(bufs, 12, "online", min_rollout=1, seed=0)
    slices = s.sample()[K.TASKS]
    assert [int(x[K.TASK].unique()) for x in slices] == [0, 1, 2]
    for x in slices:
        assert x[K.FROM_DEMOS].tolist() == [True, True, False, False]


@pytest.mark.parametrize("pooled", [True, False])
def test_shared_critic_is_one_critic_with_the_task_as_input(pooled):
    m = module(critic="shared", task_weighting=False, refine_enabled=False, max_updates=2)
    assert m.critics.num_tasks == 1 and m.critic_slugs == ["all"]
    b = online_batch()
    if pooled:
        b = {K.TASKS: [{k: torch.cat([s[k] for s in b[K.TASKS]]) for k in b[K.TASKS][0]}], K.TALK_TWEAK: None}
    before = snapshot(m.critics)
    fit(m, b)
    assert changed(before, m.critics)
    # the task one-hot reaches the critic: the same (s, a) scored as another task gives another Q
    x = b[K.TASKS][0]
    q = [m.critics(x[K.OBS][None], m.critic_proprio(x[K.PROPRIO], torch.full_like(x[K.TASK], i))[None],
                   x[K.ACTION][None]) for i in range(3)]
    assert not torch.allclose(q[0], q[1]) and not torch.allclose(q[1], q[2])


def test_task_weights_and_pooling_need_per_task_critics():
    with pytest.raises(ValueError, match="task_weighting"):
        module(critic="shared")
    m = module(max_updates=1)
    with pytest.raises(ValueError, match="1 task"):
        fit(m, {K.TASKS: [online_batch()[K.TASKS][0]], K.TALK_TWEAK: None})


# ------------------------------------------------------------------------------------------ DSRL
def dsrl(**over):
    m = module(actor_phases=["warmup"], critic_phases=["warmup"], refine_objective="dsrl",
               policy={**tiny_module_kwargs()["policy"], "null_latent": "learned"}, **over)
    return m


def test_dsrl_online_trains_only_the_latent_policy_and_raises_q():
    m = dsrl(max_updates=60, refine_lr=1e-3)
    b = online_batch()
    s = m.stack_tasks(b[K.TASKS])

    def q_of_latent_policy():
        with torch.no_grad():
            obs, t, n = s[K.OBS], 3, 8
            mu = m.policy.refinement(obs.reshape(t * n, -1), torch.full((t * n,), m.policy.null_command_id))
            a = m.deployed_primary.action_at(mu, s[K.H].reshape(t * n, -1), s[K.PROPRIO].reshape(t * n, -1))
            return m.reduce_members(m.critics(obs, s[K.PROPRIO], a.view(t, n, -1))).mean()

    q0 = q_of_latent_policy()
    frozen = {**snapshot(m.policy.primary), **{f"c.{k}": v for k, v in snapshot(m.critics).items()}}
    before_refine = snapshot(m.policy.refinement)
    fit(m, b)
    after = {**snapshot(m.policy.primary), **{f"c.{k}": v for k, v in snapshot(m.critics).items()}}
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)  # the policy and the critics stay frozen
    assert changed(before_refine, m.policy.refinement)
    assert q_of_latent_policy() > q0 + 1e-3  # the latent policy climbs the frozen critics' Q
    assert "loss/actor" not in m.last_logs and "loss/critic_place_the_bolt" not in m.last_logs


def test_dsrl_policy_acts_at_the_null_command_latent():
    """null_latent=learned: a row without a command acts at w = mu(s, "[null]"); zero-initialised, that is the
    primary mode until the latent policy moves it."""
    m = dsrl(max_updates=20, refine_lr=1e-2)
    p = m.policy.eval()
    x = online_batch()[K.TASKS][0]
    h, obs, pr = x[K.H], x[K.OBS], x[K.PROPRIO]
    assert torch.equal(p.act(h, obs, pr), p.primary(h, pr))  # mu = 0 before training
    fit(m, online_batch())
    p.eval()
    mu = p.refinement(obs, torch.full((h.shape[0],), p.null_command_id))
    assert mu.abs().max() > 0
    assert torch.allclose(p.act(h, obs, pr), p.primary(h, pr, noise_mean=mu))
    assert not torch.allclose(p.act(h, obs, pr), p.primary(h, pr))


# ------------------------------------------------------------------------------------ published DSRL (DSRL-NA)
def dsrl_na(**over):
    return module(actor_phases=["warmup"], refine_objective="dsrl_na",
                  policy={**tiny_module_kwargs()["policy"], "null_latent": "gaussian"}, **over)


def test_squashed_gaussian_log_density_is_torchs():
    """The latent policy's log-density in [-1, 1] units equals torch.distributions' tanh-transformed Normal (an
    independent implementation), including far in the tails (|u| up to 12, where the naive log(1 - tanh^2) fails)."""
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    from dual_actor.nets.refinement import squashed_log_prob

    torch.manual_seed(0)
    m, log_std = torch.randn(64, 4, dtype=torch.float64), torch.randn(64, 4, dtype=torch.float64) * 0.5
    u = m + log_std.exp() * torch.randn(64, 4, dtype=torch.float64)
    ref = TransformedDistribution(Normal(m, log_std.exp()), [TanhTransform()]).log_prob(torch.tanh(u)).sum(-1)
    assert torch.allclose(squashed_log_prob(u, m, log_std), ref, atol=1e-9)
    # u = +-12 (tanh(u) rounds to +-1, log(1 - tanh^2) to log 0), standard normal: per dim, by hand,
    # -(144 / 2) - log(2 pi) / 2 - 2 (log 2 - 12 - log(1 + e^-24)) = -72.918939 + 22.613706
    u = torch.tensor([[12.0, -12.0]], dtype=torch.float64)
    zero = torch.zeros(1, 2, dtype=torch.float64)
    assert squashed_log_prob(u, zero, zero).item() == pytest.approx(2 * (-72.918939 + 22.613706), abs=1e-5)


def test_dsrl_na_policy_samples_its_latent_without_a_command():
    """null_latent=gaussian: a row without a command acts at w = bound K tanh(m + std eps) (the same eps drawn by
    hand gives the same action); a row with a command acts at the mean path mu(s, command) (no sampling)."""
    m = dsrl_na()
    p = m.policy.eval()
    x = online_batch()[K.TASKS][0]
    h, obs, pr = x[K.H], x[K.OBS], x[K.PROPRIO]
    torch.manual_seed(5)
    got = p.act(h, obs, pr)
    torch.manual_seed(5)
    ref = p.refinement
    joint = torch.cat([ref.encode_obs(obs), ref.cmd_proj(ref.command_encoder(
        torch.full((h.shape[0],), p.null_command_id)))], -1)
    u = ref.head(joint) + ref.log_std_head(joint).clamp(-20, 2).exp() * torch.randn(h.shape[0], 4)
    w = ref.mean_bound * p.primary.K * torch.tanh(u)
    assert torch.allclose(got, p.primary.action_at(w, h, pr), atol=1e-6)
    assert not torch.allclose(got, p.primary(h, pr))  # not the primary mode: the latent policy starts wide
    cmd = [p.commands[1]] * h.shape[0]
    mu = ref(obs, p.command_ids(cmd))
    assert torch.equal(p.act(h, obs, pr, commands=cmd), p.act(h, obs, pr, commands=cmd))  # deterministic
    assert torch.allclose(p.act(h, obs, pr, commands=cmd), p.primary(h, pr, noise_mean=mu))


def test_dsrl_na_trains_the_latent_critics_policy_and_temperature_on_online_critics():
    """One online update each: the task critics learn (TD), the primary stays frozen, the latent critics move
    toward Q^A(s, pi(w | h)), the latent policy and the temperature move (entropy ~2.8 nats > the target 0:
    alpha falls), and the critics' target uses the latent policy's next actions."""
    m = dsrl_na(max_updates=40, refine_lr=1e-3)
    b = online_batch()
    s = m.stack_tasks(b[K.TASKS])

    def distill_error():
        torch.manual_seed(9)
        with torch.no_grad():
            from dual_actor.updates.dsrl import latent_critic_loss
            return latent_critic_loss(m, dict(s), False)[0].sum()

    e0, alpha0 = distill_error(), float(m.log_alpha.exp())
    primary = snapshot(m.policy.primary)
    before = {"critics": snapshot(m.critics), "latent": snapshot(m.latent_critics),
              "refine": snapshot(m.policy.refinement)}
    fit(m, b)
    assert all(torch.equal(v, snapshot(m.policy.primary)[k]) for k, v in primary.items())  # frozen online
    assert changed(before["critics"], m.critics) and changed(before["latent"], m.latent_critics)
    assert changed(before["refine"], m.policy.refinement)
    assert distill_error() < e0  # Q^W approaches Q^A(s, pi_theta(w | h))
    assert float(m.log_alpha.exp()) < alpha0 and m.last_logs["dsrl/entropy"] > 0
    for key in ("loss/latent_critic_place_the_bolt", "dsrl/alpha", "loss/critic_place_the_bolt"):
        assert key in m.last_logs, key
    assert "loss/actor" not in m.last_logs


def test_dsrl_na_critic_target_bootstraps_at_the_latent_policys_next_action(monkeypatch):
    """The TD target's next action is pi_theta(w' | h') with w' the latent policy's sample at s' (patched to a known
    latent), not the primary mode's."""
    from dual_actor import losses
    from dual_actor.updates import critic as critic_mod

    m = dsrl_na()
    s = m.stack_tasks(online_batch()[K.TASKS])
    t, n = s[K.H].shape[:2]
    w = torch.full((t * n, 4), 30.0)
    monkeypatch.setattr(type(m.policy.refinement), "sample_from_features",
                        lambda self, feat, ids, eps=None: (w, torch.zeros(feat.shape[0])))
    seen = {}
    real = losses.td_target
    monkeypatch.setattr(critic_mod.losses, "td_target", lambda r, d, q, *a: seen.setdefault("q", q) is not None
                        and real(r, d, q, *a))
    critic_mod.critic_loss(m, s, False)
    with torch.no_grad():
        a = m.deployed_primary.action_at(w, s[K.NEXT_H].reshape(t * n, -1), s[K.NEXT_PROPRIO].reshape(t * n, -1))
        want = m.target_critics(m.observation(s, next_obs=True), s[K.NEXT_PROPRIO], a.view(t, n, -1))
    assert torch.allclose(seen["q"], want)
    primary_mode = m.deployed_primary(s[K.NEXT_H].reshape(t * n, -1), s[K.NEXT_PROPRIO].reshape(t * n, -1))
    assert not torch.allclose(a, primary_mode)


def test_dsrl_na_starts_every_shared_network_as_dual_actor_does():
    """Its own parts (log-std head, latent critics) are drawn from a forked RNG: every network it shares with
    algo=dual_actor starts bit-identical, so a warm-up it trains itself is dual's (not only a shared one)."""
    ours, na = module().state_dict(), dsrl_na().state_dict()
    common = [k for k in ours if k in na]
    assert len(common) == len(ours) and all(torch.equal(ours[k], na[k]) for k in common)
    assert any(k.startswith("latent_critics.") for k in na) and any("log_std_head" in k for k in na)


def test_dsrl_na_needs_the_gaussian_latent():
    with pytest.raises(ValueError, match="null_latent=gaussian"):
        module(refine_objective="dsrl_na")


# ------------------------------------------------------------------------------------------ shared warm-up
def _cfg(*overrides):
    from hydra import compose, initialize_config_dir

    from test_fit import ROOT

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_warmup_fingerprint_says_which_arms_share_a_warmup():
    from dual_actor.training.warmup_cache import shared_warmup_dir

    d = lambda *o: shared_warmup_dir(_cfg(*o))  # noqa: E731
    ours = d()
    assert d("algo.refine_enabled=false") == ours == d("algo=dsrl") == d("algo=dsrl_na") == d("online.env_steps=100",
                                                                                        "eval.trials=3")
    assert d("algo=hg_dagger") != ours and d("algo=conrft_flat") != ours and d("algo=hg_dagger") != d("algo=conrft_flat")
    assert d("seed=1") != ours and d("algo.warmup_updates=10") != ours and d("algo.lambdas.warmup=[1.0,0.0]") != ours
    assert d("algo.refine_enabled=false", "algo.refine_phases=[warmup,online]") != d("algo.refine_phases=[warmup,online]")
    assert ours.parent.name == "warmups" and ours.name.startswith("seed0-")


# ------------------------------------------------------------------------------------------ end to end
SMOKE = ["experiment=smoke", "trainer.progress_bar=false", "eval.curve_every_env_steps=1000", "warmup.share=true"]


@pytest.mark.slow
def test_baselines_train_and_evaluate_through_fit_sharing_warmups(tmp_path):
    """Every arm of Table I through ``python -m dual_actor.fit algo=...`` (smoke size): eval.json, the saved policy
    acting as the arm acts; dual, single and DSRL train one warm-up and reuse it (bit-identical warm-up
    policies), HG-DAgger and ConRFT flat train their own; arms without a listening refinement actor get an
    operator that takes over instead of speaking."""
    data = f"data.path={tmp_path}/data/demos.hdf5"
    arms = {"dual": ["algo=dual_actor"], "single": ["algo.refine_enabled=false"], "dsrl": ["algo=dsrl"],
            "dsrl_na": ["algo=dsrl_na"], "hg_dagger": ["algo=hg_dagger"], "conrft_flat": ["algo=conrft_flat"]}
    out = {}
    for name, over in arms.items():
        r = run_fit(*SMOKE, data, f"run_root={tmp_path}", f"run_name={name}", *over)
        assert r.returncode == 0, r.stderr[-3000:]
        out[name] = r.stdout
        run = tmp_path / name
        ev = json.loads((run / "eval.json").read_text())
        assert list(ev["per_task"]) == TASKS and ev["online_steps"] >= 400
        curve = json.loads((run / "learning_curve.json").read_text())["points"]
        assert curve[0]["online_steps"] == 0  # the warm-up point, also where the warm-up was shared
    warmups = sorted(p.name for p in (tmp_path / "warmups").iterdir())
    assert len(warmups) == 3 and all((tmp_path / "warmups" / w / "done.json").exists() for w in warmups)
    for name in ("single", "dsrl", "dsrl_na"):
        assert "[warm-up] shared:" in out[name] and "[warm-up] 30 updates, from" in out[name]
        a, b = ((tmp_path / n / "policy_warmup" / "model.safetensors").read_bytes() for n in ("dual", name))
        assert a == b
        # each arm evaluates the warm-up as it acts (dsrl_na samples its latent); single and dsrl act as dual does
        if name != "dsrl_na":
            assert (tmp_path / name / "eval_warmup.json").read_bytes() == (tmp_path / "dual" / "eval_warmup.json").read_bytes()
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["updates"] > 30 and summary["online_env_steps"] >= 400
    for name in ("dual", "hg_dagger", "conrft_flat"):
        assert "[warm-up] 30 updates\n" in out[name] and "[warm-up] shared as" in out[name]
    for name in ("single", "dsrl", "dsrl_na", "hg_dagger", "conrft_flat"):  # only ours listens to spoken commands
        assert "takes over instead of speaking" in out[name]
        assert OmegaConf.load(tmp_path / name / "config.yaml").operator.talk_then_tweak is False
    assert OmegaConf.load(tmp_path / "dual" / "config.yaml").operator.talk_then_tweak is True
    # what each arm saved is what it is
    sd = torch.load(tmp_path / "hg_dagger" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert not any("critics" in k for k in sd)
    sd = torch.load(tmp_path / "conrft_flat" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    w = sd["critics.proprio_mlp.linears.0.weight"]  # one critic of 2 members, proprio (4) + 3 task one-hot inputs
    assert w.shape[:2] == (2, 4 + 3)
    assert sd["critics.proprio_mlp.linears.0.weight"].shape != torch.load(
        tmp_path / "dual" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"][
        "critics.proprio_mlp.linears.0.weight"].shape  # ours: 3 critics x 2 members, proprio only
    assert DualActorPolicy.from_pretrained(tmp_path / "dsrl" / "policy").null_latent == "learned"
    assert DualActorPolicy.from_pretrained(tmp_path / "dsrl_na" / "policy").null_latent == "gaussian"
    sd = torch.load(tmp_path / "dsrl_na" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert "log_alpha" in sd and any(k.startswith("latent_critics.") for k in sd)  # published DSRL's own parts
    assert DualActorPolicy.from_pretrained(tmp_path / "dual" / "policy").null_latent == "zero"


def test_shared_warmup_claim_one_computes_the_others_wait_a_killed_claim_is_taken_over(tmp_path, capsys):
    """Runs started together compute the shared warm-up once: the first claims it, a second waits until its
    done.json is there (then loads it), a claim left by a killed process is taken over."""
    import subprocess
    import sys

    from dual_actor.training import warmup_cache as wc

    dest = tmp_path / "warmups" / "seed0-abc"
    claim = dest.parent / ".seed0-abc.claim"
    assert wc.claim_shared_warmup(dest) is True and claim.read_text() == str(os.getpid())
    assert wc.claim_shared_warmup(dest) is True  # already ours
    wc.release_shared_warmup(dest)
    assert not claim.exists()

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim.write_text(str(other.pid))  # another process computes it
        waits = []

        def sleep(s):  # the other process finishes while we wait
            waits.append(s)
            dest.mkdir(parents=True)
            (dest / wc.SHARED_DONE).write_text("{}")

        assert wc.claim_shared_warmup(dest, poll_s=0.5, sleep=sleep) is False and waits == [0.5]
        assert f"waiting for process {other.pid}" in capsys.readouterr().out
        wc.release_shared_warmup(dest)
        assert claim.read_text() == str(other.pid)  # not ours: left alone
    finally:
        other.kill()
        other.wait()

    dest2 = tmp_path / "warmups" / "seed1-abc"
    claim2 = dest2.parent / ".seed1-abc.claim"
    claim2.write_text(str(other.pid))  # killed above: its claim is stale
    assert wc.claim_shared_warmup(dest2, sleep=lambda s: pytest.fail("waited for a dead process")) is True
    assert claim2.read_text() == str(os.getpid()) and not list(dest2.parent.glob(".seed1-abc.claim.*"))
    wc.release_shared_warmup(dest2)
