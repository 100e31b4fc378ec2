"""Upload an exported dataset folder to a Hugging Face Hub dataset repo: :func:`push`.

The folder is an :func:`~data_tools.hf_export.export_hf` or :func:`~data_tools.lerobot_export.export_lerobot`
export; its card gets the data_tools tags (``CARD_TAGS``, and ``LeRobot`` for a LeRobotDataset). Hub access
(offline mode, token, errors with the token redacted) is :mod:`data_tools.hub`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from data_tools.errors import DataToolsError
from data_tools.export_common import CARD_TAGS
from data_tools.hub import check_online, check_repo_id, hub_api, hub_errors
from data_tools.lerobot_export import is_lerobot_dataset

log = logging.getLogger("data_tools.publish")  # the name push's records had before the publishing split

LEROBOT_TAG = "LeRobot"


def _card_text(folder: Path, lerobot: bool, repo_id: str) -> tuple[str, bool]:
    """The README to publish (tags ensured) and whether it differs from the one on disk."""
    from huggingface_hub import DatasetCard

    readme = folder / "README.md"
    wanted = ([LEROBOT_TAG] if lerobot else []) + list(CARD_TAGS)
    if readme.is_file():
        original = readme.read_text(encoding="utf-8")
        card = DatasetCard(original)
    elif lerobot:
        from lerobot.datasets.utils import create_lerobot_dataset_card

        original = None
        info = json.loads((folder / "meta" / "info.json").read_text(encoding="utf-8"))
        card = create_lerobot_dataset_card(tags=list(CARD_TAGS), dataset_info=info, repo_id=repo_id)
    else:
        raise DataToolsError(f"{folder}: no README.md dataset card (export with export-hf / export-lerobot)")
    tags = list(card.data.tags or [])
    missing = [t for t in wanted if t not in tags]
    if missing or original is None:
        card.data.tags = tags + missing
        return str(card), True
    return original, False


def _check_push(folder: Path, repo_id: str, kind: str) -> bool:
    """Validate the arguments and the folder; return whether it is a LeRobotDataset."""
    if kind != "dataset":
        raise DataToolsError(f"kind {kind!r}: only 'dataset' repositories are supported")
    check_repo_id(repo_id)
    if not folder.is_dir():
        raise DataToolsError(f"{folder}: no such folder")
    lerobot = is_lerobot_dataset(folder)
    if not lerobot and not (folder / "README.md").is_file():
        raise DataToolsError(
            f"{folder}: neither a LeRobotDataset (meta/info.json) nor a datasets export (README.md)"
        )
    check_online()
    return lerobot


def _upload(
    api: Any, folder: Path, repo_id: str, private: bool, token: str | None, lerobot: bool,
    card_text: str, card_changed: bool,
) -> Any:
    """create_repo, upload_folder, the tagged card if it changed, and LeRobot's version tag."""
    from huggingface_hub.errors import RevisionNotFoundError

    ignore = [".*.tmp", ".*.tmp/**"]
    if lerobot:
        ignore.append("images/**")
    if card_changed:
        ignore.append("README.md")
    url = api.create_repo(repo_id, token=token, private=private, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), repo_type="dataset", token=token,
        ignore_patterns=ignore, commit_message="Upload dataset with data_tools",
    )
    if card_changed:
        api.upload_file(
            path_or_fileobj=card_text.encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
            repo_type="dataset", token=token, commit_message="Add dataset card",
        )
    if lerobot:
        version = json.loads((folder / "meta" / "info.json").read_text(encoding="utf-8"))["codebase_version"]
        with contextlib.suppress(RevisionNotFoundError):
            api.delete_tag(repo_id, tag=version, token=token, repo_type="dataset")
        api.create_tag(repo_id, tag=version, token=token, repo_type="dataset")
    return url


def push(
    dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    kind: str = "dataset",
    token: str | None = None,
    api: Any = None,
) -> str:
    """Upload an exported folder ``dir`` to the Hub dataset repo ``repo_id``; return its URL.

    ``create_repo(repo_type="dataset", private=private, exist_ok=True)`` then ``upload_folder``.
    The card ``README.md`` gets the tags "dual-actor", "talk-and-tweak", "robotics" (and
    "LeRobot" for a LeRobotDataset, whose ``images/`` scratch folder is skipped and whose repo
    gets the codebase-version tag, e.g. ``v3.0``, that ``LeRobotDataset`` looks for). When the
    card on disk lacks tags, the folder is uploaded without it and the tagged card separately; the
    folder itself is never modified. ``kind`` is the Hub repo type (only "dataset").

    ``token``: None lets ``huggingface_hub`` resolve it (``HF_TOKEN``, ``hf auth login``); it is
    never printed, logged or put in an error message. ``api``: an ``HfApi``-like object (tests).

    Raises :class:`HubUnreachableError` when ``HF_HUB_OFFLINE`` is on or the Hub cannot be
    reached, :class:`DataToolsError` for a bad folder, no token, or a refusal by the Hub.
    """
    folder = Path(dir)
    lerobot = _check_push(folder, repo_id, kind)
    card_text, card_changed = _card_text(folder, lerobot, repo_id)

    if api is None:
        api = hub_api(token)
    log.info("pushing %s to dataset repo %s (private=%s)", folder, repo_id, private)
    with hub_errors(repo_id, token):
        url = _upload(api, folder, repo_id, private, token, lerobot, card_text, card_changed)
    url = str(url) if url else f"https://huggingface.co/datasets/{repo_id}"
    log.info("pushed %s to %s", folder, url)
    return url
