"""The W&B dashboard of a grid, checked offline against what the runs wrote.

The tiny grid runs once with W&B offline; its runs' transaction logs are
read back (test_wandb_logging.read_records). The dashboard is built from the
grid's output as `make wandb-dashboard` builds it, and every key a panel
shows, filters or groups on must be in those runs: a key the dashboard
invents, or one the suite stops logging, fails here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.reporting.report import summarize
from benchmark.reporting.wandb_charts import curve_rows, noise_rows
from benchmark.reporting.wandb_dashboard import CONFIG_KEYS, grid_spec, to_report, to_workspace
from sweeps.grid import load_grid
from test_sweeps import _env, _grid_file, _run_sweep
from test_wandb_logging import parsed, read_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    grid_file = _grid_file(tmp, attacks=["badnets", "blended"])
    result = _run_sweep(grid_file, _env(tmp))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = []
    for folder in sorted((tmp / "out" / "wandb").glob("offline-run-*")):
        records = read_records(next(folder.glob("*.wandb")))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        for record in records:  # later config updates: custom charts land in _wandb.visualize
            if record.WhichOneof("record_type") == "config":
                for u in record.config.update:
                    path = list(u.nested_key) or [u.key]
                    node = config
                    for part in path[:-1]:
                        node = node.setdefault(part, {})
                    node[path[-1]] = json.loads(u.value_json)
        history, summary = set(), set()
        for item in parsed(records, "history"):
            history |= set(item)
        for item in parsed(records, "summary"):
            summary |= set(item)
        runs.append({"job_type": run.job_type, "config": config, "history": history, "summary": summary})
    return tmp, grid_file, runs


def _logged(runs, stages=None) -> tuple[set, set]:
    chosen = [r for r in runs if stages is None or r["config"].get("stage") in stages]
    return set().union(*(r["history"] for r in chosen)), set().union(*(r["summary"] for r in chosen))


def test_summary_run_holds_tables_and_charts(grid_run):
    _, _, runs = grid_run
    (summary_run,) = [r for r in runs if r["job_type"] == "summary"]
    assert summary_run["config"]["grid"] == "tiny" and summary_run["config"]["stage"] == "summary"
    history = summary_run["history"]
    for key in ("results", "summary", "charts/reactivation/wba/badnets_table",
                "charts/reactivation/wba/blended_table", "figures/bec_vs_asr"):
        assert f"{key}/_type" in history, key
    charts = summary_run["config"]["_wandb"]["visualize"]
    assert charts["charts/reactivation/wba/blended"]["panel_config"]["panelDefId"] == "wandb/bar/v0"
    assert charts["charts/reactivation/wba/blended"]["panel_config"]["fieldSettings"] == {"label": "label",
                                                                                          "value": "asr_pct"}
    for key in charts:  # every chart's data is in the run
        assert f"{key}_table/_type" in history, key
    # Figure 1 needs BEC, which the tiny grid's synthetic models leave undefined
    # (f_A and f_C too alike, benchmark/measures/bec.py); where it is defined, the chart is there
    rows = json.loads((grid_run[0] / "out" / "results.json").read_text())
    for attack in ("badnets", "blended"):
        has_bec = any(r["attack"] == attack and r.get("bec") is not None for r in rows)
        assert (f"charts/bec_vs_asr/{attack}" in charts) == has_bec


def test_stage_runs_carry_the_config_keys_panels_group_on(grid_run):
    _, _, runs = grid_run
    stages = [r for r in runs if r["job_type"] not in ("summary", "leaderboard")]
    assert stages
    for run in stages:
        assert set(CONFIG_KEYS) <= set(run["config"]), run["job_type"]
        assert run["config"]["grid"] == "tiny" and run["config"]["stage"] == run["job_type"]
    models = {r["config"]["model"] for r in stages}
    assert {"clean", "backdoored", "ft"} <= models


def test_every_panel_shows_keys_the_runs_log(grid_run):
    tmp, grid_file, runs = grid_run
    grid = load_grid(grid_file)
    grid.output = tmp / "out"
    spec = grid_spec(grid, entity="someone")
    configs = set().union(*(set(r["config"]) for r in runs))
    stages_logged = {r["config"].get("stage") for r in runs}

    def check(panel, stages):
        history, summary = _logged(runs, stages)
        summary_history, _ = _logged(runs, ["summary"])
        kind = panel["type"]
        if kind in ("chart", "table"):
            assert f"{panel['table']}/_type" in summary_history, panel
        elif kind == "media":
            assert all(f"{k}/_type" in summary_history for k in panel["keys"]), panel
        elif kind == "line":
            assert panel["x"] in history and all(y in history for y in panel["y"]), panel
        elif kind == "bar":
            assert all(m in summary for m in panel["metrics"]), panel
        if panel.get("groupby"):
            assert panel["groupby"] in configs, panel

    for section in spec["workspace"]["sections"]:
        for panel in section["panels"]:
            check(panel, None)
    grids = [b for b in spec["report"]["blocks"] if b["type"] == "grid"]
    assert {s for b in grids for s in b["stages"]} - {"trigger"} <= stages_logged  # tiny has no trigger stage
    for block in grids:
        assert set(block.get("where", {})) <= configs
        for panel in block["panels"]:
            check(panel, block["stages"])
    # the objects W&B saves are built from the spec without a server
    workspace, report = to_workspace(spec), to_report(spec)
    assert [s.name for s in workspace.sections] == [s["name"] for s in spec["workspace"]["sections"]]
    assert len(report.blocks) == len(spec["report"]["blocks"]) and workspace.entity == "someone"
    assert len(workspace._to_model().model_dump_json()) > 1000  # serialises offline


def test_command_without_login_writes_the_spec_and_says_what_is_missing(grid_run):
    tmp, grid_file, _ = grid_run
    env = _env(tmp)
    env.pop("WANDB_MODE")
    result = subprocess.run([sys.executable, "-m", "sweeps", "wandb-dashboard", str(grid_file)], env=env,
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no W&B login" in lines[0] and "dashboard.json" in lines[0]
    spec = json.loads((tmp / "out" / "wandb" / "dashboard.json").read_text())
    assert spec["grid"] == "tiny" and spec["workspace"]["sections"][0]["name"] == "Grid overview"
    # and it applies from that file the same way
    again = subprocess.run([sys.executable, "-m", "sweeps", "wandb-dashboard", str(grid_file), "--spec",
                            str(tmp / "out" / "wandb" / "dashboard.json")], env=env, capture_output=True, text=True,
                           timeout=300, cwd=ROOT)
    assert again.returncode == 1 and "no W&B login" in again.stderr


def test_curve_and_noise_tables_from_rows():
    rows = [{"dataset": "d", "arch": "a", "attack": "A", "model": "ft", "seed": s, "asr": 0.1,
             "react_asr:qbra@100q": 0.2 + 0.1 * s, "react_asr:qbra@1000q": 0.5,
             "noise_asr:qbra:defended@0.05": 0.3 + 0.2 * s} for s in (0, 1)]
    summary = summarize(rows)
    curve = curve_rows(summary, ("d", "a", "A"), [(100, "react_asr:qbra@100q"), (1000, "react_asr:qbra@1000q")])
    assert [(c["queries"], round(c["asr_pct"], 6)) for c in curve] == [(100, 25.0), (1000, 50.0)]
    (noise,) = noise_rows(rows)
    assert (noise["case"], noise["noise_level"], noise["n_seeds"]) == ("defended", "0.05", 2)
    assert noise["asr_pct"] == pytest.approx(40.0) and noise["asr_pct_low"] < 40.0 < noise["asr_pct_high"]


def test_epsilon_and_retuning_chart_tables_from_rows():
    from benchmark.reporting.wandb_charts import epsilon_rows, retuning_rows

    rows = [{"dataset": "d", "arch": "a", "attack": "A", "model": "ft", "seed": s, "asr": 0.05,
             "react_asr:wba@eps=0.02": 0.2, "guaa_asr:wba@eps=0.02": 0.1, "react_asr:wba@eps=0.05": 0.6 + 0.1 * s,
             "guaa_asr:wba@eps=0.05": 0.2, "retune_asr:ra": 0.8} for s in (0, 1)]
    summary = summarize(rows)
    eps = epsilon_rows(summary, ("d", "a", "A"), "wba", [0.02, 0.05])
    assert [(r["line"], r["epsilon"], round(r["asr_pct"], 6)) for r in eps] == [
        ("ft · wba", 0.02, 20.0), ("ft · wba", 0.05, 65.0), ("ft · gUAA", 0.02, 10.0), ("ft · gUAA", 0.05, 20.0)]
    bars = retuning_rows(summary, ("d", "a", "A"), "ra")
    assert [(b["label"], round(b["asr_pct"], 6)) for b in bars] == [("ft · O-ASR", 5.0), ("ft · P-ASR", 80.0)]
