"""Every registered defense keeps the defense contract (benchmark.extension.contract):
it never calls the trigger and is served only its clean subset, with clean
pixels and true labels (indices the attacker poisoned included, as clean
images), in any of its hooks, including one-off preparation such as NAD's
teacher; its parameters are typed; it returns a complete, finite model."""
import pytest
import torch

from benchmark.extension.contract import check_defense_contract
from benchmark.triggers.base import PatternTrigger
from lightning_modules.defenses import DEFENSES, DefenseModule
from tests.conftest import FAST_DEFENSE_PARAMS


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_keeps_the_contract(name, tmp_path):
    module = check_defense_contract(name, FAST_DEFENSE_PARAMS.get(name, {}), tmp_path)
    assert module.model is not None


class _PeeksAtTheTrigger(DefenseModule):
    """A defense that breaks the rules: it stamps the trigger on its inputs."""

    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None, epochs: int = 1):
        super().__init__(model, num_classes, target_label, augment, epochs=epochs, batch_size=32)

    def training_loss(self, x, y):
        trigger = PatternTrigger(torch.ones(x.shape[1:]), torch.ones(x.shape[1:]))
        return super().training_loss(trigger(x), y)


class _Untyped(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None, epochs=1):
        super().__init__(model, num_classes, target_label, augment, epochs=epochs)


def test_contract_catches_a_defense_that_uses_the_trigger(tmp_path):
    with pytest.raises(AssertionError, match="called the trigger"):
        check_defense_contract(_PeeksAtTheTrigger, {"epochs": 1}, tmp_path)


def test_contract_requires_typed_parameters(tmp_path):
    with pytest.raises(AssertionError, match="'epochs' has no type hint"):
        check_defense_contract(_Untyped, {}, tmp_path)
