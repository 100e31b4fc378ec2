"""The refinement actor's loss: Eq. 8-11 on the talk-and-tweak batch (with the residual target and the
sub-command copies of docs/algorithm.md), or the DSRL baseline's latent-noise objective."""

from __future__ import annotations

import torch

from dual_actor import constants as K
from dual_actor import losses
from dual_actor.nets.common import select_rows


class SubcommandCopies:
    """Sub-command copies of talk-and-tweak rows (``algo.refine_subcommands`` = p; docs/algorithm.md
    "Sub-command copies"). ``table``: (V, 3) long, for each command of the policy's vocabulary the id of its
    single-axis sub-command on each translational axis it names ("move left and up" -> "move left" on y,
    "move up" on z), -1 on the axes it does not name."""

    def __init__(self, vocabulary: list[str], p: float):
        from data_tools.talk_tweak import parse_command

        index = {c: i for i, c in enumerate(vocabulary)}
        table = torch.full((len(vocabulary), 3), -1, dtype=torch.long)
        for i, cmd in enumerate(vocabulary):
            try:
                axes = parse_command(cmd)
            except ValueError as e:
                raise ValueError(f"refine_subcommands needs the default talk-and-tweak words ({e}); "
                                 f"set refine_subcommands=0 for another vocabulary") from None
            for axis, sign in axes:
                single = next((c for c in vocabulary if parse_command(c) == [(axis, sign)]), None)
                if single is None:
                    raise ValueError(f"refine_subcommands: the vocabulary has no single-axis command for "
                                     f"{cmd!r}'s axis {axis} (sign {sign:+d})")
                table[i, axis] = index[single]
        self.table, self.p = table, float(p)

    def __call__(self, command: torch.Tensor, target: torch.Tensor, a_now: torch.Tensor):
        """Each row whose command names at least one axis gets, with probability p, one extra training row: one
        of those axes' single-axis commands (uniformly), with the target ``a_now`` (the deployed primary's action
        at the row's latent noise, no gradient) whose component on that axis is the row's own target's. The row
        itself is kept as it is. Eq. 13 labels each axis on its own, so "move left" is what the rule would have
        said had the operator corrected only that axis. Returns (rows: the copied rows' indices, their
        single-axis command ids, their targets)."""
        sub = self.table.to(command.device)[command]  # (B, 3)
        avail = sub >= 0
        pick = (torch.rand(avail.shape, device=command.device) * avail).argmax(1)  # uniform over named axes
        use = torch.rand(command.shape, device=command.device) < self.p
        rows = (use & avail.any(1)).nonzero(as_tuple=True)[0]
        pick = pick[rows]
        copy = a_now[rows].clone()
        n = torch.arange(rows.shape[0], device=command.device)
        copy[n, pick] = target[rows, pick]
        return rows, sub[rows, pick], copy


def refine_loss(learner, b: dict, want_log: bool) -> tuple[torch.Tensor, dict]:
    """Eq. 8-11 on the talk-and-tweak batch ``b`` (B, ...). What does not depend on mu is computed once without
    gradient: the anchored map's offset M(h) - f(0, K | h) (shared by Eq. 8/9's and Eq. 10's actions) and Eq. 10's
    primary-mode action; only the two latents' map evaluations f(w, K | h) carry the gradient to phi."""
    hp = learner.algo
    primary, refinement = learner.deployed_primary, learner.policy.refinement
    h, obs, proprio, action = b[K.H], learner.observation(b), b[K.PROPRIO], b[K.ACTION]
    command = b[K.COMMAND]
    bsz = h.shape[0]
    feat = refinement.encode_obs(obs)
    z, z0 = torch.randn_like(action), torch.randn_like(action)
    with torch.no_grad():  # Eq. 10's primary-mode action (the same z0) and the map's offset
        offset, a_base = primary.offset_and_action(h, proprio, z0)
        copies = None
        residual = hp.refine_target == "residual" and K.CORRECTION in b
        if learner.subcommands is not None or residual:
            a_z = primary.action_at(primary.latent(z), h, proprio, offset=offset)
        if residual:  # the deployed primary's action at the same noise, moved by the recorded correction
            correction = b[K.CORRECTION].to(action.dtype)
            known = ~torch.isnan(correction).any(-1, keepdim=True)
            action = torch.where(known, (a_z + correction.nan_to_num()).clamp(-1.0, 1.0), action)
        if learner.subcommands is not None:
            copies = learner.subcommands(command, action, a_z)
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
    null = torch.full((bsz,), learner.policy.null_command_id, device=command.device, dtype=command.dtype)
    mu_both = refinement.from_features(torch.cat([feat_c, feat]), torch.cat([command, null]))
    w_both = primary.latent(torch.cat([z_c, z0]), mu_both)
    offset2 = None if offset is None else torch.cat([offset_c, offset])
    a_both = primary.action_at(w_both, torch.cat([h_c, h]), torch.cat([proprio_c, proprio]), offset=offset2)
    mu, a_ref, a_null = mu_both[:n], a_both[:n], a_both[n:]
    bc = losses.refine_bc_loss(a_ref, action)  # Eq. 8
    q = torch.zeros(n, device=h.device, dtype=h.dtype)
    if hp.critic == "shared":
        q = learner.reduce(learner.critics(obs_c, learner.critic_proprio(proprio_c, task_ids), a_ref, task=0)).to(q.dtype)
    elif learner.critics is not None:
        for i in torch.unique(task_ids).tolist():  # each row scored by its own task's critic
            sel = task_ids == i
            q_i = learner.critics(select_rows(obs_c, sel), proprio_c[sel], a_ref[sel], task=i)
            q = q.index_put((sel,), learner.reduce(q_i).to(q.dtype))
    q_loss = losses.refine_q_loss(q)  # Eq. 9 (0 without critics)
    reg = losses.refine_reg_loss(a_null, a_base)  # Eq. 10 on the batch's rows, same z0 for both terms
    loss = losses.refine_loss(bc, q_loss, reg, hp.eta)  # Eq. 11
    logs = {}
    if want_log:
        logs.update({"loss/refine": loss.detach(), "loss/refine_bc": bc.detach(), "loss/refine_q": q_loss.detach(),
                     "loss/refine_reg": reg.detach(), "refine/mu_abs": mu.detach().abs().mean()})
        if copies is not None:  # copies per batch row
            logs["refine/subcommand_rows"] = torch.tensor(copies[0].shape[0] / bsz)
    return loss, logs


def dsrl_loss(learner, s: dict, want_log: bool) -> tuple[torch.Tensor, dict]:
    """DSRL (``refine_objective="dsrl"``): the refinement actor with the null command, mu(s, "[null]"), is a
    latent-noise policy trained to maximise the critics' Q of the deployed primary's action at
    w = mu + temperature K z on the task rows ``s`` (N, b, ...) (steering the frozen policy's noise)."""
    primary, refinement = learner.deployed_primary, learner.policy.refinement
    t, b = s[K.H].shape[:2]
    flat = lambda x: x.reshape(t * b, *x.shape[2:])  # noqa: E731
    h, proprio = flat(s[K.H]), flat(s[K.PROPRIO])
    obs = learner.observation(s)
    feat = refinement.encode_obs(obs)
    null = torch.full(feat.shape[:-1], learner.policy.null_command_id, device=h.device, dtype=torch.long)
    mu = refinement.from_features(feat, null).reshape(t * b, -1)
    z = torch.randn_like(mu)  # the map's M(h) and f(0, K) come with f(w, K) from one batched call
    a = primary.action_at(primary.latent(z, mu), h, proprio)
    q = learner.reduce_members(learner.critics(obs, learner.critic_proprio(s[K.PROPRIO], s[K.TASK]), a.view(t, b, -1)))
    loss = losses.refine_q_loss(q.reshape(-1))
    logs = {"loss/refine": loss.detach(), "loss/refine_q": loss.detach(),
            "refine/mu_abs": mu.detach().abs().mean()} if want_log else {}
    return loss, logs
