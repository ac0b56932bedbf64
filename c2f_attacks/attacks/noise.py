"""Counter-based random numbers: the value for (seed, image index, element) depends on nothing else.

A shared ``torch.Generator`` would make image i's noise depend on how many images came before it
in the batch (and on how a run is split across processes). Here every element hashes its own
counter ``(seed, index, position)`` with the 32-bit ``lowbias32`` integer hash (Chris
Wellons' hash-prospector), all vectorized in int64 arithmetic that never overflows.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def _mul32(a: torch.Tensor, b: int) -> torch.Tensor:
    """(a * b) mod 2**32 for 32-bit a and b, split in 16-bit halves so int64 never overflows."""
    low = a * (b & 0xFFFF)
    high = ((a * (b >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a bijective 32-bit mixer on int64 tensors holding values in [0, 2**32)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniform_like(x: torch.Tensor, seed: int, index: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like ``x`` (N, ...): element j of image i is a function of
    ``(seed, index[i], j)`` only. 24 random bits per value, exact in float32."""
    n = x.shape[0]
    per_image = x[0].numel()
    key = hash32(torch.full((), seed, dtype=torch.int64, device=x.device) & _MASK32)
    image_key = hash32(key ^ hash32(index.to(x.device, torch.int64).view(n, 1)))
    position = torch.arange(per_image, device=x.device, dtype=torch.int64).view(1, per_image)
    bits = hash32(image_key + hash32(position + 0x9E3779B9))
    return ((bits >> 8).to(torch.float32) * (1.0 / (1 << 24))).view_as(x).to(x.dtype)
