"""Published DSRL (Wagenmaker et al. 2025, DSRL-NA: "noise aliasing"), ``refine_objective="dsrl_na"``.

The primary (our consistency policy) is frozen online; the robot acts at ``a = pi_theta(w | h)`` with the latent
``w`` sampled from a tanh-Gaussian latent policy ``pi_W(w | s)`` (the refinement actor with the null command and a
log-std head, ``null_latent="gaussian"``). As in the authors' code (``stable_baselines3/dsrl/dsrl.py``):

- ``Q^A(s, a)``: the task critics, trained online on the executed actions (every row, the operator's take-overs
  included: they need no latent) with the target ``r + gamma (1 - d) min_e Q^A'_e(s', a')``, ``w' ~ pi_W(s')``,
  ``a' = pi_theta(w' | h')`` (:func:`latent_next_action`, used by the critic loss). Without SAC's entropy term in
  the backup, as the authors' real-robot code (``dsrl_pi0``, ``backup_entropy=False``): their robomimic code keeps
  it, but with this bench's sparse 0/1 reward and the return bounds the warm-up's critics are trained in
  (``algo.q_bounds``) an entropy bonus of ~alpha x 3 per step would pin every target at the bound.
- ``Q^W(s, w)``: latent critics (one per task critic, same members), no target network, distilled from the online
  ``Q^A``: ``sum_e 0.5 (Q^W_e(s, w) - Q^A_e(s, pi_theta(w | h)))^2`` at ``w = K z``, ``z ~ N(0, I)`` unclipped, on
  the batch's states (:func:`latent_critic_loss`). Their input is ``w`` over the latent policy's bound ``bound K``
  (DSRL feeds the latent in the policy's [-1, 1] units).
- The latent policy: ``(alpha log pi_W(w | s) - min_e Q^W_e(s, w))``, ``w`` reparameterised; alpha auto-tuned,
  ``-(log alpha (log pi_W + target entropy))`` with the target entropy 0 (:func:`latent_actor_loss`).

What differs from the authors' runs (docs/algorithm.md "Baselines"): the critics start from the shared Cal-QL
warm-up instead of from scratch, no entropy term in the critics' backup (above), the demos stay in the batch (Alg. 1's sampling, as DSRL's ``load_offline_data``),
one distillation step per learner update (theirs: 10 per 20 critic updates), single actions instead of chunks.
"""

from __future__ import annotations

import torch

from dual_actor import constants as K


def _null_ids(learner, shape: torch.Size, device) -> torch.Tensor:
    return torch.full(shape, learner.policy.null_command_id, device=device, dtype=torch.long)


def latent_input(learner, w: torch.Tensor) -> torch.Tensor:
    """What the latent critics read of a latent: ``w / (bound K)`` (the latent policy's [-1, 1] units)."""
    return w / learner.policy.refinement.scale


def latent_next_action(learner, s: dict) -> torch.Tensor:
    """The critic target's next action, each row's next state: ``a' = pi_theta(w' | h')``, ``w' ~ pi_W(s')``, with
    the deployed primary. ``s``: (N, b, ...); returns (N, b, A). No grad."""
    refinement, primary = learner.policy.refinement, learner.deployed_primary
    t, b = s[K.H].shape[:2]
    with torch.no_grad():
        feat = refinement.encode_obs(learner.observation(s, next_obs=True)).reshape(t * b, -1)
        w, _ = refinement.sample_from_features(feat, _null_ids(learner, (t * b,), feat.device))
        a = primary.action_at(w, s[K.NEXT_H].reshape(t * b, -1), s[K.NEXT_PROPRIO].reshape(t * b, -1))
        return a.view(t, b, -1)


def latent_critic_loss(learner, s: dict, want_log: bool) -> tuple[torch.Tensor, dict]:
    """``Q^W`` distilled from the online ``Q^A`` at ``w = K z``: per-task losses (N,) (member i matched to member i,
    ``0.5`` MSE summed over members) and logs. ``s``: (N, b, ...)."""
    primary = learner.deployed_primary
    t, b = s[K.H].shape[:2]
    obs, proprio = learner.observation(s), learner.critic_proprio(s[K.PROPRIO], s[K.TASK])
    with torch.no_grad():
        w = primary.K * torch.randn(t * b, primary.action_dim, device=s[K.H].device, dtype=s[K.H].dtype)
        a = primary.action_at(w, s[K.H].reshape(t * b, -1), s[K.PROPRIO].reshape(t * b, -1))
        target = learner.critics.q(learner.critics.encode(obs), proprio, a.view(t, b, -1))  # (N, E, b)
    pred = learner.latent_critics.q(learner.latent_critics.encode(obs), proprio,
                                    latent_input(learner, w).view(t, b, -1))
    loss = 0.5 * ((pred - target) ** 2).mean(-1).sum(-1)  # (N,)
    logs = {}
    if want_log:
        for i, sl in enumerate(learner.critic_slugs):
            logs[f"loss/latent_critic_{sl}"] = loss[i].detach()
            logs[f"q_latent/{sl}"] = pred[i].detach().mean()
    return loss, logs


def latent_actor_loss(learner, s: dict, want_log: bool) -> tuple[torch.Tensor, dict]:
    """The latent policy's SAC loss against ``Q^W`` plus the temperature's (their parameters are disjoint, so one
    backward of the sum gives each its own gradient). ``s``: (N, b, ...)."""
    refinement = learner.policy.refinement
    t, b = s[K.H].shape[:2]
    obs, proprio = learner.observation(s), learner.critic_proprio(s[K.PROPRIO], s[K.TASK])
    feat = refinement.encode_obs(obs).reshape(t * b, -1)
    w, logp = refinement.sample_from_features(feat, _null_ids(learner, (t * b,), feat.device))
    q = learner.latent_critics.q(learner.latent_critics.encode(obs), proprio, latent_input(learner, w).view(t, b, -1))
    q = q.min(1).values.reshape(-1)  # (N b,): min over each critic's members
    alpha = learner.log_alpha.exp()
    actor = (alpha.detach() * logp - q).mean()
    temperature = -(learner.log_alpha * (logp.detach() + float(learner.algo.dsrl_target_entropy))).mean()
    logs = {}
    if want_log:
        logs.update({"loss/refine": actor.detach(), "loss/refine_q": -q.detach().mean(),
                     "dsrl/alpha": alpha.detach(), "dsrl/entropy": -logp.detach().mean(),
                     "refine/mu_abs": w.detach().abs().mean()})
    return actor + temperature, logs
