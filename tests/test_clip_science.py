"""The paper's CLIP claim on real data, in the CLIP demo's setting (the cell
of `sweeps/clip-demo.yaml`: Fashion-MNIST images with template captions, the
tiny open_clip ViT trained from scratch as f_C, poisoned by fine-tuning with
BadNets' noise patch, defended by CleanCLIP and FT, WBA + gUAA at L-inf
0.05). `make test-clip`; set SCIENCE_STORE=store after `make demo-clip` to
reuse its models.

Claims and margins, fixed before measuring:
1. Poisoning works: zero-shot ASR >= 0.8 with zero-shot C-Acc within 5
   points of f_C's (the CLIP papers report a few points' cost).
2. CleanCLIP lowers the backdoor: its ASR is at most half of f_A's.
3. Re-activation, not a plain adversarial example: against CleanCLIP, WBA's
   ASR exceeds its gUAA control (same epsilon and budget, clean inputs) by at
   least 0.2.
4. The clean-model control: the same WBA against f_C reaches at most 0.3.
FT's numbers and BEC are printed, not asserted.

Measured (sweeps/clip-demo.yaml as committed, 2 CPU cores): f_C reaches
0.882 zero-shot C-Acc after 4 epochs (865 s); the poisoning fine-tune (600
poisoned pairs, 1 %, lr 2e-4, 2 epochs, 904 s) left ASR at 0.019 (f_C under
the trigger: 0.019) with C-Acc 0.885: claim 1 did not reproduce at this
budget (the CleanCLIP issues #3, #10, #13 report the same ~0 ASR with too
few poisons or too low an lr). Claims 2-3 presuppose a working backdoor and
are expected to fail with it; they stay stated, not tuned.
"""
import json
import os
from pathlib import Path

import pytest

from benchmark.clip_cell import ClipCell
from sweeps.grid import load_grid

pytestmark = [pytest.mark.slow, pytest.mark.clip_science, pytest.mark.usefixtures("all_cores")]

DEMO = Path(__file__).resolve().parents[1] / "sweeps" / "clip-demo.yaml"


@pytest.fixture(scope="module")
def rows(science_store):
    [spec] = load_grid(DEMO).cells()
    cell = ClipCell(spec, science_store, data_dir=os.environ.get("DATA_DIR", "data"), accelerator="cpu",
                    progress=False)
    out = {row["model"]: row for row in cell.run()}
    print(json.dumps(out, indent=1, default=str))
    return out


NO_BACKDOOR = "the demo's poisoning left zero-shot ASR at 0.019 (measured; see the module docstring)"


@pytest.mark.xfail(reason=NO_BACKDOOR, strict=False)
def test_poisoning_reaches_a_high_zero_shot_asr_at_a_small_clean_cost(rows):
    clean, backdoored = rows["clean"], rows["backdoored"]
    assert backdoored["asr"] >= 0.8
    assert backdoored["clean_acc"] >= clean["clean_acc"] - 0.05


@pytest.mark.xfail(reason=NO_BACKDOOR, strict=False)
def test_cleanclip_lowers_the_backdoor(rows):
    assert rows["cleanclip"]["asr"] <= rows["backdoored"]["asr"] / 2


@pytest.mark.xfail(reason=NO_BACKDOOR, strict=False)
def test_wba_reactivates_the_cleaned_model_beyond_its_guaa_control(rows):
    row = rows["cleanclip"]
    assert row["react_asr:wba"] >= row["guaa_asr:wba"] + 0.2


def test_wba_against_the_clean_model_stays_low(rows):
    assert rows["clean"]["react_asr:wba"] <= 0.3
