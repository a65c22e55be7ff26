"""FP: ranking by mean head input, the clean-subset stopping rule, the
reference's selection as an option, and a mask that holds through fine-tuning."""
import inspect

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from benchmark.training import TrainerFactory
from datamodules.tensor_dataset import IndexedImages, keep_batch
from lightning_modules.defenses.fp import FinePruning, relative_change

# Ten features whose clean means are 0.05 ... 0.9, at shuffled positions.
MEANS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
POSITION = [7, 2, 9, 0, 4, 6, 1, 8, 3, 5]  # feature POSITION[r] has the r-th smallest mean
A, B = POSITION[4], POSITION[9]             # the two features the head reads



class FeatureModel(nn.Module):
    """The 10 pixels of a 1x1x10 image are the features; logit_0 = 3 f_A,
    logit_1 = 1.2 f_B (f_A is the 5th least active feature, f_B the most)."""
    head_layer = "head"

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(10, 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[0, A] = 3.0
            self.head.weight[1, B] = 1.2

    def forward(self, x):
        return self.head(x.flatten(1))


def feature_data(n: int = 40) -> IndexedImages:
    """Class 0: f_A = 0.6, class 1: f_A = 0.2 (mean 0.4); every other feature at its mean."""
    x = torch.zeros(n, 1, 1, 10)
    for rank, pos in enumerate(POSITION):
        x[..., pos] = MEANS[rank]
    labels = torch.arange(n) % 2
    x[labels == 0, ..., A] = 0.6
    x[labels == 1, ..., A] = 0.2
    return IndexedImages(x.mul(255).round().to(torch.uint8), labels, torch.arange(n) + 100)


def least_active(count: int) -> set[int]:
    return set(POSITION[:count])


def test_fp_in_a_cell_prunes_head_columns_and_keeps_state_dict_keys(make_cell):
    cell = make_cell(defenses=("fp",))
    attack = cell.execute(cell.job("attack", "badnets"))
    keys = list(cell.load_model(attack).state_dict())
    module = cell.train_defense("fp", attack)
    r = module.report
    assert r["features"] == 64 and r["prune_step"] == 1  # small CNN head: 4 * 16 inputs, ceil(0.64) = 1
    assert r["pruned_features"] == len(r["pruned_indices"]) < 64
    assert r["clean_subset_acc_curve"][0] == [0, r["clean_subset_acc_start"]]
    weights = module.export_weights()
    assert sorted(weights) == sorted(keys)  # the mask is folded: no weight_orig / weight_mask
    head = weights[f"{module.head_name}.weight"]
    assert torch.all(head[:, r["pruned_indices"]] == 0)


def test_prunes_least_active_first_and_stops_before_the_drop():
    fp = FinePruning(FeatureModel(), 2, once_prune_ratio=0.1, epochs=0)  # step ceil(10 * 0.1) = 1
    data = feature_data()
    means = fp.mean_head_input(data)
    assert torch.allclose(means[POSITION], torch.tensor(MEANS), atol=1 / 255)
    fp.prepare(data, None)
    r = fp.report
    # k = 1..4 prune features that the head ignores (accuracy stays 1.0);
    # k = 5 prunes f_A, every prediction becomes class 1 (0.5, a drop of 50 %): stop, keep k = 4.
    assert [k for k, _ in r["clean_subset_acc_curve"]] == [0, 1, 2, 3, 4, 5]
    assert [a for _, a in r["clean_subset_acc_curve"]] == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    assert r["pruned_features"] == 4 and r["pruned_indices"] == POSITION[:4]
    assert r["clean_subset_acc_pruned"] == 1.0
    fp.finalize()
    w = fp.model.head.weight
    assert set(torch.nonzero(torch.all(w == 0, dim=0)).flatten().tolist()) >= least_active(4)
    assert w[0, A] == 3.0


def test_reference_selection_prunes_k_minus_one_and_keeps_the_crossing_step():
    fp = FinePruning(FeatureModel(), 2, once_prune_ratio=0.1, epochs=0, reference_selection=True)
    fp.prepare(feature_data(), None)
    r = fp.report
    # Step k masks k - 1 features, so f_A (5th) goes at k = 6, and the
    # reference's aliased `last_net` is the model of that crossing step.
    assert [a for _, a in r["clean_subset_acc_curve"]] == [1.0] * 6 + [0.5]
    assert r["pruned_features"] == 5 and r["pruned_indices"] == POSITION[:5]
    assert r["clean_subset_acc_pruned"] == 0.5


def test_pruned_columns_stay_zero_through_fine_tuning():
    fp = FinePruning(FeatureModel(), 2, once_prune_ratio=0.1, epochs=3, lr=0.5, batch_size=8)
    data = feature_data()
    fp.prepare(data, None)
    loader = DataLoader(data, batch_size=8, shuffle=True, collate_fn=keep_batch)
    TrainerFactory(accelerator="cpu", progress=False).fit(fp, loader, fp.hparams.epochs)
    fp.finalize()
    state = fp.model.state_dict()
    assert set(state) == {"head.weight", "head.bias"}  # mask folded in, no weight_orig / weight_mask
    pruned = sorted(least_active(4))
    kept = sorted(set(range(10)) - least_active(4))
    assert torch.all(state["head.weight"][:, pruned] == 0)
    # It did train: gradients reach every column, only the mask keeps the pruned ones at 0.
    assert not torch.equal(state["head.weight"][:, kept], FeatureModel().head.weight[:, kept])


def test_stopping_statistic_is_absolute_relative_change():
    assert relative_change(0.85, 0.95) == pytest.approx(0.10 / 0.95)
    assert relative_change(1.0, 0.8) == pytest.approx(0.25)  # a rise counts too, as in the reference
    assert relative_change(0.0, 0.0) == 0.0


def test_defaults_are_backdoorbench_cifar10():
    defaults = {k: p.default for k, p in inspect.signature(FinePruning).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"target_label": 0, "augment": None, "epochs": 100, "batch_size": 256, "lr": 0.01,
                        "momentum": 0.9, "weight_decay": 5e-4, "acc_ratio": 0.1, "once_prune_ratio": 0.01,
                        "reference_selection": False}


@pytest.mark.parametrize("param,value", [("acc_ratio", 0.0), ("acc_ratio", 1.5), ("once_prune_ratio", 0.0),
                                         ("once_prune_ratio", 2.0)])
def test_bad_values_raise_config_error(param, value):
    with pytest.raises(ConfigError, match=rf"fp: {param}={value}"):
        validate_params("fp", FinePruning, {param: value})


def test_model_without_linear_head_is_refused():
    model = FeatureModel()
    model.head_layer = None
    with pytest.raises(ConfigError, match="fp: FeatureModel has no Linear classifier head"):
        FinePruning(model, 2)
