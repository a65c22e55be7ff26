"""A trigger blends a pattern into images through a mask: x' = (1 - m) x + m p.

Patch triggers (BadNets) use a binary mask, blending triggers a constant
alpha. Both are one broadcast op on a whole batch, on any device.
"""
from __future__ import annotations

import torch


class Trigger:
    def __init__(self, pattern: torch.Tensor, mask: torch.Tensor):
        # pattern, mask: (C, H, W) float in [0, 1]
        self.pattern = pattern.float()
        self.mask = mask.float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-3:] != self.pattern.shape:
            raise ValueError(f"trigger made for images {tuple(self.pattern.shape)}, got {tuple(images.shape[-3:])}")
        pattern = self.pattern.to(images.device, images.dtype)
        mask = self.mask.to(images.device, images.dtype)
        return images * (1 - mask) + pattern * mask
