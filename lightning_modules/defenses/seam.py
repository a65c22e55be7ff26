"""SEAM, Selective Amnesia (Zhu et al., IEEE S&P 2023).

Reference (facts only): vtu81/backdoor-toolbox@1324369:other_defenses_tool_box/SEAM.py
(its accuracy helper: utils/tools.py `test`, a fraction in [0, 1]).

1. Forget: fine-tune on a small clean forget set with random labels, each
   drawn uniformly among the C - 1 classes that are not the true one, fresh
   for every batch, until the forget-set accuracy (eval mode, true labels)
   falls below min(2 / C, 0.6) or `forget_epochs` run out. Catastrophic
   forgetting wipes out the main task and the backdoor with it.
2. Recover: fine-tune on the whole clean subset with its true labels, with a
   fresh optimiser, for up to `epochs` epochs, stopping after the first
   epoch whose accuracy on that set (eval mode) exceeds 0.97. The recovery
   data carry no trigger, so the backdoor does not come back.

Defaults (the toolbox's): forget_epochs 10, epochs 100, Adam lr 1e-3 (PyTorch
betas, no weight decay) for both phases, batch 32, no augmentation (the
toolbox loads the training images with ToTensor + Normalize only), forget
accuracy bound min(2 / C, 0.6), recovery accuracy bound 0.97. Both phases
train with the model in train mode, so the small forget set moves the BN
statistics, as in the toolbox.

Data, where the suite differs from the toolbox:
- The toolbox draws its forget set (1 % of the training set, 500 CIFAR-10
  images) and its recovery set (10 %, 5,000) independently. Here both come
  from the defender's clean subset: the forget set is a seeded random
  `forget_fraction` (0.1) of it, mirroring the toolbox's 1 : 10 ratio, and
  the recovery set is the whole subset (so it contains the forget images,
  as the toolbox's independent draws may).
- The suite's clean subset defaults to 5 % of the training set where the
  toolbox recovers on 10 %; set the cell's clean_ratio to 0.1 to match it.

Both stopping rules look at the clean subset only. `self.report` records
the forget epochs used and the accuracy reached, and the recovery epochs
and accuracy. The random labels and the forget set come from a generator
seeded with the process's torch seed (the cell's seed under the runner).

Precision: both phases run in fp32, as the toolbox's loops (no autocast).
The forget phase runs outside the trainer and is always fp32; the recovery
phase turns off the trainer's bf16 autocast (GPUs) unless
`mixed_precision=True`, which keeps it.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from benchmark.errors import ConfigError
from benchmark.extension.schema import ClosedUnitInterval, Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule


def random_wrong_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label uniform over the classes other than each true label: the true
    label plus an offset in 1..C-1, modulo C. Drawn on the CPU generator
    (reproducible on any device), returned on the labels' device."""
    offsets = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + offsets.to(labels.device)) % num_classes


class Subset:
    """Positions of an indexed dataset, served through its `__getitems__`."""

    def __init__(self, dataset, positions: torch.Tensor):
        self.dataset, self.positions = dataset, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitems__(self, positions):
        return self.dataset.__getitems__(self.positions[torch.as_tensor(positions, dtype=torch.long)].tolist())


@DEFENSES.register("seam")
class SelectiveAmnesia(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NonNegativeInt = 100, forget_epochs: NonNegativeInt = 10, batch_size: PositiveInt = 32,
                 lr: PositiveFloat = 1e-3, weight_decay: NonNegativeFloat = 0.0, forget_fraction: Fraction = 0.1,
                 forget_accuracy: Fraction | None = None, recovery_accuracy: ClosedUnitInterval = 0.97,
                 train_augment: bool = False, mixed_precision: bool = False):
        if num_classes < 2:
            raise ConfigError(f"seam: num_classes={num_classes} is not allowed; random wrong labels need at least "
                              f"2 classes")
        super().__init__(model, num_classes, target_label, augment if train_augment else None,
                         epochs, batch_size, lr, 0.0, weight_decay)
        # Adam has no momentum argument: keep the recorded config truthful.
        self.hparams.pop("momentum", None)
        self.recovery_set = None

    @property
    def forget_bound(self) -> float:
        h = self.hparams
        return h.forget_accuracy if h.forget_accuracy is not None else min(2.0 / h.num_classes, 0.6)

    def _adam(self) -> torch.optim.Adam:
        return torch.optim.Adam(self.model.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def prepare(self, clean_set, fit) -> None:
        h = self.hparams
        seed = torch.initial_seed() % 2**62  # the cell seed under the runner; room for + epoch
        generator = torch.Generator().manual_seed(seed)
        count = max(1, int(h.forget_fraction * len(clean_set)))
        forget_set = Subset(clean_set, torch.randperm(len(clean_set), generator=generator)[:count])
        self.recovery_set = clean_set
        self.report = {"forget_set_size": count, "forget_bound": self.forget_bound,
                       "recovery_bound": h.recovery_accuracy, "forget_epochs": 0,
                       "recovery_epochs": 0, "recovery_accuracy": None}
        start = self.accuracy(forget_set)
        self.report.update(forget_start_accuracy=start, forget_accuracy=start)
        self._forget(forget_set, generator, seed)

    def _forget(self, forget_set, generator: torch.Generator, seed: int) -> None:
        h, model = self.hparams, self.model
        opt = self._adam()
        model.train()
        for epoch in range(h.forget_epochs):
            for x, y in self.batches(forget_set, h.batch_size, shuffle=True, seed=seed + epoch,
                                     augment=self.augment is not None):
                loss = F.cross_entropy(model(x), random_wrong_labels(y, h.num_classes, generator))
                opt.zero_grad()
                loss.backward()
                opt.step()
            acc = self.accuracy(forget_set)
            self.report.update(forget_epochs=epoch + 1, forget_accuracy=acc)
            if acc < self.forget_bound:
                break

    def training_loss(self, x, y):
        with self.precision_context():
            return super().training_loss(x, y)

    def configure_optimizers(self):
        # A fresh Adam for the recovery phase, as the toolbox builds one.
        return self._adam()

    def on_train_epoch_end(self) -> None:
        acc = self.accuracy(self.recovery_set)
        self.report.update(recovery_epochs=self.current_epoch + 1, recovery_accuracy=acc)
        if acc > self.hparams.recovery_accuracy:
            self.trainer.should_stop = True
