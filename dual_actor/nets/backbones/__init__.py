"""Frozen backbones V(s, l_task) -> h (Eq. 3). Each has ``embed(observation, tasks) -> (B, D)``
and ``embedding_dim``; embeddings are computed on the acting side and stored with transitions."""

from dual_actor.nets.backbones.state import StateBackbone

BACKBONES = {"state": StateBackbone}


def build_backbone(name: str, **kwargs):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


__all__ = ["StateBackbone", "BACKBONES", "build_backbone"]
