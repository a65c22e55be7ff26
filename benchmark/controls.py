"""The paper's controls showing that re-activation is not a plain adversarial
attack (PAPER.md, "Controls"):

- noise robustness: ASR under extra uniform noise u ~ U[-eta, eta] (L-inf eta)
  of the original attack on f_A (OBA), of trigger + delta on f_D (RBA) and of
  the gUAA delta on clean inputs against f_D. A backdoor path survives noise;
  an adversarial perturbation collapses.
- mechanism similarity: linear CKA between the features that OBA, RBA and gUAA
  inputs produce (full outputs of the architecture's BEC layers, averaged over
  layers). RBA ~ OBA and both far from gUAA means re-activation uses the
  backdoor's own path.
"""
from __future__ import annotations

import torch

from benchmark.cka import linear_cka
from benchmark.features import capture
from benchmark.metrics import attack_success_rate

NOISE_LEVELS = (0.0, 0.03, 0.06, 0.09)


@torch.inference_mode()
def predict(model, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    device = next(model.parameters()).device
    model.eval()
    return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def with_noise(images: torch.Tensor, level: float, generator: torch.Generator) -> torch.Tensor:
    if level == 0:
        return images
    noise = (torch.rand(images.shape, generator=generator) * 2 - 1) * level
    return (images + noise).clamp(0.0, 1.0)


def noise_robustness(cases: dict[str, tuple], labels_by_case: dict[str, torch.Tensor], target_label: int,
                     levels=NOISE_LEVELS, seed: int = 0) -> dict[str, dict[str, float]]:
    """cases: name -> (model, images in [0, 1]); the same noise draw per level
    and case size, so the cases differ only in what they are."""
    out: dict[str, dict[str, float]] = {}
    for name, (model, images) in cases.items():
        out[name] = {}
        for level in levels:
            gen = torch.Generator().manual_seed(seed + int(round(level * 1000)))
            preds = predict(model, with_noise(images, level, gen))
            out[name][f"{level:g}"] = float(attack_success_rate(preds, labels_by_case[name], target_label))
    return out


@torch.inference_mode()
def layer_features(model, layer: str, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Full output of one layer for all images, flattened to (n, d), on CPU.
    One layer at a time keeps memory at one layer's worth of features."""
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    for i in range(0, len(images), batch_size):
        with capture(model, [layer]) as feats:
            model(images[i:i + batch_size].to(device))
        chunks.append(feats[layer].flatten(1).float().cpu())
    return torch.cat(chunks)


def mechanism_similarity(cases: dict[str, tuple], layers: list[str]) -> dict[str, float]:
    """Mean linear CKA over `layers` for every pair of cases (same number of images)."""
    names = list(cases)
    sums = {f"{a}~{b}": 0.0 for i, a in enumerate(names) for b in names[i + 1:]}
    for layer in layers:
        feats = {n: layer_features(model, layer, images) for n, (model, images) in cases.items()}
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                sums[f"{a}~{b}"] += linear_cka(feats[a], feats[b])
    return {pair: total / len(layers) for pair, total in sums.items()}
