"""Reference behaviours pinned so they cannot drift back (FIDELITY.md): each
test names the reference it follows."""
import inspect

import pytest
import torch
from torch.utils.data import DataLoader

from benchmark.models import build_model
from benchmark.training import TrainerFactory
from datamodules.tensor_dataset import IndexedImages, keep_batch
from benchmark.cell.stages.training import train
from lightning_modules.defenses import DEFENSES
from lightning_modules.reactivation import REACTIVATIONS


def _defaults(cls) -> dict:
    return {k: p.default for k, p in inspect.signature(cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_nad_defaults_are_backdoorbench_runs():
    # SCLBD/BackdoorBench defense/nad.py + config/defense/nad/cifar10.yaml:
    # te_epochs 10 for teacher and student, constant lr 0.01, wd 5e-4 (args.wd),
    # betas 500 (layer3) and 1000 (layer4), p = 2, batch 256.
    d = _defaults(DEFENSES.get("nad"))
    assert (d["epochs"], d["teacher_epochs"], d["lr"], d["weight_decay"], d["momentum"]) == (10, 10, 0.01, 5e-4, 0.9)
    assert tuple(d["betas"]) == (500.0, 1000.0) and d["power"] == 2.0 and d["batch_size"] == 256
    assert d["lr_schedule"] == "constant"


def test_nad_attention_layers_per_architecture():
    pre = build_model("preact_resnet18", 10, 3, 32, (0.5,) * 3, (0.5,) * 3)
    assert pre.attention_layers == ["backbone.layer3", "backbone.layer4"]
    small = build_model("small_cnn", 10, 1, 28, (0.5,), (0.5,))
    assert small.attention_layers == ["backbone.block2", "backbone.block3"]


def test_nad_student_and_teacher_learning_rate_stays_constant():
    model = build_model("small_cnn", 10, 1, 28, (0.5,), (0.5,))
    nad = DEFENSES.get("nad")(model, 10)
    opt = nad.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)  # no scheduler attached
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[0]["weight_decay"] == 5e-4


def test_preact_resnet18_has_no_final_batchnorm():
    # BackdoorBench models/preact_resnet.py: conv1 -> layer1..4 -> avgpool -> linear.
    model = build_model("preact_resnet18", 10, 3, 32, (0.5,) * 3, (0.5,) * 3).eval()
    top = [name for name, _ in model.backbone.named_children()]
    assert top == ["conv1", "layer1", "layer2", "layer3", "layer4", "avgpool", "linear"]
    pooled = {}
    model.backbone.linear.register_forward_hook(lambda m, i, o: pooled.setdefault("x", i[0]))
    model(torch.rand(4, 3, 32, 32))
    assert (pooled["x"] < 0).any()  # no ReLU before pooling: features can be negative


def test_tbra_batch_is_the_authors_500():
    # JulieCarlon/Backdoor-Reactivation-Attack reattack/transfer_attack.py: batch 500.
    d = _defaults(REACTIVATIONS.get("tbra"))
    assert d["batch_size"] == 500 and d["num_samples"] == 5000 and d["epochs"] == 100 and d["lr"] == 0.05


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_search_and_evaluation_run_in_fp32_whatever_the_training_precision(precision, monkeypatch):
    from benchmark.cell.stages import reactivation
    from benchmark.training import TrainerFactory
    from lightning_modules.base import BackdoorStage

    factory = TrainerFactory("cpu", progress=False, precision=precision)
    seen = []
    monkeypatch.setattr("lightning.Trainer.test", lambda self, *a, **k: seen.append(self.precision_plugin))
    factory.evaluate(BackdoorStage(build_model("small_cnn", 10, 1, 28, (0.5,), (0.5,)), 10), [])
    assert type(seen[0]).__name__ == "Precision"  # Lightning's plain fp32 plugin
    assert reactivation.SEARCH_PRECISION == "32-true"


def test_clean_model_shares_initialisation_but_not_data_order(make_cell, monkeypatch):
    # Two separate BackdoorBench runs under seed 0: same initial weights, own data order.
    cell = make_cell(defenses=())
    seeds = []
    original = cell.dm.loader

    def spy(dataset, shuffle=False, **kwargs):
        if shuffle:
            seeds.append(kwargs.get("seed"))
        return original(dataset, shuffle=shuffle, **kwargs)

    monkeypatch.setattr(cell.dm, "loader", spy)
    inits = []
    monkeypatch.setattr("benchmark.training.TrainerFactory.fit",
                        lambda self, module, loader, epochs, precision=None: inits.append(
                            {k: v.clone() for k, v in module.model.state_dict().items()}))
    train(cell.ctx, cell.model_spec(), None)
    train(cell.ctx, cell.model_spec(), cell.trigger)
    assert seeds[0] != seeds[1]
    assert all(torch.equal(inits[0][k], inits[1][k]) for k in inits[0])
    assert cell.job("train", "clean model").config["data_order"] == "own"
    shared = make_cell(defenses=(), clean_data_order="shared")
    assert shared.job("train", "clean model").key != cell.job("train", "clean model").key


def test_reactivation_search_is_asked_in_fp32(make_cell, monkeypatch):
    cell = make_cell(defenses=("ft",))
    for job in cell.jobs:
        if job.kind in ("train", "attack", "defense"):
            cell.execute(job)
    asked = []
    from benchmark.training import TrainerFactory
    fit = TrainerFactory.fit

    def spy(self, module, loader, epochs, precision=None):
        asked.append(precision)
        return fit(self, module, loader, epochs, precision)

    monkeypatch.setattr(TrainerFactory, "fit", spy)
    cell.execute(cell.job("reactivation", "wba vs ft"))
    assert asked == ["32-true"]


def test_bec_ranks_channels_on_more_pairs_than_it_compares(make_cell, monkeypatch):
    # The authors rank on ~2,200 non-target test pairs and compare 500 of them
    # (BEC/analy_backdoor_acti.py); the cell defaults say so.
    from benchmark import cell as cell_module
    from benchmark.cell.stages import bec as bec_stage

    assert (cell_module.CellSpec().bec_rank_samples, cell_module.CellSpec().bec_samples) == (2200, 500)
    cell = make_cell(defenses=(), bec_samples=32, bec_rank_samples=80)
    for job in cell.jobs:
        if job.kind in ("train", "attack"):
            cell.execute(job)
    sizes = {}
    rank, select = bec_stage.rank_backdoor_channels, bec_stage.selected_features
    monkeypatch.setattr(bec_stage, "rank_backdoor_channels",
                        lambda m, layers, c, p, r: sizes.setdefault("rank", len(c)) and rank(m, layers, c, p, r))
    monkeypatch.setattr(bec_stage, "selected_features",
                        lambda m, ch, x: sizes.setdefault("compare", len(x)) and select(m, ch, x))
    cell.execute(cell.job("bec", "S(f_A, clean)"))
    assert sizes == {"rank": 80, "compare": 32}


# ---- precision: the defenses whose reference loops never autocast ----------------------------
FP32_REFERENCE = {
    # BackdoorBench defense/ft-sam.py (`_train_sam`, SAM.step: no autocast, the yaml's amp unused)
    "ft-sam": {"epochs": 1, "batch_size": 8},
    # BackdoorBenchER defense/fst.py (fp32 loop)
    "fst": {"epochs": 1, "batch_size": 8},
    # backdoor-toolbox other_defenses_tool_box/SEAM.py (fp32 loops)
    "seam": {"epochs": 1, "batch_size": 8, "forget_epochs": 0},
}


def _training_head_dtypes(name: str, **params) -> set:
    """Dtypes of the head's output in the training passes of a one-epoch fit
    under the trainer's bf16 autocast (on the CPU here, as on a GPU)."""
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, 1, 16, (0.5,), (0.25,))
    module = DEFENSES.get(name)(model, 4, **FP32_REFERENCE[name], **params)
    return head_dtypes_under_bf16(module, model, epochs=1)


def head_dtypes_under_bf16(module, model, epochs: int) -> set:
    """Prepare `module` on 16 random 16x16 images, fit it `epochs` epochs
    under the trainer's bf16 autocast, and return the dtypes of `model`'s
    head output in every grad-enabled pass."""
    gen = torch.Generator().manual_seed(0)
    dataset = IndexedImages(torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8, generator=gen),
                            torch.arange(16) % 4)
    module.prepare(dataset, fit=None)
    seen = set()
    head = model.get_submodule(model.head_layer)
    head.register_forward_hook(lambda m, i, o: seen.add(o.dtype) if torch.is_grad_enabled() else None)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=keep_batch,
                        generator=torch.Generator().manual_seed(0))
    TrainerFactory("cpu", progress=False, precision="bf16-mixed").fit(module, loader, epochs=epochs)
    return seen


@pytest.mark.parametrize("name", sorted(FP32_REFERENCE))
def test_fp32_reference_defenses_train_in_full_precision_by_default(name):
    assert _defaults(DEFENSES.get(name))["mixed_precision"] is False
    assert _training_head_dtypes(name) == {torch.float32}
    # The option keeps the trainer's autocast.
    assert _training_head_dtypes(name, mixed_precision=True) == {torch.bfloat16}
