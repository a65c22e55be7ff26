import csv
import math
import struct

import matplotlib.image
import pytest

from benchmark.reporting.report import BEC_LEGEND, IDENTITY, load_rows, summarize, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUERIES = (1000, 3000, 5000, 7000, 10000)
# ASR of "ft" under attack A per seed: the hand-computed check below.
FT_A_ASR = {0: 0.10, 1: 0.20}


def _row(attack, model, seed, curves=True):
    a = 0 if attack == "A" else 1
    asr = {"clean": 0.01, "backdoored": 0.98, "nad": 0.05, "ft": 0.30 + 0.02 * seed}[model]
    if (attack, model) == ("A", "ft"):
        asr = FT_A_ASR[seed]
    row = {"dataset": "synthetic", "arch": "small_cnn", "attack": attack, "model": model, "seed": seed,
           "clean_acc": 0.9 - 0.01 * seed - 0.02 * a, "asr": asr, "ra": 1 - asr - 0.05,
           "der": None if model in ("clean", "backdoored") else 0.8 + 0.01 * seed,
           "bec": {"clean": 0.0, "backdoored": 1.0}.get(model, 0.6 + 0.1 * seed),
           "bec_minmax": {"clean": 0.0, "backdoored": 1.0}.get(model, 0.7),
           "similarity": 0.5 + 0.1 * seed, "key": f"k{attack}{model}{seed}", "epsilon": 0.05}
    for m in ("wba", "qbra"):
        row[f"react_asr:{m}"] = 0.9 + 0.01 * seed
        row[f"react_ra:{m}"] = 0.05
        row[f"guaa_asr:{m}"] = None if model in ("clean", "backdoored") else 0.2
        if curves:
            for i, n in enumerate(QUERIES):
                row[f"react_asr:{m}@{n}q"] = 0.2 * i + 0.01 * seed
    return row


def grid(curves=True):
    return [_row(a, m, s, curves) for a in ("A", "B") for m in ("clean", "backdoored", "ft", "nad") for s in (0, 1)]


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert width > 100 and height > 100
    image = matplotlib.image.imread(path)
    assert image.shape[0] == height and image.shape[1] == width
    assert image[..., :3].std() > 0  # something was drawn, not a blank canvas


def test_report_files(tmp_path):
    rows = grid()
    paths = write_report(rows, tmp_path, title="test grid")
    names = {"results.csv", "results.json", "summary.md", "bec_vs_asr.png", "reactivation_asr.png",
             "asr_vs_queries.png"}
    assert {p.name for p in paths.values()} == names
    for p in paths.values():
        assert p.exists() and p.parent == tmp_path
        if p.suffix == ".png":
            _check_png(p)


def test_csv_has_every_row_and_identity_first(tmp_path):
    rows = grid()
    write_report(rows, tmp_path)
    with (tmp_path / "results.csv").open() as fh:
        table = list(csv.reader(fh))
    header, body = table[0], table[1:]
    assert len(body) == len(rows)
    assert header[:5] == IDENTITY
    assert header[5:13] == ["clean_acc", "asr", "ra", "der", "bec", "bec_minmax", "similarity", "seconds"]
    assert header[13:16] == ["react_asr:wba", "react_ra:wba", "guaa_asr:wba"]
    assert header[16:21] == [f"react_asr:wba@{n}q" for n in QUERIES]  # by query count, not as text
    assert header[-2:] == ["epsilon", "key"]  # pass-through keys, sorted, last
    first = dict(zip(header, body[0]))
    assert first["attack"] == "A" and first["model"] == "clean" and float(first["asr"]) == 0.01
    assert first["der"] == ""  # None


def test_json_round_trip(tmp_path):
    rows = grid()
    write_report(rows, tmp_path)
    assert load_rows(tmp_path / "results.json") == rows
    assert load_rows(tmp_path) == rows


def test_summary_mean_std(tmp_path):
    rows = grid()
    write_report(rows, tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert BEC_LEGEND in text
    mean = 100 * (FT_A_ASR[0] + FT_A_ASR[1]) / 2                                  # 15.0
    std = 100 * math.sqrt(sum((v - 0.15) ** 2 for v in FT_A_ASR.values()) / 1)   # sample std: 7.1
    # ± is the half-width of the 95 % t interval: t(0.975, df=1) = 12.706 (tables), x s / sqrt(2)
    half = 12.7062047 * std / math.sqrt(2)                                           # 63.5
    line = next(l for l in text.splitlines() if l.startswith("| A | ft |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "2"
    assert cells[4] == f"{mean:.1f} ± {half:.1f}" == "15.0 ± 63.5"
    ref = next(l for l in text.splitlines() if l.startswith("| A | clean |"))
    assert "| – |" in ref  # DER of the clean model

    agg = next(a for a in summarize(rows) if (a["attack"], a["model"]) == ("A", "ft"))
    assert agg["asr_mean"] == pytest.approx(0.15) and agg["asr_std"] == pytest.approx(std / 100)
    assert agg["n_seeds"] == 2 and agg["react_asr:qbra@10000q_mean"] == pytest.approx(0.805)
    order = [(a["attack"], a["model"]) for a in summarize(rows)]
    assert order[:4] == [("A", "clean"), ("A", "backdoored"), ("A", "ft"), ("A", "nad")]


def test_single_seed_shows_no_std(tmp_path):
    write_report([r for r in grid() if r["seed"] == 0], tmp_path)
    line = next(l for l in (tmp_path / "summary.md").read_text().splitlines() if l.startswith("| A | ft |"))
    assert "±" not in line and "| 10.0 |" in line


def test_missing_metrics_do_not_crash(tmp_path):
    rows = grid()
    broken = dict(rows[4], seed=2, asr=None, bec=float("nan"), clean_acc=None, **{"react_asr:wba": None})
    lonely = {"dataset": "synthetic", "arch": "small_cnn", "attack": "C", "model": "ft", "seed": 0}
    paths = write_report(rows + [broken, lonely], tmp_path)
    for p in paths.values():
        assert p.exists()
    text = (tmp_path / "summary.md").read_text()
    line = next(l for l in text.splitlines() if l.startswith("| C | ft |"))
    # 8 base metrics + 2 methods x (re-act, gUAA) + 2 methods' re-act - gUAA differences
    assert line.count("–") == 14
    back = load_rows(tmp_path)
    assert back[-2]["bec"] is None and back[-1] == lonely  # NaN is written as JSON null
    agg = next(a for a in summarize(rows + [broken]) if (a["attack"], a["model"]) == ("A", "ft"))
    assert agg["n_seeds"] == 3 and agg["asr_n"] == 2 and agg["asr_mean"] == pytest.approx(0.15)


def test_no_curve_columns_no_curve_figure(tmp_path):
    (tmp_path / "asr_vs_queries.png").write_bytes(b"stale")
    paths = write_report(grid(curves=False), tmp_path)
    assert "asr_vs_queries" not in paths
    assert not (tmp_path / "asr_vs_queries.png").exists()
    assert "asr_vs_queries" not in (tmp_path / "summary.md").read_text()
    _check_png(paths["bec_vs_asr"])


def test_empty_grid(tmp_path):
    paths = write_report([], tmp_path)
    assert load_rows(tmp_path) == [] and summarize([]) == []
    _check_png(paths["bec_vs_asr"])
