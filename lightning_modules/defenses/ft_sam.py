"""FT-SAM: fine-tuning with sharpness-aware minimisation (Zhu et al., ICCV 2023).

References (facts only):
- SCLBD/BackdoorBench@f02e353:defense/ft-sam.py (the training loop),
- SCLBD/BackdoorBench@f02e353:utils/defense_utils/sam/sam.py (the SAM step),
  .../sam/util.py (BN handling, label-smoothed loss), .../sam/scheduler.py (rho schedule),
- SCLBD/BackdoorBench@f02e353:config/defense/ft-sam/cifar10.yaml (defaults),
- SCLBD/BackdoorBench@f02e353:utils/aggregate_block/train_settings_generate.py
  (CosineAnnealingLR with T_max = 100).

One training batch, with L the label-smoothed loss:

1. g = grad L(theta) (BatchNorm in train mode, running statistics updated);
2. e = rho * theta^2 * g / (|| |theta| * g ||_2 + 1e-12), the adaptive
   perturbation, the norm taken over every parameter that has a gradient
   (plain SAM, `adaptive=False`: e = rho * g / (||g||_2 + 1e-12));
3. g' = grad L(theta + e), with the BatchNorm running statistics frozen;
4. with `alpha` > 0 the reference's gradient decomposition
   g' <- g' - alpha * (g - cos(g, g') * ||g|| * g' / ||g'||) (off by default);
5. back to theta, then the SGD step (momentum, weight decay at theta) with g';
6. the learning-rate schedule steps once per batch.

Defaults (BackdoorBench's CIFAR-10 config and argparse defaults):
epochs 100, batch 256, SGD lr 0.01, momentum 0.9, weight decay 5e-4,
rho 2.0 (`rho_max = rho_min = 2.0`, so the reference's ProportionScheduler
keeps rho constant; one `rho` here), adaptive True (`--adaptive` is
`store_false`), label smoothing 0.1, alpha 0.0, training augmentation on
(the reference loads the clean data with the train transform),
`lr_schedule="cosine-t100"`.

Reference behaviours kept on purpose:
- The schedule is `CosineAnnealingLR(T_max=100)` stepped per *batch*, so
  the learning rate at step k is 0.005 * (1 + cos(pi * k / 100)): it reaches
  0 after 100 steps and climbs back to 0.01 at 200 (a full cycle every 20
  epochs at 10 batches per epoch). `lr_schedule="cosine"` gives one cosine
  over the whole run instead; "constant" keeps lr fixed.
- Label smoothing puts 1 - s on the true class and s / (C - 1) on each other
  class (not PyTorch's s / C everywhere), and the loss is the KL divergence
  to that target, summed over classes and averaged over the batch.

Deviations, with their reasons:
- BackdoorBench draws FT-SAM's clean data class-balanced (250 per class);
  the suite hands every defense the same random clean subset.
- The reference freezes BN statistics in the perturbed pass by setting
  momentum to 0, which still increments `num_batches_tracked`; here the
  pass runs with `track_running_stats` off, so the running mean and
  variance are equally untouched and the counter does not move either
  (it only matters for BN layers with momentum None, which the suite's
  models do not have).
- The reference subtracts e to return to theta (exact up to rounding);
  here theta is copied back, so the base step starts from theta exactly.

Precision: both passes run in fp32 even where the suite's trainer autocasts
to bf16 (GPUs), `mixed_precision=False` (the default). The reference's
`_train_sam` and `SAM.step` never autocast: its yaml's `amp: True` is read
but unused, so BackdoorBench's FT-SAM trains in fp32. `mixed_precision=True`
keeps the trainer's precision (bf16 autocast on GPUs).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from benchmark.errors import ConfigError
from benchmark.extension.schema import Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule

#: added to the gradient norm before dividing (the reference's `perturb_eps`)
PERTURB_EPS = 1e-12
#: period of the reference's cosine schedule, in scheduler steps (batches)
REFERENCE_T_MAX = 100


def smooth_kl_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Batch mean of KL(t || softmax(logits)) with t = 1 - s on the label and
    s / (C - 1) elsewhere. Its gradient equals that of the cross-entropy to
    t; the value differs by t's (constant) entropy."""
    logits = logits.float()  # the target's s / (C - 1) is not representable in bf16
    target = torch.full_like(logits, smoothing / (logits.shape[1] - 1))
    target.scatter_(1, labels.unsqueeze(1), 1.0 - smoothing)
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="none").sum(dim=1).mean()


@torch.no_grad()
def sam_perturbation(params: Sequence[torch.Tensor], rho: float, adaptive: bool) -> list[torch.Tensor]:
    """The ascent step e for each parameter from its current `.grad`."""
    if adaptive:
        norm = torch.linalg.vector_norm(torch.stack([(p.abs() * p.grad).norm() for p in params]))
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    scale = rho / (norm + PERTURB_EPS)
    return [p.grad * scale * p.square() if adaptive else p.grad * scale for p in params]


@torch.no_grad()
def decompose_gradient(params: Sequence[torch.Tensor], first: Sequence[torch.Tensor], alpha: float) -> None:
    """The reference's optional correction of the perturbed gradient g' (in
    `.grad`) with the first gradient g: g' -= alpha * (g - cos * ||g|| * g' / ||g'||)."""
    new = [p.grad for p in params]
    inner = sum((g * h).sum() for g, h in zip(first, new))
    new_norm = torch.linalg.vector_norm(torch.stack([h.norm() for h in new]))
    old_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in first]))
    cosine = inner / (new_norm * old_norm + PERTURB_EPS)
    for g, h in zip(first, new):
        h.sub_(alpha * (g - cosine * old_norm * h / (new_norm + PERTURB_EPS)))


@contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm still normalises with batch statistics, but its
    running mean, variance and counter are left as they are."""
    changed = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in changed:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in changed:
            m.track_running_stats = True


def sam_step(model: nn.Module, loss_fn: Callable[[], torch.Tensor], optimizer, rho: float, adaptive: bool,
             alpha: float = 0.0, backward: Callable[[torch.Tensor], None] = torch.Tensor.backward) -> torch.Tensor:
    """One SAM update of `model` with `optimizer` (whose `step` applies the
    base rule). `loss_fn()` runs the forward pass and returns the loss;
    `backward` is how to back-propagate it (Lightning's `manual_backward`).
    Returns the loss at theta, detached."""
    optimizer.zero_grad()
    loss = loss_fn()
    backward(loss)
    params = [p for p in model.parameters() if p.grad is not None]
    first = [p.grad.clone() for p in params] if alpha > 0 else None
    theta = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, sam_perturbation(params, rho, adaptive)):
            p.add_(e)
    optimizer.zero_grad()
    with frozen_bn_statistics(model):
        backward(loss_fn())
    if first is not None:
        decompose_gradient(params, first, alpha)
    with torch.no_grad():
        for p, t in zip(params, theta):
            p.copy_(t)
    optimizer.step()
    return loss.detach()


def reference_cosine_lr(base_lr: float, step: int, t_max: int = REFERENCE_T_MAX) -> float:
    """Learning rate after `step` scheduler steps of CosineAnnealingLR with
    eta_min 0: periodic with period 2 * t_max, not clamped at t_max."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / t_max))


@DEFENSES.register("ft-sam")
class FineTuningSAM(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NonNegativeInt = 100, batch_size: PositiveInt = 256, lr: PositiveFloat = 0.01,
                 momentum: Momentum = 0.9, weight_decay: NonNegativeFloat = 5e-4, rho: NonNegativeFloat = 2.0,
                 adaptive: bool = True, label_smoothing: Momentum = 0.1, alpha: NonNegativeFloat = 0.0,
                 lr_schedule: Literal["cosine-t100", "cosine", "constant"] = "cosine-t100",
                 mixed_precision: bool = False):
        # label_smoothing shares Momentum's range [0, 1): 1 would leave no
        # weight on the true class.
        if num_classes < 2:
            raise ConfigError(f"ft-sam: num_classes={num_classes} is not allowed; label smoothing needs at least "
                              f"2 classes")
        super().__init__(model, num_classes, target_label, augment, epochs, batch_size, lr, momentum, weight_decay)
        # Two forward/backward passes and a restore per batch: the step is ours.
        self.automatic_optimization = False

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.SGD(self.model.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        if h.lr_schedule == "constant":
            return opt
        t_max = (REFERENCE_T_MAX if h.lr_schedule == "cosine-t100"
                 else max(1, int(self.trainer.estimated_stepping_batches)))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        if self.augment is not None:
            x = self.augment(x)
        h = self.hparams
        with self.precision_context():
            loss = sam_step(self.model, lambda: smooth_kl_loss(self.model(x), y, h.label_smoothing),
                            self.optimizers(), h.rho, h.adaptive, h.alpha, backward=self.manual_backward)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"ft-sam: loss became {loss.item()} at step {self.global_step}")
        sched = self.lr_schedulers()
        if sched is not None:
            sched.step()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss
