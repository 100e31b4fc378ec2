"""Publishing a talk-and-tweak HDF5 dataset: Hugging Face ``datasets``, LeRobotDataset v3.0, the Hub.

The one import for the publishing modules:

* :func:`export_hf` (:mod:`data_tools.hf_export`) -- one row per step, parquet shards under
  ``DIR/data/`` and a dataset card ``DIR/README.md`` (YAML front matter with
  ``configs``/``dataset_info``), loadable offline with ``datasets.load_dataset(DIR)``.
* :func:`export_lerobot` (:mod:`data_tools.lerobot_export`) -- a LeRobotDataset v3.0 (lerobot 0.4.4,
  images not video) that ``LeRobotDataset(repo_id, root=DIR)`` loads offline; per-frame
  ``intervention`` and ``refinement_command_id`` (vocabulary in ``DIR/meta/refinement_commands.json``).
* :func:`push` (:mod:`data_tools.push`) -- upload an exported folder to a Hub dataset repo through
  ``huggingface_hub`` (Hub access: :mod:`data_tools.hub`). The token is resolved by
  ``huggingface_hub`` (``HF_TOKEN``, ``hf auth login``) and is never printed or logged.

Both exporters check the destination with :func:`data_tools.outputs.check_output`, build the
whole folder in a temporary directory beside ``out_dir`` (:func:`data_tools.atomic.atomic_dir`)
and rename it into place on success: a failure never leaves a half-written export behind. The
HDF5 layout is read only through :mod:`data_tools.hdf5_format`; the counts come from
:func:`data_tools.stats.summarize` (:mod:`data_tools.export_common`; ``summarize`` and
``DatasetSummary`` are importable from here too). The command line is in :mod:`data_tools.cli`.
"""

from __future__ import annotations

from data_tools.errors import HubUnreachableError
from data_tools.export_common import CARD_TAGS
from data_tools.hf_export import HF_SPLIT, export_hf
from data_tools.hub import check_online, hub_api, hub_errors
from data_tools.lerobot_export import (
    COMMANDS_FILE,
    export_lerobot,
    is_lerobot_dataset,
    lerobot_command_vocabulary,
    read_lerobot_commands,
)
from data_tools.push import LEROBOT_TAG, push
from data_tools.stats import DatasetSummary, summarize

__all__ = [
    "CARD_TAGS",
    "COMMANDS_FILE",
    "HF_SPLIT",
    "LEROBOT_TAG",
    "DatasetSummary",
    "HubUnreachableError",
    "check_online",
    "export_hf",
    "export_lerobot",
    "hub_api",
    "hub_errors",
    "is_lerobot_dataset",
    "lerobot_command_vocabulary",
    "push",
    "read_lerobot_commands",
    "summarize",
]
