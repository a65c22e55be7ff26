"""SAU: the runner path, the shared PGD (bound, exclusion of shared
adversarial samples, early stop), the JS divergence, L_sau and its sample set,
the unlearning loss on a hand-built pair of models, and the reference defaults."""
import inspect
import math

import pytest
import torch
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import validate_params
from benchmark.models import build_model
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.sau import SharedAdversarialUnlearning as SAU
from lightning_modules.defenses.sau import (js_divergence, potential_poison, shared_adversarial_loss,
                                            shared_pgd, shared_pgd_objective)


def small_model(seed=0):
    torch.manual_seed(seed)
    return build_model("small_cnn", 4, 1, 16, (0.5,), (0.25,)).eval()


def linear_model(weight, bias):
    """Two classes on flattened images: logits (0, weight . x + bias)."""
    n = len(weight)
    layer = nn.Linear(n, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.zeros(n), torch.tensor(weight, dtype=torch.float32)]))
        layer.bias.copy_(torch.tensor([0.0, bias]))
    return nn.Sequential(nn.Flatten(), layer)


def test_registered_with_reference_defaults():
    assert DEFENSES.get("sau") is SAU
    defaults = {k: p.default for k, p in inspect.signature(SAU).parameters.items()
                if p.default is not inspect.Parameter.empty}
    # BackdoorBench config/defense/sau/cifar10.yaml (+ `--train_mode` off)
    assert defaults == {"target_label": 0, "augment": None, "epochs": 100, "batch_size": 256, "lr": 1e-4,
                        "betas": (0.9, 0.999), "weight_decay": 0.0, "norm_type": "L_inf", "trigger_norm": 0.2,
                        "adv_lr": 0.2, "adv_steps": 5, "pgd_init": "max", "beta_1": 0.01, "beta_2": 1.0,
                        "lmd_1": 1.0, "lmd_2": 0.0, "lmd_3": 1.0, "outer_steps": 1, "train_mode": False,
                        "clip_images": False, "mixed_precision": False, "amsgrad": True}
    assert SAU.model_train_mode is False
    module = SAU(small_model(), 4, augment=lambda x: x.flip(-1))
    assert module.augment is None  # the reference trains with the test transform
    assert "momentum" not in module.config()


def test_optimizer_is_backdoorbenchs_amsgrad_adam():
    # BackdoorBench defense/sau.py builds its optimiser with argparser_opt_scheduler
    # (utils/aggregate_block/train_settings_generate.py): Adam(amsgrad=True).
    opt = SAU(small_model(), 4).configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    group = opt.param_groups[0]
    assert group["amsgrad"] is True and group["betas"] == (0.9, 0.999) and group["lr"] == 1e-4
    assert SAU(small_model(), 4, amsgrad=False).configure_optimizers().param_groups[0]["amsgrad"] is False


@pytest.mark.parametrize("params,match", [
    ({"trigger_norm": 0.0}, "trigger_norm"), ({"adv_steps": -1}, "adv_steps"), ({"pgd_init": "ones"}, "pgd_init"),
    ({"norm_type": "Linf"}, "norm_type"), ({"lmd_3": -1.0}, "lmd_3"), ({"outer_steps": 0}, "outer_steps"),
    ({"lr": -1e-4}, "lr"),
])
def test_bad_values_raise_config_error(params, match):
    with pytest.raises(ConfigError, match=f"sau: {match}="):
        validate_params("sau", SAU, params)


def test_short_run_through_the_runner_freezes_batchnorm_and_the_reference(make_cell):
    cell = make_cell(defenses=("sau",))
    attack = cell.execute(cell.job("attack", "badnets"))
    before = cell.load_model(attack).state_dict()
    module = cell.train_defense("sau", attack)
    after = module.model.state_dict()
    for key, value in before.items():
        if "running" in key or "num_batches" in key:
            assert torch.equal(after[key], value), f"{key} moved"
    assert any(not torch.equal(after[k], v) for k, v in before.items()), "nothing was trained"
    reference = module.reference.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in before.items()), "the reference copy changed"
    assert set(module.export_weights()) == set(before)  # the reference is not exported
    assert len(module.report["pgd_steps"]) == 1 and 1 <= module.report["pgd_steps"][0] <= 5


@pytest.mark.parametrize("norm_type", ["L_inf", "L2"])
def test_pgd_stays_in_the_bound_and_starts_at_plus_bound(norm_type):
    model, reference = small_model(0), small_model(1)
    x, y = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 4
    start, steps = shared_pgd(model, reference, x, y, adv_steps=0, norm_type=norm_type)
    assert steps == 0
    if norm_type == "L_inf":
        assert torch.equal(start, torch.full_like(x, 0.2))  # pgd_init "max"
    delta, steps = shared_pgd(model, reference, x, y, norm_type=norm_type)
    assert 1 <= steps <= 5 and not torch.equal(delta, start)
    if norm_type == "L_inf":
        assert delta.abs().max() <= 0.2 + 1e-7
        assert (x + delta).max() > 1  # faithful: the reference never clips to [0, 1]
    else:
        assert torch.linalg.vector_norm(delta.flatten(1), dim=1).max() <= 0.2 + 1e-6
    clipped, _ = shared_pgd(model, reference, x, y, norm_type=norm_type, clip_images=True)
    assert (x + clipped).min() >= 0 and (x + clipped).max() <= 1


def test_js_divergence_matches_hand_computation():
    # p = (0.5, 0.5), q = (0.9, 0.1), m = (0.7, 0.3).
    p_logits, q_logits = torch.zeros(1, 2), torch.tensor([[math.log(9.0), 0.0]])
    expected = 0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)) \
        + 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3))
    assert js_divergence(p_logits, q_logits).item() == pytest.approx(expected, rel=1e-5)
    assert js_divergence(q_logits, p_logits).item() == pytest.approx(expected, rel=1e-5)
    assert js_divergence(q_logits, q_logits).item() == pytest.approx(0.0, abs=1e-7)


def test_sau_loss_matches_hand_computation_and_ignores_unmasked_and_improbable_samples():
    # Sample 0: p(adv label of f_ref) = 0.3 (in the set); sample 1: outside the set.
    logits = torch.log(torch.tensor([[0.3, 0.7], [0.99, 0.01]]))
    adv_label_ref = torch.tensor([0, 0])
    mask = torch.tensor([True, False])
    expected = (-math.log(1e-6 + 0.7) - math.log(1 + 1e-6 - 0.3)) / (2 * 2)  # divided by 2 B
    assert shared_adversarial_loss(logits, adv_label_ref, mask).item() == pytest.approx(expected, rel=1e-5)
    assert shared_adversarial_loss(logits, adv_label_ref, ~mask | mask).item() > expected
    # p = 0.0001 < 0.001: both clamps are active, the term is constant and has no gradient.
    improbable = torch.log(torch.tensor([[0.0001, 0.9999]])).requires_grad_(True)
    loss = shared_adversarial_loss(improbable, torch.tensor([0]), torch.tensor([True]))
    assert loss.item() == pytest.approx(-math.log(1e-6 + 0.999), rel=1e-5)
    loss.backward()
    assert torch.equal(improbable.grad, torch.zeros_like(improbable))


def test_potential_poison_is_a_wrong_label_that_is_not_the_reference_clean_prediction():
    labels = torch.tensor([0, 0, 0, 1])
    clean_pred_ref = torch.tensor([0, 2, 0, 0])
    adv_pred_ref = torch.tensor([2, 2, 0, 1])
    # 0: fooled to 2; 1: 2 was already the clean prediction; 2: correct; 3: correct.
    assert potential_poison(adv_pred_ref, clean_pred_ref, labels).tolist() == [True, False, False, False]


def test_objective_excludes_shared_adversarial_samples():
    labels = torch.tensor([1, 1])
    clean_pred, clean_pred_ref = torch.tensor([0, 0]), torch.tensor([0, 0])
    # Sample 0: both models moved to class 1 (shared adversarial); sample 1: neither moved.
    adv = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    adv_ref = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    objective, shared = shared_pgd_objective(adv, adv_ref, clean_pred, clean_pred_ref, labels, 0.01, 1.0)
    assert shared.tolist() == [True, False]

    def ce(logits, label):
        return torch.logsumexp(logits, 0).item() - logits[label].item()
    loss_adv = -(ce(adv[1], 1) + ce(adv_ref[1], 1)) / (2 * 2)
    loss_share = js_divergence(adv[1:], adv_ref[1:]).item() / 2
    assert objective.item() == pytest.approx(0.01 * loss_adv + loss_share, rel=1e-5)


def test_pgd_leaves_a_shared_adversarial_sample_alone_and_stops_when_all_are():
    # Identical models, logit_1 = sum(x) - 1 over 4 pixels, all labels 1 (the
    # models' clean prediction is 0 for both samples). With delta = +0.2:
    # sample 0 (pixels 0.2) reaches sum 1.6 and flips to 1 in both models,
    # shared adversarial from the start; sample 1 (pixels 0) stays at 0.
    # Were sample 0 in L_adv, its step would push delta down like sample 1's.
    model, reference = linear_model([1.0] * 4, -1.0), linear_model([1.0] * 4, -1.0)
    x = torch.stack([torch.full((1, 2, 2), 0.2), torch.zeros(1, 2, 2)])
    y = torch.tensor([1, 1])
    delta, steps = shared_pgd(model, reference, x, y)
    assert steps == 5
    assert torch.equal(delta[0], torch.full((1, 2, 2), 0.2))
    assert torch.equal(delta[1], torch.full((1, 2, 2), -0.2))
    # Both samples shared adversarial at the start: one (zero) step, then stop.
    delta, steps = shared_pgd(model, reference, x[:1], y[:1])
    assert steps == 1 and torch.equal(delta, torch.full_like(x[:1], 0.2))


def test_unlearning_loss_on_hand_built_models():
    # One-pixel images, two classes. f_ref: logit_1 = 10 x - 6; f: logit_1 = 2 x - 1.
    model, reference = linear_model([2.0], -1.0), linear_model([10.0], -6.0)
    module = SAU(model, 2, lmd_1=1.0, lmd_2=0.5, lmd_3=1.0)
    module.__dict__["reference"] = reference
    x, y = torch.tensor([0.5, 0.1]).view(2, 1, 1, 1), torch.tensor([0, 1])
    delta = torch.full_like(x, 0.2)
    loss, mask = module.unlearning_loss(x, y, delta)
    # f_ref: sample 0 goes from -1 (class 0) to +1 (class 1 != label 0): in the set;
    # sample 1 stays at class 0 (-5 -> -3), its clean prediction: not in the set.
    assert mask.tolist() == [True, False]

    def ce(z, label):  # two-class cross-entropy of logits (0, z)
        return math.log(1 + math.exp(z)) - (z if label == 1 else 0.0)
    clean = (ce(2 * 0.5 - 1, 0) + ce(2 * 0.1 - 1, 1)) / 2
    adv = (ce(2 * 0.7 - 1, 0) + ce(2 * 0.3 - 1, 1)) / 2
    p = 1 / (1 + math.exp(-(2 * 0.7 - 1)))  # f's probability of f_ref's adversarial label 1
    sau = (-math.log(1e-6 + (1 - p)) - math.log(1 + 1e-6 - p)) / (2 * 2)
    assert loss.item() == pytest.approx(clean + 0.5 * adv + sau, rel=1e-5)
