"""Report of a grid of benchmark cells: the files a researcher reads.

Input rows: one dict per (dataset, arch, attack, model, seed), where `model`
is "clean" (f_C), "backdoored" (f_A) or a defense name (f_D). Metric keys are
listed in PAPER.md ("Metrics", "BEC"); per re-activation method m there are
"react_asr:m", "react_ra:m", "guaa_asr:m" and optionally ASR-vs-queries
points "react_asr:m@Nq". Any other key passes through to CSV / JSON.

write_report() writes results.csv / results.json (every row, every key),
summary.md (mean ± std over seeds) and the figures: bec_vs_asr.png (the
paper's Figure 1), reactivation_asr.png and, when curve points exist,
asr_vs_queries.png. summarize() is the aggregation behind summary.md, flat
so that W&B can log it as a table. load_rows() reads results.json back.

Missing values (absent key, None, NaN) never raise: they are skipped in means
and figures and shown as "–" in markdown.
"""
from __future__ import annotations

import csv
import json
import math
import numbers
import re
import statistics
from pathlib import Path


IDENTITY = ["dataset", "arch", "attack", "model", "seed"]
GROUP = ["dataset", "arch", "attack", "model"]
BASE_METRICS = ["clean_acc", "asr", "ra", "der", "bec", "bec_minmax", "similarity", "seconds"]
CLEAN, BACKDOORED = "clean", "backdoored"
# The paper's order of presentation; unknown methods follow, sorted.
KNOWN_METHODS = ("wba", "qbra", "tbra")
METHOD_KINDS = ("react_asr", "react_ra", "guaa_asr")

_METHOD_KEY = re.compile(r"^(react_asr|react_ra|guaa_asr):([^@]+)$")
_CURVE_KEY = re.compile(r"^react_asr:([^@]+)@(\d+)q$")

# Headers of summary.md; `True` marks rates, shown in percent with one decimal.
# DER is a rating in [0, 1] that BackdoorBench also reports in percent.
_MD_BASE = [("clean_acc", "C-Acc %", True), ("asr", "ASR %", True), ("ra", "RA %", True), ("der", "DER %", True),
            ("bec", "BEC", False), ("bec_minmax", "BEC min-max (authors)", False), ("similarity", "S raw", False),
            ("seconds", "seconds", False)]
BEC_LEGEND = ("BEC = (S(f_A,f_D) - S(f_A,f_C)) / (1 - S(f_A,f_C)), unclipped, – (undefined) when "
              "1 - S(f_A,f_C) < 0.05; BEC min-max (authors) = the authors' plotting normalisation: min-max of S "
              "over the clean model and the defenses of one attack, the backdoored model left out and plotted at 1")


# ---- values and columns ----------------------------------------------------------------
def _num(value) -> float | None:
    """A finite float, or None for anything missing or non-numeric (NaN, inf, None, text)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _methods(keys) -> list[str]:
    found = {m.group(2) for k in keys if (m := _METHOD_KEY.match(k))}
    found |= {m.group(1) for k in keys if (m := _CURVE_KEY.match(k))}
    return [m for m in KNOWN_METHODS if m in found] + sorted(found - set(KNOWN_METHODS))


def _curve_points(keys, method: str) -> list[tuple[int, str]]:
    """(queries, key) of one method's ASR-vs-queries points, by query count."""
    return sorted((int(m.group(2)), k) for k in keys if (m := _CURVE_KEY.match(k)) and m.group(1) == method)


def metric_columns(rows: list[dict]) -> list[str]:
    """Base metrics (always), then per method its re-activation / gUAA columns and curve points."""
    keys = set().union(*rows) if rows else set()
    cols = list(BASE_METRICS)
    for m in _methods(keys):
        cols += [f"{kind}:{m}" for kind in METHOD_KINDS if f"{kind}:{m}" in keys]
        cols += [k for _, k in _curve_points(keys, m)]
    return cols


def columns(rows: list[dict]) -> list[str]:
    """Stable column order: identity, the known metrics, then every other key sorted."""
    known = IDENTITY + metric_columns(rows)
    others = sorted(set().union(*rows) - set(known)) if rows else []
    return known + others


def _ordered(values) -> list:
    """Distinct values in first-appearance order: the grid's own order, and no
    comparison between e.g. None and str."""
    return list(dict.fromkeys(values))


def _model_rank(models: list) -> dict:
    """Clean and backdoored references first, then defenses as they appear."""
    rest = [m for m in _ordered(models) if m not in (CLEAN, BACKDOORED)]
    return {m: i for i, m in enumerate([CLEAN, BACKDOORED] + rest)}


# ---- aggregation ------------------------------------------------------------------------
def summarize(rows: list[dict]) -> list[dict]:
    """Mean and sample std (ddof=1) over seeds per (dataset, arch, attack, model).

    Each output row has the group keys, `n_seeds` (rows in the group) and for
    every metric column c: `c_mean`, `c_std` and `c_n` (finite values used).
    The mean is None without a finite value, the std None with fewer than two,
    so every row has the same keys (a W&B table needs that)."""
    metrics = metric_columns(rows)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in GROUP), []).append(row)
    order = [{v: i for i, v in enumerate(_ordered(r.get(k) for r in rows))} for k in GROUP[:3]]
    rank = _model_rank([r.get("model") for r in rows])
    out = []
    for key in sorted(groups, key=lambda g: (*(o[v] for o, v in zip(order, g)), rank[g[3]])):
        members = groups[key]
        agg = dict(zip(GROUP, key), n_seeds=len(members))
        for col in metrics:
            vals = [v for r in members if (v := _num(r.get(col))) is not None]
            agg[f"{col}_mean"] = statistics.fmean(vals) if vals else None
            agg[f"{col}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
            agg[f"{col}_n"] = len(vals)
        out.append(agg)
    return out


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
    mean, std = agg.get(f"{col}_mean"), agg.get(f"{col}_std")
    if mean is None:
        return "–"
    scale, digits = (100.0, 1) if pct else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def _markdown(summary: list[dict], methods: list[str], title: str, figures: list[str]) -> str:
    cols = list(_MD_BASE)
    for m in methods:
        cols += [(f"react_asr:{m}", f"{m} re-act ASR %", True), (f"guaa_asr:{m}", f"{m} gUAA ASR %", True)]
    lines = [f"# {title}", "",
             "Mean ± sample std over seeds (std only with more than one seed); rates in percent; "
             "– = not applicable or missing.", "",
             f"- {BEC_LEGEND}.",
             "- S raw = S(f_A, model): mean over layers of linear CKA on the backdoor-related channels.",
             "- re-act ASR: original trigger + universal perturbation δ on the model; "
             "gUAA ASR: the control, δ optimised on clean inputs, no trigger.", ""]
    header = ["attack", "model", "seeds"] + [h for _, h, _ in cols]
    for panel in _ordered((a["dataset"], a["arch"]) for a in summary):
        lines += [f"## {panel[0]} / {panel[1]}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] * 3 + ["---:"] * len(cols)) + "|"]
        for agg in (a for a in summary if (a["dataset"], a["arch"]) == panel):
            cells = [str(agg["attack"]), str(agg["model"]), str(agg["n_seeds"])]
            lines.append("| " + " | ".join(cells + [_fmt(agg, c, pct) for c, _, pct in cols]) + " |")
        lines.append("")
    lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})\n" for f in figures]
    return "\n".join(lines)


def write_report(rows: list[dict], out_dir: Path, title: str = "Backdoor re-activation benchmark") -> dict[str, Path]:
    """Write results.csv, results.json, summary.md and the PNG figures into
    out_dir; returns {name: path} of what was written."""
    from benchmark.figures import plot_asr_vs_queries, plot_bec_vs_asr, plot_reactivation

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    cols = columns(rows)
    summary = summarize(rows)
    methods = _methods(set().union(*rows) if rows else set())
    paths = {"csv": out_dir / "results.csv", "json": out_dir / "results.json", "summary": out_dir / "summary.md"}
    _write_csv(rows, cols, paths["csv"])
    _write_json(rows, cols, paths["json"])
    paths["bec_vs_asr"] = plot_bec_vs_asr(summary, out_dir / "bec_vs_asr.png", title)
    paths["reactivation_asr"] = plot_reactivation(summary, methods, out_dir / "reactivation_asr.png", title)
    curve_path = out_dir / "asr_vs_queries.png"
    if plot_asr_vs_queries(summary, rows, curve_path, title) is not None:
        paths["asr_vs_queries"] = curve_path
    elif curve_path.exists():
        curve_path.unlink()  # a stale figure from an earlier report would contradict this one
    figures = [p.name for p in paths.values() if p.suffix == ".png"]
    paths["summary"].write_text(_markdown(summary, methods, title, figures))
    return paths
