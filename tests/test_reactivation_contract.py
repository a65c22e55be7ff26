"""Every registered re-activation method keeps the re-activation contract
(benchmark.extension.contract): typed parameters, frozen victim (weights and BatchNorm
statistics), delta within its budget, queries within their budget."""
import pytest
import torch

from benchmark.extension.contract import check_reactivation_contract
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.wba import WhiteBoxReactivation

FAST = {"wba": {"epochs": 1, "num_samples": 32, "batch_size": 16},
        "qbra": {"max_queries": 40, "num_samples": 32, "batch_size": 32, "curve": (10, 40)},
        "tbra": {"epochs": 1, "num_samples": 32, "batch_size": 16}}


@pytest.mark.parametrize("name", REACTIVATIONS.names())
def test_reactivation_keeps_the_contract(name, tmp_path):
    metrics = check_reactivation_contract(name, FAST.get(name, {}), tmp_path)
    assert 0.0 <= metrics["test/asr"] <= 1.0


class _TouchesWeights(WhiteBoxReactivation):
    """Breaks the rules: nudges the victim's weights while attacking it."""

    def training_step(self, batch, batch_idx):
        with torch.no_grad():
            next(self.model.parameters()).add_(0.01)
        return super().training_step(batch, batch_idx)


def test_contract_catches_a_method_that_moves_the_victim(tmp_path):
    with pytest.raises(AssertionError, match="changed .* of a model it attacked"):
        check_reactivation_contract(_TouchesWeights, FAST["wba"], tmp_path)
