"""SEAM: random wrong labels, forgetting on a trained model, and recovery
that stops at its accuracy bound."""
import inspect

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from benchmark.models import build_model
from lightning_modules.defenses.seam import SelectiveAmnesia, random_wrong_labels


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # One store for the file: the backdoored model trains once.
    return tmp_path_factory.mktemp("seam") / "store"


def test_defaults_are_the_toolbox_ones():
    defaults = {k: p.default for k, p in inspect.signature(SelectiveAmnesia).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"target_label": 0, "augment": None, "epochs": 100, "forget_epochs": 10, "batch_size": 32,
                        "lr": 1e-3, "weight_decay": 0.0, "forget_fraction": 0.1, "forget_accuracy": None,
                        "recovery_accuracy": 0.97, "train_augment": False,
                        "mixed_precision": False}
    model = build_model("small_cnn", 10, 1, 16, [0.5], [0.25])
    assert SelectiveAmnesia(model, 10).forget_bound == pytest.approx(0.2)  # min(2/C, 0.6)
    assert SelectiveAmnesia(model, 3).forget_bound == pytest.approx(0.6)
    assert "momentum" not in SelectiveAmnesia(model, 10).config()


@pytest.mark.parametrize("bad", [{"forget_fraction": 0.0}, {"recovery_accuracy": 1.5}, {"lr": -1.0},
                                 {"forget_epochs": -1}])
def test_bad_values_raise_config_error(bad):
    name = next(iter(bad))
    with pytest.raises(ConfigError, match=rf"seam: {name}="):
        validate_params("seam", SelectiveAmnesia, bad)


def test_random_labels_are_wrong_uniform_and_seeded():
    labels = torch.arange(10).repeat(3000)
    drawn = random_wrong_labels(labels, 10, torch.Generator().manual_seed(3))
    assert not (drawn == labels).any()
    assert drawn.min() >= 0 and drawn.max() <= 9
    # every wrong class appears for each true class, about 1/9 of the time
    counts = torch.zeros(10, 10)
    counts.index_put_((labels, drawn), torch.ones(len(labels)), accumulate=True)
    off_diagonal = counts[~torch.eye(10, dtype=torch.bool)]
    assert off_diagonal.min() > 3000 / 9 * 0.75 and off_diagonal.max() < 3000 / 9 * 1.25
    again = random_wrong_labels(labels, 10, torch.Generator().manual_seed(3))
    other = random_wrong_labels(labels, 10, torch.Generator().manual_seed(4))
    assert torch.equal(drawn, again) and not torch.equal(drawn, other)


def test_forgetting_drives_forget_accuracy_below_the_bound(make_cell, store):
    cell = make_cell(store=store, defenses=("seam",),
                     defense_params={"seam": {"epochs": 0, "forget_fraction": 1.0}})
    attack = cell.execute(cell.job("attack", "badnets"))
    module = cell.train_defense("seam", attack)
    r = module.report
    assert r["forget_start_accuracy"] > 0.9  # the backdoored model knows its clean data
    assert r["forget_accuracy"] < r["forget_bound"] == pytest.approx(0.5)
    assert 1 <= r["forget_epochs"] < 10  # stopped by the bound, not by the epoch budget
    assert module.accuracy(cell.dm.train_set(cell.clean_idx)) == pytest.approx(r["forget_accuracy"])
    assert r["recovery_epochs"] == 0


@pytest.mark.parametrize("bound,epochs_run", [(0.0, 1), (1.0, 3)])
def test_recovery_stops_at_its_bound(make_cell, store, bound, epochs_run):
    cell = make_cell(store=store, defenses=("seam",),
                     defense_params={"seam": {"epochs": 3, "forget_epochs": 0, "recovery_accuracy": bound}})
    attack = cell.execute(cell.job("attack", "badnets"))
    module = cell.train_defense("seam", attack)
    assert module.report["recovery_epochs"] == epochs_run
    assert module.trainer.current_epoch == epochs_run
    assert module.report["forget_epochs"] == 0


def test_seam_in_a_cell(make_cell, store):
    cell = make_cell(store=store, defenses=("seam",))  # the fast params: 1 forget epoch, 1 recovery epoch
    attack = cell.execute(cell.job("attack", "badnets"))
    module = cell.train_defense("seam", attack)
    r = module.report
    assert r["forget_epochs"] == 1 and r["recovery_epochs"] == 1
    assert r["forget_set_size"] == max(1, int(0.1 * len(cell.clean_idx)))
    assert 0.0 <= r["recovery_accuracy"] <= 1.0
    assert module.export_weights().keys() == attack.tensors().keys()
