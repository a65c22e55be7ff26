"""Per-image randomness that is a function of the image.

The CLIP triggers of CleanCLIP (backdoor/utils.py) draw a fresh location and
fresh noise for every image they trigger. The suite triggers the same clean
image in several jobs (the poisoned training batches, the triggered test set,
the attacker's samples, BEC) and in chunks of any size, and each job must see
the same triggered image. So the draws come from a counter-based hash
(splitmix64 finalizer) keyed by the image's 8-bit pixels and the seed:
per-image random as in the reference, reproducible per image, independent of
batching, device and the global random state.
"""
from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
# splitmix64 constants, as signed int64 (torch has no uint64 arithmetic)
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic on negatives)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors (multiplication wraps)."""
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


@torch.no_grad()
def row_keys(images: torch.Tensor, seed: int) -> torch.Tensor:
    """One int64 key per image from its pixels quantised to 8 bits and the seed."""
    pixels = images if images.dtype == torch.uint8 else (images.float() * 255).round().clamp(0, 255)
    flat = pixels.reshape(len(images), -1).long()
    # a position-weighted sum mixed per pixel would be exact but slow; a few
    # mixed linear combinations of the pixels separate distinct images
    position = torch.arange(flat.shape[1], device=flat.device, dtype=torch.long)
    weights = mix(position * 4 + 1) & _MASK32
    key = (flat * weights).sum(1)
    key = mix(key ^ mix(torch.full_like(key, int(seed))))
    return mix(key + (flat * (mix(position * 4 + 3) & _MASK32)).sum(1))


def uniform(keys: torch.Tensor, n: int, stream: int = 0) -> torch.Tensor:
    """(len(keys), n) floats in [0, 1), one independent stream per `stream`."""
    counter = torch.arange(n, device=keys.device, dtype=torch.long) + (int(stream) << 40)
    bits = mix(keys[:, None] ^ mix(counter)[None, :])
    return _shift_right(bits, 40).float() / float(1 << 24)  # top 24 bits: exact in float32


def normal(keys: torch.Tensor, n: int, stream: int = 0) -> torch.Tensor:
    """(len(keys), n) standard normal draws (Box-Muller on two streams)."""
    u1 = uniform(keys, n, 2 * stream + 1).clamp_min(1.0 / (1 << 24))  # log(0) guard
    u2 = uniform(keys, n, 2 * stream + 2)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)


def offsets(keys: torch.Tensor, high: int, stream: int) -> torch.Tensor:
    """Integers uniform in [0, high] inclusive, one per key."""
    return (uniform(keys, 1, stream)[:, 0] * (high + 1)).long().clamp_max(high)
