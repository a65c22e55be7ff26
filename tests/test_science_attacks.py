"""Each of the suite's attacks on real Fashion-MNIST (`sweeps/attacks.yaml`:
the demo's small CNN, 4 epochs, FT and FST (the demo's strongest defense),
WBA at the demo's budget and its gUAA control). Slow; shares f_C with the
other science tests through the session's store.

Claims and margins, fixed before measuring:
1. Dirty-label attacks (WaNet, Input-Aware, LF, TrojanNN, SSBA) work:
   ASR >= 0.85 with C-Acc within 3 points of the clean model.
2. Clean-label attacks (SIG, LC) are weaker on small data, so only this is
   claimed: the backdoor exists, f_A's ASR exceeds the clean model's ASR
   under the same trigger by at least 0.1.
3. Against every defense, WBA (trigger + delta) reaches at least the ASR of
   its gUAA control (clean + delta, same budget): the trigger carries
   something a universal perturbation alone does not.
The per-attack table (C-Acc, ASR, BEC, WBA, gUAA, seconds of the trigger
stage and of f_A) is printed for the record.
"""
import os
from pathlib import Path

import pytest

from benchmark.cell import Cell
from sweeps.grid import load_grid

# Its own target (`make test-attacks`), outside `make test-slow`: the grid
# costs about 30 minutes on two cores on top of the other science tests.
pytestmark = [pytest.mark.slow, pytest.mark.attack_science, pytest.mark.usefixtures("all_cores")]

GRID = Path(__file__).resolve().parents[1] / "sweeps" / "attacks.yaml"
DIRTY_LABEL = ("wanet", "input_aware", "lf", "trojannn", "ssba")
CLEAN_LABEL = ("sig", "lc")


@pytest.fixture(scope="module")
def results(science_store):
    data_dir = os.environ.get("DATA_DIR", "data")
    out, dm = {}, None
    for spec in load_grid(GRID).cells():
        cell = Cell(spec, science_store, data_dir=data_dir, accelerator="cpu", progress=False, datamodule=dm)
        dm = cell.dm
        for job in cell.jobs:
            cell.execute(job)
        rows = {r["model"]: r for r in cell.rows()}
        timed = [cell.job("attack", spec.attack)] + [j for j in cell.jobs if j.kind == "trigger"]
        seconds = {job.kind: science_store.load(job.kind, job.key).meta.get("seconds") for job in timed}
        out[spec.attack] = (rows, seconds)
        print(f"\n{spec.attack}: trigger stage {seconds.get('trigger')} s, f_A {seconds.get('attack')} s")
        for model, r in rows.items():
            print(f"  {model:10s} C-Acc {r['clean_acc']:.3f} ASR {r['asr']:.3f} BEC {r['bec']} "
                  f"WBA {r.get('react_asr:wba')} gUAA {r.get('guaa_asr:wba')}")
    return out


def test_grid_covers_every_new_attack():
    assert set(load_grid(GRID).attacks) >= set(DIRTY_LABEL + CLEAN_LABEL)


def _measured(reason: str):
    """A claim that did not reproduce: the numbers measured, kept visible."""
    return pytest.mark.xfail(raises=AssertionError, strict=False, reason=reason)


# Measured (seed 0, sweeps/attacks.yaml, `make test-attacks` on 2 CPU cores,
# after the protocol fixes: per-batch WaNet rows, Input-Aware's accumulated
# generator gradient and 1 mask + 3 joint epochs, TrojanNN's uint8 wrap and
# random-head ranking, the defender's subset from every index, non-target
# attacker samples); f_C: C-Acc 0.857.
NOT_REPRODUCED_ATTACK = {
    "wanet": "ASR 0.945 (0.769 with fixed poisoned indices) but C-Acc 0.767: 9 points below f_C after 4 epochs "
             "(BackdoorBench reports 89.7 % ASR after 100 CIFAR-10 epochs)",
    "input_aware": "ASR 0.585 at C-Acc 0.812: 200 mask steps and 3 joint epochs (4 epochs counting the mask "
                   "epoch, as the reference's 25 + 75) instead of 25 + 75 epochs",
}
NOT_REPRODUCED_REACTIVATION = {
    ("input_aware", "fst"): "WBA 0.053 vs gUAA 0.059 (FST drove ASR to 0.043 and BEC to 0.55)",
    ("trojannn", "fst"): "WBA 0.003 vs gUAA 0.050 (FST drove ASR to 0.002 and BEC to 0.07)",
    # Before the attacker's samples were non-target images this pair "held"
    # at WBA 0.000 vs gUAA 0.000: both searched on target-class images only.
    ("sig", "fst"): "WBA 0.025 vs gUAA 0.077 (FST drove ASR to 0.000 and BEC to -0.67)",
    ("lc", "fst"): "WBA 0.001 vs gUAA 0.076 (FST drove ASR to 0.000 and BEC to -1.01)",
}


@pytest.mark.parametrize("attack", [pytest.param(a, marks=_measured(NOT_REPRODUCED_ATTACK[a]))
                                    if a in NOT_REPRODUCED_ATTACK else a for a in DIRTY_LABEL])
def test_dirty_label_attack_succeeds_without_costing_accuracy(results, attack):
    rows, _ = results[attack]
    assert rows["backdoored"]["asr"] >= 0.85
    assert rows["backdoored"]["clean_acc"] >= rows["clean"]["clean_acc"] - 0.03


@pytest.mark.parametrize("attack", CLEAN_LABEL)
def test_clean_label_backdoor_exists(results, attack):
    rows, _ = results[attack]
    assert rows["backdoored"]["asr"] >= rows["clean"]["asr"] + 0.1


@pytest.mark.parametrize("attack,model", [
    pytest.param(a, m, marks=_measured(NOT_REPRODUCED_REACTIVATION[(a, m)]))
    if (a, m) in NOT_REPRODUCED_REACTIVATION else (a, m)
    for a in DIRTY_LABEL + CLEAN_LABEL for m in ("ft", "fst")])
def test_reactivation_reaches_its_guaa_control(results, attack, model):
    r = results[attack][0][model]
    assert r["react_asr:wba"] >= r["guaa_asr:wba"], f"{attack}/{model}"
