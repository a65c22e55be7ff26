"""Blended for CLIP (CleanCLIP backdoor/utils.py `apply_trigger`, patch_type
"blended", location "blended"): x' = clip(alpha * u + (1 - alpha) * x) with u
a U(0, 1) noise image drawn afresh per image, alpha 0.2, then the PIL round
trip's 8-bit quantisation. The noise is drawn per image from the image itself
(benchmark/triggers/hashed_noise.py), so every job sees the same triggered
image."""
from __future__ import annotations

import torch

from benchmark.extension.schema import Fraction
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import Trigger
from benchmark.triggers.hashed_noise import row_keys, uniform


@TRIGGERS.register("noise_blend")
class NoiseBlendTrigger(Trigger):
    rowwise = True

    def __init__(self, image_shape: tuple[int, int, int], alpha: Fraction = 0.2, seed: int = 0):
        super().__init__(image_shape)
        self.alpha, self.seed = float(alpha), int(seed)

    @torch.no_grad()
    def apply(self, images: torch.Tensor) -> torch.Tensor:
        keys = row_keys(images, self.seed)
        noise = uniform(keys, images[0].numel(), stream=5).view(images.shape).to(images.dtype)
        blended = (self.alpha * noise + (1 - self.alpha) * images).clamp(0, 1)
        return (blended * 255).round() / 255
