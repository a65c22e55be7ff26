"""BadNets (Gu et al. 2017): a solid square patch, by default 3x3 white at the
bottom-right corner, as in BackdoorBench's CIFAR-10 setting."""
from __future__ import annotations

from typing import Literal

import torch

from benchmark.errors import ConfigError
from benchmark.extension.schema import ClosedUnitInterval, NonNegativeInt, PositiveInt
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import PatternTrigger


@TRIGGERS.register("badnets")
class BadNetsTrigger(PatternTrigger):
    def __init__(self, image_shape: tuple[int, int, int], size: PositiveInt = 3, value: ClosedUnitInterval = 1.0,
                 position: Literal["bottom_right", "bottom_left", "top_right", "top_left"] = "bottom_right",
                 margin: NonNegativeInt = 0):
        c, h, w = image_shape
        # Whether the patch fits depends on the image, which no hint knows.
        if size > min(h, w):
            raise ConfigError(f"badnets: size={size} is not allowed for {h}x{w} images; must be at most {min(h, w)}")
        corners = {
            "bottom_right": (h - size - margin, w - size - margin),
            "bottom_left": (h - size - margin, margin),
            "top_right": (margin, w - size - margin),
            "top_left": (margin, margin),
        }
        top, left = corners[position]
        if top < 0 or left < 0:
            raise ConfigError(f"badnets: margin={margin} is not allowed with size={size} for {h}x{w} images; "
                              f"size + margin must be at most {min(h, w)}")
        mask = torch.zeros(c, h, w)
        mask[:, top:top + size, left:left + size] = 1.0
        super().__init__(torch.full((c, h, w), float(value)), mask)
