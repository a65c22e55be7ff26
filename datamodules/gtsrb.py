"""GTSRB (Stallkamp et al. 2012): 39,209/12,630 traffic-sign photos, 43 classes.

Photos come in sizes from 15 to 250 px, so, as BackdoorBench does, every one
is resized to 32x32. Decoding ~52k PPM files takes a while, so it is done once
and the tensors are cached as safetensors in the data directory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.errors import DataNotFoundError
from datamodules.registry import DATASETS
from datamodules.base import BackdoorDataModule
from datamodules.cache import read_cache, write_cache

SIZE = 32
@DATASETS.register("gtsrb")
class GTSRBDataModule(BackdoorDataModule):
    name = "gtsrb"
    num_classes = 43
    mean = (0.3403, 0.3121, 0.3214)
    std = (0.2724, 0.2608, 0.2669)
    crop_padding = 4
    horizontal_flip = False  # signs are not mirror-symmetric; BackdoorBench does not flip

    @property
    def cache_path(self) -> Path:
        return self.data_dir / f"gtsrb_{SIZE}x{SIZE}.safetensors"

    def root(self) -> Path:
        """torchvision wants the parent of `gtsrb/`; accept `gtsrb/` itself too."""
        if self.data_dir.name == "gtsrb" and (self.data_dir / "GTSRB").is_dir():
            return self.data_dir.parent
        return self.data_dir

    def _split(self, split: str):
        from torchvision.datasets import GTSRB

        root = self.root()
        try:
            ds = GTSRB(str(root), split=split, download=False)
        except (RuntimeError, OSError) as first:
            if not self.download:
                raise DataNotFoundError(self._missing(root, f"downloading was switched off ({first})")) from None
            try:
                ds = GTSRB(str(root), split=split, download=True)
            except Exception as exc:  # no network, disk full, ...
                raise DataNotFoundError(self._missing(root, f"download failed ({type(exc).__name__}: {exc})")) from exc
        from PIL import Image

        # torchvision numbers training classes by position among the folders
        # present; the folder name is the real class id, so use it instead.
        samples = [(p, int(Path(p).parent.name) if split == "train" else y) for p, y in ds._samples]
        images = torch.empty((len(samples), SIZE, SIZE, 3), dtype=torch.uint8)
        for i, (path, _) in enumerate(samples):  # the one-time decode
            with Image.open(path) as img:
                resized = img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
            images[i] = torch.from_numpy(np.asarray(resized))
        labels = torch.tensor([y for _, y in samples], dtype=torch.int64)
        return images.permute(0, 3, 1, 2).contiguous(), labels

    @staticmethod
    def _missing(root: Path, problem: str) -> str:
        return (f"GTSRB not found in {root}: expected torchvision's layout gtsrb/GTSRB/Training/<class>/*.ppm, "
                f"gtsrb/GTSRB/Final_Test/Images/*.ppm and gtsrb/GT-final_test.csv, and {problem}")

    def load(self):
        cached = read_cache(self.cache_path)
        if cached is not None:
            return cached
        tensors = (*self._split("train"), *self._split("test"))
        write_cache(self.cache_path, tensors)
        return tensors
