"""Backdoor Existence Coefficient (PAPER.md, "BEC").

1. Backdoor-related channels are ranked on the backdoored model f_A only, by
   a TAC-style score per layer l and channel c:
       mean_i ||a_lc(x_i) - a_lc(x~_i)||_2  /  mean_i ||a_l(x_i)||_2
   over paired clean / triggered images (norms over spatial positions, and
   over the whole layer output in the denominator); the top `ratio` of
   channels of each layer are kept.
2. Triggered images go through f_A and the model under test; per layer the
   kept channels are flattened to an n x (k H W) matrix and compared with
   linear CKA; S = mean over layers.
3. BEC(f_D) = (S(f_A, f_D) - S(f_A, f_C)) / (1 - S(f_A, f_C)), unclipped:
   0 for the clean model, 1 for the backdoored one.

Everything streams over batches under inference mode; only the kept channels
are ever held for all samples (10 % of a PreAct-ResNet18's block outputs for
500 images is about 100 MB).
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.measures.cka import linear_cka
from benchmark.errors import ConfigError
from benchmark.measures.features import capture


def _batches(images: torch.Tensor, batch_size: int, device):
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size].to(device)


@torch.inference_mode()
def rank_backdoor_channels(model: nn.Module, layers: list[str], clean: torch.Tensor, poisoned: torch.Tensor,
                           ratio: float = 0.1, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Indices of the top-`ratio` channels per layer by the TAC-style score."""
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"BEC channel ratio must be in (0, 1], got {ratio}")
    if clean.shape != poisoned.shape:
        raise ValueError("clean and poisoned images must be paired (same shape)")
    device = next(model.parameters()).device
    model.eval()
    diff_sum: dict[str, torch.Tensor] = {}
    norm_sum: dict[str, float] = {}
    for xc, xp in zip(_batches(clean, batch_size, device), _batches(poisoned, batch_size, device)):
        with capture(model, layers) as out_c:
            model(xc)
        with capture(model, layers) as out_p:
            model(xp)
        for name in layers:
            a, b = out_c[name].float(), out_p[name].float()
            per_channel = (a - b).flatten(2).norm(dim=2).sum(0)          # sum_i ||a_c - b_c||
            layer_norm = a.flatten(1).norm(dim=1).sum().item()            # sum_i ||a||
            diff_sum[name] = diff_sum.get(name, 0) + per_channel
            norm_sum[name] = norm_sum.get(name, 0.0) + layer_norm
    selected = {}
    for name in layers:
        score = diff_sum[name] / max(norm_sum[name], 1e-12)  # the 1/n of both means cancels
        k = max(1, int(ratio * score.numel()))
        selected[name] = score.topk(k).indices.sort().values.cpu()
    return selected


@torch.inference_mode()
def selected_features(model: nn.Module, channels: dict[str, torch.Tensor], images: torch.Tensor,
                      batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per layer, the kept channels of every image flattened: (n, k*H*W), on CPU."""
    device = next(model.parameters()).device
    model.eval()
    index = {name: idx.to(device) for name, idx in channels.items()}
    pick = lambda name, out: out.index_select(1, index[name]).flatten(1).float().cpu()  # noqa: E731
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in channels}
    for x in _batches(images, batch_size, device):
        with capture(model, list(channels), transform=pick) as feats:
            model(x)
        for name in channels:
            chunks[name].append(feats[name])
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def backdoor_similarity(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> tuple[float, list[float]]:
    """S(f_A, f) = mean over layers of linear CKA; also the per-layer values."""
    per_layer = [linear_cka(reference[name], other[name]) for name in reference]
    return sum(per_layer) / len(per_layer), per_layer


# Below this denominator 1 - S(f_A, f_C), BEC is reported as undefined (None):
# CKA on 500 samples moves by about 0.005 between runs, and dividing by less
# than 0.05 would turn that noise into more than 0.1 of BEC.
MIN_BEC_DENOMINATOR = 0.05


def backdoor_existence_coefficient(s_defense: float, s_clean: float,
                                   min_denominator: float = MIN_BEC_DENOMINATOR) -> float | None:
    """(S(f_A, f_D) - S(f_A, f_C)) / (1 - S(f_A, f_C)), unclipped; None
    (undefined) when the clean model is too similar to the backdoored one
    (1 - S(f_A, f_C) < `min_denominator`) for the ratio to mean anything."""
    denominator = 1.0 - s_clean
    if denominator < min_denominator:
        return None
    return (s_defense - s_clean) / denominator


def min_max_bec(similarities: dict[str, float], clean: str, backdoored: str,
                aliases_of_backdoored: tuple[str, ...] = ()) -> dict[str, float]:
    """The authors' plotting normalisation (`BEC/analy_backdoor_plot.py` of
    JulieCarlon/Backdoor-Reactivation-Attack): min-max of S over the clean
    model and the defense models of one attack, the backdoored model left out
    of the range (so the most similar defense reads exactly 1 and the clean
    model 0 when it is the least similar); the backdoored model is then
    plotted at 1. `aliases_of_backdoored` (the "none" defense) are the
    backdoored model itself and read 1 too."""
    pinned = {backdoored, *aliases_of_backdoored}
    ranged = {name: s for name, s in similarities.items() if name not in pinned}
    lo, hi = min(ranged.values()), max(ranged.values())
    span = hi - lo if hi > lo else 1.0
    out = {name: (s - lo) / span for name, s in ranged.items()}
    out.update({name: 1.0 for name in pinned if name in similarities})
    return out
