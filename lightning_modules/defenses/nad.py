"""NAD, Neural Attention Distillation (Li et al., ICLR 2021).

A teacher is the backdoored model fine-tuned on the clean subset; the student
(the backdoored model again) is then trained on the same data with
cross-entropy plus attention-transfer losses that pull its attention maps
towards the teacher's at the last three stages.

Attention map of a feature map a (B, C, H, W): sum over channels of |a|^p,
flattened and L2-normalised per sample; loss per stage = beta_i * MSE between
student and teacher maps. Defaults from BackdoorBench's `config/defense/nad`:
teacher 10 epochs, student 100 epochs, lr 0.01, momentum 0.9, weight decay
1e-4, batch 256, betas (500, 1000, 1000), p = 2.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from benchmark.errors import ConfigError
from benchmark.features import capture
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule
from lightning_modules.defenses.ft import FineTuning


def attention_map(features: torch.Tensor, power: float) -> torch.Tensor:
    att = features.abs().pow(power).sum(dim=1).flatten(1)
    return F.normalize(att, dim=1)


@DEFENSES.register("nad")
class NeuralAttentionDistillation(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: int = 100, teacher_epochs: int = 10, batch_size: int = 256,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 1e-4,
                 betas: tuple[float, ...] = (500.0, 1000.0, 1000.0), power: float = 2.0):
        super().__init__(model, num_classes, target_label, augment, epochs, batch_size, lr, momentum, weight_decay)
        self.layers = list(model.attention_layers)
        if len(self.layers) != len(betas):
            raise ConfigError(f"NAD needs one beta per attention layer: {len(self.layers)} layers "
                              f"({self.layers}) but betas={list(betas)}")
        self.teacher = None

    def prepare(self, clean_set, fit) -> None:
        h = self.hparams
        teacher = FineTuning(copy.deepcopy(self.model), h.num_classes, h.target_label, self.augment,
                             epochs=h.teacher_epochs, batch_size=h.batch_size, lr=h.lr,
                             momentum=h.momentum, weight_decay=h.weight_decay)
        if h.teacher_epochs > 0:
            fit(teacher, clean_set)
        # Kept outside `self.model`: the teacher is not exported and never trains.
        self.__dict__["teacher"] = teacher.model.eval().requires_grad_(False)

    def on_fit_start(self) -> None:
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
