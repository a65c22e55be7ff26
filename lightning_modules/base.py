"""`BackdoorStage`: the classifier, the one evaluation protocol of the suite
(C-Acc, ASR, RA), optimiser defaults and weight export.

Subclasses change what a training batch looks like (`prepare_batch`), the
loss (`training_loss`), the trainable parameters, or how evaluation inputs
are formed (`eval_inputs`); none re-implements evaluation.
"""
from __future__ import annotations

from typing import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from benchmark.measures.metrics import AttackSuccessRate, RobustAccuracy

CLEAN, POISONED = "clean", "poisoned"


class BackdoorStage(L.LightningModule):
    #: __init__ arguments that are objects rather than configuration
    object_args: tuple[str, ...] = ("model", "augment", "trigger", "poison_indices")

    def __init__(self, model: nn.Module, num_classes: int, target_label: int = 0,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        # Objects (models, functions, triggers, index tensors) are not config;
        # everything else a subclass's __init__ takes becomes its recorded config.
        self.save_hyperparameters(ignore=list(self.object_args))
        self.model = model
        self.augment = augment
        self.clean_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.asr = AttackSuccessRate(target_label)
        self.ra = RobustAccuracy(target_label)
        self.eval_roles: Sequence[str] = (CLEAN, POISONED)

    # ---- configuration recorded in the store ----------------------------------
    def config(self) -> dict:
        return {k: v for k, v in self.hparams.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ---- training -----------------------------------------------------------------
    def prepare_batch(self, x, y, idx):
        """Hook: turn a data batch into training inputs (poisoning lives here)."""
        return x, y

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(x), y)

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        x, y = self.prepare_batch(x, y, idx)
        if self.augment is not None:
            x = self.augment(x)
        loss = self.training_loss(x, y)
        self.check_finite(loss)
        self.log_training_loss(loss)
        return loss

    def log_training_loss(self, loss: torch.Tensor) -> None:
        """`train/loss` at the steps the logger writes (every
        `log_every_n_steps`) and `train/loss_epoch`, the epoch's mean, at its
        last batch. Calling `self.log` every step cost about 2 ms of
        Lightning bookkeeping per step (7 % of a small-CNN CPU step,
        `make bench`); the running sum stays on the device."""
        trainer = self.trainer
        held = getattr(self, "_loss_sum", None)
        self._loss_sum = loss.detach() if held is None else held + loss.detach()
        self._loss_steps = getattr(self, "_loss_steps", 0) + 1
        if trainer.global_step % trainer.log_every_n_steps == 0:
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        if trainer.is_last_batch:
            self.log("train/loss_epoch", self._loss_sum / self._loss_steps, on_step=False, on_epoch=True)
            self._loss_sum, self._loss_steps = None, 0

    #: on a GPU, training steps between two reads of the non-finite flag
    FINITE_CHECK_STEPS = 256

    def check_finite(self, loss: torch.Tensor) -> None:
        """Fail on a diverged loss. On a CPU at once; on a GPU the test is
        folded into a device flag read every FINITE_CHECK_STEPS steps and at
        the end of each epoch (`on_train_batch_end`): reading it every step
        would make the host wait for the GPU at every step."""
        if not loss.is_cuda:
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{type(self).__name__}: loss became {loss.item()} at step "
                                         f"{self.global_step}")
            return
        finite = torch.isfinite(loss.detach())
        held = getattr(self, "_all_finite", None)
        self._all_finite = finite if held is None else held & finite

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        held = getattr(self, "_all_finite", None)
        if held is not None and ((batch_idx + 1) % self.FINITE_CHECK_STEPS == 0 or self.trainer.is_last_batch):
            self._all_finite = None
            if not bool(held):
                raise FloatingPointError(f"{type(self).__name__}: loss became non-finite within the "
                                         f"{self.FINITE_CHECK_STEPS} steps before step {self.global_step}")

    def trainable_parameters(self):
        return self.model.parameters()

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.trainable_parameters(), lr=self.hparams.lr,
                              momentum=self.hparams.momentum, weight_decay=self.hparams.weight_decay)
        if self.hparams.get("lr_schedule", "cosine") == "constant":
            return opt
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- evaluation: the single protocol --------------------------------------------
    def eval_inputs(self, x: torch.Tensor, role: str) -> torch.Tensor:
        """Hook: inputs as the evaluated model sees them (re-activation adds delta)."""
        return x

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        x, y, _ = batch
        role = self.eval_roles[dataloader_idx]
        preds = self(self.eval_inputs(x, role)).argmax(dim=1)
        if role == CLEAN:
            self.clean_acc.update(preds, y)
        else:
            self.asr.update(preds, y)
            self.ra.update(preds, y)

    def on_test_epoch_end(self):
        if CLEAN in self.eval_roles:
            self.log("test/clean_acc", self.clean_acc.compute())
        if POISONED in self.eval_roles:
            self.log("test/asr", self.asr.compute())
            self.log("test/ra", self.ra.compute())
        for metric in (self.clean_acc, self.asr, self.ra):
            metric.reset()

    # ---- export -------------------------------------------------------------------------
    def export_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
