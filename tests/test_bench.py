"""The speed benchmark (`python -m benchmark.speed.bench`): a quick CPU run is
complete, every rate is a positive finite number, the suite's path and the
plain loop did exactly the same work, and the grid-time estimator prices a
hand-built job list to the second."""
import json
import math

import pytest

from benchmark.speed.bench import main
from benchmark.speed.grid_estimate import GridData, PlannedJob, estimate_grid, job_work
from benchmark.speed.workloads import WORKLOADS


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["--quick", "--device", "cpu", "--no-estimate", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_quick_run_is_complete_with_positive_finite_rates(quick_results):
    assert quick_results["device"] == "cpu"
    arch = quick_results["architectures"]["small_cnn"]
    assert arch["image_shape"] == [1, 28, 28]
    assert arch["precision"]["training"] == "32-true"  # the suite's CPU precision, matched by the plain loops
    assert set(arch["workloads"]) == set(WORKLOADS)
    for name, w in arch["workloads"].items():
        assert math.isfinite(w["ratio"]) and w["ratio"] > 0, name
        for side in ("suite", "plain"):
            for key in ("seconds", "images_per_s", "steps_per_s"):
                value = w[side][key]
                assert math.isfinite(value) and value > 0, (name, side, key, value)


def test_suite_and_plain_loops_did_the_same_work(quick_results):
    arch = quick_results["architectures"]["small_cnn"]
    sizes, work = arch["sizes"], arch["workloads"]
    for name, w in work.items():
        assert w["suite"]["images"] == w["plain"]["images"], name
        assert w["suite"]["steps"] == w["plain"]["steps"], name

    # ...and that work is what the sizes asked for, counted at the model's forward
    assert work["attack"]["suite"]["images"] == sizes["train_images"]
    assert work["attack"]["suite"]["steps"] == math.ceil(sizes["train_images"] / sizes["train_batch"])
    subset_batches = math.ceil(sizes["defense_subset"] / sizes["defense_batch"])
    assert work["defense"]["suite"]["images"] == sizes["defense_epochs"] * sizes["defense_subset"]
    assert work["defense"]["suite"]["steps"] == sizes["defense_epochs"] * subset_batches
    wba_batches = sizes["wba_samples"] // sizes["wba_batch"]  # drop_last
    assert work["wba"]["suite"]["steps"] == sizes["wba_epochs"] * wba_batches * sizes["wba_inner_steps"]
    assert work["wba"]["suite"]["images"] == work["wba"]["suite"]["steps"] * sizes["wba_batch"]
    queries = work["qbra"]
    assert queries["suite"]["steps"] == sizes["queries"]
    for side in ("suite", "plain"):
        assert queries[side]["details"]["oracle_queries"] == sizes["queries"]
    assert queries["suite"]["images"] == sizes["queries"] * sizes["query_samples"]
    # both evaluations saw the same images with the same model: the same three numbers
    suite_metrics, plain_metrics = work["evaluation"]["suite"]["details"], work["evaluation"]["plain"]["details"]
    for key in ("test/clean_acc", "test/asr", "test/ra"):
        assert suite_metrics[key] == pytest.approx(plain_metrics[key], abs=1e-6), key


def test_grid_estimate_of_a_hand_built_job_list():
    data = GridData(num_train=100, num_test=20, num_classes=10)  # 18 non-target test images
    rates = {"attack": 10.0, "defense": 4.0, "wba": 6.0, "qbra": 50.0, "evaluation": 2.0}
    jobs = [
        # 2 epochs x 100 images at 10 img/s = 20 s; evaluation 20 + 18 images at 2 img/s = 19 s
        PlannedJob("train", "clean model", {"train": {"epochs": 2, "batch_size": 128}}),
        # 4 epochs x ceil(0.1 x 100) clean images at 4 img/s = 10 s; evaluation 19 s
        PlannedJob("defense", "ft", {"defense": "ft", "params": {"epochs": 4, "batch_size": 256},
                                     "clean_ratio": 0.1}),
        # 3 epochs x (10 // 4 = 2 batches of 4) x 5 inner steps = 120 images at 6 img/s = 20 s;
        # the delta's evaluation on 18 poisoned images at 2 img/s = 9 s
        PlannedJob("reactivation", "wba vs ft", {"method": "wba", "params": {
            "epochs": 3, "num_samples": 10, "batch_size": 4, "inner_steps": 5}}),
        # a trigger preparation: not priced, counted apart
        PlannedJob("trigger", "ssba", {"trigger": {"name": "ssba"}}),
    ]
    est = estimate_grid(jobs, rates, data)
    assert est.seconds == pytest.approx(20 + 19 + 10 + 19 + 20 + 9)
    assert est.seconds_by_group == pytest.approx({"train": 39.0, "defense": 29.0, "reactivation wba": 29.0})
    assert est.jobs_by_group == {"train": 1, "defense": 1, "reactivation wba": 1}
    assert est.images_by_workload == pytest.approx({"attack": 200, "defense": 40, "wba": 120, "evaluation": 94})
    assert est.not_estimated == {"trigger": 1}
    assert est.bounds == {}


def test_estimate_marks_partial_work_counts_as_bounds():
    data = GridData(num_train=1000, num_test=100, num_classes=10)
    qbra = PlannedJob("guaa", "qbra vs ft", {"method": "qbra", "params": {
        "max_queries": 100, "batch_size": 50, "num_samples": 20, "curve": [10, 50, 1000]}})
    work = job_work(qbra, data)
    # the whole budget of 20-image queries; the delta and the two curve snapshots within the budget evaluated
    assert work.images == {"qbra": 100 * 20, "evaluation": 3 * 90}
    assert work.bound == "upper bound"
    anp = job_work(PlannedJob("defense", "anp", {"defense": "anp", "clean_ratio": 0.05, "params": {
        "epochs": 0, "iterations": 7, "batch_size": 16, "noise_steps": 1}}), data)
    assert anp.images["defense"] == 7 * 16 * 2 and anp.bound == "lower bound"
    tbra = job_work(PlannedJob("reactivation", "tbra vs ft", {"method": "tbra", "params": {
        "epochs": 2, "num_samples": 25, "batch_size": 10, "ensemble": "sum"}}, surrogates=3), data)
    assert tbra.images["wba"] == 2 * 20 * 3  # one backward per surrogate and step, drop_last batches
