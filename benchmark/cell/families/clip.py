"""The CLIP family: `ClipCellSpec`, its fields and checks, and the hooks the
cell asks of it. A CLIP cell is caption dataset (pairs + a labelled
zero-shot set) x CLIP architecture x attack x seed.

Defaults follow the paper's setting as far as it is known (METHODS.md
section 7): the clean model f_C is the pretrained CLIP (`pretrained`),
poisoned by fine-tuning on pairs of which 0.3 % carry the trigger and a
target-class caption (CleanCLIP's 1,500 of 500K), 10 epochs at lr 1e-6,
batch 128 (BadCLIP's README), 50 warm-up steps (the CleanCLIP paper).
Without pretrained weights f_C is trained from scratch on the clean pairs
with CleanCLIP's pre-training defaults (src/parser.py: lr 5e-4, batch 128,
10,000 warm-up steps, 64 epochs). The defender holds 20 % of the pairs
clean (100K of CleanCLIP's 500K, its issue #12), never a poisoned pair
(CleanCLIP fine-tunes on a separate clean set; `clean_subset: any` gives
the classifiers' rule).

Its classifier view is the `ZeroShotClassifier`: the image tower against
the zero-shot classes' template-averaged text embeddings of the same model,
so the shared stages measure CLIP unchanged. Zero-shot ASR: the fraction of
triggered non-target test images it assigns to the target class; C-Acc: its
top-1 accuracy on the clean labelled test set. The training stages are
`benchmark/cell/stages/clip_training.py`.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from typing import Literal

import torch

from benchmark.cell.family import ModelFamily
from benchmark.cell.spec import SpecBase, _field
from benchmark.errors import ConfigError
from benchmark.extension.schema import Fraction, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, \
    validate_params
from benchmark.models.clip_model import ClipModel, ZeroShotClassifier, build_clip
from benchmark.triggers import TRIGGER_RUNNER_ARGS, TRIGGERS
from datamodules.tensor_dataset import IndexedImages
from lightning_modules.clip.attacks import CLIP_ATTACKS
from lightning_modules.clip.defenses import CLIP_DEFENSES

#: __init__ arguments of a CLIP defense the runner supplies
CLIP_DEFENSE_RUNNER_ARGS = ("model", "captions", "seed")
#: the discriminator a grid and the sweep worker read from a spec's dict
KIND = "clip"


@dataclass
class ClipCellSpec(SpecBase):
    dataset: str = _field("fashion_mnist_captions", "caption dataset: fashion_mnist_captions or captions "
                                                    "(your CSV + zero-shot folder, see data_params)")
    arch: str = _field("tiny", "CLIP architecture: tiny or an open_clip model name (RN50, ViT-B-32, ...)")
    attack: str = _field("badnets", "CLIP attack: badnets, blended, sig, trojanvqa")
    defenses: tuple[str, ...] = _field(("cleanclip", "ft"), "CLIP defenses (cleanclip, ft, or plugins)")
    poison_rate: OpenUnitInterval = _field(0.003, "fraction of the pairs poisoned (CleanCLIP: 1,500 of 500K)")
    poison_selection: Literal["all", "non_target"] = _field(
        "all", "draw poisoned pairs from all pairs, or from non-target ones (needs labelled pairs)")
    target_label: NonNegativeInt = _field(0, "the target class (an index of the zero-shot classes)")
    clean_ratio: Fraction = _field(0.2, "the defender's clean pairs, fraction of the training pairs")
    clean_subset: Literal["any", "non_poisoned"] = _field(
        "non_poisoned", "where the defender's clean pairs are drawn from: never-poisoned pairs (CleanCLIP's "
                        "separate clean set) or any pair (its clean caption and pixels)")
    attacker_samples: Literal["non_target", "poisoned"] = _field(
        "non_target", "the re-activation attacker's samples: non-target poisoned pairs' images, or the "
                      "poisoned pairs as drawn")
    controls: bool = _field(False, "run the noise-robustness and feature-CKA controls")
    pretrained: str | None = _field(None, "f_C's weights: a local checkpoint file, an open_clip hub tag "
                                          "(needs a network), or none (trained from scratch on the clean pairs)")
    model_params: dict = _field({}, "JSON open_clip config overrides (vision_cfg, text_cfg, embed_dim)")
    pretrain_epochs: PositiveInt = _field(64, "epochs of f_C when trained from scratch")
    pretrain_lr: PositiveFloat = _field(5e-4, "lr of f_C when trained from scratch")
    pretrain_batch_size: PositiveInt = _field(128, "batch of f_C when trained from scratch")
    pretrain_warmup: NonNegativeInt = _field(10000, "warm-up steps of f_C when trained from scratch")
    poison_epochs: PositiveInt = _field(10, "epochs of the poisoning fine-tune")
    poison_lr: PositiveFloat = _field(1e-6, "lr of the poisoning fine-tune")
    poison_batch_size: PositiveInt = _field(128, "batch of the poisoning fine-tune")
    poison_warmup: NonNegativeInt = _field(50, "warm-up steps of the poisoning fine-tune")

    kind = KIND
    label = "clip cell"

    def validate_family(self) -> None:
        from datamodules import DATASETS
        from datamodules.captions import CaptionDataModule

        if not issubclass(DATASETS.get(self.dataset), CaptionDataModule):
            captioned = [n for n in DATASETS.names() if issubclass(DATASETS.get(n), CaptionDataModule)]
            raise ConfigError(f"dataset {self.dataset!r} has no captions; a CLIP cell needs a caption dataset: "
                              f"{', '.join(captioned)}")
        attack = CLIP_ATTACKS.get(self.attack)
        self.trigger_params = validate_params(f"trigger {attack.trigger!r}", TRIGGERS.get(attack.trigger),
                                              self.trigger_params, TRIGGER_RUNNER_ARGS)
        if "none" in self.defenses:
            raise ConfigError("'none' is not a CLIP defense: the backdoored row is always reported")
        if self.retunings:
            raise ConfigError("weight-space re-activation (retunings) is not available for CLIP cells: its "
                              "retuning set is image-label pairs; leave retunings empty")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def class_prompts(ctx) -> list[list[str]]:
    """Each zero-shot class's prompts: its name in every template."""
    return [[t.format(name) for t in ctx.dm.templates] for name in ctx.dm.class_names]


class ClipFamily(ModelFamily):
    kind = KIND
    name_prefix = "clip/"
    defense_label = "CLIP defense"
    spec_class = ClipCellSpec
    attacks = CLIP_ATTACKS
    defenses = CLIP_DEFENSES
    defense_runner_args = CLIP_DEFENSE_RUNNER_ARGS
    gpu_eval_batch_size = 1024
    # a CLIP attack's options are its trigger's (it has no training module of its own)
    attack_options_field = "trigger_params"

    def defense_module(self, ctx, name: str, model, data_args: dict):
        params = dict(ctx.spec.defense_params.get(name, {}))
        cls = CLIP_DEFENSES.get(name)
        if "seed" in inspect.signature(cls).parameters:
            params["seed"] = ctx.spec.seed
        try:
            return cls(model, **data_args, **params)
        except TypeError as exc:
            raise ConfigError(f"bad parameter for CLIP defense {name!r}: {exc}") from None

    def defender_data(self, ctx, planning: bool = False):
        """The clean subset's images at positions 0..n-1 and their own
        captions: no poisoned caption, no dataset index to look one up by."""
        if planning:  # a module's parameters do not depend on the captions
            return None, {"captions": ["a photo."]}
        dm, idx = ctx.dm, ctx.clean_idx
        images = IndexedImages(dm.train_images[idx], dm.train_labels[idx], torch.arange(len(idx)))
        return images, {"captions": [dm.captions[i] for i in idx.tolist()]}

    def model_spec(self, ctx, arch: str) -> dict:
        """The architecture, the data's image geometry and the zero-shot head
        (class names and templates, by hash): everything a stored CLIP's
        classifier view depends on besides its weights."""
        c, h, _ = ctx.dm.image_shape
        return {"arch": arch, "family": "clip", "overrides": ctx.spec.model_params,
                "image_size": h, "in_channels": c,
                "zero_shot": _digest([list(ctx.dm.class_names), list(ctx.dm.templates)])}

    def new_model(self, ctx, model_spec: dict, device=None, pretrained: str | None = None) -> ClipModel:
        m = model_spec
        return build_clip(m["arch"], m["image_size"], m["in_channels"], pretrained=pretrained,
                          overrides=m["overrides"], device=device or "cpu")

    def load_weights(self, model: ClipModel, tensors: dict) -> None:
        model.clip.load_state_dict(tensors, strict=True)

    def classifier_view(self, ctx, model: ClipModel) -> ZeroShotClassifier:
        view = ZeroShotClassifier(model, class_prompts(ctx))
        return view if model_on_meta(model) else view.to(ctx.trainers.device)

    def plan_model(self, ctx, model_spec: dict) -> ZeroShotClassifier:
        # one per model description: the text embeddings of every prompt are
        # built with it
        return ctx.planned(("plan clip", model_spec), lambda: super(ClipFamily, self).plan_model(ctx, model_spec))

    def plan_trainable(self, ctx, model_spec: dict) -> ClipModel:
        return self.plan_model(ctx, model_spec).clip

    def plan_models(self, ctx, plan):
        from benchmark.cell.stages import clip_training

        clean = plan.add(clip_training.clean_job(ctx))
        ctx.attack_job = plan.add(clip_training.attack_job(ctx, clean))
        return clean, ctx.attack_job


def model_on_meta(model: torch.nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


FAMILY = ClipFamily()
