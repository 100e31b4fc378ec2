"""Masked mean pooling of a VLA's key/value cache into a fixed-size task embedding (Eq. 17).

    K_pool = sum_l K_l m_l / sum_l m_l        (same for V)
    h      = [flatten(K_pool), flatten(V_pool)]  in R^{2 H D}

``K``, ``V``: (B, L, H, D) keys/values of one attention layer over the L prefix tokens (H KV heads of
width D); ``m``: (B, L) prefix pad mask (1 = real token, 0 = padding). Padded positions are removed
with ``torch.where`` before the sum, so whatever they hold (even inf or NaN) cannot leak into h.
"""

from __future__ import annotations

import torch


def masked_mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the sequence axis (dim 1), counting only positions where ``mask`` is set.

    Args:
        x: (B, L, ...) any float dtype.
        mask: (B, L) bool or 0/1 numbers; nonzero marks a real token.

    Returns:
        (B, ...) in ``x``'s dtype (the sum is accumulated in float32 for half-precision inputs).

    Raises:
        ValueError: shapes do not match, or a row of ``mask`` is empty (its mean is undefined).
    """
    if x.ndim < 2:
        raise ValueError(f"x must be (B, L, ...), got shape {tuple(x.shape)}")
    if mask.ndim != 2 or tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask must be (B, L) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    m = mask.to(device=x.device) != 0
    counts = m.sum(dim=1)
    if bool((counts == 0).any()):
        rows = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"masked_mean_pool: rows {rows} of the mask are empty (no real token to average)")
    acc_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    mb = m.reshape(*m.shape, *([1] * (x.ndim - 2)))
    total = torch.where(mb, x.to(acc_dtype), torch.zeros((), dtype=acc_dtype, device=x.device)).sum(dim=1)
    denom = counts.to(acc_dtype).reshape(-1, *([1] * (x.ndim - 2)))
    return (total / denom).to(x.dtype)


def pool_kv(key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 17: masked-mean-pool K and V over the prefix, flatten each (H, D) and concatenate K then V.

    Args:
        key, value: (B, L, H, D) one layer's keys and values.
        mask: (B, L) prefix pad mask.

    Returns:
        (B, 2 * H * D) in ``key``'s dtype.
    """
    if key.shape != value.shape:
        raise ValueError(f"key and value shapes differ: {tuple(key.shape)} vs {tuple(value.shape)}")
    if key.ndim != 4:
        raise ValueError(f"key/value must be (B, L, H, D), got {tuple(key.shape)}")
    b = key.shape[0]
    k = masked_mean_pool(key, mask).reshape(b, -1)
    v = masked_mean_pool(value, mask).reshape(b, -1)
    return torch.cat([k, v], dim=-1)
