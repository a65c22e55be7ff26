"""BadNets for CLIP (CleanCLIP backdoor/utils.py `apply_trigger`, patch_type
"random", location "random"; backdoor/create_backdoor_data.py): every image
is converted to RGB, a size x size patch of Gaussian noise around the image's
per-channel mean, drawn for each of the 3 channels (`mean + randn(3, s, s)`),
replaces the pixels at a random location, offsets uniform in
[0, H - 1 - size] (the reference's randint(0, 223 - patch)), and the image
goes back through `ToPILImage`, i.e. `pic.mul(255).byte()`: truncation
towards zero and no clamp, so out-of-range values wrap modulo 256 (-2 -> 254,
256 -> 0) and the patch is close to uniform random bytes. A grey image
therefore gets a colour patch. Default size 16 at the reference's 224 px.
Location and noise are drawn per image from the image itself
(benchmark/triggers/hashed_noise.py) instead of a global RNG, so every job
sees the same triggered image.

Options (the reference's behaviour is the default):
- channels: "rgb" (the reference: the images must be RGB, the data module
  serves grey data as RGB; a 1-channel image shape is refused) or "data"
  (noise with the data's own channel count: grey noise on grey images);
- overflow: "wrap" (the reference's uint8 cast) or "clamp" (clip to [0, 1]
  and round: a pixel below 0 becomes black, which on Fashion-MNIST is the
  background, so about 40 % of the patch is invisible);
- location: "random" (the reference), "four_corners" (CleanCLIP's other
  location: the same patch at the four corners) or "corner" (top-left only);
- noise: "image" (the reference: drawn per image around its mean) or
  "fixed" (one draw from the seed around 0.5, the same patch on every image).
  location "corner" with noise "fixed" is a plain BadNets patch: the
  positive control that any working poisoning pipeline must implant.
"""
from __future__ import annotations

from typing import Literal

import torch

from benchmark.errors import ConfigError
from benchmark.extension.schema import PositiveInt
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import Trigger
from benchmark.triggers.hashed_noise import mix, normal, offsets, row_keys

CHANNELS = ("rgb", "data")
OVERFLOWS = ("wrap", "clamp")
LOCATIONS = ("random", "four_corners", "corner")
NOISES = ("image", "fixed")


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


def to_bytes(values: torch.Tensor, overflow: str) -> torch.Tensor:
    """[0, 1]-scaled floats as 8-bit levels / 255: `pic.mul(255).byte()`
    (truncate, wrap modulo 256) or clip to [0, 1] and round."""
    if overflow == "wrap":
        # explicit, so the result does not rest on an out-of-range cast
        return torch.remainder(torch.trunc(values * 255), 256) / 255
    return (values.clamp(0, 1) * 255).round() / 255


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"noise_patch: {name}={value!r} unknown; choose one of: {', '.join(allowed)}")
    return value


@TRIGGERS.register("noise_patch")
class NoisePatchTrigger(Trigger):
    rowwise = True

    def __init__(self, image_shape: tuple[int, int, int], size: PositiveInt = 16, seed: int = 0,
                 channels: Literal["rgb", "data"] = "rgb", overflow: Literal["wrap", "clamp"] = "wrap",
                 location: Literal["random", "four_corners", "corner"] = "random",
                 noise: Literal["image", "fixed"] = "image"):
        super().__init__(image_shape)
        check_fits(size, self.image_shape)
        self.size, self.seed = int(size), int(seed)
        self.channels = _choice("channels", channels, CHANNELS)
        self.overflow = _choice("overflow", overflow, OVERFLOWS)
        self.location = _choice("location", location, LOCATIONS)
        self.noise = _choice("noise", noise, NOISES)
        if self.channels == "rgb" and self.image_shape[0] != 3:
            raise ConfigError(f"noise_patch: channels='rgb' draws colour noise on RGB images as CleanCLIP does "
                              f"(it converts every image to RGB first), but these images have "
                              f"{self.image_shape[0]} channel(s); serve them as RGB (fashion_mnist_captions "
                              f"channels=3) or set channels='data'")

    def _patches(self, images: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        b, c = images.shape[:2]
        n = c * self.size * self.size
        if self.noise == "fixed":
            key = mix(torch.full((1,), self.seed, dtype=torch.long, device=images.device))
            z = normal(key, n, stream=3).view(1, c, self.size, self.size).expand(b, -1, -1, -1)
            return to_bytes(0.5 + z, self.overflow)
        mean = images.float().mean(dim=(2, 3), keepdim=True)
        return to_bytes(mean + normal(keys, n, stream=3).view(b, c, self.size, self.size), self.overflow)

    @torch.no_grad()
    def apply(self, images: torch.Tensor) -> torch.Tensor:
        keys = row_keys(images, self.seed)
        patches = self._patches(images, keys).to(images.dtype)
        h, w = images.shape[-2:]
        if self.location == "random":
            return paste(images, patches, *patch_offsets(images, keys, self.size))
        zero = torch.zeros(len(images), dtype=torch.long, device=images.device)
        corners = [(0, 0)] if self.location == "corner" else [(0, 0), (0, w - self.size), (h - self.size, 0),
                                                              (h - self.size, w - self.size)]
        for top, left in corners:
            images = paste(images, patches, zero + top, zero + left)
        return images
