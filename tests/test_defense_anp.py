"""ANP: masks under adversarial neuron noise, pruning by a threshold chosen
on the clean subset, and a plain exported model."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from datamodules.tensor_dataset import IndexedImages
from lightning_modules.defenses.anp import (AdversarialNeuronPruning, choose_threshold, rounded_masks,
                                            threshold_grid)


class TwoChannel(nn.Module):
    """conv 1x1 -> BN -> ReLU -> mean -> linear. Channel 0 sees x, channel 1
    sees -x; the head reads both as evidence for class 1, so channel 1 (high
    on dark, class-0 images) makes every class-0 image wrong: clean data
    alone says its mask should go to 0, and channel 0's should stay at 1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 3.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, -1.0]))

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def two_channel_case(n=64):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    level = torch.where(labels == 1, 0.6 + 0.4 * torch.rand(n, generator=g), 0.4 * torch.rand(n, generator=g))
    images = (level.view(n, 1, 1, 1) + 0.05 * torch.rand(n, 1, 4, 4, generator=g)).clamp(0, 1)
    model = TwoChannel().train()
    with torch.no_grad():  # settle the running statistics on this data
        for _ in range(60):
            model(images)
    return model.eval(), IndexedImages(images, labels)


def test_defaults_are_backdoorbench_cifar10():
    defaults = {k: p.default for k, p in inspect.signature(AdversarialNeuronPruning).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"target_label": 0, "augment": None, "epochs": 0, "batch_size": 256, "lr": 0.01,
                        "momentum": 0.9, "iterations": 2000, "eps": 0.4, "noise_steps": 1, "alpha": 0.2,
                        "pruning_max": 0.9, "pruning_step": 0.05, "acc_ratio": 0.1, "pruning_threshold": None,
                        "pruning_number": None, "train_augment": True}


@pytest.mark.parametrize("bad,match", [({"epochs": 5}, "anp: epochs=5"), ({"eps": -0.1}, "anp: eps="),
                                       ({"pruning_threshold": 0.2, "pruning_number": 3}, "at most one"),
                                       ({"acc_ratio": 0.0}, "anp: acc_ratio=")])
def test_bad_values_raise_config_error(bad, match):
    # As the runner does: values checked against the typed signature, then the module built.
    with pytest.raises(ConfigError, match=match):
        AdversarialNeuronPruning(TwoChannel(), 2, **validate_params("anp", AdversarialNeuronPruning, bad))


def test_threshold_grid_and_rounding_match_the_reference():
    grid = threshold_grid(0.9, 0.05)
    assert len(grid) == 19 and grid[0] == 0.0 and grid[-1] == 0.9 and grid[4] == 0.2
    # masks are ranked as printed with four decimals: 0.20004 counts as 0.2
    assert rounded_masks(torch.tensor([0.20004, 0.20006], dtype=torch.float64)).tolist() == [0.2, 0.2001]


def test_choose_threshold_keeps_the_largest_admissible_one():
    # drops relative to 0.8: 0, 0.0625, 0.125 (too much), 0.0625, 0.25
    assert choose_threshold([0.8, 0.75, 0.7, 0.75, 0.6], 0.8, 0.1) == 3
    assert choose_threshold([0.5, 0.4], 0.8, 0.1) is None
    # a rise in clean accuracy is no damage (the reference's |change| would veto it)
    assert choose_threshold([0.8, 1.0], 0.8, 0.1) == 1


def test_harmful_neuron_mask_driven_to_zero_and_pruned():
    model, data = two_channel_case()
    module = AdversarialNeuronPruning(model, 2, iterations=100, batch_size=32, train_augment=False)
    seen = []
    original_accuracy = module.accuracy

    def spy(dataset, *args, **kwargs):
        seen.append(dataset)
        return original_accuracy(dataset, *args, **kwargs)

    module.accuracy = spy
    running_mean = model.bn.running_mean.clone()
    module.prepare(data, fit=None)
    mask = module.masks["bn"]
    assert mask[1].item() == 0.0 and mask[0].item() == 1.0
    assert model.bn.weight.tolist() == [1.0, 0.0]          # channel 1 pruned: BN weight zeroed
    assert model.bn.bias.tolist() == [0.0, 0.0]
    assert torch.equal(model.bn.running_mean, running_mean)  # mask training ran on a copy
    r = module.report
    assert r["pruned_per_layer"] == {"bn": [1]} and r["threshold"] == 0.9
    assert r["clean_subset_acc_before"] < 0.6 and r["clean_subset_acc_after"] == 1.0
    # every selection decision was scored on the clean subset, nothing else
    assert seen and all(d is data for d in seen)


def test_masks_stay_in_unit_interval_and_target_label_is_ignored():
    runs = []
    for target in (0, 1):
        model, data = two_channel_case()
        torch.manual_seed(5)
        module = AdversarialNeuronPruning(model, 2, target, iterations=15, lr=5.0, batch_size=16,
                                          train_augment=False)
        module.prepare(data, fit=None)
        runs.append((module.masks["bn"].clone(), module.report))
    masks = runs[0][0]
    assert masks.min() >= 0.0 and masks.max() <= 1.0
    assert masks.min() == 0.0 and masks.max() == 1.0  # pushed against both ends, then clipped
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


def test_fixed_threshold_and_number_options():
    masks = {"bn": torch.tensor([0.3, 0.1])}
    model, data = two_channel_case()
    module = AdversarialNeuronPruning(model, 2, pruning_number=1)
    module.masks = masks
    module.prune(data)
    assert model.bn.weight.tolist() == [1.0, 0.0] and module.report["selection"] == "fixed number"
    model, data = two_channel_case()
    module = AdversarialNeuronPruning(model, 2, pruning_threshold=0.3)
    module.masks = masks
    module.prune(data)
    assert model.bn.weight.tolist() == [0.0, 0.0] and module.report["threshold"] == 0.3


def test_anp_in_a_cell_exports_a_plain_model(make_cell):
    cell = make_cell(defenses=("anp",))
    attack = cell.execute(cell.job("attack", "badnets"))
    module = cell.train_defense("anp", attack)
    before, after = attack.tensors(), module.export_weights()
    assert sorted(after) == sorted(before)
    bn_weights = {f"{name}.weight" for name in module.bn_names}
    for key in before:
        assert after[key].shape == before[key].shape and after[key].dtype == before[key].dtype
        if key not in bn_weights:  # running statistics included: only BN weights may change
            assert torch.equal(after[key], before[key]), key
    assert module.report["selection"] == "clean-subset accuracy sweep"
    assert len(module.report["sweep"]) == 19
    assert all(0.0 <= m.min() and m.max() <= 1.0 for m in module.masks.values())
