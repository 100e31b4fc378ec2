"""The learner update as it was before issue 11 (commit 4bfb8cf), kept verbatim as the reference of
tests/test_learner_equivalence.py: per-task ``TaskCritic`` modules, one optimizer per critic, Cal-QL with
n policy samples per state, the refinement update's full map evaluations. Only the imports are adapted
(the old critic classes are below, not in ``dual_actor.nets.critic``). Not used by the library.
"""

from __future__ import annotations


import copy
import math
from typing import Sequence

import torch
from torch import nn


class EnsembleLinear(nn.Module):
    """E independent linear layers: (E, B, in) -> (E, B, out) in one ``baddbmm``."""

    def __init__(self, ensemble: int, in_dim: int, out_dim: int, bias: bool = True, fan_in: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim)) if bias else None
        bound = 1.0 / math.sqrt(fan_in or in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)


def ensemble_mlp(
    ensemble: int, in_dim: int, hidden: Sequence[int], out_dim: int | None, layer_norm: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for width in hidden:
        layers.append(EnsembleLinear(ensemble, d, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.ReLU())
        d = width
    if out_dim is not None:
        layers.append(EnsembleLinear(ensemble, d, out_dim))
    return nn.Sequential(*layers)


class TaskCritic(nn.Module):
    """Twin-ensemble critic for one task.

    ``forward(obs (B, Do), proprio (B, Dp), action (B, A) or (B, m, A)) -> Q (E, B) or (E, B, m)``.
    ``obs_encoder`` maps ``obs`` to (B, obs_encoder.out_dim) (state MLP here; ResNet for images).
    """

    def __init__(
        self,
        obs_encoder: nn.Module,
        proprio_dim: int,
        action_dim: int,
        feature_dim: int = 64,
        hidden: Sequence[int] = (256, 256),
        ensemble: int = 2,
        layer_norm: bool = True,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("critic needs at least one hidden layer")
        self.ensemble = ensemble
        self.obs_encoder = obs_encoder
        self.proprio_dim = proprio_dim
        self.proprio_mlp = ensemble_mlp(ensemble, proprio_dim, (feature_dim,), None) if proprio_dim else None
        self.action_mlp = ensemble_mlp(ensemble, action_dim, (feature_dim,), None)
        state_dim = obs_encoder.out_dim + (feature_dim if proprio_dim else 0)
        fan_in = state_dim + feature_dim
        self.state_in = EnsembleLinear(ensemble, state_dim, hidden[0], bias=True, fan_in=fan_in)
        self.action_in = EnsembleLinear(ensemble, feature_dim, hidden[0], bias=False, fan_in=fan_in)
        first = [nn.LayerNorm(hidden[0])] if layer_norm else []
        self.first_act = nn.Sequential(*first, nn.ReLU())
        self.head = ensemble_mlp(ensemble, hidden[0], hidden[1:], 1, layer_norm=layer_norm)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation features (B, F); compute once and pass to :meth:`q` for several actions."""
        return self.obs_encoder(obs)

    def q(self, feat: torch.Tensor, proprio: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q from precomputed observation features: (E, B) for action (B, A); (E, B, m) for (B, m, A)."""
        e, b = self.ensemble, feat.shape[0]
        multi = action.ndim == 3
        m = action.shape[1] if multi else 1
        state = feat.unsqueeze(0).expand(e, *feat.shape)
        if self.proprio_mlp is not None:
            state = torch.cat([state, self.proprio_mlp(proprio.unsqueeze(0).expand(e, *proprio.shape))], -1)
        s_term = self.state_in(state)  # (E, B, H)
        a = action.reshape(b * m, -1)
        a_term = self.action_in(self.action_mlp(a.unsqueeze(0).expand(e, *a.shape)))  # (E, B m, H)
        x = (a_term.view(e, b, m, -1) + s_term.unsqueeze(2)).view(e, b * m, -1)
        out = self.head(self.first_act(x)).view(e, b, m)
        return out if multi else out.squeeze(-1)

    def forward(self, obs: torch.Tensor, proprio: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        return self.q(self.encode(obs), proprio, action)


def make_target(net: nn.Module) -> nn.Module:
    """A frozen copy of ``net`` for Polyak targets."""
    target = copy.deepcopy(net)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, in place (``_foreach_lerp_``)."""
    tp = [p for p in target.parameters()]
    sp = [p.detach() for p in source.parameters()]
    torch._foreach_lerp_(tp, sp, tau)
import contextlib
import copy
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from torch import nn

from dual_actor import constants as K
from dual_actor import losses

from dual_actor.nets.common import select_rows
from dual_actor.policy import DualActorPolicy
from dual_actor.utils import slug

PHASES = ("warmup", "online")


class DualActorModule(L.LightningModule):
    """Args (explicit, no config objects):
        policy: the :class:`DualActorPolicy` kwargs (tasks, dims, widths, scalings, ...).
        critic_hidden, critic_feature_dim, critic_obs_dim, critic_ensemble: critic widths.
        gamma: discount; tau: Polyak rate (0.005).
        actor_lr, critic_lr, refine_lr: Adam learning rates.
        lambdas: {"warmup": (l1, l2), "online": (l1, l2)} for Eq. 6.
        eta: (eta1, eta2, eta3) for Eq. 11.
        bc_form: for the plain head (``policy["primary_head"] = "plain"``): "consistency" (CPQL/ConRFT
            denoising form of Eq. 5), "literal" (the one-step
            action, Eq. 5 as printed) or "both" (their sum: every row also trains the one-step
            action that acting uses, which the consistency form reaches only at sigma = K).
        calql_alpha, calql_temperature, calql_num_actions: Cal-QL regulariser.
        task_weighting: use Eq. 15/16 weights (False: uniform Eq. 14).
        eps_c, eps_min, eps_max: Eq. 16 constants.
        actor_q_reduce: "min" or "mean" over the critic ensemble for actor losses.
        grad_clip: max grad norm per optimizer (None: no clipping).
        phase: "warmup" or "online" (settable later with :meth:`set_phase`).
        max_updates: stop training after this many updates (None: never by itself).
        log_every: log scalars every this many updates.
        refine_enabled: False switches the refinement actor off (single-actor ablation).
        q_bounds: (lo, hi) range of the discounted return; TD targets are clipped to it (None: off).
        actor_ema: rate of an exponential moving average of the primary actor's weights (None:
            off). When on, the robot acts, is evaluated and is saved with the averaged weights
            (:meth:`deployed_weights`, :meth:`deploy_state_dict`); the learner keeps training the
            raw ones (critic targets use them too); the refinement actor is trained against the
            averaged weights it steers at deployment. Not in the paper.
        distill_weight: weight of the anchored head's ODE-distillation term inside the BC term
            (``losses.ode_distillation_loss``; the plain head ignores it).
        refine_phases: phases in which the refinement actor trains (the paper: online only; a warm-up
            dataset with corrections can add "warmup").
    """

    def __init__(
        self,
        policy: dict,
        critic_hidden: Sequence[int] = (256, 256),
        critic_feature_dim: int = 64,
        critic_obs_feature_dim: int = 256,
        critic_ensemble: int = 2,
        gamma: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        refine_lr: float = 3e-4,
        lambdas: dict | None = None,
        eta: Sequence[float] = (1.0, 0.1, 0.1),
        bc_form: str = "both",
        calql_alpha: float = 5.0,
        calql_temperature: float = 1.0,
        calql_num_actions: int = 4,
        task_weighting: bool = True,
        eps_c: float = 0.1,
        eps_min: float = 0.8,
        eps_max: float = 1.2,
        actor_q_reduce: str = "min",
        grad_clip: float | None = 10.0,
        phase: str = "warmup",
        max_updates: int | None = None,
        log_every: int = 50,
        refine_enabled: bool = True,
        q_bounds: Sequence[float] | None = None,
        actor_ema: float | None = 0.002,
        distill_weight: float = 1.0,
        refine_phases: Sequence[str] = ("online",),
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        if bc_form not in ("consistency", "literal", "both"):
            raise ValueError(f"bc_form must be 'consistency', 'literal' or 'both', got {bc_form!r}")
        if q_bounds is not None and (len(q_bounds) != 2 or not q_bounds[0] < q_bounds[1]):
            raise ValueError(f"q_bounds must be (lo, hi) with lo < hi, got {q_bounds!r}")
        if actor_ema is not None and not 0.0 < float(actor_ema) <= 1.0:
            raise ValueError(f"actor_ema must be in (0, 1] or None, got {actor_ema!r}")
        if not set(refine_phases) <= set(PHASES):
            raise ValueError(f"refine_phases must be a subset of {PHASES}, got {list(refine_phases)!r}")
        if actor_q_reduce not in ("min", "mean"):
            raise ValueError(f"actor_q_reduce must be 'min' or 'mean', got {actor_q_reduce!r}")
        self.policy = DualActorPolicy(**policy)
        self.tasks = list(self.policy.tasks)
        self.task_slugs = [slug(t) for t in self.tasks]
        cfg = self.policy.config
        self.critics = nn.ModuleList(
            TaskCritic(
                self.policy.make_obs_encoder(critic_obs_feature_dim),  # StateEncoder, or ResNet + state
                cfg.proprio_dim,
                cfg.action_dim,
                feature_dim=critic_feature_dim,
                hidden=critic_hidden,
                ensemble=critic_ensemble,
            )
            for _ in self.tasks
        )
        self.target_critics = nn.ModuleList(make_target(c) for c in self.critics)
        self.primary_ema = None
        if actor_ema is not None:
            self.primary_ema = copy.deepcopy(self.policy.primary).requires_grad_(False)
        self.lambdas = {k: tuple(v) for k, v in (lambdas or {"warmup": (1.0, 0.1), "online": (0.5, 0.5)}).items()}
        self.phase = "warmup"
        self.set_phase(phase)
        self.num_updates = 0
        self.last_logs: dict[str, float] = {}

    # ------------------------------------------------------------------------- switches
    def set_phase(self, phase: str) -> None:
        """Warm-up -> online changes only loss switches here (and the DataModule's sources)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if phase not in self.lambdas:
            raise ValueError(f"no lambdas for phase {phase!r}: {self.lambdas}")
        self.phase = phase

    @property
    def critic_loss_kind(self) -> str:
        """Cal-QL in the warm-up, plain Bellman TD online (the paper)."""
        return "calql" if self.phase == "warmup" else "bellman"

    def configure_optimizers(self):
        hp = self.hparams
        # fused Adam: one kernel per optimizer instead of ~10 small ops per parameter tensor
        critic_opts = [torch.optim.Adam(c.parameters(), lr=hp.critic_lr, fused=True) for c in self.critics]
        actor_opt = torch.optim.Adam(self.policy.primary.parameters(), lr=hp.actor_lr, fused=True)
        refine_opt = torch.optim.Adam(self.policy.refinement.parameters(), lr=hp.refine_lr, fused=True)
        return [*critic_opts, actor_opt, refine_opt]

    # -------------------------------------------------------------------------- helpers
    def _obs(self, b: dict, next_obs: bool = False):
        """The critics' / refinement actor's observation input: ``obs`` (state encoder) or
        ``{"state": obs, "images": {camera: obs_images[:, c]}}`` (image encoder)."""
        return self.policy.encoder_input_from_batch(b, next_obs)

    def _reduce(self, q: torch.Tensor) -> torch.Tensor:
        return q.min(0).values if self.hparams.actor_q_reduce == "min" else q.mean(0)

    @staticmethod
    def _grad_norm(params) -> torch.Tensor | None:
        grads = [p.grad for p in params if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else None

    def _clip_and_step(self, opt) -> None:
        if self.hparams.grad_clip is not None:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
        opt.step()

    def _step(self, opt, loss: torch.Tensor, params, want_norm: bool) -> torch.Tensor | None:
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        norm = self._grad_norm(params) if want_norm else None
        self._clip_and_step(opt)
        return norm

    def _critic_updates(self, tasks: list[dict], opts: list, want_log: bool, logs: dict) -> None:
        """Every task critic on its own task slice (Alg. 1 lines 5-8 / 15-18).

        The task losses share no parameter (targets and policy actions are computed without
        gradient), so one backward of their sum gives each critic exactly its own gradient;
        each critic keeps its own optimizer, clipping and step.
        """
        hp = self.hparams
        primary = self.policy.primary
        sizes = [b[K.H].shape[0] for b in tasks]
        calql = self.critic_loss_kind == "calql"
        n = hp.calql_num_actions
        with torch.no_grad():
            nh = torch.cat([b[K.NEXT_H] for b in tasks])
            npr = torch.cat([b[K.NEXT_PROPRIO] for b in tasks])
            if calql:  # one policy call: next actions, n actions at s, n actions at s'
                h = torch.cat([b[K.H] for b in tasks])
                pr = torch.cat([b[K.PROPRIO] for b in tasks])
                tot = h.shape[0]
                all_a = primary(
                    torch.cat([nh, h.repeat_interleave(n, 0), nh.repeat_interleave(n, 0)]),
                    torch.cat([npr, pr.repeat_interleave(n, 0), npr.repeat_interleave(n, 0)]),
                )
                next_a = all_a[:tot].split(sizes)
                pi_s = all_a[tot : tot * (1 + n)].view(tot, n, -1).split(sizes)
                pi_ns = all_a[tot * (1 + n) :].view(tot, n, -1).split(sizes)
            else:
                next_a = primary(nh, npr).split(sizes)
        total = 0.0
        per_task = []
        for i, b in enumerate(tasks):
            critic = self.critics[i]
            with torch.no_grad():
                q_next = self.target_critics[i](self._obs(b, next_obs=True), b[K.NEXT_PROPRIO], next_a[i])
                q_target = losses.td_target(b[K.REWARD], b[K.DONE], q_next, hp.gamma, hp.q_bounds)
            feat = critic.encode(self._obs(b))
            if calql:
                act = b[K.ACTION]
                rand = torch.rand(act.shape[0], n, act.shape[1], device=act.device, dtype=act.dtype) * 2 - 1
                qs = critic.q(feat, b[K.PROPRIO], torch.cat([act[:, None], rand, pi_s[i], pi_ns[i]], 1))
                q_data = qs[..., 0]
                loss, td, reg = losses.calql_loss(
                    q_data, q_target, qs[..., 1 : 1 + n], qs[..., 1 + n : 1 + 2 * n], qs[..., 1 + 2 * n :],
                    b[K.MC_RETURN], hp.calql_alpha, hp.calql_temperature,
                )
            else:
                q_data = critic.q(feat, b[K.PROPRIO], b[K.ACTION])
                loss = losses.bellman_loss(q_data, q_target)
                td = reg = None
            total = total + loss
            per_task.append((loss, q_data, q_target, td, reg))
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.manual_backward(total)
        for i, opt in enumerate(opts):
            norm = self._grad_norm(self.critics[i].parameters()) if want_log else None
            self._clip_and_step(opt)
            if want_log:
                s = self.task_slugs[i]
                loss, q_data, q_target, td, reg = per_task[i]
                logs[f"loss/critic_{s}"] = loss.detach()
                logs[f"q/{s}"] = q_data.detach().mean()
                logs[f"q_target/{s}"] = q_target.mean()
                logs[f"grad_norm/critic_{s}"] = norm
                if reg is not None:
                    logs[f"loss/calql_reg_{s}"] = reg.detach()
                    logs[f"loss/td_{s}"] = td.detach()

    def _actor_update(self, tasks: list[dict], opt, want_log: bool, logs: dict) -> None:
        """Primary actor on all task slices: Eq. 6 with the Eq. 15/16 weighted Q term."""
        hp = self.hparams
        primary = self.policy.primary
        sizes = [b[K.H].shape[0] for b in tasks]
        h = torch.cat([b[K.H] for b in tasks])
        proprio = torch.cat([b[K.PROPRIO] for b in tasks])
        action = torch.cat([b[K.ACTION] for b in tasks])
        with self.toggled_optimizer(opt):
            if primary.head == "anchored":
                t = primary.anchored_terms(action, h, proprio, latent_range=self.policy.refinement.mean_bound)
                bc_den = losses.bc_consistency_loss(t["pred"], t["target"], t["sigma"], primary.scalings.sigma_data)
                bc_mean = losses.bc_literal_loss(t["mean"], action)
                distill = losses.ode_distillation_loss(t["distill_pred"], t["distill_target"])
                bc = bc_den + bc_mean + hp.distill_weight * distill
                a_all = t["mean"].clamp(-1.0, 1.0)  # the Q term acts on primary mode's action a(0) = M(h)
            elif hp.bc_form in ("consistency", "both"):
                pred, sigma, a_all = primary.noised_prediction(action, h, proprio, with_action=True)
                bc = losses.bc_consistency_loss(pred, action, sigma, primary.scalings.sigma_data)
                if hp.bc_form == "both":
                    bc = bc + losses.bc_literal_loss(a_all, action)
            else:
                a_all = primary(h, proprio)
                bc = losses.bc_literal_loss(a_all, action)
            a_pi = a_all.split(sizes)
            q_pi = [self._reduce(self.critics[i](self._obs(b), b[K.PROPRIO], a_pi[i])) for i, b in enumerate(tasks)]
            q_means = torch.stack([q.mean() for q in q_pi]).detach()
            eps = (
                losses.task_weights(q_means, hp.eps_c, hp.eps_min, hp.eps_max)
                if hp.task_weighting
                else torch.ones_like(q_means)
            )
            q_loss = losses.actor_q_loss(q_pi, eps)
            lam1, lam2 = self.lambdas[self.phase]
            loss = losses.actor_loss(bc, q_loss, lam1, lam2)
            norm = self._step(opt, loss, primary.parameters(), want_log)
        if want_log:
            logs.update({"loss/actor": loss.detach(), "loss/actor_bc": bc.detach(), "loss/actor_q": q_loss.detach()})
            logs["grad_norm/actor"] = norm
            logs["bc/action_mse"] = (a_all.detach() - action).pow(2).mean()
            if primary.head == "anchored":
                logs.update({"loss/actor_denoise": bc_den.detach(), "loss/actor_mean": bc_mean.detach(),
                             "loss/actor_distill": distill.detach()})
            for i, s in enumerate(self.task_slugs):
                logs[f"eps/{s}"] = eps[i]
                logs[f"q_pi/{s}"] = q_means[i]

    def _refine_update(self, b: dict, opt, want_log: bool, logs: dict) -> None:
        """Refinement actor on the talk-and-tweak batch: Eq. 8-11 (only phi is stepped)."""
        hp = self.hparams
        primary, refinement = self.deployed_primary, self.policy.refinement
        h, obs, proprio, action = b[K.H], self._obs(b), b[K.PROPRIO], b[K.ACTION]
        bsz = h.shape[0]
        with self.toggled_optimizer(opt):
            feat = refinement.encode_obs(obs)
            null = torch.full_like(b[K.COMMAND], self.policy.null_command_id)
            mu_both = refinement.from_features(torch.cat([feat, feat]), torch.cat([b[K.COMMAND], null]))
            z, z0 = torch.randn_like(action), torch.randn_like(action)
            a_both = primary(torch.cat([h, h]), torch.cat([proprio, proprio]), noise_mean=mu_both,
                             noise=torch.cat([z, z0]))
            mu, a_ref, a_null = mu_both[:bsz], a_both[:bsz], a_both[bsz:]
            bc = losses.refine_bc_loss(a_ref, action)  # Eq. 8
            task_ids = b[K.TASK]
            q = torch.zeros(bsz, device=h.device, dtype=h.dtype)
            for i in torch.unique(task_ids).tolist():  # each row scored by its own task's critic
                rows = task_ids == i
                q_i = self.critics[i](select_rows(obs, rows), proprio[rows], a_ref[rows])
                q = q.index_put((rows,), self._reduce(q_i))
            q_loss = losses.refine_q_loss(q)  # Eq. 9
            with torch.no_grad():
                a_base = primary(h, proprio, noise=z0)
            reg = losses.refine_reg_loss(a_null, a_base)  # Eq. 10, same z for both terms
            loss = losses.refine_loss(bc, q_loss, reg, hp.eta)  # Eq. 11
            norm = self._step(opt, loss, refinement.parameters(), want_log)
        if want_log:
            logs.update(
                {
                    "loss/refine": loss.detach(), "loss/refine_bc": bc.detach(), "loss/refine_q": q_loss.detach(),
                    "loss/refine_reg": reg.detach(), "grad_norm/refine": norm,
                    "refine/mu_abs": mu.detach().abs().mean(),
                }
            )

    def _check_task_slices(self, tasks: list[dict]) -> None:
        """The batch's task slices are the module's tasks, in order (checked on the first batch, so a data /
        module mismatch fails at start-up with both task lists, not as a shape error later)."""
        if len(tasks) != len(self.tasks):
            raise ValueError(f"the data has {len(tasks)} task(s) per batch but the module was built for "
                             f"{len(self.tasks)}: {self.tasks}; build the buffers / dataset with the module's tasks")
        for i, b in enumerate(tasks):
            ids = b.get(K.TASK)
            if ids is not None and ids.numel() and not bool((ids == i).all()):
                raise ValueError(f"task slice {i} holds rows of task id(s) {sorted(set(ids.tolist()))}, but the module's "
                                 f"task {i} is {self.tasks[i]!r}: the buffers' task order differs from the module's {self.tasks}")

    # ---------------------------------------------------------------------------- update
    def training_step(self, batch: dict, batch_idx: int) -> None:
        tasks: list[dict] = batch[K.TASKS]
        if self.num_updates == 0 or len(tasks) != len(self.tasks):
            self._check_task_slices(tasks)
        opts = self.optimizers()
        n = len(self.tasks)
        critic_opts, actor_opt, refine_opt = opts[:n], opts[n], opts[n + 1]
        want_log = self.num_updates % self.hparams.log_every == 0
        self.num_updates += 1
        logs: dict[str, Any] = {}

        self._critic_updates(tasks, critic_opts, want_log, logs)
        self._actor_update(tasks, actor_opt, want_log, logs)
        tt = batch.get(K.TALK_TWEAK)
        if tt is not None and self.hparams.refine_enabled and self.phase in self.hparams.refine_phases:
            self._refine_update(tt, refine_opt, want_log, logs)
        for c, t in zip(self.critics, self.target_critics):
            polyak_update(t, c, self.hparams.tau)
        if self.primary_ema is not None:
            polyak_update(self.primary_ema, self.policy.primary, float(self.hparams.actor_ema))

        if want_log:
            logs["phase_online"] = float(self.phase == "online")
            self.last_logs = {k: float(v) for k, v in logs.items() if v is not None}
            if self.logger is not None:
                self.logger.log_metrics(self.last_logs, step=self.num_updates)
        if self.hparams.max_updates is not None and self.num_updates >= self.hparams.max_updates:
            self.trainer.should_stop = True

    # ---------------------------------------------------------------------------- deploy
    @property
    def deployed_primary(self) -> nn.Module:
        """The primary actor the robot acts with: the EMA copy when ``actor_ema`` is on, else the
        trained one. The refinement actor learns to steer this one (Eq. 8-10)."""
        return self.primary_ema if self.primary_ema is not None else self.policy.primary

    def deploy_state_dict(self) -> dict[str, torch.Tensor]:
        """What the robot runs: ``policy.state_dict_to_save()`` with the primary actor's EMA
        weights when ``actor_ema`` is on."""
        sd = self.policy.state_dict_to_save()
        if self.primary_ema is not None:
            sd.update({f"primary.{k}": v for k, v in self.primary_ema.state_dict().items()})
        return sd

    @contextlib.contextmanager
    def deployed_weights(self) -> Iterator[None]:
        """Within the block ``self.policy`` holds the deployed (EMA) primary weights, e.g. to
        evaluate or save it; the training weights are restored afterwards. No-op without EMA."""
        if self.primary_ema is None:
            yield
            return
        raw = copy.deepcopy(self.policy.primary.state_dict())
        self.policy.primary.load_state_dict(self.primary_ema.state_dict())
        try:
            yield
        finally:
            self.policy.primary.load_state_dict(raw)

    # ------------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dual_actor"] = {"num_updates": self.num_updates, "phase": self.phase}
        sd = checkpoint.get("state_dict", {})
        for k in self.policy.frozen_state_keys():  # the frozen backbone is rebuilt from its config
            sd.pop(f"policy.{k}", None)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        sd = checkpoint.get("state_dict")
        if sd is not None:  # strict loading: the frozen backbone's entries come from the rebuilt one
            own = self.state_dict()
            for k in self.policy.frozen_state_keys():
                sd.setdefault(f"policy.{k}", own[f"policy.{k}"])
            if self.primary_ema is not None and not any(k.startswith("primary_ema.") for k in sd):
                # a checkpoint written without EMA (e.g. a finished warm-up): start the average there
                for k in self.primary_ema.state_dict():
                    sd[f"primary_ema.{k}"] = sd[f"policy.primary.{k}"].clone()
        state = checkpoint.get("dual_actor", {})
        self.num_updates = int(state.get("num_updates", 0))
        self.set_phase(state.get("phase", self.phase))
