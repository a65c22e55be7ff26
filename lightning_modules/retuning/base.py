"""`RetuningModule`: a weight-space re-activation method. Its access level,
`RETUNE`, is "the attacker may fine-tune the weights": unlike input-space
re-activation (lightning_modules/reactivation, where every weight is frozen
and only δ trains), it trains every weight of the model it is given.

What the runner gives it (benchmark/cell/stages/retune.py), and nothing else:
- a copy of the victim, loaded afresh from the store: the victim's stored
  weights are never written, the retuned model is a new artifact;
- the attacker's retuning set: `split_ratio` of the training set (seeded),
  clean images with their true labels, of which the first `poison_num`
  are replaced by poisoned non-target training images carrying the trigger
  and the target label (SBP `fine_tune/ft_poison.py`). No augmentation.

The retuned model is evaluated with the suite's one protocol (C-Acc, ASR,
RA on the poisoned test set): its ASR is the paper's P-ASR, the victim's
own ASR its O-ASR."""
from __future__ import annotations

from typing import Literal

from benchmark.extension.schema import Fraction, Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, \
    PositiveInt
from lightning_modules.base import BackdoorStage

#: the access level: may fine-tune a copy of the victim's weights
RETUNE = "retune"


class RetuningModule(BackdoorStage):
    access: str = RETUNE

    def __init__(self, model, num_classes: int, target_label: int = 0, epochs: PositiveInt = 5,
                 batch_size: PositiveInt = 128, lr: PositiveFloat = 0.01, momentum: Momentum = 0.9,
                 weight_decay: NonNegativeFloat = 0.0, lr_schedule: Literal["constant", "cosine"] = "constant",
                 split_ratio: Fraction = 0.02, poison_num: NonNegativeInt = 5):
        # no augmentation: the reference feeds the retuning set through its test transform
        super().__init__(model, num_classes, target_label, lr, momentum, weight_decay, augment=None)
