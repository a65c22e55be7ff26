"""Blended (Chen et al. 2017): x' = (1 - alpha) x + alpha p over the whole image.

The pattern is seeded uniform noise by default (reproducible without any
file), or an image file resized to the data's shape (BackdoorBench uses the
Hello Kitty picture at alpha 0.2).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.errors import DataNotFoundError
from benchmark.extension.schema import Fraction
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import PatternTrigger


@TRIGGERS.register("blended")
class BlendedTrigger(PatternTrigger):
    def __init__(self, image_shape: tuple[int, int, int], alpha: Fraction = 0.2, pattern_seed: int = 1234,
                 pattern_path: str | None = None):
        c, h, w = image_shape
        if pattern_path:
            pattern = _load_pattern(Path(pattern_path), c, h, w)
        else:
            gen = torch.Generator().manual_seed(pattern_seed)
            pattern = torch.rand((c, h, w), generator=gen)
        super().__init__(pattern, torch.full((c, h, w), float(alpha)))


def _load_pattern(path: Path, c: int, h: int, w: int) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    if not path.is_file():
        raise DataNotFoundError(f"blended pattern image {path} does not exist")
    mode = ImageReadMode.GRAY if c == 1 else ImageReadMode.RGB
    img = decode_image(str(path), mode=mode).float().div(255).unsqueeze(0)
    return F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)
