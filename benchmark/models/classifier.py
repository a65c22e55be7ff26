"""A backbone behind its own input normalisation."""
from __future__ import annotations

import torch
from torch import nn


class ImageClassifier(nn.Module):
    """Takes images in [0, 1], normalises them, runs the backbone.

    The backbone declares two lists of its own module names:
    `bec_layers` (block-internal convolutions whose outputs BEC compares) and
    `attention_layers` (stage outputs that NAD distils), and it names its
    classifier head (`head_layer`, a Linear) and the (convolution, BatchNorm)
    pairs where the BatchNorm normalises exactly that convolution's output
    (`conv_bn_pairs`, for CLP). Here they are prefixed with ``backbone.`` so
    they resolve against this module.
    """

    def __init__(self, backbone: nn.Module, mean, std):
        super().__init__()
        self.backbone = backbone
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if x.dim() == 4:
            # channels_last: 1.7x faster small-CNN training steps on two CPU
            # cores (70 -> 41 ms at batch 128, measured), and the layout GPU
            # convolutions want under bf16.
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    @property
    def bec_layers(self) -> list[str]:
        return [f"backbone.{name}" for name in self.backbone.bec_layers]

    @property
    def attention_layers(self) -> list[str]:
        return [f"backbone.{name}" for name in self.backbone.attention_layers]

    @property
    def head_layer(self) -> str | None:
        head = getattr(self.backbone, "head_layer", None)
        return f"backbone.{head}" if head else None

    @property
    def conv_bn_pairs(self) -> list[tuple[str, str]]:
        return [(f"backbone.{c}", f"backbone.{b}") for c, b in getattr(self.backbone, "conv_bn_pairs", [])]

    def submodule(self, name: str) -> nn.Module:
        return self.get_submodule(name)
