"""LightningDataModules, registered by short name."""
from benchmark.extension.registry import Registry
from datamodules.base import BackdoorDataModule

DATASETS: Registry[type[BackdoorDataModule]] = Registry("dataset")

from datamodules import cifar10, fashion_mnist, gtsrb, synthetic, tiny_imagenet  # noqa: E402,F401  (registers)
from datamodules import captions, fashion_mnist_captions, synthetic_captions  # noqa: E402,F401  (registers)


def build_datamodule(name: str, **kwargs) -> BackdoorDataModule:
    return DATASETS.get(name)(**kwargs)


__all__ = ["BackdoorDataModule", "DATASETS", "build_datamodule"]
