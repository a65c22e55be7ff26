"""Core of the re-activation benchmark, in layers (ARCHITECTURE.md has the
picture). From the bottom:

    models/, triggers/, text/   what the methods are made of
    measures/    ASR / RA / DER, CKA, BEC, feature capture, controls, seed statistics
    storage/     the content-addressed store, code fingerprints, resumable checkpoints
    extension/   registries, plugins, typed parameters, the method contracts
    cell/        one cell: its spec, its model family, the stage kinds, the plan, its rows
    reporting/   tables, figures, the leaderboard, the results page, W&B
    speed/       `make bench`: each stage's throughput beside plain PyTorch
    cli/         `bdbench`: cells, grids, scoring a defense

`training.py` (the one Trainer configuration) and `errors.py` sit beside
them: every layer from the cell up uses them.

Modules that moved into these folders keep their old import paths
(`benchmark.schema`, `benchmark.contract`, `benchmark.store`, ...): `MOVED`
maps each old name to its new one, and importing the old name gives the
very same module object.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

#: old module name -> where it lives now
MOVED = {
    **{f"benchmark.{m}": f"benchmark.measures.{m}"
       for m in ("bec", "cka", "metrics", "features", "controls", "intervals")},
    **{f"benchmark.{m}": f"benchmark.storage.{m}" for m in ("fingerprint", "checkpoints")},
    **{f"benchmark.{m}": f"benchmark.extension.{m}" for m in ("registry", "plugins", "schema", "contract")},
    **{f"benchmark.{m}": f"benchmark.reporting.{m}"
       for m in ("report", "figures", "leaderboard", "wandb_logging", "wandb_charts", "wandb_dashboard",
                 "results_page", "reproduction")},
    "benchmark.store": "benchmark.storage.store",
    "benchmark.rows": "benchmark.cell.rows",
    "benchmark.spec": "benchmark.cell.families.classifier",
    "benchmark.clip_spec": "benchmark.cell.families.clip",
    "benchmark.cells": "benchmark.cell.cell",
    "benchmark.stages": "benchmark.cell.stages",
    "benchmark.bench": "benchmark.speed.bench",
    "benchmark.bench_loops": "benchmark.speed.loops",
    "benchmark.bench_workloads": "benchmark.speed.workloads",
    "benchmark.grid_estimate": "benchmark.speed.grid_estimate",
    "benchmark.score": "benchmark.cli.score",
}


def moved_name(name: str) -> str | None:
    """The current name of a module imported by its old name (submodules of
    a moved package included), or None."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module that now holds its code: one
    module object under two names, so classes, registries and monkeypatches
    are shared."""

    def find_spec(self, name, path=None, target=None):
        new = moved_name(name)
        if new is None:
            return None
        real = importlib.util.find_spec(new)
        return importlib.util.spec_from_loader(name, self, origin=real.origin if real else None)

    def create_module(self, spec):
        return importlib.import_module(moved_name(spec.name))

    def exec_module(self, module):
        pass  # the real module ran when it was imported under its own name


if not any(isinstance(f, _Alias) for f in sys.meta_path):
    sys.meta_path.insert(0, _Alias())  # before PathFinder, which would load a second copy
