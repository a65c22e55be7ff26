"""Tiny-ImageNet (Le & Yang 2015): 100k/10k RGB 64x64 images, 200 classes.

Read from the standard `tiny-imagenet-200` layout (the data directory may be
that folder or its parent). The official test split has no labels, so the
labelled val split serves as the test set. Class index = position of the
wnid in sorted wnids.txt. The 110k JPEGs are decoded once and cached as
safetensors in the data directory.
"""
from __future__ import annotations

from pathlib import Path

import torch

from benchmark.errors import DataNotFoundError
from datamodules.registry import DATASETS
from datamodules.base import BackdoorDataModule
from datamodules.cache import read_cache, write_cache

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"
LAYOUT = ("wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt")


def _decode(paths: list[Path]) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    # Some Tiny-ImageNet JPEGs are greyscale; RGB mode gives all three channels.
    return torch.stack([decode_image(read_file(str(p)), mode=ImageReadMode.RGB) for p in paths])


@DATASETS.register("tiny_imagenet")
class TinyImageNetDataModule(BackdoorDataModule):
    name = "tiny_imagenet"
    num_classes = 200
    mean = (0.4802, 0.4481, 0.3975)
    std = (0.2302, 0.2265, 0.2262)
    crop_padding = 8  # the CIFAR 4 px, scaled to 64 px images
    horizontal_flip = True

    @property
    def cache_path(self) -> Path:
        return self.data_dir / "tiny_imagenet_64x64.safetensors"

    def _find(self) -> Path | None:
        for folder in (self.data_dir, self.data_dir / FOLDER):
            if (folder / "wnids.txt").is_file() and (folder / "val" / "val_annotations.txt").is_file():
                return folder
        return None

    def locate(self) -> Path:
        folder = self._find()
        if folder is not None:
            return folder
        problem = "downloading was switched off"
        if self.download:
            try:
                from torchvision.datasets.utils import download_and_extract_archive

                download_and_extract_archive(URL, download_root=str(self.data_dir))
                folder = self._find()
                if folder is not None:
                    return folder
                problem = "the download left no wnids.txt and val/val_annotations.txt"
            except Exception as exc:  # no network, disk full, ...
                problem = f"download failed ({type(exc).__name__}: {exc})"
        raise DataNotFoundError(
            f"Tiny-ImageNet not found in {self.data_dir} (or its {FOLDER}/): expected {LAYOUT}, and {problem}")

    def load(self):
        cached = read_cache(self.cache_path)
        if cached is not None:
            return cached
        folder = self.locate()
        wnids = sorted(line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip())
        index = {wnid: i for i, wnid in enumerate(wnids)}
        # Sorted paths fix the sample order, which the seeded index selections rely on.
        train = [(p, index[w]) for w in wnids for p in sorted((folder / "train" / w / "images").glob("*.JPEG"))]
        test = []
        for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 2:
                test.append((folder / "val" / "images" / fields[0], index[fields[1]]))
        test.sort()
        if not train or not test:
            raise DataNotFoundError(f"Tiny-ImageNet in {folder} has no images: expected {LAYOUT}")
        tensors = []
        for samples in (train, test):
            tensors += [_decode([p for p, _ in samples]), torch.tensor([y for _, y in samples], dtype=torch.int64)]
        write_cache(self.cache_path, tensors)
        return tuple(tensors)
