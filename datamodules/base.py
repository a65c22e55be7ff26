"""Base LightningDataModule of every dataset in the suite.

Images are held in memory as uint8 tensors (N, C, H, W) and served as [0, 1]
floats; models normalise internally, so triggers, perturbations and epsilons
are all in pixel space. Every batch is (images, labels, dataset indices).

The data-selection rules of the benchmark live here, once, all seeded and by
dataset index:
- poisoned training indices: `poison_rate` of the training set, drawn from
  all samples as BackdoorBench does (`utils/backdoor_generate_poison_index.py`:
  target-class samples are not avoided; they get the trigger and keep their
  label, which already is the target), or from non-target samples only
  (`selection="non_target"`: every poisoned sample is then label-flipped);
- the defender's clean subset: `clean_ratio` of the training set, drawn at
  random from *every* training index and served with its clean pixels and
  true label, as BackdoorBench draws it from the clean versions of all
  training images (`defense/ft.py`, `utils/choose_index.py`): the defender
  holds clean data of any index, never a triggered image. The older rule,
  disjoint from the poisoned indices (`CLEAN_SUBSETS` "non_poisoned"), is
  an option; for clean-label attacks (SIG, LC) at poison rate 0.1 it leaves
  the defender without a single target-class image;
- the attacker's re-activation data: non-target training images (see
  `attacker_indices`);
- the poisoned test set: every non-target test image with the trigger applied.
"""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from benchmark.errors import ConfigError
from datamodules.device_loader import DeviceLoader
from datamodules.tensor_dataset import IndexedImages, keep_batch, to_unit_float


class BackdoorDataModule(L.LightningDataModule):
    #: short name used in grids, the store and W&B
    name: str = ""
    num_classes: int = 10
    #: per-channel normalisation the models apply (pixel space stays [0, 1])
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    #: training augmentation, applied as batched tensor ops after poisoning
    crop_padding: int = 0
    horizontal_flip: bool = False

    def __init__(self, data_dir: str | Path = "data", batch_size: int = 128,
                 eval_batch_size: int = 1024, num_workers: int = 0, download: bool = True):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.download = download
        self.train_images: torch.Tensor | None = None
        #: where `loader()` serves batches (the cell sets its training device)
        self.device = torch.device("cpu")

    # ---- what a dataset implements -------------------------------------------
    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (train uint8 NCHW, train int64 labels, test uint8, test labels)."""
        raise NotImplementedError

    def identity(self) -> dict:
        """What identifies the data for the store key (never a local path)."""
        return {"dataset": self.name}

    # ---- loading --------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_images is not None:
            return
        tr_x, tr_y, te_x, te_y = self.load()
        for name, x in (("train", tr_x), ("test", te_x)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{self.name}: {name} images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        self.train_images, self.train_labels = tr_x.contiguous(), tr_y.long()
        self.test_images, self.test_labels = te_x.contiguous(), te_y.long()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        self.setup()
        return tuple(self.train_images.shape[1:])

    @property
    def num_train(self) -> int:
        self.setup()
        return len(self.train_labels)

    def check_target(self, target_label: int) -> None:
        if not 0 <= target_label < self.num_classes:
            raise ConfigError(f"target label {target_label} outside the classes of {self.name} (0..{self.num_classes - 1})")

    # ---- seeded selections, by dataset index ------------------------------------
    # "target": clean-label attacks (SIG, LC) poison target-class samples only;
    # the rate stays a fraction of the whole training set, capped at the
    # class size (BackdoorBench: pratio 0.1 on CIFAR-10 = every target image)
    POISON_SELECTIONS = ("all", "non_target", "target")

    def poison_indices(self, poison_rate: float, target_label: int, seed: int,
                       selection: str = "all") -> torch.Tensor:
        if not 0.0 < poison_rate < 1.0:
            raise ConfigError(f"poison rate must be in (0, 1), got {poison_rate}")
        if selection not in self.POISON_SELECTIONS:
            raise ConfigError(f"poison selection {selection!r} unknown; choose one of: "
                              f"{', '.join(self.POISON_SELECTIONS)}")
        self.check_target(target_label)
        self.setup()
        if selection == "all":
            candidates = torch.arange(self.num_train)
        elif selection == "target":
            candidates = torch.nonzero(self.train_labels == target_label).flatten()
        else:
            candidates = torch.nonzero(self.train_labels != target_label).flatten()
        count = min(len(candidates), round(poison_rate * self.num_train))
        order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))
        return candidates[order[:count]].sort().values

    #: "any": the defender's subset is drawn from every training index (clean
    #: pixels, true labels; BackdoorBench); "non_poisoned": from the indices
    #: that were never poisoned
    CLEAN_SUBSETS = ("any", "non_poisoned")

    def clean_subset_indices(self, clean_ratio: float, seed: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """`clean_ratio` of the training set, seeded; `exclude` (e.g. the
        poisoned indices, for the "non_poisoned" rule) is never drawn."""
        if not 0.0 < clean_ratio <= 1.0:
            raise ConfigError(f"clean ratio must be in (0, 1], got {clean_ratio}")
        allowed = torch.ones(self.num_train, dtype=torch.bool)
        if exclude is not None:
            allowed[exclude] = False
        candidates = torch.nonzero(allowed).flatten()
        count = min(len(candidates), max(1, math.ceil(clean_ratio * self.num_train)))
        # A different stream from the poison draw, still fixed by the seed.
        order = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed + 7919))
        return candidates[order[:count]].sort().values

    #: where the attacker's re-activation samples come from: "non_target":
    #: poisoned indices whose true class is not the target, or, when there
    #: are none (clean-label attacks poison target-class images only), any
    #: non-target training image (the attacker stamps its trigger on any
    #: image); "poisoned": the poisoned indices as they are (target-class
    #: images included, which for SIG and LC are all of them)
    ATTACKER_SAMPLES = ("non_target", "poisoned")

    def attacker_pool(self, poisoned: torch.Tensor, target_label: int, rule: str = "non_target") -> torch.Tensor:
        """The dataset indices the attacker's re-activation samples are drawn from."""
        if rule not in self.ATTACKER_SAMPLES:
            raise ConfigError(f"attacker samples {rule!r} unknown; choose one of: {', '.join(self.ATTACKER_SAMPLES)}")
        if rule == "poisoned":
            return poisoned
        self.setup()
        pool = poisoned[self.train_labels[poisoned] != target_label]
        if len(pool) == 0:
            pool = torch.nonzero(self.train_labels != target_label).flatten()
        return pool

    def attacker_indices(self, pool: torch.Tensor, count: int, seed: int) -> torch.Tensor:
        """`count` indices of `pool` (from `attacker_pool`), seeded."""
        if count <= 0:
            raise ConfigError(f"number of attacker samples must be positive, got {count}")
        order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + 104729))
        return pool[order[:count]].sort().values

    # ---- sets -------------------------------------------------------------------
    def train_set(self, indices: torch.Tensor | None = None) -> IndexedImages:
        self.setup()
        if indices is None:
            return IndexedImages(self.train_images, self.train_labels)
        return IndexedImages(self.train_images[indices], self.train_labels[indices], indices)

    def clean_test_set(self) -> IndexedImages:
        self.setup()
        return IndexedImages(self.test_images, self.test_labels)

    def non_target_test_indices(self, target_label: int) -> torch.Tensor:
        self.setup()
        return torch.nonzero(self.test_labels != target_label).flatten()

    def triggered(self, images: torch.Tensor, trigger, chunk: int = 4096) -> torch.Tensor:
        """Apply a trigger to uint8/float images in chunks; float [0, 1] out."""
        return torch.cat([trigger(to_unit_float(images[i:i + chunk])) for i in range(0, len(images), chunk)])

    def poisoned_test_set(self, trigger, target_label: int) -> IndexedImages:
        """Non-target test images with the trigger, labelled with their true class."""
        idx = self.non_target_test_indices(target_label)
        return IndexedImages(self.triggered(self.test_images[idx], trigger), self.test_labels[idx], idx)

    def non_target_clean_test_set(self, target_label: int) -> IndexedImages:
        idx = self.non_target_test_indices(target_label)
        return IndexedImages(self.test_images[idx], self.test_labels[idx], idx)

    def attacker_set(self, indices: torch.Tensor, trigger=None) -> IndexedImages:
        """Training samples as the attacker holds them: triggered (or clean when
        `trigger` is None, for the gUAA control), with their true labels."""
        self.setup()
        images = self.train_images[indices]
        if trigger is not None:
            images = self.triggered(images, trigger)
        return IndexedImages(images, self.train_labels[indices], indices)

    # ---- loaders ----------------------------------------------------------------
    def loader(self, dataset: IndexedImages, shuffle: bool = False, batch_size: int | None = None,
               drop_last: bool = False, seed: int = 0) -> DeviceLoader | DataLoader:
        """Batches of `dataset` on `self.device` (set by the cell to its
        training device): the tensors go to the device once and every batch is
        a gather there (datamodules/device_loader.py). With `num_workers` > 0,
        a DataLoader with worker processes instead (same batches)."""
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        batch_size = batch_size or (self.batch_size if shuffle else self.eval_batch_size)
        if self.num_workers == 0:
            return DeviceLoader(dataset, batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last,
                                device=self.device)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=generator,
                          num_workers=self.num_workers, collate_fn=keep_batch, persistent_workers=True)

    # ---- augmentation -------------------------------------------------------------
    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """Random crop (zero padding) and horizontal flip, per sample, batched."""
        if self.crop_padding:
            images = random_crop(images, self.crop_padding)
        if self.horizontal_flip:
            flip = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Pad by `padding` and crop back at a random offset per sample, with one
    gather instead of a Python loop over the batch."""
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (b,), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), device=images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None].expand(b, c, h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :].expand(b, c, h, w)
    return out.gather(3, cols)
