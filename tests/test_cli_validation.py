"""Bad values on the command line and in grids: one line naming the method,
the parameter, the value and what is allowed; no traceback; the store is
not touched."""
import pytest
import yaml

from benchmark.cli import main as cli_main
from sweeps.__main__ import main as sweeps_main
from tests.test_sweeps import _grid_file

BAD = [
    (["--defense-params", '{"ft": {"epochs": -3}}'], "defense 'ft': epochs=-3 is not allowed; must be an int >= 0"),
    (["--defense-params", '{"ft": {"epochs": "many"}}'], "defense 'ft': epochs='many' is not allowed"),
    (["--defense-params", '{"ft": {"lr": -1}}'], "defense 'ft': lr=-1 is not allowed; must be a float > 0"),
    (["--defense-params", '{"ft": {"nonsense": 1}}'], "defense 'ft': unknown parameter 'nonsense'; allowed: epochs"),
    (["--defense-params", '{"nc": {"cost_multiplier": 1.0}}', "--defenses", "nc"],
     "defense 'nc': cost_multiplier=1.0 is not allowed; must be a float > 1"),
    (["--epsilon", "2.0"], "epsilon=2.0 is not allowed for norm linf; must be in (0, 1)"),
    (["--epochs", "0"], "cell: epochs='0' is not allowed; must be an int > 0"),
    (["--poison-selection", "some"], "cell: poison_selection='some' is not allowed; must be one of: all, non_target"),
    (["--reactivation-params", '{"qbra": {"max_queries": 0}}', "--reactivations", "qbra"],
     "re-activation 'qbra': max_queries=0 is not allowed; must be an int > 0"),
    (["--trigger-params", '{"size": 0}'], "trigger 'badnets': size=0 is not allowed; must be an int > 0"),
    (["--defenses", "ft", "missing_file.py:Nope"], "file missing_file.py does not exist"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_cli_value_is_one_line_and_leaves_the_store_alone(args, message, tmp_path, capsys):
    store = tmp_path / "store"
    code = cli_main(["cell", "--dataset", "synthetic", "--store", str(store), "--data-dir", str(tmp_path / "data"),
                     "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not store.exists()


@pytest.mark.parametrize("section,value,message", [
    ("defense_params", {"ft": {"epochs": -3}}, "defense 'ft': epochs=-3 is not allowed"),
    ("reactivation_params", {"wba": {"lr": "fast"}}, "re-activation 'wba': lr='fast' is not allowed"),
    ("cell", {"epochs": 2, "batch_size": 64, "lr": 0.05, "bec_samples": 64, "epsilon": 1.5},
     "epsilon=1.5 is not allowed for norm linf"),
])
def test_bad_grid_value_is_one_line_and_leaves_the_store_alone(section, value, message, tmp_path, capsys):
    grid = _grid_file(tmp_path, **{section: value})
    assert sweeps_main(["run", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "store").exists()
    raw = yaml.safe_load(grid.read_text())
    assert raw[section] == value  # the grid file itself is left as written
