"""The schemas in Hydra's ConfigStore, the check of a composed config, and config errors as one line.

``conf/config.yaml`` starts its defaults list with ``config_schema``; every group option names its schema
(``/schema/<group>/<option>@_here_``), so Hydra merges the YAML onto a typed node: a value of the wrong type
is refused while the config is composed. :func:`check_config` then refuses keys the schema does not declare
(``+algo.foo=1`` gets past Hydra) and runs every section's own checks (``__post_init__``: choices, ranges, the
combinations that cannot run), before anything is written. :func:`error_line` turns a composition error into
the one ``error:`` line the CLI prints.
"""

from __future__ import annotations

import dataclasses

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from dual_actor.config.algo import AlgoConfig
from dual_actor.config.fields import ConfigError
from dual_actor.config.groups import GROUP_SCHEMAS
from dual_actor.config.sections import ENV_SCHEMAS, Config, EnvConfig, TrainerConfig


def register() -> None:
    """Store every schema under ``schema/`` (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="schema/algo", name="algo", node=AlgoConfig)
    cs.store(group="schema/env", name="env", node=EnvConfig)
    for name, node in ENV_SCHEMAS.items():
        cs.store(group="schema/env", name=name, node=node)
    cs.store(group="schema/trainer", name="trainer", node=TrainerConfig)
    for group, options in GROUP_SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


register()


def unknown_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Keys of ``cfg`` that its schema (recursively) does not declare: what ``+key=value`` added."""
    out = []
    schema = OmegaConf.get_type(cfg)
    if schema is not None and dataclasses.is_dataclass(schema):
        declared = {f.name for f in dataclasses.fields(schema)}
        out += [f"{prefix}{k}" for k in cfg.keys() if k not in declared]
    for k in cfg.keys():
        node = cfg._get_node(k)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            out += unknown_keys(node, f"{prefix}{k}.")
    return out


def check_config(cfg: DictConfig) -> None:
    """Refuse undeclared keys and run each section's own checks (raises :class:`ConfigError` naming the key)."""
    extra = unknown_keys(cfg)
    if extra:
        where = extra[0].rsplit(".", 1)[0] if "." in extra[0] else "the top level"
        raise ConfigError(f"unknown config key {extra[0]!r}: {where} declares no such key "
                          f"(python -m dual_actor.fit --cfg job lists them; docs/configuration.md)")
    env = cfg.get("env")
    if env is not None and env.get("obs_mode") is not None and env.obs_mode not in env.get("obs_modes", {}):
        modes = ", ".join(env.get("obs_modes", {})) or "none"
        raise ConfigError(f"env.obs_mode={env.obs_mode}: env={env.get('name')} has no such observation layout "
                          f"(env.obs_modes: {modes})")
    try:
        OmegaConf.to_object(cfg)  # builds every section's dataclass: its __post_init__ checks run
    except MissingMandatoryValue as e:
        raise ConfigError(f"{e.full_key} must be set ({e.full_key}=...)") from None
    except OmegaConfBaseException as e:
        raise ConfigError(_omegaconf_line(e)) from None


def _omegaconf_line(e: OmegaConfBaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    key = getattr(e, "full_key", None)
    cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else None
    if cause is not None:
        return str(cause)
    return f"{key}: {msg}" if key else msg


def error_line(exc: BaseException) -> str | None:
    """One line for a Hydra / OmegaConf composition error (None for anything else): the key (or override) and
    what is wrong with it."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    if isinstance(exc, MissingConfigException):
        first = str(exc).splitlines()[0]
        options = getattr(exc, "options", None)
        return first + (f" (options: {', '.join(sorted(o for o in options))})" if options else "")
    if isinstance(exc, OverrideParseException):
        return str(exc).splitlines()[0]
    if isinstance(exc, ConfigCompositionException):
        head = str(exc).splitlines()[0].rstrip(".")
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return f"{head}: {_omegaconf_line(cause)}"
        return head
    if isinstance(exc, OmegaConfBaseException):
        return _omegaconf_line(exc)
    if isinstance(exc, ConfigError):
        return str(exc)
    return None
