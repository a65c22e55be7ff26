"""Linear CKA (Kornblith et al. 2019) with the HSIC of PAPER.md:
K = X X^T, L = Y Y^T, H = I - 11^T / n, HSIC(K, L) = sum((H K H) * (H L H)),
CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)). Computed in float64: the
Gram entries of wide feature matrices overflow float32 precision."""
from __future__ import annotations

import torch


def centered_gram(x: torch.Tensor) -> torch.Tensor:
    """H (X X^T) H for X of shape (n, d)."""
    x = x.reshape(x.shape[0], -1).double()
    gram = x @ x.T
    # H K H without forming H: subtract row and column means, add back the grand mean.
    return gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same samples in both: got {x.shape[0]} and {y.shape[0]} rows")
    kc, lc = centered_gram(x), centered_gram(y)
    hsic_kl = (kc * lc).sum()
    denom = torch.sqrt((kc * kc).sum() * (lc * lc).sum())
    if denom <= 0:
        # A constant representation carries no information; call it dissimilar.
        return 0.0
    return float(hsic_kl / denom)
