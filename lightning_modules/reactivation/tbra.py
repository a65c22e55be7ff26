"""TBRA, transfer-based re-activation (Zhu, Liang & Wu, NeurIPS 2024).

The victim's defense model is never seen. The attacker applies known defenses
to its own backdoored model (the surrogates), crafts delta on them with the
targeted cross-entropy toward the target label, and the runner measures the
ASR of trigger + delta on the victim. Ensembling of the surrogates:
- "sum": summed CE over all surrogates each step (the paper's default);
- "sequential": one surrogate per step, in turn;
- "momentum": MI-FGSM (Dong et al., CVPR 2018) on the summed CE: accumulate
  the L1-normalised gradient with decay `momentum`, step along its sign (L-inf)
  or its L2-normalised direction (L2, L1), step size `lr` in pixel units.
SGD lr 0.05 on delta for sum/sequential; projection after every step.
Data: up to 5,000 poisoned training samples in batches of 500, drop_last
(JulieCarlon/Backdoor-Reactivation-Attack `reattack/transfer_attack.py`:
10 steps per epoch, 100 epochs).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import NonNegativeFloat, PositiveFloat, PositiveInt
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.base import TRANSFER, Norm, ReactivationModule


@REACTIVATIONS.register("tbra")
class TransferReactivation(ReactivationModule):
    access = TRANSFER

    def __init__(self, surrogates: list[nn.Module], image_shape: tuple[int, int, int], target_label: int = 0,
                 epsilon: PositiveFloat = 0.05, norm: Norm = "linf", seed: int = 0, lr: PositiveFloat = 0.05,
                 epochs: PositiveInt = 100, batch_size: PositiveInt = 500, num_samples: PositiveInt = 5000,
                 ensemble: Literal["sum", "sequential", "momentum"] = "sum", momentum: NonNegativeFloat = 1.0):
        # MI-FGSM's decay is 1.0 (plain accumulation) by default, so `momentum`
        # is not bounded by 1 as an optimiser's momentum is.
        surrogates = list(surrogates or [])
        if not surrogates:
            raise ConfigError(f"tbra: surrogates={surrogates} is not allowed; needs at least one surrogate model "
                              f"(the attacker's own defended copies)")
        super().__init__(image_shape, target_label, epsilon, norm, seed, num_samples, batch_size, epochs)
        self.freeze(*surrogates)  # held in self.frozen: eval mode, no weight gradients
        self.automatic_optimization = False
        self.register_buffer("velocity", torch.zeros_like(self.delta), persistent=False)
        self._steps = 0

    def configure_optimizers(self):
        return torch.optim.SGD([self.delta], lr=self.hparams.lr)

    def _loss(self, x: torch.Tensor, models) -> torch.Tensor:
        x_adv = self.perturb(x)
        target = torch.full((x.shape[0],), self.hparams.target_label, device=x.device, dtype=torch.long)
        return sum(F.cross_entropy(m(x_adv), target) for m in models)

    def training_step(self, batch, batch_idx):
        x = batch[0]
        h = self.hparams
        opt = self.optimizers()
        models = list(self.frozen)
        if h.ensemble == "sequential":
            models = [models[self._steps % len(models)]]
        self._steps += 1
        loss = self._loss(x, models)
        opt.zero_grad()
        self.manual_backward(loss)
        if h.ensemble == "momentum":
            with torch.no_grad():
                g = self.delta.grad
                self.velocity.mul_(h.momentum).add_(g / g.abs().sum().clamp_min(1e-12))
                step = self.velocity.sign() if h.norm == "linf" else self.velocity / self.velocity.norm().clamp_min(1e-12)
                self.delta.sub_(h.lr * step)
        else:
            opt.step()
        self.project_()
        self.log("react/loss", loss.detach(), prog_bar=True, on_step=False, on_epoch=True)
