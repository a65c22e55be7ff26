import copy

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.models import build_model
from benchmark.training import TrainerFactory
from datamodules import build_datamodule
from lightning_modules.reactivation import REACTIVATIONS
from lightning_modules.reactivation.norms import project
from lightning_modules.reactivation.wba import reactivation_loss


def _setup(norm="linf", epsilon=0.05, name="wba"):
    dm = build_datamodule("synthetic", num_train=96, num_test=32)
    model = build_model("small_cnn", dm.num_classes, 1, 16, dm.mean, dm.std)
    # Give BatchNorm non-trivial running statistics so a change would show.
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 1, 16, 16))
    model.eval()
    module = REACTIVATIONS.get(name)(model, dm.image_shape, 0, epsilon=epsilon, norm=norm,
                                     epochs=2, inner_steps=3, batch_size=16, num_samples=48)
    loader = dm.loader(dm.attacker_set(torch.arange(48)), shuffle=True, batch_size=16, drop_last=True)
    return module, model, loader


@pytest.mark.parametrize("norm,epsilon", [("linf", 0.05), ("l2", 0.5), ("l1", 3.0)])
def test_model_frozen_bn_still_and_delta_in_ball(norm, epsilon):
    module, model, loader = _setup(norm, epsilon)
    before = copy.deepcopy(model.state_dict())
    delta0 = module.delta.detach().clone()
    TrainerFactory("cpu", progress=False).fit(module, loader, epochs=2)
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} changed"
    assert not model.training
    assert not torch.equal(delta0, module.delta.detach()), "delta did not move"
    d = module.delta.detach()
    size = {"linf": d.abs().max(), "l2": d.norm(p=2), "l1": d.norm(p=1)}[norm]
    assert size <= epsilon * (1 + 1e-5)
    assert all(not p.requires_grad for p in model.parameters())


def test_projection_linf_and_l2():
    d = torch.tensor([[0.3, -0.2, 0.01]])
    assert torch.allclose(project(d, "linf", 0.05), torch.tensor([[0.05, -0.05, 0.01]]))
    p = project(d, "l2", 0.1)
    assert p.norm() == pytest.approx(0.1, rel=1e-5) and torch.allclose(p / p.norm(), d / d.norm())


def test_loss_penalises_the_most_probable_non_target_class():
    # target 0. Sample 1: top-1 is class 2 -> k* = 2. Sample 2: top-1 is the
    # target, top-2 is class 1 -> k* = 1.
    logits = torch.tensor([[0.0, 1.0, 3.0], [4.0, 2.0, 0.0]], requires_grad=True)
    loss = reactivation_loss(logits, 0)
    p = logits.detach().softmax(1)
    ce = -torch.log(p[:, 0]).mean()
    other = (-torch.log(1.0001 - p[0, 2]) - torch.log(1.0001 - p[1, 1])) / 2
    assert loss.item() == pytest.approx((ce + other).item(), rel=1e-6)


@pytest.mark.parametrize("kwargs,match", [({"epsilon": 0.0}, "epsilon"), ({"epsilon": -1.0}, "epsilon"),
                                          ({"norm": "l3"}, "norm")])
def test_bad_budget_rejected(kwargs, match):
    model = build_model("small_cnn", 4, 1, 16, (0.5,), (0.5,))
    with pytest.raises(ConfigError, match=match):
        REACTIVATIONS.get("wba")(model, (1, 16, 16), 0, **kwargs)
