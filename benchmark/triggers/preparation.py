"""What a trigger-preparation stage hands a trigger's `prepare`.

The attacker holds the whole training set (it poisons it), the poisoned
indices it chose, the cell's seed and, for triggers computed on a clean
model (LF, TrojanNN), the cell's clean model f_C in eval mode. `new_model`
builds a fresh classifier of the cell's architecture (LC's robust model).
Everything a preparation draws must come from `generator()` or
`batches()`, so the artifact is a function of the seed. A preparation that
trains for epochs saves its progress through `loop_checkpoint()`, so a
killed stage goes on from its last saved epoch with the same result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from benchmark.storage.checkpoints import LoopCheckpoint


@dataclass
class PreparationContext:
    images: torch.Tensor            # uint8 (N, C, H, W): the training set
    labels: torch.Tensor            # int64 (N,)
    poison_indices: torch.Tensor    # int64, sorted: the samples the attack poisons
    num_classes: int
    target_label: int
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    clean_model: torch.nn.Module | None = None
    new_model: Callable[[], torch.nn.Module] | None = None
    log: Callable[[str], None] = lambda message: None
    #: where the preparation's training loop saves its progress (None: nowhere)
    checkpoint_path: Path | None = None
    #: epochs between saves
    checkpoint_every: int = 1

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def generator(self, offset: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator fixed by the cell's seed (`offset` separates streams)."""
        return torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + offset)

    def loop_checkpoint(self, **holders) -> LoopCheckpoint:
        """The saving and resuming of a preparation loop that changes
        `holders` (see benchmark/storage/checkpoints.py's LoopCheckpoint)."""
        return LoopCheckpoint(self.checkpoint_path, self.checkpoint_every, **holders)

    def float_images(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Training images (all, or those at `indices`) as [0, 1] floats on the device."""
        x = self.images if indices is None else self.images[indices]
        return x.to(self.device).float().div_(255)

    def batches(self, batch_size: int, epoch: int = 0, indices: torch.Tensor | None = None,
                shuffle: bool = True, drop_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(images in [0, 1], labels, dataset indices) on the device, in a
        seeded order per `epoch`."""
        idx = torch.arange(len(self.images)) if indices is None else indices
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=self.generator(offset=epoch + 1))]
        stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            b = idx[start:start + batch_size]
            yield (self.images[b].to(self.device).float().div_(255), self.labels[b].to(self.device),
                   b.to(self.device))
