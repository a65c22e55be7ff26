"""Weights & Biases view of the benchmark (the store's meta.json stays the
source of truth). Every stage run is one W&B run: the cell is its `group`, the
stage kind its `job_type`, so a dashboard can pivot on dataset/attack/defense
from the config. Runs are offline unless the user configured W&B, so nothing
here ever needs the network; `make wandb-sync` uploads them later."""
from __future__ import annotations

import json
import math
import netrc
import numbers
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_HOST = "https://api.wandb.ai"
TAG_KEYS = ("dataset", "arch", "attack", "defense")


def _has_api_key() -> bool:
    """An API key the user set up, found without asking the server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).netloc
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        creds = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):  # no file, or one we can't read: not configured
        return False
    return bool(creds and creds[2])


def wandb_mode() -> str:
    """"disabled" on request, "online" only when the user configured W&B, else "offline"."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "disabled":
        return "disabled"
    if mode == "online" or (mode not in ("offline", "dryrun") and _has_api_key()):
        return "online"
    return "offline"


def _settings():
    """Quiet settings: a benchmark subprocess should print its own progress,
    not W&B banners, and should not collect code, git state or system metrics.
    Private (x_) settings are only passed when this wandb version knows them,
    so an upgrade that drops one doesn't break every stage."""
    import wandb

    wanted = dict(silent=True, console="off", save_code=False, disable_git=True, disable_code=True,
                  x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                  x_save_requirements=False, x_disable_viewer=True)
    known = getattr(wandb.Settings, "model_fields", None)
    return wandb.Settings(**{k: v for k, v in wanted.items() if known is None or k in known})


def _tags(config: dict) -> list[str]:
    return [f"{k}:{config[k]}" for k in TAG_KEYS if config.get(k) not in (None, "")]


def stage_logger(*, project: str, save_dir: Path, cell: str, kind: str, label: str, run_config: dict):
    """A Lightning WandbLogger for one stage run, or None when W&B is disabled.
    The run starts when the Trainer first touches it (Lightning's behaviour),
    so a stage that fails before fitting leaves no empty run behind."""
    mode = wandb_mode()
    if mode == "disabled":
        return None
    from lightning.pytorch.loggers import WandbLogger

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    # mode is passed to wandb.init rather than WandbLogger(offline=True), which
    # would set WANDB_MODE for the whole process as a side effect.
    logger = WandbLogger(project=project, save_dir=str(save_dir), name=f"{kind}:{label}", group=cell,
                         job_type=kind, config=dict(run_config), tags=_tags(run_config), mode=mode,
                         settings=_settings(), reinit="finish_previous")
    # Lightning always passes anonymous=None, which wandb 0.31 answers with a
    # deprecation warning in every stage's output.
    getattr(logger, "_wandb_init", {}).pop("anonymous", None)
    return logger


def _flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested dicts become "a/b" keys; only numbers survive, since a string or
    list in the summary would break W&B's numeric charts and comparisons."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        elif getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # 0-d tensor
            value = value.item()
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                out[name] = float(value)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def finish_stage(logger, metrics: dict) -> None:
    """Record the stage's final metrics in the run summary and close the run,
    so the wandb service flushes and the stage subprocess can exit."""
    if logger is None:
        return
    run = logger.experiment
    run.summary.update(_flatten(metrics))
    run.finish()


def _cell(value: Any):
    """A W&B table cell: scalars as plain Python values (numpy ones included),
    NaN/inf as None (JSON has neither), everything else as JSON text."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    return json.dumps(value, default=str)


def _table(rows: list[dict]):
    import wandb

    cols = list(dict.fromkeys(k for row in rows for k in row))
    return wandb.Table(columns=cols, data=[[_cell(row.get(c)) for c in cols] for row in rows])


def _log_run(*, project: str, save_dir: Path, group: str, job_type: str, name: str, tables: dict[str, list[dict]],
             figures: dict[str, Path], charts=None, config: dict | None = None) -> str | None:
    """One run holding `tables` (name -> rows), the PNG `figures` that exist
    and what `charts()` returns (key -> W&B chart or table, built once W&B is
    imported); returns its local run directory, or None when W&B is disabled."""
    mode = wandb_mode()
    if mode == "disabled":
        return None
    import wandb

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, dir=str(save_dir), group=group, job_type=job_type, name=name, mode=mode,
                     config=dict(config or {}), settings=_settings(), reinit="finish_previous")
    try:
        payload = {key: _table(rows) for key, rows in tables.items()}
        payload.update(charts() if charts is not None else {})
        for key, path in figures.items():
            if path is not None and Path(path).suffix.lower() == ".png" and Path(path).exists():
                payload[f"figures/{key}"] = wandb.Image(str(path))
        run.log(payload)
        run_dir = str(Path(run.dir).parent)  # run.dir is <run>/files
    finally:
        run.finish()
    return run_dir


def log_summary(*, project: str, save_dir: Path, grid_name: str, rows: list[dict],
                summary_rows: list[dict], figures: dict[str, Path]) -> str | None:
    """One "summary" run per grid holding the results tables, the charts
    built on them (benchmark/reporting/wandb_charts.py) and the report's figures;
    returns its local run directory, or None when disabled."""
    from benchmark.reporting.wandb_charts import chart_payload

    return _log_run(project=project, save_dir=save_dir, group=grid_name, job_type="summary",
                    name=f"summary:{grid_name}", tables={"results": rows, "summary": summary_rows}, figures=figures,
                    charts=lambda: chart_payload(rows, summary_rows, _table),
                    config={"grid": grid_name, "stage": "summary"})


def run_folders(save_dir: Path) -> list[Path]:
    """The folders holding a grid's W&B runs: `<output>/wandb` (stages and the
    summary) and `<output>/score/<defense>/wandb` for each `bdbench score`
    (its workers' runs and the leaderboard run)."""
    save_dir = Path(save_dir)
    return [save_dir / "wandb"] + sorted(p for p in save_dir.glob("score/*/wandb") if p.is_dir())


def sync_command(save_dir: Path) -> list[str]:
    """`wandb sync` over the run folders of a grid (run_folders). Given a
    folder, wandb syncs every run in it without asking; runs made online
    (already uploaded) and runs synced before are skipped. `python -m wandb`
    rather than a bare `wandb` so the venv's copy is used even when its bin/
    is not on PATH."""
    return [sys.executable, "-m", "wandb", "sync", "--no-include-online", "--no-include-synced",
            *(str(p) for p in run_folders(save_dir))]


def log_leaderboard(*, project: str, save_dir: Path, name: str, board: list[dict],
                    figure_path: Path | None, grid: str | None = None) -> str | None:
    """One "leaderboard" run holding the ranked defenses as a table and the
    cost-vs-headline figure; returns its local run directory, or None when
    disabled."""
    return _log_run(project=project, save_dir=save_dir, group=name, job_type="leaderboard",
                    name=f"leaderboard:{name}", tables={"leaderboard": board}, figures={"leaderboard": figure_path},
                    config={"grid": grid or name, "stage": "leaderboard"})
