"""Fashion-MNIST as caption data, the suite's real offline CLIP dataset: the
60,000 training images with a caption drawn per image from class-name
templates, zero-shot evaluation on the 10,000 test images (same templates,
averaged per class). Images stay 1 x 28 x 28; the CLIP model repeats grey to
three channels."""
from __future__ import annotations

import torch

from datamodules import DATASETS
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

    def identity(self) -> dict:
        return {"dataset": self.name, "captions": CAPTION_SEED, "zero_shot": self.zero_shot_identity()}

    def load_captions(self) -> list[str]:
        gen = torch.Generator().manual_seed(CAPTION_SEED)
        choice = torch.randint(len(self.templates), (len(self.train_labels),), generator=gen)
        return [self.templates[t].format(self.class_names[y])
                for t, y in zip(choice.tolist(), self.train_labels.tolist())]
