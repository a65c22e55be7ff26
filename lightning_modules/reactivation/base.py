"""`ReactivationModule`: optimise one universal perturbation delta (C, H, W)
in [0, 1] pixel space against a frozen model; x' = clip(x + delta, 0, 1).

The model never trains: its parameters are frozen and it stays in eval mode
whatever Lightning does (`train()` is overridden), so BatchNorm statistics
never move. delta is the only parameter and is projected onto the norm ball
after every step. Evaluation is the shared protocol with delta added to the
poisoned inputs.
"""
from __future__ import annotations

import torch

from lightning_modules.base import POISONED, BackdoorStage
from lightning_modules.reactivation.norms import check_budget, project, random_init


class ReactivationModule(BackdoorStage):
    def __init__(self, model, num_classes: int, image_shape: tuple[int, int, int], target_label: int = 0,
                 epsilon: float = 0.05, norm: str = "linf", lr: float = 0.05, seed: int = 0):
        check_budget(norm, epsilon)
        super().__init__(model, num_classes, target_label, lr=lr, momentum=0.0, weight_decay=0.0)
        self.model.requires_grad_(False)
        self.model.eval()
        gen = torch.Generator().manual_seed(seed)
        self.delta = torch.nn.Parameter(random_init((1, *image_shape), norm, epsilon, gen))
        self.eval_roles = (POISONED,)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        return self

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.delta).clamp(0.0, 1.0)

    def eval_inputs(self, x, role):
        return self.perturb(x) if role == POISONED else x

    def trainable_parameters(self):
        return [self.delta]

    @torch.no_grad()
    def project_(self) -> None:
        self.delta.copy_(project(self.delta, self.hparams.norm, self.hparams.epsilon))

    def export_weights(self) -> dict[str, torch.Tensor]:
        return {"delta": self.delta.detach().cpu()[0]}
