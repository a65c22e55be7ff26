"""A tiny deterministic caption dataset for tests and the smoke grid: the
synthetic images (`datamodules/synthetic.py`: a fixed random template per
class plus noise) with captions drawn from a few templates naming their
class, and the same classes for zero-shot evaluation. RGB by default, as
CLIP's caption data (CleanCLIP converts every image to RGB); `channels=1`
gives grey images."""
from __future__ import annotations

import torch

from datamodules.registry import DATASETS
from datamodules.captions import CaptionDataModule
from datamodules.synthetic import SyntheticDataModule

#: fixed, so the captions are part of the data's identity, not of a cell's seed
CAPTION_SEED = 20240917
CLASS_NAMES = ("circle", "square", "star", "arrow", "cross", "wave", "ring", "spiral")


@DATASETS.register("synthetic_captions")
class SyntheticCaptions(CaptionDataModule, SyntheticDataModule):
    name = "synthetic_captions"
    templates = ("a photo of a {}.", "a drawing of a {}.", "a picture of the {}.")

    def __init__(self, *args, num_classes: int = 4, channels: int = 3, **kwargs):
        if not 2 <= num_classes <= len(CLASS_NAMES):
            raise ValueError(f"synthetic_captions: num_classes must be in 2..{len(CLASS_NAMES)}, got {num_classes}")
        super().__init__(*args, num_classes=num_classes, channels=channels, **kwargs)
        self.class_names = CLASS_NAMES[:num_classes]

    def identity(self) -> dict:
        return {**SyntheticDataModule.identity(self), "captions": CAPTION_SEED, "templates": list(self.templates)}

    def load_captions(self) -> list[str]:
        gen = torch.Generator().manual_seed(CAPTION_SEED)
        choice = torch.randint(len(self.templates), (len(self.train_labels),), generator=gen)
        return [self.templates[t].format(self.class_names[y])
                for t, y in zip(choice.tolist(), self.train_labels.tolist())]
