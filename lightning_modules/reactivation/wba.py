"""WBA, white-box re-activation (Zhu, Liang & Wu, NeurIPS 2024).

Minimise over delta with ||delta|| <= eps:
    l1 * CE(f(x'), t) + l2 * mean(-log(1.0001 - p_k*(x')))
with x' = clip(x_triggered + delta), p = softmax(f(x')) and k* the most
probable non-target class. Plain SGD (lr 0.05) on delta, `inner_steps`
steps per batch, projection after each. Defaults of the reference code:
L-inf eps 0.05, 1,000 poisoned training samples in batches of 128
(drop_last), 50 passes x 5 inner steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.extension.schema import NonNegativeFloat, PositiveFloat, PositiveInt
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.base import WHITE_BOX, Norm, ReactivationModule


def reactivation_loss(logits: torch.Tensor, target_label: int, lambda_ce: float = 1.0,
                      lambda_other: float = 1.0) -> torch.Tensor:
    probs = logits.softmax(dim=1)
    target = torch.full((logits.shape[0],), target_label, device=logits.device, dtype=torch.long)
    # k*: top-1 class if it is not the target, else top-2 == argmax with the target masked out.
    k_star = probs.detach().clone().index_fill_(1, target[:1], -1.0).argmax(dim=1)
    p_other = probs.gather(1, k_star[:, None]).squeeze(1)
    return lambda_ce * F.cross_entropy(logits, target) + lambda_other * (-torch.log(1.0001 - p_other)).mean()


@REACTIVATIONS.register("wba")
class WhiteBoxReactivation(ReactivationModule):
    access = WHITE_BOX

    def __init__(self, model, image_shape: tuple[int, int, int], target_label: int = 0,
                 epsilon: PositiveFloat = 0.05, norm: Norm = "linf", seed: int = 0, lr: PositiveFloat = 0.05,
                 epochs: PositiveInt = 50, inner_steps: PositiveInt = 5, batch_size: PositiveInt = 128,
                 num_samples: PositiveInt = 1000, lambda_ce: NonNegativeFloat = 1.0,
                 lambda_other: NonNegativeFloat = 1.0):
        super().__init__(image_shape, target_label, epsilon, norm, seed, num_samples, batch_size, epochs)
        self.model = model
        self.freeze(model)
        self.automatic_optimization = False

    def configure_optimizers(self):
        return torch.optim.SGD([self.delta], lr=self.hparams.lr)

    def training_step(self, batch, batch_idx):
        x, _, _ = batch
        opt = self.optimizers()
        h = self.hparams
        for _ in range(h.inner_steps):
            loss = reactivation_loss(self.model(self.perturb(x)), h.target_label, h.lambda_ce, h.lambda_other)
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
            self.project_()
        self.log("react/loss", loss.detach(), prog_bar=True, on_step=False, on_epoch=True)
