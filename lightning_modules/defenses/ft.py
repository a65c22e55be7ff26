"""FT: fine-tune every parameter on the defender's clean subset.

Defaults from BackdoorBench's `config/defense/ft`: 100 epochs, SGD lr 0.01
with momentum 0.9 and a cosine schedule, batch 256, weight decay 5e-4.
"""
from benchmark.extension.schema import Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule


@DEFENSES.register("ft")
class FineTuning(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NonNegativeInt = 100, batch_size: PositiveInt = 256, lr: PositiveFloat = 0.01,
                 momentum: Momentum = 0.9, weight_decay: NonNegativeFloat = 5e-4):
        super().__init__(model, num_classes, target_label, augment, epochs, batch_size, lr, momentum, weight_decay)
