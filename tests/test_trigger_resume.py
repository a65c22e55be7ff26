"""Trigger preparations that train for epochs (Input-Aware's mask generator,
SSBA's encoder, LC's robust model) save their progress at epoch ends; a
preparation killed after an epoch goes on from there and ends in exactly
the state of a run that was never interrupted."""
import pytest
import torch

import benchmark.storage.checkpoints as checkpoints
from benchmark.storage.checkpoints import LoopCheckpoint, load_checkpoint_file
from benchmark.models import build_model
from benchmark.triggers import TRIGGERS
from benchmark.triggers.preparation import PreparationContext
from datamodules.synthetic import SyntheticDataModule

# Three epochs each, a few steps per epoch: the interruption falls after the first.
CASES = {
    "input_aware": {"mask_epochs": 3, "mask_batch_size": 32, "mask_milestones": (2,), "base_channels": 4,
                    "stages": 2},
    "ssba": {"epochs": 3, "batch_size": 32, "width": 4, "fingerprint_length": 8, "l2_loss_await": 0,
             "l2_loss_ramp": 2},
    "lc": {"robust_epochs": 3, "batch_size": 32, "robust_steps": 2, "steps": 3},
}


class Killed(Exception):
    """Stands for the job's process being killed right after a save."""


@pytest.fixture(scope="module")
def dm():
    data = SyntheticDataModule(num_train=96, num_test=32, num_classes=4, channels=1, size=16)
    data.setup()
    return data


def context(dm, path=None) -> PreparationContext:
    return PreparationContext(
        images=dm.train_images, labels=dm.train_labels, poison_indices=torch.nonzero(dm.train_labels == 0).flatten(),
        num_classes=dm.num_classes, target_label=0, seed=5, checkpoint_path=path,
        new_model=lambda: build_model("small_cnn", dm.num_classes, 1, 16, dm.mean, dm.std))


def prepared_state(name: str, ctx: PreparationContext) -> dict[str, torch.Tensor]:
    trigger = TRIGGERS.get(name)((1, 16, 16), **CASES[name])
    trigger.prepare(ctx)
    return trigger.state_dict()


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_killed_preparation_resumes_to_the_uninterrupted_result(name, dm, tmp_path, monkeypatch):
    reference = prepared_state(name, context(dm))  # no checkpoint path: nothing saved

    path = tmp_path / "fit-1.safetensors"
    save = LoopCheckpoint.epoch_end

    def save_then_die(self, epochs_done, last=False, **position):
        save(self, epochs_done, last, **position)
        if epochs_done == 1:
            raise Killed

    monkeypatch.setattr(checkpoints.LoopCheckpoint, "epoch_end", save_then_die)
    with pytest.raises(Killed):
        prepared_state(name, context(dm, path))
    assert load_checkpoint_file(path)["position"]["epoch"] == 1

    epochs_run = []
    monkeypatch.setattr(checkpoints.LoopCheckpoint, "epoch_end",
                        lambda self, epochs_done, last=False, **position: (
                            epochs_run.append(epochs_done), save(self, epochs_done, last, **position)))
    resumed = prepared_state(name, context(dm, path))
    assert epochs_run == [2, 3]  # the first epoch was not trained again
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), f"{name}: {key} differs after resuming"


def test_a_preparation_stopped_by_its_step_cap_resumes_as_finished(dm, tmp_path):
    """Input-Aware checks its step cap after a step: a resumed run must not
    take one more step."""
    options = {**CASES["input_aware"], "max_mask_steps": 4}  # 3 batches per epoch: stops in epoch 2
    path = tmp_path / "fit-1.safetensors"
    first = TRIGGERS.get("input_aware")((1, 16, 16), **options)
    first.prepare(context(dm, path))
    assert load_checkpoint_file(path)["position"] == {"epoch": 3, "steps": 4, "history": first.mask_history}
    again = TRIGGERS.get("input_aware")((1, 16, 16), **options)
    again.prepare(context(dm, path))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


def test_loop_checkpoint_restores_modules_optimisers_schedules_and_generators(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimiser, [1, 3], gamma=0.5)
    generator = torch.Generator().manual_seed(3)
    model(torch.ones(1, 3)).sum().backward()
    optimiser.step()
    schedule.step()
    torch.rand(1, generator=generator)
    saving = LoopCheckpoint(tmp_path / "loop.safetensors", 2, model=model, optimiser=optimiser, schedule=schedule,
                            generator=generator)
    saving.epoch_end(1, epoch=1)
    assert not (tmp_path / "loop.safetensors").exists()  # not a multiple of the interval, not the last
    saving.epoch_end(2, epoch=2, note="kept")
    expected = {"weight": model.weight.detach().clone(), "draw": torch.rand(1, generator=generator),
                "lr": optimiser.param_groups[0]["lr"]}

    model2 = torch.nn.Linear(3, 2)
    optimiser2 = torch.optim.Adam(model2.parameters(), lr=0.1)
    schedule2 = torch.optim.lr_scheduler.MultiStepLR(optimiser2, [1, 3], gamma=0.5)
    generator2 = torch.Generator().manual_seed(99)
    position = LoopCheckpoint(tmp_path / "loop.safetensors", 2, model=model2, optimiser=optimiser2,
                              schedule=schedule2, generator=generator2).resume()
    assert position == {"epoch": 2, "note": "kept"}
    assert torch.equal(model2.weight, expected["weight"])
    assert torch.equal(torch.rand(1, generator=generator2), expected["draw"])
    assert optimiser2.param_groups[0]["lr"] == expected["lr"] == 0.05
    assert optimiser2.state_dict()["state"][0]["step"] == 1
    # the schedule goes on where it was: the next milestone (3) halves the rate again
    for _ in range(2):
        optimiser2.step()
        schedule2.step()
    assert optimiser2.param_groups[0]["lr"] == 0.025


def test_without_a_path_nothing_is_saved_or_resumed(tmp_path):
    model = torch.nn.Linear(2, 2)
    loop = LoopCheckpoint(None, model=model)
    loop.epoch_end(1, last=True, epoch=1)
    assert loop.resume() == {}
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="positive number of epochs"):
        LoopCheckpoint(tmp_path / "x", every=0)


def test_a_killed_trigger_stage_of_a_cell_resumes_from_the_store(tmp_path, monkeypatch):
    """Through the cell: the stage's progress lives in the store's temporary
    area, a second run goes on from it, and it goes when the artifact lands."""
    from benchmark.cell import Cell
    from benchmark.storage.store import ArtifactStore
    from tests.conftest import fast_spec

    spec = fast_spec(attack="lc", defenses=(), reactivations=(), controls=False,
                     trigger_params={**CASES["lc"], "robust_epochs": 2})

    def cell(store):
        return Cell(spec, ArtifactStore(store), data_dir=tmp_path / "data", accelerator="cpu", progress=False,
                    checkpoint_every=1)

    whole, resumed = cell(tmp_path / "whole"), cell(tmp_path / "resumed")
    for run in (whole, resumed):
        for job in run.jobs[:[j.kind for j in run.jobs].index("trigger")]:
            run.execute(job)
    target = whole.job("trigger", "lc")
    whole.execute(target)

    save = LoopCheckpoint.epoch_end

    def save_then_die(self, epochs_done, last=False, **position):
        save(self, epochs_done, last, **position)
        raise Killed

    monkeypatch.setattr(checkpoints.LoopCheckpoint, "epoch_end", save_then_die)
    with pytest.raises(Killed):
        resumed.execute(resumed.job("trigger", "lc"))
    saved = resumed.store.checkpoint_dir("trigger", target.key) / "fit-1.safetensors"
    assert load_checkpoint_file(saved)["position"] == {"epoch": 1, "step": 16}  # 512 images, batches of 32
    monkeypatch.setattr(checkpoints.LoopCheckpoint, "epoch_end", save)
    resumed.execute(resumed.job("trigger", "lc"))
    assert not saved.parent.exists()
    a, b = whole.store.load("trigger", target.key).tensors(), resumed.store.load("trigger", target.key).tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
