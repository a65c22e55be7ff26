"""A tiny deterministic in-memory dataset for tests: each class is a fixed
random template plus per-sample noise, so a small model learns it in a few
steps and every run of a test sees the same pixels."""
from __future__ import annotations

import torch

from datamodules.registry import DATASETS
from datamodules.base import BackdoorDataModule


@DATASETS.register("synthetic")
class SyntheticDataModule(BackdoorDataModule):
    name = "synthetic"

    def __init__(self, *args, num_train: int = 512, num_test: int = 256, num_classes: int = 4,
                 channels: int = 1, size: int = 16, data_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_train_samples, self.num_test_samples = num_train, num_test
        self.num_classes, self.channels, self.size, self.data_seed = num_classes, channels, size, data_seed
        self.mean, self.std = (0.5,) * channels, (0.25,) * channels

    def identity(self) -> dict:
        return {"dataset": self.name, "num_train": self.num_train_samples, "num_test": self.num_test_samples,
                "num_classes": self.num_classes, "channels": self.channels, "size": self.size,
                "data_seed": self.data_seed}

    def _split(self, n: int, gen: torch.Generator, templates: torch.Tensor):
        labels = torch.arange(n) % self.num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        noise = torch.rand((n, self.channels, self.size, self.size), generator=gen)
        images = 0.7 * templates[labels] + 0.3 * noise
        return images.mul(255).round().to(torch.uint8), labels

    def load(self):
        gen = torch.Generator().manual_seed(self.data_seed)
        templates = torch.rand((self.num_classes, self.channels, self.size, self.size), generator=gen)
        return (*self._split(self.num_train_samples, gen, templates),
                *self._split(self.num_test_samples, gen, templates))
