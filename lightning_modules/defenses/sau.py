"""SAU: Shared Adversarial Unlearning (Wei et al., NeurIPS 2023), as
BackdoorBench runs it.

A frozen copy of the backdoored model, f_ref, is kept next to the model being
purified, f. For every clean batch (x, y):

1. Shared PGD, per-sample delta in [0, 1] pixel units, ||delta||_inf <=
   trigger_norm, initialised at +trigger_norm ("max"), up to `adv_steps`
   steps delta <- proj(delta - adv_lr * sign(grad_delta J)) with
       J = beta_1 * L_adv + beta_2 * L_share,
       L_adv = -[sum_{i: f not fooled} CE(f(x_i + d_i), y_i)
                 + sum_{i: f_ref not fooled} CE(f_ref(x_i + d_i), y_i)] / (2 B),
       L_share = sum_{i not shared adversarial} JS(f(x_i + d_i) || f_ref(x_i + d_i)) / B,
   where a model is "fooled" on x_i when its prediction on x_i + d_i differs
   from its own prediction on x_i, and x_i is "shared adversarial" when both
   are fooled to the same label. JS is the Jensen-Shannon divergence of the
   two softmax outputs (each clamped at 1e-8, natural log). PGD stops once
   every sample of the batch is shared adversarial (judged before the step
   just taken, as in the reference).
2. Unlearning, `outer_steps` Adam steps on
       lmd_1 * CE(f(x), y) + lmd_2 * CE(f(x + delta), y) + lmd_3 * L_sau,
       L_sau = sum_{i in P} [-log(1e-6 + min(1 - p_i, 0.999))
                             - log(1 + 1e-6 - max(p_i, 0.001))] / (2 B),
   with p_i = softmax(f(x_i + d_i))[yhat_i], yhat_i = f_ref's label on
   x_i + d_i, and P the samples where yhat_i differs from both the true label
   and f_ref's clean prediction. The two logarithms are the same quantity
   -log(1 - p_i) computed two ways (the reference averages them for numerical
   stability); samples with p_i < 0.001 contribute a constant (no gradient).
Both models stay in eval mode (`model_train_mode = False`): BatchNorm
statistics never move. `train_mode=True` is the reference's `--train_mode`:
the model runs in train mode for the unlearning forward pass only.

Sources: SCLBD/BackdoorBench@f02e353 `defense/sau.py` (class Shared_PGD and
sau.mitigation) with `config/defense/sau/cifar10.yaml`.

Defaults (BackdoorBench CIFAR-10):
- epochs = 100 (`n_rounds`), batch_size = 256;
- lr = 1e-4, Adam betas (0.9, 0.999), weight_decay 0; the cosine scheduler
  the script creates is never stepped, so the rate is constant;
- amsgrad = True: the script builds its Adam through `argparser_opt_scheduler`
  (utils/aggregate_block/train_settings_generate.py), which passes
  `amsgrad=True`; `amsgrad=False` gives plain Adam;
- norm_type = "L_inf", trigger_norm = 0.2, adv_lr = 0.2, adv_steps = 5,
  pgd_init = "max";
- beta_1 = 0.01, beta_2 = 1; lmd_1 = 1, lmd_2 = 0, lmd_3 = 1; outer_steps = 1;
- train_mode = False;
- no augmentation: the reference loads its clean subset with the test
  transform, so the runner's augmentation is not used (augment=None).

Deviations and options:
- clip_images = False is faithful: the reference computes the [0, 1] bounds
  (max_eps, min_eps) but never applies them, so x + delta can leave [0, 1].
  True also clamps delta to [-x, 1 - x] after every projection (and after the
  initialisation), so every perturbed image is a valid image;
- the masked sums use torch.where instead of boolean indexing behind an
  "any sample left?" test: same values (an empty sum is 0) without a host sync;
- each model's clean prediction is computed once per batch, where the
  reference recomputes it at every PGD step from unchanged models;
- delta's gradient is taken with torch.autograd.grad: the reference's
  backward() also leaves gradients on both models' weights, which its
  zero_grad() clears before the update and which f_ref never uses;
- the steps run in fp32 even under the trainer's bf16 autocast
  (`mixed_precision=False`): the reference never autocasts (its yaml's
  `amp: True` is not read by sau.py), and the fooled / shared masks are
  argmax decisions that bf16 rounding would flip. `mixed_precision=True`
  keeps the trainer's precision.
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.extension.schema import Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule

NormType = Literal["L_inf", "L2", "L1", "Reg"]
PgdInit = Literal["max", "min", "zero", "random"]

# The reference's numerical guards: probabilities are clamped at 1e-8 before
# the JS logarithms; L_sau adds 1e-6 inside its logarithms and clamps p to
# [0.001, 0.999] (so p < 0.001 gives no gradient).
JS_FLOOR = 1e-8
SAU_LOG_EPS = 1e-6
SAU_P_MIN, SAU_P_MAX = 0.001, 0.999


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Per-sample Jensen-Shannon divergence (nats) of two softmax outputs."""
    p = F.softmax(logits_p, dim=1).clamp(min=JS_FLOOR)
    q = F.softmax(logits_q, dim=1).clamp(min=JS_FLOOR)
    log_m = (0.5 * (p + q)).log()
    return 0.5 * (p * (p.log() - log_m) + q * (q.log() - log_m)).sum(dim=1)


def shared_pgd_objective(adv_logits: torch.Tensor, adv_logits_ref: torch.Tensor, clean_pred: torch.Tensor,
                         clean_pred_ref: torch.Tensor, labels: torch.Tensor, beta_1: float,
                         beta_2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """beta_1 * L_adv + beta_2 * L_share, and the mask of shared adversarial samples."""
    adv_pred, adv_pred_ref = adv_logits.argmax(dim=1), adv_logits_ref.argmax(dim=1)
    fooled, fooled_ref = adv_pred != clean_pred, adv_pred_ref != clean_pred_ref
    shared = fooled & fooled_ref & (adv_pred == adv_pred_ref)
    b = labels.shape[0]
    zero = adv_logits.new_zeros(())
    ce = torch.where(fooled, zero, F.cross_entropy(adv_logits, labels, reduction="none"))
    ce_ref = torch.where(fooled_ref, zero, F.cross_entropy(adv_logits_ref, labels, reduction="none"))
    loss_adv = -(ce.sum() + ce_ref.sum()) / (2 * b)
    loss_share = torch.where(shared, zero, js_divergence(adv_logits, adv_logits_ref)).sum() / b
    return beta_1 * loss_adv + beta_2 * loss_share, shared


def potential_poison(adv_pred_ref: torch.Tensor, clean_pred_ref: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Samples whose perturbed version fools f_ref: its label is neither the
    true one nor f_ref's clean prediction (the set L_sau covers)."""
    return (adv_pred_ref != labels) & (adv_pred_ref != clean_pred_ref)


def shared_adversarial_loss(adv_logits: torch.Tensor, adv_pred_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_sau: mean over the batch (masked samples only) of -log(1 - p(adv_pred_ref)),
    computed as the reference does (two clamped forms, averaged)."""
    prob = F.softmax(adv_logits, dim=1)
    target = F.one_hot(adv_pred_ref, adv_logits.shape[1]).bool()
    pos = prob.masked_fill(~target, 0).sum(dim=1)
    # Summed over the other classes, not 1 - pos: accurate when pos is near 1.
    neg = prob.masked_fill(target, 0).sum(dim=1)
    terms = (-torch.log(SAU_LOG_EPS + neg.clamp(max=SAU_P_MAX))
             - torch.log(1 + SAU_LOG_EPS - pos.clamp(min=SAU_P_MIN)))
    return torch.where(mask, terms, terms.new_zeros(())).sum() / (2 * adv_logits.shape[0])


def project(delta: torch.Tensor, norm_type: NormType, bound: float) -> torch.Tensor:
    """Back into the norm ball (per sample); "Reg" leaves delta unconstrained."""
    if norm_type == "L_inf":
        return delta.clamp(-bound, bound)
    if norm_type in ("L2", "L1"):
        order = 2 if norm_type == "L2" else 1
        norm = torch.linalg.vector_norm(delta.flatten(1), ord=order, dim=1).view(-1, *([1] * (delta.dim() - 1)))
        # Only samples outside the ball are scaled, onto its surface.
        return delta * torch.where(norm > bound, bound / norm.clamp(min=1e-12), torch.ones_like(norm))
    return delta


def shared_pgd(model: nn.Module, reference: nn.Module, x: torch.Tensor, labels: torch.Tensor, *,
               trigger_norm: float = 0.2, adv_lr: float = 0.2, adv_steps: int = 5, pgd_init: PgdInit = "max",
               norm_type: NormType = "L_inf", beta_1: float = 0.01, beta_2: float = 1.0,
               clip_images: bool = False) -> tuple[torch.Tensor, int]:
    """Shared adversarial perturbation of the batch x (pixel units) against
    `model` and `reference`; returns (delta, PGD steps taken)."""
    def constrain(d):
        d = project(d, norm_type, trigger_norm)
        return torch.minimum(torch.maximum(d, -x), 1 - x) if clip_images else d

    with torch.no_grad():
        clean_pred, clean_pred_ref = model(x).argmax(dim=1), reference(x).argmax(dim=1)
    if pgd_init == "max":
        delta = torch.full_like(x, trigger_norm)
    elif pgd_init == "min":
        delta = torch.full_like(x, -trigger_norm)
    elif pgd_init == "random":
        delta = torch.rand_like(x)
    else:
        delta = torch.zeros_like(x)
    delta = constrain(delta)
    steps = 0
    for _ in range(adv_steps):
        steps += 1
        delta.requires_grad_(True)
        adv = x + delta
        objective, shared = shared_pgd_objective(model(adv), reference(adv), clean_pred, clean_pred_ref, labels,
                                                 beta_1, beta_2)
        grad, = torch.autograd.grad(objective, delta)
        delta = constrain(delta.detach() - adv_lr * grad.sign())
        if bool(shared.all()):  # every sample already shared adversarial: further steps are zero steps
            break
    return delta.detach(), steps


@DEFENSES.register("sau")
class SharedAdversarialUnlearning(DefenseModule):
    model_train_mode = False

    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NonNegativeInt = 100, batch_size: PositiveInt = 256, lr: PositiveFloat = 1e-4,
                 betas: tuple[Momentum, Momentum] = (0.9, 0.999), weight_decay: NonNegativeFloat = 0.0,
                 norm_type: NormType = "L_inf", trigger_norm: PositiveFloat = 0.2, adv_lr: PositiveFloat = 0.2,
                 adv_steps: NonNegativeInt = 5, pgd_init: PgdInit = "max", beta_1: NonNegativeFloat = 0.01,
                 beta_2: NonNegativeFloat = 1.0, lmd_1: NonNegativeFloat = 1.0, lmd_2: NonNegativeFloat = 0.0,
                 lmd_3: NonNegativeFloat = 1.0, outer_steps: PositiveInt = 1, train_mode: bool = False,
                 clip_images: bool = False, mixed_precision: bool = False, amsgrad: bool = True):
        # Adam's betas are decay rates in [0, 1), Momentum's range.
        # The reference trains on the clean subset with the test transform.
        super().__init__(model, num_classes, target_label, None, epochs, batch_size, lr,
                         weight_decay=weight_decay)
        self.hparams.pop("momentum", None)  # Adam: no momentum parameter (betas instead)
        self.automatic_optimization = False
        # Kept outside `self.model` (not exported, not optimised): the frozen
        # backdoored model the shared adversarial examples are defined against.
        self.__dict__["reference"] = copy.deepcopy(model).eval().requires_grad_(False)
        #: per epoch: mean PGD steps per batch, and the mean fraction of a batch
        #: in L_sau's set (f_ref fooled to a wrong label by the perturbation)
        self.report = {"pgd_steps": [], "potential_poison_fraction": []}
        self._epoch_stats: list[torch.Tensor] = []

    def on_fit_start(self) -> None:
        self.reference.to(self.device)
        super().on_fit_start()  # eval mode: model_train_mode = False

    def pgd(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        h = self.hparams
        return shared_pgd(self.model, self.reference, x, y, trigger_norm=h.trigger_norm, adv_lr=h.adv_lr,
                          adv_steps=h.adv_steps, pgd_init=h.pgd_init, norm_type=h.norm_type, beta_1=h.beta_1,
                          beta_2=h.beta_2, clip_images=h.clip_images)

    def unlearning_loss(self, x: torch.Tensor, y: torch.Tensor,
                        delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The outer loss on (x, x + delta), and the mask of potential poison samples."""
        h = self.hparams
        adv = x + delta
        if h.train_mode:
            self.model.train()
        logits, adv_logits = self.model(torch.cat([x, adv])).split(x.shape[0])
        self.model.eval()
        with torch.no_grad():
            clean_pred_ref = self.reference(x).argmax(dim=1)
            adv_pred_ref = self.reference(adv).argmax(dim=1)
        mask = potential_poison(adv_pred_ref, clean_pred_ref, y)
        loss = (h.lmd_1 * F.cross_entropy(logits, y) + h.lmd_2 * F.cross_entropy(adv_logits, y)
                + h.lmd_3 * shared_adversarial_loss(adv_logits, adv_pred_ref, mask))
        return loss, mask

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        opt = self.optimizers()
        with self.precision_context():
            delta, steps = self.pgd(x, y)
            for _ in range(self.hparams.outer_steps):
                loss, mask = self.unlearning_loss(x, y, delta)
                opt.zero_grad()
                self.manual_backward(loss)
                opt.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"sau: loss became {loss.item()} at step {self.global_step}")
        self._epoch_stats.append(torch.stack([loss.new_tensor(float(steps)), mask.float().mean()]))
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        if self._epoch_stats:
            steps, poisoned = torch.stack(self._epoch_stats).mean(dim=0).tolist()
            self.report["pgd_steps"].append(steps)
            self.report["potential_poison_fraction"].append(poisoned)
        self._epoch_stats = []

    def configure_optimizers(self):
        h = self.hparams
        return torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=h.lr,
                                betas=tuple(h.betas), weight_decay=h.weight_decay, amsgrad=h.amsgrad)
