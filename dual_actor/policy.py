"""The deployable policy: backbone adapter + primary actor + refinement actor.

No critics, targets or optimizers: the runtime loads only this. Saved as ``config.json`` +
``model.safetensors`` (:meth:`DualActorPolicy.save_pretrained` / :meth:`from_pretrained`).

Observations. The acting side hands the policy either

* the state vector ``(B, obs_dim)`` (no cameras: the CPU default), or
* a mapping ``{"state": (B, obs_dim), "proprio": (B, proprio_dim), "images": {camera: (B, 3, H, W)}}``
  with images uint8 in [0, 255] or float in [0, 1] (:func:`dual_actor.runtime.loop.observation_batch`
  builds it from a robot's arrays).

:meth:`DualActorPolicy.embed` feeds the backbone (the ``state`` backbone reads the state vector; ``smolvla``
/ ``cls`` read ``{"state": observation[backbone.state_key], "images": float images}``), and
:meth:`DualActorPolicy.encoder_input` gives what the refinement actor's (and the critics') observation
encoder reads: the state vector for ``image_encoder=state``, ``{"state", "images"}`` for a ResNet encoder.

Saving. Frozen pretrained weights are not written: the backbone's state-dict entries
(:meth:`DualActorPolicy.frozen_state_keys`) are left out of ``model.safetensors`` and the backbone is rebuilt
from its config (the SmolVLA checkpoint path or Hub id, the CLS model's ``_target_``) by
:meth:`DualActorPolicy.from_pretrained`; a fingerprint (a few values of its tensors) stored in
``config.json`` catches a rebuilt backbone whose weights differ. A T5 / sentence command encoder is saved as
its command table, with its ``reload_config()`` in ``config.json``, so reloading needs no language model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from data_tools.talk_tweak import command_vocabulary
from dual_actor import constants as K
from dual_actor.config.policy import PolicyConfig
from dual_actor.constants import NULL_COMMAND
from dual_actor.nets.backbones import build_backbone
from dual_actor.nets.consistency import ConsistencyPolicy
from dual_actor.nets.image import obs_encoder_from_spec
from dual_actor.nets.refinement import RefinementActor
from dual_actor.nets.text import build_command_encoder

POLICY_FORMAT = "dual-actor-policy"
POLICY_VERSION = 2  # 2: primary_head + temperature (anchored head); version-1 folders load as the plain head
STATE_KEYS = ("state", "proprio")
FINGERPRINT_TENSORS = 16
FINGERPRINT_RTOL, FINGERPRINT_ATOL = 2e-2, 1e-3  # bf16 vs float32 copies of one checkpoint agree to ~4e-3


def _not_none(d: Mapping) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _probe(t: torch.Tensor) -> list[float]:
    t = t.detach().flatten()
    n = t.numel()
    return [float(t[i]) for i in (0, n // 3, (2 * n) // 3, n - 1)]


def backbone_fingerprint(backbone: nn.Module) -> dict[str, list[float]]:
    """Four values (first, 1/3, 2/3, last) of up to 16 floating tensors spread over the sorted state dict,
    skipping tensors whose four values are equal (LayerNorm ones, zero biases: the same in any model)."""
    sd = backbone.state_dict()
    names = sorted(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    if not names:
        return {}
    step = max(1, len(names) // FINGERPRINT_TENSORS)
    order = names[::step] + [k for k in names if k not in set(names[::step])]
    out = {}
    for k in order:
        values = _probe(sd[k])
        if len(set(values)) > 1:
            out[k] = values
            if len(out) == FINGERPRINT_TENSORS:
                break
    return out


class DualActorPolicy(nn.Module):
    """Acting-side model, built from a :class:`PolicyConfig` (every field's meaning: dual_actor/config/policy.py).

    ``DualActorPolicy(config)`` or ``DualActorPolicy(**fields)`` (the config's fields as keywords).
    ``backbone_module``: an already built backbone to use instead of building one from ``config.backbone`` (an
    acting-side copy sharing the learner's frozen backbone); not part of the config.

    Raises:
        ValueError / FileNotFoundError / OSError: a bad encoder or backbone config, a missing checkpoint
            path, or a checkpoint that does not match (the messages name the key or path).
    """

    def __init__(self, config: PolicyConfig | Mapping[str, Any] | None = None, *,
                 backbone_module: nn.Module | None = None, **fields: Any):
        super().__init__()
        if config is None:
            config = PolicyConfig.from_mapping(fields)
        elif fields:
            raise TypeError("pass a PolicyConfig or its fields as keywords, not both")
        elif not isinstance(config, PolicyConfig):
            config = PolicyConfig.from_mapping(config)
        config = dataclasses.replace(config)  # this policy's own copy
        if config.commands is None:
            config.commands = command_vocabulary()
        if NULL_COMMAND not in config.commands:
            raise ValueError(f"command vocabulary must contain {NULL_COMMAND!r}")
        self.config = config
        self.tasks = list(config.tasks)
        self.cameras = list(config.cameras)
        self.backbone_name = config.backbone.get("name", "state")
        self.backbone_state_key = config.backbone.get("state_key") or "proprio"
        if self.backbone_name != "state" and self.backbone_state_key not in STATE_KEYS:
            raise ValueError(f"backbone.state_key must be one of {STATE_KEYS}, got {self.backbone_state_key!r}")
        bb = backbone_module if backbone_module is not None else self._build_backbone(config.backbone)
        self._check_backbone(bb)
        sc = config.scalings
        self.primary = ConsistencyPolicy(bb.embedding_dim, config.action_dim, config.proprio_dim,
                                         hidden=config.actor_hidden, scalings=sc, head=config.primary_head,
                                         temperature=config.temperature, ode_steps=config.ode_steps)
        self.image_encoder_kind = config.image_encoder.get("kind", "state")
        self.h_dim = int(bb.embedding_dim)
        self.refinement = RefinementActor(
            self.make_obs_encoder(config.obs_feature_dim),
            self._build_text_encoder(config.text_encoder, config.commands),
            config.action_dim,
            sigma_max=sc.sigma_max,
            proj_dim=config.refine_proj_dim,
            hidden=config.refine_hidden,
            mean_bound=config.refine_mean_bound,
            gaussian=config.null_latent == "gaussian",
        )
        # registered last: parameters() starts with the primary actor's (its device is the policy's)
        self.backbone = bb
        self.null_command_id = config.commands.index(NULL_COMMAND)
        self.null_latent = config.null_latent

    # --------------------------------------------------------------------------- building
    def _build_backbone(self, spec: dict) -> nn.Module:
        name = self.backbone_name
        kwargs = _not_none({k: v for k, v in spec.items() if k not in ("name", "state_key")})
        if name == "state":
            kwargs = {"state_dim": self.config.obs_dim, "tasks": self.tasks, **kwargs}
        elif name == "smolvla" and not kwargs.get("checkpoint"):
            raise ValueError("backbone=smolvla needs backbone.checkpoint=<local checkpoint folder or Hub id>")
        elif name == "cls":
            for part in ("model", "adapter"):
                if part not in kwargs:
                    raise ValueError(f"backbone=cls needs backbone.{part} (a mapping with a Hydra '_target_')")
        return build_backbone(name, **kwargs)

    def _check_backbone(self, bb: nn.Module) -> None:
        if self.backbone_name == "state":
            return
        want = self.config.obs_dim if self.backbone_state_key == "state" else self.config.proprio_dim
        have = getattr(bb, "state_dim", None)
        if have is not None and have != want:
            raise ValueError(
                f"the {self.backbone_name} backbone expects a {have}-d state, but backbone.state_key="
                f"{self.backbone_state_key!r} gives {want} dims"
            )
        needed = list(getattr(bb, "camera_map", {}) or {})
        missing = [c for c in needed if c not in self.cameras]
        if missing:
            raise ValueError(
                f"the {self.backbone_name} backbone reads camera(s) {missing} (backbone.camera_map: "
                f"{dict(bb.camera_map)}), which the observations do not carry (cameras={self.cameras})"
            )

    @staticmethod
    def _build_text_encoder(spec: dict, commands: list[str]) -> nn.Module:
        spec = dict(spec)
        kind = spec.pop("kind", "learned")
        if "path" in spec:
            spec["model_name_or_path"] = spec.pop("path")
        if kind in ("t5", "sentence") and not spec.get("model_name_or_path"):
            raise ValueError(f"text_encoder={kind} needs text_encoder.path=<local model folder or Hub id>")
        return build_command_encoder(kind, commands, **_not_none(spec))

    def make_obs_encoder(self, out_dim: int, share_frozen_trunk: bool = False) -> nn.Module:
        """A fresh observation encoder of this policy's ``image_encoder`` kind (the critics use this). With
        ``share_frozen_trunk`` and a frozen image trunk, it runs on the refinement actor's trunk (one trunk per
        run; only its pooling heads, state branch and projection are its own)."""
        trunk = self.refinement.obs_encoder if share_frozen_trunk and self.frozen_image_trunk else None
        return obs_encoder_from_spec(self.config.image_encoder, self.config.obs_dim, out_dim,
                                     self.cameras, self.config.image_size, trunk=trunk, h_dim=self.h_dim)

    @property
    def frozen_image_trunk(self) -> bool:
        """The observation encoders read images through a frozen trunk (``image_encoder.freeze``): one trunk
        serves the refinement actor, every critic and every target, and its features are computed once per
        batch row."""
        enc = self.refinement.obs_encoder
        return self.uses_images and enc.trunk_frozen

    # ------------------------------------------------------------------------ observations
    @property
    def uses_images(self) -> bool:
        """The refinement actor and critics read camera images (``image_encoder`` is a ResNet)."""
        return self.image_encoder_kind not in ("state", "h")

    @property
    def reads_h(self) -> bool:
        """The refinement actor and critics read [h, state] (``image_encoder=h``): the frozen backbone's view,
        stored with each transition, instead of images."""
        return self.image_encoder_kind == "h"

    @property
    def wants_mapping(self) -> bool:
        """Observations must be the mapping (a ``smolvla`` / ``cls`` backbone reads ``proprio`` from it, an
        image encoder reads ``images``); False: the state tensor is enough."""
        return self.backbone_name != "state" or self.uses_images or bool(self.cameras)

    @property
    def device(self) -> torch.device:
        """Where the actors live (the frozen backbone may sit elsewhere; ``embed`` returns h here)."""
        return next(self.primary.parameters()).device

    @property
    def h_key(self) -> str | None:
        """The observation key under which h of this policy's frozen backbone is stored with each step (teleop log
        ``obs``, HDF5 ``obs/<key>``): ``h.<backbone>-<12 hex digits>`` of the backbone's weight fingerprint and its
        spec, so a different VLA (or pooling) never reads another's h; None for the ``state`` backbone (h is a
        cheap function of the state, recomputed)."""
        if self.backbone_name == "state":
            return None
        import hashlib
        import json

        key = json.dumps({"fingerprint": backbone_fingerprint(self.backbone), "dim": self.h_dim,
                          "spec": {k: v for k, v in self.config.backbone.items() if k not in ("device", "dtype")}},
                         sort_keys=True, default=str)
        return f"h.{self.backbone_name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def state_of(self, obs):
        """The policy's state from a robot's observation vector(s) (..., D): ``config.state_slice`` of it, or all of
        it (numpy or torch, the same kind back)."""
        sl = self.config.state_slice
        return obs if sl is None else obs[..., sl[0]:sl[1]]

    @staticmethod
    def _state(observation) -> torch.Tensor:
        return observation["state"] if isinstance(observation, Mapping) else observation

    def backbone_input(self, observation):
        """What the backbone reads: the state vector (``state``), else ``{"state", "images"}`` with float
        images in [0, 1]."""
        if self.backbone_name == "state":
            return self._state(observation)
        if not isinstance(observation, Mapping):
            if self.backbone_state_key != "state":
                raise ValueError(
                    f"the {self.backbone_name} backbone reads observation[{self.backbone_state_key!r}]: pass "
                    "{'state': ..., 'proprio': ..., 'images': {...}}, not a bare state tensor"
                )
            observation = {"state": observation}
        if self.backbone_state_key not in observation:
            raise KeyError(f"observation has no {self.backbone_state_key!r} (backbone.state_key); it has "
                           f"{sorted(observation)}")
        images = {c: (x.float() / 255.0 if x.dtype == torch.uint8 else x)
                  for c, x in (observation.get("images") or {}).items()}
        return {"state": observation[self.backbone_state_key], "images": images}

    def encoder_input(self, observation, h: torch.Tensor | None = None):
        """What the refinement actor's observation encoder reads: the state vector for
        ``image_encoder=state``, ``[h, state]`` for ``image_encoder=h`` (``h``: :meth:`embed`'s), else
        ``{"state": (B, obs_dim), "images": {camera: (B, 3, H, W)}}``."""
        if self.reads_h:
            if h is None:
                raise ValueError("image_encoder=h: the refinement actor reads [h, state]; pass h")
            state = self._state(observation)
            return torch.cat([h.to(state.dtype), state], dim=-1)
        if not self.uses_images:
            return self._state(observation)
        if not isinstance(observation, Mapping) or "images" not in observation:
            raise ValueError(f"image_encoder={self.image_encoder_kind} needs observations with images of "
                             f"cameras {self.cameras}")
        return {"state": observation["state"], "images": observation["images"]}

    def encoder_input_from_batch(self, batch: Mapping[str, torch.Tensor], next_obs: bool = False):
        """:meth:`encoder_input` of a transition batch (``obs`` / ``obs_images``, or their ``next_`` keys)."""
        state = batch[K.NEXT_OBS if next_obs else K.OBS]
        if self.reads_h:  # the h stored with the transition: the learner never runs the backbone
            return torch.cat([batch[K.NEXT_H if next_obs else K.H].to(state.dtype), state], dim=-1)
        if not self.uses_images:
            return state
        images = batch[K.NEXT_OBS_IMAGES if next_obs else K.OBS_IMAGES]  # (..., C, 3, H, W): (B, ...) or (N, b, ...)
        return {"state": state, "images": {c: images.select(-4, i) for i, c in enumerate(self.cameras)}}

    # ----------------------------------------------------------------------------- acting
    @property
    def commands(self) -> list[str]:
        return self.refinement.command_encoder.vocabulary

    def command_ids(self, commands: Sequence[str], device=None) -> torch.Tensor:
        return self.refinement.command_encoder.ids(commands, device)

    @torch.no_grad()
    def embed(self, observation, tasks: Sequence[str]) -> torch.Tensor:
        """h = V(s, l_task) (Eq. 3): (B, Dh) on the policy's device. ``observation``: see the module doc."""
        h = self.backbone.embed(self.backbone_input(observation), tasks)
        return h.to(self.device)

    @torch.no_grad()
    def act(
        self,
        h: torch.Tensor,
        obs,
        proprio: torch.Tensor | None,
        commands: Sequence[str | None] | None = None,
    ) -> torch.Tensor:
        """Actions (B, A) in [-1, 1]: primary mode (Eq. 1) for rows without a command (None or
        "[null]"), refinement mode (Eq. 2) for rows with one. With ``null_latent="learned"`` (DSRL, the paper's
        variant) a row without a command acts at mu(s, "[null]"); with ``null_latent="gaussian"`` (published DSRL)
        at a latent sampled from the tanh-Gaussian latent policy pi(w | s, "[null]"). ``obs``: the state vector or the
        observation mapping (see the module doc). Act in eval mode (``policy.eval()``, as the control
        loop and ``evaluate`` do): a ResNet encoder's BatchNorm would otherwise use and update batch
        statistics."""
        mean = None
        if commands is None and self.null_latent == "zero":  # primary mode: the acting hot path
            return self.primary(h, proprio)
        cmds = [c if c else NULL_COMMAND for c in (commands if commands is not None else [None] * h.shape[0])]
        if self.null_latent in ("learned", "gaussian"):
            ids = self.command_ids(cmds, h.device)
            feat = self.refinement.encode_obs(self.encoder_input(obs, h))
            mean = self.refinement.from_features(feat, ids)
            null = ids == self.null_command_id
            if self.null_latent == "gaussian" and bool(null.any()):
                mean = mean.index_put((null,), self.refinement.sample_from_features(feat[null], ids[null])[0])
        else:
            refine_rows = torch.tensor([c != NULL_COMMAND for c in cmds], device=h.device)
            if bool(refine_rows.any()):
                mu = self.refinement(self.encoder_input(obs, h), self.command_ids(cmds, h.device))
                mean = torch.where(refine_rows[:, None], mu, torch.zeros_like(mu))
        return self.primary(h, proprio, noise_mean=mean)

    def acting_copy(self) -> "DualActorPolicy":
        """A second policy with this one's weights for the acting side, sharing its frozen backbone (not
        rebuilt or copied) and holding a pretrained command encoder as its table (no language model)."""
        cfg = dataclasses.replace(self.config)
        enc = self.refinement.command_encoder
        if hasattr(enc, "reload_config"):
            cfg.text_encoder = enc.reload_config()
        if cfg.image_encoder.get("weights_path"):
            cfg.image_encoder = {**cfg.image_encoder, "weights_path": None}  # copied below
        copy = type(self)(cfg, backbone_module=self.backbone)
        missing, unexpected = copy.load_state_dict(self.state_dict_to_save(), strict=False)
        frozen = set(self.frozen_state_keys())
        if unexpected or any(k not in frozen for k in missing):  # pragma: no cover - same config
            raise RuntimeError(f"acting copy does not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return copy

    # ------------------------------------------------------------------------- save / load
    def frozen_state_keys(self) -> list[str]:
        """State-dict keys of the frozen pretrained backbone: never saved, published or checkpointed."""
        return [f"backbone.{k}" for k in self.backbone.state_dict()]

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """``state_dict()`` without the frozen backbone (what is saved and sent to the acting side)."""
        frozen = set(self.frozen_state_keys())
        return {k: v for k, v in self.state_dict().items() if k not in frozen}

    def saved_config(self) -> dict[str, Any]:
        """``config.json`` content: the config, the command encoder's reload spec, the backbone's fingerprint."""
        cfg = self.config.to_dict()
        enc = self.refinement.command_encoder
        if hasattr(enc, "reload_config"):
            cfg["text_encoder"] = enc.reload_config()
        fp = backbone_fingerprint(self.backbone)
        if fp:
            cfg["backbone_fingerprint"] = fp
        return cfg

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (frozen backbone weights excluded) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict_to_save().items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": POLICY_FORMAT})
        cfg = {"format": POLICY_FORMAT, "version": POLICY_VERSION, **self.saved_config()}
        (directory / "config.json").write_text(json.dumps(cfg, indent=2))
        return directory

    def check_backbone_fingerprint(self, expected: Mapping[str, Sequence[float]], where: str = "") -> None:
        """Raise ValueError if the backbone's weights differ from the ``expected`` fingerprint."""
        sd = self.backbone.state_dict()
        for k, want in expected.items():
            got = _probe(sd[k]) if k in sd and sd[k].numel() > 1 else None
            if got is None:
                raise ValueError(f"{where}: the rebuilt {self.backbone_name} backbone has no tensor {k!r}; it is not "
                                 f"the backbone this policy was trained with ({self.config.backbone})")
            if not torch.allclose(torch.tensor(got), torch.tensor(list(want)), rtol=FINGERPRINT_RTOL,
                                  atol=FINGERPRINT_ATOL):
                raise ValueError(
                    f"{where}: the {self.backbone_name} backbone rebuilt from {self.config.backbone} has other "
                    f"weights than the one this policy was trained with ({k}: {got} vs saved {list(want)}); point "
                    "the backbone config at the same checkpoint (from_pretrained(..., backbone={...}) overrides it)"
                )

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None, **card) -> str:
        """Save this policy and upload it with a model card to the Hub model repo ``repo_id`` (see
        :func:`dual_actor.hub.push_policy`; ``card``: ``eval_result``, ``train_config``, ``datasets``, ``license``,
        ``api``). Returns the repo URL."""
        import tempfile

        from dual_actor.hub import push_policy

        with tempfile.TemporaryDirectory(prefix="dual-actor-policy-") as tmp:
            self.save_pretrained(tmp)
            return push_policy(tmp, repo_id, private=private, token=token, **card)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        map_location: str = "cpu",
        backbone: Mapping[str, Any] | None = None,
        check_backbone: bool = True,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | None = None,
    ) -> "DualActorPolicy":
        """Rebuild the policy from ``config.json`` (the backbone from its checkpoint / model spec, a saved
        T5 or sentence encoder as its table) and load ``model.safetensors`` strictly. Returned in eval mode.

        ``directory``: a local policy folder, or a Hub model repo id ("me/bolts-policy", at ``revision``),
        downloaded or, with ``HF_HUB_OFFLINE=1``, found in the local Hub cache (``cache_dir``: another cache).

        Args:
            backbone: overrides of the saved backbone config, e.g. ``{"checkpoint": "/other/path",
                "device": "cuda"}`` on a machine where the checkpoint lives elsewhere.
            check_backbone: compare the rebuilt backbone's weights with the saved fingerprint.

        Raises:
            FileNotFoundError: no config.json / model.safetensors, or the backbone checkpoint is missing.
            ValueError: not a policy folder, an unsupported version, a state that does not match the
                config, or a backbone with other weights than at training time.
        """
        from dual_actor.hub import resolve_policy_dir

        directory = resolve_policy_dir(directory, revision=revision, cache_dir=cache_dir, token=token)
        cfg_path = directory / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: no policy config (expected a save_pretrained folder)")
        cfg = json.loads(cfg_path.read_text())
        if cfg.pop("format", None) != POLICY_FORMAT:
            raise ValueError(f"{cfg_path}: not a {POLICY_FORMAT} config")
        version = cfg.pop("version", None)
        if version not in (1, POLICY_VERSION):
            raise ValueError(f"{cfg_path}: policy format version {version} not supported")
        if version == 1:  # before the anchored head: f(w, K) alone, Eq. 1 / 2 sampling
            cfg.pop("refine_act", None)
            cfg.update(primary_head="plain", temperature=1.0)
        fingerprint = cfg.pop("backbone_fingerprint", None)
        if backbone:
            cfg["backbone"] = {**cfg.get("backbone", {}), **dict(backbone)}
        image_encoder = cfg.get("image_encoder")
        if image_encoder and image_encoder.get("weights_path"):
            cfg["image_encoder"] = {**image_encoder, "weights_path": None}  # the weights are in the state
        weights = directory / "model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"{weights}: no policy weights")
        policy = cls(PolicyConfig.from_mapping(cfg))
        state = load_file(str(weights), device=map_location)
        frozen = set(policy.frozen_state_keys())
        missing, unexpected = policy.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in frozen]
        if missing or unexpected:
            raise ValueError(
                f"{weights} does not match config.json: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        if fingerprint and check_backbone:
            policy.check_backbone_fingerprint(fingerprint, str(directory))
        return policy.eval()
