"""FT-SAM: the adaptive SAM step, the frozen BN statistics of the perturbed
pass, the label-smoothed loss and the reference's cyclic schedule."""
import copy
import inspect
import math

import pytest
import torch
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from benchmark.models import build_model
from lightning_modules.defenses.ft_sam import (FineTuningSAM, decompose_gradient, reference_cosine_lr,
                                               sam_perturbation, sam_step, smooth_kl_loss)


def small_model():
    return build_model("small_cnn", 4, 1, 16, [0.5], [0.25])


def test_defaults_are_backdoorbench_cifar10():
    defaults = {k: p.default for k, p in inspect.signature(FineTuningSAM).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults == {"target_label": 0, "augment": None, "epochs": 100, "batch_size": 256, "lr": 0.01,
                        "momentum": 0.9, "weight_decay": 5e-4, "rho": 2.0, "adaptive": True,
                        "label_smoothing": 0.1, "alpha": 0.0, "lr_schedule": "cosine-t100",
                        "mixed_precision": False}


@pytest.mark.parametrize("bad", [{"rho": -1.0}, {"label_smoothing": 1.0}, {"lr_schedule": "step"},
                                 {"lr": 0.0}, {"alpha": -0.5}, {"epochs": -1}])
def test_bad_values_raise_config_error(bad):
    name = next(iter(bad))
    with pytest.raises(ConfigError, match=rf"ft-sam: {name}="):
        validate_params("ft-sam", FineTuningSAM, bad)


def test_adaptive_perturbation_matches_hand_computation():
    # Linear(2 -> 1), w = [1, -2], b = 3; loss = output at x = [0.5, 0.25]
    # gives g_w = x = [0.5, 0.25], g_b = 1. |theta| * g = [0.5, 0.5, 3],
    # norm sqrt(9.5) = 3.0822070; e = 2 * theta^2 * g / norm.
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0]]))
        layer.bias.copy_(torch.tensor([3.0]))
    layer(torch.tensor([[0.5, 0.25]])).sum().backward()
    e_w, e_b = sam_perturbation([layer.weight, layer.bias], rho=2.0, adaptive=True)
    assert e_w.tolist()[0] == pytest.approx([0.3244428, 0.6488857], rel=1e-6)
    assert e_b.item() == pytest.approx(5.8399708, rel=1e-6)
    # Plain SAM: norm of g = sqrt(0.25 + 0.0625 + 1) = 1.1456439, e = 2 * g / norm.
    e_w, e_b = sam_perturbation([layer.weight, layer.bias], rho=2.0, adaptive=False)
    assert e_w.tolist()[0] == pytest.approx([0.8728716, 0.4364358], rel=1e-6)
    assert e_b.item() == pytest.approx(1.7457432, rel=1e-6)


class StepSpy(torch.optim.SGD):
    """Records the parameters and gradients the base step is taken with."""

    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        self.seen = ([p.detach().clone() for p in params], [p.grad.detach().clone() for p in params])
        return super().step(closure)


def test_sam_step_uses_perturbed_gradient_from_theta_with_frozen_bn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).train()
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    theta = [p.detach().clone() for p in model.parameters()]

    # Independent computation: g at theta (one BN update), e by the
    # adaptive formula, g' at theta + e in train mode.
    ref = copy.deepcopy(model)
    loss = smooth_kl_loss(ref(x), y, 0.1)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    expected_stats = (ref[1].running_mean.clone(), ref[1].running_var.clone())
    norm = torch.linalg.vector_norm(torch.stack([(t.abs() * g).norm() for t, g in zip(theta, grads)]))
    with torch.no_grad():
        for p, t, g in zip(ref.parameters(), theta, grads):
            p.copy_(t + 2.0 * t.square() * g / (norm + 1e-12))
    expected_grads = torch.autograd.grad(smooth_kl_loss(ref(x), y, 0.1), list(ref.parameters()))

    opt = StepSpy(model.parameters(), lr=0.1)
    sam_step(model, lambda: smooth_kl_loss(model(x), y, 0.1), opt, rho=2.0, adaptive=True)
    params_at_step, grads_at_step = opt.seen
    for p, t in zip(params_at_step, theta):
        assert torch.equal(p, t), "the base step must start from theta, not theta + e"
    for g, expected in zip(grads_at_step, expected_grads):
        torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-7)
    # Running statistics moved once (first pass) and not in the perturbed pass.
    torch.testing.assert_close(model[1].running_mean, expected_stats[0])
    torch.testing.assert_close(model[1].running_var, expected_stats[1])
    assert int(model[1].num_batches_tracked) == 1
    assert model[1].track_running_stats


def test_gradient_decomposition_hand_cases():
    p = torch.zeros(2, requires_grad=True)
    # g' parallel to g: the orthogonal part is 0, nothing changes.
    p.grad = torch.tensor([2.0, 0.0])
    decompose_gradient([p], [torch.tensor([1.0, 0.0])], alpha=1.0)
    assert p.grad.tolist() == pytest.approx([2.0, 0.0])
    # g' orthogonal to g: cos = 0, g' - alpha * g.
    p.grad = torch.tensor([0.0, 3.0])
    decompose_gradient([p], [torch.tensor([1.0, 0.0])], alpha=0.5)
    assert p.grad.tolist() == pytest.approx([-0.5, 3.0])


def test_label_smoothing_loss_hand_case():
    # logits [2, 0, 0], label 0, s = 0.1, C = 3: t = [0.9, 0.05, 0.05],
    # log p = logits - log(e^2 + 2); KL = sum t * (log t - log p).
    lse = math.log(math.exp(2) + 2)
    log_p = [2 - lse, -lse, -lse]
    t = [0.9, 0.05, 0.05]
    expected = sum(ti * (math.log(ti) - lp) for ti, lp in zip(t, log_p))
    got = smooth_kl_loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]), 0.1)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.045147, rel=1e-5)


def test_reference_schedule_cycles_every_200_batches():
    module = FineTuningSAM(small_model(), 4)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(401):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    for k, lr in enumerate(lrs):
        assert lr == pytest.approx(reference_cosine_lr(0.01, k), abs=1e-10)
    assert lrs[0] == pytest.approx(0.01) and lrs[50] == pytest.approx(0.005)
    assert lrs[100] == pytest.approx(0.0, abs=1e-10) and lrs[200] == pytest.approx(0.01)
    assert lrs[400] == pytest.approx(0.01)


def test_plain_cosine_option_spans_the_run(monkeypatch):
    module = FineTuningSAM(small_model(), 4, lr_schedule="cosine")
    fake_trainer = type("FakeTrainer", (), {"estimated_stepping_batches": 40})
    monkeypatch.setattr(type(module), "trainer", property(lambda self: fake_trainer))
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert sched.T_max == 40
    assert FineTuningSAM(small_model(), 4, lr_schedule="constant").configure_optimizers().__class__ is torch.optim.SGD


def test_ft_sam_in_a_cell_steps_schedule_per_batch(make_cell):
    cell = make_cell(defenses=("ft-sam",), defense_params={"ft-sam": {"epochs": 2, "batch_size": 8}})
    attack = cell.execute(cell.job("attack", "badnets"))
    module = cell.train_defense("ft-sam", attack)
    batches = 2 * math.ceil(len(cell.clean_idx) / 8)
    sched = module.trainer.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == batches
    assert sched.get_last_lr()[0] == pytest.approx(reference_cosine_lr(0.01, batches))
    before = attack.tensors()
    after = module.export_weights()
    assert after.keys() == before.keys()
    assert not torch.equal(after["backbone.conv1.weight"], before["backbone.conv1.weight"])
    metrics = cell.evaluate(module.model)
    assert 0.0 <= metrics["test/clean_acc"] <= 1.0
