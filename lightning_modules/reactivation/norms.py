"""Norm balls for the universal perturbation and their projections."""
from __future__ import annotations

import math

import torch

from benchmark.errors import ConfigError

NORMS = ("linf", "l2", "l1")


def check_budget(norm: str, epsilon: float) -> None:
    """Budgets are in [0, 1] pixel units: an L-inf epsilon of 1 or more
    allows any image at all, so it must lie in (0, 1); an L2 / L1 budget
    only needs to be positive (it spreads over all pixels)."""
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon):
        raise ConfigError(f"epsilon={epsilon!r} is not allowed; must be a finite number")
    if norm == "linf" and not 0 < epsilon < 1:
        raise ConfigError(f"epsilon={epsilon!r} is not allowed for norm linf; must be in (0, 1) "
                          f"([0, 1] pixel units)")
    if not epsilon > 0:
        raise ConfigError(f"epsilon={epsilon!r} is not allowed for norm {norm}; must be > 0")


def project(delta: torch.Tensor, norm: str, epsilon: float) -> torch.Tensor:
    """Euclidean projection for L-inf and L2; L1 rescales onto the ball, as
    the reference implementation does."""
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    size = delta.norm(p=2 if norm == "l2" else 1)
    return delta * (epsilon / size) if size > epsilon else delta


def random_init(shape, norm: str, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform in [-eps, eps] per pixel, then projected onto the ball."""
    return project((torch.rand(shape, generator=generator) * 2 - 1) * epsilon, norm, epsilon)
