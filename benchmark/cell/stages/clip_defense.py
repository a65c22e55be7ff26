"""CLIP stage `defense`: a ClipDefenseModule applied to the poisoned CLIP
f_A with the defender's clean pairs only: the images of the clean subset
re-indexed 0..n-1 and their own captions; no trigger, no poisoned index, no
poisoned caption."""
from __future__ import annotations

import inspect

import torch

import benchmark.training as training_module
from benchmark.errors import ConfigError
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.cell.stages.clip_context import ClipCellContext
from benchmark.cell.stages.job import StageJob
from datamodules.tensor_dataset import IndexedImages
from lightning_modules.clip.defenses import CLIP_DEFENSES


def defense_module(ctx: ClipCellContext, name: str, model, captions: list[str]):
    params = dict(ctx.spec.defense_params.get(name, {}))
    cls = CLIP_DEFENSES.get(name)
    if "seed" in inspect.signature(cls).parameters:
        params["seed"] = ctx.spec.seed
    try:
        return cls(model, captions, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameter for CLIP defense {name!r}: {exc}") from None


def defense_job(ctx: ClipCellContext, name: str, attack: StageJob) -> StageJob:
    model_spec = attack.config["model"]
    cls = CLIP_DEFENSES.get(name)
    params = ctx.planned(("clip defense", name, model_spec), lambda: {
        k: v for k, v in defense_module(ctx, name, ctx.plan_model(model_spec).clip, ["a photo."]).config().items()})
    config = {"defense": name, "params": params, "clean_ratio": ctx.spec.clean_ratio, "seed": ctx.spec.seed,
              "model": model_spec, "code": code_fingerprint(cls, CLIP_DEFENSES.origin(name), training_module)}
    return StageJob("defense", name, config, {"attack": attack}, lambda inputs: run_defense(ctx, name, inputs))


def clean_pairs(ctx: ClipCellContext) -> tuple[IndexedImages, list[str]]:
    """The defender's data: clean-subset images at positions 0..n-1 and their captions."""
    dm, idx = ctx.dm, ctx.clean_idx
    images = IndexedImages(dm.train_images[idx], dm.train_labels[idx], torch.arange(len(idx)))
    return images, [dm.captions[i] for i in idx.tolist()]


def train_defense(ctx: ClipCellContext, name: str, attack):
    ctx.seed_everything()
    clean_set, captions = clean_pairs(ctx)
    module = defense_module(ctx, name, ctx.load_clip(attack), captions)
    dm = ctx.dm

    def fit(m, dataset):
        loader = dm.loader(dataset, shuffle=True, batch_size=m.hparams.batch_size, seed=ctx.spec.seed)
        ctx.trainers.fit(m, loader, m.hparams.epochs)

    module.prepare(clean_set, fit)
    if module.hparams.epochs > 0:
        fit(module, clean_set)
    module.finalize()
    return module


def run_defense(ctx: ClipCellContext, name: str, inputs) -> tuple[dict, dict]:
    module = train_defense(ctx, name, inputs["attack"])
    metrics = ctx.evaluate(ctx.zero_shot(module.model))
    if module.report:
        metrics["defense"] = module.report
    return metrics, module.export_weights()
