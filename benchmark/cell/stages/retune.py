"""Weight-space re-activation (Min et al., NeurIPS 2024): stage `retune`
(a method of `lightning_modules.retuning` fine-tunes a copy of a model on
the attacker's retuning set; the retuned model's ASR is its P-ASR) and
stage `purify` (the control EP, exact purification: f_A fine-tuned on the
poisoned training samples with their true labels beside the clean subset).

The victim is loaded afresh from the store and the retuned weights are a
new artifact: the victim's stored weights are never written."""
from __future__ import annotations

import torch

import benchmark.training as training_module
import lightning_modules.retuning.exact_purification as ep_module
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob
from benchmark.errors import ConfigError
from benchmark.storage.fingerprint import code_fingerprint
from datamodules.tensor_dataset import IndexedImages, to_unit_float
from lightning_modules.retuning import RETUNINGS
from lightning_modules.retuning.exact_purification import NAME as EP_NAME, ExactPurification

#: the control's name: a row of the table and the key of its parameters in
#: `retuning_params`
EXACT_PURIFICATION = EP_NAME
# The retuning split is drawn on its own stream, apart from the poison, the
# defender's and the re-activation attacker's draws.
SPLIT_STREAM = 1_299_709


def label(method: str, model_label: str) -> str:
    return f"{method} vs {model_label}"


# ---- exact purification ---------------------------------------------------------------
def purification_module(ctx: CellContext, model):
    params = dict(ctx.spec.retuning_params.get(EXACT_PURIFICATION, {}))
    try:
        return ExactPurification(model, ctx.dm.num_classes, ctx.spec.target_label, ctx.dm.augment, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameter for {EXACT_PURIFICATION}: {exc}") from None


def purify_job(ctx: CellContext, attack: StageJob) -> StageJob:
    s = ctx.spec
    model_spec = attack.config["model"]
    params = ctx.planned(("purify", model_spec), lambda: purification_module(ctx, ctx.plan_trainable(model_spec))
                         .config())
    config = {"control": EXACT_PURIFICATION, "params": params, "clean_ratio": s.clean_ratio,
              "poison_rate": s.poison_rate, "poison_selection": ctx.poison_selection,
              "clean_subset": s.clean_subset, "seed": s.seed, "model": model_spec,
              "code": code_fingerprint(ExactPurification, ep_module, training_module)}
    return StageJob("purify", EXACT_PURIFICATION, config, {"attack": attack}, lambda inputs: run_purify(ctx, inputs))


def purification_set(ctx: CellContext) -> IndexedImages:
    """The defender's clean subset and every poisoned training sample with
    the trigger and its *true* label (what only EP may see)."""
    dm = ctx.dm
    poisoned = dm.attacker_set(ctx.poison_idx, ctx.trigger)  # triggered, true labels
    clean = dm.train_set(ctx.clean_idx)
    return IndexedImages(torch.cat([to_unit_float(clean.images), poisoned.images]),
                         torch.cat([clean.labels, poisoned.labels]), torch.cat([clean.indices, poisoned.indices]))


def run_purify(ctx: CellContext, inputs) -> tuple[dict, dict]:
    ctx.seed_everything()
    module = purification_module(ctx, ctx.load_trainable(inputs["attack"]))
    data = purification_set(ctx)
    loader = ctx.dm.loader(data, shuffle=True, batch_size=module.hparams.batch_size, seed=ctx.spec.seed)
    ctx.trainers.fit(module, loader, module.hparams.epochs)
    metrics = ctx.evaluate(ctx.classifier_view(module.model))
    metrics["samples"] = {"clean": len(ctx.clean_idx), "relabelled_poisoned": len(ctx.poison_idx)}
    return metrics, module.export_weights()


# ---- retuning ------------------------------------------------------------------------
def retuning_module(ctx: CellContext, method: str, model, params: dict | None = None):
    params = dict(ctx.spec.retuning_params.get(method, {}) if params is None else params)
    try:
        return RETUNINGS.get(method)(model, ctx.dm.num_classes, ctx.spec.target_label, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameter for weight-space re-activation {method!r}: {exc}") from None


def retune_job(ctx: CellContext, method: str, attack: StageJob, victim: StageJob, model_label: str) -> StageJob:
    s = ctx.spec
    model_spec = victim.config["model"]
    params = ctx.planned(("retune", method, model_spec), lambda: retuning_module(
        ctx, method, ctx.plan_trainable(model_spec)).config())
    config = {"method": method, "params": params, "attacker_samples": s.attacker_samples, "seed": s.seed,
              "model": model_spec,
              "code": code_fingerprint(RETUNINGS.get(method), RETUNINGS.origin(method), training_module)}
    # f_A is an input for the trigger's state (the poisoned samples carry it)
    return StageJob("retune", label(method, model_label), config, {"model": victim, "attack": attack},
                    lambda inputs: run_retune(ctx, method, inputs))


def retuning_set(ctx: CellContext, split_ratio: float, poison_num: int) -> IndexedImages:
    """`split_ratio` of the training set (seeded), clean images with true
    labels, the first `poison_num` replaced by poisoned non-target images
    with the trigger and the target label (SBP fine_tune/ft_poison.py)."""
    dm, s = ctx.dm, ctx.spec
    count = max(1, round(split_ratio * dm.num_train))
    poison_num = min(poison_num, count)
    poisoned = dm.attacker_indices(ctx.attacker_pool, poison_num, s.seed) if poison_num else ctx.poison_idx[:0]
    if len(poisoned) < poison_num:
        raise ConfigError(f"retuning: {poison_num} poisoned samples asked, the attacker holds {len(poisoned)}")
    # the clean rest of the split: never an image that is also among the
    # poisoned ones (the reference's poisoned images come from another file)
    order = torch.randperm(dm.num_train, generator=torch.Generator().manual_seed(s.seed + SPLIT_STREAM))
    order = order[~torch.isin(order, poisoned)]
    clean = order[:count - poison_num]
    clean_images = to_unit_float(dm.train_images[clean])
    images = torch.cat([dm.triggered(dm.train_images[poisoned], ctx.trigger), clean_images]) if poison_num \
        else clean_images
    labels = torch.cat([torch.full((len(poisoned),), s.target_label, dtype=torch.long), dm.train_labels[clean]])
    return IndexedImages(images, labels, torch.cat([poisoned, clean]))


def run_retune(ctx: CellContext, method: str, inputs) -> tuple[dict, dict]:
    ctx.seed_everything()
    # a copy: loaded afresh from the victim's artifact, which is only read
    module = retuning_module(ctx, method, ctx.load_trainable(inputs["model"]))
    h = module.hparams
    data = retuning_set(ctx, h.split_ratio, h.poison_num)
    loader = ctx.dm.loader(data, shuffle=True, batch_size=h.batch_size, seed=ctx.spec.seed)
    ctx.trainers.fit(module, loader, h.epochs)
    metrics = ctx.evaluate(ctx.classifier_view(module.model))
    metrics["retuning_set"] = {"clean": len(data) - min(h.poison_num, len(data)), "poisoned": h.poison_num}
    return metrics, module.export_weights()
