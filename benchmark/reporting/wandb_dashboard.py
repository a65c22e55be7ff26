"""The W&B workspace and report of a grid, built in code
(`python -m sweeps wandb-dashboard GRID`, `make wandb-dashboard`).

A plain JSON spec comes first (`dashboard_spec`): sections of panels, each
panel naming the logged keys it shows. It is written to
`<output>/wandb/dashboard.json` every time, and turned into
`wandb_workspaces` objects (`to_workspace`, `to_report`), which are saved
to the grid's entity/project when a W&B login exists. Without one the
command stops with one line saying so; the spec can be applied later with
`--spec <output>/wandb/dashboard.json`.

What the panels read (the names are stable; the stage runs carry them,
sweeps/worker.py, and the summary run, benchmark/reporting/wandb_charts.py):
- config keys of every stage run: CONFIG_KEYS; "stage" is the stage kind
  (train, attack, trigger, defense, bec, evaluate, reactivation, guaa,
  controls), "model" the model it made or measured;
- per-epoch history: EPOCH_METRICS against "epoch"; final summary metrics:
  FINAL_METRICS;
- the summary run's tables "results" and "summary", its charts
  (chart_payload's keys, each with a "<key>_table") and figures
  ("figures/<name>"); a `bdbench score` run's "leaderboard" table and
  "figures/leaderboard".
"""
from __future__ import annotations

import json
from pathlib import Path

CONFIG_KEYS = ("grid", "dataset", "arch", "attack", "defense", "method", "model", "seed", "stage")
#: per-epoch curves: the training stages' mean loss (lightning_modules/base.py,
#: and the defenses that log their own "train/loss" with on_epoch) and the
#: re-activation search's loss (lightning_modules/reactivation)
EPOCH_METRICS = ("train/loss_epoch", "react/loss")
FINAL_METRICS = ("test/clean_acc", "test/asr", "test/ra")
#: stage kinds shown together in the report: (stages, their curves, their final metrics)
STAGE_GROUPS = {
    "Training the clean and backdoored models": (["train", "attack", "trigger"], ["train/loss_epoch"],
                                                 ["test/clean_acc", "test/asr"]),
    "Defenses": (["defense"], ["train/loss_epoch"], list(FINAL_METRICS)),
    "Re-activation and its gUAA control": (["reactivation", "guaa"], ["react/loss"], ["test/asr", "test/ra"]),
    "Weight-space re-activation and its controls": (["retune", "purify", "qra"], ["train/loss_epoch"],
                                                    list(FINAL_METRICS)),
}
FIGURES = ("bec_vs_asr", "reactivation_asr", "asr_vs_queries", "asr_vs_epsilon", "retuning_asr")


def chart_panels(rows: list[dict], summary: list[dict]) -> list[dict]:
    """One panel per chart the summary run logs: its preset, fields and table."""
    from benchmark.reporting.wandb_charts import chart_payload
    from benchmark.reporting.wandb_logging import _table

    panels = []
    for key, value in chart_payload(rows, summary, _table).items():
        spec = getattr(value, "spec", None)
        if spec is None:  # a plain table (noise robustness)
            panels.append({"type": "table", "table": key})
        else:
            panels.append({"type": "chart", "key": key, "table": f"{key}_table", "preset": spec.spec_name,
                           "fields": dict(spec.fields), "strings": dict(spec.string_fields)})
    return panels


def dashboard_spec(*, grid: str, entity: str | None, project: str, rows: list[dict], summary: list[dict],
                   figures: list[str], leaderboards: list[str]) -> dict:
    """The workspace and report of a grid as plain data. `figures`: the
    report PNGs that exist; `leaderboards`: the `bdbench score` runs' names."""
    overview = chart_panels(rows, summary) + [
        {"type": "media", "keys": [f"figures/{f}" for f in figures]},
        {"type": "table", "table": "summary"}, {"type": "table", "table": "results"}]
    curves = [{"type": "line", "x": "epoch", "y": [m], "groupby": "stage", "title": f"{m} per epoch, by stage kind"}
              for m in EPOCH_METRICS]
    finals = [{"type": "bar", "metrics": [m], "groupby": "model", "title": f"{m} by model (mean over runs)"}
              for m in FINAL_METRICS]
    sections = [{"name": "Grid overview", "panels": overview},
                {"name": "Training curves by stage kind", "panels": curves},
                {"name": "Final metrics", "panels": finals},
                {"name": "Runs compared", "panels": [{"type": "compare"}]}]
    if leaderboards:
        sections.append({"name": "Leaderboard (bdbench score)",
                         "panels": [{"type": "table", "table": "leaderboard"},
                                    {"type": "media", "keys": ["figures/leaderboard"]}]})
    cells = sorted({(str(r.get("attack")), r.get("seed")) for r in rows}, key=lambda c: (c[0], str(c[1])))
    blocks = [{"type": "p", "text": f"Grid {grid}: does a defense remove the backdoor or only put it to sleep? "
                                    "BEC, the trigger's ASR and its re-activation against the gUAA control, "
                                    "mean over seeds with 95 % intervals in the tables."},
              {"type": "h2", "text": "Overview"}, {"type": "grid", "stages": ["summary"], "panels": overview}]
    keys = set().union(*rows) if rows else set()
    for title, (stages, curve_keys, final_keys) in STAGE_GROUPS.items():
        if "retune" in stages and not any(k.startswith("retune_asr:") for k in keys):
            continue  # a grid without weight-space re-activation logs no such runs
        blocks += [{"type": "h2", "text": title},
                   {"type": "grid", "stages": stages,
                    "panels": [{"type": "line", "x": "epoch", "y": [m], "title": f"{m} per epoch"} for m in curve_keys]
                    + [{"type": "bar", "metrics": [m], "groupby": "model", "title": f"{m} by model"}
                       for m in final_keys]}]
    for attack, seed in cells[:1] + [c for c in cells[1:] if c[0] != cells[0][0]]:
        blocks += [{"type": "h2", "text": f"The defenses of {attack}, seed {seed}, compared"},
                   {"type": "grid", "stages": ["defense"], "where": {"attack": attack, "seed": seed},
                    "panels": [{"type": "compare"}] + finals}]
    if leaderboards:
        blocks += [{"type": "h2", "text": "Leaderboard"},
                   {"type": "grid", "stages": ["leaderboard"], "panels": sections[-1]["panels"]}]
    return {"grid": grid, "entity": entity, "project": project, "config_keys": list(CONFIG_KEYS),
            "workspace": {"name": f"bdbench {grid}", "filters": {"grid": grid}, "sections": sections},
            "report": {"title": f"bdbench {grid}: is the backdoor removed or asleep?", "blocks": blocks}}


# ---- spec -> wandb_workspaces objects -----------------------------------------------------
def _panel(p: dict):
    import wandb_workspaces.reports.v2 as wr

    kind = p["type"]
    if kind == "chart":
        return wr.CustomChart(query={"summaryTable": {"tableKey": p["table"]}}, chart_name=p["preset"],
                              chart_fields=p["fields"], chart_strings=p["strings"])
    if kind == "table":
        return wr.WeavePanelSummaryTable(table_name=p["table"])
    if kind == "media":
        return wr.MediaBrowser(media_keys=list(p["keys"]), num_columns=2)
    if kind == "line":
        group = {"groupby": wr.Config(p["groupby"]), "groupby_aggfunc": "mean", "groupby_rangefunc": "minmax"} \
            if p.get("groupby") else {}
        return wr.LinePlot(title=p.get("title"), x=p["x"], y=list(p["y"]), **group)
    if kind == "bar":
        return wr.BarPlot(title=p.get("title"), metrics=list(p["metrics"]), groupby=wr.Config(p["groupby"]),
                          groupby_aggfunc="mean")
    if kind == "compare":
        return wr.RunComparer(diff_only="split")
    raise ValueError(f"dashboard spec: unknown panel type {kind!r} (chart, table, media, line, bar, compare)")


def _filters(grid: str, stages: list[str] | None = None, where: dict | None = None):
    from wandb_workspaces import expr

    out = [expr.Config("grid") == grid]
    if stages:
        out.append(expr.Config("stage").isin(list(stages)))
    out += [expr.Config(k) == v for k, v in (where or {}).items()]
    return out


def to_workspace(spec: dict):
    import wandb_workspaces.workspaces as ws

    w = spec["workspace"]
    return ws.Workspace(entity=spec["entity"] or "", project=spec["project"], name=w["name"],
                        sections=[ws.Section(name=s["name"], panels=[_panel(p) for p in s["panels"]], is_open=True)
                                  for s in w["sections"]],
                        runset_settings=ws.RunsetSettings(filters=_filters(spec["grid"])))


def to_report(spec: dict):
    import wandb_workspaces.reports.v2 as wr

    blocks = []
    for b in spec["report"]["blocks"]:
        if b["type"] == "h2":
            blocks.append(wr.H2(b["text"]))
        elif b["type"] == "p":
            blocks.append(wr.P(b["text"]))
        else:
            runset = wr.Runset(entity=spec["entity"] or "", project=spec["project"], name=", ".join(b["stages"]),
                               filters=_filters(spec["grid"], b["stages"], b.get("where")))
            blocks.append(wr.PanelGrid(runsets=[runset], panels=[_panel(p) for p in b["panels"]]))
    return wr.Report(project=spec["project"], entity=spec["entity"] or "", title=spec["report"]["title"],
                     blocks=blocks)


def write_spec(spec: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1, default=str) + "\n")
    return path


# ---- the command -------------------------------------------------------------------------
def grid_spec(grid, entity: str | None = None) -> dict:
    """The spec of a grid that has run: its rows from `<output>/results.json`,
    the figures and `bdbench score` leaderboards found beside them."""
    from benchmark.errors import ConfigError
    from benchmark.reporting.report import load_rows, summarize

    output = Path(grid.output)
    if not (output / "results.json").is_file():
        raise ConfigError(f"no results in {output}: run the grid first (make sweep GRID={grid.path}), then "
                          "make wandb-sync and make wandb-dashboard")
    rows = load_rows(output)
    figures = [f for f in FIGURES if (output / f"{f}.png").is_file()]
    leaderboards = sorted(p.parent.name for p in output.glob("score/*/leaderboard.csv"))
    return dashboard_spec(grid=grid.name, entity=entity, project=grid.wandb_project, rows=rows,
                          summary=summarize(rows), figures=figures, leaderboards=leaderboards)


def save_dashboard(grid, spec_file: Path | None = None, entity: str | None = None, echo=print) -> int:
    """Write the grid's dashboard spec, then save its workspace and report to
    W&B and print their URLs; without a login, say so in one line (exit 1)."""
    import os

    from benchmark.reporting.wandb_logging import _has_api_key

    spec = json.loads(Path(spec_file).read_text()) if spec_file else grid_spec(grid, entity)
    spec["entity"] = entity or spec.get("entity") or os.environ.get("WANDB_ENTITY") or None
    path = write_spec(spec, Path(grid.output) / "wandb" / "dashboard.json")
    if os.environ.get("WANDB_MODE", "").strip().lower() in ("offline", "dryrun", "disabled") or not _has_api_key():
        echo(f"W&B dashboard not saved: no W&B login here (run `wandb login`, or set WANDB_API_KEY, and "
             f"WANDB_BASE_URL for your own server; WANDB_MODE offline/disabled also stops it); its spec is in "
             f"{path}: apply it later with `python -m sweeps wandb-dashboard {grid.path} --spec {path}`")
        return 1
    try:
        import wandb

        spec["entity"] = spec["entity"] or wandb.Api().default_entity
        write_spec(spec, path)
        workspace, report = to_workspace(spec), to_report(spec)
        workspace.save()
        report.save()
    except Exception as exc:  # the server's answer, whatever it is, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        echo(f"W&B dashboard not saved: the W&B server refused it ({first}); its spec is in {path}")
        return 1
    echo(f"W&B workspace: {workspace.url}")
    echo(f"W&B report: {report.url}")
    return 0
