"""Input-Aware Dynamic Attack (IAD), stage 2: the classifier and the pattern
generator G trained jointly (BackdoorBench attack/inputaware.py
`train_step`, config/attack/inputaware/default.yaml; the original
VinAIResearch/input-aware-backdoor-attack-release train.py).

The mask generator M was trained in the trigger's own stage
(`benchmark.triggers.input_aware.InputAwareTrigger.prepare`, `mask_epochs`,
BackdoorBench `clean_train_epochs` 25) and stays frozen (eval mode, no
gradient). Each training batch has three kinds of rows:

- backdoor rows: x_bd = x + (G(x) - x) m(x), relabelled to the target;
- cross rows: x + (G(x') - x) m(x') with the pattern and mask of another
  image x' of the batch, keeping their true label (a trigger must only work
  on its own image);
- the rest, clean.

loss = CE(classifier, whole batch)
       + lambda_div * mean(d(x, x') / (d(G(x), G(x')) + epsilon))

over the backdoor rows x, each paired with the image x' whose trigger a
cross row carries (as BackdoorBench pairs `inputs1[:num_bd]` with the cross
rows' `inputs2`), d the per-sample RMS difference; lambda_div and epsilon
are the trigger's parameters. One SGD step of the classifier (lr from the
cell, momentum 0.9, weight decay 5e-4) and one Adam step of G (lr 0.01,
betas (0.5, 0.9)) per batch, with Lightning's manual optimisation.

G's gradient (`generator_gradients`). BackdoorBench's `train_step` zeroes
only the classifier's gradients each batch (`optimizerC.zero_grad()`; the
only other `zero_grad` is the mask stage's), then steps both optimisers, and
the original train.py does the same: G's `.grad` is the running sum of every
joint-stage gradient so far, and Adam runs on that sum. `"accumulate"` (the
default) does the same: G's gradients are cleared once, at the start of the
joint stage, and never again, so a batch without backdoor rows still moves
G by Adam's step on the accumulated sum, as in the reference.
`"per_step"` zeroes G's gradients before every batch (standard Adam); a
batch without backdoor rows then leaves G unchanged. The accumulated
gradient is training state: the module writes it into the fit's checkpoint
(`on_save_checkpoint`) and puts it back on resume, so a resumed attack goes
on with the same sum. fp16 mixed precision is refused with "accumulate":
its gradient scaler unscales `.grad` in place at every step, which would
rescale the running sum (bf16 autocast and fp32 have no scaler).

G is the trigger object's own `pattern_network`, registered here as
`pattern_generator` so it moves with the module, and trained in place: the
cell saves `trigger.state_dict()` after training. `export_weights` exports
the classifier only, as for every attack.

Epochs (`epoch_budget`). BackdoorBench counts the mask and the joint
epochs against one `epochs` = 100: the mask stage runs `clean_train_epochs`
(25) of them and the joint stage the rest, 75 (attack/inputaware.py, the
two training loops). `"total"` (the default) reads the cell's attack
`epochs` the same way: `fit_epochs` gives the joint stage `epochs -
mask_epochs` epochs, `mask_epochs` being the trigger's parameter, so the
CIFAR-10 grid's 100 epochs are BackdoorBench's 25 + 75. What counts is the
configured `mask_epochs`, even when the trigger's `max_mask_steps` cut the
mask stage short (a test and CPU-demonstration cap). A cell whose `epochs`
is not above `mask_epochs` is refused (ConfigError). `"joint"` takes the
cell's `epochs` as the number of joint epochs alone (25 + 100 in the
CIFAR-10 grid).

Learning rates. BackdoorBench's MultiStepLR milestones for the classifier
([100, 200, 300, 400]) and G ([200, 300, 400, 500]) all lie beyond its 75
joint epochs, so both rates are constant: `lr_schedule="constant"` (the
default). `lr_schedule="cosine"` anneals the classifier's rate per step to
zero as the suite's other attacks do (G's stays constant).

Where this module and the suite's other attacks or the reference part ways
(the reference's behaviour is the default wherever there is a choice):

- Which rows are backdoor rows. BackdoorBench makes the first
  int(pratio * batch) rows of every shuffled batch backdoor rows, so every
  image carries its trigger in some epochs and in none for good; below one
  row per batch it poisons one row with probability pratio * batch
  (`generalize_to_lower_pratio`). `backdoor_rows="per_batch"` (the default)
  does that with random rows of each batch, pratio being the poisoned
  fraction of the training set (the cell's poison rate).
  `backdoor_rows="indices"` poisons, as the suite's other attacks, the rows
  whose dataset index is in the seeded `poison_indices`: the same expected
  fraction of each batch, but always the same images. It is not equivalent
  here: the classifier then partly learns those images rather than their
  triggers. Measured on the synthetic 4-class 1x16x16 data (512 training
  images, poison rate 0.1, small CNN, 30 epochs, 8-channel generators):
  test ASR 0.79 with per-batch rows, 0.23 with fixed indices, whose own
  images reach 0.61 against 0.20 for the other training images.
  With fixed indices a batch without poisoned rows trains the classifier
  only.
- Cross rows: BackdoorBench takes as many as the backdoor rows, the next
  rows of the batch, with triggers from images of a second, independently
  shuffled loader. Here `cross_ratio` (default 1: as many as the backdoor
  rows of the batch, which is the original's p_cross 0.1 at poison rate
  0.1) times the batch's backdoor rows are drawn at random among its
  non-poisoned rows, each with the trigger of another, random image of the
  same batch.
- Units of the diversity term: BackdoorBench measures both distances on
  dataset-normalised images and patterns, here in pixels. Their ratio is
  unchanged for one channel or equal channel stds (CIFAR-10's differ by
  under 8 %).
- Augmentation: BackdoorBench's loaders augment the images and G, M then
  act on the augmented batch, so the default `augment_first=True` runs the
  data module's `augment` before poisoning. `augment_first=False` poisons
  first and augments the triggered images, as the suite's other attacks do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from benchmark.errors import ConfigError
from benchmark.extension.schema import Momentum, NonNegativeFloat, OpenUnitInterval, PositiveFloat
from benchmark.triggers.input_aware import InputAwareTrigger, mix, rms_distance
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackModule, AttackPreset, per_batch_count


@dataclass
class JointBatch:
    """A batch as the classifier sees it, and where each kind of row is."""
    images: torch.Tensor
    labels: torch.Tensor
    diversity: torch.Tensor       # G's diversity loss (0-dim; 0 without backdoor rows)
    backdoor_rows: torch.Tensor   # batch positions relabelled to the target
    cross_rows: torch.Tensor      # batch positions with another image's trigger
    cross_sources: torch.Tensor   # the image whose trigger each cross row carries


class InputAwareAttackModule(AttackModule):
    def __init__(self, model, num_classes: int, trigger: InputAwareTrigger, poison_indices: torch.Tensor,
                 num_train: int, target_label: int = 0, lr: PositiveFloat = 0.01, momentum: Momentum = 0.9,
                 weight_decay: NonNegativeFloat = 5e-4, augment=None, generator_lr: PositiveFloat = 0.01,
                 generator_betas: tuple[OpenUnitInterval, OpenUnitInterval] = (0.5, 0.9),
                 cross_ratio: NonNegativeFloat = 1.0, lr_schedule: Literal["constant", "cosine"] = "constant",
                 augment_first: bool = True, backdoor_rows: Literal["per_batch", "indices"] = "per_batch",
                 generator_gradients: Literal["accumulate", "per_step"] = "accumulate",
                 epoch_budget: Literal["total", "joint"] = "total"):
        super().__init__(model, num_classes, trigger, poison_indices, num_train, target_label, lr, momentum,
                         weight_decay, augment)
        if not isinstance(trigger, InputAwareTrigger):
            raise ValueError(f"InputAwareAttackModule trains an InputAwareTrigger's generator, "
                             f"got {type(trigger).__name__}")
        # Two optimisers of different kinds (SGD for the classifier, Adam for G).
        self.automatic_optimization = False
        # The trigger's own G: registered so it moves with the module, trained in place.
        self.pattern_generator = trigger.pattern_network
        #: G's accumulated gradients read from a checkpoint, put back at train start
        self._restored_generator_grads: list[torch.Tensor | None] | None = None

    # ---- epochs ---------------------------------------------------------------------------
    def fit_epochs(self, cell_epochs: int) -> int:
        """Joint-stage epochs for the cell's attack `epochs` (see the module
        docstring, `epoch_budget`)."""
        if self.hparams.epoch_budget == "joint":
            return int(cell_epochs)
        mask_epochs = self.trigger.mask_epochs
        if cell_epochs <= mask_epochs:
            raise ConfigError(f"input_aware: epochs={cell_epochs} is not allowed with mask_epochs={mask_epochs}; "
                              f"epochs counts mask + joint epochs (epoch_budget 'total'), so it must be more than "
                              f"{mask_epochs}")
        return int(cell_epochs) - mask_epochs

    # ---- one batch ------------------------------------------------------------------------
    def joint_batch(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> JointBatch:
        """Backdoor and cross rows of a batch, with gradients through G."""
        trigger, n = self.trigger, len(x)
        if self.hparams.backdoor_rows == "indices":
            poisoned = self.poison_mask[idx]
        else:
            poisoned = self.per_batch_rows(n, x.device)
        backdoor_rows = torch.nonzero(poisoned).flatten()
        num_backdoor = len(backdoor_rows)
        empty = backdoor_rows[:0]
        if num_backdoor == 0:
            return JointBatch(x, y, x.new_zeros(()), empty, empty, empty)
        clean_rows = torch.nonzero(~poisoned).flatten()
        num_cross = min(round(self.hparams.cross_ratio * num_backdoor), len(clean_rows))
        cross_rows = clean_rows[torch.randperm(len(clean_rows), device=x.device)[:num_cross]]
        # Slot k supplies cross row k (k < num_cross) and is backdoor row k's
        # partner in the diversity loss (k < num_backdoor): a random image of
        # the batch other than those two rows.
        slots = max(num_backdoor, num_cross)
        scores = torch.rand(slots, n, device=x.device)
        slot = torch.arange(slots, device=x.device)
        scores[slot[:num_backdoor], backdoor_rows] = -1.0
        scores[slot[:num_cross], cross_rows] = -1.0
        sources = scores.argmax(dim=1)

        # G in its training mode (BatchNorm on each call's own batch, as the
        # reference calls G on the backdoor and cross images separately).
        x_backdoor, x_sources = x[backdoor_rows], x[sources]
        patterns_backdoor, patterns_sources = trigger.patterns(x_backdoor), trigger.patterns(x_sources)
        masks = trigger.masks(torch.cat([x_backdoor, x_sources]))
        masks_backdoor, masks_sources = masks[:num_backdoor], masks[num_backdoor:]

        images, labels = x.clone(), y.clone()
        images[backdoor_rows] = mix(x_backdoor, patterns_backdoor, masks_backdoor).to(x.dtype)
        labels[backdoor_rows] = self.hparams.target_label
        images[cross_rows] = mix(x[cross_rows], patterns_sources[:num_cross], masks_sources[:num_cross]).to(x.dtype)

        if n > 1:
            partners = x_sources[:num_backdoor]
            diversity = (rms_distance(x_backdoor, partners)
                         / (rms_distance(patterns_backdoor, patterns_sources[:num_backdoor]) + trigger.epsilon)).mean()
        else:  # a one-image batch has no other image to compare with
            diversity = x.new_zeros(())
        return JointBatch(images, labels, diversity, backdoor_rows, cross_rows[:num_cross], sources[:num_cross])

    def per_batch_rows(self, n: int, device) -> torch.Tensor:
        """BackdoorBench's choice: int(rate * n) rows of every (shuffled)
        batch, rate = the poisoned fraction of the training set; below one
        row per batch, one row with probability rate * n
        (`generalize_to_lower_pratio`)."""
        count = per_batch_count(self.poisoned_fraction(), n)
        rows = torch.zeros(n, dtype=torch.bool, device=device)
        rows[torch.randperm(n, device=device)[:count]] = True
        return rows

    def prepare_batch(self, x, y, idx):
        batch = self.joint_batch(x, y, idx)
        return batch.images, batch.labels

    def on_fit_start(self):
        # Lightning keeps each module's mode; G trains with batch statistics,
        # as the reference's netG.train() (M stays frozen in eval mode).
        self.pattern_generator.train()
        if self.hparams.generator_gradients == "accumulate" and "16" in str(self.trainer.precision) \
                and "bf16" not in str(self.trainer.precision):
            raise ConfigError(f"input_aware: precision {self.trainer.precision} is not allowed with "
                              f"generator_gradients='accumulate' (its gradient scaler rescales the accumulated "
                              f"gradient); use bf16 or fp32, or generator_gradients='per_step'")

    def on_train_start(self):
        # The joint stage starts with no gradient on G (the reference's G is
        # first back-propagated here), or with the sum a checkpoint saved.
        # Not in on_fit_start: the trainer clears every gradient after it.
        restored = self._restored_generator_grads
        self._restored_generator_grads = None
        for i, p in enumerate(self.pattern_generator.parameters()):
            grad = restored[i] if restored is not None else None
            p.grad = None if grad is None else grad.to(device=p.device, dtype=p.dtype)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.hparams.generator_gradients == "accumulate":
            checkpoint["pattern_generator_grads"] = [
                None if p.grad is None else p.grad.detach().clone() for p in self.pattern_generator.parameters()]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        grads = checkpoint.get("pattern_generator_grads")
        if self.hparams.generator_gradients != "accumulate" or grads is None:
            return
        count = len(list(self.pattern_generator.parameters()))
        if len(grads) != count:
            raise ValueError(f"input_aware: the checkpoint holds {len(grads)} generator gradients, "
                             f"the generator has {count} parameters")
        self._restored_generator_grads = list(grads)

    def on_fit_end(self):
        self.pattern_generator.eval()

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        augment = self.augment if self.augment is not None else (lambda images: images)
        if self.hparams.augment_first:
            x = augment(x)
        joint = self.joint_batch(x, y, idx)
        images = joint.images if self.hparams.augment_first else augment(joint.images)
        ce = F.cross_entropy(self(images), joint.labels)
        loss = ce + self.trigger.lambda_div * joint.diversity
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{type(self).__name__}: loss became {loss.item()} at step {self.global_step}")
        classifier_opt, generator_opt = self.optimizers()
        classifier_opt.zero_grad()
        if self.hparams.generator_gradients == "per_step":
            generator_opt.zero_grad()
        # "accumulate": G's .grad keeps the sum of every joint-stage gradient
        # (the reference never zeroes it); this backward adds the batch's.
        self.manual_backward(loss)
        classifier_opt.step()
        # Without backdoor rows this batch adds nothing to G's gradient: with
        # "per_step" G has none and does not move; with "accumulate" Adam
        # steps on the sum so far, as the reference does.
        generator_opt.step()
        schedule = self.lr_schedulers()
        if schedule is not None:
            schedule.step()
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/ce", ce.detach(), on_step=False, on_epoch=True)
        self.log("train/diversity", joint.diversity.detach(), on_step=False, on_epoch=True)
        return loss.detach()

    def configure_optimizers(self):
        h = self.hparams
        classifier_opt = torch.optim.SGD(self.trainable_parameters(), lr=h.lr, momentum=h.momentum,
                                         weight_decay=h.weight_decay)
        generator_opt = torch.optim.Adam(self.pattern_generator.parameters(), lr=h.generator_lr,
                                         betas=tuple(h.generator_betas))
        if h.lr_schedule == "constant":
            return [classifier_opt, generator_opt]
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(classifier_opt, T_max=steps)
        return [classifier_opt, generator_opt], [schedule]  # stepped per batch in training_step


ATTACKS.register("input_aware")(AttackPreset(name="input_aware", trigger="input_aware",
                                             module=InputAwareAttackModule))
