"""The paper's claims on real Fashion-MNIST, in the demo's setting (the cells
of `sweeps/demo.yaml`: small CNN, BadNets and Blended, every defense the demo
runs at its scaled BackdoorBench budget, WBA with the gUAA control), plus the
black-box methods and the controls against one defense that worked. Slow:
set SCIENCE_STORE to a directory to keep (or reuse, e.g. `store/` after
`make demo`) the artifacts between runs.

Claims and margins, fixed before measuring:
1. The attack works: ASR >= 0.9 with C-Acc within 3 points of the clean model.
2. Re-activation is not a plain adversarial attack: for every defense that
   brings ASR below 0.2, WBA's ASR exceeds its gUAA control (same epsilon,
   same budget, clean inputs) by at least 0.3.
3. The clean-model control: the same WBA optimisation against f_C reaches an
   ASR of at most 0.2.
4. Against the first defense (grid order) that brings BadNets' ASR below 0.2:
   QBRA and TBRA beat their gUAA controls by at least 0.2; re-activation
   survives uniform noise of L-inf 0.09 (ASR >= 0.3) while gUAA does not gain
   from it; RBA's features are closer to OBA's than gUAA's are (feature CKA).
BEC, raw S and both normalisations are printed for every defense and not
asserted: whether "BEC stays high while ASR ~ 0" shows at this scale is a
finding to report, not a threshold to tune.
"""
import json
import os
from pathlib import Path

import pytest

from benchmark.cell import Cell
from benchmark.store import ArtifactStore
from sweeps.grid import load_grid

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[1] / "sweeps" / "demo.yaml"
WORKED = 0.2     # a defense "worked" when it brings ASR below this


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    store = ArtifactStore(os.environ.get("SCIENCE_STORE") or tmp_path_factory.mktemp("store"))
    data_dir = os.environ.get("DATA_DIR", "data")
    out = {}
    for spec in load_grid(DEMO).cells():
        cell = Cell(spec, store, data_dir=data_dir, accelerator="cpu", progress=False)
        for job in cell.jobs:
            if job.kind != "controls":  # controls only where claim 4 needs them
                cell.execute(job)
        out[spec.attack] = cell
    return out


@pytest.fixture(scope="module")
def rows(cells):
    result = {attack: {r["model"]: r for r in cell.rows()} for attack, cell in cells.items()}
    for attack, by_model in result.items():
        print(f"\n{attack}: model  C-Acc  ASR  BEC  BEC-minmax  S  WBA  gUAA  seconds")
        for model, r in by_model.items():
            print(f"  {model:10s} {r['clean_acc']:.3f} {r['asr']:.3f} {r['bec']} {r['bec_minmax']:.3f} "
                  f"{r['similarity']:.4f} {r.get('react_asr:wba')} {r.get('guaa_asr:wba')} {r.get('seconds')}")
    return result


@pytest.fixture(scope="module")
def black_box(cells, rows):
    """QBRA and TBRA with controls against the first BadNets defense that worked."""
    worked = [m for m, r in rows["badnets"].items() if m not in ("clean", "backdoored", "none")
              and r["asr"] < WORKED and r["clean_acc"] > 0.5]
    if not worked:
        pytest.skip("no defense brought BadNets' ASR below 0.2 in this run: nothing to re-activate")
    victim = worked[0]
    base = cells["badnets"]
    surrogates = [d for d in ("ft", "nad", "fst") if d != victim][:2]
    spec = base.spec
    params = {"qbra": {}, "tbra": {"surrogates": surrogates}}  # TBRA crafts on the attacker's own copies
    from dataclasses import replace

    spec = replace(spec, defenses=tuple(dict.fromkeys((victim, *surrogates))), reactivations=("wba", "qbra", "tbra"),
                   reactivation_params={**spec.reactivation_params, **params})
    cell = Cell(spec, base.store, data_dir=base.dm.data_dir, accelerator="cpu", progress=False, datamodule=base.dm)
    for job in cell.jobs:
        if job.label.endswith(f"vs {victim}") or job.kind in ("train", "attack", "evaluate", "defense", "bec"):
            cell.execute(job)
    row = {r["model"]: r for r in cell.rows()}[victim]
    print(json.dumps({k: v for k, v in row.items() if ":" in k}, indent=1, default=str))
    return victim, row


@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_attack_succeeds_without_costing_accuracy(rows, attack):
    r = rows[attack]
    assert r["backdoored"]["asr"] >= 0.9
    assert r["backdoored"]["clean_acc"] >= r["clean"]["clean_acc"] - 0.03


@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_reactivation_beats_guaa_wherever_a_defense_worked(rows, attack):
    worked = {m: r for m, r in rows[attack].items() if m not in ("clean", "backdoored", "none") and r["asr"] < WORKED}
    gaps = {m: r["react_asr:wba"] - r["guaa_asr:wba"] for m, r in worked.items()}
    print(f"{attack}: defenses with ASR < {WORKED}: {sorted(worked)}; WBA - gUAA: {gaps}")
    for model, gap in gaps.items():
        assert gap >= 0.3, f"{attack}/{model}: WBA {worked[model]['react_asr:wba']:.3f} vs gUAA " \
                           f"{worked[model]['guaa_asr:wba']:.3f}"


@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_clean_model_control_stays_low(rows, attack):
    assert rows[attack]["clean"]["react_asr:wba"] <= 0.2


def test_black_box_reactivation_beats_guaa_at_the_same_budget(black_box):
    victim, r = black_box
    for method in ("qbra", "tbra"):
        assert r[f"react_asr:{method}"] - r[f"guaa_asr:{method}"] >= 0.2, (victim, method)
    curve = [r[f"react_asr:qbra@{q}q"] for q in (1000, 3000, 5000, 7000, 10000)]
    assert curve[-1] >= curve[0] - 0.02  # more queries never lost much ground


def test_reactivation_survives_noise_that_breaks_guaa(black_box):
    victim, r = black_box
    assert r["noise_asr:wba:RBA@0.09"] >= 0.3
    assert r["noise_asr:wba:gUAA@0.09"] <= r["guaa_asr:wba"] + 0.05
    assert r["feature_cka:wba:OBA~RBA"] > r["feature_cka:wba:OBA~gUAA"]
