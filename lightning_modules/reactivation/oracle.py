"""`QueryOracle`: the only view of the victim a query-based attacker gets.

A call takes a batch of images in [0, 1] and returns the victim's softmax
probabilities; one call (one batch) is one query. The model lives only in a
closure, so neither it nor its weights or gradients are reachable from the
oracle's attributes. No registration here: this is not a method.
"""
from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import nn

from benchmark.errors import BenchmarkError, ConfigError


class QueryBudgetExhausted(BenchmarkError):
    """A query was asked for after the budget was spent."""


def _probabilities(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    @torch.no_grad()
    def answer(images: torch.Tensor) -> torch.Tensor:
        param = next(model.parameters(), None)
        device = param.device if param is not None else images.device
        was_training = model.training
        model.eval()  # BatchNorm must neither use nor update batch statistics
        try:
            probs = model(images.detach().to(device)).float().softmax(dim=1)
        finally:
            model.train(was_training)
        # Back on the caller's device, detached: probabilities are all it learns.
        return probs.to(images.device)

    return answer


class QueryOracle:
    def __init__(self, model: nn.Module, budget: int):
        if not isinstance(budget, numbers.Integral) or isinstance(budget, bool) or budget <= 0:
            raise ConfigError(f"query budget must be a positive integer number of queries, got {budget!r}")
        self._answer = _probabilities(model)
        self._budget = int(budget)
        self._queries = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self._queries >= self._budget:
            raise QueryBudgetExhausted(f"query budget of {self._budget} queries is spent")
        self._queries += 1
        return self._answer(images)

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def queries(self) -> int:
        return self._queries

    @property
    def remaining(self) -> int:
        return self._budget - self._queries
