"""FST: head re-initialisation, the <W, W0> penalty, and the norm projection
after every optimiser step."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from benchmark.models import build_model
from benchmark.training import TrainerFactory
from datamodules.tensor_dataset import IndexedImages, keep_batch
from lightning_modules.defenses.fst import OFFICIAL_PARAMS, FeatureShiftTuning, head_inner_product


def small_model():
    torch.manual_seed(0)
    return build_model("small_cnn", 4, 1, 16, [0.5], [0.25])


def small_set(n=40):
    g = torch.Generator().manual_seed(1)
    return IndexedImages(torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=g), torch.arange(n) % 4)


class TinyHead(nn.Module):
    head_layer = "fc"

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x)


def test_defaults_are_backdoorbench_er_cifar10():
    defaults = {k: p.default for k, p in inspect.signature(FeatureShiftTuning).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"target_label": 0, "augment": None, "epochs": 100, "batch_size": 256, "lr": 0.01,
                        "momentum": 0.9, "weight_decay": 5e-4, "alpha": 0.2, "reinit_bias": False,
                        "rescale_at_init": True, "train_augment": False, "mixed_precision": False}
    assert OFFICIAL_PARAMS["epochs"] == 10 and OFFICIAL_PARAMS["weight_decay"] == 0.0
    assert OFFICIAL_PARAMS["reinit_bias"] and not OFFICIAL_PARAMS["rescale_at_init"]


def test_bad_values_raise_config_error():
    with pytest.raises(ConfigError, match="fst: alpha=-1"):
        validate_params("fst", FeatureShiftTuning, {"alpha": -1.0})

    class Headless(nn.Module):
        head_layer = None

    with pytest.raises(ConfigError, match="fst: Headless names no Linear"):
        FeatureShiftTuning(Headless(), 4)


def test_no_augmentation_by_default():
    augment = lambda x: x  # noqa: E731
    assert FeatureShiftTuning(small_model(), 4, augment=augment).augment is None
    assert FeatureShiftTuning(small_model(), 4, augment=augment, train_augment=True).augment is augment


def test_inner_product_term_hand_case():
    # <W, W0> = 1*0.5 + 2*(-1) + 3*2 + 4*0 = 4.5
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w0 = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    assert head_inner_product(w, w0).item() == pytest.approx(4.5)

    model = TinyHead()
    with torch.no_grad():
        model.fc.weight.copy_(w0)
    module = FeatureShiftTuning(model, 2, alpha=0.2)
    module.prepare(small_set(), fit=None)
    with torch.no_grad():
        model.fc.weight.copy_(w)
    x, y = torch.tensor([[1.0, -1.0], [0.5, 2.0]]), torch.tensor([0, 1])
    expected = F.cross_entropy(model(x), y) + 0.2 * 4.5
    assert module.training_loss(x, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_head_is_redrawn_and_bias_kept_or_redrawn():
    model = small_model()
    head = model.get_submodule(model.head_layer)
    w0, b0 = head.weight.detach().clone(), head.bias.detach().clone()
    FeatureShiftTuning(model, 4, rescale_at_init=False).prepare(small_set(), fit=None)
    bound = 1 / math.sqrt(head.weight.shape[1])
    assert not torch.equal(head.weight, w0)
    assert head.weight.abs().max() <= bound and torch.equal(head.bias, b0)

    model = small_model()
    head = model.get_submodule(model.head_layer)
    module = FeatureShiftTuning(model, 4, **OFFICIAL_PARAMS)
    module.prepare(small_set(), fit=None)
    assert not torch.equal(head.bias, b0) and head.bias.abs().max() <= bound
    assert head.weight.norm().item() != pytest.approx(w0.norm().item(), rel=1e-3)  # no rescale before step 1


class NormRecorder(FeatureShiftTuning):
    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.norms.append(self.head.weight.norm().item())


@pytest.mark.parametrize("rescale_at_init", [True, False])
def test_head_norm_equals_original_after_every_step(rescale_at_init):
    model = small_model()
    w0 = model.get_submodule(model.head_layer).weight.detach().clone()
    module = NormRecorder(model, 4, epochs=2, batch_size=8, rescale_at_init=rescale_at_init)
    module.norms = []
    dataset = small_set()
    module.prepare(dataset, fit=None)
    head = module.head
    if rescale_at_init:
        assert head.weight.norm().item() == pytest.approx(w0.norm().item(), rel=1e-6)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=keep_batch,
                        generator=torch.Generator().manual_seed(0))
    TrainerFactory("cpu", progress=False).fit(module, loader, epochs=2)
    assert len(module.norms) == 10
    assert module.norms == pytest.approx([w0.norm().item()] * 10, rel=1e-6)
    # The head moved away from W0 (the penalty pushes <W, W0> down).
    cos = F.cosine_similarity(head.weight.flatten(), w0.flatten(), dim=0)
    assert cos < 0.5


def test_fst_in_a_cell(make_cell):
    cell = make_cell(defenses=("fst",))
    attack = cell.execute(cell.job("attack", "badnets"))
    module = cell.train_defense("fst", attack)
    w0 = attack.tensors()["backbone.head.2.weight"]
    weights = module.export_weights()
    assert weights.keys() == attack.tensors().keys()
    assert not torch.allclose(weights["backbone.head.2.weight"], w0)
    assert weights["backbone.head.2.weight"].norm().item() == pytest.approx(w0.norm().item(), rel=1e-5)
    assert module.report["head_layer"] == "backbone.head.2"
    assert module.trainer.lr_scheduler_configs[0].interval == "epoch"
