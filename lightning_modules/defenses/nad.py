"""NAD, Neural Attention Distillation (Li et al., ICLR 2021), as BackdoorBench
runs it.

A teacher is the backdoored model fine-tuned on the clean subset; the student
(the backdoored model again) is then trained on the same data with
cross-entropy plus attention-transfer losses that pull its attention maps
towards the teacher's.

Attention map of a feature map a (B, C, H, W): sum over channels of |a|^p,
flattened and L2-normalised per sample; loss per layer = beta_i * MSE between
student and teacher maps.

Defaults: SCLBD/BackdoorBench@f02e353 `defense/nad.py` with
`config/defense/nad/cifar10.yaml`:
- teacher: 10 epochs (`te_epochs`), lr 0.01 (the cosine schedule has
  T_max = 100 and is stepped per epoch, so over 10 epochs it stays at
  0.0098-0.01: constant here);
- student: also `te_epochs` = 10 epochs, at a constant lr 0.01
  (`adjust_learning_rate` keeps 0.01 below epoch 20; the scheduler step is
  commented out);
- SGD momentum 0.9, weight decay 5e-4 for both (the optimiser is built from
  the generic `wd`; the yaml's `weight_decay: 1.0e-4` is never read);
- batch 256, p = 2;
- attention on the model's `attention_layers` with betas (500, 1000): for
  PreAct-ResNet18 the outputs of layer3 and layer4. BackdoorBench's third term
  (avgpool, beta 1000) is a 1x1 map whose normalised attention is always 1, so
  its loss is 0 and it is left out. For the small CNN the layers are block2
  and block3, the last two of its three stages.

Where the suite differs from BackdoorBench's loop:
- BatchNorm running statistics. BackdoorBench `defense/nad.py` (the training
  step, around lines 290-305) gets the student's attention maps by running
  three extra forward passes through `nn.Sequential` slices of the student,
  in train mode, besides the forward that gives the logits; every pass moves
  the student's BatchNorm running mean and variance, so they update four
  times per step (an effective momentum of about 1 - 0.9^4 = 0.34 instead of
  0.1). Here one forward pass gives the logits and, through hooks, the
  attention maps, so the running statistics update once per step. The
  gradients are identical (train-mode BatchNorm normalises with the batch's
  own statistics either way); only the stored running statistics, used at
  evaluation, differ: BackdoorBench's have a shorter memory.
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F

from benchmark.errors import ConfigError
from benchmark.measures.features import capture
from benchmark.extension.schema import Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule
from lightning_modules.defenses.ft import FineTuning


def attention_map(features: torch.Tensor, power: float) -> torch.Tensor:
    att = features.abs().pow(power).sum(dim=1).flatten(1)
    return F.normalize(att, dim=1)


class _Teacher(FineTuning):
    """FT with the schedule NAD's teacher runs under."""

    def __init__(self, model, num_classes, target_label, augment,
                 lr_schedule: Literal["cosine", "constant"] = "constant", **kwargs):
        super().__init__(model, num_classes, target_label, augment, **kwargs)
        self.hparams.lr_schedule = lr_schedule


@DEFENSES.register("nad")
class NeuralAttentionDistillation(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NonNegativeInt = 10, teacher_epochs: NonNegativeInt = 10, batch_size: PositiveInt = 256,
                 lr: PositiveFloat = 0.01, momentum: Momentum = 0.9, weight_decay: NonNegativeFloat = 5e-4,
                 betas: tuple[NonNegativeFloat, ...] = (500.0, 1000.0), power: PositiveFloat = 2.0,
                 lr_schedule: Literal["cosine", "constant"] = "constant"):
        super().__init__(model, num_classes, target_label, augment, epochs, batch_size, lr, momentum, weight_decay)
        self.layers = list(model.attention_layers)
        # How many betas are right depends on the model, so no type hint can say it.
        if len(self.layers) != len(betas):
            raise ConfigError(f"nad: betas={list(betas)} is not allowed for {type(model).__name__}; must be "
                              f"{len(self.layers)} value(s), one per attention layer ({', '.join(self.layers)})")
        self.teacher = None

    def prepare(self, clean_set, fit) -> None:
        h = self.hparams
        teacher = _Teacher(copy.deepcopy(self.model), h.num_classes, h.target_label, self.augment,
                           lr_schedule=h.lr_schedule, epochs=h.teacher_epochs, batch_size=h.batch_size, lr=h.lr,
                           momentum=h.momentum, weight_decay=h.weight_decay)
        if h.teacher_epochs > 0:
            fit(teacher, clean_set)
        # Kept outside `self.model`: the teacher is not exported and never trains.
        self.__dict__["teacher"] = teacher.model.eval().requires_grad_(False)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.teacher.to(self.device)

    def training_loss(self, x, y):
        with capture(self.model, self.layers) as student_feats:
            logits = self.model(x)
        with torch.no_grad(), capture(self.teacher, self.layers) as teacher_feats:
            self.teacher(x)
        loss = F.cross_entropy(logits, y)
        for beta, name in zip(self.hparams.betas, self.layers):
            loss = loss + beta * F.mse_loss(attention_map(student_feats[name], self.hparams.power),
                                            attention_map(teacher_feats[name], self.hparams.power))
        return loss
