"""The paper's question at its protocol on a ladder of capacities
(`sweeps/reproduce.yaml`, about 90 minutes on 2 cores; `make reproduce` runs
the grid, writes docs/results-fashion-mnist.md and then these tests, which
read the store). CI does not run them: marker `reproduce`.

Claims, stated before measuring (benchmark/reporting/reproduction.py computes them):
1. Attacks: f_A's ASR >= 0.9 at a clean accuracy within 2 points of f_C, on
   every rung and attack (seed means).
2. Where a defense brings ASR below 0.2, BEC predicts re-activation: BEC > 0
   goes with WBA significantly above its gUAA control, BEC < 0 with no
   significant gap (one-sided paired t-test over seeds, alpha 0.05).
3. The paper's regime (ASR < 0.2, BEC > 0.5, WBA - gUAA > 0.3) appears on at
   least one rung of the ladder.
A claim that does not reproduce stays here, marked with its measured numbers.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.reporting.report import summarize
from benchmark.reporting.reproduction import claim_attacks, claim_bec_predicts, claim_regime

pytestmark = [pytest.mark.slow, pytest.mark.reproduce]
ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "sweeps" / "reproduce.yaml"


@pytest.fixture(scope="module")
def summary():
    """The ladder's summary over seeds; runs what the store lacks first."""
    store = os.environ.get("REPRODUCE_STORE")
    extra = ["--store", store] if store else []
    run = subprocess.run([sys.executable, "-m", "sweeps", "run", str(GRID), *extra], cwd=ROOT, text=True,
                         capture_output=True, timeout=3 * 3600)
    assert run.returncode == 0, run.stderr[-3000:]
    from sweeps.graph import build_graph
    from sweeps.grid import load_grid

    grid = load_grid(GRID)
    if store:
        grid.store = Path(store)
    rows = []
    for cell in build_graph(grid).cells:
        rows += cell.rows()
    return summarize(rows)


def _check(claim):
    print(f"\nclaim {claim.number}: {claim.statement}: {claim.verdict}")
    for line in claim.evidence:
        print(f"  - {line}")
    assert claim.held, "\n".join(claim.evidence)


def test_claim_1_attacks_implant_at_no_accuracy_cost(summary):
    _check(claim_attacks(summary))


@pytest.mark.xfail(strict=True, reason=(
    "measured (make reproduce, 2026-12-07): on the small CNN two defenses with BEC < 0 are re-activated "
    "significantly above gUAA: FT-SAM on BadNets (BEC -0.13, WBA - gUAA 21.5 +- 28.9 pts, p 0.043, 3 seeds) and "
    "FST on Blended (BEC -0.32, 47.0 +- 39.2 pts, p 0.018); FST on BadNets agrees (BEC -0.49, -9.1 pts, p 0.97); "
    "PreAct-ResNet18-w8 has one seed: undecided"))
def test_claim_2_bec_predicts_reactivation(summary):
    _check(claim_bec_predicts(summary))


@pytest.mark.xfail(strict=True, reason=(
    "measured (make reproduce, 2026-12-07): no rung shows ASR < 0.2 with BEC > 0.5 and WBA - gUAA > 0.3; closest: "
    "PreAct-ResNet18-w8 FST on BadNets (ASR 9.1 %, BEC 0.38, gap 21 pts, 1 seed) and FST on Blended on the "
    "small CNN (ASR 8.7 %, gap 47 pts, but BEC -0.32); FT-SAM on PreAct-ResNet18-w8 has BEC 0.48 and a gap of "
    "86 pts but leaves ASR at 54.6 %"))
def test_claim_3_the_paper_regime_appears_on_some_rung(summary):
    _check(claim_regime(summary))
