"""BadNets for CLIP (CleanCLIP backdoor/utils.py `apply_trigger`, patch_type
"random", location "random"): a size x size patch of Gaussian noise around
the image's per-channel mean replaces the pixels at a random location, offsets
uniform in [0, H - 1 - size] (the reference's randint(0, 223 - patch)); the
PIL round trip clips to [0, 1] and quantises to 8 bits. Default size 16 at
the reference's 224 px. Location and noise are drawn per image from the
image itself (benchmark/triggers/hashed_noise.py) instead of a global RNG,
so every job sees the same triggered image."""
from __future__ import annotations

import torch

from benchmark.errors import ConfigError
from benchmark.schema import PositiveInt
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import Trigger
from benchmark.triggers.hashed_noise import normal, offsets, row_keys


def paste(images: torch.Tensor, patches: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Write patches (B, C, s, s) at per-image offsets with one masked op."""
    b, c, h, w = images.shape
    s = patches.shape[-1]
    rows = torch.arange(h, device=images.device)[None, :] - top[:, None]        # (B, H)
    cols = torch.arange(w, device=images.device)[None, :] - left[:, None]       # (B, W)
    inside = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    r = rows.clamp(0, s - 1)[:, None, :, None].expand(b, c, h, s)
    spread = patches.gather(2, r)                                               # (B, C, H, s)
    k = cols.clamp(0, s - 1)[:, None, None, :].expand(b, c, h, w)
    spread = spread.gather(3, k)                                                # (B, C, H, W)
    return torch.where(inside[:, None], spread, images)


def patch_offsets(images: torch.Tensor, keys: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = images.shape[-2:]
    # the reference never uses the last offset (randint(0, 223 - size)); an
    # image exactly one patch larger than the patch has only offset 0
    return offsets(keys, max(0, h - 1 - size), 0), offsets(keys, max(0, w - 1 - size), 1)


def check_fits(size: int, image_shape) -> None:
    if size > min(image_shape[-2:]):
        raise ConfigError(f"patch size={size} is not allowed for {image_shape[-2]}x{image_shape[-1]} images; "
                          f"must be at most {min(image_shape[-2:])}")


@TRIGGERS.register("noise_patch")
class NoisePatchTrigger(Trigger):
    rowwise = True

    def __init__(self, image_shape: tuple[int, int, int], size: PositiveInt = 16, seed: int = 0):
        super().__init__(image_shape)
        check_fits(size, self.image_shape)
        self.size, self.seed = int(size), int(seed)

    @torch.no_grad()
    def apply(self, images: torch.Tensor) -> torch.Tensor:
        b, c = images.shape[:2]
        keys = row_keys(images, self.seed)
        mean = images.float().mean(dim=(2, 3), keepdim=True)
        noise = normal(keys, c * self.size * self.size, stream=3).view(b, c, self.size, self.size)
        patches = ((mean + noise).clamp(0, 1) * 255).round() / 255
        top, left = patch_offsets(images, keys, self.size)
        return paste(images, patches.to(images.dtype), top, left)
