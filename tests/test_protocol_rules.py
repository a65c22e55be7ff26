"""The protocol rules a reviewer checks first, pinned so they cannot drift:

1. The defender's clean subset is drawn from every training index and served
   with clean pixels and true labels (BackdoorBench `defense/ft.py`,
   `utils/choose_index.py`); excluding poisoned indices is an option. For
   clean-label attacks the exclusion leaves the defender without the target
   class.
2. The re-activation attacker's samples (and the gUAA control's) are
   non-target training images: for SIG and LC, whose poisoned indices are all
   target-class images, any non-target image with the trigger.
3. An attack's own options (`attack_params`) reach its training module from a
   cell and a grid, are validated and are part of f_A's key.
"""
from unittest import mock

import pytest
import torch

from benchmark.cli import build_parser
from benchmark.extension.contract import check_defense_contract, check_reactivation_contract
from benchmark.errors import ConfigError
from benchmark.cell import CellSpec
from datamodules.base import BackdoorDataModule
from lightning_modules.attacks.base import AttackModule
from lightning_modules.attacks.wanet import WaNetAttackModule
from sweeps.grid import load_grid
from tests.conftest import FAST_TRIGGER_PARAMS


# ---- 1. the defender's clean subset -------------------------------------------------------
def test_clean_subset_is_drawn_from_every_index_by_default(make_cell):
    cell = make_cell(poison_rate=0.3, clean_ratio=0.3)
    poisoned, clean = set(cell.poison_idx.tolist()), set(cell.clean_idx.tolist())
    assert poisoned & clean, "the default subset must be able to hold indices the attacker poisoned"
    # the subset is a uniform draw: about the poison rate of it was poisoned
    assert 0.15 < len(poisoned & clean) / len(clean) < 0.45
    assert cell.spec.clean_subset == "any"


def test_non_poisoned_option_keeps_the_old_exclusion(make_cell):
    cell = make_cell(poison_rate=0.3, clean_ratio=0.3, clean_subset="non_poisoned")
    assert not set(cell.poison_idx.tolist()) & set(cell.clean_idx.tolist())


def test_clean_label_defender_sees_the_target_class(make_cell):
    # SIG at a rate that poisons every target-class image (as 0.1 does on
    # CIFAR-10 and Fashion-MNIST): the default subset still holds target-class
    # images, the exclusion option none at all.
    cell = make_cell(attack="sig", trigger_params={}, poison_rate=0.3, clean_ratio=0.2)
    labels = cell.dm.train_labels
    assert bool((labels[cell.poison_idx] == 0).all()) and int((labels == 0).sum()) == len(cell.poison_idx)
    share = float((labels[cell.clean_idx] == 0).float().mean())
    assert share > 0.1  # about 1/4 on the 4-class synthetic data
    excluded = make_cell(attack="sig", trigger_params={}, poison_rate=0.3, clean_ratio=0.2,
                         clean_subset="non_poisoned")
    assert int((labels[excluded.clean_idx] == 0).sum()) == 0


def test_the_defense_key_names_the_subset_rule(make_cell, tmp_path):
    a = make_cell(store=tmp_path / "a").job("defense", "ft")
    b = make_cell(store=tmp_path / "b", clean_subset="non_poisoned").job("defense", "ft")
    assert a.key != b.key and a.config["clean_subset"] == "any"


def test_defense_contract_catches_triggered_pixels_and_flipped_labels(tmp_path):
    # a broken runner: the defender's subset served as the attacker trained on it
    train_set = BackdoorDataModule.train_set

    def poisoned_view(self, indices=None):
        from datamodules.tensor_dataset import IndexedImages
        if indices is None:  # the attacker's own training set
            return train_set(self)
        images, labels = self.train_images[indices].clone(), self.train_labels[indices].clone()
        labels[:] = 0  # flipped to the target
        images[:, :, -4:, -4:] = 255  # a white corner patch
        return IndexedImages(images, labels, indices)

    with mock.patch.object(BackdoorDataModule, "train_set", poisoned_view):
        with pytest.raises(AssertionError, match="modified pixels|labels other than"):
            check_defense_contract("ft", {"epochs": 1}, tmp_path)


# ---- 2. the attacker's samples -----------------------------------------------------------
def test_attacker_samples_are_non_target_poisoned_images_for_dirty_label_attacks(make_cell):
    cell = make_cell(poison_rate=0.3)
    pool, labels = cell.ctx.attacker_pool, cell.dm.train_labels
    assert set(pool.tolist()) <= set(cell.poison_idx.tolist())
    assert bool((labels[pool] != 0).all())
    assert len(pool) == int((labels[cell.poison_idx] != 0).sum())
    raw = make_cell(poison_rate=0.3, attacker_samples="poisoned")
    assert torch.equal(raw.ctx.attacker_pool, raw.poison_idx)


@pytest.mark.parametrize("attack", ["sig", "lc"])
def test_attacker_samples_for_clean_label_attacks_are_non_target_images(make_cell, attack):
    cell = make_cell(attack=attack, trigger_params=FAST_TRIGGER_PARAMS[attack], poison_rate=0.3)
    labels = cell.dm.train_labels
    pool = cell.ctx.attacker_pool
    assert bool((labels[cell.poison_idx] == 0).all())  # every poisoned index is target-class
    assert torch.equal(pool, torch.nonzero(labels != 0).flatten())


def test_reactivation_and_guaa_fit_on_non_target_images_and_keys_name_the_rule(make_cell, tmp_path):
    cell = make_cell(attack="sig", trigger_params={}, defenses=("ft",), poison_rate=0.3)
    fitted = []
    fit = cell.ctx.trainers.fit

    def spy(module, loader, epochs, **kwargs):
        fitted.append((type(module).__name__, loader.dataset.labels.clone(), loader.dataset.indices.clone()))
        return fit(module, loader, epochs, **kwargs)

    for kind in ("reactivation", "guaa"):
        job = cell.job(kind, "wba vs ft")
        for dep in job.deps.values():
            for inner in dep.deps.values():
                cell.execute(inner)
            cell.execute(dep)
        with mock.patch.object(cell.ctx.trainers, "fit", spy):
            cell.execute(job)
        assert job.config["attacker_samples"] == "non_target"
    assert len(fitted) == 2
    for _, labels, indices in fitted:
        assert bool((labels != 0).all())
        assert torch.equal(labels, cell.dm.train_labels[indices])
    other = make_cell(store=tmp_path / "other", attack="sig", trigger_params={}, defenses=("ft",),
                      poison_rate=0.3, attacker_samples="poisoned")
    assert other.job("reactivation", "wba vs ft").key != cell.job("reactivation", "wba vs ft").key


def test_reactivation_contract_catches_target_class_samples(tmp_path):
    with mock.patch.object(BackdoorDataModule, "attacker_pool",
                           lambda self, poisoned, target, rule="non_target": poisoned):
        with pytest.raises(AssertionError, match="target-class images"):
            check_reactivation_contract("wba", {"epochs": 1, "num_samples": 64, "batch_size": 32}, tmp_path)


# ---- 3. attack options -----------------------------------------------------------------------
def test_attack_params_route_to_the_module_or_the_trigger():
    spec = CellSpec(dataset="synthetic", attack="wanet", attack_params={"cross_ratio": 1, "k": 2})
    spec.validate()
    assert spec.attack_params == {"cross_ratio": 1.0}
    assert spec.trigger_params == {"k": 2}
    spec.validate()  # idempotent
    assert spec.attack_params == {"cross_ratio": 1.0} and spec.trigger_params == {"k": 2}


@pytest.mark.parametrize("params,message", [
    ({"cross_ratio": -1}, "cross_ratio"),
    ({"backdoor_rows": "some"}, "backdoor_rows"),
    ({"nonsense": 1}, "unknown parameter 'nonsense'.*cross_ratio"),
])
def test_bad_attack_params_are_one_line_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        CellSpec(dataset="synthetic", attack="wanet", attack_params=params).validate()


def test_a_trigger_option_given_twice_differently_is_refused():
    with pytest.raises(ConfigError, match="given twice"):
        CellSpec(dataset="synthetic", attack="badnets", trigger_params={"size": 3},
                 attack_params={"size": 4}).validate()


def test_attack_params_reach_the_module_and_the_key(make_cell, tmp_path):
    seen = []
    prepare = WaNetAttackModule.prepare_batch

    def spy(self, x, y, idx):
        seen.append((self.hparams.cross_ratio, self.hparams.backdoor_rows))
        return prepare(self, x, y, idx)

    cell = make_cell(attack="wanet", trigger_params={}, epochs=1,
                     attack_params={"cross_ratio": 0.5, "backdoor_rows": "indices"})
    job = cell.job("attack", "wanet")
    assert job.config["module"] == {"cross_ratio": 0.5, "backdoor_rows": "indices"}
    with mock.patch.object(WaNetAttackModule, "prepare_batch", spy):
        cell.execute(job)
    assert seen and set(seen) == {(0.5, "indices")}
    default = make_cell(store=tmp_path / "other", attack="wanet", trigger_params={}, epochs=1)
    assert default.job("attack", "wanet").key != job.key
    # f_C is the clean model: the attack's options never train it
    assert default.job("train", "clean model").key == cell.job("train", "clean model").key


def test_the_attack_stage_fits_the_epochs_the_module_asks_for(make_cell):
    cell = make_cell(epochs=3)
    calls = []
    fit = cell.ctx.trainers.fit

    def spy(module, loader, epochs, **kwargs):
        calls.append(epochs)
        return fit(module, loader, epochs, **kwargs)

    with mock.patch.object(AttackModule, "fit_epochs", lambda self, cell_epochs: cell_epochs - 2), \
            mock.patch.object(cell.ctx.trainers, "fit", spy):
        cell.execute(cell.job("attack", "badnets"))
    assert calls == [1]


def test_grid_attack_params_reach_the_module(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("name: g\ndatasets: [synthetic]\narchs: [small_cnn]\nattacks: [wanet, badnets]\n"
                         "defenses: [ft]\nreactivations: [wba]\nseeds: [0]\n"
                         "attack_params: {wanet: {cross_ratio: 1, k: 2}, badnets: {size: 4}}\n")
    specs = {s.attack: s for s in load_grid(grid_file).cells()}
    assert specs["wanet"].attack_params == {"cross_ratio": 1.0} and specs["wanet"].trigger_params == {"k": 2}
    assert specs["badnets"].attack_params == {} and specs["badnets"].trigger_params == {"size": 4}
    grid_file.write_text(grid_file.read_text().replace("cross_ratio: 1", "cross_ratio: x"))
    with pytest.raises(ConfigError, match="cross_ratio"):
        load_grid(grid_file)


def test_help_lists_every_attack_option():
    cell = build_parser()._subparsers._group_actions[0].choices["cell"]
    text = " ".join(cell.format_help().split())
    for option in ("backdoor_rows='per_batch'", "cross_ratio=2.0", "augmentation_draws='per_batch'"):
        assert option in text
    assert "--attack-params" in text


def test_an_attack_epoch_budget_it_cannot_meet_fails_at_planning(make_cell):
    # Input-Aware counts its mask epochs against the cell's (BackdoorBench:
    # 25 mask + 75 joint = 100): 2 epochs with 25 mask epochs cannot be planned.
    with pytest.raises(ConfigError, match="mask_epochs=25"):
        make_cell(attack="input_aware", epochs=2, trigger_params={"max_mask_steps": 4})
