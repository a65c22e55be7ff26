"""A map-style dataset over in-memory tensors that is indexed a batch at a
time: the DataLoader hands `__getitems__` the whole index list, so a batch is
one gather, never a per-sample Python loop or a PIL decode."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float images pass through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images


class IndexedImages(Dataset):
    """Yields (images in [0, 1], labels, dataset indices) batches.

    `images` may be uint8 (decoded on the fly) or float already in [0, 1]
    (e.g. pre-triggered evaluation sets). Row i of `images`/`labels` is the
    sample with dataset index `indices[i]` (default: its row number); the
    index travels with the batch so poisoning and contract checks work by
    dataset index, never by batch position.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.indices = torch.arange(len(images)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        if len(self.indices) != len(images):
            raise ValueError(f"{len(images)} images but {len(self.indices)} indices")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions):
        pos = torch.as_tensor(positions, dtype=torch.long)
        return to_unit_float(self.images[pos]), self.labels[pos], self.indices[pos]

    def __getitem__(self, position: int):
        x, y, i = self.__getitems__([position])
        return x[0], y[0], i[0]


def keep_batch(batch):
    """collate_fn for `IndexedImages`: the batch is already stacked."""
    return batch
