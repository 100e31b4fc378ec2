"""DualActorModule: the learner (primary actor, refinement actor, per-task critics).

Manual optimisation, the Lightning way: one optimizer for the task critics (stacked as one
ensemble; Adam is elementwise, so this equals one Adam per critic, and each critic's gradient is
clipped on its own), one for the primary actor, one for the refinement actor; each update inside
``toggled_optimizer`` so a loss can only reach the parameters its optimizer owns. One ``training_step`` is one learner update,
written in CleanRL's order: targets under ``no_grad``, critic losses, actor loss, refinement
loss, Polyak. Warm-up and online differ only in loss switches (Cal-QL vs Bellman; lambda) and
in what the DataModule feeds (see ``dual_actor/data``).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from torch import nn

from dual_actor import constants as K
from dual_actor import losses
from dual_actor.nets.critic import TaskCritics, make_target, polyak_update
from dual_actor.nets.common import select_rows
from dual_actor.policy import DualActorPolicy
from dual_actor.utils import slug  # noqa: F401  (re-exported)

PHASES = ("warmup", "online")
CRITICS = ("per_task", "shared", "none")
BC_ROWS = ("all", "people", "successes")
REFINE_OBJECTIVES = ("talk_tweak", "dsrl")


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

    The baselines of the paper's Table I are switches of this one learner (``conf/algo/*.yaml``,
    docs/algorithm.md "Baselines"):
        critic: "per_task" (one critic per task, ours), "shared" (one critic for all tasks, the task a one-hot
            input appended to its proprio: ``algo=conrft_flat``) or "none" (no critic and no Q term: supervised
            learning only, ``algo=hg_dagger``). A shared critic takes one pooled batch slice or pools the task
            slices itself.
        bc_rows: the rows the BC term imitates: "all" (Eq. 6), "people" (rows from the demo buffers and
            intervened steps, i.e. actions a person gave: HG-DAgger's aggregated dataset) or "successes" (those
            and the rollout rows with a positive return-to-go: with a sparse 0/1 success reward, the steps of
            episodes that reached success; the bench's default, docs/algorithm.md "BC rows online").
        actor_phases, critic_phases: the phases in which the primary actor / the critics are trained
            (``algo=dsrl``: warm-up only, both frozen online).
        refine_objective: "talk_tweak" (Eq. 8-11 on the talk-and-tweak buffer, ours) or "dsrl" (DSRL: the
            refinement actor with the null command is a latent-noise policy trained to maximise the frozen
            critics' Q of the frozen primary's action on the task rows; no BC, no regulariser).
        refine_target: the action Eq. 8 pulls a(mu(s, c)) to on a talk-and-tweak row: "absolute" (the executed
            action, Eq. 8 as printed) or "residual" (the deployed primary's action now plus the row's correction,
            executed - proposed when it was recorded; rows without a known proposal keep the executed action).
            The primary imitates the corrections too, so on the rows it has learned an absolute target says
            nothing about the command's direction; a residual one keeps it (docs/algorithm.md "Residual target").
        refine_subcommands: probability in [0, 1] that a talk-and-tweak row whose sentence names an axis also
            trains a copy as one of those axes' single-axis commands (:meth:`_subcommand_copies`; docs/algorithm.md
            "Sub-command copies"). 0: Eq. 8 as printed.
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
        critic: str = "per_task",
        bc_rows: str = "successes",
        actor_phases: Sequence[str] = PHASES,
        critic_phases: Sequence[str] = PHASES,
        refine_objective: str = "talk_tweak",
        refine_subcommands: float = 0.0,
        refine_target: str = "absolute",
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
        for name, phases in (("refine_phases", refine_phases), ("actor_phases", actor_phases),
                             ("critic_phases", critic_phases)):
            if not set(phases) <= set(PHASES):
                raise ValueError(f"{name} must be a subset of {PHASES}, got {list(phases)!r}")
        for name, value, allowed in (("critic", critic, CRITICS), ("bc_rows", bc_rows, BC_ROWS),
                                     ("refine_objective", refine_objective, REFINE_OBJECTIVES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if task_weighting and critic != "per_task":
            raise ValueError(f"task_weighting (Eq. 16) weighs per-task critics' Q; critic={critic!r} has none: "
                             f"set task_weighting=false")
        if refine_objective == "dsrl" and critic == "none":
            raise ValueError("refine_objective='dsrl' maximises a critic's Q: it needs critic 'per_task' or 'shared'")
        if refine_target not in ("absolute", "residual"):
            raise ValueError(f"refine_target must be 'absolute' or 'residual', got {refine_target!r}")
        if not 0.0 <= float(refine_subcommands) <= 1.0:
            raise ValueError(f"refine_subcommands is a probability in [0, 1], got {refine_subcommands!r}")
        if actor_q_reduce not in ("min", "mean"):
            raise ValueError(f"actor_q_reduce must be 'min' or 'mean', got {actor_q_reduce!r}")
        self.policy = DualActorPolicy(**policy)
        self.tasks = list(self.policy.tasks)
        self.task_slugs = [slug(t) for t in self.tasks]
        cfg = self.policy.config
        obs_encoder = None if not self.policy.uses_images else (  # ResNet + state, one per task
            lambda: self.policy.make_obs_encoder(critic_obs_feature_dim, share_frozen_trunk=True))
        self.critics = self.target_critics = None
        if critic != "none":  # shared: one critic, the task as a one-hot input beside proprio
            self.critics = TaskCritics(
                len(self.tasks) if critic == "per_task" else 1, cfg["obs_dim"],
                cfg["proprio_dim"] + (len(self.tasks) if critic == "shared" else 0), cfg["action_dim"],
                obs_feature_dim=critic_obs_feature_dim, feature_dim=critic_feature_dim, hidden=critic_hidden,
                ensemble=critic_ensemble, make_obs_encoder=obs_encoder,
            )
            self.target_critics = make_target(self.critics, shared=self._shared_trunks())
        self.critic_slugs = self.task_slugs if critic == "per_task" else ["all"]  # the critics' log names
        self.primary_ema = None
        if actor_ema is not None:
            self.primary_ema = copy.deepcopy(self.policy.primary).requires_grad_(False)
        self.lambdas = {k: tuple(v) for k, v in (lambdas or {"warmup": (1.0, 0.1), "online": (0.5, 0.5)}).items()}
        self.phase = "warmup"
        self.set_phase(phase)
        self.num_updates = 0
        self.last_logs: dict[str, float] = {}
        self._subcommand_ids = self._subcommand_table() if refine_subcommands > 0 else None

    # ------------------------------------------------------------------------- switches
    def set_phase(self, phase: str) -> None:
        """Warm-up -> online changes only loss switches here (and the DataModule's sources)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if phase not in self.lambdas:
            raise ValueError(f"no lambdas for phase {phase!r}: {self.lambdas}")
        self.phase = phase

    def _shared_trunks(self) -> list[nn.Module]:
        """The frozen image trunk(s) the refinement actor, critics and targets share (none otherwise)."""
        if not self.policy.frozen_image_trunk:
            return []
        enc = self.policy.refinement.obs_encoder
        return [enc.trunk] if enc.shared else [enc.trunks]

    @property
    def critic_loss_kind(self) -> str:
        """Cal-QL in the warm-up, plain Bellman TD online (the paper)."""
        return "calql" if self.phase == "warmup" else "bellman"

    def configure_optimizers(self):
        hp = self.hparams
        # fused Adam: one kernel per optimizer instead of ~10 small ops per parameter tensor
        def trained(m):  # a frozen trunk has no optimizer state
            return [p for p in m.parameters() if p.requires_grad]

        actor_opt = torch.optim.Adam(trained(self.policy.primary), lr=hp.actor_lr, fused=True)
        refine_opt = torch.optim.Adam(trained(self.policy.refinement), lr=hp.refine_lr, fused=True)
        if self.critics is None:
            return [actor_opt, refine_opt]
        critic_opt = torch.optim.Adam(trained(self.critics), lr=hp.critic_lr, fused=True)
        return [critic_opt, actor_opt, refine_opt]

    # -------------------------------------------------------------------------- helpers
    def _obs(self, b: dict, next_obs: bool = False):
        """The critics' / refinement actor's observation input, for a batch (B, ...) or the task-stacked
        batch (N, b, ...): ``obs`` (state encoder) or ``{"state": obs, "images": {camera: the camera's
        obs_images}}`` (image encoder; with the frozen shared trunk also ``"features"``, computed once per
        batch row: :meth:`_trunk_features`)."""
        obs = self.policy.encoder_input_from_batch(b, next_obs)
        if self.policy.frozen_image_trunk:
            obs["features"] = self._trunk_features(b, next_obs, obs["images"])
        return obs

    def _trunk_features(self, b: dict, next_obs: bool, images: dict) -> list[torch.Tensor]:
        """The frozen trunk's features of ``images`` (per camera, rows in the batch's layout: (B, ...) or task-
        stacked (N, b, ...)), computed on the first request and kept in the batch dict ``b`` for every later
        consumer of the same update (critics, targets, actor's Q, refinement actor)."""
        key = "next_obs_features" if next_obs else "obs_features"
        if key not in b:
            enc = self.policy.refinement.obs_encoder
            lead = next(iter(images.values())).shape[:-3]  # (B,) or (N, b)
            flat = {c: x.reshape(-1, *x.shape[-3:]) for c, x in images.items()}
            b[key] = [f.view(*lead, *f.shape[1:]) for f in enc.image_features({"images": flat})]
        return b[key]

    def _critic_proprio(self, proprio: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """The critics' proprio input: ``proprio`` itself, or with a shared critic the task's one-hot beside it."""
        if self.hparams.critic != "shared":
            return proprio
        onehot = torch.nn.functional.one_hot(task_ids.long(), len(self.tasks)).to(proprio.dtype)
        return torch.cat([proprio, onehot], -1)

    def _reduce(self, q: torch.Tensor) -> torch.Tensor:
        return q.min(0).values if self.hparams.actor_q_reduce == "min" else q.mean(0)

    @staticmethod
    def _grad_norm(params) -> torch.Tensor | None:
        grads = [p.grad for p in params if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else None

    def _step(self, opt, loss: torch.Tensor, params, want_norm: bool) -> torch.Tensor | None:
        """Backward, clip (``torch.nn.utils.clip_grad_norm_``, here rather than through Lightning so that
        fused Adam works under ``bf16-mixed``), step. Returns the gradient norm before clipping when asked."""
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        params = list(params)
        if self.hparams.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.hparams.grad_clip)
        else:
            norm = self._grad_norm(params) if want_norm else None
        opt.step()
        return norm

    def _critic_update(self, s: dict, opt, want_log: bool, logs: dict) -> None:
        """Every task critic on its own task slice (Alg. 1 lines 5-8 / 15-18), all N at once.

        ``s``: the task slices stacked, every entry (N, b, ...). The task losses share no parameter
        (targets and policy actions are computed without gradient), so one backward of their sum gives each
        critic exactly its own gradient; each critic's gradient is clipped on its own, then one Adam step
        (elementwise: the same as one Adam per critic).
        """
        hp = self.hparams
        primary = self.policy.primary
        t, b = s[K.H].shape[:2]
        flat = lambda x: x.reshape(t * b, *x.shape[2:])  # noqa: E731  (N, b, .) -> (N b, .)
        stacked = lambda x: x.view(t, b, *x.shape[1:])  # noqa: E731
        calql = self.critic_loss_kind == "calql"
        n = hp.calql_num_actions
        copies = 1
        with torch.no_grad():
            nh, npr = flat(s[K.NEXT_H]), flat(s[K.NEXT_PROPRIO])
            if calql and primary.deterministic:  # n samples of pi are one action n times: evaluate it once
                tot = nh.shape[0]
                all_a = primary(torch.cat([nh, flat(s[K.H])]), torch.cat([npr, flat(s[K.PROPRIO])]))
                next_a = stacked(all_a[:tot])
                pi_s, pi_ns, copies = stacked(all_a[tot:])[:, :, None], next_a[:, :, None], n
            elif calql:  # one policy call: next actions, n actions at s, n actions at s'
                h, pr = flat(s[K.H]), flat(s[K.PROPRIO])
                tot = h.shape[0]
                all_a = primary(
                    torch.cat([nh, h.repeat_interleave(n, 0), nh.repeat_interleave(n, 0)]),
                    torch.cat([npr, pr.repeat_interleave(n, 0), npr.repeat_interleave(n, 0)]),
                )
                next_a = stacked(all_a[:tot])
                pi_s = all_a[tot : tot * (1 + n)].view(t, b, n, -1)
                pi_ns = all_a[tot * (1 + n) :].view(t, b, n, -1)
            else:
                next_a = stacked(primary(nh, npr))
            q_next = self.target_critics(self._obs(s, next_obs=True), self._critic_proprio(s[K.NEXT_PROPRIO], s[K.TASK]),
                                         next_a)  # (N, E, b)
            q_target = losses.td_target(s[K.REWARD], s[K.DONE], q_next, hp.gamma, hp.q_bounds)  # (N, b)
        critics = self.critics
        feat = critics.encode(self._obs(s))
        proprio = self._critic_proprio(s[K.PROPRIO], s[K.TASK])
        if calql:
            act = s[K.ACTION]
            rand = torch.rand(t, b, n, act.shape[-1], device=act.device, dtype=act.dtype) * 2 - 1
            m = pi_s.shape[2]
            qs = critics.q(feat, proprio, torch.cat([act[:, :, None], rand, pi_s, pi_ns], 2))  # (N, E, b, .)
            q_data = qs[..., 0]
            loss, td, reg = losses.calql_loss(
                q_data, q_target, qs[..., 1 : 1 + n], qs[..., 1 + n : 1 + n + m], qs[..., 1 + n + m :],
                s[K.MC_RETURN], hp.calql_alpha, hp.calql_temperature, copies,
            )  # each (N,)
        else:
            q_data = critics.q(feat, proprio, s[K.ACTION])
            loss = losses.bellman_loss(q_data, q_target)
            td = reg = None
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss.sum())
        if hp.grad_clip is not None:
            norms = critics.clip_task_grads(hp.grad_clip)
        else:
            norms = critics.task_grad_norms() if want_log else None
        opt.step()
        if want_log:
            q_mean, qt_mean = q_data.detach().mean((1, 2)), q_target.mean(1)
            for i, sl in enumerate(self.critic_slugs):
                logs[f"loss/critic_{sl}"] = loss[i].detach()
                logs[f"q/{sl}"] = q_mean[i]
                logs[f"q_target/{sl}"] = qt_mean[i]
                logs[f"grad_norm/critic_{sl}"] = norms[i]
                if reg is not None:
                    logs[f"loss/calql_reg_{sl}"] = reg[i].detach()
                    logs[f"loss/td_{sl}"] = td[i].detach()

    def _bc_rows(self, s: dict) -> torch.Tensor | slice:
        """The rows (flattened) the BC term imitates: every row; with ``bc_rows="people"`` the rows sampled from
        a demo buffer (the sampler marks ``from_demos``) and the intervened steps; with ``"successes"`` also the
        rows whose Monte-Carlo return-to-go is positive (rollout steps of episodes that reached success)."""
        mode = self.hparams.bc_rows
        if mode == "all":
            return slice(None)
        if K.FROM_DEMOS not in s:
            raise KeyError(f"bc_rows={mode!r} needs the sampler's {K.FROM_DEMOS!r} mark on every batch row")
        rows = s[K.FROM_DEMOS].bool() | s[K.INTERVENTION].bool()
        if mode == "successes":
            rows = rows | (s[K.MC_RETURN] > 0)
        return rows.reshape(-1)

    def _actor_update(self, s: dict, opt, want_log: bool, logs: dict) -> None:
        """Primary actor on all task slices: Eq. 6 with the Eq. 15/16 weighted Q term (no Q term without
        critics). ``s``: the task slices stacked (N, b, ...)."""
        hp = self.hparams
        primary = self.policy.primary
        t, b = s[K.H].shape[:2]
        flat = lambda x: x.reshape(t * b, *x.shape[2:])  # noqa: E731
        h, proprio, action = flat(s[K.H]), flat(s[K.PROPRIO]), flat(s[K.ACTION])
        m = self._bc_rows(s)
        with self.toggled_optimizer(opt):
            if primary.head == "anchored":
                tm = primary.anchored_terms(action, h, proprio, latent_range=self.policy.refinement.mean_bound)
                bc_den = losses.bc_consistency_loss(tm["pred"][m], tm["target"][m], tm["sigma"][m],
                                                    primary.scalings.sigma_data)
                bc_mean = losses.bc_literal_loss(tm["mean"][m], action[m])
                # the distillation's target is the head's own ODE, not a row's action: every row
                distill = losses.ode_distillation_loss(tm["distill_pred"], tm["distill_target"])
                bc = bc_den + bc_mean + hp.distill_weight * distill
                a_all = tm["mean"].clamp(-1.0, 1.0)  # the Q term acts on primary mode's action a(0) = M(h)
            elif hp.bc_form in ("consistency", "both"):
                pred, sigma, a_all = primary.noised_prediction(action, h, proprio, with_action=True)
                bc = losses.bc_consistency_loss(pred[m], action[m], sigma[m], primary.scalings.sigma_data)
                if hp.bc_form == "both":
                    bc = bc + losses.bc_literal_loss(a_all[m], action[m])
            else:
                a_all = primary(h, proprio)
                bc = losses.bc_literal_loss(a_all[m], action[m])
            if self.critics is None:  # supervised learning only
                q_loss = q_means = eps = None
            else:
                q_pi = self._reduce_members(self.critics(
                    self._obs(s), self._critic_proprio(s[K.PROPRIO], s[K.TASK]), a_all.view(t, b, -1)))  # (N, b)
                q_means = q_pi.mean(1).detach()
                eps = (
                    losses.task_weights(q_means, hp.eps_c, hp.eps_min, hp.eps_max)
                    if hp.task_weighting
                    else torch.ones_like(q_means)
                )
                q_loss = losses.actor_q_loss(q_pi, eps)
            lam1, lam2 = self.lambdas[self.phase]
            if q_loss is None:
                q_loss, lam2 = torch.zeros_like(bc), 0.0
            loss = losses.actor_loss(bc, q_loss, lam1, lam2)
            norm = self._step(opt, loss, primary.parameters(), want_log)
        if want_log:
            logs.update({"loss/actor": loss.detach(), "loss/actor_bc": bc.detach(), "loss/actor_q": q_loss.detach()})
            logs["grad_norm/actor"] = norm
            logs["bc/action_mse"] = (a_all.detach() - action).pow(2).mean()
            if primary.head == "anchored":
                logs.update({"loss/actor_denoise": bc_den.detach(), "loss/actor_mean": bc_mean.detach(),
                             "loss/actor_distill": distill.detach()})
            if hp.bc_rows != "all":
                logs["bc/imitated_rows"] = torch.as_tensor(m).float().mean()
            for i, sl in enumerate(self.critic_slugs if eps is not None else []):
                logs[f"eps/{sl}"] = eps[i]
                logs[f"q_pi/{sl}"] = q_means[i]

    def _reduce_members(self, q: torch.Tensor) -> torch.Tensor:
        """(N, E, b) -> (N, b): min or mean over each task critic's members (``actor_q_reduce``)."""
        return q.min(1).values if self.hparams.actor_q_reduce == "min" else q.mean(1)

    def _subcommand_table(self) -> torch.Tensor:
        """(V, 3) long: for each command of the policy's vocabulary, the id of its single-axis sub-command on
        each translational axis it names ("move left and up" -> "move left" on y, "move up" on z), -1 on the
        axes it does not name (``refine_subcommands``)."""
        from data_tools.talk_tweak import parse_command, sentence

        vocab = self.policy.commands
        index = {c: i for i, c in enumerate(vocab)}
        table = torch.full((len(vocab), 3), -1, dtype=torch.long)
        for i, cmd in enumerate(vocab):
            try:
                axes = parse_command(cmd)
            except ValueError as e:
                raise ValueError(f"refine_subcommands needs the default talk-and-tweak words ({e}); "
                                 f"set refine_subcommands=0 for another vocabulary") from None
            for axis, sign in axes:
                single = next((c for c in vocab if parse_command(c) == [(axis, sign)]), None)
                if single is None:
                    raise ValueError(f"refine_subcommands: the vocabulary has no single-axis command for "
                                     f"{cmd!r}'s axis {axis} (sign {sign:+d})")
                table[i, axis] = index[single]
        return table

    def _subcommand_copies(self, command: torch.Tensor, target: torch.Tensor, a_now: torch.Tensor):
        """Sub-command copies of talk-and-tweak rows (``refine_subcommands`` = p): each row whose command names at
        least one axis gets, with probability p, one extra training row: one of those axes' single-axis commands
        (uniformly), with the target ``a_now`` (the deployed primary's action at the row's latent noise, no
        gradient) whose component on that axis is the row's own target's. The row itself is kept as it is. Eq. 13
        labels each axis on its own, so "move left" is what the rule would have said had the operator corrected
        only that axis. Returns (rows: the copied rows' indices, their single-axis command ids, their targets)."""
        sub = self._subcommand_ids.to(command.device)[command]  # (B, 3)
        avail = sub >= 0
        pick = (torch.rand(avail.shape, device=command.device) * avail).argmax(1)  # uniform over named axes
        use = (torch.rand(command.shape, device=command.device) < float(self.hparams.refine_subcommands))
        rows = (use & avail.any(1)).nonzero(as_tuple=True)[0]
        pick = pick[rows]
        copy = a_now[rows].clone()
        n = torch.arange(rows.shape[0], device=command.device)
        copy[n, pick] = target[rows, pick]
        return rows, sub[rows, pick], copy

    def _refine_update(self, b: dict, opt, want_log: bool, logs: dict) -> None:
        """Refinement actor on the talk-and-tweak batch: Eq. 8-11 (only phi is stepped).

        What does not depend on mu is computed once without gradient: the anchored map's offset
        M(h) - f(0, K | h) (shared by Eq. 8/9's and Eq. 10's actions) and Eq. 10's primary-mode action; only
        the two latents' map evaluations f(w, K | h) carry the gradient to phi."""
        hp = self.hparams
        primary, refinement = self.deployed_primary, self.policy.refinement
        h, obs, proprio, action = b[K.H], self._obs(b), b[K.PROPRIO], b[K.ACTION]
        command = b[K.COMMAND]
        bsz = h.shape[0]
        with self.toggled_optimizer(opt):
            feat = refinement.encode_obs(obs)
            z, z0 = torch.randn_like(action), torch.randn_like(action)
            with torch.no_grad():  # Eq. 10's primary-mode action (the same z0) and the map's offset
                offset, a_base = primary.offset_and_action(h, proprio, z0)
                copies = None
                residual = hp.refine_target == "residual" and K.CORRECTION in b
                if self._subcommand_ids is not None or residual:
                    a_z = primary.action_at(primary.temperature * primary.K * z, h, proprio, offset=offset)
                if residual:  # the deployed primary's action at the same noise, moved by the recorded correction
                    correction = b[K.CORRECTION].to(action.dtype)
                    known = ~torch.isnan(correction).any(-1, keepdim=True)
                    action = torch.where(known, (a_z + correction.nan_to_num()).clamp(-1.0, 1.0), action)
                if self._subcommand_ids is not None:
                    copies = self._subcommand_copies(command, action, a_z)
            # Eq. 8/9's rows: the batch, then any sub-command copies (the same state and latent noise z)
            task_ids = b[K.TASK]
            if copies is not None:
                rows, sub_command, sub_target = copies
                idx = torch.cat([torch.arange(bsz, device=h.device), rows])
                feat_c, h_c, proprio_c, z_c = feat[idx], h[idx], proprio[idx], z[idx]
                obs_c, task_ids = select_rows(obs, idx), task_ids[idx]
                offset_c = None if offset is None else offset[idx]
                command, action = torch.cat([command, sub_command]), torch.cat([action, sub_target])
            else:
                feat_c, h_c, proprio_c, z_c, obs_c, offset_c = feat, h, proprio, z, obs, offset
            n = command.shape[0]
            null = torch.full((bsz,), self.policy.null_command_id, device=command.device, dtype=command.dtype)
            mu_both = refinement.from_features(torch.cat([feat_c, feat]), torch.cat([command, null]))
            w_both = mu_both + primary.temperature * primary.K * torch.cat([z_c, z0])
            offset2 = None if offset is None else torch.cat([offset_c, offset])
            a_both = primary.action_at(w_both, torch.cat([h_c, h]), torch.cat([proprio_c, proprio]), offset=offset2)
            mu, a_ref, a_null = mu_both[:n], a_both[:n], a_both[n:]
            bc = losses.refine_bc_loss(a_ref, action)  # Eq. 8
            q = torch.zeros(n, device=h.device, dtype=h.dtype)
            if self.hparams.critic == "shared":
                q = self._reduce(self.critics(obs_c, self._critic_proprio(proprio_c, task_ids), a_ref, task=0)).to(q.dtype)
            elif self.critics is not None:
                for i in torch.unique(task_ids).tolist():  # each row scored by its own task's critic
                    sel = task_ids == i
                    q_i = self.critics(select_rows(obs_c, sel), proprio_c[sel], a_ref[sel], task=i)
                    q = q.index_put((sel,), self._reduce(q_i).to(q.dtype))
            q_loss = losses.refine_q_loss(q)  # Eq. 9 (0 without critics)
            reg = losses.refine_reg_loss(a_null, a_base)  # Eq. 10 on the batch's rows, same z0 for both terms
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
            if copies is not None:  # copies per batch row
                logs["refine/subcommand_rows"] = torch.tensor(copies[0].shape[0] / bsz)

    def _dsrl_update(self, s: dict, opt, want_log: bool, logs: dict) -> None:
        """DSRL (``refine_objective="dsrl"``): the refinement actor with the null command, mu(s, "[null]"), is a
        latent-noise policy; it is trained to maximise the critics' Q of the deployed primary's action at
        w = mu + temperature K z on the task rows ``s`` (N, b, ...) (steering the frozen policy's noise).
        Nothing else is stepped here."""
        primary, refinement = self.deployed_primary, self.policy.refinement
        t, b = s[K.H].shape[:2]
        flat = lambda x: x.reshape(t * b, *x.shape[2:])  # noqa: E731
        h, proprio = flat(s[K.H]), flat(s[K.PROPRIO])
        obs = self._obs(s)
        with self.toggled_optimizer(opt):
            feat = refinement.encode_obs(obs)
            null = torch.full(feat.shape[:-1], self.policy.null_command_id, device=h.device, dtype=torch.long)
            mu = refinement.from_features(feat, null).reshape(t * b, -1)
            z = torch.randn_like(mu)  # the map's M(h) and f(0, K) come with f(w, K) from one batched call
            a = primary.action_at(mu + primary.temperature * primary.K * z, h, proprio)
            q = self._reduce_members(self.critics(obs, self._critic_proprio(s[K.PROPRIO], s[K.TASK]), a.view(t, b, -1)))
            loss = losses.refine_q_loss(q.reshape(-1))
            norm = self._step(opt, loss, refinement.parameters(), want_log)
        if want_log:
            logs.update({"loss/refine": loss.detach(), "loss/refine_q": loss.detach(), "grad_norm/refine": norm,
                         "refine/mu_abs": mu.detach().abs().mean()})

    def _check_task_slices(self, tasks: list[dict]) -> None:
        """The batch's task slices are the module's tasks, in order (checked on the first batch, so a data /
        module mismatch fails at start-up with both task lists, not as a shape error later). A learner without
        per-task critics also takes one pooled slice of all tasks' rows."""
        if len(tasks) == 1 and self.hparams.critic != "per_task":
            return
        if len(tasks) != len(self.tasks):
            raise ValueError(f"the data has {len(tasks)} task(s) per batch but the module was built for "
                             f"{len(self.tasks)}: {self.tasks}; build the buffers / dataset with the module's tasks")
        for i, b in enumerate(tasks):
            ids = b.get(K.TASK)
            if ids is not None and ids.numel() and not bool((ids == i).all()):
                raise ValueError(f"task slice {i} holds rows of task id(s) {sorted(set(ids.tolist()))}, but the module's "
                                 f"task {i} is {self.tasks[i]!r}: the buffers' task order differs from the module's {self.tasks}")

    @staticmethod
    def _stack_tasks(tasks: list[dict]) -> dict:
        """The task slices as one batch, every entry (N, b, ...) (Alg. 1 gives each task b rows)."""
        sizes = {b[K.H].shape[0] for b in tasks}
        if len(sizes) != 1:
            raise ValueError(f"the task slices have different row counts {[b[K.H].shape[0] for b in tasks]}; "
                             f"Alg. 1 samples the same number per task (batch_size divisible by the task count)")
        return {k: torch.stack([b[k] for b in tasks]) for k, v in tasks[0].items() if isinstance(v, torch.Tensor)}

    # ---------------------------------------------------------------------------- update
    def training_step(self, batch: dict, batch_idx: int) -> None:
        tasks: list[dict] = batch[K.TASKS]
        if self.num_updates == 0 or len(tasks) != len(self.tasks):
            self._check_task_slices(tasks)
        hp = self.hparams
        *critic_opt, actor_opt, refine_opt = self.optimizers()
        want_log = self.num_updates % hp.log_every == 0
        self.num_updates += 1
        logs: dict[str, Any] = {}

        s = self._stack_tasks(tasks)
        if hp.critic == "shared" and len(tasks) > 1:  # one critic: the task slices are one group of rows
            s = {k: v.reshape(1, -1, *v.shape[2:]) for k, v in s.items()}
        if self.critics is not None and self.phase in hp.critic_phases:
            self._critic_update(s, critic_opt[0], want_log, logs)
        if self.phase in hp.actor_phases:
            self._actor_update(s, actor_opt, want_log, logs)
        if hp.refine_enabled and self.phase in hp.refine_phases:
            tt = batch.get(K.TALK_TWEAK)
            if hp.refine_objective == "dsrl":
                self._dsrl_update(s, refine_opt, want_log, logs)
            elif tt is not None:
                self._refine_update(dict(tt), refine_opt, want_log, logs)  # a copy: this update's features go in it
        if self.critics is not None:
            polyak_update(self.target_critics, self.critics, hp.tau)
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
