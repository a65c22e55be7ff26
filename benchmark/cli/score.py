"""`bdbench score DEFENSE`: one defense (built-in or plugin) against every
attack of a grid, with BEC and every re-activation method of the grid (or
those named), ranked beside the grid's own defenses.

The grid's cells are planned as they are, so everything `make demo` (or any
earlier run of the grid) left in the store is reused; the candidate gets one
extra cell per grid cell holding only itself. Its transfer re-activation
(TBRA) uses the grid's defenses as the attacker's surrogates, the same
surrogates the grid's own defenses are attacked with. Every job goes through
the grid's executor, so a failing job fails alone, and the leaderboard is
written from whatever completed (`coverage` says how much).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmark.errors import ConfigError
from benchmark.reporting.console import fmt, table_console
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.base import TRANSFER


def slug(name: str) -> str:
    """A folder name for a defense name or plugin reference."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "defense"


def score_specs(grid, defense: str, params: dict, methods: list[str]) -> tuple[list, list]:
    """(the grid's cell specs, the candidate's cell specs), both re-activated
    by `methods`. Keys of the grid's own jobs do not change, so the store's
    artifacts serve them."""
    DEFENSES.get(defense)  # unknown name or broken plugin: one line now
    if defense in grid.defenses:
        if params:
            raise ConfigError(f"{defense!r} is one of the grid's defenses and runs with the grid's parameters "
                              f"(defense_params in {grid.path}); give no --params, or score it from a grid "
                              f"without it")
        candidate_params = None
    else:
        candidate_params = {**grid.defense_params.get(defense, {}), **params}
    grid_specs = [dataclasses.replace(spec, reactivations=tuple(methods)) for spec in grid.cells()]
    if candidate_params is None:
        return grid_specs, []
    surrogates = [d for d in grid.defenses if d not in ("none", defense)]
    candidate_specs = []
    for spec in grid_specs:
        reactivation_params = {m: dict(p) for m, p in spec.reactivation_params.items()}
        for method in methods:
            if REACTIVATIONS.get(method).access == TRANSFER and "surrogates" not in reactivation_params.get(method, {}):
                reactivation_params.setdefault(method, {})["surrogates"] = surrogates
        candidate = dataclasses.replace(spec, defenses=(defense,), defense_params={defense: candidate_params},
                                        reactivation_params=reactivation_params)
        candidate.validate()
        candidate_specs.append(candidate)
    return grid_specs, candidate_specs


def collect_rows(grid_cells, candidate_cells, candidate: str) -> list[dict]:
    """The grid cells' rows (references and the grid's defenses) and the
    candidate's rows from its own cells; a cell missing a reference model is
    left out (its jobs failed or have not run)."""
    from benchmark.cell.rows import stored_rows

    grid_rows, _ = stored_rows(grid_cells)
    candidate_rows, _ = stored_rows(candidate_cells)
    return grid_rows + [row for row in candidate_rows if row["model"] == candidate]


def board_table(board: list[dict], candidate: str, title: str) -> Table:
    table = Table(title=title)
    columns = [("defense", "defense"), ("worst_reactivation_asr", "worst re-activated ASR"),
               ("worst_case", "at"), ("worst_guaa_asr", "its gUAA ASR"), ("worst_input_asr", "input space"),
               ("worst_weight_asr", "weight space"), ("clean_acc_cost", "C-Acc cost"),
               ("mean_asr", "mean ASR"), ("mean_bec", "mean BEC"), ("coverage", "coverage")]
    table.add_column("#", justify="right")
    for _, header in columns:
        table.add_column(header, justify="left" if header in ("defense", "at") else "right")
    for rank, entry in enumerate(board, 1):
        style = "bold" if entry["defense"] == candidate else None
        table.add_row(str(rank), *[fmt(entry.get(key)) for key, _ in columns], style=style)
    return table


def run_score(args) -> int:
    from benchmark.reporting.leaderboard import grid_attacks, leaderboard, reference, write_leaderboard
    from benchmark.reporting.tables import retuning_names
    from benchmark.storage.store import ArtifactStore
    from benchmark.reporting.wandb_logging import log_leaderboard
    from sweeps.executor import LocalExecutor, gpu_slots
    from sweeps.graph import build_graph
    from sweeps.grid import load_grid

    console = Console(stderr=True)
    grid = load_grid(args.grid)
    for name in ("store", "data_dir"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(grid, name, Path(value))
    methods = args.reactivations or list(grid.reactivations)
    if methods == ["all"]:
        methods = REACTIVATIONS.names()
    for method in methods:
        REACTIVATIONS.get(method)
    grid_specs, candidate_specs = score_specs(grid, args.defense, args.params, methods)
    store = ArtifactStore(grid.store)
    graph = build_graph(grid, store, specs=grid_specs + candidate_specs)
    if args.dry_run:
        graph.dry_run(console)
        return 0
    for name in ("jobs_per_gpu", "cpu_workers"):
        value = getattr(args, name, None)
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
            grid.executor[name] = value
    store.remove_stale_temporaries()
    out_dir = Path(args.output) if args.output else Path(grid.output) / "score" / slug(args.defense)
    grid.output = out_dir  # the workers' logs and W&B runs go beside the leaderboard
    pending = sum(not graph.stored(job_id) for job_id in graph.nodes)
    console.print(f"score {args.defense} on grid {grid.name}: {len(graph)} jobs, {pending} not in the store")
    slots = gpu_slots(grid.executor["jobs_per_gpu"], grid.executor["cpu_workers"])
    outcome = LocalExecutor(graph, slots, console).run()
    if outcome.interrupted:
        return 130
    split = len(grid_specs)
    rows = collect_rows(graph.cells[:split], graph.cells[split:], args.defense)
    retunings = retuning_names(set().union(*rows) if rows else set())
    board = leaderboard(rows, args.defense, methods, retunings)
    title = f"{args.defense} on grid {grid.name}"
    paths = write_leaderboard(board, out_dir, title, args.defense, methods, grid_attacks(rows),
                              reference=reference(rows, methods, retunings), retunings=retunings)
    log_leaderboard(project=grid.wandb_project, save_dir=out_dir, name=f"{grid.name}:{slug(args.defense)}",
                    board=board, figure_path=paths["figure"], grid=grid.name)
    table_console().print(board_table(board, args.defense, title))
    console.print(f"leaderboard: {paths['markdown']}, {paths['csv']}, {paths['figure']}")
    for job_id, log in outcome.failed.items():
        console.print(f"[red]failed[/] {job_id}: {log}")
    return 0 if outcome.ok else 1
