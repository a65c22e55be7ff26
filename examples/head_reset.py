"""An example of a defense written outside the suite's packages: re-initialise
the classifier head, then fine-tune on the defender's clean subset (the first
step of FST without its weight-alignment penalty).

    bdbench score examples/head_reset.py:HeadReset
    bdbench cell --defenses ft examples/head_reset.py:HeadReset
"""
from torch import nn

from benchmark.extension.schema import Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DefenseModule


class HeadReset(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NonNegativeInt = 20, batch_size: PositiveInt = 256, lr: PositiveFloat = 0.01,
                 momentum: Momentum = 0.9, weight_decay: NonNegativeFloat = 5e-4,
                 init_std: PositiveFloat = 0.01):
        super().__init__(model, num_classes, target_label, augment, epochs, batch_size, lr, momentum, weight_decay)

    def prepare(self, clean_set, fit):
        self.report["clean_subset_acc_before"] = self.accuracy(clean_set)
        head = self.model.get_submodule(self.model.head_layer)
        # A fresh head forgets the label mapping the trigger features were
        # wired to; fine-tuning then has to rebuild it from clean data alone.
        nn.init.normal_(head.weight, std=self.hparams.init_std)
        nn.init.zeros_(head.bias)
