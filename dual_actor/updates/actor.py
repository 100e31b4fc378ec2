"""The primary actor's loss: Eq. 6 with the Eq. 15/16 task-weighted Q term (no Q term without critics)."""

from __future__ import annotations

import torch

from dual_actor import constants as K
from dual_actor import losses


def bc_rows(bc_rows: str, s: dict) -> torch.Tensor | slice:
    """The rows (flattened) the BC term imitates: every row (``"all"``); with ``"people"`` the rows sampled from a
    demo buffer (the sampler marks ``from_demos``) and the intervened steps; with ``"successes"`` also the rows
    whose Monte-Carlo return-to-go is positive (rollout steps of episodes that reached success)."""
    if bc_rows == "all":
        return slice(None)
    if K.FROM_DEMOS not in s:
        raise KeyError(f"bc_rows={bc_rows!r} needs the sampler's {K.FROM_DEMOS!r} mark on every batch row")
    rows = s[K.FROM_DEMOS].bool() | s[K.INTERVENTION].bool()
    if bc_rows == "successes":
        rows = rows | (s[K.MC_RETURN] > 0)
    return rows.reshape(-1)


def actor_loss(learner, s: dict, want_log: bool) -> tuple[torch.Tensor, dict]:
    """Eq. 6 on all task slices ``s`` (N, b, ...): BC (Eq. 5; the anchored head's denoising + mean + ODE
    distillation terms) and the weighted Q term of the action primary mode takes. Returns the loss and logs."""
    hp = learner.algo
    primary = learner.policy.primary
    t, b = s[K.H].shape[:2]
    flat = lambda x: x.reshape(t * b, *x.shape[2:])  # noqa: E731
    h, proprio, action = flat(s[K.H]), flat(s[K.PROPRIO]), flat(s[K.ACTION])
    m = bc_rows(hp.bc_rows, s)
    if primary.head == "anchored":
        tm = primary.anchored_terms(action, h, proprio, latent_range=learner.policy.refinement.mean_bound)
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
    if learner.critics is None:  # supervised learning only
        q_loss = q_means = eps = None
    else:
        q_pi = learner.reduce_members(learner.critics(
            learner.observation(s), learner.critic_proprio(s[K.PROPRIO], s[K.TASK]), a_all.view(t, b, -1)))  # (N, b)
        q_means = q_pi.mean(1).detach()
        eps = (losses.task_weights(q_means, hp.eps_c, hp.eps_min, hp.eps_max) if hp.task_weighting
               else torch.ones_like(q_means))
        q_loss = losses.actor_q_loss(q_pi, eps)
    lam1, lam2 = learner.lambdas[learner.phase]
    if q_loss is None:
        q_loss, lam2 = torch.zeros_like(bc), 0.0
    loss = losses.actor_loss(bc, q_loss, lam1, lam2)
    logs = {}
    if want_log:
        logs.update({"loss/actor": loss.detach(), "loss/actor_bc": bc.detach(), "loss/actor_q": q_loss.detach()})
        logs["bc/action_mse"] = (a_all.detach() - action).pow(2).mean()
        if primary.head == "anchored":
            logs.update({"loss/actor_denoise": bc_den.detach(), "loss/actor_mean": bc_mean.detach(),
                         "loss/actor_distill": distill.detach()})
        if hp.bc_rows != "all":
            logs["bc/imitated_rows"] = torch.as_tensor(m).float().mean()
        for i, sl in enumerate(learner.critic_slugs if eps is not None else []):
            logs[f"eps/{sl}"] = eps[i]
            logs[f"q_pi/{sl}"] = q_means[i]
    return loss, logs
