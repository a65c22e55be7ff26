"""A grid as one job graph: the plans of all its cells, deduplicated by store
key (one clean model per dataset x arch x seed, one attack model per attack
shared by all its defenses, ...)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from benchmark.cell import Cell, StageJob
from benchmark.storage.store import ArtifactStore
from sweeps.grid import Grid


@dataclass
class GraphNode:
    job: StageJob
    cell: Cell                      # a cell whose plan holds the job (any one: same key, same work)
    deps: set[str] = field(default_factory=set)


class JobGraph:
    def __init__(self, grid: Grid, store: ArtifactStore, cells: list[Cell]):
        self.grid, self.store, self.cells = grid, store, cells
        self.nodes: dict[str, GraphNode] = {}
        for cell in cells:
            for job in cell.jobs:
                if job.id not in self.nodes:
                    self.nodes[job.id] = GraphNode(job, cell, {d.id for d in job.deps.values()})

    def __len__(self) -> int:
        return len(self.nodes)

    def stored(self, job_id: str) -> bool:
        node = self.nodes[job_id]
        return self.store.has(node.job.kind, node.job.key)

    def dependents(self, job_id: str) -> set[str]:
        """Every job that needs `job_id`, directly or not."""
        out, frontier = set(), {job_id}
        while frontier:
            frontier = {i for i, n in self.nodes.items() if n.deps & frontier} - out
            out |= frontier
        return out

    def dry_run(self, console: Console) -> None:
        table = Table(title=f"grid {self.grid.name}: {len(self.cells)} cells, {len(self)} jobs")
        for col in ("kind", "job", "cell", "status"):
            table.add_column(col)
        for job_id, node in self.nodes.items():
            status = "[green]in store[/]" if self.stored(job_id) else "pending"
            table.add_row(node.job.kind, node.job.label, node.job.cell, status)
        console.print(table)
        done = sum(self.stored(i) for i in self.nodes)
        console.print(f"{done} of {len(self)} jobs already in the store {self.store.root}")

    def spec_json(self, job_id: str) -> str:
        return json.dumps(self.nodes[job_id].cell.spec.to_dict())


def build_graph(grid: Grid, store: ArtifactStore | None = None, specs=None) -> JobGraph:
    """Plan every cell of the grid, or the cells `specs` describe when given
    (loading each dataset once); raises on any bad name, value or missing
    dataset before a single job runs."""
    from benchmark.cell.cell import build_cell_datamodule, datamodule_key, make_cell

    store = store or ArtifactStore(grid.store)
    modules = {}
    cells = []
    for spec in (grid.cells() if specs is None else specs):
        key = datamodule_key(spec)
        if key not in modules:
            modules[key] = build_cell_datamodule(spec, grid.data_dir)
        cells.append(make_cell(spec, store, data_dir=grid.data_dir, accelerator="cpu", progress=False,
                               datamodule=modules[key]))
    return JobGraph(grid, store, cells)
