"""Statistics over seeds on tiny cases with known answers.

The expected values come from closed forms, not from the library under test:
Student's t with 2 degrees of freedom has CDF F(t) = 1/2 + t / (2 sqrt(t^2 + 2))
and quantile t_q = (2q - 1) / sqrt(2 q (1 - q)), so with three seeds both the
interval and the one-sided p-value can be written down exactly."""
from __future__ import annotations

import csv
import math

import pytest

from benchmark.measures.intervals import mean_interval, paired_greater
from benchmark.reporting.report import summarize, write_report


def t_quantile_df2(q: float) -> float:
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def t_sf_df2(t: float) -> float:
    return 0.5 - t / (2 * math.sqrt(t * t + 2))


def test_t_interval_of_three_values():
    # mean 2, s = 1, sem = 1/sqrt(3); t(0.975, 2) = 4.3027
    interval = mean_interval([1.0, 2.0, 3.0])
    half = t_quantile_df2(0.975) / math.sqrt(3)
    assert t_quantile_df2(0.975) == pytest.approx(4.30265, abs=1e-5)
    assert interval.mean == pytest.approx(2.0) and interval.n == 3
    assert interval.low == pytest.approx(2.0 - half) and interval.high == pytest.approx(2.0 + half)
    assert interval.half_width == pytest.approx(half)


def test_one_value_has_no_interval_and_missing_values_are_skipped():
    interval = mean_interval([0.4, None, float("nan"), "text"])
    assert interval.mean == 0.4 and interval.n == 1 and interval.low is None and interval.high is None
    assert mean_interval([None, float("inf")]) is None
    same = mean_interval([0.5, 0.5, 0.5])
    assert same.low == same.high == 0.5  # no spread: a zero-width interval, not NaN


def test_paired_test_known_p_value():
    # differences 0.8, 0.6, 0.7: mean 0.7, s 0.1, t = 0.7 / (0.1 / sqrt 3) = 12.12
    reactivated, control = [0.9, 0.8, 0.85], [0.1, 0.2, 0.15]
    test = paired_greater(reactivated, control)
    t = 0.7 / (0.1 / math.sqrt(3))
    assert test.p_value == pytest.approx(t_sf_df2(t), rel=1e-6)
    assert test.p_value < 0.05 and test.significant is True
    assert test.difference.mean == pytest.approx(0.7)
    half = t_quantile_df2(0.975) * 0.1 / math.sqrt(3)
    assert test.difference.low == pytest.approx(0.7 - half)


def test_paired_test_direction_and_small_samples():
    # re-activation below its control: the one-sided test never calls it significant
    down = paired_greater([0.1, 0.2, 0.15], [0.9, 0.8, 0.85])
    assert down.p_value > 0.95 and down.significant is False
    # a noisy gap: differences 0.3, -0.1, 0.1 (t = 0.1 / (0.2/sqrt 3) = 0.866) is not significant
    noisy = paired_greater([0.5, 0.3, 0.4], [0.2, 0.4, 0.3])
    assert noisy.p_value == pytest.approx(t_sf_df2(0.1 / (0.2 / math.sqrt(3))), rel=1e-6)
    assert noisy.significant is False
    # one seed: a difference, no test
    single = paired_greater([0.9], [0.1])
    assert single.p_value is None and single.significant is None and single.difference.mean == pytest.approx(0.8)
    # pairs with a missing side are dropped, not shifted
    assert paired_greater([0.9, None, 0.8], [0.1, 0.5, None]).difference.n == 1
    # identical positive differences: t is infinite, p = 0
    assert paired_greater([0.6, 0.7], [0.1, 0.2]).p_value == 0.0


def _rows(react, guaa):
    return [{"dataset": "d", "arch": "a", "attack": "A", "model": "ft", "seed": s, "clean_acc": 0.9, "asr": 0.1,
             "react_asr:wba": r, "guaa_asr:wba": g} for s, (r, g) in enumerate(zip(react, guaa))]


def test_summary_and_csv_carry_intervals_and_the_paired_test(tmp_path):
    rows = _rows([0.9, 0.8, 0.85], [0.1, 0.2, 0.15])
    agg = summarize(rows)[0]
    assert agg["n_seeds"] == 3
    assert agg["react_asr:wba_mean"] == pytest.approx(0.85)
    half = t_quantile_df2(0.975) * 0.05 / math.sqrt(3)  # s of (0.9, 0.8, 0.85) = 0.05
    assert agg["react_asr:wba_high"] - agg["react_asr:wba_mean"] == pytest.approx(half)
    assert agg["gap:wba_mean"] == pytest.approx(0.7) and agg["gap:wba_significant"] is True
    assert agg["clean_acc_low"] == agg["clean_acc_high"] == pytest.approx(0.9)

    write_report(rows, tmp_path)
    with (tmp_path / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3  # one row per seed
    for row in table:
        assert float(row["react_asr:wba:ci_high"]) == pytest.approx(0.85 + half)
        assert float(row["gap:wba:p"]) == pytest.approx(t_sf_df2(12.1243556), rel=1e-5)
        assert row["n_seeds"] == "3" and row["gap:wba:significant"] == "True"
    summary = (tmp_path / "summary.md").read_text()
    assert f"85.0 ± {100 * half:.1f}" in summary
    assert "70.0 ± " in summary and "*" in summary and "paired t-test" in summary


def test_one_seed_report_says_so(tmp_path):
    write_report(_rows([0.9], [0.1]), tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "One seed per row" in summary and "no test: 1 seed" in summary and "±" not in summary.split("##")[1]
    with (tmp_path / "results.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert row["react_asr:wba:mean"] == "0.9" and row["react_asr:wba:ci_low"] == "" and row["gap:wba:p"] == ""
