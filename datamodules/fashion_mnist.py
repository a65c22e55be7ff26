"""Fashion-MNIST (Xiao et al. 2017): 60k/10k grey 28x28 images, 10 classes.

Looked for, in order: the given data directory (raw IDX files, gzipped or
not, directly or in torchvision's FashionMNIST/raw layout), Debian's package
`dataset-fashion-mnist`, then a torchvision download into the data directory.
"""
from __future__ import annotations

from pathlib import Path


from benchmark.errors import DataNotFoundError
from datamodules.registry import DATASETS
from datamodules.base import BackdoorDataModule
from datamodules.idx import read_idx

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _find(directory: Path, stem: str) -> Path | None:
    for sub in (directory, directory / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (sub / name).is_file():
                return sub / name
    return None


def _complete(directory: Path) -> dict[str, Path] | None:
    found = {key: _find(directory, stem) for key, stem in _FILES.items()}
    return found if all(found.values()) else None


@DATASETS.register("fashion_mnist")
class FashionMNISTDataModule(BackdoorDataModule):
    name = "fashion_mnist"
    num_classes = 10
    mean = (0.2860,)
    std = (0.3530,)

    def __init__(self, *args, debian_dir: str | Path = DEBIAN_DIR, **kwargs):
        super().__init__(*args, **kwargs)
        self.debian_dir = Path(debian_dir)

    def locate(self) -> dict[str, Path]:
        for directory in (self.data_dir, self.debian_dir):
            files = _complete(directory)
            if files:
                return files
        download_error = "downloading was switched off"
        if self.download:
            try:
                from torchvision.datasets import FashionMNIST

                FashionMNIST(str(self.data_dir), train=True, download=True)
                FashionMNIST(str(self.data_dir), train=False, download=True)
                files = _complete(self.data_dir)
                if files:
                    return files
                download_error = "the download left no IDX files"
            except Exception as exc:  # no network, disk full, ...
                download_error = f"download failed ({type(exc).__name__}: {exc})"
        raise DataNotFoundError(
            f"Fashion-MNIST not found: no IDX files in {self.data_dir} (or its FashionMNIST/raw), "
            f"none in {self.debian_dir} (apt install dataset-fashion-mnist), and {download_error}")

    def load(self):
        files = self.locate()
        tensors = {key: read_idx(path) for key, path in files.items()}
        return (tensors["train_images"].unsqueeze(1), tensors["train_labels"].long(),
                tensors["test_images"].unsqueeze(1), tensors["test_labels"].long())
