"""The GPU path of poisoning: the whole batch triggered and the poisoned rows
kept (no host synchronisation) gives exactly the masked path's batch, for
every trigger that declares itself row-wise; the others keep the masked path."""
import pytest
import torch

from benchmark.models import build_model
from benchmark.triggers import TRIGGERS, build_trigger
from lightning_modules.attacks.base import AttackModule

SHAPE = (3, 16, 16)


def _trigger(name):
    trigger = build_trigger(name, SHAPE, seed=0, **({"size": 4} if name == "badnets" else {}))
    g = torch.Generator().manual_seed(1)
    if name == "lf":
        trigger.load_state_dict({"pattern": (torch.rand(SHAPE, generator=g) - 0.5) * 0.2})
    if name == "trojannn":
        mask = (torch.rand(SHAPE, generator=g) > 0.8).float()
        trigger.load_state_dict({"pattern": torch.rand(SHAPE, generator=g) * mask, "mask": mask,
                                 "neuron_indices": torch.tensor([0, 1])})
    return trigger


@pytest.mark.parametrize("name", ["badnets", "blended", "sig", "lf", "trojannn", "wanet"])
def test_whole_batch_poisoning_equals_the_masked_path(name):
    trigger = _trigger(name)
    assert trigger.rowwise
    poisoned = torch.tensor([3, 5, 6, 11])
    module = AttackModule(build_model("small_cnn", 10, 3, 16, (0.5,) * 3, (0.5,) * 3), 10, trigger, poisoned,
                          num_train=16, target_label=2)
    x = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(2))
    y = torch.arange(8) % 10
    idx = torch.tensor([0, 3, 4, 5, 8, 11, 12, 15])
    module.whole_batch_poisoning = False
    masked = module.prepare_batch(x, y, idx)
    module.whole_batch_poisoning = True
    whole = module.prepare_batch(x, y, idx)
    assert torch.equal(masked[0], whole[0]) and torch.equal(masked[1], whole[1])
    changed = (masked[0] != x).flatten(1).any(1)
    assert changed.tolist() == [False, True, False, True, False, True, False, False]
    assert whole[1].tolist() == [0, 2, 2, 2, 4, 2, 6, 7]


def test_index_dependent_triggers_are_not_row_wise():
    assert not TRIGGERS.get("lc").rowwise  # swaps in each sample's own adversarial image


def test_a_replaced_pattern_is_used_not_its_cached_device_copy():
    trigger = _trigger("lf")
    x = torch.full((1, *SHAPE), 0.5)
    first = trigger(x)
    trigger.load_state_dict({"pattern": torch.full(SHAPE, 0.25)})
    assert torch.allclose(trigger(x), torch.full_like(x, 0.75))
    assert not torch.equal(first, trigger(x))
