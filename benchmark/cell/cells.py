"""Cells of either kind from their specs: what grids, the sweep worker and
SLURM jobs call, so none of them needs to know which kind a cell is."""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.cell.clip_spec import ClipCellSpec


def datamodule_key(spec) -> str:
    """Cells with equal keys can share one loaded data module."""
    batch = None if isinstance(spec, ClipCellSpec) else spec.batch_size
    return json.dumps([spec.dataset, batch, spec.data_params], sort_keys=True)


def build_cell_datamodule(spec, data_dir: str | Path):
    from datamodules import build_datamodule

    if isinstance(spec, ClipCellSpec):
        return build_datamodule(spec.dataset, data_dir=data_dir, **spec.data_params)
    return build_datamodule(spec.dataset, data_dir=data_dir, batch_size=spec.batch_size, **spec.data_params)


def make_cell(spec, store, **kwargs):
    """A `Cell` for a CellSpec, a `ClipCell` for a ClipCellSpec."""
    if isinstance(spec, ClipCellSpec):
        from benchmark.cell.clip_cell import ClipCell

        return ClipCell(spec, store, **kwargs)
    from benchmark.cell.cell import Cell

    return Cell(spec, store, **kwargs)
