"""`bdbench` runs grids with the commands of `python -m sweeps` (one
definition of both, sweeps/commands.py), and the modules involved import
one another in one direction only."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main as cli_main
from sweeps.__main__ import main as sweeps_main
from sweeps.commands import GRID_COMMANDS
from tests.test_sweeps import _grid_file

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("cell", "score", "run", "report", "wandb-sync", "wandb-dashboard", "results-page"):
        # each command on its own line of the list, with its help beside it
        assert any(line.split()[:1] == [command] and len(line.split()) > 1 for line in out.splitlines()), out
    assert set(GRID_COMMANDS) == {"run", "report", "wandb-sync", "wandb-dashboard", "results-page"}


def test_python_m_benchmark_is_the_same_program():
    # benchmark/__main__.py; the `bdbench` script calls the same benchmark.cli:main
    result = subprocess.run([sys.executable, "-m", "benchmark", "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "results-page" in result.stdout and "wandb-dashboard" in result.stdout


def test_run_dry_run_lists_the_same_jobs_as_python_m_sweeps(tmp_path, capsys):
    grid = _grid_file(tmp_path)
    other_store = tmp_path / "other-store"  # an override, passed through the same way by both programs
    args = ["run", str(grid), "--dry-run", "--store", str(other_store)]
    assert sweeps_main(args) == 0
    from_sweeps = capsys.readouterr().err
    assert cli_main(args) == 0
    from_bdbench = capsys.readouterr().err
    assert from_bdbench == from_sweeps
    assert "grid tiny:" in from_bdbench and "pending" in from_bdbench
    assert "0 of" in from_bdbench and other_store.name in from_bdbench.replace("\n", "")
    assert not (tmp_path / "store").exists()  # the grid's own store left alone: the override applied


@pytest.mark.parametrize("command", ["run", "report", "wandb-sync"])
def test_a_missing_grid_is_one_line_and_exit_2(command, tmp_path, capsys):
    missing = tmp_path / "no-such-grid.yaml"
    assert sweeps_main([command, str(missing)]) == 2
    from_sweeps = capsys.readouterr().err
    assert cli_main([command, str(missing)]) == 2
    from_bdbench = capsys.readouterr().err
    assert from_bdbench == from_sweeps
    assert from_bdbench.count("\n") == 1 and from_bdbench.startswith("error: ") and "does not exist" in from_bdbench


# ---- imports ------------------------------------------------------------------------------------------------


def _imported(path: Path, top_level_only: bool = False) -> set[str]:
    """Names of the modules `path` imports (`from a import b` as a and a.b),
    inside functions too unless `top_level_only`."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def _project(names: set[str], *prefixes: str) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


def test_grid_reads_slurm_settings_without_the_executor():
    # grid.py -> slurm.py -> executor.py -> graph.py -> grid.py was a circle;
    # the settings' checks now sit in a module that imports nothing from sweeps.
    assert not _project(_imported(ROOT / "sweeps" / "slurm_settings.py"), "sweeps")
    assert not _project(_imported(ROOT / "sweeps" / "grid.py"), "sweeps.slurm", "sweeps.executor")


def test_the_sweeps_never_import_the_command_line():
    # bdbench imports the sweeps (sweeps/commands.py), so they must not import it back
    for path in (ROOT / "sweeps").glob("*.py"):
        assert not _project(_imported(path), "benchmark.cli"), path.name


def test_cli_package_imports_stay_light():
    # importing benchmark.cli.score (or its old name benchmark.score) runs
    # benchmark/cli/__init__.py first: at its top level it imports neither the
    # sweeps nor its own commands, which import it back
    top = _imported(ROOT / "benchmark" / "cli" / "__init__.py", top_level_only=True)
    assert not _project(top, "sweeps", "benchmark.cli", "lightning_modules", "datamodules"), top
    for name in ("cell", "score"):
        assert "benchmark.cli" not in _imported(ROOT / "benchmark" / "cli" / f"{name}.py"), name
