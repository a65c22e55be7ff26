"""Report of a grid of benchmark cells: the files a researcher reads.

write_report() writes results.csv / results.json (every row, every key;
the CSV also gives each row its group's mean and 95 % interval over seeds
and the paired re-activation-vs-gUAA test, benchmark.measures.intervals), summary.md
(mean ± interval half-width over seeds) and the figures: bec_vs_asr.png (the
paper's Figure 1), reactivation_asr.png and, when curve points exist,
asr_vs_queries.png. load_rows() reads results.json back.

The rows' keys, their order and summarize() (the statistics over seeds
behind summary.md, flat so that W&B can log it as a table) live in
benchmark.reporting.tables, which the figures share; they are re-exported
here, where readers of a grid have always imported them.

Missing values (absent key, None, NaN) never raise: they are skipped in means
and figures and shown as "–" in markdown.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

# More names than this module uses: the re-exports the docstring speaks of.
from benchmark.reporting.tables import (BACKDOORED, BASE_METRICS, CLEAN, GROUP, IDENTITY, KNOWN_METHODS, METHOD_KINDS,
                                        columns, method_names, metric_columns, ordered, retuning_names, summarize)

# Headers of summary.md; `True` marks rates, shown in percent with one decimal.
# DER is a rating in [0, 1] that BackdoorBench also reports in percent.
_MD_BASE = [("clean_acc", "C-Acc %", True), ("asr", "ASR %", True), ("ra", "RA %", True), ("der", "DER %", True),
            ("bec", "BEC", False), ("bec_minmax", "BEC min-max (authors)", False), ("similarity", "S raw", False),
            ("seconds", "seconds", False)]
BEC_LEGEND = ("BEC = (S(f_A,f_D) - S(f_A,f_C)) / (1 - S(f_A,f_C)), unclipped, – (undefined) when "
              "1 - S(f_A,f_C) < 0.05; BEC min-max (authors) = the authors' plotting normalisation: min-max of S "
              "over the clean model and the defenses of one attack, the backdoored model left out and plotted at 1")


# ---- CSV / JSON -------------------------------------------------------------------------
def _jsonable(value):
    """numpy / torch scalars and arrays -> Python; NaN and inf -> None (strict JSON has no NaN)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _csv_value(value) -> str:
    value = _jsonable(value)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)  # repr: full precision


def _write_csv(rows: list[dict], cols: list[str], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(cols)
        for row in rows:
            writer.writerow([_csv_value(row[c]) if c in row else "" for c in cols])


def interval_columns(summary: list[dict], metrics: list[str]) -> list[str]:
    """The group statistics results.csv carries beside each seed's value: per
    metric (ASR-vs-queries points and seconds left out) its mean over the
    group's seeds and 95 % interval bounds, then per method the paired
    re-activation - gUAA difference with its bounds and one-sided p."""
    cols = ["n_seeds"]
    for c in metrics:
        if "@" in c or c == "seconds":
            continue
        cols += [f"{c}:mean", f"{c}:ci_low", f"{c}:ci_high"]
    keys = set().union(*summary) if summary else set()
    for m in ordered(k[4:-5] for k in keys if k.startswith("gap:") and k.endswith("_mean")):
        cols += [f"gap:{m}:mean", f"gap:{m}:ci_low", f"gap:{m}:ci_high", f"gap:{m}:p", f"gap:{m}:significant"]
    return cols


def _with_intervals(rows: list[dict], summary: list[dict], cols: list[str]) -> list[dict]:
    """Each row plus its (dataset, arch, attack, model) group's statistics in `cols`."""
    by_group = {tuple(a[k] for k in GROUP): a for a in summary}
    out = []
    for row in rows:
        agg = by_group.get(tuple(row.get(k) for k in GROUP), {})
        extra = {"n_seeds": agg.get("n_seeds")}
        for col in cols[1:]:
            metric, _, stat = col.rpartition(":")
            name = {"mean": "mean", "ci_low": "low", "ci_high": "high", "p": "p", "significant": "significant"}[stat]
            extra[col] = agg.get(f"{metric}_{name}")
        out.append({**row, **extra})
    return out


def _write_json(rows: list[dict], cols: list[str], path: Path) -> None:
    # Each row keeps only its own keys (so load_rows gives back what came in),
    # in the report's column order.
    data = [{c: _jsonable(row[c]) for c in cols if c in row} for row in rows]
    path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")


def load_rows(path: str | Path) -> list[dict]:
    """Rows from a results.json (or from the directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    data = json.loads(path.read_text())
    return data["rows"] if isinstance(data, dict) else data


# ---- markdown -----------------------------------------------------------------------------
def _fmt(agg: dict, col: str, pct: bool) -> str:
    """"mean ± h" with h the half-width of the 95 % interval; the mean alone
    when there is no interval (one seed)."""
    mean, low, high = agg.get(f"{col}_mean"), agg.get(f"{col}_low"), agg.get(f"{col}_high")
    if mean is None:
        return "–"
    scale, digits = (100.0, 1) if pct else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    return text if low is None else f"{text} ± {(high - low) / 2 * scale:.{digits}f}"


def _fmt_gap(agg: dict, method: str) -> str:
    """Re-activation minus gUAA ASR in points, its interval and the paired
    test: "41.2 ± 3.0 (p 0.003) *", "*" when significant at 0.05."""
    text = _fmt(agg, f"gap:{method}", True)
    if text == "–":
        return text
    p = agg.get(f"gap:{method}_p")
    if p is None:
        return f"{text} (no test: 1 seed)"
    return f"{text} (p {p:.3g}){' *' if agg.get(f'gap:{method}_significant') else ''}"


def seeds_sentence(summary: list[dict]) -> str:
    """How many seeds the statistics rest on, said plainly."""
    from benchmark.measures.intervals import INTERVAL_NAME, TEST_NAME

    counts = sorted({a["n_seeds"] for a in summary})
    if not counts:
        return "No results in the store yet."
    if counts == [1]:
        return ("One seed per row: the values are single measurements, with no interval and no significance test "
                "(run more seeds for them).")
    seeds = " or ".join(str(c) for c in counts)
    return (f"Mean over seeds ({seeds} per row) ± the half-width of the {INTERVAL_NAME}; rows with one seed show "
            f"the value alone. re-act − gUAA: the paired difference in points, {TEST_NAME}; * = significant.")


def _markdown(summary: list[dict], methods: list[str], title: str, figures: list[str],
              retunings: list[str] = ()) -> str:
    cols = list(_MD_BASE)
    for m in methods:
        cols += [(f"react_asr:{m}", f"{m} re-act ASR %", True), (f"guaa_asr:{m}", f"{m} gUAA ASR %", True)]
    for m in methods:
        if any(a.get(f"eps_star:{m}_mean") is not None or f"eps_star:{m}_n" in a for a in summary):
            cols += [(f"eps_star:{m}", f"{m} ε*", False)]
    for r in retunings:
        cols += [(f"retune_asr:{r}", f"{r} P-ASR %", True), (f"retune_acc:{r}", f"{r} C-Acc %", True)]
    if any(a.get("qra_asr_n") for a in summary):
        cols += [("qra_asr", "QRA ASR %", True), ("qra_fooling_rate", "QRA fooling %", True)]
    gaps = [m for m in methods if any(a.get(f"gap:{m}_mean") is not None for a in summary)]
    lines = [f"# {title}", "",
             seeds_sentence(summary) + " Rates in percent; – = not applicable or missing.", "",
             f"- {BEC_LEGEND}.",
             "- S raw = S(f_A, model): mean over layers of linear CKA on the backdoor-related channels.",
             "- re-act ASR: original trigger + universal perturbation δ on the model; "
             "gUAA ASR: the control, δ optimised on clean inputs, no trigger."]
    if any(any(f"eps_star:{m}_n" in a for a in summary) for m in methods):
        lines += ["- ε*: the smallest budget of the cell's ε curve at which re-activation ASR exceeds its gUAA "
                  "control by the cell's epsilon_margin (– where it never does); asr_vs_epsilon.png has the curves."]
    if retunings:
        lines += ["- P-ASR: the ASR after weight-space re-activation (a copy of the model fine-tuned on the "
                  "attacker's small set with a few poisoned samples); ASR is the model's own (O-ASR). "
                  "exact-purification: the control (f_A fine-tuned on the poisoned samples with their true labels)."]
    if any(a.get("qra_asr_n") for a in summary):
        lines += ["- QRA ASR: trigger + the per-input δ(x) of QRA's generator on the model; QRA fooling: clean "
                  "non-target images + δ(x) classified as the target (results.csv also has both on the clean "
                  "model, under the same generator)."]
    lines += [""]
    header = ["attack", "model", "seeds"] + [h for _, h, _ in cols] + [f"{m} re-act − gUAA (pts)" for m in gaps]
    for panel in ordered((a["dataset"], a["arch"]) for a in summary):
        lines += [f"## {panel[0]} / {panel[1]}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * 3 + ["---:"] * (len(cols) + len(gaps))) + "|"]
        for agg in (a for a in summary if (a["dataset"], a["arch"]) == panel):
            cells = [str(agg["attack"]), str(agg["model"]), str(agg["n_seeds"])]
            lines.append("| " + " | ".join(cells + [_fmt(agg, c, pct) for c, _, pct in cols]
                                           + [_fmt_gap(agg, m) for m in gaps]) + " |")
        lines.append("")
    lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})\n" for f in figures]
    return "\n".join(lines)


def write_report(rows: list[dict], out_dir: Path, title: str = "Backdoor re-activation benchmark") -> dict[str, Path]:
    """Write results.csv, results.json, summary.md and the PNG figures into
    out_dir; returns {name: path} of what was written."""
    # Imported here, not at the top: matplotlib takes a good part of a second to
    # import, and readers of this module that only load and summarize rows (the
    # W&B dashboard) draw nothing.
    from benchmark.reporting.figures import plot_asr_vs_queries, plot_bec_vs_asr, plot_reactivation
    from benchmark.reporting.robustness_figures import plot_epsilon_curves, plot_retuning

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    cols = columns(rows)
    summary = summarize(rows)
    methods = method_names(set().union(*rows) if rows else set())
    paths = {"csv": out_dir / "results.csv", "json": out_dir / "results.json", "summary": out_dir / "summary.md"}
    # results.csv: one row per seed as results.json, and beside each value its
    # group's mean and 95 % interval over seeds (empty bounds with one seed)
    stats = interval_columns(summary, metric_columns(rows))
    known = IDENTITY + metric_columns(rows)
    _write_csv(_with_intervals(rows, summary, stats),
               known + stats + [c for c in cols if c not in known], paths["csv"])
    _write_json(rows, cols, paths["json"])
    paths["bec_vs_asr"] = plot_bec_vs_asr(summary, out_dir / "bec_vs_asr.png", title)
    paths["reactivation_asr"] = plot_reactivation(summary, methods, out_dir / "reactivation_asr.png", title)
    curve_path = out_dir / "asr_vs_queries.png"
    if plot_asr_vs_queries(summary, rows, curve_path, title) is not None:
        paths["asr_vs_queries"] = curve_path
    elif curve_path.exists():
        curve_path.unlink()  # a stale figure from an earlier report would contradict this one
    retunings = retuning_names(set().union(*rows) if rows else set())
    retune_path = out_dir / "retuning_asr.png"
    if retunings:
        paths["retuning_asr"] = plot_retuning(summary, retunings, retune_path, title)
    elif retune_path.exists():
        retune_path.unlink()
    eps_path = out_dir / "asr_vs_epsilon.png"
    if plot_epsilon_curves(summary, methods, eps_path, title) is not None:
        paths["asr_vs_epsilon"] = eps_path
    elif eps_path.exists():
        eps_path.unlink()
    figures = [p.name for p in paths.values() if p.suffix == ".png"]
    paths["summary"].write_text(_markdown(summary, methods, title, figures, retunings))
    return paths
