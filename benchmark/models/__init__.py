"""Model zoo. Every model holds its own input normalisation so that triggers,
perturbations and epsilons live in [0, 1] pixel space."""
from __future__ import annotations

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


def architecture_names() -> list[str]:
    return sorted(ARCHITECTURES) + [f"{TIMM_PREFIX}<timm model name>"]


def backbone_class(arch: str) -> type:
    """The class `build_model` wraps for `arch`, without building it (for
    code fingerprints)."""
    if arch.startswith(TIMM_PREFIX):
        return TimmBackbone
    if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    raise UnknownNameError("architecture", arch, architecture_names())


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int,
                mean: tuple[float, ...], std: tuple[float, ...]) -> ImageClassifier:
    """Build a randomly initialised classifier for `arch` with its normaliser."""
    if arch.startswith(TIMM_PREFIX):
        backbone = build_timm(arch[len(TIMM_PREFIX):], num_classes, in_channels, image_size)
    elif arch in ARCHITECTURES:
        backbone = ARCHITECTURES[arch](num_classes=num_classes, in_channels=in_channels)
    else:
        raise UnknownNameError("architecture", arch, architecture_names())
    # Weights in channels_last to match the inputs (ImageClassifier.forward).
    return ImageClassifier(backbone, mean, std).to(memory_format=torch.channels_last)


__all__ = ["ImageClassifier", "backbone_class", "build_model", "architecture_names", "ARCHITECTURES"]
