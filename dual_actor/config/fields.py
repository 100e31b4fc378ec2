"""Declaring a config key once, and reading the declarations back.

A key is a dataclass field made by :func:`setting`: its default, a one-line meaning (``help``) and what the
warm-up depends on (``warmup``): the whole value (``True``, the default), nothing (``False``: the key only
acts in the online phase, evaluation or logging, so runs that differ only there share a warm-up,
``warmup.share=true``), or a function ``(value, section) -> value`` giving the part the warm-up sees (e.g. the
warm-up's weights of a per-phase pair). :func:`warmup_view` reads these declarations; nothing else lists keys.
A field's ``choices`` are checked by :func:`check_choices` (each schema's ``__post_init__``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping

WarmupDependence = bool | Callable[[Any, Mapping[str, Any]], Any]


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key."""


def setting(default: Any = dataclasses.MISSING, help: str = "", *, warmup: WarmupDependence = True,
            choices: tuple | None = None, policy: bool = False) -> Any:
    """A config field: ``default`` (a mutable default is copied per instance), a one-line ``help``, what the
    warm-up sees of it (``warmup``, see the module doc), the allowed values (``choices``), and whether it belongs
    to the deployable policy's architecture (``policy``, set by :class:`dual_actor.config.policy.PolicyArch`)."""
    meta = {"help": help, "warmup": warmup, "choices": choices, "policy": policy}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_choices(obj: Any, prefix: str) -> None:
    """Every field of ``obj`` that declares ``choices`` holds one of them (lists: each element)."""
    for f in dataclasses.fields(obj):
        allowed = f.metadata.get("choices")
        if not allowed:
            continue
        value = getattr(obj, f.name)
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ConfigError(f"{prefix}{f.name} must be {'a subset' if isinstance(value, (list, tuple)) else 'one'} "
                              f"of {tuple(allowed)}, got {value!r}")


def warmup_view(schema: type, section: Mapping[str, Any]) -> dict:
    """What the warm-up depends on in ``section`` (a resolved plain mapping of the dataclass ``schema``): the
    fields declared ``warmup=False`` are left out, a function maps its field's value, nested dataclass fields
    are viewed the same way. Keys the schema does not declare are kept as they are (an open section)."""
    out = dict(section)
    types = field_types(schema)
    for f in dataclasses.fields(schema):
        if f.name not in section:
            continue
        how = f.metadata.get("warmup", True)
        value = section[f.name]
        if how is False:
            out.pop(f.name)
        elif callable(how):
            out[f.name] = how(value, section)
        elif dataclasses.is_dataclass(types[f.name]) and isinstance(value, Mapping):
            out[f.name] = warmup_view(types[f.name], value)
    return out


def field_types(schema: type) -> dict[str, Any]:
    """``{name: resolved type}`` of a dataclass's fields (annotations may be strings)."""
    import typing

    return typing.get_type_hints(schema)
