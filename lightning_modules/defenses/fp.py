"""FP, Fine-Pruning (Liu, Dolan-Gavitt & Garg, RAID 2018), as BackdoorBench
runs it.

Reference: SCLBD/BackdoorBench@f02e353 `defense/fp.py` with
`config/defense/fp/cifar10.yaml`.

1. The input of the classifier head (`model.head_layer`, the final Linear;
   BackdoorBench hooks the model's last child, which is that Linear for its
   PreAct-ResNet18) is averaged per feature over the clean subset, served as
   the reference serves it: through the training loader, i.e. with the
   training augmentation, model in eval mode.
2. Features are ranked by ascending mean activation and the head's input
   columns of the k least active are masked, k = step, 2*step, ... (< number
   of features), step = ceil(once_prune_ratio * features) (6 of 512 for
   PreAct-ResNet18).
3. After each k the clean accuracy is measured; pruning stops at the first k
   whose |acc - acc_0| / acc_0 reaches acc_ratio (absolute value, as in the
   reference, so a rise counts too), acc_0 being the unpruned accuracy.
4. The pruned model is fine-tuned for `epochs` with the mask held fixed (a
   forward reparametrisation weight = weight_orig * mask, as the reference's
   `torch.nn.utils.prune.custom_from_mask`, so the pruned columns stay exactly
   zero whatever the optimiser does); `finalize` folds the mask into the weight.

Defaults (BackdoorBench cifar10.yaml): acc_ratio 0.1, once_prune_ratio 0.01,
fine-tuning 100 epochs, batch 256, SGD lr 0.01 (cosine), momentum 0.9,
weight decay 5e-4.

Deviations from the reference, each for a reason:
- Accuracy in step 3 is measured on the defender's clean subset (no
  augmentation, eval mode); BackdoorBench measures it on the clean test set
  (`defense/fp.py`, the pruning loop), which a defender does not have
  (test-set leakage). The clean subset is part of f_A's training data, so
  this is training accuracy: it starts near 100 % and usually withstands
  pruning longer than test accuracy does. The 10 % relative drop is
  therefore typically reached at a different (often larger) k than under
  BackdoorBench's test-accuracy rule, and the number of pruned features,
  and with it ASR and C-Acc after fine-tuning, differ from BackdoorBench's.
- BackdoorBench masks `seq_sort[0:k-1]` at step k, i.e. k - 1 features, and
  its kept model `last_net` is the very object being pruned, so the model it
  fine-tunes already carries the mask of the step that crossed the threshold.
  By default this module masks k features at step k and keeps the last k that
  stayed within the threshold (what the reference's bookkeeping intends:
  `last_index` records exactly that k). `reference_selection=True` reproduces
  both reference behaviours instead.
- In this PreAct-ResNet18 (as in BackdoorBench's) the pooled features have no
  final BN+ReLU and can be negative, so "least active" ranks signed means, not
  the original paper's post-ReLU activations; kept as the reference does it.

`report`: `features`, `prune_step`, `pruned_features`, `pruned_indices`
(ascending activation order), `clean_subset_acc_start`,
`clean_subset_acc_pruned` (the model that is fine-tuned), and
`clean_subset_acc_curve` ([k, accuracy] for every k evaluated, 0 first).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune

from benchmark.errors import ConfigError
from benchmark.extension.schema import Fraction, Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule


def relative_change(acc: float, start: float) -> float:
    """|acc - start| / start, the reference's stopping statistic (0 when both are 0)."""
    if start == 0:
        return 0.0 if acc == 0 else math.inf
    return abs(acc - start) / start


@DEFENSES.register("fp")
class FinePruning(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NonNegativeInt = 100, batch_size: PositiveInt = 256, lr: PositiveFloat = 0.01,
                 momentum: Momentum = 0.9, weight_decay: NonNegativeFloat = 5e-4,
                 acc_ratio: Fraction = 0.1, once_prune_ratio: Fraction = 0.01,
                 reference_selection: bool = False):
        super().__init__(model, num_classes, target_label, augment, epochs, batch_size, lr, momentum, weight_decay)
        head_name = getattr(model, "head_layer", None)
        head = dict(model.named_modules()).get(head_name) if head_name else None
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"fp: {type(model).__name__} has no Linear classifier head "
                              f"(head_layer={head_name!r}); FP prunes the head's input features")
        self.head_name = head_name
        self.prune_mask: torch.Tensor | None = None

    @property
    def head(self) -> nn.Linear:
        return self.model.get_submodule(self.head_name)

    @torch.no_grad()
    def mean_head_input(self, dataset) -> torch.Tensor:
        """Mean of each input feature of the head over `dataset` (with the
        training augmentation, as the reference's loader serves it)."""
        captured = {}
        handle = self.head.register_forward_pre_hook(lambda _m, args: captured.__setitem__("x", args[0]))
        was_training = self.model.training
        self.model.eval()
        total = None
        try:
            for x, _ in self.batches(dataset, shuffle=True, seed=int(torch.randint(2**31 - 1, ())), augment=True):
                self.model(x)
                batch_sum = captured["x"].float().sum(dim=0)
                total = batch_sum if total is None else total + batch_sum
        finally:
            handle.remove()
            self.model.train(was_training)
        return total / len(dataset)

    def prepare(self, clean_set, fit) -> None:
        h = self.hparams
        head = self.head
        order = torch.argsort(self.mean_head_input(clean_set), stable=True)
        features = head.in_features
        step = math.ceil(features * h.once_prune_ratio)
        original = head.weight.detach().clone()
        with torch.no_grad():
            kept, last_evaluated, curve = self._search(clean_set, head, original, order, step)
            head.weight.copy_(original)
        chosen = last_evaluated if h.reference_selection else kept
        count = max(chosen - 1, 0) if h.reference_selection else chosen
        self.prune_mask = self._column_mask(original, order, count)
        # Outside no_grad: the reparametrised weight must stay differentiable
        # with respect to weight_orig for the fine-tuning.
        prune.custom_from_mask(head, name="weight", mask=self.prune_mask)
        self.report = {"features": features, "prune_step": step, "pruned_features": count,
                       "pruned_indices": order[:count].tolist(), "clean_subset_acc_start": curve[0][1],
                       "clean_subset_acc_pruned": self.accuracy(clean_set), "clean_subset_acc_curve": curve}

    @staticmethod
    def _column_mask(weight: torch.Tensor, order: torch.Tensor, count: int) -> torch.Tensor:
        mask = torch.ones_like(weight)
        mask[:, order[:count]] = 0
        return mask

    def _search(self, clean_set, head, original, order, step):
        """Grow the pruned set step by step until the clean-subset accuracy
        moves by acc_ratio; returns (last k within the threshold, last k
        evaluated, [[k, accuracy], ...])."""
        h = self.hparams
        start = self.accuracy(clean_set)
        curve = [[0, start]]
        kept = last_evaluated = 0
        for k in range(step, head.in_features, step):
            count = k - 1 if h.reference_selection else k
            head.weight.copy_(original * self._column_mask(original, order, count))
            acc = self.accuracy(clean_set)
            curve.append([k, acc])
            last_evaluated = k
            if relative_change(acc, start) >= h.acc_ratio:
                break
            kept = k
        return kept, last_evaluated, curve

    def finalize(self) -> None:
        head = self.head
        if prune.is_pruned(head):
            # Folds weight_orig * mask into a plain `weight` parameter, so the
            # exported state dict has the model's usual keys.
            prune.remove(head, "weight")
