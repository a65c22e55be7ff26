"""The paper's CLIP claim on real data, in the CLIP demo's setting (the cell
of `sweeps/clip-demo.yaml`: Fashion-MNIST images served as RGB with template
captions, the tiny open_clip ViT trained from scratch as f_C, poisoned by
fine-tuning with CleanCLIP's BadNets trigger (3-channel noise patch at a
random place, wrapped to bytes), defended by CleanCLIP and FT, WBA + gUAA
at L-inf 0.05). `make test-clip`; set SCIENCE_STORE=store after
`make demo-clip` to reuse its models.

Claims and margins, fixed before measuring:
0. Positive control (wiring): a fixed noise patch at a fixed corner
   (`badnets_corner`) at the demo's poison rate and lr for one epoch (5 %,
   lr 5e-4, 1 epoch: a third of the demo's poisoning) reaches zero-shot
   ASR >= 0.8 on the test set.
1. Poisoning works: zero-shot ASR >= 0.8 with zero-shot C-Acc within 5
   points of f_C's (the CLIP papers report a few points' cost); the ASR on
   the poisoned training pairs is printed beside it (fitted vs generalised).
2. CleanCLIP lowers the backdoor: its ASR is at most half of f_A's.
3. Re-activation, not a plain adversarial example: against CleanCLIP, WBA's
   ASR exceeds its gUAA control (same epsilon and budget, clean inputs) by at
   least 0.2.
4. The clean-model control: the same WBA against f_C reaches at most 0.3,
   and WBA against CleanCLIP exceeds WBA against f_C by at least 0.2.
FT's numbers and BEC are printed, not asserted.

Measured (sweeps/clip-demo.yaml as committed, 2 CPU cores shared with
another job, so about one core; `make test-clip`): f_C reaches 0.882
zero-shot C-Acc after 4 epochs on the RGB images (1,672 s). The poisoning
fine-tune with CleanCLIP's trigger (3,000 poisoned pairs, 5 %, lr 5e-4,
3 epochs, 2,029 s) left test ASR at 0.028 and the ASR on its own poisoned
training pairs at 0.040 (C-Acc 0.888, RA 0.876): the backdoor was not even
fitted, so claim 1 did not reproduce at this budget either (the earlier
grey, clamped trigger at 1 %, lr 2e-4, 2 epochs: ASR 0.019). Claims 2-4
presuppose a working backdoor; that run was stopped after f_A, so they are
stated, not measured. Positive control (claim 0; 1 epoch, 771 s): test
ASR 0.997, ASR on the poisoned training pairs 0.997, C-Acc 0.883. The
pipeline implants a fixed trigger in one epoch, so the wiring is sound;
what the tiny CLIP fails to learn in 3 epochs is CleanCLIP's per-image
noise at a random location (a translation-invariant noise detector).

The whole cell on the positive control's implanted model (`badnets_corner`,
1 epoch; CleanCLIP and FT at the demo's 2 epochs, lr 2e-4; WBA 10 passes;
3,258 s beside other jobs): f_C C-Acc 0.882 / ASR 0.013 / WBA 0.145; f_A
0.883 / 0.997 / WBA 0.999; CleanCLIP 0.874 / 0.976 / WBA 0.999 vs gUAA
0.513; FT 0.882 / 0.993 / WBA 0.998 vs gUAA 0.295. At this budget neither
defense removes the fixed patch, so nothing is dormant to re-activate; BEC
is undefined (1 - S(f_A, f_C) = 0.042 < 0.05: f_C's features are as close
to f_A's as f_A's own).
"""
import dataclasses
import json
import os
from pathlib import Path

import pytest

from benchmark.cell import Cell
from sweeps.grid import load_grid

pytestmark = [pytest.mark.slow, pytest.mark.clip_science, pytest.mark.usefixtures("all_cores")]

DEMO = Path(__file__).resolve().parents[1] / "sweeps" / "clip-demo.yaml"
#: the demo's rate and lr, one epoch of its three
CONTROL_BUDGET = {"poison_epochs": 1}


def _cell(science_store, **overrides) -> Cell:
    [spec] = load_grid(DEMO).cells()
    spec = dataclasses.replace(spec, **overrides)
    return Cell(spec, science_store, data_dir=os.environ.get("DATA_DIR", "data"), accelerator="cpu",
                    progress=False)


@pytest.fixture(scope="module")
def rows(science_store):
    cell = _cell(science_store)
    out = {row["model"]: row for row in cell.run()}
    attack = cell.store.load("attack", cell.job("attack", cell.spec.attack).key)
    out["backdoored"]["poisoned_train_asr"] = attack.metrics.get("poisoned_train_asr")
    print(json.dumps(out, indent=1, default=str))
    return out


def test_positive_control_a_fixed_corner_patch_implants_in_one_epoch(science_store):
    cell = _cell(science_store, attack="badnets_corner", defenses=(), reactivations=(), **CONTROL_BUDGET)
    metrics = cell.execute(cell.job("attack", "badnets_corner")).metrics
    print(json.dumps({"positive_control": metrics}, indent=1, default=str))
    assert metrics["test/asr"] >= 0.8


NO_BACKDOOR = ("measured: f_A's zero-shot ASR 0.028 on the test set and 0.040 on its own poisoned training "
               "pairs (5 %, 3 epochs, lr 5e-4; C-Acc 0.888 vs f_C's 0.882): no backdoor implanted")
NOT_MEASURED = "presupposes a backdoor, which the demo's poisoning did not implant (" + NO_BACKDOOR + "); not run"


@pytest.mark.xfail(reason=NO_BACKDOOR, strict=False)
def test_poisoning_reaches_a_high_zero_shot_asr_at_a_small_clean_cost(rows):
    clean, backdoored = rows["clean"], rows["backdoored"]
    assert backdoored["asr"] >= 0.8
    assert backdoored["clean_acc"] >= clean["clean_acc"] - 0.05


@pytest.mark.xfail(reason=NOT_MEASURED, strict=False)
def test_cleanclip_lowers_the_backdoor(rows):
    assert rows["cleanclip"]["asr"] <= rows["backdoored"]["asr"] / 2


@pytest.mark.xfail(reason=NOT_MEASURED, strict=False)
def test_wba_reactivates_the_cleaned_model_beyond_its_guaa_control(rows):
    row = rows["cleanclip"]
    assert row["react_asr:wba"] >= row["guaa_asr:wba"] + 0.2


def test_wba_against_the_clean_model_stays_low(rows):
    assert rows["clean"]["react_asr:wba"] <= 0.3


@pytest.mark.xfail(reason=NOT_MEASURED, strict=False)
def test_wba_reactivates_the_cleaned_model_beyond_the_clean_model(rows):
    assert rows["cleanclip"]["react_asr:wba"] >= rows["clean"]["react_asr:wba"] + 0.2
