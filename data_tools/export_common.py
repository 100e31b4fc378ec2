"""What the two dataset exporters (:mod:`data_tools.hf_export`, :mod:`data_tools.lerobot_export`) share.

The source is read in one pass without images (:func:`data_tools.stats.summarize`, which also gives the
counts of the dataset cards), then episode by episode with images; ``CARD_TAGS`` are the tags every
dataset card carries (:mod:`data_tools.push` adds them to a card that lacks them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

from data_tools.errors import DataToolsError
from data_tools.hdf5_format import Episode, read_episodes
from data_tools.stats import DatasetSummary, summarize

CARD_TAGS = ("dual-actor", "talk-and-tweak", "robotics")


def export_summary(path: Path) -> DatasetSummary:
    """:func:`data_tools.stats.summarize` with one schema required and at least one episode.

    Raises :class:`DataToolsError` when the dataset has no episodes or its episodes disagree on
    the low-dim observation keys / sizes or the action size, and
    :class:`~data_tools.hdf5_format.DatasetFormatError` when the file does not follow the layout.
    """
    s = summarize(path, one_schema=True)
    if s.episodes == 0:
        raise DataToolsError(f"{path}: the dataset has no episodes; nothing to export")
    return s


def episodes_with_images(path: Path, s: DatasetSummary) -> Iterator[tuple[Episode, dict[str, tuple]]]:
    """Stream episodes with images; check every episode has the first one's image keys/shapes."""
    images: dict[str, tuple] | None = None
    for ep in read_episodes(path, load_images=True):
        ep_images = {k: tuple(v.shape[1:]) for k, v in ep.obs.items() if k not in s.lowdim}
        if images is None:
            images = ep_images
        elif set(ep_images) != set(images):
            raise DataToolsError(
                f"{path}:/data/{ep.name}/obs: image keys {sorted(ep_images)} differ from the first "
                f"episode's {sorted(images)}; an export needs one schema"
            )
        yield ep, ep_images


def progress_bar(total: int, desc: str, progress: bool):
    """A tqdm bar over ``total`` steps on stderr (disabled unless ``progress``)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not progress, dynamic_ncols=True)
