"""Anchor benchmark: lerobot 0.4.4's SAC learner update rate.

This is the reference point that ``dual-actor``'s own learner update rate is
compared against, in the same process and on the same hardware. It builds
lerobot's own ``SACPolicy`` (``lerobot.policies.sac.modeling_sac``) with lerobot's
default ``SACConfig`` (network sizes, lrs, ``num_critics=2``, ``utd_ratio=1``,
``policy_update_freq=1``, ``grad_clip_norm=40``, ``use_torch_compile=True``) and
replays, on a fixed random batch, the body of one optimisation step of
``lerobot.rl.learner.add_actor_information_and_train``. The optimizers, the
observation-feature cache and the NaN check are lerobot's own functions
(``make_optimizers_and_scheduler``, ``get_observation_features``,
``check_nan_in_transition`` imported from ``lerobot.rl.learner``). Nothing is
reimplemented.

Not timed: replay-buffer sampling, gRPC transition/parameter transport, pushing
the policy to the actor, wandb logging, checkpointing. Only the optimisation step
is measured.

Images. lerobot 0.4.4's ``SACConfig`` has ``vision_encoder_name=None`` and
``freeze_vision_encoder=True`` by default: with no name, every camera goes through
``DefaultImageEncoder``, four 32-channel convolutions (7x7/2, 5x5/2, 3x3/2, 3x3/2, ReLU; 48,864
parameters, a 32x6x6 map from 128x128), frozen (``requires_grad=False``, still in train mode), run on every forward pass
(the learner's feature cache, ``get_observation_features``, only serves a *named* frozen encoder).
A name (``"helper2424/resnet10"`` for HIL-SERL's ResNet-10) selects ``PretrainedImageEncoder``:
``transformers.AutoModel.from_pretrained(name, trust_remote_code=True)``, whose
``last_hidden_state`` ``(B, 512, H/32, W/32)`` feeds one ``SpatialLearnedEmbeddings`` (8 features)
+ Dropout/Linear/LayerNorm/Tanh head per camera, the same head as ours. All cameras go through one
encoder batched together (``shared_encoder=True``: actor and critics share it; the actor detaches
its output, so only the critic loss trains it).

``vision_encoder="resnet18" | "resnet10"`` here takes that named-encoder path without a hub: it
writes a randomly initialised transformers ``ResNetModel`` (``layer_type="basic"``,
``hidden_sizes=[64, 128, 256, 512]``, ``depths=[2, 2, 2, 2]`` or ``[1, 1, 1, 1]``; 11.18 M / 4.91 M
parameters, the same count and layer shapes as torchvision's ResNet-18 / our ResNet-10 trunk) to a
temporary folder and gives that folder as ``vision_encoder_name``. ``freeze_vision_encoder`` then
decides what the learner does: True (lerobot's default) -> the trunk runs twice per update under
``no_grad`` (obs, next obs) and its features are cached for the critic, actor and temperature
passes; False -> no cache, the trunk runs in every critic / target / actor pass and the critic
loss back-propagates into it (fine-tuning, our default ``image_encoder.freeze=false``).

Run:
    python benchmarks/lerobot_sac_anchor.py --updates 200 --batch-size 256 --device cpu --json out.json
    python benchmarks/lerobot_sac_anchor.py --num-cameras 2 --image-shape 3 128 128 \
        --vision-encoder resnet18 --no-freeze --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch


HF_RESNET_DEPTHS = {"resnet18": [2, 2, 2, 2], "resnet10": [1, 1, 1, 1]}


def write_hf_resnet(arch: str, folder: Path, seed: int = 0) -> str:
    """Write a randomly initialised transformers ``ResNetModel`` of ``arch`` to ``folder``; return the path.

    ``layer_type="basic"``, stem 7x7/2 conv (64) + 3x3/2 max-pool, stages of 64/128/256/512 channels
    with ``HF_RESNET_DEPTHS[arch]`` BasicBlocks: torchvision's ResNet-18 (11,176,512 parameters
    without ``fc``) or the 4,905,792-parameter ResNet-10 our ``image_encoder=resnet10`` builds. The
    folder loads with ``AutoModel.from_pretrained(folder, trust_remote_code=True)``, which is how
    lerobot's ``PretrainedImageEncoder`` reads ``SACConfig.vision_encoder_name``.

    Raises:
        ValueError: unknown ``arch``.
    """
    from transformers import ResNetConfig, ResNetModel

    if arch not in HF_RESNET_DEPTHS:
        raise ValueError(f"unknown arch {arch!r}; available: {sorted(HF_RESNET_DEPTHS)}")
    torch.manual_seed(seed)
    config = ResNetConfig(
        num_channels=3, embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=HF_RESNET_DEPTHS[arch],
        layer_type="basic", hidden_act="relu", downsample_in_first_stage=False,
    )
    ResNetModel(config).save_pretrained(str(folder))
    return str(folder)


def make_lerobot_sac_update(
    batch_size: int = 256,
    state_dim: int = 39,
    action_dim: int = 4,
    device: str = "cpu",
    image_shape: tuple[int, int, int] | None = None,
    num_cameras: int = 0,
    seed: int = 0,
    use_torch_compile: bool | None = None,
    vision_encoder: str | None = None,
    freeze_vision_encoder: bool | None = None,
) -> Callable[[], None]:
    """Build lerobot 0.4.4's SACPolicy and return a closure that runs ONE learner update.

    The observation is ``observation.state`` of size ``state_dim`` (left out if
    ``state_dim == 0``), plus ``num_cameras`` images of shape ``image_shape``
    (C, H, W) under ``observation.images.cam{i}`` if ``num_cameras > 0``. With
    lerobot's default ``vision_encoder_name=None`` (``vision_encoder=None`` here),
    images go through lerobot's ``DefaultImageEncoder`` (4-conv CNN, frozen by
    default) on every forward pass. That is because ``get_observation_features``
    only caches features for a named pretrained encoder. The anchor reproduces this.
    ``vision_encoder="resnet18" | "resnet10"`` builds a random transformers
    ``ResNetModel`` of that depth in a temporary folder and passes the folder as
    ``vision_encoder_name`` (lerobot's ``PretrainedImageEncoder`` path, see the
    module docstring); ``freeze_vision_encoder`` (None: lerobot's default, True)
    selects the cached-frozen or the fine-tuned path.

    Each call of the returned closure does what one iteration of lerobot's learner
    loop does with ``utd_ratio=1`` (``rl/learner.py``, the code after the
    ``for _ in range(utd_ratio - 1)`` loop):

    1. ``check_nan_in_transition(state, action, next_state)``
    2. ``get_observation_features(policy, state, next_state)``. This returns
       ``(None, None)`` unless a frozen pretrained vision encoder is configured.
    3. critic: ``policy.forward(batch, model="critic")`` -> ``zero_grad`` ->
       ``backward`` -> ``clip_grad_norm_(critic_ensemble, 40).item()`` ->
       ``optimizers["critic"].step()``
    4. If ``optimization_step % policy_update_freq == 0`` (lerobot default
       ``policy_update_freq=1``, so every step), the learner runs this block
       ``policy_update_freq`` times:
       actor: ``forward(model="actor")`` -> backward -> clip(actor, 40) ->
       ``optimizers["actor"].step()`` (Adam over the actor params minus the
       shared encoder); then temperature: ``forward(model="temperature")`` ->
       backward -> clip([log_alpha], 40) -> ``optimizers["temperature"].step()``,
       then reads ``policy.temperature`` (a ``.item()``) as the learner does for
       logging.
    5. ``policy.update_target_networks()``: Polyak/EMA update of ``critic_target``
       with ``tau = critic_target_update_weight = 0.005``.

    The closure keeps its own ``optimization_step`` counter, so a non-default
    ``policy_update_freq`` would behave as it does in the learner. The anchor
    leaves it at lerobot's default of 1. The ``.item()`` calls on the losses and
    grad norms stay in, because the learner makes them every step for
    ``training_infos``. On GPU they synchronise the device each step, as they do
    in lerobot.

    The batch is fixed: random, float32, already on ``device``, actions in
    [-1, 1]. The learner does not normalise batches. lerobot 0.4.4 does
    normalisation in the actor-side processor pipeline, so no ``dataset_stats``
    take part in the update. As in the learner's last UTD step,
    ``complementary_info`` is not passed to ``forward``. Only the discrete critic
    would read it, and that is off (``num_discrete_actions=None``).

    API notes (lerobot 0.4.4):
      * ``SACPolicy`` has no ``update_temperature()``. ``temperature`` is a
        property, ``log_alpha.exp().item()``, so nothing needs calling after the
        temperature step.
      * ``make_optimizers_and_scheduler`` builds the temperature Adam with
        ``critic_lr``, not ``temperature_lr``. The two are equal (3e-4) by
        default.
      * ``use_torch_compile=True`` (the default) wraps ``critic_ensemble`` and
        ``critic_target`` in ``torch.compile``. Pass ``use_torch_compile=False``
        to measure eager mode. ``None`` keeps lerobot's default.
    """
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.sac.configuration_sac import SACConfig
    from lerobot.policies.sac.modeling_sac import SACPolicy
    from lerobot.rl.learner import (
        check_nan_in_transition,
        get_observation_features,
        make_optimizers_and_scheduler,
    )
    from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

    if num_cameras > 0 and image_shape is None:
        raise ValueError("num_cameras > 0 requires image_shape=(C, H, W)")
    if state_dim <= 0 and num_cameras <= 0:
        raise ValueError("need a state (state_dim > 0) and/or images (num_cameras > 0)")
    if vision_encoder is not None and vision_encoder not in HF_RESNET_DEPTHS:
        raise ValueError(f"vision_encoder must be None (lerobot's DefaultImageEncoder) or one of "
                         f"{sorted(HF_RESNET_DEPTHS)}, got {vision_encoder!r}")
    if vision_encoder is not None and num_cameras <= 0:
        raise ValueError(f"vision_encoder={vision_encoder!r} needs cameras (num_cameras > 0)")

    torch.manual_seed(seed)
    dev = torch.device(device)

    input_features: dict[str, PolicyFeature] = {}
    image_keys = [f"{OBS_IMAGES}.cam{i}" for i in range(num_cameras)]
    for key in image_keys:
        input_features[key] = PolicyFeature(type=FeatureType.VISUAL, shape=tuple(image_shape))
    if state_dim > 0:
        input_features[OBS_STATE] = PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))
    output_features = {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))}

    cfg_kwargs = {}
    if use_torch_compile is not None:
        cfg_kwargs["use_torch_compile"] = use_torch_compile
    if freeze_vision_encoder is not None:
        cfg_kwargs["freeze_vision_encoder"] = freeze_vision_encoder
    with tempfile.TemporaryDirectory(prefix="lerobot_sac_resnet_") as tmp:
        if vision_encoder is not None:
            cfg_kwargs["vision_encoder_name"] = write_hf_resnet(vision_encoder, Path(tmp) / vision_encoder)
        config = SACConfig(
            input_features=input_features,
            output_features=output_features,
            device=device,
            **cfg_kwargs,
        )
        # The learner calls make_policy(cfg.policy, env_cfg). That ends up calling
        # SACPolicy(config) and moving it to config.device. The weights are read here:
        # the folder is not needed afterwards.
        policy = SACPolicy(config).to(dev)
    policy.train()

    # make_optimizers_and_scheduler reads only cfg.policy.{actor_lr, critic_lr, num_discrete_actions}.
    optimizers, _ = make_optimizers_and_scheduler(cfg=SimpleNamespace(policy=config), policy=policy)

    clip_grad_norm_value = config.grad_clip_norm
    policy_update_freq = config.policy_update_freq
    assert config.utd_ratio == 1, "anchor reproduces the utd_ratio=1 path only"

    # Fixed random batch, shaped as ReplayBuffer.sample returns it.
    g = torch.Generator().manual_seed(seed + 1)

    def _obs() -> dict[str, torch.Tensor]:
        obs = {}
        for key in image_keys:
            obs[key] = torch.rand(batch_size, *image_shape, generator=g).to(dev)
        if state_dim > 0:
            obs[OBS_STATE] = torch.randn(batch_size, state_dim, generator=g).to(dev)
        return obs

    batch = {
        ACTION: (torch.rand(batch_size, action_dim, generator=g) * 2 - 1).to(dev),
        "reward": torch.randn(batch_size, generator=g).to(dev),
        "state": _obs(),
        "next_state": _obs(),
        "done": (torch.rand(batch_size, generator=g) < 0.05).float().to(dev),
    }

    step = {"optimization_step": 0}

    def update() -> None:
        actions = batch[ACTION]
        rewards = batch["reward"]
        observations = batch["state"]
        next_observations = batch["next_state"]
        done = batch["done"]

        check_nan_in_transition(observations=observations, actions=actions, next_state=next_observations)

        observation_features, next_observation_features = get_observation_features(
            policy=policy, observations=observations, next_observations=next_observations
        )

        forward_batch = {
            ACTION: actions,
            "reward": rewards,
            "state": observations,
            "next_state": next_observations,
            "done": done,
            "observation_feature": observation_features,
            "next_observation_feature": next_observation_features,
        }

        critic_output = policy.forward(forward_batch, model="critic")
        loss_critic = critic_output["loss_critic"]
        optimizers["critic"].zero_grad()
        loss_critic.backward()
        critic_grad_norm = torch.nn.utils.clip_grad_norm_(
            parameters=policy.critic_ensemble.parameters(), max_norm=clip_grad_norm_value
        ).item()
        optimizers["critic"].step()
        training_infos = {"loss_critic": loss_critic.item(), "critic_grad_norm": critic_grad_norm}

        if step["optimization_step"] % policy_update_freq == 0:
            for _ in range(policy_update_freq):
                actor_output = policy.forward(forward_batch, model="actor")
                loss_actor = actor_output["loss_actor"]
                optimizers["actor"].zero_grad()
                loss_actor.backward()
                actor_grad_norm = torch.nn.utils.clip_grad_norm_(
                    parameters=policy.actor.parameters(), max_norm=clip_grad_norm_value
                ).item()
                optimizers["actor"].step()
                training_infos["loss_actor"] = loss_actor.item()
                training_infos["actor_grad_norm"] = actor_grad_norm

                temperature_output = policy.forward(forward_batch, model="temperature")
                loss_temperature = temperature_output["loss_temperature"]
                optimizers["temperature"].zero_grad()
                loss_temperature.backward()
                temp_grad_norm = torch.nn.utils.clip_grad_norm_(
                    parameters=[policy.log_alpha], max_norm=clip_grad_norm_value
                ).item()
                optimizers["temperature"].step()
                training_infos["loss_temperature"] = loss_temperature.item()
                training_infos["temperature_grad_norm"] = temp_grad_norm
                training_infos["temperature"] = policy.temperature

        policy.update_target_networks()
        step["optimization_step"] += 1

    # Expose internals for tests and inspection.
    update.policy = policy  # type: ignore[attr-defined]
    update.optimizers = optimizers  # type: ignore[attr-defined]
    update.batch = batch  # type: ignore[attr-defined]
    update.config = config  # type: ignore[attr-defined]
    return update


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description="Time lerobot 0.4.4 SAC learner updates (anchor).")
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--state-dim", type=int, default=39)
    p.add_argument("--action-dim", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--image-shape", type=int, nargs=3, default=None, metavar=("C", "H", "W"))
    p.add_argument("--num-cameras", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="set SACConfig.use_torch_compile=False (lerobot default is True)",
    )
    p.add_argument(
        "--vision-encoder",
        choices=sorted(HF_RESNET_DEPTHS),
        default=None,
        help="a random transformers ResNet as SACConfig.vision_encoder_name (default: lerobot's DefaultImageEncoder)",
    )
    p.add_argument(
        "--no-freeze",
        action="store_true",
        help="set SACConfig.freeze_vision_encoder=False (lerobot default is True)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)

    update = make_lerobot_sac_update(
        batch_size=args.batch_size,
        state_dim=args.state_dim,
        action_dim=args.action_dim,
        device=args.device,
        image_shape=tuple(args.image_shape) if args.image_shape else None,
        num_cameras=args.num_cameras,
        seed=args.seed,
        use_torch_compile=False if args.no_compile else None,
        vision_encoder=args.vision_encoder,
        freeze_vision_encoder=False if args.no_freeze else None,
    )
    cfg = update.config
    n_params = sum(p.numel() for p in update.policy.parameters())
    print(
        f"lerobot SAC anchor: device={args.device} batch={args.batch_size} state_dim={args.state_dim} "
        f"action_dim={args.action_dim} cameras={args.num_cameras} image_shape={args.image_shape} "
        f"vision_encoder={args.vision_encoder or 'DefaultImageEncoder'} "
        f"freeze_vision_encoder={cfg.freeze_vision_encoder} "
        f"use_torch_compile={cfg.use_torch_compile} policy_update_freq={cfg.policy_update_freq} "
        f"utd_ratio={cfg.utd_ratio} params={n_params} torch_threads={torch.get_num_threads()} "
        f"torch={torch.__version__}"
    )

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        update()
    _sync(args.device)
    warm_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for _ in range(args.updates):
        update()
    _sync(args.device)
    dt = time.perf_counter() - t0
    rate = args.updates / dt
    print(
        f"warm-up {args.warmup} updates: {warm_s:.2f}s; "
        f"timed {args.updates} updates: {dt:.3f}s -> {rate:.2f} updates/s ({1e3 * dt / args.updates:.2f} ms/update)"
    )
    if args.json is not None:
        res = {"updates_per_s": rate, "ms_per_update": 1e3 * dt / args.updates, "warmup_s": warm_s,
               "updates": args.updates, "warmup": args.warmup, "batch_size": args.batch_size,
               "state_dim": args.state_dim, "action_dim": args.action_dim, "device": args.device,
               "cameras": args.num_cameras, "image_shape": args.image_shape,
               "vision_encoder": args.vision_encoder or "DefaultImageEncoder",
               "freeze_vision_encoder": cfg.freeze_vision_encoder, "use_torch_compile": cfg.use_torch_compile,
               "params": n_params, "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
        args.json.write_text(json.dumps(res, indent=2))
    return rate


if __name__ == "__main__":
    main()
