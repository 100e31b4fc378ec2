"""Image observation encoders (ResNet-18 / ResNet-10) for the critics and the refinement actor.

Contract (the same as :class:`dual_actor.nets.common.StateEncoder`): ``forward(obs) -> (B, out_dim)``
and ``out_dim``. For :class:`MultiCameraEncoder`, ``obs`` is ``{"images": {camera: (B, 3, H, W)},
"state": (B, Ds)}``.

Images: ``(B, 3, H, W)``, either ``uint8`` in [0, 255] or floating point in [0, 1] (RGB, channel
first). ImageNet normalisation happens inside; nothing is range-checked (that would cost a
device sync per call).

Pooling (:class:`ImagePool`):

- ``"spatial"`` (default): HIL-SERL's / lerobot SAC's spatial learned embeddings. A learnable
  kernel ``(C, H', W', F)`` weights every feature-map location separately, giving ``(B, C*F)``;
  then Dropout -> Linear -> LayerNorm -> Tanh. Manipulation critics need *where* things are (the
  gripper relative to the part); global averaging throws position away. Cost: the kernel ties
  the encoder to one image size (128x128 -> 4x4 map), and C*H'*W'*F = 65 k parameters.
- ``"avg"``: global average pooling ``(B, C)``, then the same projection (or none with
  ``out_dim=None``). Size-agnostic; the standard ImageNet head.

Freezing: ``freeze=True`` freezes the ResNet trunk only (``requires_grad=False``, eval mode
kept even under ``.train()`` so BatchNorm statistics never move, forward under ``torch.no_grad``).
The pooling head stays trainable, as in HIL-SERL and lerobot (``freeze_vision_encoder``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from dual_actor.nets.common import StateEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_LAYERS = {"resnet18": [2, 2, 2, 2], "resnet10": [1, 1, 1, 1]}
POOLINGS = ("spatial", "avg")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def resnet_feature_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Feature-map ``(H', W')`` of a torchvision ResNet trunk for an ``(H, W)`` input (stride 32)."""

    def conv(n, k, s, p):
        return (n + 2 * p - k) // s + 1

    out = []
    for n in _pair(image_size):
        n = conv(n, 7, 2, 3)  # conv1
        n = conv(n, 3, 2, 1)  # maxpool
        for _ in range(3):  # layer2..4 downsample
            n = conv(n, 3, 2, 1)
        out.append(n)
    return out[0], out[1]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"ResNet weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickled module, corrupt file
            raise ValueError(
                f"{path}: not a loadable state_dict ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "save `model.state_dict()` with torch.save or safetensors"
            ) from e
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (name -> tensor), got {type(state).__name__}")
    return dict(state)


class ResNetTrunk(nn.Module):
    """torchvision ResNet without its head: ``images (B, 3, H, W) -> features (B, 512, H/32, W/32)``.

    Args:
        arch: ``"resnet18"`` (BasicBlock [2, 2, 2, 2], 11.2 M parameters) or ``"resnet10"``
            (BasicBlock [1, 1, 1, 1], 4.9 M, the depth of HIL-SERL's ResNet-10).
        weights_path: a torchvision-layout state_dict (``.pt``/``.pth`` via ``torch.save`` or
            ``.safetensors``), e.g. ImageNet weights; ``fc.*`` keys are ignored. None: random init.
        freeze: see the module docstring.

    Raises:
        ValueError: unknown arch; a weights file whose keys or shapes do not match ``arch``
            (the message lists missing, unexpected and mis-shaped keys).
        FileNotFoundError: ``weights_path`` does not exist.
    """

    out_channels = 512

    def __init__(self, arch: str = "resnet18", weights_path: str | Path | None = None, freeze: bool = False):
        super().__init__()
        if arch not in RESNET_LAYERS:
            raise ValueError(f"unknown ResNet arch {arch!r}; available: {sorted(RESNET_LAYERS)}")
        self.arch = arch
        self.freeze = bool(freeze)
        net = ResNet(BasicBlock, RESNET_LAYERS[arch])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.weights_path = str(weights_path) if weights_path is not None else None
        if weights_path is not None:
            self.load_weights(weights_path)
        if self.freeze:
            self.requires_grad_(False)
            self.eval()

    def load_weights(self, weights_path: str | Path) -> None:
        """Copy a torchvision-layout state_dict into the trunk (strict on keys and shapes)."""
        path = Path(weights_path).expanduser()
        state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
        own = self.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            deeper = any(k.startswith("layer1.1.") for k in unexpected)
            raise ValueError(
                f"{path} does not match {self.arch} (torchvision layout): "
                f"{len(missing)} missing {missing[:6]}, {len(unexpected)} unexpected {unexpected[:6]}, "
                f"{len(shapes)} mis-shaped {shapes[:4]}"
                + (" -- the file looks like a deeper ResNet (e.g. resnet18 weights for resnet10)" if deeper else "")
            )
        self.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> "ResNetTrunk":
        super().train(mode and not self.freeze)  # a frozen trunk (BatchNorm included) stays in eval
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] or float [0, 1] ``(B, 3, H, W)`` -> ImageNet-normalised, in the weights' dtype."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        dtype = self.conv1.weight.dtype
        x = images.to(dtype) / 255.0 if images.dtype == torch.uint8 else images.to(dtype)
        return (x - self.mean.to(dtype)) / self.std.to(dtype)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(images)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.freeze:
            with torch.no_grad():
                return self._features(images)
        return self._features(images)


class SpatialLearnedEmbeddings(nn.Module):
    """``features (B, C, H, W) -> (B, C*F)``: sum over locations of features x a learnable
    ``(C, H, W, F)`` kernel (HIL-SERL; lerobot SAC's ``SpatialLearnedEmbeddings``, same init)."""

    def __init__(self, channels: int, height: int, width: int, num_features: int = 8):
        super().__init__()
        self.kernel = nn.Parameter(torch.empty(channels, height, width, num_features))
        nn.init.kaiming_normal_(self.kernel, mode="fan_in", nonlinearity="linear")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        c, h, w, _ = self.kernel.shape
        if features.shape[1:] != (c, h, w):
            raise ValueError(
                f"spatial pooling was built for a ({c}, {h}, {w}) feature map, got {tuple(features.shape[1:])}: "
                "the encoder's image_size does not match the images"
            )
        return torch.einsum("bchw,chwf->bcf", features, self.kernel.to(features.dtype)).flatten(1)


class ImagePool(nn.Module):
    """Pooling head: ``features (B, C, H', W') -> (B, out_dim)``.

    Args:
        channels, feature_size: the trunk's C and (H', W').
        pooling: ``"spatial"`` or ``"avg"`` (module docstring).
        out_dim: projection width (Dropout -> Linear -> LayerNorm -> Tanh); None: no projection
            (``out_dim`` = C*F for spatial, C for avg).
        num_spatial_features: F of the spatial kernel (8 as in HIL-SERL / lerobot).
        dropout: before the projection (0.1 as in HIL-SERL / lerobot).
    """

    def __init__(
        self,
        channels: int,
        feature_size: tuple[int, int],
        pooling: str = "spatial",
        out_dim: int | None = 256,
        num_spatial_features: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; available: {POOLINGS}")
        self.pooling = pooling
        if pooling == "spatial":
            self.pool = SpatialLearnedEmbeddings(channels, *feature_size, num_spatial_features)
            pooled = channels * num_spatial_features
        else:
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            pooled = channels
        if out_dim is None:
            self.proj = nn.Identity()
            self.out_dim = pooled
        else:
            self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled, out_dim), nn.LayerNorm(out_dim), nn.Tanh())
            self.out_dim = int(out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(features))


class ResNetEncoder(nn.Module):
    """One camera: ``images (B, 3, H, W) uint8 or float in [0, 1] -> (B, out_dim)``.

    Args:
        arch, weights_path, freeze: the trunk (:class:`ResNetTrunk`).
        pooling, out_dim, num_spatial_features, dropout: the head (:class:`ImagePool`).
        image_size: ``H`` or ``(H, W)`` the spatial kernel is built for (default 128, as in
            HIL-SERL / ConRFT); unused by ``"avg"``.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        weights_path: str | Path | None = None,
        freeze: bool = False,
        pooling: str = "spatial",
        image_size: int | Sequence[int] = 128,
        out_dim: int | None = 256,
        num_spatial_features: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.trunk = ResNetTrunk(arch, weights_path, freeze)
        self.head = ImagePool(
            self.trunk.out_channels, resnet_feature_size(image_size), pooling, out_dim, num_spatial_features, dropout
        )
        self.out_dim = self.head.out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


def _module_key(camera: str) -> str:
    return camera.replace(".", "_")


class MultiCameraEncoder(nn.Module):
    """Observation encoder over cameras + an optional state vector.

    ``obs = {"images": {camera: (B, 3, H, W)}, "state": (B, state_dim)} -> (B, out_dim)``:
    per camera a ResNet trunk and its own pooling head (``camera_dim`` each), the state through
    ``Linear -> LayerNorm -> Tanh`` (``state_feature_dim``), concatenated, then
    ``Linear -> LayerNorm -> ReLU`` to ``out_dim`` (the final layer of ``StateEncoder``).

    Args:
        cameras: camera names (keys of ``obs["images"]``).
        arch, weights_path, freeze: the trunk(s) (:class:`ResNetTrunk`).
        shared: one trunk for all cameras (images batched through it together when they have one
            shape) or one trunk per camera. Pooling heads are always per camera (the spatial
            kernel is view-specific).
        trunk: an existing :class:`ResNetTrunk` to use (implies ``shared``), or an existing
            :class:`MultiCameraEncoder` whose trunk(s) to use (its ``shared`` layout, the same cameras):
            several encoders, e.g. the per-task critics, their targets and the refinement actor, share one
            frozen trunk and its features (``obs["features"]``, see :meth:`forward`).
        pooling, image_size, camera_dim, num_spatial_features, dropout: per-camera heads.
        state_dim: size of ``obs["state"]``; 0 means no state input.
        state_feature_dim: width of the state branch.
        out_dim: output width.

    Raises:
        ValueError: no cameras, camera names colliding after "." -> "_", unknown arch/pooling.
        KeyError (in forward): a camera or the state missing from ``obs``.
    """

    def __init__(
        self,
        cameras: Sequence[str],
        arch: str = "resnet18",
        weights_path: str | Path | None = None,
        freeze: bool = False,
        shared: bool = True,
        trunk: ResNetTrunk | None = None,
        pooling: str = "spatial",
        image_size: int | Sequence[int] = 128,
        camera_dim: int | None = 256,
        num_spatial_features: int = 8,
        dropout: float = 0.1,
        state_dim: int = 0,
        state_feature_dim: int = 64,
        out_dim: int = 256,
    ):
        super().__init__()
        self.cameras = list(cameras)
        if not self.cameras:
            raise ValueError("MultiCameraEncoder needs at least one camera")
        keys = [_module_key(c) for c in self.cameras]
        if len(set(keys)) != len(keys):
            raise ValueError(f"camera names collide after replacing '.' by '_': {self.cameras}")
        if isinstance(trunk, MultiCameraEncoder):
            if trunk.cameras != self.cameras:
                raise ValueError(f"cannot share the trunk of an encoder of cameras {trunk.cameras} with {self.cameras}")
            shared, trunk = trunk.shared, (trunk.trunk if trunk.shared else trunk.trunks)
        self.shared = shared or isinstance(trunk, ResNetTrunk)
        if trunk is not None and not self.shared:
            self.trunks = trunk  # another encoder's per-camera trunks (an nn.ModuleDict)
        elif trunk is not None:
            self.trunk = trunk
        elif self.shared:
            self.trunk = ResNetTrunk(arch, weights_path, freeze)
        else:
            self.trunks = nn.ModuleDict({k: ResNetTrunk(arch, weights_path, freeze) for k in keys})
        channels = ResNetTrunk.out_channels
        fsize = resnet_feature_size(image_size)
        self.heads = nn.ModuleDict(
            {k: ImagePool(channels, fsize, pooling, camera_dim, num_spatial_features, dropout) for k in keys}
        )
        self.state_dim = int(state_dim)
        total = sum(h.out_dim for h in self.heads.values())
        if self.state_dim > 0:
            self.state_net = nn.Sequential(
                nn.Linear(self.state_dim, state_feature_dim), nn.LayerNorm(state_feature_dim), nn.Tanh()
            )
            total += state_feature_dim
        self.out_dim = int(out_dim)
        self.proj = nn.Sequential(nn.Linear(total, out_dim), nn.LayerNorm(out_dim), nn.ReLU())

    def _images(self, obs: Mapping) -> list[torch.Tensor]:
        if not isinstance(obs, Mapping) or "images" not in obs:
            raise KeyError("image encoder expects obs = {'images': {camera: (B, 3, H, W)}, 'state': (B, Ds)}")
        images = obs["images"]
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise KeyError(f"cameras {missing} missing from obs['images'] (has {sorted(images)})")
        return [images[c] for c in self.cameras]

    def image_features(self, obs: Mapping) -> list[torch.Tensor]:
        """Trunk features per camera, in ``cameras`` order: ``[(B, 512, H', W')]``.

        Compute once and pass to :meth:`forward` (``features=``) to reuse a frozen shared trunk's
        output across several heads (lerobot SAC's feature cache).
        """
        images = self._images(obs)
        if not self.shared:
            return [self.trunks[_module_key(c)](x) for c, x in zip(self.cameras, images)]
        if len({tuple(x.shape) for x in images}) == 1 and len({x.dtype for x in images}) == 1:
            return list(self.trunk(torch.cat(images, 0)).chunk(len(images), 0))
        return [self.trunk(x) for x in images]

    @property
    def trunk_frozen(self) -> bool:
        trunks = [self.trunk] if self.shared else list(self.trunks.values())
        return all(t.freeze for t in trunks)

    def forward(self, obs: Mapping, features: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``obs`` may carry ``"features"``: :meth:`image_features` of its images, computed once by the caller
        for every encoder on this trunk (a frozen trunk's features do not depend on the consumer)."""
        if features is None and isinstance(obs, Mapping):
            features = obs.get("features")
        feats = self.image_features(obs) if features is None else list(features)
        parts = [self.heads[_module_key(c)](f) for c, f in zip(self.cameras, feats)]
        if self.state_dim > 0:
            if "state" not in obs:
                raise KeyError(f"obs has no 'state' (the encoder was built with state_dim={self.state_dim})")
            parts.append(self.state_net(obs["state"].to(parts[0].dtype)))
        return self.proj(torch.cat(parts, -1))


OBS_ENCODERS = ("state", "h", "resnet18", "resnet10")


def build_obs_encoder(kind: str, **kw) -> nn.Module:
    """Observation encoder by kind: ``"state"`` -> :class:`StateEncoder` (``obs_dim``, ``out_dim``,
    ``hidden``); ``"resnet18"`` / ``"resnet10"`` -> :class:`MultiCameraEncoder` with that arch.

    Raises:
        ValueError: unknown kind, or ``arch`` given together with a resnet kind.
    """
    if kind == "state":
        return StateEncoder(**kw)
    if kind in RESNET_LAYERS:
        if "arch" in kw and kw["arch"] != kind:
            raise ValueError(f"obs encoder kind {kind!r} conflicts with arch={kw['arch']!r}")
        kw.pop("arch", None)
        return MultiCameraEncoder(arch=kind, **kw)
    raise ValueError(f"unknown observation encoder kind {kind!r}; available: {list(OBS_ENCODERS)}")


IMAGE_ENCODER_OPTIONS = (
    "weights_path", "freeze", "shared", "pooling", "camera_dim", "num_spatial_features", "dropout",
    "state_feature_dim",
)


def obs_encoder_from_spec(
    spec: Mapping | None,
    obs_dim: int,
    out_dim: int,
    cameras: Sequence[str] = (),
    image_size: int | Sequence[int] | None = None,
    trunk: "MultiCameraEncoder | None" = None,
    h_dim: int | None = None,
) -> nn.Module:
    """The observation encoder of the critics and the refinement actor, from an ``image_encoder`` config.

    Args:
        spec: ``{"kind": "state"}`` (or None) -> ``StateEncoder(obs_dim, out_dim)`` over the state
            vector; ``{"kind": "h"}`` -> ``StateEncoder(h_dim + obs_dim, out_dim)`` over [h, state]: the frozen
            backbone's h stored with each transition (a VLA's view of the cameras), the learner never runs
            the backbone; ``{"kind": "resnet18" | "resnet10", **options}`` -> :class:`MultiCameraEncoder`
            over ``cameras`` with the state vector (``state_dim=obs_dim``), options among
            :data:`IMAGE_ENCODER_OPTIONS` (``weights_path``, ``freeze``, ``pooling``, ...).
        obs_dim: width of the state vector; out_dim: encoder output width.
        cameras: camera names (keys of ``obs["images"]``), in the order images are stored.
        image_size: the cameras' H (= W) or (H, W); needed by ``pooling="spatial"``.
        trunk: an encoder whose trunk(s) the new encoder uses (:class:`MultiCameraEncoder`'s ``trunk``).

    Raises:
        ValueError: unknown kind or option; an image kind without cameras or without image_size.
    """
    spec = dict(spec or {"kind": "state"})
    kind = spec.pop("kind", "state")
    if kind in ("state", "h"):
        if spec:
            raise ValueError(f"image_encoder kind {kind!r} takes no options, got {sorted(spec)}")
        if kind == "h" and not h_dim:
            raise ValueError("image_encoder=h reads the backbone's h: its width (h_dim) is needed")
        return StateEncoder(obs_dim + (int(h_dim) if kind == "h" else 0), out_dim)
    if kind not in RESNET_LAYERS:
        raise ValueError(f"unknown image_encoder kind {kind!r}; available: {list(OBS_ENCODERS)}")
    unknown = sorted(set(spec) - set(IMAGE_ENCODER_OPTIONS))
    if unknown:
        raise ValueError(f"image_encoder {kind}: unknown option(s) {unknown}; valid: {list(IMAGE_ENCODER_OPTIONS)}")
    if not cameras:
        raise ValueError(f"image_encoder={kind} needs camera images, but no cameras are configured (env.cameras)")
    if image_size is None:
        raise ValueError(f"image_encoder={kind} needs the cameras' image_size (env.image_size)")
    if spec.get("weights_path") in ("", None):
        spec["weights_path"] = None
    return MultiCameraEncoder(list(cameras), arch=kind, image_size=image_size, state_dim=int(obs_dim),
                              out_dim=int(out_dim), trunk=trunk, **spec)


__all__ = [
    "obs_encoder_from_spec",
    "IMAGE_ENCODER_OPTIONS",
    "ResNetTrunk",
    "SpatialLearnedEmbeddings",
    "ImagePool",
    "ResNetEncoder",
    "MultiCameraEncoder",
    "build_obs_encoder",
    "resnet_feature_size",
    "OBS_ENCODERS",
]
