"""`ReactivationModule`: optimise one universal perturbation delta (C, H, W)
in [0, 1] pixel space; x' = clip(x + delta, 0, 1).

delta is the module's only parameter and is projected onto the norm ball
after every step. Models a method may differentiate through (the victim for
white-box, the attacker's surrogates for transfer) are registered with
`freeze`: their parameters never train and they stay in eval mode whatever
Lightning does (`train()` is overridden), so BatchNorm statistics never move.
Black-box methods get a query oracle instead and never see a model.

How the attacker's data are formed is the runner's business (triggered
poisoned training samples, or clean ones for the gUAA control); so is
evaluation, through `DeltaEvaluation` below, the suite's one protocol.

A method's user-settable parameters are declared once, in `__init__`, with
their ranges as type hints (benchmark.extension.schema, typing.Literal); the runner
checks values against them before it builds the module. `__init__` checks
only rules between parameters (the budget against the norm) or on what the
runner supplies.
"""
from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import nn

from benchmark.extension.schema import PositiveFloat, PositiveInt
from lightning_modules.base import POISONED, BackdoorStage
from lightning_modules.reactivation.norms import NORMS, check_budget, project, random_init

WHITE_BOX, QUERY, TRANSFER = "white-box", "query", "transfer"
#: the norms of `norms.py`, as a type hint
Norm = Literal[NORMS]


class ReactivationModule(L.LightningModule):
    #: what the method is given: the victim (white-box), a query oracle on the
    #: victim (query), or surrogate models only (transfer)
    access: str = WHITE_BOX
    object_args: tuple[str, ...] = ("model", "oracle", "surrogates")

    def __init__(self, image_shape: tuple[int, int, int], target_label: int = 0, epsilon: PositiveFloat = 0.05,
                 norm: Norm = "linf", seed: int = 0, num_samples: PositiveInt = 1000, batch_size: PositiveInt = 128,
                 epochs: PositiveInt = 1):
        # epsilon's upper bound depends on the norm (L-inf: below 1), a rule
        # between two parameters that no single hint states.
        check_budget(norm, epsilon)
        super().__init__()
        self.save_hyperparameters(ignore=list(self.object_args))
        gen = torch.Generator().manual_seed(seed)
        self.delta = nn.Parameter(random_init((1, *image_shape), norm, epsilon, gen))
        self.frozen = nn.ModuleList()

    def config(self) -> dict:
        return dict(self.hparams)

    def freeze(self, *models: nn.Module) -> None:
        for m in models:
            m.requires_grad_(False).eval()
            self.frozen.append(m)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()
        return self

    def perturb(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.delta).clamp(0.0, 1.0)

    @torch.no_grad()
    def project_(self) -> None:
        self.delta.copy_(project(self.delta, self.hparams.norm, self.hparams.epsilon))

    def final_delta(self) -> torch.Tensor:
        return self.delta.detach().cpu()[0]

    def checkpoints(self) -> dict[str, torch.Tensor]:
        """Intermediate deltas worth evaluating (e.g. ASR vs queries), by label."""
        return {}


class DeltaEvaluation(BackdoorStage):
    """The shared evaluation protocol with a fixed delta added to the poisoned
    (or, for gUAA, clean non-target) inputs."""

    def __init__(self, model, num_classes: int, target_label: int, delta: torch.Tensor):
        super().__init__(model, num_classes, target_label)
        self.register_buffer("delta", delta.detach().clone().reshape(1, *delta.shape[-3:]))
        self.eval_roles = (POISONED,)

    def eval_inputs(self, x, role):
        return (x + self.delta).clamp(0.0, 1.0) if role == POISONED else x
