"""`AttackModule`: training on data where the samples at `poison_indices`
(dataset indices, chosen from the seed by the data module) carry the trigger
and are relabelled to the target (all-to-one). Poisoning is one op on the
poisoned rows of each batch, on the device, before augmentation (as in
BackdoorBench, where transforms apply to the already-poisoned image).

Clean-label attacks (SIG, LC: `AttackPreset.clean_label`) draw their
poisoned indices from the target class only, so relabelling changes
nothing. Attacks whose training objective differs (WaNet's noise mode,
Input-Aware's jointly trained generator) subclass `AttackModule`."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from benchmark.extension.schema import Momentum, NonNegativeFloat, PositiveFloat
from benchmark.triggers import Trigger
from lightning_modules.base import BackdoorStage


@dataclass(frozen=True)
class AttackPreset:
    """What a grid names: a trigger with its parameters and the module that
    trains with it. `trigger=None` is the clean (unpoisoned) model."""
    name: str
    trigger: str | None
    trigger_params: dict = field(default_factory=dict)
    module: type["AttackModule"] | None = None
    #: poison target-class samples only, keeping their labels (SIG, LC)
    clean_label: bool = False

    def module_class(self) -> type["AttackModule"]:
        return self.module or AttackModule


class AttackModule(BackdoorStage):
    def __init__(self, model, num_classes: int, trigger: Trigger | None, poison_indices: torch.Tensor,
                 num_train: int, target_label: int = 0, lr: PositiveFloat = 0.01, momentum: Momentum = 0.9,
                 weight_decay: NonNegativeFloat = 5e-4, augment=None):
        super().__init__(model, num_classes, target_label, lr, momentum, weight_decay, augment)
        self.trigger = trigger
        mask = torch.zeros(num_train, dtype=torch.bool)
        mask[poison_indices] = True
        if mask.any() and trigger is None:
            raise ValueError("poison indices given but no trigger")
        self.register_buffer("poison_mask", mask, persistent=False)
        # a host-side number: reading it from the (device) mask every step would sync
        self._poisoned_fraction = float(mask.float().mean()) if num_train else 0.0

    def fit_epochs(self, cell_epochs: int) -> int:
        """How many epochs the attack stage fits this module for, given the
        cell's `epochs` (an attack with a stage of its own before, such as
        Input-Aware's mask generator, may count it against that budget)."""
        return cell_epochs

    def poisoned_fraction(self) -> float:
        """The poisoned fraction of the training set (the rate per-batch
        poisoning applies to every batch)."""
        return self._poisoned_fraction

    #: poison by computing the trigger on every row and keeping it where a row
    #: is poisoned (torch.where): no host synchronisation, the GPU path. None
    #: means on CUDA for triggers that allow it (`Trigger.rowwise`); the masked
    #: path (`x[poisoned]`) needs the count of poisoned rows on the host first,
    #: which on a CPU is free and saves computing the trigger on clean rows.
    whole_batch_poisoning: bool | None = None

    def prepare_batch(self, x, y, idx):
        poisoned = self.poison_mask[idx]
        if self.trigger is None:
            return x, y
        whole = self.whole_batch_poisoning
        if whole is None:
            whole = x.is_cuda and self.trigger.rowwise
        if whole:
            x = torch.where(poisoned[:, None, None, None], self.trigger.poison(x, idx).to(x.dtype), x)
            y = torch.where(poisoned, torch.full_like(y, self.hparams.target_label), y)
            return x, y
        if not poisoned.any():
            return x, y
        x, y = x.clone(), y.clone()
        x[poisoned] = self.trigger.poison(x[poisoned], idx[poisoned]).to(x.dtype)
        y[poisoned] = self.hparams.target_label
        return x, y


def per_batch_count(rate: float, batch_size: int) -> int:
    """How many rows of a batch per-batch poisoning poisons: int(rate * B),
    and below one row per batch one row with probability rate * B
    (BackdoorBench's `generalize_to_lower_pratio`, used by its WaNet and
    Input-Aware training steps)."""
    expected = rate * batch_size
    if expected >= 1:
        return int(expected)
    return int(torch.rand(()) < expected)
