"""The deployable policy's config: what a policy folder's ``config.json`` holds (no Hydra, no learner).

:class:`PolicyArch` is the actors' shape and acting rule; conf/algo sets it (``AlgoConfig`` inherits it, so
each of these keys is declared here once). :class:`PolicyConfig` adds what the env and the encoder groups
give (tasks, dims, cameras, the backbone / command encoder / observation encoder specs).
"""

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from dual_actor.config.fields import ConfigError, check_choices, setting
from dual_actor.nets.consistency import EDMScalings

PRIMARY_HEADS = ("anchored", "plain")
NULL_LATENTS = ("zero", "learned", "gaussian")


def arch(default: Any, help: str, **kw) -> Any:
    """A :class:`PolicyArch` field (marked as the policy's, so :meth:`PolicyArch.arch_of` finds it)."""
    return setting(default, help, policy=True, **kw)


@dataclass
class PolicyArch:
    """The primary and refinement actors' widths and acting rule."""

    actor_hidden: List[int] = arch([256, 256, 256], "primary actor MLP widths (the denoiser and the mean head)")
    refine_hidden: List[int] = arch([256, 256], "refinement actor's final MLP widths (Eq. 7)")
    refine_proj_dim: int = arch(128, "refinement actor: width each of its observation / command projections outputs")
    obs_feature_dim: int = arch(256, "refinement actor's observation encoder output width")
    scalings: EDMScalings = arch(EDMScalings(), "EDM / consistency scalings: sigma_data, sigma_min, sigma_max = K, "
                                                "rho, num_levels (Karras schedule)")
    refine_mean_bound: float = arch(1.0, "refinement actor's latent mean mu = bound * K * tanh(.) (Eq. 7)")
    primary_head: str = arch("anchored", "anchored: mean head M(h) + ODE-distilled noise -> action map "
                                         "(docs/algorithm.md) | plain: f(w, K) as printed", choices=PRIMARY_HEADS)
    temperature: float = arch(0.0, "acting: w = mu + temperature * K * z (1: Eq. 1/2 as printed; 0: w = mu, "
                                   "mu = 0 in primary mode)")
    ode_steps: int = arch(8, "anchored head: Euler steps of the denoiser's ODE distilled into the one-step map")
    null_latent: str = arch("zero", "acting without a command: zero (Eq. 1: mu = 0) | learned (mu(s, [null]): "
                                    "the paper's DSRL, algo=dsrl) | gaussian (a latent sampled from a tanh-Gaussian "
                                    "pi(w | s, [null]): published DSRL, algo=dsrl_na)", warmup=False,
                            choices=NULL_LATENTS)

    @classmethod
    def arch_of(cls, section: Any) -> dict:
        """This class's fields read from ``section`` (an :class:`AlgoConfig`, or any object with them)."""
        return {f.name: getattr(section, f.name) for f in dataclasses.fields(PolicyArch)}


@dataclass(kw_only=True)
class PolicyConfig(PolicyArch):
    """Everything :class:`dual_actor.policy.DualActorPolicy` is built from.

    ``backbone``: ``{"name": "state" | "smolvla" | "cls", ...}`` (the state backbone's dims come from the fields
    here; ``smolvla``: ``checkpoint``, ``camera_map``, ``device``, ``dtype``, ``vlm_model_name``,
    ``allow_missing_cameras``, ``strict``; ``cls``: ``model`` and ``adapter`` (objects or Hydra ``_target_``
    mappings), ``embedding_dim``, ``device``, ``dtype``; both ``state_key``). ``text_encoder``: ``{"kind":
    "learned", "out_dim": D}``, ``{"kind": "t5" | "sentence", "path": ...}`` or a saved ``{"kind": "table", ...}``
    (``dual_actor.nets.text.build_command_encoder``). ``image_encoder``: ``{"kind": "state"}`` or ``{"kind":
    "resnet18" | "resnet10", ...}`` (``dual_actor.nets.image.obs_encoder_from_spec``); the critics use the same.
    """

    tasks: List[str] = setting(help="task strings, in task-id order")
    obs_dim: int = setting(help="low-dim observation (state) size")
    proprio_dim: int = setting(help="proprioception size (the state's first entries)")
    action_dim: int = setting(help="action size")
    backbone: Dict[str, Any] = setting({"name": "state"}, "the frozen backbone giving h (Eq. 3)")
    commands: Optional[List[str]] = setting(None, "refinement-command vocabulary with '[null]' (None: the "
                                                  "talk-and-tweak rule's 27)")
    text_encoder: Dict[str, Any] = setting({"kind": "learned", "out_dim": 64}, "the refinement commands' encoder")
    image_encoder: Dict[str, Any] = setting({"kind": "state"}, "the refinement actor's and critics' observation "
                                                               "encoder")
    state_slice: Optional[List[int]] = setting(None, "[start, stop): the entries of the robot's observation vector "
                                                     "the policy reads as its state (null: all of them); "
                                                     "env.obs_key=proprio: [0, proprio_dim], no object or goal "
                                                     "positions")
    cameras: List[str] = setting([], "camera names the observations carry, in storage order")
    image_size: Optional[int] = setting(None, "the cameras' H = W")

    def __post_init__(self) -> None:
        if self.state_slice is not None:
            a, b = (list(self.state_slice) + [None, None])[:2]
            if len(self.state_slice) != 2 or not 0 <= int(a) < int(b) or int(b) - int(a) != int(self.obs_dim):
                raise ValueError(f"state_slice must be [start, stop) with stop - start = obs_dim ({self.obs_dim}), "
                                 f"got {self.state_slice}")
            self.state_slice = [int(a), int(b)]
        if isinstance(self.scalings, Mapping):
            self.scalings = EDMScalings(**self.scalings)
        self.tasks, self.cameras = [str(t) for t in self.tasks], [str(c) for c in self.cameras]
        self.actor_hidden, self.refine_hidden = list(self.actor_hidden), list(self.refine_hidden)
        self.backbone, self.text_encoder = dict(self.backbone), dict(self.text_encoder)
        self.image_encoder = dict(self.image_encoder)
        if self.commands is not None:
            self.commands = list(self.commands)
        check_choices(self, "")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ConfigError(f"duplicate cameras in {self.cameras}")

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> "PolicyConfig":
        """A config from a plain mapping of its fields (a ``config.json``). ``command_dim``, the learned command
        embedding's width in folders saved before it became ``text_encoder.out_dim``, is read as that (folders
        saved with a ``text_encoder`` carry the width there too)."""
        config = dict(config)
        if "command_dim" in config:
            width = config.pop("command_dim")
            config.setdefault("text_encoder", {"kind": "learned", "out_dim": int(width)})
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown policy config key(s) {unknown}")
        return cls(**config)

    def to_dict(self) -> dict:
        """A JSON-able plain dict of every field (``config.json``)."""
        return dataclasses.asdict(self)
