"""How a cell's results reach the terminal: the cell table (`bdbench cell`,
and each cell after `bdbench run` / `python -m sweeps run`), its number
format (also `bdbench score`'s leaderboard table) and the console it prints
on.

Here rather than in benchmark/cli because the sweeps print the same table
and must not import the command line that runs them; it imports only rich."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

COLUMNS = [("model", "model"), ("clean_acc", "C-Acc"), ("asr", "ASR"), ("ra", "RA"), ("der", "DER"),
           ("bec", "BEC"), ("bec_minmax", "BEC min-max (authors)"), ("similarity", "S raw"), ("seconds", "s")]


def method_columns(methods) -> list[tuple[str, str]]:
    cols = []
    for m in methods:
        cols += [(f"react_asr:{m}", f"{m} ASR"), (f"react_ra:{m}", f"{m} RA"), (f"guaa_asr:{m}", f"{m} gUAA ASR")]
    return cols


def fmt(value) -> str:
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
        cells = [fmt(row.get(key)) for key, _ in columns]
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
