"""Every registered defense, discovered from the registry: it must never call
the trigger and never receive a poisoned sample (by index or by pixels), in
any of its hooks, including one-off preparation such as NAD's teacher."""
import pytest
import torch

from benchmark.triggers.base import Trigger
from datamodules.tensor_dataset import IndexedImages
from lightning_modules.defenses import DEFENSES


@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_sees_only_clean_subset_and_never_the_trigger(name, make_cell, monkeypatch):
    cell = make_cell(defenses=(name,))
    attack = cell.execute(cell.job("attack", "badnets"))

    served: list[tuple[torch.Tensor, torch.Tensor]] = []
    original_getitems = IndexedImages.__getitems__

    def spy_getitems(self, positions):
        batch = original_getitems(self, positions)
        served.append((batch[0].clone(), batch[2].clone()))
        return batch

    def forbidden_trigger(self, images):
        raise AssertionError(f"defense {name!r} called the trigger")

    monkeypatch.setattr(IndexedImages, "__getitems__", spy_getitems)
    monkeypatch.setattr(Trigger, "__call__", forbidden_trigger)
    module = cell.train_defense(name, attack)
    monkeypatch.undo()

    assert module.model is not None
    poisoned = set(cell.poison_idx.tolist())
    clean = set(cell.clean_idx.tolist())
    for images, indices in served:
        idx = set(indices.tolist())
        assert idx <= clean, f"{name} saw samples outside the clean subset"
        assert not idx & poisoned
        assert torch.equal(images, cell.dm.train_images[indices].float() / 255), f"{name} saw modified pixels"
    if module.hparams.epochs > 0:
        assert served, f"{name} trains but was never served data"
