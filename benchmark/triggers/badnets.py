"""BadNets (Gu et al. 2017): a solid square patch, by default 3x3 white at the
bottom-right corner, as in BackdoorBench's CIFAR-10 setting."""
from __future__ import annotations

import torch

from benchmark.errors import ConfigError
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import Trigger


@TRIGGERS.register("badnets")
class BadNetsTrigger(Trigger):
    def __init__(self, image_shape, size: int = 3, value: float = 1.0,
                 position: str = "bottom_right", margin: int = 0):
        c, h, w = image_shape
        if not 0 < size <= min(h, w):
            raise ConfigError(f"badnets patch size must be in [1, {min(h, w)}], got {size}")
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"badnets patch value must be in [0, 1], got {value}")
        corners = {
            "bottom_right": (h - size - margin, w - size - margin),
            "bottom_left": (h - size - margin, margin),
            "top_right": (margin, w - size - margin),
            "top_left": (margin, margin),
        }
        if position not in corners:
            raise ConfigError(f"badnets position {position!r} unknown; choose one of: {', '.join(corners)}")
        top, left = corners[position]
        if top < 0 or left < 0:
            raise ConfigError(f"badnets patch of size {size} with margin {margin} does not fit a {h}x{w} image")
        mask = torch.zeros(c, h, w)
        mask[:, top:top + size, left:left + size] = 1.0
        super().__init__(torch.full((c, h, w), float(value)), mask)
