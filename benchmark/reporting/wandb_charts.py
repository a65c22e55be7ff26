"""The charts a grid's W&B summary run carries, built on its tables with
W&B's own chart presets (`wandb.plot.*`), so that they appear as soon as the
run is synced, with nothing to set up on the server.

Every chart is faceted by attack (one chart per attack, and per dataset /
architecture when the grid has several); within one, each point, bar or
line is named by the model (clean f_C, backdoored f_A, or the defense).
Values are means over seeds; each chart's table also holds the 95 %
interval bounds and the seed count (benchmark.measures.intervals), which the W&B
table view shows beside the chart.

Keys (stable; benchmark/reporting/wandb_dashboard.py builds its panels on them):

- `charts/bec_vs_asr/<facet>`: the paper's Figure 1, BEC against the
  trigger's ASR (%), one point per model; `reference` says which points are
  the clean (BEC 0) and backdoored (BEC 1) models.
- `charts/reactivation/<method>/<facet>`: ASR (%) per model of the trigger
  alone, after re-activation with `method`, and its gUAA control, as bars
  labelled "<model> · trigger | <method> | gUAA".
- `charts/asr_vs_queries/<method>/<facet>`: ASR (%) against queries, one
  line per model (query-based methods that record a curve).
- `charts/asr_vs_epsilon/<method>/<facet>`: ASR (%) against the budget ε,
  one line per model and condition ("<model> · <method>" / "<model> ·
  gUAA"), when the grid ran an ε curve.
- `charts/retuning/<method>/<facet>`: weight-space re-activation, the
  model's own ASR (O-ASR) and after retuning with `method` (P-ASR), as bars
  labelled "<model> · O-ASR | P-ASR" (exact purification is the control).
- `tables/noise_robustness`: ASR under random noise of each control case at
  each noise level (present when the grid ran the controls).
"""
from __future__ import annotations

import re

from benchmark.measures.intervals import mean_interval
from benchmark.reporting.tables import BACKDOORED, CLEAN, curve_points, epsilon_key, epsilon_points, \
    method_names, ordered, retuning_names

_NOISE_KEY = re.compile(r"^noise_asr:([^:]+):([^@]+)@(.+)$")
REFERENCES = {CLEAN: "clean f_C", BACKDOORED: "backdoored f_A"}


def facets(summary: list[dict]) -> dict[tuple, str]:
    """(dataset, arch, attack) -> its key suffix: the attack alone when the
    grid has one dataset and architecture, else dataset-arch-attack."""
    groups = ordered(_ident(a) for a in summary)
    several = len({(d, r) for d, r, _ in groups}) > 1
    return {g: (f"{g[0]}-{g[1]}-{g[2]}" if several else str(g[2])) for g in groups}


def _ident(agg: dict) -> tuple:
    """(dataset, arch, attack) of a summary row; rows without them (tables of
    other shapes) group under None and never raise."""
    return agg.get("dataset"), agg.get("arch"), agg.get("attack")


def _pct(value):
    return None if value is None else 100.0 * value


def _members(summary: list[dict], group: tuple) -> list[dict]:
    return [a for a in summary if _ident(a) == group]


def figure1_rows(summary: list[dict], group: tuple) -> list[dict]:
    return [{"model": a.get("model"), "reference": REFERENCES.get(a.get("model"), "defense"),
             "asr_pct": _pct(a.get("asr_mean")), "bec": a.get("bec_mean"),
             "asr_pct_low": _pct(a.get("asr_low")), "asr_pct_high": _pct(a.get("asr_high")),
             "bec_low": a.get("bec_low"), "bec_high": a.get("bec_high"), "n_seeds": a.get("n_seeds")}
            for a in _members(summary, group) if a.get("asr_mean") is not None and a.get("bec_mean") is not None]


def reactivation_rows(summary: list[dict], group: tuple, method: str) -> list[dict]:
    rows = []
    for a in _members(summary, group):
        for condition, col in (("trigger", "asr"), (method, f"react_asr:{method}"), ("gUAA", f"guaa_asr:{method}")):
            if a.get(f"{col}_mean") is not None:
                rows.append({"label": f"{a.get('model')} · {condition}", "model": a.get("model"),
                             "condition": condition, "asr_pct": _pct(a[f"{col}_mean"]), "asr_pct_low": _pct(a.get(f"{col}_low")),
                             "asr_pct_high": _pct(a.get(f"{col}_high")), "n_seeds": a.get("n_seeds")})
    return rows


def curve_rows(summary: list[dict], group: tuple, points: list[tuple[int, str]]) -> list[dict]:
    return [{"model": a.get("model"), "queries": n, "asr_pct": _pct(a[f"{key}_mean"]),
             "asr_pct_low": _pct(a.get(f"{key}_low")), "asr_pct_high": _pct(a.get(f"{key}_high"))}
            for a in _members(summary, group) for n, key in points if a.get(f"{key}_mean") is not None]


def epsilon_rows(summary: list[dict], group: tuple, method: str, budgets: list[float]) -> list[dict]:
    rows = []
    for a in _members(summary, group):
        for condition, kind in ((method, "react_asr"), ("gUAA", "guaa_asr")):
            for eps in budgets:
                key = epsilon_key(kind, method, eps)
                if a.get(f"{key}_mean") is not None:
                    rows.append({"line": f"{a.get('model')} · {condition}", "model": a.get("model"), "epsilon": eps,
                                 "asr_pct": _pct(a[f"{key}_mean"]), "asr_pct_low": _pct(a.get(f"{key}_low")),
                                 "asr_pct_high": _pct(a.get(f"{key}_high"))})
    return rows


def retuning_rows(summary: list[dict], group: tuple, method: str) -> list[dict]:
    rows = []
    for a in _members(summary, group):
        for condition, col in (("O-ASR", "asr"), ("P-ASR", f"retune_asr:{method}")):
            if a.get(f"{col}_mean") is not None and a.get(f"retune_asr:{method}_mean") is not None:
                rows.append({"label": f"{a.get('model')} · {condition}", "model": a.get("model"),
                             "condition": condition, "asr_pct": _pct(a[f"{col}_mean"]),
                             "asr_pct_low": _pct(a.get(f"{col}_low")), "asr_pct_high": _pct(a.get(f"{col}_high")),
                             "n_seeds": a.get("n_seeds")})
    return rows


def noise_rows(rows: list[dict]) -> list[dict]:
    """Mean and interval over seeds of every noise-control ASR in the rows."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            if (m := _NOISE_KEY.match(key)) is not None:
                ident = (row.get("dataset"), row.get("arch"), row.get("attack"), row.get("model"), *m.groups())
                groups.setdefault(ident, []).append(value)
    out = []
    for (dataset, arch, attack, model, method, case, level), values in groups.items():
        interval = mean_interval(values)
        if interval is None:
            continue
        out.append({"dataset": dataset, "arch": arch, "attack": attack, "model": model, "method": method,
                    "case": case, "noise_level": level, "asr_pct": _pct(interval.mean),
                    "asr_pct_low": _pct(interval.low), "asr_pct_high": _pct(interval.high), "n_seeds": interval.n})
    return out


def chart_payload(rows: list[dict], summary: list[dict], table) -> dict:
    """{key: chart or table} for the summary run's `run.log`; `table` turns
    a list of dicts into a wandb.Table (benchmark.reporting.wandb_logging._table)."""
    import wandb

    keys = set().union(*rows) if rows else set()
    methods, retunings = method_names(keys), retuning_names(keys)
    payload = {}
    for group, facet in facets(summary).items():
        where = f"{group[2]} ({group[0]} / {group[1]})"
        fig1 = figure1_rows(summary, group)
        if fig1:
            payload[f"charts/bec_vs_asr/{facet}"] = wandb.plot.scatter(
                table(fig1), "asr_pct", "bec", title=f"BEC vs ASR % of the trigger, {where}: mean over seeds")
        for method in methods:
            bars = reactivation_rows(summary, group, method)
            if any(r["condition"] == method for r in bars):
                payload[f"charts/reactivation/{method}/{facet}"] = wandb.plot.bar(
                    table(bars), "label", "asr_pct",
                    title=f"ASR % of the trigger, after {method} and its gUAA control, {where}")
            points = curve_points(keys, method)
            curve = curve_rows(summary, group, points) if points else []
            if curve:
                payload[f"charts/asr_vs_queries/{method}/{facet}"] = wandb.plot.line(
                    table(curve), "queries", "asr_pct", stroke="model",
                    title=f"ASR % after {method} vs queries, {where}")
            budgets = epsilon_points(keys, method)
            eps_rows = epsilon_rows(summary, group, method, budgets) if len(budgets) > 1 else []
            if eps_rows:
                payload[f"charts/asr_vs_epsilon/{method}/{facet}"] = wandb.plot.line(
                    table(eps_rows), "epsilon", "asr_pct", stroke="line",
                    title=f"ASR % after {method} and its gUAA control vs ε, {where}")
        for method in retunings:
            bars = retuning_rows(summary, group, method)
            if bars:
                payload[f"charts/retuning/{method}/{facet}"] = wandb.plot.bar(
                    table(bars), "label", "asr_pct",
                    title=f"ASR % before (O-ASR) and after {method} (P-ASR), {where}")
    noise = noise_rows(rows)
    if noise:
        payload["tables/noise_robustness"] = table(noise)
    return payload
