"""DualActorModule: the learner (primary actor, refinement actor, per-task critics) and Algorithm 1's update.

Manual optimisation, the Lightning way: one optimizer for the task critics (stacked as one ensemble; Adam is
elementwise, so this equals one Adam per critic, and each critic's gradient is clipped on its own), one for the
primary actor, one for the refinement actor; each update inside ``toggled_optimizer`` so a loss can only reach
the parameters its optimizer owns. One ``training_step`` is one learner update, in CleanRL's order: critics
(targets under ``no_grad``), primary actor, refinement actor, Polyak. The losses of each update are their own
units (:mod:`dual_actor.updates`); this class owns the nets, the optimizers and the order. Warm-up and online
differ only in loss switches (Cal-QL vs Bellman; lambda) and in what the DataModule feeds (``dual_actor/data``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Any, Iterator, Mapping

import lightning as L
import torch
from torch import nn

from dual_actor import constants as K
from dual_actor.config.algo import PHASES, LearnerConfig
from dual_actor.config.policy import PolicyConfig
from dual_actor.nets.critic import TaskCritics, make_target, polyak_update
from dual_actor.policy import DualActorPolicy
from dual_actor.updates.actor import actor_loss
from dual_actor.updates.critic import critic_loss
from dual_actor.updates.dsrl import latent_actor_loss, latent_critic_loss
from dual_actor.updates.refine import SubcommandCopies, dsrl_loss, refine_loss
from dual_actor.utils import slug


class DualActorModule(L.LightningModule):
    """Args (typed sections, no whole config):
        policy: the deployable policy's :class:`PolicyConfig` (or a mapping of its fields).
        learner: the learner's :class:`LearnerConfig` (an ``AlgoConfig`` is one; a mapping of its fields; None:
            the defaults, which are the default algorithm). Every key's meaning: dual_actor/config/algo.py.
        phase: "warmup" or "online" (settable later with :meth:`set_phase`).
        max_updates: stop training after this many updates (None: never by itself).
        log_every: log scalars every this many updates.

    The baselines of the paper's Table I are switches of this one learner (``learner.critic``, ``bc_rows``,
    ``actor_phases``, ``critic_phases``, ``refine_objective``; conf/algo/*.yaml, docs/algorithm.md "Baselines").
    With ``actor_ema`` on, the robot acts, is evaluated and is saved with the averaged primary weights
    (:meth:`deployed_weights`, :meth:`deploy_state_dict`); the learner keeps training the raw ones (critic
    targets use them too); the refinement actor is trained against the averaged weights it steers.
    """

    def __init__(self, policy: PolicyConfig | Mapping, learner: LearnerConfig | Mapping | None = None, *,
                 phase: str = "warmup", max_updates: int | None = None, log_every: int = 50):
        super().__init__()
        policy = policy if isinstance(policy, PolicyConfig) else PolicyConfig.from_mapping(policy)
        if learner is None:
            learner = LearnerConfig()
        elif isinstance(learner, Mapping):
            learner = LearnerConfig(**learner)
        self.save_hyperparameters({"policy": policy.to_dict(), "learner": dataclasses.asdict(learner),
                                   "phase": phase, "max_updates": max_updates, "log_every": log_every})
        self.automatic_optimization = False
        self.algo = learner
        self.policy = DualActorPolicy(policy)
        self.tasks = list(self.policy.tasks)
        self.task_slugs = [slug(t) for t in self.tasks]
        critic = learner.critic
        obs_encoder = None if not self.policy.uses_images else (  # ResNet + state, one per task
            lambda: self.policy.make_obs_encoder(learner.critic_obs_feature_dim, share_frozen_trunk=True))
        self.critics = self.target_critics = None

        def task_critics() -> TaskCritics:  # Q^A (and published DSRL's Q^W: the same shape, over latents)
            return TaskCritics(
                len(self.tasks) if critic == "per_task" else 1,
                policy.obs_dim + (self.policy.h_dim if self.policy.reads_h else 0),  # image_encoder=h: [h, state]
                policy.proprio_dim + (len(self.tasks) if critic == "shared" else 0), policy.action_dim,
                obs_feature_dim=learner.critic_obs_feature_dim, feature_dim=learner.critic_feature_dim,
                hidden=learner.critic_hidden, ensemble=learner.critic_ensemble, make_obs_encoder=obs_encoder,
            )

        if critic != "none":  # shared: one critic, the task as a one-hot input beside proprio
            self.critics = task_critics()
            self.target_critics = make_target(self.critics, shared=self._shared_trunks())
        self.latent_critics = self.log_alpha = None
        if learner.refine_objective == "dsrl_na":  # published DSRL: Q^W(s, w) and SAC's temperature
            if policy.null_latent != "gaussian":
                raise ValueError("algo.refine_objective=dsrl_na acts with a sampled latent: it needs "
                                 f"algo.null_latent=gaussian, got {policy.null_latent!r}")
            with torch.random.fork_rng(devices=[]):  # the other networks start as they do for algo=dual_actor
                self.latent_critics = task_critics()
            self.log_alpha = nn.Parameter(torch.tensor(float(learner.dsrl_init_alpha)).log())
        self.critic_slugs = self.task_slugs if critic == "per_task" else ["all"]  # the critics' log names
        self.primary_ema = None
        if learner.actor_ema is not None:
            self.primary_ema = copy.deepcopy(self.policy.primary).requires_grad_(False)
        self.lambdas = {"warmup": tuple(learner.lambdas.warmup), "online": tuple(learner.lambdas.online)}
        self.phase = "warmup"
        self.set_phase(phase)
        self.num_updates = 0
        self.last_logs: dict[str, float] = {}
        self.subcommands = (SubcommandCopies(self.policy.commands, learner.refine_subcommands)
                            if learner.refine_subcommands > 0 else None)

    # ------------------------------------------------------------------------- switches
    def set_phase(self, phase: str) -> None:
        """Warm-up -> online changes only loss switches here (and the DataModule's sources)."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
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
        hp = self.algo

        def trained(m):  # a frozen trunk has no optimizer state
            return [p for p in m.parameters() if p.requires_grad]

        # fused Adam: one kernel per optimizer instead of ~10 small ops per parameter tensor
        actor_opt = torch.optim.Adam(trained(self.policy.primary), lr=hp.actor_lr, fused=True)
        refine_opt = torch.optim.Adam(self.refine_parameters(), lr=hp.refine_lr, fused=True)
        if self.critics is None:
            return [actor_opt, refine_opt]
        critic_opt = torch.optim.Adam(trained(self.critics), lr=hp.critic_lr, fused=True)
        if self.latent_critics is not None:  # published DSRL: the latent critics' own optimizer
            latent_opt = torch.optim.Adam(trained(self.latent_critics), lr=hp.critic_lr, fused=True)
            return [critic_opt, latent_opt, actor_opt, refine_opt]
        return [critic_opt, actor_opt, refine_opt]

    def refine_parameters(self) -> list[nn.Parameter]:
        """What the refinement optimizer steps: the refinement actor (a frozen trunk has no optimizer state) and,
        for published DSRL, SAC's temperature."""
        params = [p for p in self.policy.refinement.parameters() if p.requires_grad]
        return params + ([self.log_alpha] if self.log_alpha is not None else [])

    # ------------------------------------------------------------------- what the updates read
    def observation(self, b: dict, next_obs: bool = False):
        """The critics' / refinement actor's observation input, for a batch (B, ...) or the task-stacked
        batch (N, b, ...): ``obs`` (state encoder) or ``{"state": obs, "images": {camera: the camera's
        obs_images}}`` (image encoder; with the frozen shared trunk also ``"features"``, computed once per
        batch row and kept in ``b`` for every later consumer of the same update)."""
        obs = self.policy.encoder_input_from_batch(b, next_obs)
        if self.policy.frozen_image_trunk:
            key = "next_obs_features" if next_obs else "obs_features"
            if key not in b:
                images, enc = obs["images"], self.policy.refinement.obs_encoder
                lead = next(iter(images.values())).shape[:-3]  # (B,) or (N, b)
                flat = {c: x.reshape(-1, *x.shape[-3:]) for c, x in images.items()}
                b[key] = [f.view(*lead, *f.shape[1:]) for f in enc.image_features({"images": flat})]
            obs["features"] = b[key]
        return obs

    def critic_proprio(self, proprio: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """The critics' proprio input: ``proprio`` itself, or with a shared critic the task's one-hot beside it."""
        if self.algo.critic != "shared":
            return proprio
        onehot = torch.nn.functional.one_hot(task_ids.long(), len(self.tasks)).to(proprio.dtype)
        return torch.cat([proprio, onehot], -1)

    def reduce(self, q: torch.Tensor) -> torch.Tensor:
        """(E, ...) -> (...): min or mean over a critic's members (``actor_q_reduce``)."""
        return q.min(0).values if self.algo.actor_q_reduce == "min" else q.mean(0)

    def reduce_members(self, q: torch.Tensor) -> torch.Tensor:
        """(N, E, b) -> (N, b): min or mean over each task critic's members (``actor_q_reduce``)."""
        return q.min(1).values if self.algo.actor_q_reduce == "min" else q.mean(1)

    @property
    def deployed_primary(self) -> nn.Module:
        """The primary actor the robot acts with: the EMA copy when ``actor_ema`` is on, else the
        trained one. The refinement actor learns to steer this one (Eq. 8-10)."""
        return self.primary_ema if self.primary_ema is not None else self.policy.primary

    # ---------------------------------------------------------------------------- updates
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
        if self.algo.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.algo.grad_clip)
        else:
            norm = self._grad_norm(params) if want_norm else None
        opt.step()
        return norm

    def critic_update(self, s: dict, opt, want_log: bool, logs: dict) -> None:
        """Every task critic on its own task slice (``s``: (N, b, ...)); each critic's gradient clipped on its
        own, then one Adam step (elementwise: the same as one Adam per critic)."""
        loss, out = critic_loss(self, s, want_log)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss.sum())
        if self.algo.grad_clip is not None:
            norms = self.critics.clip_task_grads(self.algo.grad_clip)
        else:
            norms = self.critics.task_grad_norms() if want_log else None
        opt.step()
        if want_log:
            logs.update(out)
            logs.update({f"grad_norm/critic_{sl}": norms[i] for i, sl in enumerate(self.critic_slugs)})

    def latent_critic_update(self, s: dict, opt, want_log: bool, logs: dict) -> None:
        """Published DSRL's latent critics, distilled from the task critics (:mod:`dual_actor.updates.dsrl`)."""
        with self.toggled_optimizer(opt):
            loss, out = latent_critic_loss(self, s, want_log)
            norm = self._step(opt, loss.sum(), self.latent_critics.parameters(), want_log)
        if want_log:
            logs.update(out)
            logs["grad_norm/latent_critic"] = norm

    def actor_update(self, s: dict, opt, want_log: bool, logs: dict) -> None:
        """The primary actor on all task slices (Eq. 6, Eq. 15/16); only theta is stepped."""
        with self.toggled_optimizer(opt):
            loss, out = actor_loss(self, s, want_log)
            norm = self._step(opt, loss, self.policy.primary.parameters(), want_log)
        if want_log:
            logs.update(out)
            logs["grad_norm/actor"] = norm

    def refine_update(self, b: dict, opt, want_log: bool, logs: dict, dsrl: bool = False) -> None:
        """The refinement actor on the talk-and-tweak batch (Eq. 8-11), or with ``dsrl`` on the task rows (the
        DSRL baselines: the paper's, or published DSRL-NA's latent policy and temperature); only phi (and the
        temperature) is stepped."""
        loss_fn = refine_loss if not dsrl else latent_actor_loss if self.latent_critics is not None else dsrl_loss
        with self.toggled_optimizer(opt):
            loss, out = loss_fn(self, b, want_log)
            norm = self._step(opt, loss, self.refine_parameters(), want_log)
        if want_log:
            logs.update(out)
            logs["grad_norm/refine"] = norm

    def _check_task_slices(self, tasks: list[dict]) -> None:
        """The batch's task slices are the module's tasks, in order (checked on the first batch, so a data /
        module mismatch fails at start-up with both task lists, not as a shape error later). A learner without
        per-task critics also takes one pooled slice of all tasks' rows."""
        if len(tasks) == 1 and self.algo.critic != "per_task":
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
    def stack_tasks(tasks: list[dict]) -> dict:
        """The task slices as one batch, every entry (N, b, ...) (Alg. 1 gives each task b rows)."""
        sizes = {b[K.H].shape[0] for b in tasks}
        if len(sizes) != 1:
            raise ValueError(f"the task slices have different row counts {[b[K.H].shape[0] for b in tasks]}; "
                             f"Alg. 1 samples the same number per task (batch_size divisible by the task count)")
        return {k: torch.stack([b[k] for b in tasks]) for k, v in tasks[0].items() if isinstance(v, torch.Tensor)}

    def training_step(self, batch: dict, batch_idx: int) -> None:
        """One learner update (Algorithm 1 lines 5-10 / 15-33)."""
        tasks: list[dict] = batch[K.TASKS]
        if self.num_updates == 0 or len(tasks) != len(self.tasks):
            self._check_task_slices(tasks)
        hp = self.algo
        *critic_opt, actor_opt, refine_opt = self.optimizers()
        want_log = self.num_updates % self.hparams.log_every == 0
        self.num_updates += 1
        logs: dict[str, Any] = {}

        s = self.stack_tasks(tasks)
        if hp.critic == "shared" and len(tasks) > 1:  # one critic: the task slices are one group of rows
            s = {k: v.reshape(1, -1, *v.shape[2:]) for k, v in s.items()}
        if self.critics is not None and self.phase in hp.critic_phases:
            self.critic_update(s, critic_opt[0], want_log, logs)
        if self.phase in hp.actor_phases:
            self.actor_update(s, actor_opt, want_log, logs)
        if hp.refine_enabled and self.phase in hp.refine_phases:
            tt = batch.get(K.TALK_TWEAK)
            if hp.refine_objective == "dsrl_na":
                self.latent_critic_update(s, critic_opt[1], want_log, logs)
            if hp.refine_objective in ("dsrl", "dsrl_na"):
                self.refine_update(s, refine_opt, want_log, logs, dsrl=True)
            elif tt is not None:
                self.refine_update(dict(tt), refine_opt, want_log, logs)  # a copy: this update's features go in it
        if self.critics is not None:
            polyak_update(self.target_critics, self.critics, hp.tau)
        if self.primary_ema is not None:
            polyak_update(self.primary_ema, self.policy.primary, float(hp.actor_ema))

        if want_log:
            logs["phase_online"] = float(self.phase == "online")
            self.last_logs = {k: float(v) for k, v in logs.items() if v is not None}
            if self.logger is not None:
                self.logger.log_metrics(self.last_logs, step=self.num_updates)
        if self.hparams.max_updates is not None and self.num_updates >= self.hparams.max_updates:
            self.trainer.should_stop = True

    # ---------------------------------------------------------------------------- deploy
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
            if self.latent_critics is not None:  # a warm-up shared with algo=dual_actor: DSRL-NA's own parts fresh
                for k, v in own.items():
                    if k.startswith(("latent_critics.", "log_alpha", "policy.refinement.log_std_head.")):
                        sd.setdefault(k, v.clone())
        state = checkpoint.get("dual_actor", {})
        self.num_updates = int(state.get("num_updates", 0))
        self.set_phase(state.get("phase", self.phase))
