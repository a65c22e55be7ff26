"""Stage `evaluate`: the clean model f_C under f_A's trigger (the clean row's
ASR: how often the trigger alone moves a model that never learned it)."""
from __future__ import annotations

import benchmark.training as training_module
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob
from lightning_modules.base import BackdoorStage

LABEL = "clean model under the trigger"


def evaluate_job(ctx: CellContext, clean: StageJob, attack: StageJob) -> StageJob:
    config = {"what": "clean model vs trigger", "code": code_fingerprint(BackdoorStage, training_module)}
    return StageJob("evaluate", LABEL, config, {"model": clean, "attack": attack},
                    lambda inputs: (ctx.evaluate(ctx.load_model(inputs["model"])), None))
