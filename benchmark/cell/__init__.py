"""One cell of the benchmark: dataset x model x attack x defenses x seed.

    spec.py      what every cell's spec has (fields, validation), read from a dict
    family.py    the model-family interface: what differs between an image
                 classifier and CLIP (and the next kind of model)
    families/    one module per family: its spec fields and its hooks
    context.py   what a cell's stages share (data selections, trigger, models)
    cell.py      the plan of stage jobs, written once for every family; running it
    stages/      one module per stage kind
    job.py       StageJob / Plan: jobs whose store keys are known before they run
    rows.py      the results rows of a cell

The public names are importable from here (`from benchmark.cell import
Cell, CellSpec`); they load on first use, so importing one submodule does
not import the rest.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Cell": "benchmark.cell.cell",
    "make_cell": "benchmark.cell.cell",
    "SpecBase": "benchmark.cell.spec",
    "spec_from_dict": "benchmark.cell.spec",
    "CellSpec": "benchmark.cell.families.classifier",
    "ClipCellSpec": "benchmark.cell.families.clip",
    "ModelFamily": "benchmark.cell.family",
    "family": "benchmark.cell.family",
    "StageJob": "benchmark.cell.job",
    "Plan": "benchmark.cell.job",
    "CLEAN_ROW": "benchmark.cell.rows",
    "BACKDOORED_ROW": "benchmark.cell.rows",
    "DEFENSE_RUNNER_ARGS": "benchmark.cell.families.classifier",
    "REACTIVATION_RUNNER_ARGS": "benchmark.cell.spec",
    "SURROGATE_KEYS": "benchmark.cell.spec",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'benchmark.cell' has no attribute {name!r}")
