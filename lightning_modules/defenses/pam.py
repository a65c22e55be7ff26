"""PAM: Path-Aware Minimization (Min et al., NeurIPS 2024, "Uncovering,
Explaining, and Mitigating the Superficial Safety of Backdoor Defense").

PAM is BTI-DBF(U) (lightning_modules/defenses/bti_dbf.py: pre-training,
mask search, generator update, label detection, the same rounds) whose
unlearning step is taken along the path back to the backdoored model f_A.
With theta the current parameters, theta_A f_A's (the defense starts from
f_A, so it holds them) and d = theta_A - theta over every parameter (one
global L2 norm; buffers such as BatchNorm statistics are not parameters):

1. e = rho * d / (||d||_2 + 1e-12) (`adaptive=True`: the reference's
   e = rho * d^3 / (||d||_2 + 1e-12), elementwise cube, norm of d);
2. the loss at theta + e, L = CE(f(x_mixed), y) on the unlearning batch
   (random int(0.2 B + 1) rows replaced by G(x), true labels), one forward
   in train mode (BatchNorm statistics move, as in the reference) and its
   gradient g;
3. back to theta, then the base SGD step with g.
At the first step theta = theta_A, so e = 0 and the step is plain SGD.

References (facts only): AISafety-HKUST/stable_backdoor_purification@7a9e3f5
- fine_tune/BTIDBF/sam.py, class PAM (first_step: the perturbation above from
  the parameters of a model holding theta_A - theta; second_step: restore and
  base step; rho and adaptive as above);
- fine_tune/BTIDBF/btidbfu.py, `unlearn_pam` (the loss: cross-entropy on the
  mixed batch only, no feature term) and `__main__` (the optimiser:
  PAM(params, torch.optim.SGD, lr=1e-2, momentum=0.1, rho=opt.rho); f_A's
  copy taken before the first round);
- fine_tune/BTIDBF/defense.sh (`--rho 0.5 --use_pam --nround 3`, with the
  BTI-DBF settings), fine_tune/BTIDBF/cfg.py (`--rho` has no default).

Defaults: those of BTI-DBF(U) for every shared step, and for the unlearning:
SGD lr 1e-2, momentum 0.1, no weight decay, no schedule, rho 0.5,
adaptive False, feature_loss_weight 0 (the reference's `unlearn_pam` drops
BTI-DBF(U)'s feature MSE; 1 puts it back).

Deviations:
- Every parameter is restored to theta after the perturbed pass; the
  reference restores only those that received a gradient (all of them in
  these models).
- theta is copied back rather than recomputed, so the base step starts from
  theta exactly.
- fp32 by default (`mixed_precision=False`), as the reference; see BTI-DBF.
"""
from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from torch import nn

from benchmark.extension.schema import Fraction, Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.bti_dbf import BTIDBF

#: added to ||theta_A - theta|| before dividing (sam.py's 1e-12)
PERTURB_EPS = 1e-12


@torch.no_grad()
def pam_perturbation(params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor], rho: float,
                     adaptive: bool = False) -> list[torch.Tensor]:
    """e for each parameter: rho * d / ||d|| with d = anchor - param and
    one norm over all of them (adaptive: rho * d^3 / ||d||)."""
    direction = [a.to(p.dtype) - p for p, a in zip(params, anchor)]
    norm = torch.linalg.vector_norm(torch.stack([d.norm() for d in direction]))
    scale = rho / (norm + PERTURB_EPS)
    return [d.pow(3) * scale if adaptive else d * scale for d in direction]


def pam_step(model: nn.Module, anchor: Sequence[torch.Tensor], loss_fn: Callable[[], torch.Tensor], optimizer,
             rho: float, adaptive: bool = False,
             backward: Callable[[torch.Tensor], None] = torch.Tensor.backward) -> torch.Tensor:
    """One PAM update of `model`: the gradient of `loss_fn()` at theta + e,
    applied from theta by `optimizer` (the base rule). `anchor` holds
    theta_A, one tensor per parameter in `model.parameters()` order.
    Returns the loss at theta + e, detached."""
    params = list(model.parameters())
    theta = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, pam_perturbation(params, anchor, rho, adaptive)):
            p.add_(e)
    optimizer.zero_grad()
    loss = loss_fn()
    backward(loss)
    with torch.no_grad():
        for p, t in zip(params, theta):
            p.copy_(t)
    optimizer.step()
    return loss.detach()


@DEFENSES.register("pam")
class PathAwareMinimization(BTIDBF):
    defense_name = "pam"
    unused_hparams = ("betas",)

    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 batch_size: PositiveInt = 128, lr: PositiveFloat = 1e-2, momentum: Momentum = 0.1,
                 weight_decay: NonNegativeFloat = 0.0, rho: NonNegativeFloat = 0.5, adaptive: bool = False,
                 preround: NonNegativeInt = 50, gen_lr: PositiveFloat = 1e-3, mround: PositiveInt = 20,
                 mask_lr: PositiveFloat = 0.01, uround: PositiveInt = 30, norm_bound: PositiveFloat = 0.3,
                 feat_bound: PositiveFloat = 3.0, nround: PositiveInt = 3, ul_round: PositiveInt = 30,
                 generated_fraction: Fraction = 0.2, feature_loss_weight: NonNegativeFloat = 0.0,
                 early_stop: bool = False, detection_noise: NonNegativeFloat = 0.03,
                 unet_width: PositiveInt = 32, unet_depth: PositiveInt = 4,
                 feature_site: Literal["map", "pooled"] = "map",
                 image_units: Literal["normalized", "pixel"] = "normalized", mixed_precision: bool = False):
        super().__init__(model, num_classes, target_label, augment, batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, preround=preround, gen_lr=gen_lr, mround=mround,
                         mask_lr=mask_lr, uround=uround, norm_bound=norm_bound, feat_bound=feat_bound,
                         nround=nround, ul_round=ul_round, generated_fraction=generated_fraction,
                         feature_loss_weight=feature_loss_weight, early_stop=early_stop,
                         detection_noise=detection_noise, unet_width=unet_width, unet_depth=unet_depth,
                         feature_site=feature_site, image_units=image_units, mixed_precision=mixed_precision)
        # Perturb, one forward/backward, restore, step: the step is ours.
        self.automatic_optimization = False
        #: theta_A, f_A's parameters as received (prepare)
        self.anchor: list[torch.Tensor] | None = None

    def prepare(self, clean_set, fit) -> None:
        self.anchor = [p.detach().clone() for p in self.model.parameters()]
        super().prepare(clean_set, fit)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.anchor = [a.to(self.device) for a in self.anchor]

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        if self.augment is not None:
            x = self.augment(x)
        h = self.hparams
        with self.precision_context():
            loss = pam_step(self.model, self.anchor, lambda: self.unlearning_loss(x, y), self.optimizers(), h.rho,
                            h.adaptive, backward=self.manual_backward)
        self.check_finite(loss)
        self.log_training_loss(loss)
        return loss

    def configure_optimizers(self):
        h = self.hparams
        return torch.optim.SGD(self.model.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
