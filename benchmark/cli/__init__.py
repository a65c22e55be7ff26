"""Command line: the `bdbench` program (`python -m benchmark` is the same):
its parser and `main`. The commands live in benchmark/cli/cell.py,
benchmark/cli/score.py and sweeps/commands.py (the grid commands, shared with
`python -m sweeps`).

Importing a module of this package (benchmark.cli.score, also reached as
benchmark.score) runs this file first, so its own imports stay light: the
commands, which import the suite and the sweeps, are imported when the
parser is built or a command runs."""
from __future__ import annotations

import argparse
import sys

from benchmark.errors import BenchmarkError

DESCRIPTION = ("The backdoor re-activation benchmark. `cell` runs one cell and prints its table; `score` ranks a "
               "defense against a grid; `run`, `report`, `results-page`, `wandb-sync` and `wandb-dashboard` work "
               "on a grid file, as `python -m sweeps` does. `bdbench COMMAND --help` lists a command's options.")


def build_parser() -> argparse.ArgumentParser:
    from benchmark.cli.cell import add_spec_arguments, json_dict
    from sweeps.commands import add_grid_commands

    parser = argparse.ArgumentParser(prog="bdbench", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    cell = sub.add_parser("cell", help="run one cell: clean model, attack, defenses, BEC, re-activation",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_spec_arguments(cell)
    cell.add_argument("--data-dir", default="data", help="where datasets are looked for / downloaded")
    cell.add_argument("--store", default="store", help="artifact store directory")
    cell.add_argument("--out", default=None, help="write the results table here as JSON")
    cell.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    cell.add_argument("--no-progress", action="store_true", help="no progress bars or stage log")
    # help: the one line `bdbench --help` lists; description: what `bdbench score --help` says
    score = sub.add_parser("score", help="rank one defense (built-in or plugin) against a grid",
                           description="Score one defense (built-in or plugin) against a grid's attacks and "
                                       "re-activation methods, beside the grid's own defenses.",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    score.add_argument("defense", help="a defense name or plugin (package.module:Class, path/to/file.py:Class)")
    score.add_argument("--grid", default="sweeps/demo.yaml", help="grid file (on GPUs: sweeps/cifar10.yaml)")
    score.add_argument("--params", type=json_dict, default={}, metavar="JSON",
                       help="the defense's parameters, e.g. '{\"epochs\": 20}'")
    score.add_argument("--reactivations", nargs="+", default=None, metavar="NAME",
                       help="re-activation methods (default: the grid's; 'all' for every one)")
    score.add_argument("--store", default=None, help="overrides the grid's store directory")
    score.add_argument("--data-dir", default=None, help="overrides the grid's data directory")
    score.add_argument("--output", default=None, help="where the leaderboard goes (default: <grid output>/score)")
    score.add_argument("--cpu-workers", type=int, default=None, help="overrides the grid's executor.cpu_workers")
    score.add_argument("--jobs-per-gpu", type=int, default=None, help="overrides the grid's executor.jobs_per_gpu")
    score.add_argument("--dry-run", action="store_true", help="list the jobs and which are in the store")
    add_grid_commands(sub)  # run, report, results-page, wandb-sync, wandb-dashboard
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "cell":
            from benchmark.cli.cell import run_cell

            return run_cell(args)
        if args.command == "score":
            from benchmark.cli.score import run_score

            return run_score(args)
        from sweeps.commands import GRID_COMMANDS, run_grid_command

        if args.command in GRID_COMMANDS:
            return run_grid_command(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
