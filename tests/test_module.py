"""DualActorModule: gradient isolation, optimizer-step counting, learning on small problems."""

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from dual_actor import constants as K
from dual_actor.data.buffers import TaskBuffers
from dual_actor.data.datamodule import BufferSampler
from dual_actor.module import DualActorModule
from factories import tiny_module_kwargs, tiny_policy_kwargs, training_batch


class Repeat(IterableDataset):
    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


def fit(module, data, **trainer_kw):
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_kw)
    loader = DataLoader(data if isinstance(data, IterableDataset) else Repeat(data), batch_size=None)
    trainer.fit(module, loader)
    return trainer


def snapshot(mod):
    return {n: p.detach().clone() for n, p in mod.named_parameters()}


def changed(before, mod):
    return {n for n, p in mod.named_parameters() if not torch.equal(before[n], p.detach())}


def task_snapshots(critics) -> list[dict]:
    """Each task critic's parameters (its slice of every stacked tensor, task-major), one dict per task."""
    t = critics.num_tasks
    return [{n: p.detach().reshape(t, -1)[i].clone() for n, p in critics.named_parameters()} for i in range(t)]


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


class OneUpdate(DualActorModule):
    """Runs exactly one of the module's updates, chosen by ``which``."""

    which = "actor"

    def training_step(self, batch, batch_idx):
        for p in self.parameters():
            p.grad = None
        critic_opt, actor_opt, refine_opt = self.optimizers()
        if self.which == "critic":
            self.critic_update(self.stack_tasks(batch[K.TASKS]), critic_opt, True, {})
        elif self.which == "actor":
            self.actor_update(self.stack_tasks(batch[K.TASKS]), actor_opt, True, {})
        else:
            self.refine_update(batch[K.TALK_TWEAK], refine_opt, True, {})
        self.trainer.should_stop = True


@pytest.mark.parametrize("phase", ["warmup", "online"])
def test_gradient_isolation(phase):
    torch.manual_seed(0)
    batch = training_batch()
    for which in ("critic", "actor", "refine"):
        m = OneUpdate(**tiny_module_kwargs(phase=phase))
        m.which = which
        nets = lambda: {"primary": m.policy.primary, "refinement": m.policy.refinement,  # noqa: E731
                        "critics": m.critics, "targets": m.target_critics}
        before = {name: snapshot(net) for name, net in nets().items()}
        fit(m, batch)
        moved = {name for name, net in nets().items() if changed(before[name], net)}
        expected = {"critic": {"critics"}, "actor": {"primary"}, "refine": {"refinement"}}[which]
        assert moved == expected, (which, moved)
        # no gradient left on parameters that the update does not own
        owners = {"critic": m.critics, "actor": m.policy.primary, "refine": m.policy.refinement}
        own = {id(p) for p in owners[which].parameters()}
        leaked = [n for n, p in m.named_parameters() if p.grad is not None and id(p) not in own]
        assert not leaked, (which, leaked[:5])


@pytest.mark.parametrize("phase", ["warmup", "online"])
def test_each_critic_learns_only_from_its_own_task_slice(phase):
    """Changing task 2's slice changes critic 2's update and nothing else."""
    results = []
    for variant in (0, 1):
        torch.manual_seed(0)
        batch = training_batch()
        if variant:
            batch[K.TASKS][2][K.REWARD] = 1.0 - batch[K.TASKS][2][K.REWARD]
            batch[K.TASKS][2][K.ACTION] = -batch[K.TASKS][2][K.ACTION]
        m = OneUpdate(**tiny_module_kwargs(phase=phase))
        m.which = "critic"
        fit(m, batch)
        results.append(task_snapshots(m.critics))
    same = [same_weights(results[0][i], results[1][i]) for i in range(3)]
    assert same == [True, True, False]


@pytest.mark.parametrize("talk_tweak,phase,refine_phases,refines", [
    (True, "online", ["online"], True), (False, "online", ["online"], False),
    (True, "warmup", ["online"], False),  # the paper: the refinement actor trains online only
    (True, "warmup", ["warmup", "online"], True),
])
def test_optimizer_steps_per_training_step(talk_tweak, phase, refine_phases, refines):
    torch.manual_seed(0)
    m = DualActorModule(**tiny_module_kwargs(max_updates=4, log_every=2, phase=phase, refine_phases=refine_phases))
    trainer = fit(m, training_batch(talk_tweak=talk_tweak))
    opts = trainer.optimizers
    assert len(opts) == 3  # the stacked task critics, the primary actor, the refinement actor
    steps = [int(next(iter(o.state.values()))["step"]) if o.state else 0 for o in opts]
    assert steps == [4, 4, 4 if refines else 0]
    assert m.num_updates == 4
    assert trainer.global_step == sum(steps)


def test_refine_disabled_is_single_actor():
    m = DualActorModule(**tiny_module_kwargs(max_updates=2, refine_enabled=False))
    before = snapshot(m.policy.refinement)
    fit(m, training_batch(talk_tweak=True))
    assert not changed(before, m.policy.refinement)


def test_phase_switch_changes_losses_only():
    m = DualActorModule(**tiny_module_kwargs(lambdas={"warmup": (1.0, 0.1), "online": (0.5, 0.5)}))  # the paper's
    assert m.critic_loss_kind == "calql" and m.lambdas[m.phase] == (1.0, 0.1)
    m.set_phase("online")
    assert m.critic_loss_kind == "bellman" and m.lambdas[m.phase] == (0.5, 0.5)
    with pytest.raises(ValueError, match="phase"):
        m.set_phase("offline")
    with pytest.raises(ValueError, match="bc_form"):
        DualActorModule(**tiny_module_kwargs(bc_form="denoise"))
    with pytest.raises(ValueError, match="q_bounds"):
        DualActorModule(**tiny_module_kwargs(q_bounds=[1.0, 0.0]))


def _expert(state):
    w = np.linspace(-0.5, 0.5, state.shape[1] * 4).reshape(state.shape[1], 4)
    return np.tanh(state @ w)


def test_warmup_bc_learns_demonstrations(tmp_path):
    """Warm-up on demos drives the one-step action error far below its start."""
    from dual_actor.data.datamodule import OfflineDataModule
    from dual_actor.data.hdf5 import DataSpec
    from factories import TASKS, write_synthetic_dataset

    torch.manual_seed(0)
    path = write_synthetic_dataset(tmp_path / "d.hdf5", episodes_per_task=5, steps=40)
    m = DualActorModule(**tiny_module_kwargs(max_updates=400, log_every=100, actor_lr=1e-3))
    dm = OfflineDataModule(path, DataSpec(TASKS, "state", 6, "proprio", 2, 4), m.policy.embed,
                           m.policy.command_ids, batch_size=48)
    dm.setup()
    rows = [dm.buffers[t]["demos"].all() for t in TASKS]

    def action_mse():
        with torch.no_grad():
            err = [(m.policy.primary(r[K.H], r[K.PROPRIO]) - r[K.ACTION]).pow(2).mean() for r in rows]
        return float(torch.stack(err).mean())

    start = action_mse()
    fit(m, dm.train_dataloader().dataset)
    end = action_mse()
    assert end < 0.2 * start, (start, end)
    assert end < 0.03


def test_critic_converges_on_known_mdp():
    """Chain s0 -> s1 -> s2 (terminal, reward 1), actions irrelevant: Q*(s_k, .) = gamma^(2-k)."""
    torch.manual_seed(0)
    gamma = 0.9
    tasks = ["chain"]
    kw = tiny_module_kwargs(policy=dict(tasks=tasks, obs_dim=3, proprio_dim=1, action_dim=2, actor_hidden=[16],
                                        refine_hidden=[16], refine_proj_dim=8, text_encoder={"kind": "learned", "out_dim": 4}, obs_feature_dim=16),
                            gamma=gamma, tau=0.05, critic_lr=3e-3, max_updates=800, log_every=400,
                            phase="online", lambdas={"warmup": [1.0, 0.0], "online": [1.0, 0.0]})
    m = DualActorModule(**kw)
    bufs = TaskBuffers(tasks)
    eye = torch.eye(3)
    n = 300
    s = torch.randint(0, 3, (n,))
    nxt = torch.clamp(s + 1, max=2)
    obs, next_obs = eye[s], eye[nxt]
    h, next_h = m.policy.embed(obs, tasks * n), m.policy.embed(next_obs, tasks * n)
    rows = {K.H: h, K.OBS: obs, K.PROPRIO: torch.zeros(n, 1), K.ACTION: torch.rand(n, 2) * 2 - 1,
            K.REWARD: (s == 2).float(), K.DONE: (s == 2).float(), K.NEXT_H: next_h, K.NEXT_OBS: next_obs,
            K.NEXT_PROPRIO: torch.zeros(n, 1), K.MC_RETURN: gamma ** (2 - s).float(),
            K.COMMAND: torch.zeros(n, dtype=torch.long), K.TASK: torch.zeros(n, dtype=torch.long),
            K.INTERVENTION: torch.zeros(n, dtype=torch.bool)}
    bufs["chain"]["demos"].add(rows)
    bufs["chain"]["rollouts"].add(rows)
    fit(m, BufferSampler(bufs, batch_size=64, phase="online", min_rollout=100))
    with torch.no_grad():
        q = m.critics(eye, torch.zeros(3, 1), torch.zeros(3, 2), task=0).mean(0)
    assert torch.allclose(q, torch.tensor([gamma**2, gamma, 1.0]), atol=0.05), q


class ActorLogs(DualActorModule):
    """One actor update; keeps its logged scalars."""

    def training_step(self, batch, batch_idx):
        self.logs = {}
        self.actor_update(self.stack_tasks(batch[K.TASKS]), self.optimizers()[1], True, self.logs)
        self.trainer.should_stop = True


def test_actor_ema_tracks_the_primary_actor_and_is_what_is_deployed():
    torch.manual_seed(0)
    m = DualActorModule(**tiny_module_kwargs(actor_ema=0.25, max_updates=1))
    before = {k: v.clone() for k, v in m.policy.primary.state_dict().items()}
    fit(m, training_batch())
    after = m.policy.primary.state_dict()
    ema = m.primary_ema.state_dict()
    k = next(k for k in after if not torch.equal(after[k], before[k]))  # a weight the update moved
    assert torch.allclose(ema[k], 0.75 * before[k] + 0.25 * after[k], atol=1e-6)
    assert torch.equal(m.deploy_state_dict()[f"primary.{k}"], ema[k])
    with m.deployed_weights():
        assert torch.equal(m.policy.primary.state_dict()[k], ema[k])
    assert torch.equal(m.policy.primary.state_dict()[k], after[k])  # training weights restored
    plain = DualActorModule(**tiny_module_kwargs(actor_ema=None))
    assert plain.primary_ema is None and torch.equal(plain.deploy_state_dict()[f"primary.{k}"],
                                                     plain.policy.primary.state_dict()[k])
    with pytest.raises(ValueError, match="actor_ema"):
        DualActorModule(**tiny_module_kwargs(actor_ema=0.0))


class RefineLogs(DualActorModule):
    """One refinement update; keeps its logged scalars."""

    def training_step(self, batch, batch_idx):
        self.logs = {}
        self.refine_update(batch[K.TALK_TWEAK], self.optimizers()[2], True, self.logs)
        self.trainer.should_stop = True


def test_refinement_actor_is_trained_against_the_deployed_ema_primary():
    """With actor_ema on, Eq. 8 scores a(mu(s, c)) of the averaged primary actor (what the robot runs), not of
    the raw training weights. Temperature 0 makes the update deterministic, so the logged value is exact."""
    torch.manual_seed(0)
    m = RefineLogs(**tiny_module_kwargs(actor_ema=0.01, phase="online", refine_subcommands=0.0))  # Eq. 8 as printed
    with torch.no_grad():
        for p in m.policy.primary.parameters():
            p.add_(0.5 * torch.randn_like(p))  # raw weights now differ from the EMA copy
        for p in m.policy.refinement.head[-1].parameters():
            p.normal_()
    batch = training_batch()
    tt = batch[K.TALK_TWEAK]
    with torch.no_grad():
        mu = m.policy.refinement(tt[K.OBS], tt[K.COMMAND])
        want = losses_refine_bc(m.primary_ema(tt[K.H], tt[K.PROPRIO], noise_mean=mu), tt[K.ACTION])
        raw = losses_refine_bc(m.policy.primary(tt[K.H], tt[K.PROPRIO], noise_mean=mu), tt[K.ACTION])
    assert abs(want - raw) > 1e-3
    fit(m, batch)
    assert float(m.logs["loss/refine_bc"]) == pytest.approx(want, rel=1e-5)


def losses_refine_bc(a, target):
    return float((a - target).pow(2).sum(-1).mean())


def test_anchored_q_term_moves_only_the_mean_head():
    """The Q term of Eq. 6 acts on primary mode's action a(0) = M(h): with lambda = (0, 1) only the mean head
    moves, so the critic cannot erode the noise -> action map's authority; the BC term trains both."""
    from dual_actor.module import DualActorModule as M

    class ActorOnly(M):
        def training_step(self, batch, batch_idx):
            self.actor_update(self.stack_tasks(batch[K.TASKS]), self.optimizers()[1], False, {})
            self.trainer.should_stop = True

    for lambdas, moved in (((0.0, 1.0), {"mean_net"}), ((1.0, 0.0), {"mean_net", "net"})):
        torch.manual_seed(0)
        m = ActorOnly(**tiny_module_kwargs(lambdas={"warmup": list(lambdas), "online": list(lambdas)}))
        before = snapshot(m.policy.primary)
        fit(m, training_batch())
        assert {n.split(".")[0] for n in changed(before, m.policy.primary)} == moved, lambdas


@pytest.mark.parametrize("phase", ["warmup", "online"])
def test_bf16_mixed_update_keeps_losses_finite_and_near_fp32(phase):
    """trainer.precision=bf16-mixed (trainer=gpu; on the CPU it is CPU autocast): the update runs, every loss is
    finite, and the first update's losses are those of fp32 to bf16's precision (~3 significant digits)."""
    logs = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        m = DualActorModule(**tiny_module_kwargs(max_updates=1, phase=phase, refine_phases=["warmup", "online"]))
        fit(m, training_batch(), precision=precision)
        logs[precision] = m.last_logs
    got, want = logs["bf16-mixed"], logs["32-true"]
    assert set(got) == set(want)
    loss_keys = [k for k in want if k.startswith("loss/")]
    assert "loss/refine" in loss_keys and len(loss_keys) > 8
    for k in loss_keys:
        assert np.isfinite(got[k]), k
        assert abs(got[k] - want[k]) <= 0.03 * abs(want[k]) + 0.02, (k, got[k], want[k])
    assert any(got[k] != want[k] for k in loss_keys)  # autocast did run the matmuls in bf16


def test_subcommand_table_names_each_axis_single_command():
    """``refine_subcommands``: each command's row of the table holds, per axis the sentence names, the id of
    "move <that word>"; derived here from the sentence's words, not from the parser."""
    from data_tools.talk_tweak import DEFAULT_WORDS

    m = DualActorModule(**tiny_module_kwargs(refine_subcommands=0.5))
    vocab = m.policy.commands
    axis_of = {w: i for i, ax in enumerate("xyz") for w in DEFAULT_WORDS[ax]}
    table = m.subcommands.table
    assert table.shape == (len(vocab), 3)
    for i, cmd in enumerate(vocab):
        words = [] if cmd == "[null]" else cmd.removeprefix("move ").replace(",", "").replace(" and ", " ").split()
        want = [-1, -1, -1]
        for w in words:
            want[axis_of[w]] = vocab.index(f"move {w}")
        assert table[i].tolist() == want, cmd
    assert DualActorModule(**tiny_module_kwargs(refine_subcommands=0.0)).subcommands is None  # off: nothing built


def test_subcommand_copies_name_one_axis_each():
    """With p = 1 every row whose command names an axis gets one copy: one of those axes' single-axis commands,
    and as target the primary's action with that axis replaced by the row's own target; "[null]" rows get none.
    With p = 0 there are no copies; with p = 0.5 about half the rows are copied, each named axis about equally
    often."""
    m = DualActorModule(**tiny_module_kwargs(refine_subcommands=1.0))
    vocab = m.policy.commands
    ids = lambda cs: torch.tensor([vocab.index(c) for c in cs])  # noqa: E731
    cmds = ["[null]", "move left and up", "move down", "move left, forward and up"]
    allowed = [set(), {"move left", "move up"}, {"move down"}, {"move left", "move forward", "move up"}]
    axis = {"move left": 1, "move up": 2, "move down": 2, "move forward": 0}
    action = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [-0.1, -0.2, -0.3, -0.4], [0.9, -0.9, 0.5, 1.0]])
    a_now = torch.full((4, 4), 0.05)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        rows, cmd, target = m.subcommands(ids(cmds), action, a_now)
        assert rows.tolist() == [1, 2, 3] and cmd.shape == (3,) and target.shape == (3, 4)
        for j, r in enumerate(rows.tolist()):
            c = vocab[int(cmd[j])]
            assert c in allowed[r], (r, c)
            seen.add((r, c))
            want = torch.full((4,), 0.05)
            want[axis[c]] = action[r, axis[c]]
            assert torch.equal(target[j], want), (r, c)
    assert len(seen) == 6  # every named axis of every row came up
    m.subcommands.p = 0.0
    rows, cmd, target = m.subcommands(ids(cmds), action, a_now)
    assert rows.numel() == 0 and cmd.numel() == 0 and target.shape == (0, 4)
    m.subcommands.p = 0.5
    n = 4000
    rows, cmd, _ = m.subcommands(ids(["move left and up"] * n), action[1:2].expand(n, 4), a_now[:1].expand(n, 4))
    assert abs(rows.numel() / n - 0.5) < 0.04
    assert abs(float((cmd == vocab.index("move left")).float().mean()) - 0.5) < 0.05


def test_refine_subcommands_must_be_a_probability():
    with pytest.raises(ValueError, match="refine_subcommands"):
        DualActorModule(**tiny_module_kwargs(refine_subcommands=1.5))


def _refine_case(**kw):
    """A seeded online module that logs one refinement update (EMA on, a random refinement head, so that mu is
    not ~0) and a training batch for it."""
    torch.manual_seed(0)
    m = RefineLogs(**tiny_module_kwargs(actor_ema=0.01, phase="online", **kw))
    with torch.no_grad():
        for q in m.policy.refinement.head[-1].parameters():
            q.normal_()
    return m, training_batch()


def test_refine_update_adds_sub_command_copies():
    """Eq. 8 with ``refine_subcommands=1`` and single-axis commands (the copy's command is the row's own, at the
    same latent noise): the logged BC loss is the mean over the batch's rows (target: the executed action) and
    one copy per row (target: the deployed primary's action at mu = 0 whose commanded axis is the row's
    target's), hand-built here (temperature 0: deterministic); p = 0 gives the plain Eq. 8 on the same batch.
    With ``refine_target="residual"`` both targets come from the primary's action now plus the correction."""
    vocab_axis = {"move forward": 0, "move backward": 0, "move left": 1, "move right": 1, "move up": 2,
                  "move down": 2}
    reg = {}
    for p, target_kind in ((1.0, "absolute"), (0.0, "absolute"), (1.0, "residual")):
        m, batch = _refine_case(refine_subcommands=p, refine_target=target_kind)
        tt = batch[K.TALK_TWEAK]
        names = list(vocab_axis) + ["move left"] * 2
        tt[K.COMMAND] = torch.tensor([m.policy.commands.index(c) for c in names])
        n, a_dim = tt[K.ACTION].shape
        tt[K.CORRECTION] = torch.linspace(-0.5, 0.5, n * a_dim).reshape(n, a_dim)
        with torch.no_grad():
            mu = m.policy.refinement(tt[K.OBS], tt[K.COMMAND])
            a_ref = m.primary_ema(tt[K.H], tt[K.PROPRIO], noise_mean=mu)
            a_now = m.primary_ema(tt[K.H], tt[K.PROPRIO])
            row_target = tt[K.ACTION].clone()
            if target_kind == "residual":
                row_target = (a_now + tt[K.CORRECTION]).clamp(-1.0, 1.0)
            want = losses_refine_bc(a_ref, row_target)
            if p:
                copy = a_now.clone()
                for r, c in enumerate(names):
                    copy[r, vocab_axis[c]] = row_target[r, vocab_axis[c]]
                want = losses_refine_bc(torch.cat([a_ref, a_ref]), torch.cat([row_target, copy]))
        fit(m, batch)
        assert float(m.logs["loss/refine_bc"]) == pytest.approx(want, rel=1e-5), (p, target_kind)
        assert float(m.logs.get("refine/subcommand_rows", 0.0)) == p
        reg[p, target_kind] = float(m.logs["loss/refine_reg"])
    assert reg[1.0, "absolute"] == reg[0.0, "absolute"]  # Eq. 10 is on the batch's rows only


def test_refine_update_residual_target():
    """``refine_target="residual"``: Eq. 8 pulls a(mu(s, c)) to the deployed primary's action at the same noise
    plus the row's recorded correction, clipped to [-1, 1]; a row without a known correction (NaN) keeps the
    executed action. Hand-built here (temperature 0: deterministic); "absolute" is Eq. 8 as printed."""
    for target in ("residual", "absolute"):
        m, batch = _refine_case(refine_target=target, refine_subcommands=0.0)  # no copies: the batch's rows
        tt = batch[K.TALK_TWEAK]
        n, a_dim = tt[K.ACTION].shape
        correction = torch.linspace(-0.8, 0.8, n * a_dim).reshape(n, a_dim)
        correction[0] = 3.0  # clipped
        correction[1, 2] = float("nan")  # no proposal known: the executed action
        tt[K.CORRECTION] = correction
        with torch.no_grad():
            mu = m.policy.refinement(tt[K.OBS], tt[K.COMMAND])
            a_ref = m.primary_ema(tt[K.H], tt[K.PROPRIO], noise_mean=mu)
            want = tt[K.ACTION].clone()
            if target == "residual":
                a_now = m.primary_ema(tt[K.H], tt[K.PROPRIO])
                want = (a_now + correction).clamp(-1.0, 1.0)
                assert torch.equal(want[0], torch.ones(a_dim))
                want[1] = tt[K.ACTION][1]
            expect = losses_refine_bc(a_ref, want)
        fit(m, batch)
        assert float(m.logs["loss/refine_bc"]) == pytest.approx(expect, rel=1e-5), target
    with pytest.raises(ValueError, match="refine_target"):
        DualActorModule(**tiny_module_kwargs(refine_target="relative"))
