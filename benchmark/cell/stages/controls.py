"""Stage `controls`: noise robustness of OBA / RBA / gUAA and the CKA of their
features (benchmark/measures/controls.py), per re-activation method and defense."""
from __future__ import annotations

import benchmark.measures.bec as bec_module
import benchmark.measures.controls as controls_module
from benchmark.measures.bec import rank_backdoor_channels, selected_features
from benchmark.measures.controls import NOISE_LEVELS, mechanism_similarity, noise_robustness
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob


def controls_job(ctx: CellContext, method: str, model_label: str, attack: StageJob, model: StageJob,
                 rba: StageJob, guaa: StageJob) -> StageJob:
    s = ctx.spec
    config = {"noise_levels": list(NOISE_LEVELS), "samples": s.bec_samples, "seed": s.seed,
              "features": "TAC-ranked channels of the BEC layers", "channel_ratio": s.bec_ratio,
              "code": code_fingerprint(controls_module, bec_module)}
    return StageJob("controls", f"{method} vs {model_label}", config,
                    {"attack": attack, "model": model, "rba": rba, "guaa": guaa},
                    lambda inputs: run_controls(ctx, inputs))


def run_controls(ctx: CellContext, inputs) -> tuple[dict, None]:
    s = ctx.spec
    f_a, f_d = ctx.load_model(inputs["attack"]), ctx.load_model(inputs["model"])
    rba_delta, guaa_delta = inputs["rba"].tensors()["delta"], inputs["guaa"].tensors()["delta"]
    poisoned, clean = ctx.poisoned_test, ctx.clean_non_target_test
    clean_x = clean.images.float().div(255)
    cases = {"OBA": (f_a, poisoned.images), "RBA": (f_d, (poisoned.images + rba_delta).clamp(0, 1)),
             "gUAA": (f_d, (clean_x + guaa_delta).clamp(0, 1))}
    labels = {"OBA": poisoned.labels, "RBA": poisoned.labels, "gUAA": clean.labels}
    metrics = {"noise_asr": noise_robustness(cases, labels, s.target_label, NOISE_LEVELS, s.seed)}
    # CKA needs the same images in every case: the first `samples` non-target test images.
    n = min(s.bec_samples, len(clean_x))
    channels = rank_backdoor_channels(f_a, f_a.bec_layers, clean_x[:n], poisoned.images[:n], s.bec_ratio)
    metrics["feature_cka"] = mechanism_similarity(
        {name: selected_features(model, channels, images[:n]) for name, (model, images) in cases.items()})
    return metrics, None
