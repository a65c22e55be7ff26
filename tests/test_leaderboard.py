"""Leaderboard of defenses, checked against numbers worked out by hand from a
small grid: two attacks, two re-activation methods, the references and three
defenses, one of them a plugin (the candidate)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from benchmark.reporting import wandb_logging as wl
from benchmark.reporting.leaderboard import (REFERENCE_NAME, grid_attacks, leaderboard, leaderboard_columns, reference,
                                   write_leaderboard)
from tests.test_wandb_logging import isolate

METHODS = ["wba", "qbra"]
ATTACKS = ["A", "B"]
CANDIDATE = "plug.py:Mine"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (attack, model, seed) -> metrics. A key left out is a missing value.
CELLS = {
    ("A", "clean", 0): dict(clean_acc=0.92, asr=0.01, bec=0.0, **{"react_asr:wba": 0.05, "react_asr:qbra": 0.04}),
    ("B", "clean", 0): dict(clean_acc=0.82, asr=0.02, bec=0.0, **{"react_asr:wba": 0.06, "react_asr:qbra": 0.03}),
    ("A", "backdoored", 0): dict(clean_acc=0.90, asr=0.99, bec=1.0,
                                 **{"react_asr:wba": 0.99, "react_asr:qbra": 0.98}),
    ("B", "backdoored", 0): dict(clean_acc=0.80, asr=0.97, bec=1.0,
                                 **{"react_asr:wba": 1.0, "react_asr:qbra": 0.97}),
    # "none" is f_A again; its numbers are made different so that counting it
    # as a defense or as part of the reference would show.
    ("A", "none", 0): dict(clean_acc=0.10, asr=0.0, bec=1.0, **{"react_asr:wba": 0.0, "guaa_asr:wba": 0.0}),
    ("B", "none", 0): dict(clean_acc=0.10, asr=0.0, bec=1.0, **{"react_asr:wba": 0.0, "guaa_asr:wba": 0.0}),
    # ft: BEC undefined under B, qbra missing under B.
    ("A", "ft", 0): dict(clean_acc=0.85, asr=0.10, bec=0.6,
                         **{"react_asr:wba": 0.70, "guaa_asr:wba": 0.30, "react_asr:qbra": 0.50,
                            "guaa_asr:qbra": 0.20}),
    ("B", "ft", 0): dict(clean_acc=0.78, asr=0.20, bec=None, **{"react_asr:wba": 0.40, "guaa_asr:wba": 0.25}),
    # nad: two seeds under A, which must be averaged before anything else.
    ("A", "nad", 0): dict(clean_acc=0.88, asr=0.04, bec=0.3,
                          **{"react_asr:wba": 0.20, "guaa_asr:wba": 0.10, "react_asr:qbra": 0.25,
                             "guaa_asr:qbra": 0.05}),
    ("A", "nad", 1): dict(clean_acc=0.86, asr=0.06, bec=0.5,
                          **{"react_asr:wba": 0.40, "guaa_asr:wba": 0.20, "react_asr:qbra": 0.25,
                             "guaa_asr:qbra": 0.05}),
    ("B", "nad", 0): dict(clean_acc=0.76, asr=0.05, bec=0.2,
                          **{"react_asr:wba": 0.10, "guaa_asr:wba": 0.05, "react_asr:qbra": 0.35,
                             "guaa_asr:qbra": 0.15}),
    # The candidate ties nad on the headline (0.35) at a lower accuracy cost.
    ("A", CANDIDATE, 0): dict(clean_acc=0.89, asr=0.03, bec=0.1,
                              **{"react_asr:wba": 0.30, "guaa_asr:wba": 0.28, "react_asr:qbra": 0.35,
                                 "guaa_asr:qbra": 0.33}),
    ("B", CANDIDATE, 0): dict(clean_acc=0.79, asr=0.05, bec=0.3,
                              **{"react_asr:wba": 0.20, "guaa_asr:wba": 0.10, "react_asr:qbra": None,
                                 "guaa_asr:qbra": None}),
}


def grid() -> list[dict]:
    return [{"dataset": "synthetic", "arch": "small_cnn", "attack": a, "model": m, "seed": s,
             "ra": 0.0, "der": None, "similarity": 0.5, **metrics} for (a, m, s), metrics in CELLS.items()]


def by_name(board):
    return {e["defense"]: e for e in board}


def test_ranking_and_aggregates():
    board = leaderboard(grid(), CANDIDATE, METHODS)
    assert [e["defense"] for e in board] == [CANDIDATE, "nad", "ft"]  # references never ranked
    assert [e["rank"] for e in board] == [1, 2, 3]
    assert [e["candidate"] for e in board] == [True, False, False]
    e = by_name(board)

    ft = e["ft"]
    assert ft["clean_acc_cost"] == pytest.approx(((0.90 - 0.85) + (0.80 - 0.78)) / 2)
    assert ft["worst_reactivation_asr"] == pytest.approx(0.70)
    assert ft["worst_case"] == "A/wba"
    assert ft["worst_guaa_asr"] == pytest.approx(0.30)
    assert ft["coverage"] == "3/4"  # qbra under B missing
    assert ft["bec:B"] is None and ft["mean_bec"] == pytest.approx(0.6)  # undefined BEC skipped
    assert ft["mean_asr"] == pytest.approx(0.15)
    assert ft["react_asr:qbra:B"] is None and ft["guaa_asr:qbra:B"] is None

    nad = e["nad"]
    assert nad["seeds:A"] == 2 and nad["seeds:B"] == 1
    assert nad["clean_acc:A"] == pytest.approx(0.87)  # seeds averaged
    assert nad["react_asr:wba:A"] == pytest.approx(0.30)
    assert nad["bec:A"] == pytest.approx(0.4)
    assert nad["clean_acc_cost"] == pytest.approx(((0.90 - 0.87) + (0.80 - 0.76)) / 2)
    assert nad["worst_reactivation_asr"] == pytest.approx(0.35)
    assert (nad["worst_case"], nad["worst_guaa_asr"]) == ("B/qbra", pytest.approx(0.15))
    assert nad["coverage"] == "4/4"
    assert nad["mean_asr"] == pytest.approx((0.05 + 0.05) / 2)

    mine = e[CANDIDATE]
    assert mine["worst_reactivation_asr"] == pytest.approx(0.35)
    assert (mine["worst_case"], mine["worst_guaa_asr"]) == ("A/qbra", pytest.approx(0.33))
    assert mine["clean_acc_cost"] == pytest.approx(0.01)  # below nad's 0.035: wins the tie
    assert mine["coverage"] == "3/4"  # a None counts as missing, like an absent key

    for entry in board:
        assert set(leaderboard_columns(METHODS, ATTACKS)) == set(entry)


def test_reference_is_the_backdoored_model():
    ref = reference(grid(), METHODS)
    assert ref["defense"] == REFERENCE_NAME and ref["candidate"] is False and ref["rank"] is None
    assert ref["clean_acc_cost"] == 0.0
    assert ref["worst_reactivation_asr"] == pytest.approx(1.0)
    assert ref["worst_case"] == "B/wba" and ref["worst_guaa_asr"] is None
    assert ref["coverage"] == "4/4"
    assert ref["mean_asr"] == pytest.approx(0.98)


def test_none_alias_stands_in_for_missing_backdoored_rows():
    rows = [r for r in grid() if r["model"] != "backdoored"]
    ref = reference(rows, METHODS)
    assert ref["clean_acc:A"] == pytest.approx(0.10)
    assert by_name(leaderboard(rows, CANDIDATE, METHODS))["ft"]["clean_acc_cost"] == pytest.approx(
        ((0.10 - 0.85) + (0.10 - 0.78)) / 2)
    assert reference([r for r in rows if r["model"] != "none"], METHODS) is None


def test_defense_without_reactivation_ranks_last_unranked():
    rows = [{k: v for k, v in r.items() if not (r["model"] == "nad" and k.startswith("react_asr"))} for r in grid()]
    board = leaderboard(rows, CANDIDATE, METHODS)
    assert [e["defense"] for e in board] == [CANDIDATE, "ft", "nad"]
    nad = board[-1]
    assert nad["rank"] is None and nad["worst_reactivation_asr"] is None and nad["worst_case"] is None
    assert nad["coverage"] == "0/4"


def test_attacks_keyed_by_setting_when_the_grid_spans_several():
    rows = grid() + [dict(r, dataset="cifar10") for r in grid()]
    assert grid_attacks(grid()) == ATTACKS
    attacks = grid_attacks(rows)
    assert attacks == ["synthetic/small_cnn/A", "synthetic/small_cnn/B", "cifar10/small_cnn/A", "cifar10/small_cnn/B"]
    ft = by_name(leaderboard(rows, CANDIDATE, METHODS))["ft"]
    assert ft["coverage"] == "6/8" and ft["worst_case"] == "synthetic/small_cnn/A/wba"


def _parse(text: str):
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def test_write_leaderboard(tmp_path):
    rows = grid()
    board = leaderboard(rows, CANDIDATE, METHODS)
    paths = write_leaderboard(board, tmp_path / "out", "test grid", CANDIDATE, METHODS, grid_attacks(rows),
                              reference=reference(rows, METHODS))
    assert set(paths) == {"markdown", "csv", "figure"}
    assert {p.name for p in paths.values()} == {"leaderboard.md", "leaderboard.csv", "leaderboard.png"}
    assert all(p.exists() for p in paths.values())
    assert paths["figure"].read_bytes()[:8] == PNG_MAGIC

    md = paths["markdown"].read_text()
    assert f"**{CANDIDATE}**" in md
    ranking = [line for line in md.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")
               or line.startswith("| 3 ")]
    assert [line.split(" | ")[1] for line in ranking] == [f"**{CANDIDATE}**", "nad", "ft"]
    assert "| 1 | **plug.py:Mine** | 35.0 | A/qbra | 33.0 | no test (1 seed) | 35.0 | – | +1.0 |" in md
    assert "One seed: the values are single measurements, with no interval" in md
    assert REFERENCE_NAME in md and "Headline" in md and "leaderboard.png" in md

    with paths["csv"].open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == leaderboard_columns(METHODS, ATTACKS)
        parsed = [{k: _parse(v) for k, v in row.items()} for row in reader]
    assert parsed == board  # repr() keeps every float exact


def test_write_leaderboard_notes_entries_without_headline(tmp_path):
    rows = [{k: v for k, v in r.items() if not (r["model"] == "ft" and k.startswith("react_asr"))} for r in grid()]
    board = leaderboard(rows, "missing", METHODS)
    paths = write_leaderboard(board, tmp_path, "t", "missing", METHODS, ATTACKS)
    md = paths["markdown"].read_text()
    assert "not plotted): ft" in md
    assert "'missing' has no result" in md and "**" not in md.split("## Headline")[0].split("## Ranking")[1]
    assert paths["figure"].exists()


def test_log_leaderboard_offline(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)
    rows = grid()
    board = leaderboard(rows, CANDIDATE, METHODS)
    paths = write_leaderboard(board, tmp_path / "out", "t", CANDIDATE, METHODS, ATTACKS)
    run_dir = wl.log_leaderboard(project="bench-test", save_dir=tmp_path / "runs", name="grid-a", board=board,
                                 figure_path=paths["figure"])
    assert run_dir is not None and Path(run_dir).is_dir()
    assert Path(run_dir).parent == tmp_path / "runs" / "wandb"
    assert list(Path(run_dir).glob("*.wandb"))


def test_log_leaderboard_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wl.log_leaderboard(project="p", save_dir=tmp_path / "runs", name="g", board=[], figure_path=None) is None
    assert not (tmp_path / "runs").exists()
