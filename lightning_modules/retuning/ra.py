"""RA, the retuning attack (Min et al., NeurIPS 2024; reference
`AISafety-HKUST/stable_backdoor_purification` `fine_tune/ft_poison.py`):
fine-tune every weight of the defended model on 2 % of the training set
(1,000 CIFAR-10 images) of which 5 are poisoned with the target label, SGD
lr 0.01, momentum 0.9, no weight decay, constant lr, batch 128, 5 epochs
(the README's; the script requires the number), clean images without
augmentation. A defense that only put the backdoor to sleep gets it back
(P-ASR high); a clean model and exact purification stay low."""
from __future__ import annotations

from typing import Literal

from benchmark.extension.schema import Fraction, Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, \
    PositiveInt
from lightning_modules.retuning import RETUNINGS
from lightning_modules.retuning.base import RetuningModule


@RETUNINGS.register("ra")
class RetuningAttack(RetuningModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, epochs: PositiveInt = 5,
                 batch_size: PositiveInt = 128, lr: PositiveFloat = 0.01, momentum: Momentum = 0.9,
                 weight_decay: NonNegativeFloat = 0.0, lr_schedule: Literal["constant", "cosine"] = "constant",
                 split_ratio: Fraction = 0.02, poison_num: NonNegativeInt = 5):
        super().__init__(model, num_classes, target_label, epochs, batch_size, lr, momentum, weight_decay,
                         lr_schedule, split_ratio, poison_num)
