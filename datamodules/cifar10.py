"""CIFAR-10 (Krizhevsky 2009): 50k/10k RGB 32x32 images, 10 classes.

Read through torchvision from its `cifar-10-batches-py` folder; the data
directory may be that folder or its parent. A `cifar-10-python.tar.gz` lying
there is extracted even with downloads off, since it is already local.
"""
from __future__ import annotations

from pathlib import Path

import torch

from benchmark.errors import DataNotFoundError
from datamodules.registry import DATASETS
from datamodules.base import BackdoorDataModule


@DATASETS.register("cifar10")
class CIFAR10DataModule(BackdoorDataModule):
    name = "cifar10"
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.247, 0.243, 0.261)
    crop_padding = 4
    horizontal_flip = True

    def root(self) -> Path:
        """The directory torchvision expects: the parent of cifar-10-batches-py."""
        from torchvision.datasets import CIFAR10

        return self.data_dir.parent if self.data_dir.name == CIFAR10.base_folder else self.data_dir

    @staticmethod
    def _read(root: Path):
        from torchvision.datasets import CIFAR10

        out = []
        for train in (True, False):
            ds = CIFAR10(str(root), train=train, download=False)
            # ds.data is (N, H, W, C) uint8; one permute gives NCHW for the whole split.
            out += [torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                    torch.tensor(ds.targets, dtype=torch.int64)]
        return tuple(out)

    def load(self):
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import extract_archive

        root = self.root()
        try:
            return self._read(root)
        except (RuntimeError, OSError):  # torchvision: missing or failed md5 check
            pass
        problem = "downloading was switched off"
        archive = root / CIFAR10.filename
        if archive.is_file():
            try:
                extract_archive(str(archive), str(root))
                return self._read(root)
            except Exception as exc:  # truncated archive, wrong contents, ...
                problem = f"{archive} could not be used ({type(exc).__name__}: {exc})"
        if self.download:
            try:
                CIFAR10(str(root), train=True, download=True)
                return self._read(root)
            except Exception as exc:  # no network, disk full, ...
                problem = f"download failed ({type(exc).__name__}: {exc})"
        raise DataNotFoundError(
            f"CIFAR-10 not found or corrupted in {root}: expected torchvision's {CIFAR10.base_folder} folder "
            f"or {CIFAR10.filename} there, and {problem}")
