"""Stage `defense`: a DefenseModule applied to f_A with the defender's clean
subset only: no trigger, no poisoned index, no data module."""
from __future__ import annotations

import benchmark.training as training_module
from benchmark.errors import ConfigError
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.cell.stages.context import CellContext
from benchmark.cell.stages.job import StageJob
from lightning_modules.defenses import DEFENSES


def defense_module(ctx: CellContext, name: str, model):
    params = dict(ctx.spec.defense_params.get(name, {}))
    try:
        return DEFENSES.get(name)(model, ctx.dm.num_classes, ctx.spec.target_label, ctx.dm.augment, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameter for defense {name!r}: {exc}") from None


def defense_job(ctx: CellContext, name: str, attack: StageJob) -> StageJob:
    model_spec = attack.config["model"]
    # Building the module on a throw-away model checks its parameters now.
    params = ctx.planned(("defense", name, model_spec),
                         lambda: defense_module(ctx, name, ctx.plan_model(model_spec)).config())
    config = {"defense": name, "params": params,
              "clean_ratio": ctx.spec.clean_ratio, "clean_subset": ctx.spec.clean_subset, "seed": ctx.spec.seed,
              "model": model_spec,
              "code": code_fingerprint(DEFENSES.get(name), DEFENSES.origin(name), training_module)}
    label = name if model_spec["arch"] == ctx.spec.arch else f"{name} ({model_spec['arch']})"
    return StageJob("defense", label, config, {"attack": attack}, lambda inputs: run_defense(ctx, name, inputs))


def train_defense(ctx: CellContext, name: str, attack):
    """The trained defense module for f_A (the `attack` artifact)."""
    ctx.seed_everything()
    module = defense_module(ctx, name, ctx.load_model(attack))
    dm = ctx.dm
    clean_set = dm.train_set(ctx.clean_idx)

    def fit(m, dataset):
        loader = dm.loader(dataset, shuffle=True, batch_size=m.hparams.batch_size, seed=ctx.spec.seed)
        ctx.trainers.fit(m, loader, m.hparams.epochs)

    module.prepare(clean_set, fit)
    if module.hparams.epochs > 0:
        fit(module, clean_set)
    module.finalize()
    return module


def run_defense(ctx: CellContext, name: str, inputs) -> tuple[dict, dict]:
    module = train_defense(ctx, name, inputs["attack"])
    metrics = ctx.evaluate(module.model)
    if module.report:  # what the defense decided: flagged labels, pruned units...
        metrics["defense"] = module.report
    return metrics, module.export_weights()
