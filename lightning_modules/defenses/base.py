"""`DefenseModule`: a post-training defense. It receives the backdoored model
and the defender's clean subset, and never the trigger or a poisoned sample
(the runner gives it nothing else; tests/test_defense_contract.py checks every
registered defense).

Hooks, in the order the runner calls them:
- `prepare(clean_set, fit)`: one-off work before training (pruning, trigger
  reverse-engineering, a teacher). `fit(module, dataset)` trains any
  LightningModule with this suite's trainer settings; `self.batches(...)`
  and `self.accuracy(...)` iterate and score the clean subset directly, for
  anything the defense selects (a pruning threshold, a stopping point): a
  defense chooses on its clean subset, never on test data.
- training on the clean subset for `epochs` epochs (0 skips it), with
  `training_loss`, `trainable_parameters` and `configure_optimizers` as the
  defense wants (or a whole `training_step` under manual optimisation);
- `finalize()`: fold masks or other state into the model before export.

`report` is a dict of what the defense decided (flagged labels, pruned
channels, stopping epoch...); the runner stores it with the defense's
metrics under ``defense/<name>``.

`model_train_mode = False` keeps the model in eval mode while the defense
trains (BatchNorm running statistics never move), for defenses whose
reference does so (i-BAU, SAU); `on_fit_start` applies it, so a subclass
that overrides `on_fit_start` calls `super().on_fit_start()`.

Parameters: every parameter a user may set is declared once, in `__init__`,
with its range as a type hint (benchmark.extension.schema, typing.Literal). The runner
checks grid and command-line values against those hints before it builds
the module, so `__init__` itself checks only rules one hint cannot state
(two parameters together, or the model / data at hand).
"""
from __future__ import annotations

import contextlib

from typing import Callable, Iterator

import torch
from jsonargparse.typing import restricted_number_type

from benchmark.extension.schema import Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.base import BackdoorStage

#: `epochs` of a defense that never trains after its one-off work (pruning
#: without fine-tuning): a value other than 0 would silently make it a
#: different defense (X + FT), so only 0 is accepted.
NoTraining = restricted_number_type("NoTraining", int, [("==", 0)])


class DefenseModule(BackdoorStage):
    #: whether the model is put in train mode while the defense trains
    model_train_mode: bool = True

    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NonNegativeInt = 100, batch_size: PositiveInt = 256, lr: PositiveFloat = 0.01,
                 momentum: Momentum = 0.9, weight_decay: NonNegativeFloat = 5e-4):
        super().__init__(model, num_classes, target_label, lr, momentum, weight_decay, augment)
        self.report: dict = {}

    def prepare(self, clean_set, fit: Callable) -> None:
        """Hook: one-off work before training."""

    def finalize(self) -> None:
        """Hook: fold defense state into `self.model`."""

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and not self.model_train_mode:
            self.model.eval()
        return self

    def on_fit_start(self) -> None:
        # Lightning 2.x leaves module modes as it finds them at fit start, so
        # the mode this defense trains in is applied here.
        self.train()

    # ---- helpers for prepare-time work on the clean subset ------------------------
    @property
    def model_device(self) -> torch.device:
        return next(self.model.parameters()).device

    def precision_context(self):
        """Where a defense's reference trains in fp32 (its `mixed_precision`
        parameter False), autocast is switched off inside; otherwise the
        trainer's precision (bf16 autocast on a GPU) applies."""
        if self.hparams.get("mixed_precision", True):
            return contextlib.nullcontext()
        return torch.autocast(self.model_device.type, enabled=False)

    def batches(self, dataset, batch_size: int | None = None, shuffle: bool = False, seed: int = 0,
                augment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches of `dataset` on the model's device, one
        gather per batch; `augment` applies the training augmentation."""
        size = batch_size or self.hparams.batch_size
        n = len(dataset)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle
                 else torch.arange(n))
        device = self.model_device
        for start in range(0, n, size):
            x, y, _ = dataset.__getitems__(order[start:start + size].tolist())
            x, y = x.to(device), y.to(device)
            if augment and self.augment is not None:
                x = self.augment(x)
            yield x, y

    @torch.no_grad()
    def accuracy(self, dataset, model: torch.nn.Module | None = None, batch_size: int = 1024) -> float:
        """Top-1 accuracy of `model` (default: this defense's model) on
        `dataset`, in eval mode; the model's mode is restored afterwards."""
        model = model or self.model
        was_training = model.training
        model.eval()
        correct = total = 0
        for x, y in self.batches(dataset, batch_size):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
        model.train(was_training)
        return correct / max(total, 1)
