"""Command line: ``bdbench cell`` runs one cell of the benchmark and prints
its table. ``python -m benchmark`` is the same program."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmark.errors import BenchmarkError
from benchmark.models import architecture_names
from datamodules import DATASETS
from lightning_modules.attacks import ATTACKS
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.norms import NORMS

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bdbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cell = sub.add_parser("cell", help="run one cell: clean model, attack, defenses, BEC, re-activation",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cell.add_argument("--dataset", default="fashion_mnist", help=f"one of: {', '.join(DATASETS.names())}")
    cell.add_argument("--arch", default="small_cnn", help=f"one of: {', '.join(architecture_names())}")
    cell.add_argument("--attack", default="badnets",
                      help=f"one of: {', '.join(n for n in ATTACKS.names() if n != 'clean')}")
    cell.add_argument("--defenses", nargs="+", default=["ft", "nad"], help=f"any of: {', '.join(DEFENSES.names())}")
    cell.add_argument("--seed", type=int, default=0)
    cell.add_argument("--epochs", type=int, default=3, help="training epochs of the clean and backdoored models")
    cell.add_argument("--batch-size", type=int, default=128)
    cell.add_argument("--lr", type=float, default=0.01, help="learning rate of the clean and backdoored models")
    cell.add_argument("--poison-rate", type=float, default=0.1)
    cell.add_argument("--poison-selection", default="all", choices=["all", "non_target"],
                      help="draw poisoned samples from all training samples (BackdoorBench) or non-target ones")
    cell.add_argument("--clean-data-order", default="own", choices=["own", "shared"],
                      help="the clean model's data order: its own (a separate run) or the backdoored model's")
    cell.add_argument("--target-label", type=int, default=0)
    cell.add_argument("--clean-ratio", type=float, default=0.05, help="defender's clean subset, fraction of train")
    cell.add_argument("--reactivations", nargs="+", default=["wba"],
                      help=f"any of: {', '.join(REACTIVATIONS.names())}")
    cell.add_argument("--epsilon", type=float, default=0.05, help="perturbation budget in [0,1] pixel units")
    cell.add_argument("--norm", default="linf", help=f"one of: {', '.join(NORMS)}")
    cell.add_argument("--bec-samples", type=int, default=500, help="triggered test images BEC compares")
    cell.add_argument("--bec-rank-samples", type=int, default=2200, help="test pairs that rank BEC's channels")
    cell.add_argument("--bec-ratio", type=float, default=0.1, help="fraction of channels kept per layer")
    cell.add_argument("--trigger-params", type=_json_dict, default={}, help="JSON overrides of the attack's trigger")
    cell.add_argument("--defense-params", type=_json_dict, default={},
                      help="JSON {defense: {param: value}}, e.g. '{\"ft\": {\"epochs\": 20}}'")
    cell.add_argument("--reactivation-params", type=_json_dict, default={},
                      help="JSON {method: {param: value}}, e.g. '{\"wba\": {\"epochs\": 10}}'")
    cell.add_argument("--data-params", type=_json_dict, default={}, help="JSON extra data-module arguments")
    cell.add_argument("--data-dir", default="data", help="where datasets are looked for / downloaded")
    cell.add_argument("--store", default="store", help="artifact store directory")
    cell.add_argument("--out", default=None, help="write the results table here as JSON")
    cell.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    cell.add_argument("--no-progress", action="store_true", help="no progress bars or stage log")
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
    from benchmark.cell import Cell, CellSpec
    from benchmark.store import ArtifactStore

    spec = CellSpec(dataset=args.dataset, arch=args.arch, attack=args.attack, defenses=tuple(args.defenses),
                    seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    poison_rate=args.poison_rate, poison_selection=args.poison_selection,
                    clean_data_order=args.clean_data_order, bec_rank_samples=args.bec_rank_samples,
                    target_label=args.target_label, clean_ratio=args.clean_ratio,
                    reactivations=tuple(args.reactivations), epsilon=args.epsilon, norm=args.norm,
                    bec_samples=args.bec_samples, bec_ratio=args.bec_ratio, trigger_params=args.trigger_params,
                    defense_params=args.defense_params, reactivation_params=args.reactivation_params,
                    data_params=args.data_params)
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
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
