"""`bdbench cell`: one cell of the benchmark from the command line. Its
options come from the CellSpec fields (`add_spec_arguments`), so the command
line and grid files share one schema."""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
import typing
from pathlib import Path

from benchmark.reporting.console import TABLE_LEGEND, results_table, table_console
from benchmark.models import architecture_names
from datamodules import DATASETS
from lightning_modules.attacks import ATTACKS
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.retuning import RETUNINGS


def json_dict(text: str) -> dict:
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
             "reactivations": REACTIVATIONS.names(), "retunings": RETUNINGS.names()}
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
        elif typing.get_origin(_optional_inner(hint)) is tuple:
            item = typing.get_args(_optional_inner(hint))[0]
            numeric = isinstance(item, type) and issubclass(item, float)
            parser.add_argument(flag, nargs="+", default=None if default is None else list(default),
                                type=float if numeric else None, metavar="VALUE" if numeric else "NAME",
                                help=help_text)
        elif hint is dict:
            parser.add_argument(flag, type=json_dict, default=default, metavar="JSON", help=help_text)
        else:
            choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
            if choices:
                help_text = f"{help_text} ({' | '.join(choices)})"
            parser.add_argument(flag, default=default, metavar=f.name.upper(), help=help_text)


def _optional_inner(hint):
    """`X | None` -> X (an option whose default is None); other hints unchanged."""
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return hint


def attack_options_help() -> str:
    """Each built-in attack's options with their defaults (training module,
    then trigger), for `--attack-params`' help."""
    from benchmark.cell.families.classifier import attack_options

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
