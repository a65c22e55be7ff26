"""CleanCLIP (Bansal et al., ICCV 2023): fine-tune on clean pairs with
    w_clip * L_mm + w_in * L_in,
L_mm the symmetric CLIP loss and L_in = (InfoNCE(image, its augmented view)
+ InfoNCE(caption, its augmented caption)) / 2 (nishadsinghi/CleanCLIP
src/train.py `get_loss`; both weights 1 by default, src/parser.py).
Augmented views (src/data.py): each image through AutoAugment (ImageNet
policy, torchvision), drawn afresh per step; each caption augmented once,
when the data is built, by EDA (SR, RI, RS, RD at 0.1 each) whose synonyms
come from the WordNet 3.0 database on disk (benchmark/text), so it works
offline. Hyper-parameters: the README's command (batch 64, 10 epochs, 50
warm-up steps, lr 1e-5).

Deviation as an option: `text_operations` drops EDA operations (("rs", "rd")
needs no WordNet); the default is the reference's four.
"""
from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import v2

from benchmark.models.clip_model import ClipModel
from benchmark.extension.schema import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from benchmark.text.eda import EDA
from lightning_modules.clip.base import clip_loss, in_modal_loss
from lightning_modules.clip.defenses import CLIP_DEFENSES
from lightning_modules.clip.defenses.base import ClipDefenseModule

EdaOperation = Literal["sr", "ri", "rs", "rd"]


@CLIP_DEFENSES.register("cleanclip")
class CleanCLIP(ClipDefenseModule):
    def __init__(self, model: ClipModel, captions: list[str], epochs: NonNegativeInt = 10,
                 batch_size: PositiveInt = 64, lr: PositiveFloat = 1e-5, warmup_steps: NonNegativeInt = 50,
                 weight_decay: NonNegativeFloat = 0.1, clip_weight: NonNegativeFloat = 1.0,
                 inmodal_weight: NonNegativeFloat = 1.0,
                 text_operations: tuple[EdaOperation, ...] = ("sr", "ri", "rs", "rd"), seed: int = 0):
        super().__init__(model, captions, epochs, batch_size, lr, warmup_steps, weight_decay)
        augmented = EDA(operations=tuple(text_operations)).augment_all(list(captions), seed)
        self.register_buffer("augmented_tokens", model.tokenize(augmented).to(torch.int32), persistent=False)
        self.image_augment = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)

    def augment_images(self, x: torch.Tensor) -> torch.Tensor:
        """AutoAugment per image (a policy drawn per image, as the reference's
        per-sample dataset transform), on uint8 pixels as PIL would see them."""
        pixels = (x * 255).round().to(torch.uint8)
        views = torch.stack([self.image_augment(image) for image in pixels])
        return views.float().div(255)

    def training_step(self, batch, batch_idx):
        x, _, idx = batch
        h, model = self.hparams, self.model
        images = model.encode_image(torch.cat([x, self.augment_images(x)]))
        texts = model.encode_text(torch.cat([self.tokens[idx], self.augmented_tokens[idx]]))
        n = len(x)
        scale = model.logit_scale
        multimodal = clip_loss(images[:n], texts[:n], scale)
        inmodal = (in_modal_loss(images[:n], images[n:], scale) + in_modal_loss(texts[:n], texts[n:], scale)) / 2
        loss = h.clip_weight * multimodal + h.inmodal_weight * inmodal
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        self.log("train/inmodal_loss", inmodal.detach(), on_step=False, on_epoch=True)
        return loss
