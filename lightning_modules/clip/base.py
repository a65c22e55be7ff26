"""`ClipStage`: contrastive training of a `ClipModel` on image–caption pairs,
the base of CLIP poisoning and of every multimodal defense.

A batch is (images, labels, dataset indices), as everywhere in the suite;
the captions travel as a token table indexed by the batch's indices (held on
the device, not copied per step), so poisoning replaces a pair's caption by
replacing its row. Loss: the symmetric CLIP loss (CE over image->text and
text->image logits, logits = exp(logit_scale) * cosine). Optimiser and
schedule follow CleanCLIP (nishadsinghi/CleanCLIP src/main.py, src/parser.py,
src/scheduler.py, src/train.py): AdamW (betas 0.9/0.999, eps 1e-8, weight
decay 0.1 on every parameter except those whose name contains bn, ln, bias or
logit_scale), linear warm-up to the base lr over `warmup_steps` then cosine
decay to 0 over the remaining steps, stepped per batch, and logit_scale
clamped to [0, ln 100] after every step.
"""
from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F

from benchmark.models.clip_model import ClipModel
from benchmark.extension.schema import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

#: CleanCLIP's clamp of the learned temperature: exp(4.6052) = 100
MAX_LOGIT_SCALE = 4.6052
#: parameter names kept out of weight decay (CleanCLIP src/main.py)
NO_DECAY_MARKERS = ("bn", "ln", "bias", "logit_scale")


def clip_loss(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching pairs (row i <-> row i);
    embeddings are L2-normalised, `logit_scale` is the log temperature."""
    logits = logit_scale.exp() * image_embeddings @ text_embeddings.t()
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def in_modal_loss(embeddings: torch.Tensor, augmented: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """InfoNCE of each embedding against its augmented view (CleanCLIP's
    in-modal term, one direction: logits = exp(scale) * x @ x_aug^T)."""
    logits = logit_scale.exp() * embeddings @ augmented.t()
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """CleanCLIP's schedule as a multiple of the base lr: (step + 1) / warmup
    during warm-up, then 0.5 * (1 + cos(pi * e / es)) with e the steps since
    warm-up and es the steps after it."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / remaining))


class ClipStage(L.LightningModule):
    object_args: tuple[str, ...] = ("model", "tokens", "trigger", "poison_mask", "captions")

    def __init__(self, model: ClipModel, tokens: torch.Tensor, epochs: NonNegativeInt = 10,
                 batch_size: PositiveInt = 128, lr: PositiveFloat = 1e-6, warmup_steps: NonNegativeInt = 50,
                 weight_decay: NonNegativeFloat = 0.1, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__()
        self.save_hyperparameters(ignore=list(self.object_args))
        self.model = model
        # the captions of the training pairs, by dataset index (int32: half the
        # memory of int64 for 500K x 77 tokens; widened per batch)
        self.register_buffer("tokens", tokens.to(torch.int32), persistent=False)

    def config(self) -> dict:
        return dict(self.hparams)

    # ---- training -----------------------------------------------------------------
    def prepare_batch(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook: the images and caption tokens the loss sees (poisoning lives here)."""
        return x, self.tokens[idx]

    def training_loss(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return clip_loss(self.model.encode_image(x), self.model.encode_text(tokens), self.model.logit_scale)

    def training_step(self, batch, batch_idx):
        x, _, idx = batch
        x, tokens = self.prepare_batch(x, idx)
        loss = self.training_loss(x, tokens)
        # on a CPU a diverged loss fails at once; on a GPU checking would
        # wait for the device at every step
        if not loss.is_cuda and not torch.isfinite(loss):
            raise FloatingPointError(f"{type(self).__name__}: loss became {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def trainable_parameters(self):
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def configure_optimizers(self):
        h = self.hparams
        named = self.trainable_parameters()
        no_decay = [p for n, p in named if any(m in n for m in NO_DECAY_MARKERS)]
        decay = [p for n, p in named if not any(m in n for m in NO_DECAY_MARKERS)]
        opt = torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                                 {"params": decay, "weight_decay": h.weight_decay}],
                                lr=h.lr, betas=(h.beta1, h.beta2), eps=h.eps)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, h.warmup_steps, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def export_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.clip.state_dict().items()}
