"""Clean fine-tuning of CLIP: the multimodal contrastive loss alone on the
defender's clean pairs (CleanCLIP's fine-tuning command without --inmodal;
nishadsinghi/CleanCLIP README, src/train.py). Defaults: batch 64, 10 epochs,
lr 1e-5, 50 warm-up steps, AdamW weight decay 0.1."""
from lightning_modules.clip.defenses import CLIP_DEFENSES
from lightning_modules.clip.defenses.base import ClipDefenseModule


@CLIP_DEFENSES.register("ft")
class ClipFineTuning(ClipDefenseModule):
    pass
