import pytest
import torch

from benchmark.measures.metrics import (AttackSuccessRate, RobustAccuracy, attack_success_rate,
                               defense_effectiveness_rating, robust_accuracy)

# Hand-built case, target 0. Target-class samples (label 0) are ignored.
LABELS = torch.tensor([0, 1, 2, 3, 1, 2, 0, 3])
PREDS = torch.tensor([0, 0, 0, 3, 1, 0, 2, 0])
# non-target samples: labels 1,2,3,1,2,3 with preds 0,0,3,1,0,0
#   ASR = #pred==0 / 6 = 4/6 ; RA = #pred==label / 6 = (3->3, 1->1) = 2/6


def test_functional_asr_and_ra():
    assert attack_success_rate(PREDS, LABELS, 0).item() == pytest.approx(4 / 6)
    assert robust_accuracy(PREDS, LABELS, 0).item() == pytest.approx(2 / 6)


def test_metric_classes_accumulate_over_batches_like_the_functions():
    asr, ra = AttackSuccessRate(0), RobustAccuracy(0)
    for sl in (slice(0, 3), slice(3, 5), slice(5, 8)):
        asr.update(PREDS[sl], LABELS[sl])
        ra.update(PREDS[sl], LABELS[sl])
    assert asr.compute().item() == pytest.approx(4 / 6)
    assert ra.compute().item() == pytest.approx(2 / 6)


def test_other_target_label():
    # target 2: non-target samples are those with label != 2
    keep = LABELS != 2
    expected = (PREDS[keep] == 2).float().mean().item()
    assert attack_success_rate(PREDS, LABELS, 2).item() == pytest.approx(expected)


def test_der_bounds_and_examples():
    assert defense_effectiveness_rating(0.95, 0.91, 0.95, 0.91) == pytest.approx(0.5)
    # ASR 0.95 -> 0.015, accuracy 0.913 -> 0.90: (0.935 - 0.013 + 1) / 2
    assert defense_effectiveness_rating(0.95, 0.913, 0.015, 0.90) == pytest.approx((0.935 - 0.013 + 1) / 2)
    assert defense_effectiveness_rating(1.0, 1.0, 0.0, 1.0) == pytest.approx(1.0)
    assert defense_effectiveness_rating(0.0, 1.0, 1.0, 0.0) == pytest.approx(0.0)
    # a defense that raises ASR or accuracy is not rewarded for it
    assert defense_effectiveness_rating(0.2, 0.8, 0.5, 0.9) == pytest.approx(0.5)
