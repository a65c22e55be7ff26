"""Evaluation metrics of PAPER.md as pure functions and thin torchmetrics
classes over them (sum states, so they reduce correctly under DDP).

All take predicted class indices. ASR and RA count only samples whose true
label differs from the target: a target-class image carrying the trigger says
nothing about the backdoor.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric


def _non_target(labels: torch.Tensor, target_label: int) -> torch.Tensor:
    return labels != target_label


def attack_success_rate(preds: torch.Tensor, labels: torch.Tensor, target_label: int) -> torch.Tensor:
    """Fraction of non-target samples predicted as the target label."""
    keep = _non_target(labels, target_label)
    return (preds[keep] == target_label).float().mean()


def robust_accuracy(preds: torch.Tensor, labels: torch.Tensor, target_label: int) -> torch.Tensor:
    """Fraction of non-target triggered samples still predicted as their true label."""
    keep = _non_target(labels, target_label)
    return (preds[keep] == labels[keep]).float().mean()


def defense_effectiveness_rating(asr_attack: float, acc_attack: float,
                                 asr_defense: float, acc_defense: float) -> float:
    """DER of BackdoorBench, in [0, 1]; 0.5 means the defense changed nothing."""
    return (max(0.0, asr_attack - asr_defense) - max(0.0, acc_attack - acc_defense) + 1.0) / 2.0


class _RateMetric(Metric):
    full_state_update = False
    higher_is_better = None

    def __init__(self, target_label: int, **kwargs):
        super().__init__(**kwargs)
        self.target_label = target_label
        self.add_state("hits", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _hits(self, preds, labels) -> torch.Tensor:
        raise NotImplementedError

    def update(self, preds: torch.Tensor, labels: torch.Tensor) -> None:
        keep = _non_target(labels, self.target_label)
        self.hits += self._hits(preds[keep], labels[keep]).sum()
        self.total += keep.sum()

    def compute(self) -> torch.Tensor:
        return self.hits.float() / self.total.clamp_min(1)


class AttackSuccessRate(_RateMetric):
    def _hits(self, preds, labels):
        return preds == self.target_label


class RobustAccuracy(_RateMetric):
    def _hits(self, preds, labels):
        return preds == labels
