"""Every registered attack through a whole cell on synthetic data: its
trigger stage (when it has one) runs once and is shared through the store,
f_A learns the backdoor's shape of data, defenses, BEC and re-activation
run on it, and a second run recomputes nothing."""
import pytest
import torch

from benchmark.training import TrainerFactory
from benchmark.triggers import TRIGGERS
from lightning_modules.attacks import ATTACKS
from tests.conftest import FAST_TRIGGER_PARAMS

ATTACK_NAMES = [n for n in ATTACKS.names() if ATTACKS.get(n).trigger is not None]


def test_every_attack_has_fast_test_parameters():
    assert sorted(FAST_TRIGGER_PARAMS) == sorted(ATTACK_NAMES)


@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_attack_runs_in_a_cell(make_cell, attack, monkeypatch):
    kwargs = dict(attack=attack, defenses=("ft",), trigger_params=FAST_TRIGGER_PARAMS[attack], epochs=2,
                  controls=False)
    cell = make_cell(**kwargs)
    preset = ATTACKS.get(attack)
    trigger_cls = TRIGGERS.get(preset.trigger)
    prepared = [j for j in cell.jobs if j.kind == "trigger"]
    assert len(prepared) == (trigger_cls.preparation != "none")
    attack_job = cell.job("attack", attack)
    if prepared:  # f_A and everything after it depend on the trigger's artifact
        assert attack_job.deps["trigger"] is prepared[0]
        assert ("clean" in prepared[0].deps) == (trigger_cls.preparation == "clean_model")
    rows = cell.run()
    assert [r["model"] for r in rows] == ["clean", "backdoored", "ft"]
    for r in rows:
        assert 0.0 <= r["asr"] <= 1.0 and 0.0 <= r["react_asr:wba"] <= 1.0
    if preset.clean_label:  # poisoned samples are target-class samples with their labels
        assert bool((cell.dm.train_labels[cell.poison_idx] == cell.spec.target_label).all())
    # The trigger the later jobs use changes images and is the stored one.
    x = cell.dm.test_images[:8].float().div(255)
    assert not torch.equal(cell.trigger(x), x)

    def no_work(*args, **kwargs):
        raise AssertionError("a stage was recomputed although the store has it")

    monkeypatch.setattr(TrainerFactory, "fit", no_work)
    monkeypatch.setattr(TrainerFactory, "evaluate", no_work)
    again = make_cell(**kwargs)
    assert again.run() == rows
    assert torch.equal(again.trigger(x), cell.trigger(x))


@pytest.mark.parametrize("arch", ["preact_resnet18", "timm:resnet10t"])
@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_attack_trains_other_architectures_on_colour_images(make_cell, attack, arch):
    # Input-Aware counts its mask epoch against the cell's epochs (25 + 75 = 100 in the reference)
    epochs = 2 if attack == "input_aware" else 1
    cell = make_cell(attack=attack, arch=arch, defenses=(), reactivations=(), epochs=epochs, batch_size=32,
                     trigger_params=FAST_TRIGGER_PARAMS[attack], bec_samples=16, bec_rank_samples=16,
                     data_params={"num_train": 48, "num_test": 16, "channels": 3, "size": 16})
    for job in cell.jobs:
        if job.kind in ("train", "trigger", "attack"):
            cell.execute(job)
    metrics = cell.store.load("attack", cell.job("attack", attack).key).metrics
    assert 0.0 <= metrics["test/asr"] <= 1.0
