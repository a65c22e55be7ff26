"""Stage `trigger`: the preparation of a trigger with state (SSBA's encoder,
LF's universal perturbation, TrojanNN's patch, LC's adversarial images,
Input-Aware's mask generator), once per cell, shared by f_A and every later
job through the store (safetensors). Triggers prepared on a clean model get
the cell's f_C."""
from __future__ import annotations

import benchmark.triggers.preparation as preparation_module
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob
from benchmark.triggers import TRIGGERS
from benchmark.triggers.preparation import PreparationContext

# Images over which the trigger's visibility is summarised (PSNR, L-inf).
SUMMARY_IMAGES = 512


def trigger_job(ctx: CellContext, clean: StageJob) -> StageJob | None:
    """None for a trigger that is a pure function of its parameters."""
    cls = ctx.trigger_class
    if cls.preparation == "none":
        return None
    s = ctx.spec
    name = ctx.preset.trigger
    config = {"trigger": ctx.trigger_config, "data": ctx.dm.identity(), "target_label": s.target_label,
              "poison_rate": s.poison_rate, "poison_selection": ctx.poison_selection, "seed": s.seed,
              "preparation": cls.preparation,
              "code": code_fingerprint(cls, TRIGGERS.origin(name), preparation_module)}
    deps = {}
    if cls.preparation == "clean_model":
        deps["clean"] = clean
    if cls.preparation == "clean_model" or cls.uses_architecture:
        config["model"] = ctx.model_spec()
    return StageJob("trigger", name, config, deps, lambda inputs: prepare(ctx, inputs))


def prepare(ctx: CellContext, inputs) -> tuple[dict, dict]:
    s, dm = ctx.spec, ctx.dm
    ctx.seed_everything()
    trigger = ctx.new_trigger()
    clean_model = ctx.load_model(inputs["clean"]).eval() if "clean" in inputs else None
    model_spec = ctx.model_spec()
    prep = PreparationContext(
        images=dm.train_images, labels=dm.train_labels, poison_indices=ctx.poison_idx,
        num_classes=dm.num_classes, target_label=s.target_label, seed=s.seed, device=ctx.trainers.device,
        clean_model=clean_model, new_model=lambda: ctx.new_model(model_spec).to(ctx.trainers.device),
        log=lambda message: ctx.console.print(f"  {message}", highlight=False))
    checkpoints = ctx.trainers.checkpoints  # set by the cell around a job; None outside one
    if checkpoints is not None:
        prep.checkpoint_path, prep.checkpoint_every = checkpoints.next_fit(), checkpoints.every
    trigger.prepare(prep)
    state = {k: v.detach().cpu().contiguous() for k, v in trigger.state_dict().items()}
    return visibility(ctx, trigger), state


def visibility(ctx: CellContext, trigger) -> dict:
    """How visible the trigger is on non-target test images: mean PSNR (dB)
    and the largest pixel change, both in [0, 1] pixel units."""
    idx = ctx.dm.non_target_test_indices(ctx.spec.target_label)[:SUMMARY_IMAGES]
    clean = ctx.dm.test_images[idx].float().div(255)
    triggered = ctx.dm.triggered(ctx.dm.test_images[idx], trigger)
    mse = (triggered - clean).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return {"trigger/psnr_db": float((10 * (1.0 / mse).log10()).mean()),
            "trigger/linf": float((triggered - clean).abs().max())}
