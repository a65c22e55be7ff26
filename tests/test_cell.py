import json

import pytest

from benchmark.measures.bec import MIN_BEC_DENOMINATOR
from benchmark.cli import main
from benchmark.errors import ConfigError, StoreError, UnknownNameError
from benchmark.training import TrainerFactory


def test_cell_end_to_end_then_served_from_store(make_cell, monkeypatch):
    rows = make_cell().run()
    by = {r["model"]: r for r in rows}
    assert list(by) == ["clean", "backdoored", "ft", "nad"]
    if 1 - by["clean"]["similarity"] < MIN_BEC_DENOMINATOR:  # f_C as similar as f_A: undefined, not huge
        assert all(r["bec"] is None for r in rows)
    else:
        assert by["clean"]["bec"] == pytest.approx(0.0) and by["backdoored"]["bec"] == pytest.approx(1.0)
    assert by["backdoored"]["bec_minmax"] == 1.0 and by["backdoored"]["similarity"] == pytest.approx(1.0)
    assert max(by[m]["bec_minmax"] for m in ("clean", "ft", "nad")) == pytest.approx(1.0)
    assert by["ft"]["seconds"] > 0
    for r in rows:
        for key in ("clean_acc", "asr", "ra", "react_asr:wba", "react_ra:wba"):
            assert 0.0 <= r[key] <= 1.0
    assert by["ft"]["der"] is not None and "guaa_asr:wba" not in by["clean"]
    assert 0.0 <= by["ft"]["guaa_asr:wba"] <= 1.0

    # Second run: nothing may train or evaluate again.
    def no_work(*args, **kwargs):
        raise AssertionError("a stage was recomputed although the store has it")

    monkeypatch.setattr(TrainerFactory, "fit", no_work)
    monkeypatch.setattr(TrainerFactory, "evaluate", no_work)
    assert make_cell().run() == rows


def test_attack_learns_backdoor_on_synthetic_data(make_cell):
    cell = make_cell(epochs=8)
    attack = cell.execute(cell.job("attack", "badnets")).metrics
    assert attack["test/asr"] > 0.9 and attack["test/clean_acc"] > 0.9


@pytest.mark.parametrize("overrides,error,match", [
    ({"dataset": "mnist3d"}, UnknownNameError, "choose one of"),
    ({"attack": "trojan"}, UnknownNameError, "badnets"),
    ({"defenses": ("ft", "anp2")}, UnknownNameError, "nad"),
    ({"arch": "resnet1000"}, UnknownNameError, "small_cnn"),
    ({"reactivations": ("magic",)}, UnknownNameError, "wba"),
    ({"attack": "clean"}, ConfigError, "no trigger"),
    ({"reactivation_params": {"wba": {"stepz": 3}}}, ConfigError, "re-activation 'wba'"),
    ({"poison_rate": 1.0}, ConfigError, "poison_rate=1.0 is not allowed"),
    ({"poison_rate": 0.0}, ConfigError, "poison_rate=0.0 is not allowed"),
    ({"epsilon": 0.0}, ConfigError, "epsilon"),
    ({"target_label": 9}, ConfigError, "target label 9"),
    ({"epochs": 0}, ConfigError, "epochs"),
    ({"defense_params": {"ft": {"epochz": 3}}}, ConfigError, "defense 'ft'"),
])
def test_bad_input_fails_before_any_work(make_cell, overrides, error, match, tmp_path):
    with pytest.raises(error, match=match):
        cell = make_cell(**overrides)
        cell.run()
    store = tmp_path / "store"
    assert not store.exists() or not any(p for p in store.rglob("meta.json"))


def test_corrupted_weights_in_store_reported(make_cell):
    cell = make_cell(defenses=())
    art = cell.execute(cell.job("train", "clean model"))
    (art.path / "tensors.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(StoreError, match="delete that directory"):
        make_cell(defenses=()).load_model(art)


def test_cli_help_lists_choices(capsys):
    with pytest.raises(SystemExit):
        main(["cell", "--help"])
    out = capsys.readouterr().out
    for name in ("fashion_mnist", "cifar10", "badnets", "blended", "nad", "ft", "wba", "preact_resnet18"):
        assert name in out


def test_cli_reports_bad_input_as_one_line(capsys, tmp_path):
    code = main(["cell", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "nothing"),
                 "--store", str(tmp_path / "s"), "--attack", "nonsense"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: unknown attack 'nonsense'") and err.count("\n") == 1


def test_cli_missing_dataset_names_the_directory(capsys, tmp_path):
    code = main(["cell", "--data-dir", str(tmp_path / "nothing"), "--store", str(tmp_path / "s"),
                 "--data-params", json.dumps({"download": False, "debian_dir": str(tmp_path / "no-debian")})])
    err = capsys.readouterr().err
    assert code == 2 and "Fashion-MNIST not found" in err and str(tmp_path / "nothing") in err


def test_cli_runs_a_synthetic_cell_and_writes_json(tmp_path, capsys):
    out = tmp_path / "cell.json"
    code = main(["cell", "--dataset", "synthetic", "--defenses", "ft", "--epochs", "2", "--no-progress",
                 "--store", str(tmp_path / "s"), "--data-dir", str(tmp_path / "d"), "--out", str(out),
                 "--defense-params", '{"ft": {"epochs": 1}}', "--bec-samples", "32",
                 "--reactivation-params", '{"wba": {"epochs": 1, "num_samples": 32, "batch_size": 16}}'])
    assert code == 0
    table = capsys.readouterr().out
    assert "backdoored" in table and "wba ASR" in table
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["clean", "backdoored", "ft"]


def test_black_box_methods_and_controls_in_a_cell(make_cell):
    cell = make_cell(reactivations=("wba", "qbra", "tbra"), reactivation_params={
        "wba": {"epochs": 1, "num_samples": 32, "batch_size": 16},
        "qbra": {"max_queries": 40, "num_samples": 32, "batch_size": 32, "curve": (10, 40)},
        "tbra": {"epochs": 1, "num_samples": 32, "batch_size": 16}})
    kinds = [j.kind for j in cell.jobs]
    assert kinds.count("controls") == 3 * 2  # every method x defense
    rows = {r["model"]: r for r in cell.run()}
    ft = rows["ft"]
    for m in ("wba", "qbra", "tbra"):
        assert 0.0 <= ft[f"react_asr:{m}"] <= 1.0 and 0.0 <= ft[f"guaa_asr:{m}"] <= 1.0
        for case in ("OBA", "RBA", "gUAA"):
            assert {f"noise_asr:{m}:{case}@{lvl}" for lvl in ("0", "0.03", "0.06", "0.09")} <= ft.keys()
        assert 0.0 <= ft[f"feature_cka:{m}:OBA~RBA"] <= 1.0 + 1e-9
    assert {"react_asr:qbra@10q", "react_asr:qbra@40q"} <= ft.keys()
    # TBRA against ft crafts on the attacker's own nad model, and vice versa
    tbra_ft = cell.job("reactivation", "tbra vs ft")
    assert [r for r in tbra_ft.deps if r.startswith("surrogate:")] == ["surrogate:nad"]
    qbra = cell.store.load("reactivation", cell.job("reactivation", "qbra vs ft").key).metrics
    assert qbra["queries"] <= 40
    # the clean and backdoored rows have no transfer victim
    assert "react_asr:tbra" not in rows["clean"]


@pytest.mark.parametrize("params,error,match", [
    ({"tbra": {"surrogates": ["ft"]}}, ConfigError, "white-box re-activation, not transfer"),
    ({"tbra": {"surrogates": ["anp9"]}}, UnknownNameError, "defense 'anp9'"),
    ({"qbra": {"max_queries": 0}}, ConfigError, "max_queries"),
    ({"wba": {"surrogates": ["ft"]}}, ConfigError, "only apply to transfer"),
])
def test_black_box_bad_input(make_cell, params, error, match):
    with pytest.raises(error, match=match):
        make_cell(reactivations=("wba", "qbra", "tbra"), reactivation_params=params)


def test_cross_architecture_surrogates_are_planned(make_cell):
    cell = make_cell(defenses=("ft",), reactivations=("tbra",),
                     reactivation_params={"tbra": {"surrogates": ["ft"], "surrogate_arch": "timm:resnet10t"}})
    job = cell.job("reactivation", "tbra vs ft")
    surrogate = job.deps["surrogate:ft (timm:resnet10t)"]
    assert surrogate.config["model"]["arch"] == "timm:resnet10t"
    assert surrogate.deps["attack"].config["trigger"] == cell.trigger_config


def test_none_defense_is_the_backdoored_model(make_cell):
    cell = make_cell(defenses=("none", "ft"))
    assert not [j for j in cell.jobs if j.kind == "defense" and j.label == "none"]
    assert cell.job("reactivation", "wba vs none") is cell.job("reactivation", "wba vs backdoored")
    rows = {r["model"]: r for r in cell.run()}
    assert rows["none"]["asr"] == rows["backdoored"]["asr"] and rows["none"]["similarity"] == pytest.approx(1.0)
    assert rows["none"]["bec"] == rows["backdoored"]["bec"] and rows["none"]["bec_minmax"] == 1.0
    assert rows["none"]["seconds"] == 0.0
    assert rows["none"]["der"] == pytest.approx(0.5)
    assert "guaa_asr:wba" in rows["none"]


def test_controls_can_be_left_out_but_guaa_stays(make_cell):
    cell = make_cell(controls=False)
    kinds = {j.kind for j in cell.jobs}
    assert "controls" not in kinds and "guaa" in kinds
    assert "controls" in {j.kind for j in make_cell().jobs}
