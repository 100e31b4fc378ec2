"""One robot's control loops from the run config: shared by the in-process runtime and each Ray robot.

A robot runs every task of the bench (one :class:`ControlLoop` and one env per task, episodes round-robin), with
a simulated operator per task or one physical device shared by all. Robot ``index`` 0 is robot A (the bench as
configured); odd indices are robot B when ``env.robot_shift`` is set (:class:`~dual_actor.runtime.sim.RobotShift`:
its state is read in a shifted frame and its commands act in a turned one; its operator watches the world).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from omegaconf import DictConfig

from dual_actor.runtime.loop import ControlLoop

UNREACHABLE = (OSError, ConnectionError, TimeoutError, RuntimeError, ValueError, ImportError)
"""What a robot that cannot be reached or read raises (a refused connection, a timeout, a missing port, a motor SDK
that is not installed)."""
ROBOT_SEED_STRIDE = 100  # robot r, task i: env seed online.seed + 100 r + i (robot 0 keeps the one-robot seeds)


def robot_name(index: int, cfg: DictConfig) -> str:
    """``A``/``B`` by kind when robot B exists (``A``, ``B``, ``A2``, ``B2`` ...), else ``robot<index>``."""
    if cfg.env.robot_shift is None:
        return f"robot{index}"
    kind = "B" if index % 2 else "A"
    n = index // 2 + 1
    return kind if n == 1 else f"{kind}{n}"


def robot_shift(index: int, cfg: DictConfig):
    """The :class:`RobotShift` of robot ``index`` (odd indices, when ``env.robot_shift`` is set), else None."""
    node = cfg.env.robot_shift
    if node is None or index % 2 == 0:
        return None
    from hydra.utils import instantiate

    return instantiate(node)


def make_env_factory(cfg: DictConfig, shift=None, safe: bool = True):
    """``make_env(task, seed, max_episode_steps, cameras, image_size)`` from ``env.robot``: every env behind the
    safety layer (``safety.*``, in the robot's own frame; ``safe=False`` only for a tool that commands nothing,
    check_robot), then seen through ``shift`` (robot B)."""
    if cfg.env.robot is None:
        return None
    from hydra.utils import instantiate

    from dual_actor.runtime.safety import safe_factory
    from dual_actor.runtime.sim import shifted_factory

    make_env = instantiate(cfg.env.robot)
    return shifted_factory(safe_factory(make_env, cfg.safety) if safe else make_env, shift)


def per_task_operator(cfg: DictConfig) -> bool:
    """A simulated human is one per task (its class takes ``task``); a physical device (SpaceMouse, keyboard) is
    one, shared by the tasks."""
    from hydra.utils import get_class

    target = cfg.operator.get("_target_")
    return bool(target) and "task" in inspect.signature(get_class(target)).parameters


def image_size(cfg: DictConfig) -> dict:
    """``{"image_size": env.image_size}`` for an env factory, or nothing (the factory's own) when it is null."""
    return {} if cfg.env.image_size is None else {"image_size": int(cfg.env.image_size)}


def robot_identity(cfg: DictConfig) -> str:
    """The robot's name in teleop logs and datasets: a lerobot robot's ``env.robot.type`` (``so101_follower``),
    else ``robot_name`` of the class (or function) ``env.robot`` builds (the bench's: "metaworld-sawyer"), else
    ``env.name``."""
    from hydra.utils import get_object

    if (cfg.env.robot or {}).get("type"):
        return str(cfg.env.robot.type)
    target = (cfg.env.robot or {}).get("_target_")
    return str(getattr(get_object(target), "robot_name", cfg.env.name)) if target else str(cfg.env.name)


def teleop_session(cfg: DictConfig, root, staging: bool = False):
    """A teleop-log session at ``root`` for the online phase's episodes (``staging``: an episode appears under
    ``episodes/`` only once it is complete; a robot killed mid-episode leaves it in ``.staging/``)."""
    from data_tools.teleop_log import SessionWriter

    return SessionWriter(root, fps=cfg.env.fps, robot=robot_identity(cfg), action_dim=int(cfg.env.action_dim),
                         translation_scale_m=float(cfg.online.translation_scale_m),
                         cameras=[str(c) for c in cfg.env.cameras], staging=staging)


def robot_env(cfg: DictConfig, task: str, seed: int, index: int = 0, max_episode_steps: int | None = None,
              safe: bool = True):
    """Robot ``index``'s env for ``task`` (``env.robot``; robot B through ``env.robot_shift``), as every tool builds
    it: the online phase's loops, ``check_robot`` and ``record``."""
    make_env = make_env_factory(cfg, robot_shift(index, cfg), safe=safe)
    if make_env is None:
        raise ValueError(f"env {cfg.env.name!r} has no robot (env.robot: a RobotEnv factory, dual_actor/runtime/env.py)")
    steps = int(cfg.online.max_episode_steps if max_episode_steps is None else max_episode_steps)
    return make_env(task=task, seed=int(seed), max_episode_steps=steps, cameras=[str(c) for c in cfg.env.cameras],
                    **image_size(cfg))


def build_loops(cfg: DictConfig, policy, transport, *, index: int = 0, name: str | None = None,
                log_episode: Callable[[str], Any] | None = None,
                gate: Callable[[int], bool] | None = None) -> list[ControlLoop]:
    """Robot ``index``'s control loops, one per task of ``env.tasks``."""
    from hydra.utils import instantiate

    from dual_actor.runtime.sim import ShiftedEnv, ShiftedOperator

    on = cfg.online
    shared_operator, per_task = None, per_task_operator(cfg)
    if cfg.operator.get("_target_") and not per_task:
        shared_operator = instantiate(cfg.operator)
    loops = []
    for i, task in enumerate(cfg.env.tasks):
        env = robot_env(cfg, task, seed=int(on.seed) + ROBOT_SEED_STRIDE * index + i, index=index)
        operator = instantiate(cfg.operator, task=task) if per_task else shared_operator
        if operator is not None and isinstance(env, ShiftedEnv):
            operator = ShiftedOperator(operator, env)
        loops.append(ControlLoop(
            env, task, policy, operator, transport, proprio_slice=slice(0, int(cfg.env.proprio_dim)),
            period_s=None if on.period_s is None else float(on.period_s),
            window=int(on.window), sigma=float(on.sigma), translation_scale_m=float(on.translation_scale_m),
            label=str(on.label), gamma=float(cfg.algo.gamma), log_episode=log_episode, actor_id=f"{name}-{i}" if name else f"sim-{i}",
            gate=gate, wait_for_operator=bool(on.wait_for_operator),
        ))
    return loops


def check_operator_ready(cfg: DictConfig) -> None:
    """A physical operator (a device shared by the tasks: SpaceMouse, keyboard) is there: built once and asked
    :meth:`~dual_actor.runtime.operators.Operator.check_ready`, then closed (``ConfigError`` naming it)."""
    from hydra.utils import instantiate

    from dual_actor.config.fields import ConfigError

    target = cfg.operator.get("_target_")
    if not target or per_task_operator(cfg):
        return
    name = target.rsplit(".", 1)[-1]
    try:
        op = instantiate(cfg.operator)
        try:
            op.check_ready()
        finally:
            op.close()
    except Exception as e:  # noqa: BLE001 - whatever the device layer raises: one line naming the operator
        cause = e.__cause__ if e.__cause__ is not None and "Error in call to target" in str(e) else e
        line = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise ConfigError(line if line.startswith(name) else f"{name}: {line}") from None


def check_robot_answers(cfg: DictConfig) -> None:
    """A robot behind a connection (``connects = True`` on what ``env.robot`` builds: the Franka server, a lerobot
    robot, and their simulation-backed stand-ins) answers one read, which moves nothing (``ConfigError`` naming
    the robot and why)."""
    from hydra.utils import get_object

    from dual_actor.config.fields import ConfigError

    target = (cfg.env.robot or {}).get("_target_")
    if not target or not getattr(get_object(target), "connects", False):
        return
    try:
        env = robot_env(cfg, str(cfg.env.tasks[0]), seed=int(cfg.online.seed), safe=False)
        try:
            env.observe()
        finally:
            env.close()
    except UNREACHABLE as e:
        raise ConfigError(f"env {cfg.env.name!r}: the robot could not be reached or read ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'no message'}); python -m dual_actor.check_robot "
                          "with the same overrides tells more") from None
