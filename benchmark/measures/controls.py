"""The paper's controls showing that re-activation is not a plain adversarial
attack (PAPER.md, "Controls"):

- noise robustness: ASR under extra uniform noise u ~ U[-eta, eta] (L-inf eta)
  of the original attack on f_A (OBA), of trigger + delta on f_D (RBA) and of
  the gUAA delta on clean inputs against f_D. A backdoor path survives noise;
  an adversarial perturbation collapses.
- mechanism similarity: linear CKA between the backdoor-related features that
  OBA, RBA and gUAA inputs produce: the channels BEC ranks on f_A (TAC), per
  BEC layer, averaged over layers. RBA ~ OBA and both far from gUAA means
  re-activation uses the backdoor's own path. (Full layer outputs would not
  tell: on the same images they are dominated by image content, CKA ~0.96
  for every pair on Fashion-MNIST.)
"""
from __future__ import annotations

import torch

from benchmark.measures.bec import backdoor_similarity
from benchmark.measures.metrics import attack_success_rate

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


def mechanism_similarity(features: dict[str, dict[str, torch.Tensor]]) -> dict[str, float]:
    """features: case -> {layer: (n, d)} over the same n images; returns the
    mean-over-layers linear CKA of every pair of cases."""
    names = list(features)
    return {f"{a}~{b}": backdoor_similarity(features[a], features[b])[0]
            for i, a in enumerate(names) for b in names[i + 1:]}
