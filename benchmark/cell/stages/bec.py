"""Stage `bec`: raw S(f_A, f_X), the backdoor similarity of a model to f_A on
f_A's TAC-ranked channels (benchmark/measures/bec.py), with per-layer CKA values.
BEC itself is normalised when rows are assembled (benchmark/cell/rows.py)."""
from __future__ import annotations

import torch

import benchmark.measures.bec as bec_module
from benchmark.measures.bec import backdoor_similarity, rank_backdoor_channels, selected_features
from benchmark.storage.fingerprint import code_fingerprint
from benchmark.cell.context import CellContext
from benchmark.cell.job import StageJob


def label(model_label: str) -> str:
    return f"S(f_A, {model_label})"


def bec_job(ctx: CellContext, attack: StageJob, clean: StageJob, other: StageJob, model_label: str) -> StageJob:
    s = ctx.spec
    model_spec = attack.config["model"]
    layers = ctx.planned(("bec layers", model_spec), lambda: ctx.plan_model(model_spec).bec_layers)
    config = {"samples": s.bec_samples, "rank_samples": s.bec_rank_samples, "channel_ratio": s.bec_ratio,
              "seed": s.seed, "layers": layers, "code": code_fingerprint(bec_module)}
    return StageJob("bec", label(model_label), config, {"attack": attack, "clean": clean, "model": other},
                    lambda inputs: run_bec(ctx, inputs))


def run_bec(ctx: CellContext, inputs) -> tuple[dict, None]:
    s, dm = ctx.spec, ctx.dm
    # As the authors do: ~2,200 random non-target test pairs rank the
    # channels, and the features are those of `bec_samples` of them.
    idx = dm.non_target_test_indices(s.target_label)
    order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(s.seed))
    idx = idx[order[:max(s.bec_rank_samples, s.bec_samples)]]
    clean_x = dm.test_images[idx].float().div(255)
    poisoned_x = dm.triggered(dm.test_images[idx], ctx.trigger)
    model_a = ctx.load_model(inputs["attack"])
    layers = model_a.bec_layers
    channels = rank_backdoor_channels(model_a, layers, clean_x[:s.bec_rank_samples],
                                      poisoned_x[:s.bec_rank_samples], s.bec_ratio)
    compared = poisoned_x[:s.bec_samples]
    reference = selected_features(model_a, channels, compared)
    features = selected_features(ctx.load_model(inputs["model"]), channels, compared)
    similarity, per_layer = backdoor_similarity(reference, features)
    return {"similarity": similarity, "per_layer": dict(zip(layers, per_layer)),
            "channels_per_layer": {n: len(c) for n, c in channels.items()}}, None
