"""The ``cls`` backbone: any frozen PyTorch model whose CLS / readout token is the embedding h.

The model is reached through a small adapter contract, so no model code lives here:

    adapter(model, observation, tasks) -> (B, D) tensor      # the CLS / readout token
    adapter.embedding_dim -> D                              # known without running the model

``CLSBackbone`` owns the frozen model (``requires_grad=False``, eval mode even under a parent's
``.train()``, ``torch.no_grad``), moves the observation's tensors to the model's device (floating ones
to its dtype; bf16 on CUDA, float32 on CPU by default) and returns h as float32 (B, D).
``FirstTokenAdapter`` is the reference adapter for a model ``model(observation, tasks)`` that returns a
token sequence (B, L, D) (or an output with ``last_hidden_state``) with the CLS token at index 0.
From a config, ``model`` and ``adapter`` may be mappings with a Hydra ``_target_``; they are
instantiated here.

Plugging Octo (the paper's 0.27B backbone) once a PyTorch port is installed
------------------------------------------------------------------------------
Octo runs a block-causal transformer over [task tokens, observation tokens per timestep, readout
tokens per timestep]; its action head reads the ``readout_action`` token group, whose tokens have shape
(B, T, n_readout, D) (D = 384 for octo-small, 768 for octo-base), takes the last timestep and
averages over the readout tokens (Octo's heads do ``tokens.mean(axis=-2)`` when no MAP head is used).
An adapter for a port that mirrors Octo's API (the JAX names are used below; a port's may differ):

    class OctoReadoutAdapter:
        def __init__(self, embedding_dim=768, window=1):
            self.embedding_dim = embedding_dim
            self.window = window

        def __call__(self, model, observation, tasks):
            task = model.create_tasks(texts=list(tasks))              # T5 language tokens
            obs = {"image_primary": observation["images"]["front"][:, None],   # (B, T=1, 3, H, W)
                   "timestep_pad_mask": torch.ones(len(tasks), self.window, dtype=torch.bool)}
            out = model.run_transformer(obs, task, obs["timestep_pad_mask"], train=False)
            tokens = out["readout_action"].tokens                     # (B, T, n_readout, D)
            return tokens[:, -1].mean(dim=1)                          # (B, D)

    CLSBackbone(model=octo_port_model, adapter=OctoReadoutAdapter(embedding_dim=768))

Octo's image keys, image resolution (256x256 primary, 128x128 wrist), history window and value range
are the port's; map the framework's cameras onto them inside the adapter. The backbone only needs
``(B, D)`` back, so a port whose forward already returns the pooled readout needs a one-line adapter.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from dual_actor.nets.backbones.frozen import PinnedFrozenBackbone


@runtime_checkable
class CLSAdapter(Protocol):
    """``adapter(model, observation, tasks) -> (B, embedding_dim)``; ``embedding_dim`` known up front."""

    embedding_dim: int

    def __call__(self, model: nn.Module, observation: Any, tasks: Sequence[str]) -> torch.Tensor: ...


class FirstTokenAdapter:
    """Reference adapter: ``model(observation, tasks)`` -> tokens (B, L, D); h = tokens[:, index].

    Accepts a tensor, a tuple/list whose first item is the tokens, or an object with
    ``last_hidden_state`` (Hugging Face encoders).
    """

    def __init__(self, embedding_dim: int, index: int = 0):
        self.embedding_dim = int(embedding_dim)
        self.index = int(index)

    def __call__(self, model: nn.Module, observation: Any, tasks: Sequence[str]) -> torch.Tensor:
        out = model(observation, list(tasks))
        if hasattr(out, "last_hidden_state"):
            out = out.last_hidden_state
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not torch.is_tensor(out) or out.ndim != 3:
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise ValueError(f"FirstTokenAdapter expects the model to return tokens (B, L, D), got {got}")
        return out[:, self.index]


def _instantiate(spec, what: str):
    if isinstance(spec, Mapping):
        if "_target_" not in spec:
            raise ValueError(f"cls backbone: {what} given as a mapping needs a '_target_' (got keys {sorted(spec)})")
        from hydra.utils import instantiate

        return instantiate(dict(spec), _convert_="all")
    return spec


def _to(x, device: torch.device, dtype: torch.dtype):
    if torch.is_tensor(x):
        return x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)
    if isinstance(x, Mapping):
        return {k: _to(v, device, dtype) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and any(torch.is_tensor(v) for v in x):
        return type(x)(_to(v, device, dtype) for v in x)
    return x


class CLSBackbone(PinnedFrozenBackbone):
    """Frozen model + adapter -> ``embed(observation, tasks) -> h (B, D)`` float32.

    Args:
        model: the pretrained torch model (or a mapping with ``_target_``).
        adapter: ``CLSAdapter`` (or a mapping with ``_target_``).
        embedding_dim: D; defaults to ``adapter.embedding_dim``.
        device: default CUDA if available, else CPU.
        dtype: default bf16 on CUDA, float32 on CPU; a torch.dtype or its name.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``adapter`` is not callable.
        ValueError: no embedding_dim; at call time, the adapter returns anything but (B, D).
    """

    def __init__(
        self,
        model: nn.Module | Mapping,
        adapter: CLSAdapter | Mapping,
        *,
        embedding_dim: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
    ):
        super().__init__()

        model = _instantiate(model, "model")
        adapter = _instantiate(adapter, "adapter")
        if not isinstance(model, nn.Module):
            raise TypeError(f"cls backbone: model must be a torch nn.Module, got {type(model).__name__}")
        if not callable(adapter):
            raise TypeError(
                f"cls backbone: adapter must be callable(model, observation, tasks), got {type(adapter).__name__}"
            )
        dim = embedding_dim if embedding_dim is not None else getattr(adapter, "embedding_dim", None)
        if dim is None:
            raise ValueError("cls backbone: give embedding_dim or an adapter with an `embedding_dim` attribute")
        self._embedding_dim = int(dim)
        self._pin(device, dtype)
        model.to(device=self._device, dtype=self._dtype)
        model.requires_grad_(False)
        self.model = model
        self.adapter = adapter
        self.eval()

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    @torch.no_grad()
    def embed(self, observation: Any, tasks: Sequence[str]) -> torch.Tensor:
        """h = adapter(model, observation, tasks): (B, embedding_dim) float32 on the backbone's device."""
        if isinstance(tasks, str):
            raise TypeError("tasks must be a list of B strings, not one string")
        tasks = list(tasks)
        h = self.adapter(self.model, _to(observation, self._device, self._dtype), tasks)
        if not torch.is_tensor(h) or tuple(h.shape) != (len(tasks), self._embedding_dim):
            got = tuple(h.shape) if torch.is_tensor(h) else type(h).__name__
            raise ValueError(f"cls adapter returned {got}; expected ({len(tasks)}, {self._embedding_dim})")
        return h.float()
