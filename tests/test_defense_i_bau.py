"""i-BAU: the runner path, the implicit hypergradient on a problem with a
closed form, the inner maximisation, the perturbation's units and the
reference defaults."""
import inspect

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
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.i_bau import ImplicitBackdoorAdversarialUnlearning as IBAU
from lightning_modules.defenses.i_bau import implicit_hypergradient


def bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def small_model(seed=0):
    torch.manual_seed(seed)
    return build_model("small_cnn", 4, 1, 16, (0.5,), (0.25,))


def small_dataset(n=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return IndexedImages(torch.randint(0, 256, (n, 1, 16, 16), generator=gen, dtype=torch.uint8),
                         torch.randint(0, 4, (n,), generator=gen))


def test_registered_with_reference_defaults():
    assert DEFENSES.get("i-bau") is IBAU
    defaults = {k: p.default for k, p in inspect.signature(IBAU).parameters.items()
                if p.default is not inspect.Parameter.empty}
    # BackdoorBench config/defense/i-bau/cifar10.yaml + the constants of defense/i-bau.py
    assert defaults == {"target_label": 0, "augment": None, "epochs": 5, "fixed_point_steps": 5, "batch_size": 256,
                        "lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 0.0, "inner_lr": 10.0,
                        "fixed_point_lr": 0.1, "perturbation_reg": 0.001, "perturbed_fraction": 0.01,
                        "perturbation_space": "normalized", "fixed_point_tol": 1e-10, "mixed_precision": False,
                        "amsgrad": True}
    assert IBAU.model_train_mode is False
    config = IBAU(small_model(), 4).config()
    assert "momentum" not in config and config["epochs"] == 5


def test_optimizer_is_backdoorbenchs_amsgrad_adam():
    # BackdoorBench utils/aggregate_block/train_settings_generate.py builds
    # Adam(amsgrad=True) for `client_optimizer: adam`; the original I-BAU plain Adam.
    opt = IBAU(small_model(), 4).configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["amsgrad"] is True and group["betas"] == (0.9, 0.999) and group["lr"] == 1e-4
    assert IBAU(small_model(), 4, amsgrad=False).configure_optimizers().param_groups[0]["amsgrad"] is False


@pytest.mark.parametrize("params,match", [
    ({"epochs": -1}, "epochs"), ({"fixed_point_steps": -2}, "fixed_point_steps"), ({"lr": 0.0}, "lr"),
    ({"inner_lr": -1.0}, "inner_lr"), ({"perturbed_fraction": 1.5}, "perturbed_fraction"),
    ({"perturbation_space": "lab"}, "perturbation_space"), ({"betas": (0.9, 1.0)}, "betas"),
])
def test_bad_values_raise_config_error(params, match):
    with pytest.raises(ConfigError, match=f"i-bau: {match}="):
        validate_params("i-bau", IBAU, params)


def test_short_run_through_the_runner_keeps_batchnorm_statistics(make_cell):
    cell = make_cell(defenses=("i-bau",))
    attack = cell.execute(cell.job("attack", "badnets"))
    before = cell.load_model(attack)
    module = cell.train_defense("i-bau", attack)
    after = module.model.state_dict()
    for key, value in bn_buffers(before).items():
        assert torch.equal(after[key], value), f"{key} moved"
    assert any(not torch.equal(after[k], v) for k, v in before.state_dict().items()), "nothing was trained"
    assert len(module.report["delta_l2"]) == 1 and module.report["delta_l2"][0] > 0


def test_hypergradient_on_quadratic_inner_problem_matches_closed_form():
    # Inner: L_in = 1/2 d'Ad - d'B theta, solution d* = A^-1 B theta; the fixed-point
    # map is one gradient step d - a (A d - B theta). Outer: 1/2 |d - c|^2 + w'theta.
    # Exact hypergradient at d*: w + B'A^-1 (d* - c); after K iterations from v = 0:
    # w + a B' sum_{k<K} (I - aA)^k (d - c).
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    a_mat = m @ m.T + 4 * torch.eye(4, dtype=torch.float64)
    b_mat = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    c, w = torch.randn(4, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen, dtype=torch.float64)
    theta = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    step = 0.9 / float(torch.linalg.eigvalsh(a_mat).max())

    def outer(d):
        return 0.5 * (d - c).pow(2).sum() + w @ theta

    def fixed_point_map(d):
        inner = 0.5 * d @ a_mat @ d - d @ (b_mat @ theta)
        grad, = torch.autograd.grad(inner, d, create_graph=True)
        return d - step * grad

    d_star = torch.linalg.solve(a_mat, b_mat @ theta.detach())
    exact = w + b_mat.T @ torch.linalg.solve(a_mat, d_star - c)
    (grad,), _ = implicit_hypergradient(outer, fixed_point_map, d_star, [theta], steps=2000)
    assert torch.allclose(grad, exact, atol=1e-8)

    d = torch.randn(4, generator=gen, dtype=torch.float64)  # off the solution: the truncated series
    contraction = torch.eye(4, dtype=torch.float64) - step * a_mat
    for steps in (0, 1, 3):
        series = sum((torch.linalg.matrix_power(contraction, k) @ (d - c) for k in range(steps)),
                     torch.zeros(4, dtype=torch.float64))
        (grad,), loss = implicit_hypergradient(outer, fixed_point_map, d, [theta], steps=steps)
        assert torch.allclose(grad, w + step * b_mat.T @ series, atol=1e-10)
        assert loss == pytest.approx(float(outer(d)))
    # A tolerance larger than any update stops after the first iteration (v = dL/dd).
    (grad,), _ = implicit_hypergradient(outer, fixed_point_map, d, [theta], steps=50, tol=1e6)
    assert torch.allclose(grad, w + step * b_mat.T @ (d - c), atol=1e-10)


def test_inner_perturbation_raises_the_loss_on_the_models_own_predictions():
    model, data = small_model(), small_dataset()
    with torch.no_grad():  # confident logits, so that one pass moves the loss well above rounding
        model.backbone.head[2].weight.mul_(30)
    module = IBAU(model, 4, batch_size=16).eval()
    delta = module.universal_perturbation(data)
    assert delta.shape == (1, 1, 16, 16) and delta.abs().max() > 0
    x, _, _ = data.__getitems__(list(range(len(data))))
    with torch.no_grad():
        own = model(x).argmax(1)
        loss = {sign: float(F.cross_entropy(model(x + sign * module.pixel_offset(delta)), own))
                for sign in (-1, 0, 1)}
    # Measured: 0.72 clean, 0.78 with +delta, 0.67 with -delta: delta is an ascent direction.
    assert loss[1] > loss[0] + 0.03 and loss[-1] < loss[0]
    # The fixed-point batch is the first batch of the pass, with the true labels.
    x0, y0 = module.fixed_point_batch
    assert len(x0) == 16 and set(y0.tolist()) <= set(data.labels.tolist())


def test_perturbation_is_in_normalised_units_unless_pixel():
    delta = torch.full((1, 1, 16, 16), 0.4)
    assert torch.allclose(IBAU(small_model(), 4).pixel_offset(delta), delta * 0.25)  # std of the model
    assert torch.equal(IBAU(small_model(), 4, perturbation_space="pixel").pixel_offset(delta), delta)


def test_fixed_point_map_is_a_descent_step_on_the_regularised_negative_loss():
    # Phi(d) = d - 0.1 * grad_d [-CE(f(x0 + d * std), y0) + 0.001 |d|^2]: the step
    # (d - Phi(d)) / 0.1 must match central differences of that objective (float64)
    # along random directions.
    torch.manual_seed(0)
    model = build_model("small_cnn", 4, 1, 8, (0.5,), (0.25,)).double().eval()
    module = IBAU(model, 4)
    x0, y0 = torch.rand(6, 1, 8, 8, dtype=torch.float64), torch.arange(6) % 4
    delta = (0.5 * torch.randn(1, 1, 8, 8, dtype=torch.float64)).requires_grad_(True)
    mapped = module.fixed_point_map(x0, y0, delta)
    assert mapped.requires_grad  # differentiable, for the hypergradient
    gradient = (delta - mapped).detach() / 0.1

    def objective(d):
        return float(-F.cross_entropy(model(x0 + d * 0.25), y0) + 0.001 * d.pow(2).sum())
    with torch.no_grad():
        for _ in range(3):
            u = torch.randn_like(delta)
            numeric = (objective(delta + 1e-5 * u) - objective(delta - 1e-5 * u)) / 2e-5
            assert float((gradient * u).sum()) == pytest.approx(numeric, rel=1e-6, abs=1e-9)


class InputRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("batch,fraction,perturbed", [(256, 0.01, 2), (99, 0.01, 0), (10, 0.25, 2)])
def test_outer_loss_perturbs_int_of_fraction_times_batch_images(batch, fraction, perturbed):
    recorder = InputRecorder()
    module = IBAU(recorder, 2, perturbed_fraction=fraction)
    x, y = torch.rand(batch, 1, 2, 2), torch.randint(0, 2, (batch,))
    module.outer_loss(x, y, torch.ones(1, 1, 2, 2))
    changed = (recorder.seen != x).flatten(1).any(dim=1)
    assert int(changed.sum()) == perturbed
    assert torch.allclose(recorder.seen[changed], x[changed] + 1.0)  # no std on this model: pixel units


def test_training_applies_hypergradients_with_batchnorm_frozen():
    # A perturbed fraction large enough that the implicit term is non-zero.
    model, data = small_model(), small_dataset(n=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    module = IBAU(model, 4, epochs=2, batch_size=16, perturbed_fraction=0.25, fixed_point_steps=2)
    module.prepare(data, None)
    loader = DataLoader(data, batch_size=16, shuffle=True, collate_fn=keep_batch,
                        generator=torch.Generator().manual_seed(0))
    TrainerFactory(accelerator="cpu", progress=False).fit(module, loader, 2)
    after = model.state_dict()
    for key, value in bn_buffers(model).items():
        assert torch.equal(before[key], value), f"{key} moved"
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert len(module.report["delta_l2"]) == 2
