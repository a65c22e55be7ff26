"""The paper's claims on real Fashion-MNIST, in the demo's setting (the cells
of `sweeps/demo.yaml`: small CNN trained 4 epochs, BadNets and Blended, every
defense the demo runs at its scaled BackdoorBench budget), with white-box
re-activation at its paper default (50 passes x 5 steps on 1,000 poisoned
training samples, L-inf 0.05; the demo runs 4 passes) against the clean
model and the first defense that worked (`make test-slow`, in CI: about 30
minutes on two CPU cores from nothing), and, marked `full_science`
(`make test-science`, about 35 minutes more), against every defense that
worked, plus TBRA and the noise / feature controls against one defense that
worked. Set SCIENCE_STORE=store after `make demo` to reuse its models.

Claims and margins, fixed before measuring:
1. The attack works: ASR >= 0.9 with C-Acc within 3 points of the clean model.
2. Re-activation is not a plain adversarial attack: for every defense that
   brings ASR below 0.2, WBA's ASR exceeds its gUAA control (same epsilon,
   same budget, clean inputs) by at least 0.3.
3. The clean-model control: the same WBA optimisation against f_C reaches an
   ASR of at most 0.2.
4. Against the first defense (grid order) that brings BadNets' ASR below 0.2:
   TBRA, crafted on the attacker's own FT copy, beats its gUAA control by at
   least 0.2; re-activation survives uniform noise of L-inf 0.09
   (ASR >= 0.3) while gUAA does not gain from it; RBA's features are closer
   to OBA's than gUAA's are (feature CKA).
BEC, raw S and both normalisations are printed for every defense and not
asserted: whether "BEC stays high while ASR ~ 0" shows at this scale is a
finding to report, not a threshold to tune. QBRA's science (10,000 queries of
500 images, about 9 CPU minutes per run) is left to GPU runs; its mechanics
are in the fast suite.
"""
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.cell import Cell
from sweeps.grid import load_grid

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("all_cores")]

DEMO = Path(__file__).resolve().parents[1] / "sweeps" / "demo.yaml"
WORKED = 0.2     # a defense "worked" when it brings ASR below this
REFERENCES = ("clean", "backdoored")


@pytest.fixture(scope="module")
def cells(science_store):
    store = science_store
    data_dir = os.environ.get("DATA_DIR", "data")
    out = {}
    for spec in load_grid(DEMO).cells():
        cell = Cell(spec, store, data_dir=data_dir, accelerator="cpu", progress=False)
        for job in cell.jobs:
            cell.execute(job)
        out[spec.attack] = cell
    return out


def _worked(by_model: dict) -> list[str]:
    return [m for m, r in by_model.items() if m not in REFERENCES and r["asr"] < WORKED]


def _paper_budget_rows(cells, every_defense: bool) -> dict:
    """Per attack, the demo's rows, with WBA and gUAA at the paper's default
    budget against the clean model and the first defense that worked (every
    defense that worked with `every_defense`)."""
    result = {}
    for attack, cell in cells.items():
        demo_rows = {r["model"]: r for r in cell.rows()}
        worked = _worked(demo_rows) if every_defense else _worked(demo_rows)[:1]
        # WBA at the paper's budget only: the demo's ε curve and retuning stay in the demo's cells
        spec = replace(cell.spec, defenses=tuple(worked) or cell.spec.defenses[:1], reactivation_params={},
                       epsilon_curve=(), retunings=())
        full = Cell(spec, cell.store, data_dir=cell.dm.data_dir, accelerator="cpu", progress=False,
                    datamodule=cell.dm)
        for job in full.jobs:
            if job.kind != "reactivation" or job.label != "wba vs backdoored":
                full.execute(job)
        paper = {r["model"]: r for r in full.rows()}
        for model, r in demo_rows.items():
            if model in paper and model != "backdoored":
                r["react_asr:wba@paper"] = paper[model]["react_asr:wba"]
                r["guaa_asr:wba@paper"] = paper[model].get("guaa_asr:wba")
        result[attack] = demo_rows
        print(f"\n{attack}: model  C-Acc  ASR  BEC  BEC-minmax  S  WBA(demo)  gUAA(demo)  WBA(paper)  "
              f"gUAA(paper)  seconds")
        for model, r in demo_rows.items():
            print(f"  {model:10s} {r['clean_acc']:.3f} {r['asr']:.3f} {r['bec']} {r['bec_minmax']:.3f} "
                  f"{r['similarity']:.4f} {r.get('react_asr:wba')} {r.get('guaa_asr:wba')} "
                  f"{r.get('react_asr:wba@paper')} {r.get('guaa_asr:wba@paper')} {r.get('seconds')}")
    return result


@pytest.fixture(scope="module")
def rows(cells):
    """The paper-budget runs CI can afford: against f_C and the first defense
    that worked, per attack (about 12 minutes on two cores)."""
    return _paper_budget_rows(cells, every_defense=False)


@pytest.fixture(scope="module")
def rows_every_defense(cells):
    """Against every defense that worked (`make test-science`; about 25 minutes)."""
    return _paper_budget_rows(cells, every_defense=True)


@pytest.fixture(scope="module")
def transfer(cells, rows):
    """TBRA and the controls against the first BadNets defense that worked."""
    worked = _worked(rows["badnets"])
    if not worked:
        pytest.skip("no defense brought BadNets' ASR below 0.2 in this run: nothing to re-activate")
    victim = worked[0]
    base = cells["badnets"]
    surrogate = "ft" if victim != "ft" else "nad"
    spec = replace(base.spec, defenses=(victim,), reactivations=("wba", "tbra"), controls=True,
                   reactivation_params={"tbra": {"surrogates": [surrogate]}},  # the attacker's own FT copy
                   epsilon_curve=(), retunings=())
    cell = Cell(spec, base.store, data_dir=base.dm.data_dir, accelerator="cpu", progress=False, datamodule=base.dm)
    for job in cell.jobs:
        if job.label.endswith(f"vs {victim}") or job.kind in ("train", "attack", "evaluate", "defense", "bec"):
            cell.execute(job)
    row = {r["model"]: r for r in cell.rows()}[victim]
    print(victim, json.dumps({k: v for k, v in row.items() if ":" in k}, indent=1, default=str))
    return victim, row


@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_attack_succeeds_without_costing_accuracy(rows, attack):
    r = rows[attack]
    assert r["backdoored"]["asr"] >= 0.9
    assert r["backdoored"]["clean_acc"] >= r["clean"]["clean_acc"] - 0.03


# Measured (seed 0, WBA at 50 x 5): BadNets: NC ASR 0.077 -> WBA 0.126 vs gUAA
# 0.056, FST 0.007 -> 0.010 vs 0.047, FT-SAM 0.191 -> 0.384 vs 0.056 (holds);
# Blended: NC 0.027 -> 0.190 vs 0.034, FST 0.025 -> 0.333 vs 0.051. The
# defenses that worked here also moved the backdoor features below the clean
# model's similarity (BEC -0.87 to -0.08), so there was little to wake up.
NOT_REPRODUCED = pytest.mark.xfail(raises=AssertionError, strict=False, reason=(
    "does not reproduce at the demo's scale (4-epoch f_A on Fashion-MNIST): defenses that brought ASR "
    "below 0.2 (NC, FST) also drove BEC below 0, and WBA stayed within 0.3 of gUAA"))


def _check_gaps(rows, attack, models):
    worked = {m: rows[attack][m] for m in models}
    gaps = {m: r["react_asr:wba@paper"] - r["guaa_asr:wba@paper"] for m, r in worked.items()}
    print(f"{attack}: defenses with ASR < {WORKED}: {sorted(worked)}; WBA - gUAA: {gaps}")
    for model, gap in gaps.items():
        assert gap >= 0.3, f"{attack}/{model}: WBA {worked[model]['react_asr:wba@paper']:.3f} vs gUAA " \
                           f"{worked[model]['guaa_asr:wba@paper']:.3f}"


@NOT_REPRODUCED
@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_reactivation_beats_guaa_against_the_first_defense_that_worked(rows, attack):
    _check_gaps(rows, attack, _worked(rows[attack])[:1])


@pytest.mark.full_science
@NOT_REPRODUCED
@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_reactivation_beats_guaa_wherever_a_defense_worked(rows_every_defense, attack):
    _check_gaps(rows_every_defense, attack, _worked(rows_every_defense[attack]))


@pytest.mark.parametrize("attack", [
    "badnets",
    # Measured 0.567: on f_C, Blended's trigger plus an L-inf 0.05 universal
    # perturbation is itself a strong targeted universal attack here.
    pytest.param("blended", marks=pytest.mark.xfail(raises=AssertionError, strict=False, reason=(
        "does not reproduce: WBA against the clean model reaches ASR 0.57 for Blended at eps 0.05"))),
])
def test_clean_model_control_stays_low(rows, attack):
    assert rows[attack]["clean"]["react_asr:wba@paper"] <= 0.2


# Measured against NC (BadNets; it flagged labels 0, 8, 6 with anomaly index
# 6.4): TBRA 0.082 vs gUAA 0.043; RBA 0.126 -> 0.090 under noise 0.09 while
# OBA stays at 0.99; feature CKA OBA~RBA 0.819 vs OBA~gUAA 0.814.
CLAIM_4_NOT_REPRODUCED = pytest.mark.xfail(raises=AssertionError, strict=False, reason=(
    "does not reproduce at the demo's scale: the first defense that worked (NC) leaves nothing that WBA or "
    "TBRA wakes up, so the noise and feature controls have no re-activation to measure"))


@pytest.mark.full_science
@CLAIM_4_NOT_REPRODUCED
def test_transfer_reactivation_beats_guaa_at_the_same_budget(transfer):
    victim, r = transfer
    assert r["react_asr:tbra"] - r["guaa_asr:tbra"] >= 0.2, victim


@pytest.mark.full_science
@CLAIM_4_NOT_REPRODUCED
def test_reactivation_survives_noise_that_breaks_guaa(transfer):
    victim, r = transfer
    assert r["noise_asr:wba:RBA@0.09"] >= 0.3
    assert r["noise_asr:wba:gUAA@0.09"] <= r["guaa_asr:wba"] + 0.05
    assert r["feature_cka:wba:OBA~RBA"] > r["feature_cka:wba:OBA~gUAA"]
