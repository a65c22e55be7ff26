"""`python -m sweeps run GRID` runs a grid file; `report GRID` rewrites its
report from the store; `results-page GRID --page PATH` writes a capacity
ladder's results page (benchmark/reporting/results_page.py); `wandb-sync
GRID` uploads its offline W&B runs; `wandb-dashboard GRID` saves its W&B
workspace and report (benchmark/reporting/wandb_dashboard.py). `bdbench` has
the same commands (sweeps/commands.py defines them for both)."""
from __future__ import annotations

import argparse
import sys

from rich.console import Console

from benchmark.errors import BenchmarkError
from sweeps.commands import add_grid_commands, run_grid_command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_grid_commands(sub)
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        return run_grid_command(args, console)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
