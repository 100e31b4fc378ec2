"""The Hugging Face Hub as data_tools and dual_actor use it: offline mode, errors, the token, repo ids.

Shared by the dataset push (:mod:`data_tools.push`) and the policy push / download
(:mod:`dual_actor.hub`). The token is resolved by ``huggingface_hub`` (``HF_TOKEN``, ``hf auth login``)
and is never printed, logged or put in an error message: :func:`redact` removes it (and anything that
looks like a Hub token) from the messages of :func:`hub_errors`.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator

from data_tools.errors import DataToolsError, HubUnreachableError

__all__ = ["HubUnreachableError", "check_online", "check_repo_id", "hub_api", "hub_errors", "hub_offline",
           "redact", "unreachable_types"]

_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether Hub offline mode is on: ``HF_HUB_OFFLINE`` if set, else ``huggingface_hub``'s constant."""
    env = os.environ.get("HF_HUB_OFFLINE")
    if env is not None:
        return env.strip().upper() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret and anything shaped like a Hub token (``hf_...``) masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _TOKEN_RE.sub("hf_***", text)


def unreachable_types() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the Hub cannot be reached" (offline mode, connection, timeout)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    types: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        import requests

        types += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    with contextlib.suppress(ImportError):
        import httpx

        types += [httpx.TransportError]
    return tuple(types)


def check_online() -> None:
    """Raise :class:`HubUnreachableError` when ``HF_HUB_OFFLINE`` is on (before any Hub call)."""
    if hub_offline():
        raise HubUnreachableError(
            "Hugging Face Hub is unreachable / offline mode is on: HF_HUB_OFFLINE is set; "
            "unset it (or set HF_HUB_OFFLINE=0) to push"
        )


@contextlib.contextmanager
def hub_errors(repo_id: str, token: str | None) -> Iterator[None]:
    """Hub calls inside the block: an unreachable Hub -> :class:`HubUnreachableError`, a refusal ->
    :class:`DataToolsError`, both with every token redacted from the message (datasets and models alike)."""
    from huggingface_hub.errors import HfHubHTTPError

    secrets = (token, os.environ.get("HF_TOKEN"))
    try:
        yield
    except unreachable_types() as e:
        raise HubUnreachableError(
            f"Hugging Face Hub is unreachable / offline mode is on: {redact(str(e), *secrets)}"
        ) from None
    except HfHubHTTPError as e:
        raise DataToolsError(f"the Hub refused the push to {repo_id}: {redact(str(e), *secrets)}") from None


def hub_api(token: str | None):
    """An ``HfApi``; refuse early when ``huggingface_hub`` cannot find any token."""
    import huggingface_hub

    if token is None and huggingface_hub.get_token() is None:
        raise DataToolsError("no Hugging Face token: set HF_TOKEN or run `hf auth login` before pushing")
    return huggingface_hub.HfApi(token=token)


def check_repo_id(repo_id: str) -> None:
    """Raise :class:`DataToolsError` unless ``repo_id`` looks like ``'<user or org>/<name>'``."""
    if not repo_id or "/" not in repo_id:
        raise DataToolsError(f"repo id {repo_id!r}: expected '<user or org>/<name>'")
