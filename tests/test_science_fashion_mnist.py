"""The paper's effects on real Fashion-MNIST (seeded): one BadNets cell of the
small CNN (3 epochs), FT and NAD, white-box, query-based and transfer-based
re-activation with their controls. Slow: about 30 minutes on two CPU cores
(set SCIENCE_STORE to a directory to keep the artifacts between runs).

Settings: BackdoorBench defaults everywhere except FT's learning rate. At its
default (0.01) FT leaves this 3-epoch model at ASR ~0.37; at 0.02 it brings
ASR below 0.25 at no accuracy cost, so that is the defense model whose
backdoor the re-activation tests try to wake up (PAPER.md's question needs a
defense that worked). NAD at its defaults keeps most of the backdoor here and
serves as the attacker's surrogate for TBRA.
"""
import json
import os

import pytest

from benchmark.cell import Cell, CellSpec
from benchmark.store import ArtifactStore

pytestmark = pytest.mark.slow

SPEC = dict(dataset="fashion_mnist", arch="small_cnn", attack="badnets", defenses=("ft", "nad"), seed=0, epochs=3,
            defense_params={"ft": {"lr": 0.02}}, reactivations=("wba", "qbra", "tbra"))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    store = os.environ.get("SCIENCE_STORE") or tmp_path_factory.mktemp("store")
    cell = Cell(CellSpec(**SPEC), ArtifactStore(store), data_dir=os.environ.get("DATA_DIR", "data"),
                accelerator="cpu", progress=False)
    # Only what the assertions need: re-activation against FT (TBRA crafts on
    # the attacker's own NAD model), not against NAD, and the clean-model
    # control for WBA only (10,000 queries against f_C cost ~9 CPU minutes).
    for job in cell.jobs:
        if job.label.endswith("vs nad") or job.label == "qbra vs clean":
            continue
        cell.execute(job)
    result = {r["model"]: r for r in cell.rows()}
    print(json.dumps(result, indent=1))
    return result


def test_attack_succeeds_without_costing_accuracy(rows):
    assert rows["backdoored"]["asr"] >= 0.9
    assert rows["backdoored"]["clean_acc"] >= rows["clean"]["clean_acc"] - 0.03


def test_fine_tuning_lowers_asr_and_keeps_accuracy(rows):
    assert rows["ft"]["asr"] < 0.25
    assert rows["ft"]["clean_acc"] >= rows["backdoored"]["clean_acc"] - 0.05


def test_white_box_reactivation_wakes_the_backdoor_and_controls_do_not(rows):
    ft = rows["ft"]
    assert ft["react_asr:wba"] >= 0.5
    # the same optimisation against the clean model, and on clean inputs (gUAA)
    assert rows["clean"]["react_asr:wba"] <= 0.1
    assert ft["guaa_asr:wba"] <= 0.2 and ft["react_asr:wba"] - ft["guaa_asr:wba"] >= 0.3


def test_black_box_reactivation_beats_guaa_at_the_same_budget(rows):
    ft = rows["ft"]
    for method in ("qbra", "tbra"):
        assert ft[f"react_asr:{method}"] - ft[f"guaa_asr:{method}"] >= 0.2, method
    curve = [ft[f"react_asr:qbra@{q}q"] for q in (1000, 3000, 5000, 7000, 10000)]
    assert curve[-1] >= curve[0] - 0.02  # more queries never lost much ground


def test_reactivation_survives_noise_that_breaks_guaa(rows):
    ft = rows["ft"]
    assert ft["noise_asr:wba:RBA@0.09"] >= 0.3
    assert ft["noise_asr:wba:gUAA@0.09"] <= ft["guaa_asr:wba"] + 0.05
    assert ft["feature_cka:wba:OBA~RBA"] > ft["feature_cka:wba:OBA~gUAA"]
