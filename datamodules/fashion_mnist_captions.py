"""Fashion-MNIST as caption data, the suite's real offline CLIP dataset: the
60,000 training images with a caption drawn per image from class-name
templates, zero-shot evaluation on the 10,000 test images (same templates,
averaged per class).

Images are served as RGB (3 x 28 x 28 uint8, the grey value in every
channel), as CleanCLIP converts every image to RGB before anything else
(nishadsinghi/CleanCLIP backdoor/create_backdoor_data.py, src/data.py
`.convert("RGB")`): a trigger drawn on the image is then a colour trigger, and
re-activation perturbations have three channels. `channels=1` keeps the grey
1 x 28 x 28 images (the CLIP model repeats grey to three channels), a
deviation for comparison; the two are separate data in the store.
60,000 RGB images take 141 MB in memory (grey: 47 MB)."""
from __future__ import annotations

import torch

from benchmark.errors import ConfigError
from datamodules.registry import DATASETS
from datamodules.captions import CaptionDataModule
from datamodules.fashion_mnist import FashionMNISTDataModule

#: fixed, so the captions belong to the data's identity, not to a cell's seed
CAPTION_SEED = 20170825
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
TEMPLATES = ("a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of a {}.",
             "a photo of the {}.", "a close-up photo of a {}.", "a picture of a {}.", "a product photo of a {}.",
             "an image of a {}.")


@DATASETS.register("fashion_mnist_captions")
class FashionMNISTCaptions(CaptionDataModule, FashionMNISTDataModule):
    name = "fashion_mnist_captions"
    class_names = CLASS_NAMES
    templates = TEMPLATES

    def __init__(self, *args, channels: int = 3, **kwargs):
        if channels not in (1, 3):
            raise ConfigError(f"fashion_mnist_captions: channels must be 3 (RGB, CleanCLIP) or 1 (grey), got {channels}")
        super().__init__(*args, **kwargs)
        self.channels = int(channels)
        if self.channels == 3:
            self.mean, self.std = self.mean * 3, self.std * 3

    def identity(self) -> dict:
        out = {"dataset": self.name, "captions": CAPTION_SEED, "zero_shot": self.zero_shot_identity()}
        return out if self.channels == 1 else {**out, "channels": self.channels}

    def load(self):
        train, train_labels, test, test_labels = super().load()
        if self.channels == 3:
            train, test = train.expand(-1, 3, -1, -1).contiguous(), test.expand(-1, 3, -1, -1).contiguous()
        return train, train_labels, test, test_labels

    def load_captions(self) -> list[str]:
        gen = torch.Generator().manual_seed(CAPTION_SEED)
        choice = torch.randint(len(self.templates), (len(self.train_labels),), generator=gen)
        return [self.templates[t].format(self.class_names[y])
                for t, y in zip(choice.tolist(), self.train_labels.tolist())]
