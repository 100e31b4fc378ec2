from dual_actor.data.buffers import TaskBuffers, TransitionBuffer
from dual_actor.data.hdf5 import DataSpec, episode_transitions, load_dataset_into
from dual_actor.data.datamodule import BufferSampler, OfflineDataModule

__all__ = [
    "TaskBuffers", "TransitionBuffer", "DataSpec", "episode_transitions", "load_dataset_into",
    "BufferSampler", "OfflineDataModule",
]
