"""Weight-space re-activation (Min et al., NeurIPS 2024): the retuning
attack RA trains a copy and never the stored victim; its retuning set is the
reference's (a small clean split, a few poisoned samples with the target
label, no augmentation); exact purification is the one model that sees the
poisoned indices; rows, report and validation carry them."""
from __future__ import annotations

import hashlib
import inspect

import pytest
import torch

from benchmark.cell import Cell, ClipCellSpec
from benchmark.cell.stages import retune
from benchmark.errors import ConfigError, UnknownNameError
from benchmark.reporting.report import write_report
from benchmark.storage.store import ArtifactStore
from lightning_modules.retuning import RETUNE, RETUNINGS
from lightning_modules.retuning.exact_purification import ExactPurification
from tests.conftest import fast_spec
from tests.test_clip_cell import tiny_spec

FAST_RETUNING = {"ra": {"split_ratio": 0.1, "epochs": 2}, "exact-purification": {"epochs": 1}}


def _cell(tmp_path, **overrides) -> Cell:
    spec = fast_spec(**{"defenses": ("ft",), "reactivations": (), "retunings": ("ra",),
                        "retuning_params": FAST_RETUNING, **overrides})
    return Cell(spec, ArtifactStore(tmp_path / "store"), data_dir=tmp_path / "data", accelerator="cpu",
                progress=False)


def _digest(artifact) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(artifact.tensors().items()):
        h.update(name.encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def _run_until(cell, kind: str, label: str):
    target = cell.job(kind, label)
    for job in cell.jobs:
        if job is target:
            break
        if job.id in {d.id for d in _closure(target)}:
            cell.execute(job)
    return target


def _closure(job) -> list:
    out = []
    for dep in job.deps.values():
        out += _closure(dep) + [dep]
    return out


def test_ra_defaults_are_the_reference_scripts():
    # SBP fine_tune/ft_poison.py: lr 0.01, SGD momentum 0.9, no weight decay,
    # constant lr, batch 128, split 0.02, 5 poisoned; the README's 5 epochs
    defaults = {k: p.default for k, p in inspect.signature(RETUNINGS.get("ra")).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"target_label": 0, "epochs": 5, "batch_size": 128, "lr": 0.01, "momentum": 0.9,
                        "weight_decay": 0.0, "lr_schedule": "constant", "split_ratio": 0.02, "poison_num": 5}
    assert RETUNINGS.get("ra").access == RETUNE


def test_ra_trains_a_copy_and_never_writes_the_victims_stored_weights(tmp_path):
    cell = _cell(tmp_path)
    job = _run_until(cell, "retune", "ra vs ft")
    victim = cell.store.load("defense", cell.job("defense", "ft").key)
    before, files = _digest(victim), {p: p.read_bytes() for p in victim.path.iterdir() if p.is_file()}
    retuned = cell.execute(job)
    assert _digest(cell.store.load("defense", job.deps["model"].key)) == before
    assert {p: p.read_bytes() for p in victim.path.iterdir() if p.is_file()} == files
    assert retuned.path != victim.path and _digest(retuned) != before
    assert set(retuned.metrics["retuning_set"]) == {"clean", "poisoned"}


def test_the_retuning_set_is_a_small_clean_split_with_a_few_poisoned_samples(tmp_path, monkeypatch):
    cell = _cell(tmp_path, retuning_params={"ra": {"split_ratio": 0.1, "poison_num": 3, "epochs": 1},
                                            "exact-purification": {"epochs": 1}})
    job = _run_until(cell, "retune", "ra vs ft")
    dm, ctx = cell.dm, cell.ctx
    seen = []
    fit = ctx.trainers.fit

    def watching_fit(module, loader, epochs, **kwargs):
        assert module.augment is None  # the reference's test transform: no augmentation
        for x, y, idx in loader:
            seen.append((x.cpu(), y.cpu(), idx.cpu()))
        return fit(module, loader, epochs, **kwargs)

    monkeypatch.setattr(ctx.trainers, "fit", watching_fit)
    cell.execute(job)
    x = torch.cat([s[0] for s in seen])
    y = torch.cat([s[1] for s in seen])
    idx = torch.cat([s[2] for s in seen])
    assert len(idx) == round(0.1 * dm.num_train) and len(set(idx.tolist())) == len(idx)
    clean_images = dm.train_images[idx].float() / 255
    triggered = (x - clean_images).flatten(1).abs().amax(1) > 1e-6
    assert triggered.sum() == 3
    # the poisoned ones: non-target images of the attacker's pool, with the target label
    assert set(idx[triggered].tolist()) <= set(ctx.attacker_pool.tolist())
    assert (dm.train_labels[idx[triggered]] != cell.spec.target_label).all()
    assert (y[triggered] == cell.spec.target_label).all()
    assert torch.equal(y[~triggered], dm.train_labels[idx[~triggered]])
    assert torch.allclose(x[triggered], cell.ctx.trigger(clean_images[triggered]))


def test_exact_purification_alone_sees_the_poisoned_indices_with_their_true_labels(tmp_path, monkeypatch):
    cell = _cell(tmp_path)
    purify = _run_until(cell, "purify", "exact-purification")
    defense = cell.job("defense", "ft")
    ctx = cell.ctx
    seen = {}
    fit = ctx.trainers.fit

    def watching_fit(module, loader, epochs, **kwargs):
        batches = [(x.cpu(), y.cpu(), i.cpu()) for x, y, i in loader]
        seen[type(module).__name__] = batches
        return fit(module, loader, epochs, **kwargs)

    monkeypatch.setattr(ctx.trainers, "fit", watching_fit)
    cell.execute(purify)
    cell.execute(defense)
    ep = seen[ExactPurification.__name__]
    idx = torch.cat([b[2] for b in ep])
    poisoned = set(cell.poison_idx.tolist())
    assert poisoned <= set(idx.tolist())
    x, y = torch.cat([b[0] for b in ep]), torch.cat([b[1] for b in ep])
    clean = cell.dm.train_images[idx].float() / 255
    changed = (x - clean).flatten(1).abs().amax(1) > 1e-6
    assert changed.sum() == len(poisoned)                 # every poisoned sample, triggered
    assert torch.equal(y, cell.dm.train_labels[idx])      # ... with its true label
    # a defense gets the clean subset: clean pixels, never a triggered image
    x_d, _, idx_d = (torch.cat(t) for t in zip(*seen["FineTuning"]))
    assert torch.allclose(x_d, cell.dm.train_images[idx_d].float() / 255)
    assert set(idx_d.tolist()) <= set(cell.clean_idx.tolist())


def test_rows_and_report_carry_o_asr_p_asr_and_the_control(tmp_path):
    cell = _cell(tmp_path)
    rows = cell.run()
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"clean", "backdoored", "ft", "exact-purification"}
    for row in rows:
        assert 0.0 <= row["retune_asr:ra"] <= 1.0 and 0.0 <= row["retune_acc:ra"] <= 1.0
    assert by_model["exact-purification"]["der"] is not None
    paths = write_report(rows, tmp_path / "report")
    assert paths["retuning_asr"].exists()
    summary = paths["summary"].read_text()
    assert "ra P-ASR %" in summary and "exact-purification" in summary


def test_planning_without_retunings_adds_nothing(tmp_path):
    cell = _cell(tmp_path, retunings=(), retuning_params={})
    assert not {j.kind for j in cell.jobs} & {"retune", "purify"}


@pytest.mark.parametrize("overrides,error,message", [
    ({"retunings": ("nope",)}, UnknownNameError, "nope"),
    ({"retunings": ("ra", "ra")}, ConfigError, "listed twice"),
    ({"retuning_params": {"ra": {"epochs": 0}}}, ConfigError, "epochs"),
    ({"retuning_params": {"exact-purification": {"lr": -1}}}, ConfigError, "lr"),
])
def test_bad_retuning_settings_are_one_line_errors(overrides, error, message):
    with pytest.raises(error, match=message):
        fast_spec(**{"retunings": ("ra",), **overrides}).validate()


def test_clip_cells_refuse_weight_space_reactivation():
    with pytest.raises(ConfigError, match="not available for CLIP"):
        tiny_spec(retunings=("ra",)).validate()
    assert ClipCellSpec().retunings == ()


def test_the_retuning_key_follows_its_parameters(tmp_path):
    a = _cell(tmp_path)
    b = _cell(tmp_path, retuning_params={"ra": {"split_ratio": 0.1, "epochs": 3}, "exact-purification": {"epochs": 1}})
    assert a.job("retune", "ra vs ft").key != b.job("retune", "ra vs ft").key
    assert a.job("defense", "ft").key == b.job("defense", "ft").key
    assert retune.label("ra", "ft") == "ra vs ft"


def test_the_leaderboard_headline_is_the_worst_case_over_input_and_weight_space():
    from benchmark.reporting.ranking import leaderboard, reference

    def row(model, asr, react, retuned, guaa=0.1):
        return {"dataset": "d", "arch": "a", "attack": "badnets", "model": model, "seed": 0, "clean_acc": 0.9,
                "asr": asr, "bec": 0.5, "react_asr:wba": react, "guaa_asr:wba": guaa, "retune_asr:ra": retuned}

    rows = [row("clean", 0.01, 0.05, 0.02), row("backdoored", 1.0, 1.0, 1.0),
            row("sleeper", 0.02, 0.20, 0.90),   # input space looks fine, weight space wakes it
            row("remover", 0.02, 0.30, 0.05),   # the reverse
            row("exact-purification", 0.01, None, 0.04)]
    board = leaderboard(rows, "sleeper", ["wba"])
    by_name = {e["defense"]: e for e in board}
    assert set(by_name) == {"sleeper", "remover"}          # references and the EP control are not ranked
    assert by_name["sleeper"]["worst_reactivation_asr"] == 0.90
    assert by_name["sleeper"]["worst_case"] == "badnets/ra (weight)" and by_name["sleeper"]["worst_guaa_asr"] is None
    assert (by_name["sleeper"]["worst_input_asr"], by_name["sleeper"]["worst_weight_asr"]) == (0.20, 0.90)
    assert by_name["remover"]["worst_reactivation_asr"] == 0.30 and by_name["remover"]["worst_case"] == "badnets/wba"
    assert [e["defense"] for e in board] == ["remover", "sleeper"]
    assert by_name["remover"]["coverage"] == "2/2"
    # without weight-space columns the headline is the input-space worst case, as before
    plain = leaderboard([{k: v for k, v in r.items() if not k.startswith("retune")} for r in rows], "x", ["wba"])
    assert {e["defense"]: e["worst_reactivation_asr"] for e in plain} == {"sleeper": 0.20, "remover": 0.30}
    assert reference(rows, ["wba"])["worst_weight_asr"] == 1.0


FAST_QRA = {**FAST_RETUNING, "qra": {"epochs": 2, "clean_num": 32, "poison_num": 32, "hidden": 64}}


def test_qra_defaults_are_the_reference_scripts_and_its_access_is_declared():
    from lightning_modules.retuning.qra import QRA_ACCESS, QueryReactivationAttack

    defaults = {k: p.default for k, p in inspect.signature(QueryReactivationAttack).parameters.items()
                if p.default is not inspect.Parameter.empty}
    # SBP fine_tune/qra.py: eps 16/255, alpha 0.2, 50 epochs, SGD lr 0.1 momentum 0.9, 500 + 500 images
    assert defaults == {"epsilon": 16 / 255, "alpha": 0.2, "epochs": 50, "batch_size": 128, "lr": 0.1,
                        "momentum": 0.9, "clean_num": 500, "poison_num": 500, "hidden": 1024}
    assert QueryReactivationAttack.access == QRA_ACCESS and "white-box" in QRA_ACCESS


def test_qra_leaves_the_stored_victim_and_its_delta_stays_within_epsilon(tmp_path):
    from lightning_modules.retuning.qra import PerturbationGenerator

    cell = _cell(tmp_path, qra=True, retuning_params=FAST_QRA)
    job = _run_until(cell, "qra", "qra vs ft")
    victim = cell.store.load("defense", job.deps["model"].key)
    before = _digest(victim)
    artifact = cell.execute(job)
    assert _digest(cell.store.load("defense", job.deps["model"].key)) == before
    generator = PerturbationGenerator(cell.dm.image_shape, hidden=64)
    generator.load_state_dict({k[len("generator."):]: v for k, v in artifact.tensors().items()})
    x = torch.rand(64, *cell.dm.image_shape)
    with torch.no_grad():
        moved = (generator(x) - x).abs().amax()
    assert moved <= 16 / 255 + 1e-6
    for key in ("asr:model", "fooling_rate:model", "asr:clean_model", "fooling_rate:clean_model"):
        assert 0.0 <= artifact.metrics[key] <= 1.0
    rows = {r["model"]: r for r in cell.run()}
    assert rows["ft"]["qra_asr"] == artifact.metrics["asr:model"]
    assert "qra_asr" in rows["exact-purification"] and "qra_asr" not in rows["clean"]


def test_qras_fooling_rate_counts_the_cells_target_not_class_zero():
    from lightning_modules.retuning.qra import GeneratorEvaluation, PerturbationGenerator
    from benchmark.training import TrainerFactory

    class AlwaysOne(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.ones(len(x), dtype=torch.long), 3).float()

    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 4, 4), torch.full((8,), 2), torch.arange(8))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainers = TrainerFactory("cpu", progress=False)
    for target, expected in ((1, 1.0), (0, 0.0)):
        stage = GeneratorEvaluation(AlwaysOne(), 3, target, PerturbationGenerator((1, 4, 4), hidden=8))
        assert trainers.evaluate(stage, poisoned_loader=loader)["test/asr"] == expected


def test_qra_needs_the_retuning_attack():
    with pytest.raises(ConfigError, match="add 'ra' to retunings"):
        fast_spec(qra=True).validate()


@pytest.mark.parametrize("name", RETUNINGS.names())
def test_every_weight_space_method_keeps_the_retuning_contract(name, tmp_path):
    from benchmark.extension.retuning_contract import check_retuning_contract

    metrics = check_retuning_contract(name, {"epochs": 1, "split_ratio": 0.1}, tmp_path)
    assert 0.0 <= metrics["test/asr"] <= 1.0


def test_the_retuning_contract_catches_a_method_that_trains_the_victim_in_place(tmp_path, monkeypatch):
    from benchmark.extension.retuning_contract import check_retuning_contract
    from benchmark.cell.stages import retune as retune_stage

    def write_back(ctx, inputs):  # a runner that saves over the victim's own artifact
        metrics, weights = run(ctx, "ra", inputs)
        (inputs["model"].path / "extra.json").write_text("{}")
        return metrics, weights

    run = retune_stage.run_retune
    monkeypatch.setattr(retune_stage, "run_retune", lambda ctx, method, inputs: write_back(ctx, inputs))
    with pytest.raises(AssertionError, match="wrote the victim's stored weights"):
        check_retuning_contract("ra", {"epochs": 1, "split_ratio": 0.1}, tmp_path)


def test_qra_never_moves_the_models_it_differentiates_through():
    """QRA's access: it back-propagates through f_D (and uses f_C and the RA
    model) but trains only its generator: every weight and BatchNorm
    statistic of the three models stays as it was."""
    import copy

    from benchmark.models import build_model
    from benchmark.training import TrainerFactory
    from datamodules.tensor_dataset import IndexedImages, keep_batch
    from lightning_modules.retuning.qra import QueryReactivationAttack

    torch.manual_seed(0)
    models = [build_model("small_cnn", 4, 1, 16, (0.5,), (0.25,)) for _ in range(3)]
    before = [copy.deepcopy(m.state_dict()) for m in models]
    module = QueryReactivationAttack(*models, image_shape=(1, 16, 16), epochs=2, batch_size=8, hidden=16)
    generator_before = copy.deepcopy(module.generator.state_dict())
    data = IndexedImages(torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8), torch.arange(16) % 4)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, collate_fn=keep_batch)
    TrainerFactory("cpu", progress=False).fit(module, loader, epochs=2)
    for model, state in zip(models, before):
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert any(not torch.equal(v, module.generator.state_dict()[k]) for k, v in generator_before.items())


def test_exact_purification_runs_at_fts_reference_defaults():
    # no public reference implements EP: it is FT (BackdoorBench config/defense/ft)
    # with the oracle's data, so its defaults are FT's and must stay so
    from lightning_modules.defenses.ft import FineTuning

    def defaults(cls):
        return {k: p.default for k, p in inspect.signature(cls).parameters.items()
                if p.default is not inspect.Parameter.empty}

    assert defaults(ExactPurification) == defaults(FineTuning)
    assert defaults(ExactPurification)["epochs"] == 100 and defaults(ExactPurification)["lr"] == 0.01
