"""Model zoo. Every model holds its own input normalisation so that triggers,
perturbations and epsilons live in [0, 1] pixel space.

A built-in architecture takes a width after its name, ``<name>-w<width>``:
``preact_resnet18-w16`` is the paper's PreAct-ResNet18 with 16 channels in its
first stage (instead of 64), ``small_cnn-w64`` the small CNN four times as
wide. The width is part of the architecture's name, so it reaches the store
keys, the rows and the reports without a separate field, and a grid ladders
capacity by listing names.
"""
from __future__ import annotations

import re

import torch

from benchmark.errors import UnknownNameError
from benchmark.models.classifier import ImageClassifier
from benchmark.models.preact_resnet18 import PreActResNet18
from benchmark.models.small_cnn import SmallCNN
from benchmark.models.timm_model import TIMM_PREFIX, TimmBackbone, build_timm

# Architectures defined here; any timm model is reachable as "timm:<name>".
ARCHITECTURES = {
    "preact_resnet18": PreActResNet18,
    "small_cnn": SmallCNN,
}


_WIDTH = re.compile(r"^(?P<name>[a-z0-9_]+)-w(?P<width>[0-9]+)$")


def architecture_names() -> list[str]:
    return sorted(ARCHITECTURES) + [f"<{'|'.join(sorted(ARCHITECTURES))}>-w<width>",
                                    f"{TIMM_PREFIX}<timm model name>"]


def parse_architecture(arch: str) -> tuple[str, dict]:
    """(built-in name, constructor options) of `arch`: ``"small_cnn"`` ->
    ("small_cnn", {}), ``"preact_resnet18-w16"`` -> ("preact_resnet18",
    {"width": 16}). Unknown names and widths below 1 are refused by name."""
    if arch in ARCHITECTURES:
        return arch, {}
    match = _WIDTH.match(arch)
    if match and match["name"] in ARCHITECTURES:
        width = int(match["width"])
        if width < 1:
            raise UnknownNameError("architecture width", arch, ["a width of at least 1, e.g. "
                                                               f"{match['name']}-w16"])
        return match["name"], {"width": width}
    raise UnknownNameError("architecture", arch, architecture_names())


def backbone_class(arch: str) -> type:
    """The class `build_model` wraps for `arch`, without building it (for
    code fingerprints)."""
    if arch.startswith(TIMM_PREFIX):
        return TimmBackbone
    return ARCHITECTURES[parse_architecture(arch)[0]]


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int,
                mean: tuple[float, ...], std: tuple[float, ...]) -> ImageClassifier:
    """Build a randomly initialised classifier for `arch` with its normaliser."""
    if arch.startswith(TIMM_PREFIX):
        backbone = build_timm(arch[len(TIMM_PREFIX):], num_classes, in_channels, image_size)
    else:
        name, options = parse_architecture(arch)
        backbone = ARCHITECTURES[name](num_classes=num_classes, in_channels=in_channels, **options)
    # Weights in channels_last to match the inputs (ImageClassifier.forward).
    return ImageClassifier(backbone, mean, std).to(memory_format=torch.channels_last)


__all__ = ["ImageClassifier", "backbone_class", "build_model", "architecture_names", "parse_architecture",
           "ARCHITECTURES"]
