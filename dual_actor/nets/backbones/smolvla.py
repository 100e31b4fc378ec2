"""The ``smolvla`` backbone: a frozen SmolVLA (lerobot 0.4.4) whose prefix KV cache gives h (Eq. 17).

Per call of ``embed(observation, tasks)``:

1. lerobot's own preprocessing: the policy's preprocessor pipeline (task string + ``"\\n"``, the
   SmolVLM tokenizer with ``padding=config.pad_language_to`` on the right, truncated to
   ``tokenizer_max_length``; device move; state normalisation with the checkpoint's stats), then
   ``SmolVLAPolicy.prepare_images`` (resize with padding to ``resize_imgs_with_padding``, [0, 1] ->
   [-1, 1]) and ``prepare_state`` (zero-pad to ``max_state_dim``).
2. ``VLAFlowMatching.embed_prefix`` (images, language, state) and the VLM-with-expert forward over the
   prefix alone with ``use_cache=True, fill_kv_cache=True`` -- exactly the call that
   ``sample_actions`` makes before denoising.
3. The LAST VLM layer's ``key_states`` / ``value_states`` (B, L, H_kv, D; keys after RoPE, as cached)
   are mask-averaged over the prefix pad mask and concatenated (``pooling.pool_kv``):
   h in R^{2 H_kv D} (640 for SmolVLM2-500M: 5 KV heads of width 64).

Decisions:

* Frozen: every parameter has ``requires_grad=False``, the module stays in eval mode even when a
  parent calls ``.train()``, and ``embed`` runs under ``torch.no_grad``.
* Device and dtype: default CUDA when available, else CPU; the model is cast to bf16 on CUDA and kept
  float32 on CPU (override with ``device=`` / ``dtype=``). h is returned as float32 on the backbone's
  device whatever the model dtype (pooling accumulates in float32).
* Cameras: ``observation["images"]`` maps camera names to (B, 3, H, W) float images in [0, 1]. By
  default camera ``"front"`` feeds the SmolVLA image feature ``observation.images.front`` (match by
  name); ``camera_map={"front": "camera1", ...}`` maps observation cameras onto differently named
  features (``"camera1"`` or the full ``"observation.images.camera1"``). Cameras the map does not name
  are ignored (the same observation dict may carry critic cameras). Every feature of the checkpoint
  needs a camera (lerobot's ``empty_camera_*`` placeholders excepted) unless
  ``allow_missing_cameras=True``, in which case lerobot's own rule applies (up to ``empty_cameras``
  blank images are added, further missing ones are dropped).
* State: ``observation["state"]`` (B, Ds) with Ds equal to the checkpoint's ``observation.state``
  shape (its normalisation stats and ``state_proj`` were trained on that layout) and <= max_state_dim.
* Checkpoints: a local directory in the ``lerobot/smolvla_base`` layout (``config.json`` with
  ``"type": "smolvla"`` + ``model.safetensors``, optionally ``policy_preprocessor.json`` with its
  normaliser stats; without it the state passes un-normalised) or a Hub id, fetched with
  ``huggingface_hub.snapshot_download`` (with ``HF_HUB_OFFLINE=1`` only from the local cache).
  ``load_vlm_weights`` is forced off: all weights come from ``model.safetensors``, checked against the
  architecture key by key and shape by shape (``strict=False`` tolerates missing/unexpected keys but
  never a shape mismatch). SmolVLA still reads the SmolVLM config, tokenizer and processor from
  ``config.vlm_model_name`` (a Hub id or a folder); ``vlm_model_name=`` overrides it, e.g. with a
  local copy of ``HuggingFaceTB/SmolVLM2-500M-Video-Instruct`` on a machine without the Hub.
* ``SmolVLABackbone.from_config(SmolVLAConfig(...))`` builds the architecture with random weights
  (no checkpoint), for real-size measurement.
* The policy is a registered submodule, so a parent module's ``state_dict`` carries its weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from dual_actor.nets.backbones.frozen import PinnedFrozenBackbone, as_dtype, default_device, default_dtype  # noqa: F401
from dual_actor.nets.backbones.pooling import pool_kv

IMAGE_PREFIX = "observation.images."
EMPTY_CAMERA_PREFIX = IMAGE_PREFIX + "empty_camera_"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POOLS = ("prefix", "images")
"""What ``SmolVLABackbone(pool=...)`` averages: every real prefix token (Eq. 17) or the cameras' tokens only."""
_LEGACY_NORM_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")


def text_kv_dims(text_config) -> tuple[int, int]:
    """(H_kv, D) of a llama-style text config: KV heads and head width."""
    heads = int(text_config.num_attention_heads)
    kv_heads = int(getattr(text_config, "num_key_value_heads", None) or heads)
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return kv_heads, int(head_dim)


def _looks_like_hub_id(s: str) -> bool:
    return s.count("/") == 1 and not s.startswith(("/", ".", "~")) and "\\" not in s


def resolve_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """A local checkpoint directory, or a Hub id (``owner/name``) fetched into the HF cache.

    Raises:
        FileNotFoundError: the path does not exist and is not a Hub id, or the Hub id cannot be
            fetched (offline and not cached, unknown repo, no network); the message names it.
        NotADirectoryError: the path is a file.
    """
    p = Path(checkpoint).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise NotADirectoryError(f"SmolVLA checkpoint {p} is a file; expected a directory with {CONFIG_FILE} "
                                 f"and {WEIGHTS_FILE}")
    s = str(checkpoint)
    if isinstance(checkpoint, Path) or not _looks_like_hub_id(s):
        raise FileNotFoundError(f"SmolVLA checkpoint directory {p} does not exist")
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(s, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # offline, not cached, unknown repo, no network: one clear message
        why = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
               if constants.HF_HUB_OFFLINE else "it could not be fetched from the Hugging Face Hub")
        raise FileNotFoundError(
            f"SmolVLA checkpoint {s!r} is not a local directory, and as a Hub id {why} "
            f"({type(e).__name__}: {e}). Download it on a machine with the Hub and pass the local path."
        ) from e


def load_smolvla_config(checkpoint_dir: Path):
    """Read and validate ``config.json`` of a lerobot SmolVLA checkpoint -> ``SmolVLAConfig``."""
    cfg_file = Path(checkpoint_dir) / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{checkpoint_dir} has no {CONFIG_FILE}: a SmolVLA checkpoint (lerobot/smolvla_base "
                                f"layout) holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_file} is not valid JSON: {e}") from e
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind != "smolvla":
        extra = ""
        if isinstance(raw, dict) and "model_type" in raw:
            extra = f" (it looks like a transformers config with model_type={raw['model_type']!r})"
        raise ValueError(f"{cfg_file} is not a SmolVLA policy config: its 'type' is {kind!r}{extra}; "
                         f"expected 'smolvla' (the lerobot/smolvla_base layout)")
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    try:
        config = PreTrainedConfig.from_pretrained(str(checkpoint_dir))
    except Exception as e:
        raise ValueError(f"{cfg_file} could not be parsed as lerobot's SmolVLAConfig: {type(e).__name__}: {e}") from e
    if not isinstance(config, SmolVLAConfig):  # pragma: no cover - draccus picks the class from 'type'
        raise ValueError(f"{cfg_file} parsed as {type(config).__name__}, not SmolVLAConfig")
    return config


def _build_policy(config):
    """``SmolVLAPolicy(config)``, with a clear error when the SmolVLM folder/id cannot be read."""
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    try:
        return SmolVLAPolicy(config)
    except OSError as e:
        raise OSError(
            f"SmolVLA needs the SmolVLM config, tokenizer and processor of vlm_model_name="
            f"{config.vlm_model_name!r} (even when every weight comes from the checkpoint), and they could not "
            f"be read: {e}. Pass vlm_model_name=<local folder> to use a local copy."
        ) from e


def _load_weights(policy: nn.Module, weights: Path, strict: bool) -> None:
    """Load ``model.safetensors`` into ``policy`` after checking keys and shapes against it."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model

    expected = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{weights} is not a readable safetensors file: {e}") from e
    mismatched = [f"{k}: checkpoint {found[k]} vs architecture {expected[k]}"
                  for k in found if k in expected and found[k] != expected[k]]
    if mismatched:
        raise ValueError(f"weights in {weights} do not match the SmolVLA architecture built from its config "
                         f"({len(mismatched)} shape mismatches), e.g. " + "; ".join(mismatched[:5]))
    missing, unexpected = load_model(policy, str(weights), strict=False, device="cpu")
    if strict and (missing or unexpected):
        hint = ""
        if any(k.startswith(_LEGACY_NORM_PREFIXES) for k in unexpected):
            hint = (" The unexpected normalisation buffers mean a checkpoint from before lerobot 0.4: migrate it with "
                    "`python -m lerobot.processor.migrate_policy_normalization --pretrained-path <dir>`.")
        raise ValueError(
            f"weights in {weights} do not match the SmolVLA architecture: {len(missing)} missing keys "
            f"(e.g. {sorted(missing)[:5]}), {len(unexpected)} unexpected keys (e.g. {sorted(unexpected)[:5]}).{hint} "
            f"Pass strict=False to load anyway."
        )


def _make_preprocessor(config, checkpoint_dir: Path | None, device: torch.device):
    """The checkpoint's saved preprocessor when it has one, else lerobot's SmolVLA pipeline (no stats)."""
    from lerobot.policies.smolvla.processor_smolvla import make_smolvla_pre_post_processors

    if checkpoint_dir is not None and (checkpoint_dir / PREPROCESSOR_FILE).is_file():
        from lerobot.processor import PolicyProcessorPipeline
        from lerobot.processor.converters import batch_to_transition, transition_to_batch

        overrides = {"device_processor": {"device": str(device)},
                     "tokenizer_processor": {"tokenizer_name": config.vlm_model_name}}
        try:
            return PolicyProcessorPipeline.from_pretrained(
                str(checkpoint_dir), config_filename=PREPROCESSOR_FILE, overrides=overrides,
                to_transition=batch_to_transition, to_output=transition_to_batch,
            )
        except Exception as e:
            raise ValueError(f"could not load the preprocessor {checkpoint_dir / PREPROCESSOR_FILE}: "
                             f"{type(e).__name__}: {e}") from e
    pre, _ = make_smolvla_pre_post_processors(config, dataset_stats=None)
    return pre


class SmolVLABackbone(PinnedFrozenBackbone):
    """Frozen SmolVLA -> h = Eq. 17 pooled last-VLM-layer K, V: ``embed(obs, tasks) -> (B, 2 H_kv D)``.

    Args:
        checkpoint: local directory (``config.json`` + ``model.safetensors``) or Hub id
            (e.g. ``"lerobot/smolvla_base"``).
        camera_map: observation camera name -> SmolVLA image feature (``"camera1"`` or
            ``"observation.images.camera1"``); None matches cameras by name.
        allow_missing_cameras: let image features without a camera be handled by lerobot's rule.
        device: torch device (default CUDA if available, else CPU).
        dtype: model dtype (default bf16 on CUDA, float32 on CPU); a torch.dtype or its name.
        vlm_model_name: override of the config's SmolVLM id/folder (tokenizer, processor, config).
        strict: missing or unexpected weight keys are an error (shape mismatches always are).
        layer: the VLM layer whose K, V are pooled (-1: the last, Eq. 17; 0 .. num_vlm_layers - 1, or negative
            from the end).
        pool: the prefix positions averaged: ``prefix`` (all real tokens, Eq. 17) or ``images`` (the cameras'
            tokens only, before the language and the state).

    Raises:
        FileNotFoundError: missing directory / files, or a Hub id that cannot be fetched.
        ValueError: a config that is not SmolVLA, weights that do not match, a bad camera_map.
        OSError: the SmolVLM folder/id named by vlm_model_name cannot be read.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        *,
        camera_map: Mapping[str, str] | None = None,
        allow_missing_cameras: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        vlm_model_name: str | None = None,
        strict: bool = True,
        layer: int = -1,
        pool: str = "prefix",
    ):
        super().__init__()
        ckpt_dir = resolve_checkpoint(checkpoint)
        config = load_smolvla_config(ckpt_dir)
        weights = ckpt_dir / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{ckpt_dir} has {CONFIG_FILE} but no {WEIGHTS_FILE}")
        if vlm_model_name is not None:
            config.vlm_model_name = str(vlm_model_name)
        config.load_vlm_weights = False  # every weight comes from model.safetensors
        policy = _build_policy(config)
        _load_weights(policy, weights, strict)
        self.checkpoint = str(checkpoint)
        self._setup(policy, ckpt_dir, camera_map, allow_missing_cameras, device, dtype, layer, pool)

    @classmethod
    def from_config(
        cls,
        config,
        *,
        camera_map: Mapping[str, str] | None = None,
        allow_missing_cameras: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        seed: int | None = None,
    ) -> "SmolVLABackbone":
        """Random-weight SmolVLA built from a ``SmolVLAConfig`` (its ``vlm_model_name`` must be readable).

        ``seed`` seeds the initialisation without touching the global RNG state.
        """
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            policy = _build_policy(config)
        self.checkpoint = None
        self._setup(policy, None, camera_map, allow_missing_cameras, device, dtype)
        return self

    def _setup(self, policy, ckpt_dir, camera_map, allow_missing_cameras, device, dtype, layer: int = -1,
               pool: str = "prefix") -> None:
        n = int(policy.model.vlm_with_expert.num_vlm_layers)
        if not -n <= int(layer) < n:
            raise ValueError(f"backbone.layer must be in [{-n}, {n - 1}] (this SmolVLA has {n} VLM layers), got {layer}")
        if pool not in POOLS:
            raise ValueError(f"backbone.pool must be one of {POOLS}, got {pool!r}")
        self.layer, self.pool = int(layer) % n, str(pool)
        self._pin(device, dtype)
        policy.config.device = str(self._device)
        policy.to(device=self._device, dtype=self._dtype)
        policy.requires_grad_(False)
        self.policy = policy
        self.preprocessor = _make_preprocessor(policy.config, ckpt_dir, self._device)
        self.camera_map = self._resolve_camera_map(camera_map, allow_missing_cameras)
        self.eval()

    def _resolve_camera_map(self, camera_map, allow_missing: bool) -> dict[str, str]:
        features = list(self.policy.config.image_features)
        if not features:
            raise ValueError("this SmolVLA config declares no image features "
                             "(config.input_features has no VISUAL entry)")
        required = [f for f in features if not f.startswith(EMPTY_CAMERA_PREFIX)]
        if camera_map is None:
            mapping = {f[len(IMAGE_PREFIX):]: f for f in required}
        else:
            mapping = {}
            for cam, feat in dict(camera_map).items():
                full = feat if str(feat).startswith(IMAGE_PREFIX) else IMAGE_PREFIX + str(feat)
                if full not in features:
                    raise ValueError(f"camera_map maps camera {cam!r} to {feat!r}, which is not an image feature of "
                                     f"this SmolVLA checkpoint; its image features are {features}")
                mapping[str(cam)] = full
            if len(set(mapping.values())) != len(mapping):
                raise ValueError(f"camera_map sends two cameras to the same SmolVLA image feature: {dict(camera_map)}")
        uncovered = [f for f in required if f not in mapping.values()]
        if uncovered and not allow_missing:
            raise ValueError(f"SmolVLA image features {uncovered} have no camera in "
                             f"camera_map={dict(camera_map or {})}; map a camera to each, or pass "
                             f"allow_missing_cameras=True")
        return mapping

    # ----------------------------------------------------------------- properties

    @property
    def config(self):
        """The lerobot ``SmolVLAConfig``."""
        return self.policy.config

    @property
    def kv_dims(self) -> tuple[int, int]:
        """(H_kv, D) of the VLM's text layers, from its config."""
        return text_kv_dims(self.policy.model.vlm_with_expert.config.text_config)

    @property
    def embedding_dim(self) -> int:
        """2 * H_kv * D, from the config (no forward pass)."""
        h, d = self.kv_dims
        return 2 * h * d

    @property
    def state_dim(self) -> int | None:
        feat = self.policy.config.robot_state_feature
        return int(feat.shape[0]) if feat is not None else None

    # ----------------------------------------------------------------- embedding

    def _batch(self, observation: Mapping, tasks: Sequence[str]) -> dict:
        from lerobot.utils.constants import OBS_STATE

        if not isinstance(observation, Mapping) or "state" not in observation or "images" not in observation:
            raise ValueError("SmolVLA backbone expects observation = "
                             "{'state': (B, Ds), 'images': {camera: (B, 3, H, W)}}")
        if isinstance(tasks, str):
            raise TypeError("tasks must be a list of B strings, not one string")
        tasks = list(tasks)
        state = torch.as_tensor(observation["state"])
        if state.ndim != 2:
            raise ValueError(f"observation['state'] must be (B, Ds), got {tuple(state.shape)}")
        b, ds = state.shape
        if len(tasks) != b or not all(isinstance(t, str) for t in tasks):
            raise ValueError(f"tasks must be {b} strings (one per batch row), got {len(tasks)}")
        cfg = self.policy.config
        want = self.state_dim
        if want is not None and ds != want:
            raise ValueError(f"observation['state'] has {ds} dims but this SmolVLA checkpoint was trained on "
                             f"a {want}-d observation.state")
        if ds > cfg.max_state_dim:
            raise ValueError(f"observation['state'] has {ds} dims > SmolVLA max_state_dim={cfg.max_state_dim}")
        images = observation["images"]
        batch = {OBS_STATE: state.to(self._device, torch.float32)}
        for cam, feat in self.camera_map.items():
            if cam not in images:
                raise KeyError(f"observation['images'] has no camera {cam!r} (SmolVLA image feature {feat}); cameras "
                               f"given: {sorted(images)}. Use camera_map to map your camera names.")
            img = torch.as_tensor(images[cam])
            if img.ndim != 4 or img.shape[0] != b or img.shape[1] != 3:
                raise ValueError(f"camera {cam!r} must be ({b}, 3, H, W), got {tuple(img.shape)}")
            if not img.is_floating_point():
                raise TypeError(f"camera {cam!r} must be float in [0, 1], got {img.dtype}")
            batch[feat] = img.to(self._device, torch.float32)
        batch["task"] = tasks
        return batch

    @torch.no_grad()
    def embed(self, observation: Mapping, tasks: Sequence[str]) -> torch.Tensor:
        """h = [K_pool, V_pool] of the last VLM layer over the prefix (Eq. 17): (B, embedding_dim) float32.

        Args:
            observation: ``{"state": (B, Ds) float, "images": {camera: (B, 3, H, W) float in [0, 1]}}``.
            tasks: B task strings.
        """
        from lerobot.policies.smolvla.modeling_smolvla import make_att_2d_masks
        from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

        batch = self.preprocessor(self._batch(observation, tasks))
        policy = self.policy
        batch = policy._prepare_batch(batch)  # lerobot's aloha state adaptation, a no-op otherwise
        images, img_masks = policy.prepare_images(batch)
        state = policy.prepare_state(batch).to(self._dtype)
        model = policy.model
        embs, pad_masks, att_masks = model.embed_prefix(
            images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK], state=state
        )
        att_2d = make_att_2d_masks(pad_masks, att_masks)
        position_ids = torch.cumsum(pad_masks, dim=1) - 1
        _, kv = model.vlm_with_expert.forward(
            attention_mask=att_2d, position_ids=position_ids, past_key_values=None,
            inputs_embeds=[embs, None], use_cache=True, fill_kv_cache=True,
        )
        cache = kv[self.layer]
        mask = pad_masks
        if self.pool == "images":  # the prefix is [camera tokens ..., language tokens, state token]
            n_images = pad_masks.shape[1] - batch[OBS_LANGUAGE_TOKENS].shape[1] - 1
            mask = pad_masks & (torch.arange(pad_masks.shape[1], device=pad_masks.device) < n_images)[None]
        return pool_kv(cache["key_states"].float(), cache["value_states"].float(), mask)
