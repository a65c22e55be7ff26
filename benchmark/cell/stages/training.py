"""The classifier family's stages `train` (the clean model f_C) and `attack`
(the backdoored model f_A): the attack's LightningModule on the training
set, poisoned at the cell's seeded indices with the (prepared) trigger."""
from __future__ import annotations

import torch

import benchmark.training as training_module
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.models import ImageClassifier, backbone_class
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import STATE_PREFIX
from lightning_modules.attacks import ATTACKS

# f_C's shuffling seed is offset from f_A's by this much when it has its own order.
CLEAN_ORDER_OFFSET = 1_000_003
CLEAN_LABEL = "clean model"


def training_code(ctx: CellContext, model_spec: dict, attack: str) -> str:
    """The code that trains f_C / f_A: the attack's module, preset and
    trigger, the architecture, the data module and the trainer."""
    preset = ATTACKS.get(attack)
    objects = [preset.module_class(), ATTACKS.origin(attack), ImageClassifier, backbone_class(model_spec["arch"]),
               type(ctx.dm), training_module]
    if preset.trigger is not None:
        objects += [TRIGGERS.get(preset.trigger), TRIGGERS.origin(preset.trigger)]
    return code_fingerprint(*objects)


def train_spec(ctx: CellContext) -> dict:
    s = ctx.spec
    return {"epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed}


def clean_job(ctx: CellContext) -> StageJob:
    s = ctx.spec
    model_spec = ctx.model_spec()
    config = {"attack": "clean", "data_order": s.clean_data_order, "data": ctx.dm.identity(), "model": model_spec,
              "train": train_spec(ctx), "code": training_code(ctx, model_spec, "clean")}
    return StageJob("train", CLEAN_LABEL, config, {}, lambda inputs: train(ctx, model_spec, None))


def attack_job(ctx: CellContext, arch: str, trigger_job: StageJob | None) -> StageJob:
    """f_A of architecture `arch` (the cell's, or a transfer surrogate's)."""
    s = ctx.spec
    model_spec = ctx.model_spec(arch)
    config = {"attack": s.attack, "trigger": ctx.trigger_config, "module": s.attack_params,
              "poison_rate": s.poison_rate,
              "poison_selection": ctx.poison_selection, "target_label": s.target_label,
              "data": ctx.dm.identity(), "model": model_spec, "train": train_spec(ctx),
              "code": training_code(ctx, model_spec, s.attack)}
    deps = {"trigger": trigger_job} if trigger_job is not None else {}
    label = s.attack if arch == s.arch else f"{s.attack} ({arch})"
    # The module on a throw-away model: its options and its epoch budget
    # (Input-Aware's mask epochs count against the cell's) fail now, not after f_C.
    ctx.planned(("attack module", s.attack, model_spec), lambda: attack_module(
        ctx, ctx.plan_model(model_spec), ctx.new_trigger(), ctx.poison_idx).fit_epochs(s.epochs))

    def run(inputs):
        return train(ctx, model_spec, ctx.trigger_with_state(prepared=inputs.get("trigger")))

    return StageJob("attack", label, config, deps, run)


def attack_module(ctx: CellContext, model, trigger, poison_idx):
    """The attack's LightningModule (the clean preset's when `trigger` is
    None). The attack's own options (`attack_params`, routed to its module)
    train f_A only."""
    s, dm = ctx.spec, ctx.dm
    preset = ATTACKS.get(s.attack if trigger is not None else "clean")
    options = s.attack_params if trigger is not None else {}
    return preset.module_class()(model, dm.num_classes, trigger, poison_idx, dm.num_train, s.target_label,
                                 lr=s.lr, augment=dm.augment, **options)


def train(ctx: CellContext, model_spec: dict, trigger) -> tuple[dict, dict]:
    """Train f_C (trigger None) or f_A; returns (metrics, weights). A trigger
    learned during the attack is saved beside the weights."""
    s, dm = ctx.spec, ctx.dm
    ctx.seed_everything()
    poison_idx = ctx.poison_idx if trigger is not None else torch.empty(0, dtype=torch.long)
    module = attack_module(ctx, ctx.new_model(model_spec), trigger, poison_idx)
    if ctx.trainers.compile:
        # in place: the state dict keeps its names (export, checkpoints)
        module.model.compile()
    order_seed = s.seed
    if trigger is None and s.clean_data_order == "own":
        order_seed += CLEAN_ORDER_OFFSET
    ctx.trainers.fit(module, dm.loader(dm.train_set(), shuffle=True, seed=order_seed), module.fit_epochs(s.epochs))
    tensors = module.export_weights()
    if trigger is not None and trigger.learned_in_attack:
        tensors.update({STATE_PREFIX + k: v.detach().cpu().contiguous() for k, v in trigger.state_dict().items()})
    if trigger is None:
        return ctx.evaluate(module.model, poisoned=False), tensors
    # f_A is evaluated under the trigger it was trained with (a learned one
    # is not in the store yet).
    return ctx.evaluate(module.model, trigger=trigger), tensors
