"""After a grid: read every cell's rows from the store, write the report, log
the W&B summary run."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from benchmark.reporting.report import summarize, write_report
from benchmark.cell.rows import stored_rows
from benchmark.reporting.wandb_logging import log_summary
from sweeps.graph import JobGraph


def collect(graph: JobGraph, console: Console | None = None, wandb: bool = True) -> dict[str, Path]:
    console = console or Console(stderr=True)
    rows, missing = stored_rows(graph.cells)
    if missing:
        console.print(f"[yellow]{len(missing)} cell(s) incomplete, left out of the report:[/] {', '.join(missing)}")
    out_dir = Path(graph.grid.output)
    paths = write_report(rows, out_dir, title=f"grid {graph.grid.name}")
    if wandb and rows:
        log_summary(project=graph.grid.wandb_project, save_dir=out_dir, grid_name=graph.grid.name, rows=rows,
                    summary_rows=summarize(rows), figures=paths)
    return paths
