"""The networks and tensor helpers of the Input-Aware Dynamic Attack (IAD;
Nguyen & Tran, NeurIPS 2020), used by `benchmark.triggers.input_aware`.

- `EncoderDecoder` (with its `ConvBNReLU` blocks) is the generator design
  shared by the pattern generator G and the mask generator M: `stages` down
  stages (two 3x3 conv-BN-ReLU blocks and a 2x2 max-pool each,
  `base_channels` doubling per stage), a middle conv block, bilinear 2x
  upsampling stages mirroring them; the last block has no ReLU and the output
  is tanh(.)/2 + 0.5, in (0, 1). Sides that are not a multiple of
  2**stages are replicate-padded before the network and cropped back after.
- `harden` is the mask threshold m = tanh(20 M - 10) / 2 + 0.5, `mix` the
  blend x + (G(x) - x) * m(x), `rms_distance` the per-sample distance of the
  mask stage's diversity term, `pixel_std` the per-channel pixel std that
  sets the units of the image distance, `evaluating` a mode guard.

References: BackdoorBench attack/inputaware.py (InputAwareGenerator,
Threshold, train_mask_step); VinAIResearch/input-aware-backdoor-attack-release
networks/models.py.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNReLU(nn.Sequential):
    """3x3 convolution, BatchNorm (momentum 0.05 as in the reference), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True):
        layers = [nn.Conv2d(in_channels, out_channels, 3, padding=1),
                  nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.05)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class EncoderDecoder(nn.Module):
    """The generator network of IAD (BackdoorBench `InputAwareGenerator`):
    [0, 1] images (B, C, H, W) -> (B, out_channels, H, W) in (0, 1)."""

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 32, stages: int = 3):
        super().__init__()
        self.multiple = 2 ** stages
        down, channels_in, channels = [], in_channels, base_channels
        for _ in range(stages):
            down += [ConvBNReLU(channels_in, channels), ConvBNReLU(channels, channels), nn.MaxPool2d(2)]
            channels_in, channels = channels, channels * 2
        self.down = nn.Sequential(*down)
        channels = channels_in  # the widest stage
        self.middle = ConvBNReLU(channels, channels)
        up = []
        for stage in range(stages):
            last = stage == stages - 1
            up += [nn.Upsample(scale_factor=2, mode="bilinear"), ConvBNReLU(channels, channels),
                   ConvBNReLU(channels, out_channels if last else channels // 2, relu=not last)]
            channels //= 2
        self.up = nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last: 1.4x faster on the CPU (forward + backward of 64 28x28
        # images through the MNIST-shaped network, one thread: 0.78 -> 0.56 s,
        # measured), and the layout GPU convolutions want.
        x = x.contiguous(memory_format=torch.channels_last)
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            x = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="replicate")
        y = self.up(self.middle(self.down(x)))[..., top:top + h, left:left + w]
        return torch.tanh(y) / 2 + 0.5


def harden(mask: torch.Tensor) -> torch.Tensor:
    """m = tanh(20 M - 10) / 2 + 0.5: M's output pushed towards {0, 1}."""
    return torch.tanh(20 * mask - 10) / 2 + 0.5


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample root-mean-square difference, (B,)."""
    return (a - b).pow(2).flatten(1).mean(1).sqrt()


def mix(images: torch.Tensor, patterns: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """x + (pattern - x) * mask: the pattern where the mask is 1."""
    return images + (patterns - images) * masks


def pixel_std(images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Per-channel std of uint8 (N, C, H, W) images in [0, 1] units, (C,),
    accumulated in float64 over chunks (CIFAR-10 as float32 would be 600 MB)."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for part in images.split(chunk):
        x = part.to(torch.float64).div_(255)
        total += x.sum(dim=(0, 2, 3))
        squares += x.pow(2).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    variance = squares / count - (total / count) ** 2
    # A floor of one grey level keeps a constant channel from dividing by zero.
    return variance.clamp_min(0).sqrt().clamp_min(1 / 255).float()


@contextlib.contextmanager
def evaluating(*modules: nn.Module):
    """Eval mode inside the block; each module's previous mode after it."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
