"""Defenses from outside the suite: a file, a module, an installed entry point.

The end-to-end test writes a defense into a folder outside the repository and
runs it, from that folder, through `bdbench cell`, a grid and `bdbench score`
with no file of the suite changed."""
import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from benchmark.errors import ConfigError, UnknownNameError
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS

TINY = Path(__file__).resolve().parents[1] / "sweeps" / "tiny.yaml"

# A user's defense: re-initialise the classifier head, then fine-tune (the
# idea behind FST's first step), with typed parameters.
USER_DEFENSE = textwrap.dedent('''
    """Head reset + fine-tuning, written outside the suite."""
    from torch import nn

    from benchmark.extension.schema import NonNegativeInt, PositiveFloat
    from lightning_modules.defenses import DefenseModule


    class HeadReset(DefenseModule):
        def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                     epochs: NonNegativeInt = 1, batch_size: NonNegativeInt = 64, lr: PositiveFloat = 0.01):
            super().__init__(model, num_classes, target_label, augment, epochs, batch_size, lr)

        def prepare(self, clean_set, fit):
            head = self.model.get_submodule(self.model.head_layer)
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
            self.report["reset"] = self.model.head_layer
''')


def _env(tmp_path):
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "wbcfg"),
               WANDB_CACHE_DIR=str(tmp_path / "wbcache"), HOME=str(tmp_path))
    env.pop("WANDB_API_KEY", None)
    return env


def _run(args, cwd, env):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_file_plugin_through_cell_grid_and_score(tmp_path):
    project = tmp_path / "my_project"
    project.mkdir()
    (project / "head_reset.py").write_text(USER_DEFENSE)
    ref = "head_reset.py:HeadReset"
    env = _env(tmp_path)

    cell = _run(["-m", "benchmark", "cell", "--dataset", "synthetic", "--defenses", "ft", ref, "--epochs", "2",
                 "--batch-size", "64", "--lr", "0.05", "--bec-samples", "64", "--bec-rank-samples", "64",
                 "--no-controls", "--trigger-params", '{"size": 4}', "--defense-params", '{"ft": {"epochs": 1}}',
                 "--reactivation-params", '{"wba": {"epochs": 1, "num_samples": 32, "batch_size": 16}}',
                 "--store", "store", "--data-dir", "data", "--out", "cell.json", "--no-progress"], project, env)
    assert cell.returncode == 0, cell.stderr[-3000:]
    rows = {row["model"]: row for row in json.loads((project / "cell.json").read_text())["rows"]}
    assert set(rows) == {"clean", "backdoored", "ft", ref}
    assert rows[ref]["defense:reset"].startswith("backbone.")  # what the defense reported
    assert rows[ref]["react_asr:wba"] is not None and rows[ref]["guaa_asr:wba"] is not None

    raw = yaml.safe_load(TINY.read_text())
    raw.update(defenses=["none", "ft", ref], store="store", output="runs/grid", data_dir="data",
               cell={**raw["cell"], "controls": False, "bec_rank_samples": 64})
    (project / "grid.yaml").write_text(yaml.safe_dump(raw))
    grid = _run(["-m", "sweeps", "run", "grid.yaml"], project, env)
    assert grid.returncode == 0, grid.stderr[-3000:]
    grid_rows = json.loads((project / "runs" / "grid" / "results.json").read_text())
    assert ref in {r["model"] for r in grid_rows}

    # Scored against a grid that does not hold it: its own cells, the grid's
    # jobs (and its own, run by the cell above with the same keys) reused.
    raw.update(defenses=["none", "ft"], output="runs/base")
    (project / "base.yaml").write_text(yaml.safe_dump(raw))
    score = _run(["-m", "benchmark", "score", ref, "--grid", "base.yaml", "--output", "score"], project, env)
    assert score.returncode == 0, score.stderr[-3000:]
    assert "0 not in the store" in score.stderr
    with open(project / "score" / "leaderboard.csv", newline="") as handle:
        board = {row["defense"]: row for row in csv.DictReader(handle)}
    assert set(board) == {"ft", ref} and board[ref]["candidate"] == "True" and board["ft"]["candidate"] == "False"
    assert board[ref]["coverage"] == "1/1" and board[ref]["worst_case"] == "badnets/wba"
    assert (project / "score" / "leaderboard.md").read_text().count(ref) >= 1
    assert (project / "score" / "leaderboard.png").stat().st_size > 1000
    # the store records the plugin with its code fingerprint
    metas = [json.loads(p.read_text()) for p in (project / "store" / "defense").glob("*/meta.json")]
    mine = [m for m in metas if m["config"]["defense"] == ref]
    assert len(mine) == 1 and len(mine[0]["config"]["code"]) == 16


def _package(root: Path, name: str, body: str) -> None:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "defense.py").write_text(body)


def test_module_reference_and_its_errors(tmp_path, monkeypatch):
    _package(tmp_path, "userpkg_ok", USER_DEFENSE + "\nNOT_A_DEFENSE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = DEFENSES.get("userpkg_ok.defense:HeadReset")
    assert cls.__name__ == "HeadReset" and DEFENSES.origin("userpkg_ok.defense:HeadReset") == "userpkg_ok.defense"
    with pytest.raises(ConfigError, match="is 3, not a DefenseModule subclass"):
        DEFENSES.get("userpkg_ok.defense:NOT_A_DEFENSE")
    with pytest.raises(ConfigError, match="has no 'Missing'; it defines: .*HeadReset"):
        DEFENSES.get("userpkg_ok.defense:Missing")
    with pytest.raises(ConfigError, match="no module named 'nowhere_pkg'"):
        DEFENSES.get("nowhere_pkg.mod:X")
    with pytest.raises(ConfigError, match="file missing.py does not exist"):
        DEFENSES.get("missing.py:X")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('half-written\\nsecond line')\n")
    with pytest.raises(ConfigError) as info:
        DEFENSES.get(f"{broken}:X")
    assert "RuntimeError: half-written" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UnknownNameError, match="or a plugin: package.module:Class"):
        DEFENSES.get("no-such-defense")
    with pytest.raises(ConfigError, match="not a ReactivationModule subclass"):
        REACTIVATIONS.get("userpkg_ok.defense:HeadReset")


def test_entry_point_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _package(site, "userpkg_ep", USER_DEFENSE)
    dist = site / "userpkg_ep-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: userpkg-ep\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[bdbench.defenses]\nhead-reset = userpkg_ep.defense:HeadReset\n")
    monkeypatch.syspath_prepend(str(site))
    assert "head-reset" in DEFENSES.names()
    assert DEFENSES.get("head-reset").__name__ == "HeadReset"
    assert "head-reset" not in REACTIVATIONS.names()


def test_plugin_in_a_cell_in_process(tmp_path, make_cell):
    path = tmp_path / "head_reset.py"
    path.write_text(USER_DEFENSE)
    ref = f"{path}:HeadReset"
    cell = make_cell(defenses=("ft", ref), defense_params={"ft": {"epochs": 1}, ref: {"epochs": 1}})
    job = cell.job("defense", ref)
    assert job.config["defense"] == ref and job.config["params"]["epochs"] == 1
    with pytest.raises(ConfigError, match=r"defense '.*head_reset.py:HeadReset': epochs=-1 is not allowed"):
        make_cell(defenses=(ref,), defense_params={ref: {"epochs": -1}})
