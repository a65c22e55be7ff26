"""`ClipDefenseModule`: the extension point of multimodal defenses.

A defense gets the poisoned CLIP model and the defender's clean pairs only:
their images come through the loader the runner builds over the clean subset
(re-indexed 0..n-1, so no dataset index of the poisoned data is visible), and
their captions as `captions` (strings, aligned with those positions). It never
sees the trigger, the poisoned indices or a poisoned caption; the contract
test (tests/test_clip_defenses.py) proves it for every registered defense.

Subclass, decorate with ``@CLIP_DEFENSES.register("<name>")`` in a new file
of this package, and override what differs: the loss (`training_loss`), the
caption tokens (`__init__`), the trainable parameters, or one-off work
before/after training (`prepare(clean_set, fit)`, `finalize()`), as for the
classifier defenses. Defaults follow CleanCLIP's fine-tuning command
(nishadsinghi/CleanCLIP README: batch 64, 10 epochs, 50 warm-up steps,
lr 1e-5, AdamW with weight decay 0.1).
"""
from __future__ import annotations

from benchmark.models.clip_model import ClipModel
from benchmark.extension.schema import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.clip.base import ClipStage


class ClipDefenseModule(ClipStage):
    #: what the defense decided, recorded with its metrics
    report: dict

    def __init__(self, model: ClipModel, captions: list[str], epochs: NonNegativeInt = 10,
                 batch_size: PositiveInt = 64, lr: PositiveFloat = 1e-5, warmup_steps: NonNegativeInt = 50,
                 weight_decay: NonNegativeFloat = 0.1):
        super().__init__(model, model.tokenize(captions), epochs=epochs, batch_size=batch_size, lr=lr,
                         warmup_steps=warmup_steps, weight_decay=weight_decay)
        self.report = {}

    def prepare(self, clean_set, fit) -> None:
        """Hook: one-off work before the main fit (`fit(module, dataset)` trains)."""

    def finalize(self) -> None:
        """Hook: after training (fold masks, reset statistics, ...)."""
