"""`DefenseModule`: a post-training defense. It receives the backdoored model
and the defender's clean subset, and never the trigger or a poisoned sample
(the runner gives it nothing else; tests/test_defense_contract.py checks every
registered defense).

Hooks, in the order the runner calls them:
- `prepare(clean_set, fit)`: one-off work before training (pruning, trigger
  reverse-engineering, a teacher). `fit(module, dataset)` trains any
  LightningModule with this suite's trainer settings.
- training on the clean subset for `epochs` epochs (0 skips it), with
  `training_loss` and `trainable_parameters` as the defense wants;
- `finalize()`: fold masks or other state into the model before export.
"""
from __future__ import annotations

from typing import Callable

from lightning_modules.base import BackdoorStage


class DefenseModule(BackdoorStage):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: int = 100, batch_size: int = 256, lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 5e-4):
        super().__init__(model, num_classes, target_label, lr, momentum, weight_decay, augment)

    def prepare(self, clean_set, fit: Callable) -> None:
        """Hook: one-off work before training."""

    def finalize(self) -> None:
        """Hook: fold defense state into `self.model`."""
