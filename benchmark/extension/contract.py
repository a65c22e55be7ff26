"""The contracts every defense and re-activation method must keep, as
functions a user can call from their own pytest suite on their own class:

    from benchmark.extension.contract import check_defense_contract

    def test_my_defense(tmp_path):
        check_defense_contract("my_project/defense.py:MyDefense", {"epochs": 1}, tmp_path)

Each runs the method for real inside a small cell on synthetic 16x16 data
(the suite's own stage runner, seconds on a CPU) and raises AssertionError
naming the broken rule. The suite's tests run the same functions on every
registered method.

Defense contract (the threat model: the defender holds the backdoored model
and a small clean subset, nothing else):
- every user-settable __init__ parameter has a type hint, and its default
  satisfies it (so grids and the command line can validate values);
- it never calls the trigger, and is served only samples of the defender's
  clean subset, with their clean pixels and true labels, in any hook. The
  subset may hold indices the attacker poisoned (BackdoorBench draws it from
  the clean versions of all training images): what the defender never sees
  is a triggered image or a flipped label;
- it trains on something when it has training epochs;
- it returns a model with the architecture's exact state-dict keys and
  shapes, all finite, that the suite can evaluate;
- what it reports (`self.report`) is JSON.

Re-activation contract: every parameter typed; the victim's weights and
BatchNorm statistics never move; the perturbation stays within its budget;
a query method only ever sees the victim through the counting oracle, within
its budget; the attacker's samples it is fitted on are non-target training
images (with the trigger for re-activation, clean for the gUAA control),
so that neither objective is met before the search starts.

The retuning contract (weight-space re-activation) is
`benchmark.extension.retuning_contract.check_retuning_contract`.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import json
import tempfile
from pathlib import Path
from unittest import mock

import torch

from benchmark.extension.schema import check_value, schema

# A cell small enough to run any method in seconds.
TINY_CELL = dict(dataset="synthetic", arch="small_cnn", attack="badnets", seed=0, epochs=2, batch_size=64,
                 lr=0.05, bec_samples=64, bec_rank_samples=64, trigger_params={"size": 4}, controls=False)
# Quick settings for the suite's own methods, used where a contract needs a
# second defense (transfer surrogates) or a re-activation method.
FAST_SURROGATE = {"ft": {"epochs": 1}}
FAST_WBA = {"epochs": 1, "num_samples": 32, "batch_size": 16}


def _check_typed(owner: str, cls: type, skip: tuple[str, ...]) -> None:
    for name, param in schema(cls, skip).items():
        assert param.annotation is not inspect.Parameter.empty, (
            f"{owner}: parameter {name!r} has no type hint; annotate it (benchmark.extension.schema types carry "
            f"ranges) so grids and the command line can check values")
        if param.default is not inspect.Parameter.empty:
            check_value(owner, name, param.default, param.annotation)


@contextlib.contextmanager
def _registered(registry, method):
    """A class given directly (not by name) is registered for the check only."""
    if isinstance(method, str):
        yield method
        return
    name = f"{method.__module__}.{method.__qualname__}"
    registry._entries[name], registry._origins[name] = method, method.__module__
    try:
        yield name
    finally:
        registry._entries.pop(name, None)
        registry._origins.pop(name, None)


def _workdir(workdir):
    if workdir is not None:
        return contextlib.nullcontext(Path(workdir))
    return tempfile.TemporaryDirectory(prefix="bdbench-contract-")


def check_defense_contract(defense, params: dict | None = None, workdir: str | Path | None = None,
                           arch: str = "small_cnn"):
    """Run `defense` (a registered name, a plugin reference or a
    DefenseModule subclass) with `params` and check the defense contract.
    Returns the trained defense module."""
    from benchmark.cell import DEFENSE_RUNNER_ARGS, Cell, CellSpec
    from benchmark.storage.store import ArtifactStore
    from benchmark.triggers.base import Trigger
    from datamodules.device_loader import DeviceLoader
    from datamodules.tensor_dataset import IndexedImages
    from lightning_modules.defenses import DEFENSES

    with _registered(DEFENSES, defense) as name, _workdir(workdir) as root:
        root = Path(root)
        cls = DEFENSES.get(name)
        _check_typed(f"defense {name!r}", cls, DEFENSE_RUNNER_ARGS)
        spec = CellSpec(**{**TINY_CELL, "arch": arch}, defenses=(name,), defense_params={name: params or {}},
                        reactivations=("wba",), reactivation_params={"wba": FAST_WBA})
        cell = Cell(spec, ArtifactStore(root / "store"), data_dir=root / "data", accelerator="cpu",
                    progress=False)
        attack = cell.execute(cell.job("attack", spec.attack))

        served: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        getitems = IndexedImages.__getitems__

        def spy(self, positions):
            batch = getitems(self, positions)
            served.append((batch[0].clone(), batch[1].clone(), batch[2].clone()))
            return batch

        # the data module's loaders gather batches on the device themselves
        iterate = DeviceLoader.__iter__

        def spy_loader(self):
            for batch in iterate(self):
                served.append(tuple(t.detach().cpu().clone() for t in batch))
                yield batch

        def forbidden(self, images):
            raise AssertionError(f"defense {name!r} called the trigger: a defense never knows it")

        with mock.patch.object(IndexedImages, "__getitems__", spy), mock.patch.object(DeviceLoader, "__iter__", spy_loader), \
                mock.patch.object(Trigger, "__call__", forbidden):
            module = cell.train_defense(name, attack)

        clean = set(cell.clean_idx.tolist())
        for images, labels, indices in served:
            assert set(indices.tolist()) <= clean, (
                f"defense {name!r} was served samples outside the defender's clean subset")
            assert torch.equal(images, cell.dm.train_images[indices].float() / 255), (
                f"defense {name!r} was served modified pixels (a triggered image, or one changed in place)")
            assert torch.equal(labels, cell.dm.train_labels[indices]), (
                f"defense {name!r} was served labels other than the true ones")
        if module.hparams.epochs > 0:
            assert served, f"defense {name!r} has {module.hparams.epochs} training epochs but never saw data"

        reference = attack.tensors()
        exported = module.export_weights()
        assert set(exported) == set(reference), (
            f"defense {name!r} returned a model whose state dict differs from the architecture's: "
            f"missing {sorted(set(reference) - set(exported))[:5]}, extra {sorted(set(exported) - set(reference))[:5]}")
        for key, tensor in exported.items():
            assert tensor.shape == reference[key].shape, f"defense {name!r} changed the shape of {key}"
            if tensor.is_floating_point():
                assert torch.isfinite(tensor).all(), f"defense {name!r} returned non-finite values in {key}"
        metrics = cell.evaluate(module.model)
        assert 0.0 <= metrics["test/clean_acc"] <= 1.0
        try:
            json.dumps(module.report)
        except TypeError as exc:
            raise AssertionError(f"defense {name!r}: report is not JSON ({exc})") from None
        return module


def check_reactivation_contract(method, params: dict | None = None, workdir: str | Path | None = None):
    """Run re-activation `method` (a registered name, a plugin reference or a
    ReactivationModule subclass) against a backdoored model and check the
    re-activation contract. Returns the job's metrics."""
    from benchmark.cell import REACTIVATION_RUNNER_ARGS, Cell, CellSpec
    from benchmark.storage.store import ArtifactStore
    from lightning_modules.reactivation import REACTIVATIONS
    from lightning_modules.reactivation.base import QUERY, TRANSFER
    from lightning_modules.reactivation.norms import project
    from datamodules.device_loader import DeviceLoader

    with _registered(REACTIVATIONS, method) as name, _workdir(workdir) as root:
        root = Path(root)
        cls = REACTIVATIONS.get(name)
        _check_typed(f"re-activation {name!r}", cls, REACTIVATION_RUNNER_ARGS)
        # A transfer method needs a victim defense and another defense as surrogate.
        defenses = ("ft", "none") if cls.access != TRANSFER else ("ft", "nad")
        defense_params = {"ft": {"epochs": 1}, "nad": {"epochs": 1, "teacher_epochs": 1}}
        spec = CellSpec(**TINY_CELL, defenses=defenses, reactivations=(name,),
                        defense_params={d: defense_params[d] for d in defenses if d in defense_params},
                        reactivation_params={name: params or {}})
        cell = Cell(spec, ArtifactStore(root / "store"), data_dir=root / "data", accelerator="cpu",
                    progress=False)
        job = cell.job("reactivation", f"{name} vs ft")
        for dep in [d for j in job.deps.values() for d in j.deps.values()] + list(job.deps.values()):
            cell.execute(dep)

        loaded = []
        load_model = cell.ctx.load_model  # what every stage loads its models through

        def spy_load(artifact):
            model = load_model(artifact)
            loaded.append((artifact.key, model, copy.deepcopy(model.state_dict())))
            return model

        # the batches the method is fitted on (shuffled loaders; evaluation
        # loaders are not shuffled)
        fitted: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        iterate = DeviceLoader.__iter__

        def spy_loader(self):
            for batch in iterate(self):
                if self.shuffle:
                    fitted.append(tuple(t.detach().cpu().clone() for t in batch))
                yield batch

        guaa = cell.job("guaa", f"{name} vs ft")
        with mock.patch.object(cell.ctx, "load_model", spy_load), mock.patch.object(DeviceLoader, "__iter__",
                                                                                    spy_loader):
            artifact = cell.execute(job)
            triggered_batches = len(fitted)
            cell.execute(guaa)
        dm, target, trigger = cell.dm, spec.target_label, cell.ctx.trigger
        assert fitted, f"re-activation {name!r} was never fitted on the attacker's samples"
        for i, (images, labels, indices) in enumerate(fitted):
            assert torch.equal(labels, dm.train_labels[indices]), f"re-activation {name!r}: labels are not true labels"
            assert bool((labels != target).all()), (
                f"re-activation {name!r} was fitted on target-class images: its objective is met before it starts")
            clean_images = dm.train_images[indices].float() / 255
            expected = trigger(clean_images) if i < triggered_batches else clean_images
            assert torch.allclose(images, expected, atol=1e-6), (
                f"re-activation {name!r}: the attacker's samples are not "
                f"{'triggered' if i < triggered_batches else 'clean'} training images")
        for key, model, state in loaded:
            for k, v in state.items():
                assert torch.equal(v, model.state_dict()[k]), (
                    f"re-activation {name!r} changed {k} of a model it attacked (weights and BatchNorm "
                    f"statistics must stay as they are)")
        delta = artifact.tensors()["delta"]
        assert torch.allclose(project(delta, spec.norm, spec.epsilon), delta, atol=1e-6), (
            f"re-activation {name!r} left its budget: ||delta|| exceeds {spec.norm} epsilon {spec.epsilon}")
        metrics = artifact.metrics
        assert 0.0 <= metrics["test/asr"] <= 1.0
        if cls.access == QUERY:
            budget = job.config["params"]["max_queries"]
            assert metrics["queries"] <= budget, f"re-activation {name!r} spent {metrics['queries']} > {budget} queries"
        return metrics

