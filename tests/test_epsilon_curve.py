"""ε curves for input-space re-activation: every method and its gUAA
control at a ladder of budgets, the cell's own included, and the smallest
budget at which re-activation beats its control by the cell's margin."""
from __future__ import annotations

import pytest

from benchmark.cell import Cell
from benchmark.errors import ConfigError, UnknownNameError
from benchmark.reporting.report import write_report
from benchmark.storage.store import ArtifactStore
from tests.conftest import fast_spec


def _cell(tmp_path, **overrides) -> Cell:
    spec = fast_spec(**{"defenses": ("ft", "nad"), **overrides})
    return Cell(spec, ArtifactStore(tmp_path / "store"), data_dir=tmp_path / "data", accelerator="cpu",
                progress=False)


def test_the_curve_adds_jobs_at_each_budget_and_keeps_the_cells_own(tmp_path):
    plain = _cell(tmp_path)
    curved = _cell(tmp_path, epsilon_curve=(0.02, 0.1), epsilon_curve_defenses=("ft",))
    # the cell's own budget: the same jobs, the same keys (a curve reuses the store)
    assert {j.id for j in plain.jobs} <= {j.id for j in curved.jobs}
    extra = {f"{j.kind}/{j.label}" for j in curved.jobs} - {f"{j.kind}/{j.label}" for j in plain.jobs}
    assert extra == {f"{kind}/wba@eps={e:g} vs {m}" for e in (0.02, 0.1)
                     for kind, m in [("reactivation", "clean"), ("reactivation", "backdoored"),
                                     ("reactivation", "ft"), ("guaa", "ft")]}
    for e in (0.02, 0.1):
        assert curved.job("reactivation", f"wba@eps={e:g} vs ft").config["params"]["epsilon"] == e


def test_rows_carry_the_curve_and_the_smallest_budget_beating_the_control(tmp_path):
    cell = _cell(tmp_path, epsilon_curve=(0.02, 0.1), epsilon_curve_defenses=("ft",), epsilon_margin=0.05)
    rows = {r["model"]: r for r in cell.run()}
    ft = rows["ft"]
    budgets = (0.02, 0.05, 0.1)
    assert ft["react_asr:wba@eps=0.05"] == ft["react_asr:wba"]  # the cell's own point, in the curve
    gaps = {e: ft[f"react_asr:wba@eps={e:g}"] - ft[f"guaa_asr:wba@eps={e:g}"] for e in budgets}
    expected = next((e for e in budgets if gaps[e] >= 0.05), None)
    assert ft["eps_star:wba"] == expected
    assert "eps_star:wba" not in rows["nad"]                 # not on the curve
    paths = write_report(list(rows.values()), tmp_path / "report")
    assert paths["asr_vs_epsilon"].exists()
    assert "wba ε*" in paths["summary"].read_text()


@pytest.mark.parametrize("overrides,message", [
    ({"epsilon_curve": (0.05,)}, "repeats a budget"),
    ({"epsilon_curve": (0.02, 0.02)}, "repeats a budget"),
    ({"epsilon_curve": (1.5,)}, "epsilon=1.5 is not allowed for norm linf"),
    ({"epsilon_curve": (0.02,), "epsilon_curve_defenses": ("no-such-defense",)}, "no-such-defense"),
])
def test_bad_curves_are_one_line_errors(overrides, message):
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        fast_spec(**overrides).validate()


def test_the_curve_defenses_filter_the_cells_own(tmp_path):
    # a derived cell (bdbench score's candidate, a science test's) keeps the
    # grid's list: a defense it does not run is simply not on its curve
    cell = _cell(tmp_path, defenses=("nad",), epsilon_curve=(0.02,), epsilon_curve_defenses=("ft",))
    assert not [j for j in cell.jobs if "eps=" in j.label and not j.label.endswith(("clean", "backdoored"))]
