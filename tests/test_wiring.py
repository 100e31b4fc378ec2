"""Module-level wiring of the equations, with values: each test fails on the wiring bug it names."""

import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from dual_actor import constants as K
from dual_actor import losses
from dual_actor.module import DualActorModule
from factories import tiny_module_kwargs, tiny_policy_kwargs, training_batch
from test_module import fit, snapshot


class OneStep(DualActorModule):
    """One of the module's updates, chosen by ``which``; keeps its logs."""

    which = "refine"

    def training_step(self, batch, batch_idx):
        self.logs = {}
        critic_opt, actor_opt, refine_opt = self.optimizers()
        if self.which == "refine":
            self.refine_update(batch[K.TALK_TWEAK], refine_opt, True, self.logs)
        elif self.which == "actor":
            self.actor_update(self.stack_tasks(batch[K.TASKS]), actor_opt, True, self.logs)
        else:
            self.critic_update(self.stack_tasks(batch[K.TASKS]), critic_opt, True, self.logs)
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


def _compose(*overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_every_default_has_one_value():
    """One default per value: the composed default run's algo section is the schema's (AlgoConfig), the module
    built without a learner config trains it, and every operator / control-loop default the config links to is
    the class's own."""
    import dataclasses

    from omegaconf import OmegaConf

    from data_tools.talk_tweak import SIGMA_M, WINDOW
    from dual_actor.config.algo import AlgoConfig, LearnerConfig
    from dual_actor.config.groups import KeyboardOperatorConfig, SimulatedOperatorConfig, SpaceMouseOperatorConfig
    from dual_actor.runtime.loop import ControlLoop
    from dual_actor.runtime.operators import KeyboardOperator, SimulatedOperator, SpaceMouseOperator

    cfg = _compose()
    algo = OmegaConf.to_container(cfg.algo, resolve=True)
    schema = dataclasses.asdict(AlgoConfig())
    assert algo.pop("q_bounds") == list(cfg.env.q_bounds) and schema.pop("q_bounds") is None  # the env's, linked
    assert algo == schema
    m = DualActorModule(tiny_policy_kwargs())
    assert m.algo == LearnerConfig() and m.lambdas == {k: tuple(v) for k, v in algo["lambdas"].items()}
    assert m.subcommands is not None and m.algo.refine_target == "residual"  # the default algorithm's Eq. 8
    checked = 0
    for name, node_cls, cls in (("simulated", SimulatedOperatorConfig, SimulatedOperator),
                                ("keyboard", KeyboardOperatorConfig, KeyboardOperator),
                                ("spacemouse", SpaceMouseOperatorConfig, SpaceMouseOperator)):
        node = OmegaConf.to_container(_compose(f"operator={name}").operator, resolve=True)
        defaults = _defaults(cls.__init__)
        for f in dataclasses.fields(node_cls):
            if f.name == "_target_":
                assert node[f.name] == f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}"
                continue
            assert f.name in defaults, (name, f.name)  # every config key is a constructor argument
            if f.default is dataclasses.MISSING:  # a list / dict setting: what the default-built operator holds
                got = getattr(cls(), f.name)
                got = list(got) if isinstance(got, tuple) else got
                assert got == f.default_factory(), (name, f.name, got, f.default_factory())
                checked += 1
            elif not (isinstance(f.default, str) and f.default.startswith("${")):
                assert defaults[f.name] == f.default, (name, f.name, defaults[f.name], f.default)
                checked += 1
    assert checked >= 12
    sim = OmegaConf.to_container(_compose().operator, resolve=True)
    sim_defaults, loop_defaults = _defaults(SimulatedOperator.__init__), _defaults(ControlLoop.__init__)
    assert (sim["command_window"], sim["sigma"]) == (cfg.online.window, cfg.online.sigma) == (WINDOW, SIGMA_M)
    assert (sim_defaults["command_window"], sim_defaults["sigma"]) == (loop_defaults["window"], loop_defaults["sigma"]) \
        == (WINDOW, SIGMA_M)
    assert sim["translation_scale_m"] == cfg.online.translation_scale_m == sim_defaults["translation_scale_m"]
    assert sim["seed"] == cfg.seed


SIZES = {"batch_size", "warmup_updates", "actor_hidden", "refine_hidden", "critic_hidden"}


def test_smoke_trains_the_default_algorithm_and_paper_the_papers():
    """experiment=smoke changes sizes and budgets only: its algo section is the default run's apart from widths,
    batch and update counts. experiment=paper is Eq. 6 and Eq. 8 as printed (algo=dual_actor_paper): the paper's
    online lambdas, absolute Eq. 8 targets, no one-word copies; the default run keeps the warm-up's weights online
    (docs/results.md "Online lambda")."""
    from omegaconf import OmegaConf

    algo = {exp: OmegaConf.to_container(_compose(f"experiment={exp}").algo, resolve=True)
            for exp in ("default", "smoke", "paper")}
    smoke_diff = {k for k in algo["default"] if algo["default"][k] != algo["smoke"][k]}
    assert smoke_diff and smoke_diff <= SIZES, smoke_diff
    assert algo["default"]["lambdas"]["online"] == [1.0, 0.1]
    paper = {k: v for k, v in algo["paper"].items() if algo["default"][k] != v}
    assert paper == {"lambdas": {"warmup": [1.0, 0.1], "online": [0.5, 0.5]}, "refine_target": "absolute",
                     "refine_subcommands": 0.0}


def test_bc_rows_per_arm():
    """Ours (and ours without the dual actor) imitate demos, interventions and successful rollouts online
    (docs/algorithm.md "BC rows online"); HG-DAgger people's actions only; ConRFT flat every row (its Eq. 6)."""
    arms = {"dual_actor": [], "single": ["algo.refine_enabled=false"], "hg_dagger": ["algo=hg_dagger"],
            "conrft_flat": ["algo=conrft_flat"]}
    for exp in ("default", "paper"):
        got = [_compose(f"experiment={exp}", *over).algo.bc_rows for over in arms.values()]
        assert got == ["successes", "successes", "people", "all"]


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
