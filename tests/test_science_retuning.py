"""Weight-space re-activation on real Fashion-MNIST (Min et al., NeurIPS
2024), in the demo's cells (`sweeps/demo.yaml`: small CNN, 4 epochs,
BadNets and Blended, the demo's defenses): the retuning attack RA at its
reference defaults (2 % of the training set with 5 poisoned samples, SGD lr
0.01, 5 epochs) on every model, and on the control EP (exact purification).
`make test-slow`; it shares the demo's models with the other science tests
through the store (SCIENCE_STORE=store reuses `make demo`'s).

Claims and margins, fixed before measuring:
1. RA on the clean model f_C stays low: P-ASR <= 0.2.
2. RA on exact purification stays low: P-ASR <= 0.2.
3. RA on the FT- and NAD-defended models climbs above both controls:
   P-ASR >= max(P-ASR of f_C, P-ASR of EP) + 0.2, for each attack.
The paper's third finding, that PAM's P-ASR lies below FT's, needs PAM,
which the suite does not have yet: not tested here.
"""
import os
from pathlib import Path

import pytest

from benchmark.cell import Cell
from sweeps.grid import load_grid

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("all_cores")]

DEMO = Path(__file__).resolve().parents[1] / "sweeps" / "demo.yaml"
LOW = 0.2       # claims 1 and 2: a control "stays low" at or below this P-ASR
MARGIN = 0.2    # claim 3: how far above both controls a sleeping backdoor climbs
CONTROLS = ("clean", "exact-purification")
SUPERFICIAL = ("ft", "nad")


@pytest.fixture(scope="module")
def rows(science_store):
    data_dir = os.environ.get("DATA_DIR", "data")
    out = {}
    for spec in load_grid(DEMO).cells():
        assert "ra" in spec.retunings, "the demo grid runs the retuning attack"
        cell = Cell(spec, science_store, data_dir=data_dir, accelerator="cpu", progress=False)
        for job in cell.jobs:
            cell.execute(job)
        out[spec.attack] = {r["model"]: r for r in cell.rows()}
        print(f"\n{spec.attack}: model  C-Acc  O-ASR  P-ASR(ra)  C-Acc after ra  WBA  gUAA")
        for model, r in out[spec.attack].items():
            print(f"  {model:20s} {r['clean_acc']:.3f} {r['asr']:.3f} {r.get('retune_asr:ra')} "
                  f"{r.get('retune_acc:ra')} {r.get('react_asr:wba')} {r.get('guaa_asr:wba')}")
    return out


@pytest.mark.parametrize("control", CONTROLS)
def test_ra_leaves_the_controls_low(rows, control):
    for attack, by_model in rows.items():
        assert by_model[control]["retune_asr:ra"] <= LOW, (attack, control, by_model[control]["retune_asr:ra"])


@pytest.mark.parametrize("defense", SUPERFICIAL)
def test_ra_wakes_the_backdoor_in_fine_tuned_models(rows, defense):
    for attack, by_model in rows.items():
        floor = max(by_model[c]["retune_asr:ra"] for c in CONTROLS)
        p_asr = by_model[defense]["retune_asr:ra"]
        assert p_asr >= floor + MARGIN, (attack, defense, p_asr, floor)
