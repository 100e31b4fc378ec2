"""Module-level wiring of the equations, with values: each test fails on the wiring bug it names."""

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from dual_actor import constants as K
from dual_actor import losses
from dual_actor.module import DualActorModule
from dual_actor.policy import DualActorPolicy
from factories import tiny_module_kwargs, tiny_policy_kwargs, training_batch
from test_module import fit, snapshot


class OneStep(DualActorModule):
    """One of the module's updates, chosen by ``which``; keeps its logs."""

    which = "refine"

    def training_step(self, batch, batch_idx):
        self.logs = {}
        critic_opt, actor_opt, refine_opt = self.optimizers()
        if self.which == "refine":
            self._refine_update(batch[K.TALK_TWEAK], refine_opt, True, self.logs)
        elif self.which == "actor":
            self._actor_update(self._stack_tasks(batch[K.TASKS]), actor_opt, True, self.logs)
        else:
            self._critic_update(self._stack_tasks(batch[K.TASKS]), critic_opt, True, self.logs)
        self.trainer.should_stop = True


@pytest.mark.parametrize("head", ["plain", "anchored"])
def test_eq10_draws_one_z_for_both_terms(head):
    """At initialisation mu(s, c) = 0 for every command, so with the same z the two terms of Eq. 10 are the same
    action and the regulariser is 0 for nonzero commands; a fresh z for one term makes it ~ the action's spread
    (temperature 1, where z matters)."""
    torch.manual_seed(0)
    m = OneStep(**tiny_module_kwargs(policy={**tiny_policy_kwargs(), "primary_head": head, "temperature": 1.0},
                                     phase="online"))
    with torch.no_grad():  # a primary actor whose action depends on z (the untrained one barely does)
        for p in m.policy.primary.net.parameters():
            p.mul_(4.0)
    batch = training_batch()
    batch[K.TALK_TWEAK][K.COMMAND] = m.policy.command_ids(["move left", "move forward and up"] * 4)
    fit(m, batch)
    assert float(m.logs["loss/refine_reg"]) < 1e-10
    # the same check is not vacuous: two different z give clearly different actions
    h, pr = batch[K.TALK_TWEAK][K.H], batch[K.TALK_TWEAK][K.PROPRIO]
    with torch.no_grad():
        a1 = m.policy.primary(h, pr, noise=torch.randn(8, 4))
        a2 = m.policy.primary(h, pr, noise=torch.randn(8, 4))
    assert float(losses.refine_reg_loss(a1, a2)) > 1e-3


class ActionCodedCritics(nn.Module):
    """Q_e(s, a) = a_0 for every task and member, plus 0 * the critics' parameters (so the loss has a graph);
    the stacked critics' shapes: (N, b, m, A) -> (N, E, b, m)."""

    def __init__(self, critics):
        super().__init__()
        self.inner = critics

    def encode(self, obs, task=None):
        return self.inner.encode(obs, task)

    def clip_task_grads(self, max_norm):
        return self.inner.clip_task_grads(max_norm)

    def task_grad_norms(self):
        return self.inner.task_grad_norms()

    def q(self, feat, proprio, action, task=None):
        q = action[..., 0] + 0.0 * feat.sum(-1).view(*feat.shape[:2], *([1] * (action.ndim - 3)))
        return q.unsqueeze(1).expand(q.shape[0], 2, *q.shape[1:])


class SignPrimary(nn.Module):
    """pi(h) = (0.5 sign(h_0), 0, 0, 0): +0.5 at s (h_0 > 0), -0.5 at s' (h_0 < 0). ``deterministic``
    False: the module draws n samples per state, as for a stochastic head."""

    deterministic = False

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, h, proprio=None, **kw):
        a = torch.zeros(h.shape[0], 4)
        a[:, 0] = 0.5 * torch.sign(h[:, 0])
        return a


@pytest.mark.parametrize("deterministic", [False, True])
def test_calql_candidate_slices(monkeypatch, deterministic):
    """Cal-QL's candidate blocks reach the loss in the right slots: data action, n uniform actions, n policy
    actions at s, n policy actions at s' (all scored at s), with the MC return beside them. A deterministic
    primary mode's n samples are one action: it is scored once and enters with ``copies = n``."""
    torch.manual_seed(0)
    n = 3
    m = OneStep(**tiny_module_kwargs(calql_num_actions=n))
    m.which = "critic"
    m.policy.primary = SignPrimary()
    m.policy.primary.deterministic = deterministic
    m.critics = ActionCodedCritics(m.critics)
    batch = training_batch()
    for b in batch[K.TASKS]:
        b[K.H][:, 0] = 1.0 + b[K.H][:, 0].abs()  # s: h_0 > 0
        b[K.NEXT_H][:, 0] = -1.0 - b[K.NEXT_H][:, 0].abs()  # s': h_0 < 0
        b[K.ACTION][:, 0] = 0.9
    seen = []
    real = losses.calql_loss

    def spy(q_data, q_target, q_rand, q_pi, q_next_pi, mc_return, alpha, temperature, copies):
        seen.append((q_data, q_rand, q_pi, q_next_pi, mc_return, copies))
        return real(q_data, q_target, q_rand, q_pi, q_next_pi, mc_return, alpha, temperature, copies)

    monkeypatch.setattr(losses, "calql_loss", spy)
    fit(m, batch)
    assert len(seen) == 1  # all task critics in one call, task-stacked
    q_data, q_rand, q_pi, q_next_pi, mc, copies = seen[0]
    m_pi = 1 if deterministic else n
    assert copies == (n if deterministic else 1)
    assert q_data.shape == (3, 2, 8) and torch.allclose(q_data, torch.full((3, 2, 8), 0.9))
    assert q_rand.shape == (3, 2, 8, n) and q_pi.shape == q_next_pi.shape == (3, 2, 8, m_pi)
    assert torch.allclose(q_pi, torch.full_like(q_pi, 0.5)) and torch.allclose(q_next_pi, torch.full_like(q_pi, -0.5))
    assert q_rand.abs().max() <= 1.0 and q_rand.std() > 0.2  # uniform in [-1, 1]
    assert torch.equal(mc, torch.stack([b[K.MC_RETURN] for b in batch[K.TASKS]]))


def test_logged_task_weights_are_eq16_of_the_same_batch():
    """eps/<task> = task_weights(Qbar) with Qbar_i = E[min_e Q_i(s, pi(h))] of this batch's rows, computed here
    independently from the critics before the update."""
    torch.manual_seed(0)
    m = OneStep(**tiny_module_kwargs())
    m.which = "actor"
    batch = training_batch()
    with torch.no_grad():
        qbar = torch.stack([m.critics(b[K.OBS], b[K.PROPRIO], m.policy.primary(b[K.H], b[K.PROPRIO]), task=i).min(0).values.mean()
                            for i, b in enumerate(batch[K.TASKS])])
    want = losses.task_weights(qbar)
    fit(m, batch)
    got = torch.stack([m.logs[f"eps/{s}"] for s in m.task_slugs])
    assert torch.allclose(got, want, atol=1e-6), (got, want)
    assert torch.allclose(torch.stack([m.logs[f"q_pi/{s}"] for s in m.task_slugs]), qbar, atol=1e-6)


def test_targets_move_by_exactly_tau_per_update():
    torch.manual_seed(0)
    m = DualActorModule(**tiny_module_kwargs(tau=0.25, max_updates=1))
    before = snapshot(m.target_critics)
    fit(m, training_batch())
    src = dict(m.critics.named_parameters())
    for n, p in m.target_critics.named_parameters():
        assert torch.allclose(p, 0.75 * before[n] + 0.25 * src[n].detach(), atol=1e-7), n
    assert any(not torch.equal(p, before[n]) for n, p in m.target_critics.named_parameters())


def test_ema_is_seeded_from_a_checkpoint_without_one():
    """A checkpoint written with actor_ema off (e.g. a finished warm-up) starts the average at its weights."""
    torch.manual_seed(0)
    src = DualActorModule(**tiny_module_kwargs(actor_ema=None))
    ckpt = {"state_dict": src.state_dict(), "dual_actor": {"num_updates": 7, "phase": "warmup"}}
    assert not any(k.startswith("primary_ema.") for k in ckpt["state_dict"])
    dst = DualActorModule(**tiny_module_kwargs(actor_ema=0.01))
    dst.on_load_checkpoint(ckpt)
    dst.load_state_dict(ckpt["state_dict"])
    for k, v in src.policy.primary.state_dict().items():
        assert torch.equal(dst.primary_ema.state_dict()[k], v), k
    assert dst.num_updates == 7


def _defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


def test_module_policy_and_yaml_agree_on_every_default():
    """One default per value: conf/algo/dual_actor.yaml and the constructors' defaults agree on every shared key
    (interpolated yaml values are set by other groups and skipped)."""
    conf = yaml.safe_load((Path(__file__).parents[1] / "conf" / "algo" / "dual_actor.yaml").read_text())
    mod, pol = _defaults(DualActorModule.__init__), _defaults(DualActorPolicy.__init__)
    renamed = {"refine_mean_bound": "refine_mean_bound", "actor_hidden": "actor_hidden", "refine_hidden": "refine_hidden"}
    checked = []
    for key, value in conf.items():
        if isinstance(value, str) and value.startswith("${"):
            continue
        for defaults in (mod, pol):
            name = renamed.get(key, key)
            if name in defaults:
                want = defaults[name]
                norm = (lambda v: [list(x) if isinstance(x, (list, tuple)) else x for x in v]
                        if isinstance(v, (list, tuple)) else v)
                if isinstance(want, dict) or isinstance(value, dict):
                    if want is None:  # e.g. lambdas=None -> the paper's values inside the module
                        continue
                    want = {k: list(v) for k, v in want.items()}
                    value = {k: list(v) for k, v in value.items()}
                assert norm(want) == norm(value), (key, want, value)
                checked.append(key)
    for key in ("primary_head", "temperature", "ode_steps", "bc_form", "actor_ema", "distill_weight",
                "refine_phases", "eta", "tau", "gamma", "calql_alpha", "grad_clip"):
        assert key in checked, key


def test_module_lambdas_default_is_the_yaml_schedule():
    conf = yaml.safe_load((Path(__file__).parents[1] / "conf" / "algo" / "dual_actor.yaml").read_text())
    m = DualActorModule(**tiny_module_kwargs())
    assert m.lambdas == {k: tuple(v) for k, v in conf["lambdas"].items()}


# ------------------------------------------------------------------ bad input at the learner's edges
def test_task_count_or_order_mismatch_fails_on_the_first_batch():
    from dual_actor.data.buffers import TaskBuffers
    from dual_actor.data.datamodule import BufferSampler

    torch.manual_seed(0)
    two = training_batch(n_tasks=2)
    m = DualActorModule(**tiny_module_kwargs(max_updates=1))
    with pytest.raises(ValueError, match=r"the data has 2 task\(s\) per batch but the module was built for 3"):
        fit(m, two)
    swapped = training_batch()
    swapped[K.TASKS] = [swapped[K.TASKS][1], swapped[K.TASKS][0], swapped[K.TASKS][2]]
    with pytest.raises(ValueError, match="task slice 0 holds rows of task id\\(s\\) \\[1\\]"):
        fit(DualActorModule(**tiny_module_kwargs(max_updates=1)), swapped)
    # and through the real sampler: buffers of two tasks for a three-task module
    bufs = TaskBuffers(["a", "b"])
    for i, t in enumerate(["a", "b"]):
        rows = training_batch(n_tasks=2)[K.TASKS][i]
        bufs[t]["demos"].add({k: v for k, v in rows.items()})
    with pytest.raises(ValueError, match="built for 3"):
        fit(DualActorModule(**tiny_module_kwargs(max_updates=1)), BufferSampler(bufs, batch_size=4))


def test_operator_yaml_and_class_agree_on_every_default():
    from dual_actor.runtime.operators import SimulatedOperator

    conf = yaml.safe_load((Path(__file__).parents[1] / "conf" / "operator" / "simulated.yaml").read_text())
    defaults = _defaults(SimulatedOperator.__init__)
    checked = [k for k, v in conf.items() if k in defaults and not (isinstance(v, str) and v.startswith("${"))]
    for k in checked:
        assert defaults[k] == conf[k], (k, defaults[k], conf[k])
    assert "talk_then_tweak" in checked and len(checked) >= 8


def test_default_run_keeps_the_warmup_lambda_online_and_paper_keeps_the_papers():
    """The built-in bench's default run uses Eq. 6's warm-up weights online too (docs/results.md "Online
    lambda"); experiment=paper and experiment=smoke keep the paper's (0.5, 0.5)."""
    from hydra import compose, initialize_config_dir

    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        got = {exp: list(compose("config", overrides=[f"experiment={exp}"]).algo.lambdas.online)
               for exp in ("default", "paper", "smoke")}
    assert got == {"default": [1.0, 0.1], "paper": [0.5, 0.5], "smoke": [0.5, 0.5]}


def test_bc_rows_per_arm():
    """Ours (and ours without the dual actor) imitate demos, interventions and successful rollouts online
    (docs/algorithm.md "BC rows online"); HG-DAgger people's actions only; ConRFT flat every row (its Eq. 6)."""
    from hydra import compose, initialize_config_dir

    conf_dir = Path(__file__).resolve().parents[1] / "conf"
    arms = {"dual_actor": [], "single": ["algo.refine_enabled=false"], "hg_dagger": ["algo=hg_dagger"],
            "conrft_flat": ["algo=conrft_flat"]}
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        got = {(arm, exp): compose("config", overrides=[f"experiment={exp}", *over]).algo.bc_rows
               for arm, over in arms.items() for exp in ("default", "paper")}
    for exp in ("default", "paper"):
        assert [got[a, exp] for a in arms] == ["successes", "successes", "people", "all"]
