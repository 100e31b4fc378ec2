"""The per-task critics Q_psi_i(s, a) (Fig. 4), all tasks as one stacked ensemble.

Each task's critic is: observation encoder + proprio MLP + action MLP -> concat -> MLP head, as a
twin ensemble; the observation encoder is shared by the task's members (as in lerobot's SAC and
HIL-SERL), the proprio MLP, action MLP and head are per member, and each LayerNorm's affine is per
task (shared by its members). Targets use the min over members; the target network is a Polyak copy
(tau = 0.005).

Stacking (issue 11): the N tasks x E members are stored as N*E ensemble members, task-major, so one
update of all task critics is one batched matmul per layer over the (N, b, .) task slices (Alg. 1
gives every task the same b rows) instead of 3 * (layers) small ones. ``forward(..., task=i)`` runs
task i's critic alone on any rows (the refinement batch mixes tasks). A parameter's leading dim is
N*E or N (task-major), so per-task gradient norms are views (:meth:`TaskCritics.clip_task_grads`).

Several actions per state (Cal-QL's sampled actions) are evaluated without repeating the
per-state work: the head's first layer on concat([obs_feat, proprio_feat, action_feat]) is
split as W_s [obs_feat, proprio_feat] + W_a action_feat, and the state term is computed once
per state and broadcast over that state's actions (the same function, ~half the arithmetic).
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dual_actor.nets.common import select_rows

ALL = slice(None)


class EnsembleLinear(nn.Module):
    """E independent linear layers: (E, B, in) -> (E, B, out) in one ``baddbmm``; ``members`` selects a
    contiguous run of them (a view of the weights, no copy)."""

    def __init__(self, ensemble: int, in_dim: int, out_dim: int, bias: bool = True, fan_in: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim)) if bias else None
        bound = 1.0 / math.sqrt(fan_in or in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, members: slice = ALL) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight[members])
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class GroupLayerNorm(nn.Module):
    """LayerNorm over the last dim with one affine per group of ``members`` consecutive ensemble
    members: x (G*M, B, d) -> same; ``groups`` selects a contiguous run of groups."""

    def __init__(self, groups: int, members: int, width: int):
        super().__init__()
        self.members = members
        self.weight = nn.Parameter(torch.ones(groups, 1, 1, width))
        self.bias = nn.Parameter(torch.zeros(groups, 1, 1, width))

    def forward(self, x: torch.Tensor, groups: slice = ALL) -> torch.Tensor:
        w, b = self.weight[groups], self.bias[groups]
        y = F.layer_norm(x, x.shape[-1:]).view(w.shape[0], self.members, *x.shape[1:])
        return torch.addcmul(b, y, w).view_as(x)


class EnsembleMLP(nn.Module):
    """``EnsembleLinear -> GroupLayerNorm -> ReLU`` per hidden width, then an optional output
    ``EnsembleLinear``, over G groups x M members: (G*M, B, in) -> (G*M, B, out)."""

    def __init__(self, groups: int, members: int, in_dim: int, hidden: Sequence[int], out_dim: int | None,
                 layer_norm: bool = True):
        super().__init__()
        self.members = members
        n, d = groups * members, in_dim
        self.linears, self.norms = nn.ModuleList(), nn.ModuleList()
        for width in hidden:
            self.linears.append(EnsembleLinear(n, d, width))
            self.norms.append(GroupLayerNorm(groups, members, width) if layer_norm else nn.Identity())
            d = width
        self.out = EnsembleLinear(n, d, out_dim) if out_dim is not None else None

    def forward(self, x: torch.Tensor, group: int | None = None) -> torch.Tensor:
        groups, members = _runs(group, self.members)
        for lin, norm in zip(self.linears, self.norms):
            x = lin(x, members)
            x = torch.relu(norm(x, groups) if isinstance(norm, GroupLayerNorm) else x)
        return x if self.out is None else self.out(x, members)


def _runs(group: int | None, members: int) -> tuple[slice, slice]:
    """(groups, members) slices selecting everything (``group`` None) or group ``group`` alone."""
    if group is None:
        return ALL, ALL
    return slice(group, group + 1), slice(group * members, (group + 1) * members)


class TaskCritics(nn.Module):
    """The N task critics, each a twin (E-member) ensemble, as one stacked module.

    ``forward(obs, proprio, action)`` on task-stacked inputs: obs (N, b, Do) (or, with image
    encoders, ``{"state": (N, b, Do), "images": {camera: (N, b, 3, H, W)}}``), proprio (N, b, Dp),
    action (N, b, A) or (N, b, m, A) -> Q (N, E, b) or (N, E, b, m). With ``task=i`` the inputs
    are one task's rows without the leading N (obs (b, Do), ...) -> Q (E, b) or (E, b, m).

    Args:
        num_tasks: N.
        make_obs_encoder: for image observations, ``() -> encoder`` (``(B, .) -> (B, obs_feature_dim)``),
            called once per task; None: the state encoder ``Linear -> LayerNorm -> ReLU`` of
            ``obs_dim`` -> ``obs_feature_dim`` per task, stacked.
    """

    def __init__(
        self,
        num_tasks: int,
        obs_dim: int,
        proprio_dim: int,
        action_dim: int,
        obs_feature_dim: int = 256,
        feature_dim: int = 64,
        hidden: Sequence[int] = (256, 256),
        ensemble: int = 2,
        layer_norm: bool = True,
        make_obs_encoder: Callable[[], nn.Module] | None = None,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("critic needs at least one hidden layer")
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks, self.ensemble, self.proprio_dim = num_tasks, ensemble, proprio_dim
        if make_obs_encoder is None:
            self.obs_encoder = EnsembleMLP(num_tasks, 1, obs_dim, (obs_feature_dim,), None)
            self.image_encoders = None
        else:
            self.obs_encoder = None
            self.image_encoders = nn.ModuleList(make_obs_encoder() for _ in range(num_tasks))
            obs_feature_dim = self.image_encoders[0].out_dim
        self.proprio_mlp = EnsembleMLP(num_tasks, ensemble, proprio_dim, (feature_dim,), None) if proprio_dim else None
        self.action_mlp = EnsembleMLP(num_tasks, ensemble, action_dim, (feature_dim,), None)
        state_dim = obs_feature_dim + (feature_dim if proprio_dim else 0)
        fan_in = state_dim + feature_dim
        n = num_tasks * ensemble
        self.state_in = EnsembleLinear(n, state_dim, hidden[0], bias=True, fan_in=fan_in)
        self.action_in = EnsembleLinear(n, feature_dim, hidden[0], bias=False, fan_in=fan_in)
        self.first_norm = GroupLayerNorm(num_tasks, ensemble, hidden[0]) if layer_norm else None
        self.head = EnsembleMLP(num_tasks, ensemble, hidden[0], hidden[1:], 1, layer_norm=layer_norm)

    def encode(self, obs, task: int | None = None) -> torch.Tensor:
        """Observation features (N, b, F), or (b, F) with ``task``; compute once and pass to :meth:`q`
        for several actions."""
        if self.image_encoders is None:
            x = obs.unsqueeze(0) if task is not None else obs
            feat = self.obs_encoder(x, task)
            return feat[0] if task is not None else feat
        if task is not None:
            return self.image_encoders[task](obs)
        return torch.stack([enc(select_rows(obs, i)) for i, enc in enumerate(self.image_encoders)])

    def _members(self, x: torch.Tensor) -> torch.Tensor:
        """(G, b, d) -> (G*E, b, d): every task's rows for each of its members."""
        g, e = x.shape[0], self.ensemble
        return x.unsqueeze(1).expand(g, e, *x.shape[1:]).reshape(g * e, *x.shape[1:])

    def q(self, feat: torch.Tensor, proprio: torch.Tensor | None, action: torch.Tensor,
          task: int | None = None) -> torch.Tensor:
        """Q from precomputed features (see the class doc for shapes)."""
        if task is not None:
            feat, action = feat.unsqueeze(0), action.unsqueeze(0)
            proprio = proprio.unsqueeze(0) if proprio is not None else None
        g, b = feat.shape[0], feat.shape[1]
        e = self.ensemble
        multi = action.ndim == 4
        m = action.shape[2] if multi else 1
        groups, members = _runs(task, e)
        state = self._members(feat)
        if self.proprio_mlp is not None:
            state = torch.cat([state, self.proprio_mlp(self._members(proprio), task)], -1)
        s_term = self.state_in(state, members)  # (G E, b, H)
        a = self._members(action.reshape(g, b * m, -1))
        a_term = self.action_in(self.action_mlp(a, task), members)  # (G E, b m, H)
        x = (a_term.view(g * e, b, m, -1) + s_term.unsqueeze(2)).view(g * e, b * m, -1)
        if self.first_norm is not None:
            x = self.first_norm(x, groups)
        out = self.head(torch.relu(x), task).view(g, e, b, m)
        out = out if multi else out.squeeze(-1)
        return out[0] if task is not None else out

    def forward(self, obs, proprio: torch.Tensor | None, action: torch.Tensor, task: int | None = None) -> torch.Tensor:
        return self.q(self.encode(obs, task), proprio, action, task)

    # -------------------------------------------------------------------- per-task gradients
    def _task_grads(self) -> list[tuple[torch.Tensor, int | None]]:
        """(grad, task) pairs: a stacked parameter's grad (task None: leading dim N*E or N, task-major)
        or a per-task image encoder's grad (its task)."""
        out = []
        for name, p in self.named_parameters():
            if p.grad is None:
                continue
            if name.startswith("image_encoders."):
                out.append((p.grad, int(name.split(".")[1])))
            else:
                out.append((p.grad, None))
        return out

    def task_grad_norms(self, grads: list[tuple[torch.Tensor, int | None]] | None = None) -> torch.Tensor:
        """(N,) L2 norm of each task critic's gradient (what clipping each critic on its own would see);
        ``grads``: :meth:`_task_grads`, when the caller has it already."""
        sq = None
        for g, task in self._task_grads() if grads is None else grads:
            if task is None:
                part = g.reshape(self.num_tasks, -1).pow(2).sum(1)
            else:
                part = torch.zeros(self.num_tasks, dtype=g.dtype, device=g.device)
                part[task] = g.pow(2).sum()
            sq = part if sq is None else sq + part.to(sq.dtype)
        if sq is None:
            raise RuntimeError("no critic parameter has a gradient")
        return sq.sqrt()

    @torch.no_grad()
    def clip_task_grads(self, max_norm: float) -> torch.Tensor:
        """Each task critic's gradient scaled as ``torch.nn.utils.clip_grad_norm_`` scales a module's
        (by min(1, max_norm / (norm + 1e-6))), per task. Returns the norms before clipping (N,)."""
        grads = self._task_grads()
        norms = self.task_grad_norms(grads)
        coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g, task in grads:
            if task is None:
                g.view(self.num_tasks, -1).mul_(coef[:, None].to(g.dtype))
            else:
                g.mul_(coef[task].to(g.dtype))
        return norms


def make_target(net: nn.Module, shared: Sequence[nn.Module] = ()) -> nn.Module:
    """A frozen copy of ``net`` for Polyak targets; the modules in ``shared`` (a frozen image trunk) are
    not copied: the target uses the same ones."""
    target = copy.deepcopy(net, memo={id(m): m for m in shared})
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, in place (``_foreach_lerp_``); a parameter the two share (a
    frozen trunk) is skipped."""
    pairs = [(t, s) for t, s in zip(target.parameters(), source.parameters()) if t is not s]
    if pairs:
        torch._foreach_lerp_([t for t, _ in pairs], [s.detach() for _, s in pairs], tau)
