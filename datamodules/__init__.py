"""LightningDataModules, registered by short name."""
from datamodules.base import BackdoorDataModule
from datamodules.registry import DATASETS

from datamodules import cifar10, fashion_mnist, gtsrb, synthetic, tiny_imagenet  # noqa: F401  (registers)
from datamodules import captions, fashion_mnist_captions, synthetic_captions  # noqa: F401  (registers)


def build_datamodule(name: str, **kwargs) -> BackdoorDataModule:
    return DATASETS.get(name)(**kwargs)


__all__ = ["BackdoorDataModule", "DATASETS", "build_datamodule"]
