"""Weight-space re-activation on real Fashion-MNIST (Min et al., NeurIPS
2024), in the demo's cells (`sweeps/demo.yaml`: small CNN, 4 epochs,
BadNets and Blended, the demo's defenses): the retuning attack RA at its
reference defaults (2 % of the training set with 5 poisoned samples, SGD lr
0.01, 5 epochs) on every model, and on the control EP (exact purification).
`make test-slow`; it shares the demo's models with the other science tests
through the store (SCIENCE_STORE=store reuses `make demo`'s).

Claims and margins, fixed before measuring:
1. RA on the clean model f_C stays low: P-ASR <= 0.2, for each attack.
2. RA on exact purification stays low: P-ASR <= 0.2, for each attack.
3. RA on the FT- and NAD-defended models climbs above both controls:
   P-ASR >= max(P-ASR of f_C, P-ASR of EP) + 0.2, for each attack.
4. PAM (path-aware minimisation on BTI-DBF(U)) resists RA better than FT:
   its P-ASR is at least 0.1 below FT's, for each attack. PAM runs at the
   demo's scale of the reference budget (1/25 of its epochs, rounded up:
   pre-training 50 -> 2, mask search 20 -> 1, generator 30 -> 1, unlearning
   3 rounds x 30 -> 2 rounds x 2 epochs), beside the demo's own cells.
"""
import os
from dataclasses import replace
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
PAM_MARGIN = 0.1  # claim 4
PAM_DEMO_BUDGET = {"preround": 2, "mround": 1, "uround": 1, "nround": 2, "ul_round": 2}


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
        # PAM beside the demo's defenses: the same f_C, f_A, FT and controls from the store
        pam_spec = replace(spec, defenses=("ft", "pam"), reactivations=(), epsilon_curve=(),
                           epsilon_curve_defenses=None,
                           defense_params={**spec.defense_params, "pam": PAM_DEMO_BUDGET})
        pam_cell = Cell(pam_spec, science_store, data_dir=data_dir, accelerator="cpu", progress=False,
                        datamodule=cell.dm)
        for job in pam_cell.jobs:  # only PAM, its BEC and its retuning are new
            pam_cell.execute(job)
        out[spec.attack]["pam"] = next(r for r in pam_cell.rows() if r["model"] == "pam")
        print(f"\n{spec.attack}: model  C-Acc  O-ASR  P-ASR(ra)  C-Acc after ra  WBA  gUAA")
        for model, r in out[spec.attack].items():
            print(f"  {model:20s} {r['clean_acc']:.3f} {r['asr']:.3f} {r.get('retune_asr:ra')} "
                  f"{r.get('retune_acc:ra')} {r.get('react_asr:wba')} {r.get('guaa_asr:wba')}")
    return out


# Measured (make test-slow, seed 0): claims 1 and 2 hold on BadNets (P-ASR of
# f_C 0.059, of EP 0.192) and not on Blended (0.230 and 0.318): retuning on
# 5 Blended images teaches even the clean model the blend pattern a little.
# Reported as they are, not tuned; strict, so a change that makes them hold
# shows up.
NOT_REPRODUCED = {("blended", "clean"): "P-ASR of f_C measured 0.230 > 0.2",
                  ("blended", "exact-purification"): "P-ASR of EP measured 0.318 > 0.2"}


@pytest.mark.parametrize("attack,control", [
    pytest.param(a, c, marks=pytest.mark.xfail(reason=NOT_REPRODUCED[(a, c)], strict=True))
    if (a, c) in NOT_REPRODUCED else (a, c) for a in ("badnets", "blended") for c in CONTROLS])
def test_ra_leaves_the_controls_low(rows, attack, control):
    p_asr = rows[attack][control]["retune_asr:ra"]
    assert p_asr <= LOW, (attack, control, p_asr)


# Measured (seed 0): PAM's P-ASR 0.477 vs FT's 0.881 (BadNets), 0.717 vs 0.987
# (Blended), so the claim holds as stated; but at 1/25 of its budget PAM
# leaves C-Acc at 0.362 / 0.167 and O-ASR at 0.639 / 0.848: not yet a working
# defense on this model, so this pass says little about PAM at full budget.
def test_pam_resists_retuning_better_than_ft(rows):
    for attack, by_model in rows.items():
        pam, ft = by_model["pam"]["retune_asr:ra"], by_model["ft"]["retune_asr:ra"]
        assert pam <= ft - PAM_MARGIN, (attack, pam, ft)


@pytest.mark.parametrize("defense", SUPERFICIAL)
def test_ra_wakes_the_backdoor_in_fine_tuned_models(rows, defense):
    for attack, by_model in rows.items():
        floor = max(by_model[c]["retune_asr:ra"] for c in CONTROLS)
        p_asr = by_model[defense]["retune_asr:ra"]
        assert p_asr >= floor + MARGIN, (attack, defense, p_asr, floor)
