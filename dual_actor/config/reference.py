"""docs/configuration.md, written from the schema: every key with its type, default and meaning.

``python -m dual_actor.config.reference > docs/configuration.md`` rewrites it; tests/test_config.py checks that
the committed page is what the schema says.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from dual_actor.config.algo import AlgoConfig
from dual_actor.config.fields import field_types
from dual_actor.config.groups import GROUP_SCHEMAS
from dual_actor.config.sections import ENV_SCHEMAS, Config, EnvConfig, TrainerConfig

HEADER = """# Configuration reference

Every key of `python -m dual_actor.fit`, as declared once in `dual_actor/config/` (the schema behind `conf/`):
its type, its default and what it means. `python -m dual_actor.fit [group=option] [key=value ...] --cfg job`
prints the resolved config of a run. A value of the wrong type or a key that is not declared here is refused
before anything runs (one `error:` line naming the key, exit 2).

The column "warm-up" says whether the warm-up depends on the key: "no" marks keys that only act online, in
evaluation or in logging, so runs that differ only there share one warm-up (`warmup.share=true`); "part" marks
keys of which the warm-up sees a part (e.g. the warm-up's weights of a per-phase pair, a refinement-actor setting
only where the refinement actor trains in the warm-up).

This page is written from the schema (`python -m dual_actor.config.reference > docs/configuration.md`); a test
checks it is current.
"""


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is typing.Union:
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin in (list, typing.List):
        return f"list[{_type_name(typing.get_args(t)[0])}]"
    if origin in (dict, typing.Dict):
        return "mapping"
    if t is Any:
        return "any"
    return getattr(t, "__name__", str(t))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if value == "???":
        return "(required)"
    return "null" if value is None else f"`{value}`".replace("|", "\\|")


def _warmup(f: dataclasses.Field) -> str:
    how = f.metadata.get("warmup", True)
    return "no" if how is False else "part" if callable(how) else "yes"


def _rows(schema: type, prefix: str, skip: set[str] = frozenset(), warmup: str | None = None) -> list[str]:
    """One table row per key of ``schema`` (nested sections flattened); ``warmup``: the enclosing key's."""
    types = field_types(schema)
    rows = []
    for f in dataclasses.fields(schema):
        if f.name in skip or f.name == "_target_":
            continue
        t = types[f.name]
        if dataclasses.is_dataclass(t) and f.name != "scalings":
            rows += _rows(t, f"{prefix}{f.name}.", warmup=warmup or (None if _warmup(f) == "yes" else _warmup(f)))
            continue
        help_ = f.metadata.get("help", "").replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | {_type_name(t)} | {_default(f)} | {warmup or _warmup(f)} | {help_} |")
    return rows


def _table(title: str, doc: str | None, rows: list[str]) -> str:
    head = "| key | type | default | warm-up | meaning |\n|---|---|---|---|---|"
    text = f"## {title}\n\n" + (f"{' '.join(doc.split())}\n\n" if doc else "")
    return text + head + "\n" + "\n".join(rows) + "\n"


def markdown() -> str:
    parts = [HEADER]
    top = [f for f in dataclasses.fields(Config) if not dataclasses.is_dataclass(field_types(Config)[f.name])
           and field_types(Config)[f.name] is not Any]
    parts.append(_table("Run (`conf/config.yaml`)", Config.__doc__,
                        _rows(Config, "", skip={f.name for f in dataclasses.fields(Config)} - {f.name for f in top})))
    fields = {f.name: f for f in dataclasses.fields(Config)}
    for name in ("data", "warmup", "online", "eval", "safety", "record", "check", "vla"):
        schema = field_types(Config)[name]
        parts.append(_table(f"`{name}`", schema.__doc__, _rows(schema, f"{name}.", warmup=_warmup(fields[name]))))
    parts.append(_table("`algo` (`conf/algo`)", AlgoConfig.__doc__ + " The defaults are the default algorithm "
                        "(`algo=dual_actor`); `algo=dual_actor_paper` sets Eq. 6 and Eq. 8 as printed.",
                        _rows(AlgoConfig, "algo.")))
    parts.append(_table("`env` (`conf/env`)", EnvConfig.__doc__, _rows(EnvConfig, "env.")))
    for option, schema in ENV_SCHEMAS.items():
        extra = [r for r in _rows(schema, "env.") if r not in _rows(EnvConfig, "env.")]
        parts.append(_table(f"`env={option}`: its own keys", schema.__doc__, extra))
    parts.append(_table("`trainer` (`conf/trainer`)", TrainerConfig.__doc__, _rows(TrainerConfig, "trainer.")))
    for group, options in GROUP_SCHEMAS.items():
        for option, schema in options.items():
            rows = _rows(schema, f"{group}.", warmup=_warmup(fields[group]))
            if rows:
                parts.append(_table(f"`{group}`: `{schema.__name__}` (schema `{option}`)", schema.__doc__, rows))
    return "\n".join(parts)


if __name__ == "__main__":
    print(markdown(), end="")
