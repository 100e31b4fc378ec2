"""What every frozen pretrained backbone shares: a fixed device and dtype, eval mode always.

A backbone is pinned where it was built: a parent's ``.to()`` / ``.cuda()`` / ``.float()``
neither moves nor casts it (``embed`` moves its inputs there; the policy moves h back), and
``train()`` keeps it in eval mode. bf16 on CUDA and float32 elsewhere unless a dtype is given.
"""

from __future__ import annotations

import torch
from torch import nn


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def as_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """A dtype from a dtype, its name ("bfloat16", "torch.float32") or None (the default for ``device``)."""
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'bfloat16', 'float16' or 'float32'")
    return value


class PinnedFrozenBackbone(nn.Module):
    """Base of the pretrained backbones: call :meth:`_pin` in ``__init__`` before moving the model."""

    def _pin(self, device, dtype) -> None:
        self._device = torch.device(device) if device is not None else default_device()
        self._dtype = as_dtype(dtype, self._device)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def train(self, mode: bool = True):
        """Frozen: stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    def _apply(self, fn, recurse: bool = True):
        """Pinned: a parent's ``.to()`` / ``.cuda()`` / ``.float()`` neither moves nor casts the frozen
        model; it stays on the ``device`` and ``dtype`` given at construction."""
        return self
