"""The CLIP family's stages `train` (the clean model f_C: the pretrained
CLIP, or one trained from scratch on the clean pairs) and `attack` (f_A: f_C
fine-tuned on pairs of which the seeded poisoned ones carry the trigger and
a caption naming the target class).

The attack stage's metrics hold, beside C-Acc and the zero-shot ASR on the
triggered test set, `poisoned_train_asr`: the same ASR on the poisoned
training pairs themselves (their images with the trigger, the non-target
ones, scored by the zero-shot classifier for the target). A low test ASR
with a high one here means the backdoor was fitted but did not generalise
to fresh trigger draws; both low means it was not fitted."""
from __future__ import annotations

import torch

import benchmark.models.clip_model as clip_model_module
import benchmark.training as training_module
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob
from benchmark.cell.stages.training import CLEAN_LABEL
from benchmark.models.clip_model import weights_identity
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.triggers import TRIGGERS
from lightning_modules.base import BackdoorStage
from lightning_modules.clip import base as clip_base_module
from lightning_modules.clip.attacks import CLIP_ATTACKS
from lightning_modules.clip.base import ClipStage
from lightning_modules.clip.poisoning import ClipPoisoning

# f_C's data order is its own (a separate run), offset from f_A's seed
CLEAN_ORDER_OFFSET = 1_000_003


def pretrain_spec(ctx: CellContext) -> dict | None:
    s = ctx.spec
    if s.pretrained is not None:
        return None  # f_C is the given weights, not trained here
    return {"epochs": s.pretrain_epochs, "lr": s.pretrain_lr, "batch_size": s.pretrain_batch_size,
            "warmup_steps": s.pretrain_warmup, "seed": s.seed}


def poison_spec(ctx: CellContext) -> dict:
    s = ctx.spec
    return {"epochs": s.poison_epochs, "lr": s.poison_lr, "batch_size": s.poison_batch_size,
            "warmup_steps": s.poison_warmup, "seed": s.seed}


def clean_job(ctx: CellContext) -> StageJob:
    model_spec = ctx.model_spec()
    # a missing checkpoint file fails here, at planning
    config = {"attack": "clean", "weights": weights_identity(ctx.spec.pretrained), "data": ctx.dm.identity(),
              "model": model_spec, "train": pretrain_spec(ctx),
              "code": code_fingerprint(ClipStage, clip_base_module, clip_model_module,
                                       type(ctx.dm), training_module)}
    return StageJob("train", CLEAN_LABEL, config, {}, lambda inputs: run_clean(ctx, model_spec))


def run_clean(ctx: CellContext, model_spec: dict) -> tuple[dict, dict]:
    s, dm = ctx.spec, ctx.dm
    ctx.seed_everything()
    model = ctx.family.new_model(ctx, model_spec, pretrained=s.pretrained)
    train = pretrain_spec(ctx)
    if train is not None:
        module = ClipStage(model, model.tokenize(dm.captions), epochs=train["epochs"],
                           batch_size=train["batch_size"], lr=train["lr"], warmup_steps=train["warmup_steps"])
        loader = dm.loader(dm.train_set(), shuffle=True, batch_size=train["batch_size"],
                           seed=s.seed + CLEAN_ORDER_OFFSET)
        ctx.trainers.fit(module, loader, train["epochs"])
        model = module.model
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.clip.state_dict().items()}
    return ctx.evaluate(ctx.classifier_view(model), poisoned=False), tensors


def attack_job(ctx: CellContext, clean: StageJob) -> StageJob:
    s = ctx.spec
    model_spec = ctx.model_spec()
    config = {"attack": s.attack, "trigger": ctx.trigger_config, "poison_rate": s.poison_rate,
              "poison_selection": ctx.poison_selection, "target_label": s.target_label,
              "data": ctx.dm.identity(), "model": model_spec, "train": poison_spec(ctx),
              "code": code_fingerprint(ClipPoisoning, clip_base_module, clip_model_module,
                                       TRIGGERS.get(ctx.preset.trigger), CLIP_ATTACKS.origin(s.attack),
                                       type(ctx.dm), training_module)}
    return StageJob("attack", s.attack, config, {"clean": clean}, lambda inputs: run_attack(ctx, inputs))


def run_attack(ctx: CellContext, inputs) -> tuple[dict, dict]:
    s, dm = ctx.spec, ctx.dm
    ctx.seed_everything()
    model = ctx.load_trainable(inputs["clean"])
    train = poison_spec(ctx)
    module = ClipPoisoning(model, model.tokenize(training_captions(ctx)), ctx.trigger, poison_mask(ctx),
                           epochs=train["epochs"], batch_size=train["batch_size"], lr=train["lr"],
                           warmup_steps=train["warmup_steps"])
    ctx.trainers.fit(module, dm.loader(dm.train_set(), shuffle=True, batch_size=train["batch_size"], seed=s.seed),
                     train["epochs"])
    classifier = ctx.classifier_view(module.model)
    metrics = ctx.evaluate(classifier)
    metrics["poisoned_pairs"] = int(len(ctx.poison_idx))
    metrics["poisoned_train_asr"] = poisoned_train_asr(ctx, classifier)
    return metrics, module.export_weights()


def poisoned_train_asr(ctx: CellContext, classifier) -> float | None:
    """Zero-shot ASR on the poisoned training pairs' images with the trigger
    (pairs of the target class left out, as in the test ASR; unlabelled web
    pairs all count). None when every poisoned pair is of the target class."""
    dm, target = ctx.dm, ctx.spec.target_label
    idx = ctx.poison_idx
    idx = idx[dm.train_labels[idx] != target]
    if len(idx) == 0:
        return None
    data = dm.attacker_set(idx, ctx.trigger)
    stage = BackdoorStage(classifier, dm.num_classes, target)
    return ctx.trainers.evaluate(stage, poisoned_loader=dm.loader(data))["test/asr"]


def training_captions(ctx: CellContext) -> list[str]:
    """Every training pair's caption, the poisoned ones replaced by a
    caption naming the target class."""
    captions = list(ctx.dm.captions)
    replaced = ctx.dm.target_captions(ctx.poison_idx, ctx.spec.target_label, ctx.spec.seed)
    for i, caption in zip(ctx.poison_idx.tolist(), replaced):
        captions[i] = caption
    return captions


def poison_mask(ctx: CellContext) -> torch.Tensor:
    mask = torch.zeros(ctx.dm.num_train, dtype=torch.bool)
    mask[ctx.poison_idx] = True
    return mask
