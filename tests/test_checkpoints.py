"""Resumable stages: checkpoints load without unpickling, and a job killed
after a checkpoint gives, when run again, exactly the artifact of a job that
was never interrupted."""
import math
import pickle

import pytest
import torch
from safetensors.torch import load_file

from benchmark.storage.checkpoints import EpochCheckpoint, load_checkpoint_file, save_checkpoint_file
from benchmark.storage.store import ArtifactStore
from conftest import fast_spec


def test_structure_round_trips_without_pickle(tmp_path):
    checkpoint = {
        "epoch": 3, "global_step": 12, "pytorch-lightning_version": "2.6",
        "state_dict": {"w": torch.randn(3, 2), "b": torch.arange(4, dtype=torch.int64)},
        # optimiser state is keyed by parameter number (ints) and holds tuples and floats
        "optimizer_states": [{"state": {0: {"momentum_buffer": torch.ones(2)}},
                              "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "params": [0, 1],
                                                "nesterov": False, "weight_decay": 5e-4, "foreach": None}]}],
        "loops": {"x": {"nan": math.nan, "inf": -math.inf, "third": 1 / 3}},
        "hyper_parameters": {"anything": object()},  # never written: may hold arbitrary objects
    }
    shared = torch.randn(4)
    checkpoint["state_dict"].update({"model.w": shared, "wrapped.model.w": shared, "view": shared[:2]})
    path = tmp_path / "fit-1.safetensors"
    save_checkpoint_file(checkpoint, path)
    loaded = load_checkpoint_file(path)
    # a tensor reachable under two names is one tensor again; a view is its own copy
    assert loaded["state_dict"]["model.w"] is loaded["state_dict"]["wrapped.model.w"]
    assert torch.equal(loaded["state_dict"]["view"], shared[:2])
    assert "hyper_parameters" not in loaded
    assert torch.equal(loaded["state_dict"]["w"], checkpoint["state_dict"]["w"])
    assert loaded["state_dict"]["b"].dtype == torch.int64
    group = loaded["optimizer_states"][0]["param_groups"][0]
    assert group["betas"] == (0.9, 0.999) and group["params"] == [0, 1] and group["foreach"] is None
    assert torch.equal(loaded["optimizer_states"][0]["state"][0]["momentum_buffer"], torch.ones(2))
    assert loaded["loops"]["x"]["third"] == 1 / 3 and math.isnan(loaded["loops"]["x"]["nan"])
    assert loaded["loops"]["x"]["inf"] == -math.inf
    # a plain safetensors file: readable by any safetensors reader
    assert set(load_file(str(path))) == {f"t{i}" for i in range(5)}


def test_objects_that_need_pickle_are_refused(tmp_path):
    with pytest.raises(TypeError, match="checkpoint.callbacks.x is a object"):
        save_checkpoint_file({"callbacks": {"x": object()}}, tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()


def test_a_pickle_in_place_of_a_checkpoint_is_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('pwned').write_text('x')",))

    path = tmp_path / "fit-1.safetensors"
    path.write_bytes(pickle.dumps({"state_dict": Payload()}))
    with pytest.raises(Exception):
        load_checkpoint_file(path)
    assert not (tmp_path / "pwned").exists() and not __import__("pathlib").Path("pwned").exists()


class Killed(RuntimeError):
    """Stands in for a SIGKILL between two epochs."""


def _kill_after(monkeypatch, epochs_done: int):
    original = EpochCheckpoint.on_train_epoch_end

    def end_of_epoch(self, trainer, module):
        original(self, trainer, module)
        if trainer.current_epoch + 1 == epochs_done:
            raise Killed(f"killed after epoch {epochs_done}")

    monkeypatch.setattr(EpochCheckpoint, "on_train_epoch_end", end_of_epoch)


@pytest.mark.parametrize("kind", ["train", "defense", "reactivation"])
def test_a_killed_job_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch, kind):
    from benchmark.cell import Cell

    spec = fast_spec(epochs=3, defenses=("ft",), reactivations=("wba",), defense_params={"ft": {"epochs": 3}},
                     reactivation_params={"wba": {"epochs": 3, "num_samples": 32, "batch_size": 16}})

    def cell(store):
        return Cell(spec, ArtifactStore(store), data_dir=tmp_path / "data", accelerator="cpu", progress=False,
                    checkpoint_every=1)

    whole, resumed = cell(tmp_path / "whole"), cell(tmp_path / "resumed")
    index = next(i for i, j in enumerate(whole.jobs) if j.kind == kind)
    for job in whole.jobs[:index + 1]:
        whole.execute(job)
    for job in resumed.jobs[:index]:  # a job runs through its own cell's context
        resumed.execute(job)
    target = resumed.jobs[index]
    with monkeypatch.context() as patch:
        _kill_after(patch, 2)
        with pytest.raises(Killed):
            resumed.execute(target)
    saved = resumed.store.checkpoint_dir(target.kind, target.key) / "fit-1.safetensors"
    assert saved.is_file() and load_checkpoint_file(saved)["epoch"] == 1  # epochs 0 and 1 done
    assert not resumed.store.has(target.kind, target.key)
    epochs_run = []
    original = EpochCheckpoint.on_train_epoch_end
    with monkeypatch.context() as patch:
        patch.setattr(EpochCheckpoint, "on_train_epoch_end",
                      lambda self, t, m: (epochs_run.append(t.current_epoch), original(self, t, m)))
        resumed.execute(target)
    assert epochs_run == [2]  # continued, not started over
    assert not saved.parent.exists()  # gone once the artifact is published
    a = whole.store.load(target.kind, target.key)
    b = resumed.store.load(target.kind, target.key)
    assert a.tensors().keys() == b.tensors().keys()
    for name, value in a.tensors().items():
        assert torch.equal(value, b.tensors()[name]), f"{kind}: {name} differs after resuming"
    assert a.metrics == b.metrics
