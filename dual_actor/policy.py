"""The deployable policy: backbone adapter + primary actor + refinement actor.

No critics, targets or optimizers: the runtime loads only this. Saved as ``config.json`` +
``model.safetensors`` (:meth:`DualActorPolicy.save_pretrained` / :meth:`from_pretrained`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from data_tools.talk_tweak import command_vocabulary
from dual_actor.constants import NULL_COMMAND
from dual_actor.nets.backbones import build_backbone
from dual_actor.nets.common import StateEncoder
from dual_actor.nets.consistency import ConsistencyPolicy, EDMScalings
from dual_actor.nets.refinement import LearnedCommandEncoder, RefinementActor

POLICY_FORMAT = "dual-actor-policy"
POLICY_VERSION = 1


class DualActorPolicy(nn.Module):
    """Acting-side model.

    Args:
        tasks: task strings, in task-id order.
        obs_dim: low-dim observation size (the state); proprio_dim; action_dim.
        backbone: ``{"name": "state", ...}``; its kwargs are filled from the dims above.
        commands: refinement-command vocabulary ("[null]" included); default: the talk-and-tweak rule's 27.
        actor_hidden, refine_hidden, refine_proj_dim, command_dim, obs_feature_dim: widths.
        scalings: EDM scalings (sigma_data, sigma_min, sigma_max = K, rho, num_levels).
        refine_mean_bound: mu = bound * K * tanh(.) (see ``nets/refinement.py``).
        refine_act: "mean" (w = mu) or "sample" (w ~ N(mu, K^2 I)) when acting with a command.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        obs_dim: int,
        proprio_dim: int,
        action_dim: int,
        backbone: dict | None = None,
        commands: Sequence[str] | None = None,
        actor_hidden: Sequence[int] = (256, 256, 256),
        refine_hidden: Sequence[int] = (256, 256),
        refine_proj_dim: int = 128,
        command_dim: int = 64,
        obs_feature_dim: int = 256,
        scalings: dict | None = None,
        refine_mean_bound: float = 1.0,
        refine_act: str = "sample",
    ):
        super().__init__()
        if refine_act not in ("mean", "sample"):
            raise ValueError(f"refine_act must be 'mean' or 'sample', got {refine_act!r}")
        commands = list(commands) if commands is not None else command_vocabulary()
        if NULL_COMMAND not in commands:
            raise ValueError(f"command vocabulary must contain {NULL_COMMAND!r}")
        backbone = dict(backbone or {"name": "state"})
        self.config: dict[str, Any] = dict(
            tasks=list(tasks), obs_dim=int(obs_dim), proprio_dim=int(proprio_dim), action_dim=int(action_dim),
            backbone=backbone, commands=commands, actor_hidden=list(actor_hidden),
            refine_hidden=list(refine_hidden), refine_proj_dim=refine_proj_dim, command_dim=command_dim,
            obs_feature_dim=obs_feature_dim, scalings=dict(scalings or {}),
            refine_mean_bound=refine_mean_bound, refine_act=refine_act,
        )
        self.tasks = list(tasks)
        self.refine_act = refine_act
        bb_kwargs = {k: v for k, v in backbone.items() if k != "name"}
        if backbone["name"] == "state":
            bb_kwargs = {"state_dim": obs_dim, "tasks": self.tasks, **bb_kwargs}
        self.backbone = build_backbone(backbone["name"], **bb_kwargs)
        sc = EDMScalings(**(scalings or {}))
        self.primary = ConsistencyPolicy(
            self.backbone.embedding_dim, action_dim, proprio_dim, hidden=actor_hidden, scalings=sc
        )
        self.refinement = RefinementActor(
            StateEncoder(obs_dim, obs_feature_dim),
            LearnedCommandEncoder(commands, command_dim),
            action_dim,
            sigma_max=sc.sigma_max,
            proj_dim=refine_proj_dim,
            hidden=refine_hidden,
            mean_bound=refine_mean_bound,
        )
        self.null_command_id = commands.index(NULL_COMMAND)

    # ----------------------------------------------------------------------------- acting
    @property
    def commands(self) -> list[str]:
        return self.refinement.command_encoder.vocabulary

    def command_ids(self, commands: Sequence[str], device=None) -> torch.Tensor:
        return self.refinement.command_encoder.ids(commands, device)

    @torch.no_grad()
    def embed(self, obs: torch.Tensor, tasks: Sequence[str]) -> torch.Tensor:
        """h = V(s, l_task) (Eq. 3): (B, Dh)."""
        return self.backbone.embed(obs, tasks)

    @torch.no_grad()
    def act(
        self,
        h: torch.Tensor,
        obs: torch.Tensor,
        proprio: torch.Tensor | None,
        commands: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        """Actions (B, A) in [-1, 1]: primary mode (Eq. 1) for rows without a command (None or
        "[null]"), refinement mode (Eq. 2) for rows with one."""
        b = h.shape[0]
        mean = None
        if commands is not None:
            cmds = [c if c else NULL_COMMAND for c in commands]
            refine_rows = torch.tensor([c != NULL_COMMAND for c in cmds], device=h.device)
            if bool(refine_rows.any()):
                mu = self.refinement(obs, self.command_ids(cmds, h.device))
                mean = torch.where(refine_rows[:, None], mu, torch.zeros_like(mu))
                if self.refine_act == "mean":
                    z = torch.randn(b, self.primary.action_dim, device=h.device, dtype=h.dtype)
                    z = torch.where(refine_rows[:, None], torch.zeros_like(z), z)
                    return self.primary(h, proprio, noise_mean=mean, noise=z)
        return self.primary(h, proprio, noise_mean=mean)

    # ------------------------------------------------------------------------- save / load
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": POLICY_FORMAT})
        cfg = {"format": POLICY_FORMAT, "version": POLICY_VERSION, **self.config}
        (directory / "config.json").write_text(json.dumps(cfg, indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str = "cpu") -> "DualActorPolicy":
        directory = Path(directory)
        cfg_path = directory / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: no policy config (expected a save_pretrained folder)")
        cfg = json.loads(cfg_path.read_text())
        if cfg.pop("format", None) != POLICY_FORMAT:
            raise ValueError(f"{cfg_path}: not a {POLICY_FORMAT} config")
        version = cfg.pop("version", None)
        if version != POLICY_VERSION:
            raise ValueError(f"{cfg_path}: policy format version {version} not supported")
        policy = cls(**cfg)
        state = load_file(str(directory / "model.safetensors"), device=map_location)
        missing, unexpected = policy.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{directory}/model.safetensors does not match config.json: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        return policy
