"""The retuning contract, as a function a user can call on their own
weight-space re-activation method (access level `retune`), like the
defense and re-activation contracts of `benchmark.extension.contract`:

    from benchmark.extension.retuning_contract import check_retuning_contract

Rules: every parameter typed; it trains a copy: the victim's stored
artifact is byte-for-byte unchanged and the retuned weights are a new
artifact with the victim's keys and shapes, all finite; it is fitted only
on the retuning set the runner builds: clean training pixels with true
labels, and at most `poison_num` images carrying the trigger, labelled with
the target, taken from non-target images of the attacker's pool.
"""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch

from benchmark.extension.contract import FAST_SURROGATE, TINY_CELL, _check_typed, _registered, _workdir
def check_retuning_contract(method, params: dict | None = None, workdir: str | Path | None = None):
    """Run weight-space re-activation `method` (a registered name, a plugin
    reference or a RetuningModule subclass) against an FT-defended model and
    check the retuning contract. Returns the job's metrics."""
    from benchmark.cell import Cell, CellSpec
    from benchmark.cell.spec import RETUNING_RUNNER_ARGS
    from benchmark.storage.store import ArtifactStore
    from datamodules.device_loader import DeviceLoader
    from lightning_modules.retuning import RETUNE, RETUNINGS

    with _registered(RETUNINGS, method) as name, _workdir(workdir) as root:
        root = Path(root)
        cls = RETUNINGS.get(name)
        _check_typed(f"weight-space re-activation {name!r}", cls, RETUNING_RUNNER_ARGS)
        assert cls.access == RETUNE, f"{name!r} declares access {cls.access!r}, not {RETUNE!r}"
        spec = CellSpec(**TINY_CELL, defenses=("ft",), reactivations=(), retunings=(name,),
                        defense_params=FAST_SURROGATE,
                        retuning_params={name: params or {}, "exact-purification": {"epochs": 1}})
        cell = Cell(spec, ArtifactStore(root / "store"), data_dir=root / "data", accelerator="cpu",
                    progress=False)
        job = cell.job("retune", f"{name} vs ft")
        for dep in [d for j in job.deps.values() for d in j.deps.values()] + list(job.deps.values()):
            cell.execute(dep)
        victim = cell.store.load("defense", job.deps["model"].key)
        stored = {f.name: f.read_bytes() for f in victim.path.iterdir() if f.is_file()}
        fitted: list[tuple[torch.Tensor, ...]] = []
        iterate = DeviceLoader.__iter__

        def spy_loader(self):
            for batch in iterate(self):
                if self.shuffle:  # fitting loaders shuffle; evaluation loaders do not
                    fitted.append(tuple(t.detach().cpu().clone() for t in batch))
                yield batch

        with mock.patch.object(DeviceLoader, "__iter__", spy_loader):
            artifact = cell.execute(job)
        assert {f.name: f.read_bytes() for f in victim.path.iterdir() if f.is_file()} == stored, (
            f"{name!r} wrote the victim's stored weights")
        assert artifact.path != victim.path
        reference, retuned = victim.tensors(), artifact.tensors()
        assert retuned.keys() == reference.keys(), f"{name!r} changed the model's state-dict keys"
        for key, tensor in retuned.items():
            assert tensor.shape == reference[key].shape, f"{name!r} changed the shape of {key}"
            assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), f"{name!r}: non-finite {key}"
        dm, ctx, target = cell.dm, cell.ctx, spec.target_label
        assert fitted, f"{name!r} was never fitted on the retuning set"
        images, labels, indices = (torch.cat(parts) for parts in zip(*fitted))
        clean_images = dm.train_images[indices].float() / 255
        triggered = (images - clean_images).flatten(1).abs().amax(1) > 1e-6
        assert torch.equal(labels[~triggered], dm.train_labels[indices[~triggered]]), (
            f"{name!r}: clean retuning samples must carry their true labels")
        assert torch.allclose(images[triggered], ctx.trigger(clean_images[triggered]), atol=1e-6), (
            f"{name!r}: a modified retuning sample is not a triggered training image")
        assert bool((labels[triggered] == target).all()), f"{name!r}: poisoned retuning samples carry the target"
        assert set(indices[triggered].tolist()) <= set(ctx.attacker_pool.tolist())
        assert len(set(indices[triggered].tolist())) <= job.config["params"]["poison_num"], (
            f"{name!r} used more poisoned samples than poison_num")
        return artifact.metrics

