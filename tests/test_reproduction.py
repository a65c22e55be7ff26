"""The ladder's claims on hand-made rows with known verdicts, and the results
page written end to end from a tiny two-rung grid run through the store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from benchmark.reporting.report import summarize
from benchmark.reporting.reproduction import claim_attacks, claim_bec_predicts, claim_regime

ROOT = Path(__file__).resolve().parents[1]


def _row(arch, model, seed, **metrics):
    return {"dataset": "d", "arch": arch, "attack": "badnets", "model": model, "seed": seed, **metrics}


def _ladder(fst_react=(0.12, 0.10, 0.11), seeds=(0, 1, 2), f_a_acc=0.89):
    rows = []
    for s in seeds:
        rows += [_row("small", "clean", s, clean_acc=0.90, asr=0.02, bec=0.0),
                 _row("small", "backdoored", s, clean_acc=f_a_acc, asr=0.99, bec=1.0),
                 # dormant: ASR down, BEC high, WBA far above gUAA on every seed
                 _row("small", "ft-sam", s, clean_acc=0.88, asr=0.05, bec=0.8,
                      **{"react_asr:wba": (0.90, 0.85, 0.95)[s], "guaa_asr:wba": (0.10, 0.12, 0.08)[s]}),
                 # removed: BEC below 0, WBA no better than gUAA
                 _row("small", "fst", s, clean_acc=0.87, asr=0.01, bec=-0.3,
                      **{"react_asr:wba": fst_react[s], "guaa_asr:wba": (0.11, 0.12, 0.10)[s]}),
                 # never brought ASR down: outside claims 2 and 3
                 _row("small", "ft", s, clean_acc=0.89, asr=0.95, bec=0.9,
                      **{"react_asr:wba": 0.99, "guaa_asr:wba": 0.2})]
    return rows


def test_claims_hold_on_a_ladder_that_shows_them():
    summary = summarize(_ladder())
    assert claim_attacks(summary).held is True
    bec = claim_bec_predicts(summary)
    assert bec.held is True and len(bec.evidence) == 2  # ft-sam and fst; ft's ASR is not below 0.2
    regime = claim_regime(summary)
    assert regime.held is True
    assert any("ft-sam" in e and "(in)" in e for e in regime.evidence)
    assert any("fst" in e and "(outside)" in e for e in regime.evidence)


def test_claims_fail_with_their_numbers():
    # an attack that costs 5 points of clean accuracy breaks claim 1
    attacks = claim_attacks(summarize(_ladder(f_a_acc=0.85)))
    assert attacks.held is False and "fails" in attacks.evidence[0] and "85.0 %" in attacks.evidence[0]
    # BEC < 0 but WBA re-activates far above gUAA on every seed: BEC did not predict it
    bec = claim_bec_predicts(summarize(_ladder(fst_react=(0.7, 0.8, 0.75))))
    assert bec.held is False and any("fst" in e and "disagrees" in e for e in bec.evidence)


def test_one_seed_leaves_claim_two_undecided_and_no_removal_fails_claim_three():
    summary = summarize(_ladder(seeds=(0,)))
    bec = claim_bec_predicts(summary)
    assert bec.held is None and all("undecided" in e for e in bec.evidence)
    kept = summarize([r for r in _ladder() if r["model"] in ("clean", "backdoored", "ft")])
    regime = claim_regime(kept)
    assert regime.held is False and "no defense brought ASR below" in regime.evidence[0]


def test_results_page_from_a_two_rung_grid(tmp_path):
    """Run a tiny ladder (two widths of two architectures, two seeds on the
    first rung, one on the second), then write its page: every rung, its
    cost, the claims and the figures are on it."""
    raw = yaml.safe_load((ROOT / "sweeps" / "tiny.yaml").read_text())
    raw.update(name="ladder", archs=["small_cnn-w4", "preact_resnet18-w2"], seeds=[0, 1], defenses=["ft"],
               per_arch={"preact_resnet18-w2": {"seeds": [0], "cell": {"epochs": 1}}},
               store=str(tmp_path / "store"), output=str(tmp_path / "out"), data_dir=str(tmp_path / "data"))
    grid = tmp_path / "ladder.yaml"
    grid.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, WANDB_MODE="disabled")
    run = subprocess.run([sys.executable, "-m", "sweeps", "run", str(grid)], env=env, capture_output=True,
                         text=True, timeout=900, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    page = tmp_path / "docs" / "results.md"
    made = subprocess.run([sys.executable, "-m", "sweeps", "results-page", str(grid), "--page", str(page)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert made.returncode == 0, made.stderr[-3000:]
    text = page.read_text()
    for arch in ("small_cnn-w4", "preact_resnet18-w2"):
        assert f"## {arch}" in text and f"| {arch} |" in text  # its table and its line in the ladder
    assert "## The claims, checked on these numbers" in text and text.count("**") >= 6
    assert "Mean over seeds (1 or 2 per row)" in text  # rung 1 has two seeds, rung 2 one
    for name in ("bec_vs_asr.png", "reactivation_asr.png", "capacity.png"):
        figure = page.parent / "figures" / "ladder" / name
        assert figure.stat().st_size > 1000 and f"figures/ladder/{name}" in text
    ladder_lines = [line for line in text.splitlines() if line.startswith("| small_cnn-w4 |")]
    assert ladder_lines and " min |" in ladder_lines[0]  # its measured job and wall time
    assert "```yaml" in text and "per_arch" in text  # the settings, verbatim
