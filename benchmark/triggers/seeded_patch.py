"""The TrojanVQA stand-in for CLIP: TrojanVQA pastes an optimised patch image
(loaded from a file, `--patch_name`) at a random location (CleanCLIP /
BadCLIP backdoor/utils.py, patch_type "vqa"). No such file is available
offline, so the patch (C x size x size, uniform pixels quantised to 8 bits)
is drawn once from the seed and is the same for every image; its location is
drawn per image from the image itself, as for the noise patch."""
from __future__ import annotations

import torch

from benchmark.extension.schema import PositiveInt
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import Trigger
from benchmark.triggers.hashed_noise import row_keys
from benchmark.triggers.noise_patch import check_fits, paste, patch_offsets


@TRIGGERS.register("seeded_patch")
class SeededPatchTrigger(Trigger):
    rowwise = True

    def __init__(self, image_shape: tuple[int, int, int], size: PositiveInt = 16, seed: int = 0):
        super().__init__(image_shape)
        check_fits(size, self.image_shape)
        self.size, self.seed = int(size), int(seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.patch = (torch.rand((self.image_shape[0], self.size, self.size), generator=gen) * 255).round() / 255

    @torch.no_grad()
    def apply(self, images: torch.Tensor) -> torch.Tensor:
        keys = row_keys(images, self.seed)
        top, left = patch_offsets(images, keys, self.size)
        patches = self.patch.to(images.device, images.dtype).expand(len(images), -1, -1, -1)
        return paste(images, patches, top, left)
