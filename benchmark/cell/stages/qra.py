"""Stage `qra`: QRA (lightning_modules/retuning/qra.py) against a defended
model: a per-input perturbation generator that makes f_D on x + δ(x) behave
as the RA-retuned copy of f_D on x, while the clean model f_C still
classifies x + δ(x) correctly. Needs the retuning attack `ra` of the same
model (its retuned weights) and f_C. Reports, for f_D and for f_C under the
same generator: the ASR on the poisoned test set (trigger + δ(x)) and the
targeted fooling rate on clean non-target test images (clean + δ(x))."""
from __future__ import annotations

import torch

import benchmark.training as training_module
import lightning_modules.retuning.qra as qra_module
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob
from benchmark.cell.stages.retune import retuning_set
from benchmark.errors import ConfigError
from benchmark.storage.fingerprint import code_fingerprint
from datamodules.tensor_dataset import IndexedImages
from lightning_modules.retuning.qra import GeneratorEvaluation, QueryReactivationAttack

#: the retuning method whose retuned model QRA imitates
RETUNER = "ra"
# QRA's poisoned samples are drawn on a stream of their own
QRA_STREAM = 15_485_863


def label(model_label: str) -> str:
    return f"qra vs {model_label}"


def qra_module_for(ctx: CellContext, model, retuned, clean_model):
    params = dict(ctx.spec.retuning_params.get("qra", {}))
    try:
        return QueryReactivationAttack(model, retuned, clean_model, ctx.dm.image_shape, **params)
    except TypeError as exc:
        raise ConfigError(f"bad parameter for qra: {exc}") from None


def qra_job(ctx: CellContext, victim: StageJob, retuned: StageJob, clean: StageJob, model_label: str) -> StageJob:
    s = ctx.spec
    model_spec = victim.config["model"]
    params = ctx.planned(("qra", model_spec), lambda: qra_module_for(
        ctx, *(ctx.plan_model(model_spec) for _ in range(3))).config())
    config = {"method": "qra", "params": params, "seed": s.seed, "attacker_samples": s.attacker_samples,
              "retuning": retuned.config["params"], "code": code_fingerprint(qra_module, training_module)}
    deps = {"model": victim, "retuned": retuned, "clean": clean, "attack": ctx.attack_job}
    return StageJob("qra", label(model_label), config, deps, lambda inputs: run_qra(ctx, inputs))


def qra_set(ctx: CellContext, clean_num: int, poison_num: int, split_ratio: float) -> IndexedImages:
    """`clean_num` clean images of the retuning split and `poison_num`
    poisoned non-target training images with the trigger, all with their
    true labels (the CE term's)."""
    dm, s = ctx.dm, ctx.spec
    split = retuning_set(ctx, split_ratio, 0)
    clean = IndexedImages(split.images[:clean_num], split.labels[:clean_num], split.indices[:clean_num])
    order = torch.randperm(len(ctx.attacker_pool), generator=torch.Generator().manual_seed(s.seed + QRA_STREAM))
    poisoned = dm.attacker_set(ctx.attacker_pool[order[:poison_num]].sort().values, ctx.trigger)
    return IndexedImages(torch.cat([clean.images, poisoned.images]), torch.cat([clean.labels, poisoned.labels]),
                         torch.cat([clean.indices, poisoned.indices]))


def run_qra(ctx: CellContext, inputs) -> tuple[dict, dict]:
    ctx.seed_everything()
    victim, clean_model = ctx.load_model(inputs["model"]), ctx.load_model(inputs["clean"])
    module = qra_module_for(ctx, victim, ctx.load_model(inputs["retuned"]), clean_model)
    h = module.hparams
    data = qra_set(ctx, h.clean_num, h.poison_num, inputs["retuned"].config["params"]["split_ratio"])
    loader = ctx.dm.loader(data, shuffle=True, batch_size=h.batch_size, seed=ctx.spec.seed)
    ctx.trainers.fit(module, loader, h.epochs, precision="32-true")
    generator = module.generator.cpu()
    metrics = {}
    for name, model in (("model", victim), ("clean_model", clean_model)):
        for key, eval_set in (("asr", ctx.poisoned_test), ("fooling_rate", ctx.clean_non_target_test)):
            stage = GeneratorEvaluation(model, ctx.dm.num_classes, ctx.spec.target_label, generator)
            asr = ctx.trainers.evaluate(stage, poisoned_loader=ctx.dm.loader(eval_set))["test/asr"]
            metrics[f"{key}:{name}"] = asr
    metrics["test/asr"] = metrics["asr:model"]
    return metrics, {f"generator.{k}": v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
