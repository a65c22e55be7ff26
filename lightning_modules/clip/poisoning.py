"""`ClipPoisoning`: CLIP trained (or fine-tuned) on image–caption pairs of
which the rows in `poison_mask` carry the trigger on the image and a caption
naming the target class (CleanCLIP backdoor/create_backdoor_data.py: a
random ImageNet template with the target's name). The caption swap is done
once, in the token table the runner builds; the image trigger is applied
here, on the device, per batch."""
from __future__ import annotations

import torch

from benchmark.models.clip_model import ClipModel
from lightning_modules.clip.base import ClipStage


class ClipPoisoning(ClipStage):
    def __init__(self, model: ClipModel, tokens: torch.Tensor, trigger, poison_mask: torch.Tensor, **training):
        super().__init__(model, tokens, **training)
        self.trigger = trigger
        self.register_buffer("poison_mask", poison_mask.bool(), persistent=False)

    def prepare_batch(self, x, idx):
        poisoned = self.poison_mask[idx]
        if self.trigger is not None and getattr(self.trigger, "rowwise", False):
            # the whole batch triggered, the poisoned rows kept: no host sync
            x = torch.where(poisoned[:, None, None, None], self.trigger(x), x)
        elif self.trigger is not None and bool(poisoned.any()):
            x = x.clone()
            x[poisoned] = self.trigger.poison(x[poisoned], idx[poisoned])
        return x, self.tokens[idx]
