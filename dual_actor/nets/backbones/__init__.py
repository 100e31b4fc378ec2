"""Frozen backbones V(s, l_task) -> h (Eq. 3). Each has ``embed(observation, tasks) -> (B, D)``
and ``embedding_dim``; embeddings are computed on the acting side and stored with transitions.

* ``state``: h = [s, one_hot(task)] (simulation default).
* ``smolvla``: lerobot's SmolVLA, Eq. 17 mask-pooled last-VLM-layer K, V -> 2*H*D.
* ``cls``: any torch model's CLS / readout token through an adapter (the Octo route).

lerobot and transformers are imported only when a SmolVLA backbone is built.
"""

from dual_actor.nets.backbones.cls import CLSBackbone, FirstTokenAdapter
from dual_actor.nets.backbones.pooling import masked_mean_pool, pool_kv
from dual_actor.nets.backbones.smolvla import SmolVLABackbone
from dual_actor.nets.backbones.state import StateBackbone

BACKBONES = {"state": StateBackbone, "smolvla": SmolVLABackbone, "cls": CLSBackbone}


def build_backbone(name: str, **kwargs):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


__all__ = [
    "StateBackbone", "SmolVLABackbone", "CLSBackbone", "FirstTokenAdapter", "masked_mean_pool", "pool_kv",
    "BACKBONES", "build_backbone",
]
