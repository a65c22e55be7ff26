"""Command line: ``bdbench cell`` runs one cell of the benchmark and prints
its table. ``python -m benchmark`` is the same program."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmark.errors import BenchmarkError
from benchmark.models import architecture_names
from datamodules import DATASETS
from lightning_modules.attacks import ATTACKS
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS

COLUMNS = [("model", "model"), ("clean_acc", "C-Acc"), ("asr", "ASR"), ("ra", "RA"), ("der", "DER"),
           ("bec", "BEC"), ("bec_minmax", "BEC min-max (authors)"), ("similarity", "S raw"), ("seconds", "s")]


def method_columns(methods) -> list[tuple[str, str]]:
    cols = []
    for m in methods:
        cols += [(f"react_asr:{m}", f"{m} ASR"), (f"react_ra:{m}", f"{m} RA"), (f"guaa_asr:{m}", f"{m} gUAA ASR")]
    return cols


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"epochs\": 20}'")
    return value


def add_spec_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per CellSpec field, derived from its type hint, default and
    help: `--poison-rate 0.05`, lists as `--defenses ft nad`, mappings as
    JSON, booleans as `--controls/--no-controls`. Values arrive as text and
    are checked against the same hints by `CellSpec.validate`, so the
    command line and grid files share one schema and one error format."""
    from benchmark.cell import CellSpec

    hints = typing.get_type_hints(CellSpec)
    names = {"dataset": DATASETS.names(), "arch": architecture_names(),
             "attack": [n for n in ATTACKS.names() if n != "clean"], "defenses": DEFENSES.names(),
             "reactivations": REACTIVATIONS.names()}
    for f in dataclasses.fields(CellSpec):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if f.name in names:
            help_text = f"{help_text}; built in: {', '.join(names[f.name])}"
        if f.name == "attack_params":
            help_text = f"{help_text}. {attack_options_help()}"
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, nargs="+", default=list(default), metavar="NAME", help=help_text)
        elif hint is dict:
            parser.add_argument(flag, type=_json_dict, default=default, metavar="JSON", help=help_text)
        else:
            choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
            if choices:
                help_text = f"{help_text} ({' | '.join(choices)})"
            parser.add_argument(flag, default=default, metavar=f.name.upper(), help=help_text)


def attack_options_help() -> str:
    """Each built-in attack's options with their defaults (training module,
    then trigger), for `--attack-params`' help."""
    from benchmark.cell.spec import attack_options

    def listed(params) -> str:
        return ", ".join(f"{n}={p.default!r}" for n, p in params.items()) or "none"

    parts = []
    for name in ATTACKS.names():
        if ATTACKS.get(name).trigger is None:
            continue
        module, trigger = attack_options(name)
        parts.append(f"{name}: module {listed(module)}; trigger {listed(trigger)}")
    return "Options per attack: " + " | ".join(parts)


def spec_from_args(args: argparse.Namespace, **overrides):
    """The CellSpec the options describe (validated by the caller)."""
    from benchmark.cell import CellSpec

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(CellSpec) if hasattr(args, f.name)}
    for key in ("defenses", "reactivations"):
        if key in values:
            values[key] = tuple(values[key])
    values.update(overrides)
    return CellSpec(**values)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bdbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cell = sub.add_parser("cell", help="run one cell: clean model, attack, defenses, BEC, re-activation",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_spec_arguments(cell)
    cell.add_argument("--data-dir", default="data", help="where datasets are looked for / downloaded")
    cell.add_argument("--store", default="store", help="artifact store directory")
    cell.add_argument("--out", default=None, help="write the results table here as JSON")
    cell.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    cell.add_argument("--no-progress", action="store_true", help="no progress bars or stage log")
    score = sub.add_parser("score", help="score one defense (built-in or plugin) against a grid's attacks and "
                                         "re-activation methods, beside the grid's own defenses",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    score.add_argument("defense", help="a defense name or plugin (package.module:Class, path/to/file.py:Class)")
    score.add_argument("--grid", default="sweeps/demo.yaml", help="grid file (on GPUs: sweeps/cifar10.yaml)")
    score.add_argument("--params", type=_json_dict, default={}, metavar="JSON",
                       help="the defense's parameters, e.g. '{\"epochs\": 20}'")
    score.add_argument("--reactivations", nargs="+", default=None, metavar="NAME",
                       help="re-activation methods (default: the grid's; 'all' for every one)")
    score.add_argument("--store", default=None, help="overrides the grid's store directory")
    score.add_argument("--data-dir", default=None, help="overrides the grid's data directory")
    score.add_argument("--output", default=None, help="where the leaderboard goes (default: <grid output>/score)")
    score.add_argument("--cpu-workers", type=int, default=None, help="overrides the grid's executor.cpu_workers")
    score.add_argument("--jobs-per-gpu", type=int, default=None, help="overrides the grid's executor.jobs_per_gpu")
    score.add_argument("--dry-run", action="store_true", help="list the jobs and which are in the store")
    return parser


def _fmt(value) -> str:
    return "–" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def results_table(rows: list[dict], title: str, methods) -> Table:
    table = Table(title=title)
    columns = COLUMNS + method_columns(methods)
    for _, header in columns:
        table.add_column(header, justify="left" if header == "model" else "right")
    notes = any(row.get("note") for row in rows)
    if notes:
        table.add_column("note")
    for row in rows:
        cells = [_fmt(row.get(key)) for key, _ in columns]
        if row.get("bec") is None and row.get("similarity") is not None:
            cells[[k for k, _ in columns].index("bec")] = "undef."
        table.add_row(*cells, *([row.get("note") or ""] if notes else []))
    return table


TABLE_LEGEND = ("C-Acc/ASR/RA of the clean row: the clean model under the trigger; its re-activation columns are "
                "the clean-model control. gUAA: the same optimisation on clean inputs. BEC = (S_D - S_C)/(1 - S_C), "
                "undef. when 1 - S(f_A,f_C) < 0.05; BEC min-max (authors): min-max of S over the clean model and "
                "the defenses of the attack, f_A at 1. s: seconds the stage took.")


def table_console() -> Console:
    """The terminal's console, or a wide one for logs and pipes, where rich
    would otherwise wrap the table to 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=240)


def run_cell(args) -> int:
    from benchmark.cell import Cell
    from benchmark.storage.store import ArtifactStore

    spec = spec_from_args(args)
    spec.validate()  # every value checked before the store is opened
    start = time.perf_counter()
    store = ArtifactStore(args.store)
    store.remove_stale_temporaries()  # what an interrupted earlier run left half-written
    cell = Cell(spec, store, data_dir=args.data_dir, accelerator=args.accelerator, progress=not args.no_progress)
    rows = cell.run()
    took = time.perf_counter() - start
    title = (f"{spec.dataset} / {spec.arch} / {spec.attack} / seed {spec.seed} — "
             f"re-activation at {spec.norm} eps={spec.epsilon}; {took:.0f} s")
    console = table_console()
    console.print(results_table(rows, title, spec.reactivations))
    console.print(TABLE_LEGEND, style="dim")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"spec": cell.describe(), "rows": rows, "seconds": took}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "cell":
            return run_cell(args)
        if args.command == "score":
            from benchmark.cli.score import run_score

            return run_score(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
