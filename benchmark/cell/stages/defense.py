"""Stage `defense`: a defense module applied to f_A with the defender's data
only (the family's `defender_data`: the clean subset, for CLIP its clean
pairs re-indexed with their own captions): no trigger, no poisoned index,
no data module."""
from __future__ import annotations

import benchmark.training as training_module
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob
from benchmark.storage.fingerprint import code_fingerprint


def defense_job(ctx: CellContext, name: str, attack: StageJob) -> StageJob:
    family = ctx.family
    model_spec = attack.config["model"]
    # Building the module on a throw-away model checks its parameters now.
    params = ctx.planned(("defense", name, model_spec), lambda: family.defense_module(
        ctx, name, ctx.plan_trainable(model_spec), family.defender_data(ctx, planning=True)[1]).config())
    config = {"defense": name, "params": params,
              "clean_ratio": ctx.spec.clean_ratio, "clean_subset": ctx.spec.clean_subset, "seed": ctx.spec.seed,
              "model": model_spec,
              "code": code_fingerprint(family.defenses.get(name), family.defenses.origin(name), training_module)}
    label = name if model_spec["arch"] == ctx.spec.arch else f"{name} ({model_spec['arch']})"
    return StageJob("defense", label, config, {"attack": attack}, lambda inputs: run_defense(ctx, name, inputs))


def train_defense(ctx: CellContext, name: str, attack):
    """The trained defense module for f_A (the `attack` artifact)."""
    ctx.seed_everything()
    data, data_args = ctx.family.defender_data(ctx)
    module = ctx.family.defense_module(ctx, name, ctx.load_trainable(attack), data_args)
    dm = ctx.dm

    def fit(m, dataset):
        loader = dm.loader(dataset, shuffle=True, batch_size=m.hparams.batch_size, seed=ctx.spec.seed)
        ctx.trainers.fit(m, loader, m.hparams.epochs)

    module.prepare(data, fit)
    if module.hparams.epochs > 0:
        fit(module, data)
    module.finalize()
    return module


def run_defense(ctx: CellContext, name: str, inputs) -> tuple[dict, dict]:
    module = train_defense(ctx, name, inputs["attack"])
    metrics = ctx.evaluate(ctx.classifier_view(module.model))
    if module.report:  # what the defense decided: flagged labels, pruned units...
        metrics["defense"] = module.report
    return metrics, module.export_weights()
