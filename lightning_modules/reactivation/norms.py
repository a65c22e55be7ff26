"""Norm balls for the universal perturbation and their projections."""
from __future__ import annotations

import torch

from benchmark.errors import ConfigError

NORMS = ("linf", "l2", "l1")


def check_budget(norm: str, epsilon: float) -> None:
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    if not epsilon > 0:
        raise ConfigError(f"epsilon must be > 0, got {epsilon}")


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
