"""The task critics' loss (Alg. 1 lines 5-8 / 15-18): Cal-QL in the warm-up, Bellman TD online."""

from __future__ import annotations

import torch

from dual_actor import constants as K
from dual_actor import losses
from dual_actor.updates.dsrl import latent_next_action


def critic_loss(learner, s: dict, want_log: bool) -> tuple[torch.Tensor, dict]:
    """Every task critic on its own task slice, all N at once.

    ``s``: the task slices stacked, every entry (N, b, ...). Returns the per-task losses (N,) (they share no
    parameter: targets and policy actions are computed without gradient, so one backward of their sum gives
    each critic exactly its own gradient) and the logs (``loss/critic_<task>``, ``q/<task>``, ...).
    """
    hp = learner.algo
    primary = learner.policy.primary
    t, b = s[K.H].shape[:2]
    flat = lambda x: x.reshape(t * b, *x.shape[2:])  # noqa: E731  (N, b, .) -> (N b, .)
    stacked = lambda x: x.view(t, b, *x.shape[1:])  # noqa: E731
    calql = learner.critic_loss_kind == "calql"
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
        elif learner.latent_critics is not None:  # published DSRL: a' = pi_theta(w' | h'), w' ~ pi_W(s')
            next_a = latent_next_action(learner, s)
        else:
            next_a = stacked(primary(nh, npr))
        q_next = learner.target_critics(learner.observation(s, next_obs=True),
                                        learner.critic_proprio(s[K.NEXT_PROPRIO], s[K.TASK]), next_a)  # (N, E, b)
        q_target = losses.td_target(s[K.REWARD], s[K.DONE], q_next, hp.gamma, hp.q_bounds)  # (N, b)
    critics = learner.critics
    feat = critics.encode(learner.observation(s))
    proprio = learner.critic_proprio(s[K.PROPRIO], s[K.TASK])
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
    logs = {}
    if want_log:
        q_mean, qt_mean = q_data.detach().mean((1, 2)), q_target.mean(1)
        for i, sl in enumerate(learner.critic_slugs):
            logs[f"loss/critic_{sl}"] = loss[i].detach()
            logs[f"q/{sl}"] = q_mean[i]
            logs[f"q_target/{sl}"] = qt_mean[i]
            if reg is not None:
                logs[f"loss/calql_reg_{sl}"] = reg[i].detach()
                logs[f"loss/td_{sl}"] = td[i].detach()
    return loss, logs
