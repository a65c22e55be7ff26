"""A grid's rows as tables: their keys, column and row order, and summarize(),
the statistics over seeds that the report, the figures, the leaderboard, the
results page and the W&B charts all read.

Input rows: one dict per (dataset, arch, attack, model, seed), where `model`
is "clean" (f_C), "backdoored" (f_A) or a defense name (f_D). Metric keys are
listed in PAPER.md ("Metrics", "BEC"); per re-activation method m there are
"react_asr:m", "react_ra:m", "guaa_asr:m" and optionally ASR-vs-queries
points "react_asr:m@Nq", ε-curve points "react_asr:m@eps=e" / "guaa_asr:m@eps=e"
and "eps_star:m"; per weight-space method r "retune_asr:r" (P-ASR),
"retune_acc:r", "retune_ra:r". Any other key passes through to CSV / JSON.

This module sits below every writer of files (report, figures, leaderboard)
and imports none of them, so that each can use it without a circle.
Missing values (absent key, None, NaN) never raise: they are skipped.
"""
from __future__ import annotations

import math
import numbers
import re
import statistics

IDENTITY = ["dataset", "arch", "attack", "model", "seed"]
GROUP = ["dataset", "arch", "attack", "model"]
BASE_METRICS = ["clean_acc", "asr", "ra", "der", "bec", "bec_minmax", "similarity", "seconds"]
CLEAN, BACKDOORED = "clean", "backdoored"
# The paper's order of presentation; unknown methods follow, sorted.
KNOWN_METHODS = ("wba", "qbra", "tbra")
METHOD_KINDS = ("react_asr", "react_ra", "guaa_asr")
# Weight-space re-activation per method r: the retuned model's ASR (P-ASR;
# the model's own `asr` is its O-ASR), C-Acc and RA.
RETUNING_KINDS = ("retune_asr", "retune_acc", "retune_ra")
# QRA against the model and, with the same generator, against the clean model
QRA_COLUMNS = ("qra_asr", "qra_fooling_rate", "qra_asr:clean_model", "qra_fooling_rate:clean_model")

_METHOD_KEY = re.compile(r"^(react_asr|react_ra|guaa_asr):([^@]+)$")
_CURVE_KEY = re.compile(r"^react_asr:([^@]+)@(\d+)q$")
_RETUNE_KEY = re.compile(r"^(retune_asr|retune_acc|retune_ra):(.+)$")
_EPS_KEY = re.compile(r"^(react_asr|guaa_asr):([^@]+)@eps=([0-9.eE+-]+)$")


# ---- values and columns ----------------------------------------------------------------
def _num(value) -> float | None:
    """A finite float, or None for anything missing or non-numeric (NaN, inf, None, text)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def method_names(keys) -> list[str]:
    """The re-activation methods named in `keys`: the paper's in its order, then others sorted."""
    found = {m.group(2) for k in keys if (m := _METHOD_KEY.match(k))}
    found |= {m.group(1) for k in keys if (m := _CURVE_KEY.match(k))}
    found |= {m.group(2) for k in keys if (m := _EPS_KEY.match(k))}
    return [m for m in KNOWN_METHODS if m in found] + sorted(found - set(KNOWN_METHODS))


def epsilon_points(keys, method: str) -> list[float]:
    """The budgets of one method's ε curve, ascending."""
    return sorted({float(m.group(3)) for k in keys if (m := _EPS_KEY.match(k)) and m.group(2) == method})


def epsilon_key(kind: str, method: str, eps: float) -> str:
    return f"{kind}:{method}@eps={eps:g}"


def retuning_names(keys) -> list[str]:
    """The weight-space re-activation methods named in `keys`, sorted."""
    return sorted({m.group(2) for k in keys if (m := _RETUNE_KEY.match(k))})


def curve_points(keys, method: str) -> list[tuple[int, str]]:
    """(queries, key) of one method's ASR-vs-queries points, by query count."""
    return sorted((int(m.group(2)), k) for k in keys if (m := _CURVE_KEY.match(k)) and m.group(1) == method)


def metric_columns(rows: list[dict]) -> list[str]:
    """Base metrics (always), then per method its re-activation / gUAA columns and curve points."""
    keys = set().union(*rows) if rows else set()
    cols = list(BASE_METRICS)
    for m in method_names(keys):
        cols += [f"{kind}:{m}" for kind in METHOD_KINDS if f"{kind}:{m}" in keys]
        cols += [k for _, k in curve_points(keys, m)]
        eps = epsilon_points(keys, m)
        cols += [k for e in eps for kind in ("react_asr", "guaa_asr") if (k := epsilon_key(kind, m, e)) in keys]
        cols += [f"eps_star:{m}"] if f"eps_star:{m}" in keys else []
    for r in retuning_names(keys):
        cols += [f"{kind}:{r}" for kind in RETUNING_KINDS if f"{kind}:{r}" in keys]
    cols += [c for c in QRA_COLUMNS if c in keys]
    return cols


def columns(rows: list[dict]) -> list[str]:
    """Stable column order: identity, the known metrics, then every other key sorted."""
    known = IDENTITY + metric_columns(rows)
    others = sorted(set().union(*rows) - set(known)) if rows else []
    return known + others


def ordered(values) -> list:
    """Distinct values in first-appearance order: the grid's own order, and no
    comparison between e.g. None and str."""
    return list(dict.fromkeys(values))


def model_rank(models: list) -> dict:
    """Clean and backdoored references first, then defenses as they appear."""
    rest = [m for m in ordered(models) if m not in (CLEAN, BACKDOORED)]
    return {m: i for i, m in enumerate([CLEAN, BACKDOORED] + rest)}


# ---- aggregation ------------------------------------------------------------------------
def summarize(rows: list[dict]) -> list[dict]:
    """Mean, sample std (ddof=1) and 95 % confidence interval over seeds per
    (dataset, arch, attack, model), and per re-activation method the paired
    test of re-activation against its gUAA control (benchmark.measures.intervals).

    Each output row has the group keys, `n_seeds` (rows in the group) and for
    every metric column c: `c_mean`, `c_std`, `c_low`, `c_high` (the interval;
    None with fewer than two finite values) and `c_n` (finite values used).
    Per method m with both columns: `gap:m_mean/_low/_high/_n` (react_asr -
    guaa_asr, paired by seed), `gap:m_p` (one-sided p) and
    `gap:m_significant` (p < 0.05; None without a test). Every row has the
    same keys (a W&B table needs that)."""
    from benchmark.measures.intervals import mean_interval, paired_greater

    metrics = metric_columns(rows)
    methods = [m for m in method_names(set().union(*rows) if rows else set())
               if f"react_asr:{m}" in metrics and f"guaa_asr:{m}" in metrics]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in GROUP), []).append(row)
    order = [{v: i for i, v in enumerate(ordered(r.get(k) for r in rows))} for k in GROUP[:3]]
    rank = model_rank([r.get("model") for r in rows])
    out = []
    for key in sorted(groups, key=lambda g: (*(o[v] for o, v in zip(order, g)), rank[g[3]])):
        members = groups[key]
        agg = dict(zip(GROUP, key), n_seeds=len(members))
        for col in metrics:
            vals = [v for r in members if (v := _num(r.get(col))) is not None]
            interval = mean_interval(vals)
            agg[f"{col}_mean"] = interval.mean if interval else None
            agg[f"{col}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
            agg[f"{col}_low"] = interval.low if interval else None
            agg[f"{col}_high"] = interval.high if interval else None
            agg[f"{col}_n"] = len(vals)
        for m in methods:
            test = paired_greater([r.get(f"react_asr:{m}") for r in members],
                                  [r.get(f"guaa_asr:{m}") for r in members])
            diff = test.difference if test else None
            agg[f"gap:{m}_mean"] = diff.mean if diff else None
            agg[f"gap:{m}_low"] = diff.low if diff else None
            agg[f"gap:{m}_high"] = diff.high if diff else None
            agg[f"gap:{m}_n"] = diff.n if diff else 0
            agg[f"gap:{m}_p"] = test.p_value if test else None
            agg[f"gap:{m}_significant"] = test.significant if test else None
        out.append(agg)
    return out
