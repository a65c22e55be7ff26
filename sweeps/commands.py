"""The grid commands, shared by `bdbench` (benchmark/cli) and `python -m
sweeps`: `run GRID` runs a grid file; `report GRID` rewrites its report from
the store; `results-page GRID --page PATH` writes a capacity ladder's results
page (benchmark/reporting/results_page.py); `wandb-sync GRID` uploads its
offline W&B runs; `wandb-dashboard GRID` saves its W&B workspace and report
(benchmark/reporting/wandb_dashboard.py).

One definition of each command's options and behaviour for both programs.
Only argparse and rich are imported here: `bdbench` builds these parsers for
every command it runs, so the job graph, executors and reporting are imported
by the command that needs them."""
from __future__ import annotations

import argparse
import subprocess
import sys

from rich.console import Console

# The subcommands `add_grid_commands` adds, for a program that has others too.
GRID_COMMANDS = ("run", "report", "results-page", "wandb-sync", "wandb-dashboard")


def add_grid_commands(sub) -> None:
    """Adds the grid commands to `sub`, an `add_subparsers()` of the caller's
    parser whose `dest` is "command"."""
    run = sub.add_parser("run", help="run every job of a grid not yet in the store, then write the report")
    run.add_argument("grid")
    run.add_argument("--dry-run", action="store_true", help="list the jobs and which are in the store; run nothing")
    run.add_argument("--jobs-per-gpu", type=int, default=None, help="overrides the grid's executor.jobs_per_gpu")
    run.add_argument("--cpu-workers", type=int, default=None, help="overrides the grid's executor.cpu_workers")
    run.add_argument("--store", default=None, help="overrides the grid's store directory")
    run.add_argument("--data-dir", default=None, help="overrides the grid's data directory")
    run.add_argument("--output", default=None, help="overrides the grid's output directory")
    run.add_argument("--backend", choices=("local", "slurm"), default=None,
                     help="overrides the grid's executor.backend (slurm: every job a SLURM job)")
    report = sub.add_parser("report", help="write the report of a grid from the store")
    report.add_argument("grid")
    report.add_argument("--store", default=None)
    report.add_argument("--data-dir", default=None)
    report.add_argument("--output", default=None)
    # help: the one line the program's --help lists; description: the command's own --help
    page = sub.add_parser("results-page", help="write a ladder's results page and figures from the store",
                          description="Write a ladder's results page and figures from the store "
                                      "(make reproduce: docs/results-fashion-mnist.md).")
    page.add_argument("grid")
    page.add_argument("--page", default="docs/results-fashion-mnist.md", help="the markdown file to write; its "
                      "figures go to figures/<grid name>/ beside it")
    page.add_argument("--store", default=None)
    page.add_argument("--data-dir", default=None)
    sync = sub.add_parser("wandb-sync", help="upload the grid's offline W&B runs")
    sync.add_argument("grid")
    sync.add_argument("--output", default=None)
    board = sub.add_parser("wandb-dashboard", help="save the grid's W&B workspace and report (after wandb-sync)",
                           description="Save the grid's W&B workspace and report (after wandb-sync); writes "
                                       "their spec to <output>/wandb/dashboard.json.")
    board.add_argument("grid")
    board.add_argument("--output", default=None)
    board.add_argument("--entity", default=None, help="W&B entity (default: WANDB_ENTITY, else your default one)")
    board.add_argument("--spec", default=None, help="apply a dashboard.json written earlier instead of building it")


def _grid(args):
    from pathlib import Path

    from sweeps.grid import load_grid

    grid = load_grid(args.grid)
    for name in ("store", "data_dir", "output"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(grid, name, Path(value))
    backend = getattr(args, "backend", None)
    if backend == "slurm" and grid.executor["backend"] != "slurm":
        from sweeps.slurm_settings import check_settings

        grid.executor = {**grid.executor, **check_settings({**grid.executor, "backend": "slurm"}, args.grid)}
    elif backend == "local":
        grid.executor = {**grid.executor, "backend": "local"}
    return grid


def run_grid_command(args: argparse.Namespace, console: Console | None = None) -> int:
    """Runs the grid command `args` holds (parsed by the subcommands of
    `add_grid_commands`); returns the exit status. A bad grid, option or
    dataset raises BenchmarkError, which the caller prints as one line."""
    from benchmark.errors import ConfigError

    console = console or Console(stderr=True)
    grid = _grid(args)
    if args.command == "wandb-sync":
        from benchmark.reporting.wandb_logging import sync_command

        return subprocess.call(sync_command(grid.output))
    if args.command == "wandb-dashboard":
        from benchmark.reporting.wandb_dashboard import save_dashboard

        return save_dashboard(grid, args.spec, args.entity, echo=lambda line: print(line, file=sys.stderr))

    from benchmark.storage.store import ArtifactStore
    from sweeps.collect import collect
    from sweeps.executor import LocalExecutor, gpu_slots
    from sweeps.graph import build_graph

    store = ArtifactStore(grid.store)
    graph = build_graph(grid, store)
    if args.command == "results-page":
        from pathlib import Path

        from benchmark.reporting.results_page import write_results_page

        console.print(f"results page written: {write_results_page(graph, Path(args.page))}")
        return 0
    if args.command == "report":
        paths = collect(graph, console)
        console.print(f"report written to {grid.output}: " + ", ".join(p.name for p in paths.values()))
        return 0
    if args.dry_run:
        graph.dry_run(console)
        return 0
    for name in ("jobs_per_gpu", "cpu_workers"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
            grid.executor[name] = value
    store.remove_stale_temporaries()
    if grid.executor["backend"] == "slurm":
        from sweeps.slurm import SlurmExecutor

        console.print(f"grid {grid.name}: {len(graph.cells)} cells, {len(graph)} jobs, on SLURM")
        outcome = SlurmExecutor(graph, grid.executor, console, checkpoint_every=grid.executor["checkpoint_every"],
                                compile=grid.executor["compile"]).run()
    else:
        slots = gpu_slots(grid.executor["jobs_per_gpu"], grid.executor["cpu_workers"])
        console.print(f"grid {grid.name}: {len(graph.cells)} cells, {len(graph)} jobs, {len(slots)} worker "
                      f"slot(s) on {'GPU ' + ','.join(sorted(set(slots))) if slots[0] else 'CPU'}")
        outcome = LocalExecutor(graph, slots, console, checkpoint_every=grid.executor["checkpoint_every"],
                                compile=grid.executor["compile"]).run()
    if outcome.interrupted:
        return 130
    if outcome.detached:
        return 0
    paths = collect(graph, console)
    _print_table(graph, console)
    console.print(f"report: {paths['summary']}")
    for job_id, log in outcome.failed.items():
        console.print(f"[red]failed[/] {job_id}: {log}")
    return 0 if outcome.ok else 1


def _print_table(graph, console: Console) -> None:
    from benchmark.reporting.console import results_table, table_console
    from benchmark.errors import StoreError

    plain = table_console()
    for cell in graph.cells:
        try:
            rows = cell.rows()
        except (StoreError, KeyError):
            continue
        plain.print(results_table(rows, cell.name, cell.spec.reactivations))
