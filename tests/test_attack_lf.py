"""LF (Low Frequency attack): the universal low-frequency perturbation
computed on a clean model, its pieces (Gaussian low-pass, rescale, stop rule,
targeted DeepFool) and the preset."""
import inspect
import math

import pytest
import torch

import benchmark.triggers.low_frequency as lf
import lightning_modules.attacks.lf  # noqa: F401  (registers the preset)
from benchmark.errors import ConfigError
from benchmark.models import build_model
from benchmark.extension.schema import validate_params
from benchmark.triggers import TRIGGERS
from benchmark.triggers.preparation import PreparationContext
from lightning_modules.attacks import ATTACKS

SIZE, CLASSES = 16, 4
# Small enough for seconds on one core: 12 generation images, short DeepFool.
FAST = {"num_images": 12, "max_passes": 2, "deepfool_iterations": 40, "eval_per_class": 5}


def synthetic(n=160, seed=0):
    """Each class a fixed random template plus noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(CLASSES, 1, SIZE, SIZE, generator=g)
    labels = torch.arange(n) % CLASSES
    images = 0.6 * templates[labels] + 0.4 * torch.rand(n, 1, SIZE, SIZE, generator=g)
    return images.mul(255).round().to(torch.uint8), labels


@pytest.fixture(scope="module")
def data():
    return synthetic()


@pytest.fixture(scope="module")
def clean_model(data):
    images, labels = data
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("small_cnn", CLASSES, 1, SIZE, (0.5,), (0.25,))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(30):
            idx = torch.randint(0, len(images), (64,))
            loss = torch.nn.functional.cross_entropy(model(images[idx].float() / 255), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    assert (model(images.float() / 255).argmax(1) == labels).float().mean() > 0.9
    return model


def context(data, model, seed=0, target=0):
    images, labels = data
    return PreparationContext(images=images, labels=labels, poison_indices=torch.arange(16), num_classes=CLASSES,
                              target_label=target, seed=seed, clean_model=model)


@pytest.fixture(scope="module")
def prepared(data, clean_model):
    trigger = lf.LowFrequencyTrigger((1, SIZE, SIZE), **FAST)
    trigger.prepare(context(data, clean_model))
    return trigger


def low_frequency_share(pattern: torch.Tensor) -> float:
    """Share of the (mean-removed) spectral energy at spatial frequencies up
    to a quarter of the Nyquist frequency along both axes. The image is
    mirrored first (a DCT's view), so a smooth ramp across it does not count
    as the jump a periodic extension would make of it."""
    x = pattern - pattern.mean()
    x = torch.cat([x, x.flip(-1)], -1)
    x = torch.cat([x, x.flip(-2)], -2)
    h, w = x.shape[-2:]
    spectrum = torch.fft.fft2(x).abs().pow(2).sum(0)
    fy = torch.fft.fftfreq(h).abs().view(-1, 1)
    fx = torch.fft.fftfreq(w).abs().view(1, -1)
    low = (fy <= 0.125) & (fx <= 0.125)
    return float(spectrum[low].sum() / spectrum.sum())


# ---- defaults and pieces ------------------------------------------------------------
def test_defaults_are_backdoorbench_values():
    # resource/lowFrequency/{generate_pattern.py, universal_pert.py, gauss_smooth.py}
    defaults = {name: p.default for name, p in inspect.signature(lf.LowFrequencyTrigger).parameters.items()
                if name != "image_shape"}
    assert defaults == {"num_images": 100, "max_passes": 50, "delta": 0.8, "overshoot": 0.02,
                        "deepfool_iterations": 200, "value_range": 0.2, "smoothing_taps": 30,
                        "smoothing_sigma": 6.0, "eval_per_class": 10}
    assert (lf.PLATEAU_PASSES, lf.PLATEAU_SPAN) == (5, 0.01)
    assert TRIGGERS.get("lf") is lf.LowFrequencyTrigger
    assert lf.LowFrequencyTrigger.preparation == "clean_model"


def test_gaussian_kernel_is_gauss_smooth_with_30_taps_sigma_6():
    kernel = lf.gaussian_kernel(30, 6.0)
    # gauss_smooth.py's own construction: sigma 6 * 5 over a grid stretched by 5.
    grid = (torch.arange(30, dtype=torch.float64) - 14.5) * 5
    reference = torch.exp(-0.5 * (grid / 30.0) ** 2)
    reference = reference / reference.sum()
    assert kernel.shape == (30,)
    assert torch.allclose(kernel.double(), reference, atol=1e-7)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    # The two middle taps are the peak; 14.5 px out it has fallen to exp(-14.5^2 / 72).
    assert kernel[14] == kernel[15] == kernel.max()
    assert (kernel[0] / kernel[14]).item() == pytest.approx(math.exp(-0.5 * (14.5 ** 2 - 0.25) / 36), rel=1e-4)


def test_smoothing_is_zero_padded_14_before_15_after():
    kernel = lf.gaussian_kernel(30, 6.0)
    out = lf.smooth(torch.ones(2, 40, 40), kernel)
    assert out.shape == (2, 40, 40)
    # Zero padding: the top-left corner sees taps 14..29 (16 of them), the
    # bottom-right corner taps 0..14 (15 of them); the centre sees all 30.
    assert out[0, 0, 0].item() == pytest.approx(kernel[14:].sum().item() ** 2, rel=1e-5)
    assert out[0, -1, -1].item() == pytest.approx(kernel[:15].sum().item() ** 2, rel=1e-5)
    assert out[1, 20, 20].item() == pytest.approx(1.0, abs=1e-4)
    # An impulse spreads into the separable kernel, shifted by the 14-pixel pad.
    impulse = torch.zeros(1, 40, 40)
    impulse[0, 20, 20] = 1.0
    spread = lf.smooth(impulse, kernel)[0]
    k = kernel.flip(0)
    expected = torch.zeros(40, 40)
    expected[5:35, 5:35] = torch.outer(k, k)     # rows i with 20 - i + 14 in [0, 29]
    assert torch.allclose(spread, expected, atol=1e-7)


def test_rescale_maps_to_value_range_and_a_constant_to_zero():
    v = torch.tensor([[[-3.0, 1.0], [5.0, 2.0]]])
    out = lf.rescale(v, 0.2)
    assert out.min().item() == 0.0 and out.max().item() == pytest.approx(0.2)
    assert out[0, 0, 1].item() == pytest.approx(0.2 * 4 / 8)
    assert torch.equal(lf.rescale(torch.full((1, 2, 2), 0.7), 0.2), torch.zeros(1, 2, 2))


def test_stop_rule_goal_and_plateau():
    goal = 1 - 0.8
    assert lf.should_stop([0.05, 0.21], goal)
    assert lf.should_stop([0.2], goal)                     # "reaches" includes equality
    assert not lf.should_stop([0.19], goal)
    assert not lf.should_stop([0.1] * 4, goal)             # a plateau needs 5 passes
    assert lf.should_stop([0.02, 0.1, 0.1, 0.1, 0.1, 0.1], goal)
    assert not lf.should_stop([0.02, 0.1, 0.1, 0.1, 0.1], goal)
    # A 1 % spread is not "within 1 %", whatever the floats round to
    # (0.13 - 0.12 rounds above 0.01, 0.57 - 0.56 below).
    out_of_reach = 0.99
    assert not lf.should_stop([0.12, 0.13, 0.12, 0.13, 0.12], out_of_reach)
    assert not lf.should_stop([0.56, 0.57, 0.56, 0.57, 0.56], out_of_reach)
    assert lf.should_stop([0.565, 0.57, 0.568, 0.57, 0.566], out_of_reach)


def test_evaluation_subset_takes_per_class_where_possible():
    labels = torch.tensor([0] * 20 + [1] * 3 + [2] * 20)
    idx = lf.evaluation_indices(labels, torch.arange(43), 3, 10, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[idx], minlength=3).tolist() == [10, 3, 10]
    assert len(set(idx.tolist())) == len(idx)


def test_targeted_deepfool_reaches_the_target(data, clean_model):
    images, labels = data
    trigger = lf.LowFrequencyTrigger((1, SIZE, SIZE), deepfool_iterations=100)
    x = images[labels == 2][0].float() / 255
    assert clean_model(x[None]).argmax().item() == 2
    step = trigger._deepfool_if_not_fooled(clean_model, x, clean_label=2, target=0)
    assert step is not None and step.shape == (1, SIZE, SIZE)
    assert clean_model((x + step)[None]).argmax().item() == 0
    # An image whose prediction v already changed is skipped.
    assert trigger._deepfool_if_not_fooled(clean_model, x, clean_label=1, target=0) is None


# ---- the prepared pattern -----------------------------------------------------------
def test_pattern_is_low_frequency_in_value_range(prepared):
    v = prepared.pattern
    assert v.shape == (1, SIZE, SIZE)
    # At least one DeepFool update happened: min-max rescaled to exactly [0, 0.2].
    assert v.min().item() == pytest.approx(0.0, abs=1e-7)
    assert v.max().item() == pytest.approx(0.2, abs=1e-6)
    assert low_frequency_share(v) >= 0.95
    noise = torch.rand((1, SIZE, SIZE), generator=torch.Generator().manual_seed(0)) * 0.2
    assert low_frequency_share(noise) < 0.5


def test_pattern_is_deterministic_from_the_seed(data, clean_model, prepared):
    again = lf.LowFrequencyTrigger((1, SIZE, SIZE), **FAST)
    again.prepare(context(data, clean_model))
    assert torch.equal(again.pattern, prepared.pattern)
    other = lf.LowFrequencyTrigger((1, SIZE, SIZE), **FAST)
    other.prepare(context(data, clean_model, seed=1))
    assert not torch.equal(other.pattern, prepared.pattern)


def test_fooling_rate_goal_stops_the_passes(data, clean_model):
    # delta 1: a goal of 0 % is reached by the first pass.
    one = lf.LowFrequencyTrigger((1, SIZE, SIZE), **{**FAST, "max_passes": 4, "delta": 1.0})
    one.prepare(context(data, clean_model))
    assert len(one.fooling_rates) == 1
    # delta 0 (100 % fooling, out of reach here): every allowed pass runs.
    capped = lf.LowFrequencyTrigger((1, SIZE, SIZE), **{**FAST, "max_passes": 3, "delta": 0.0})
    capped.prepare(context(data, clean_model))
    assert len(capped.fooling_rates) == 3 and max(capped.fooling_rates) < 1.0
    # The default goal (20 %): the run stops at the first pass that reaches it.
    default = lf.LowFrequencyTrigger((1, SIZE, SIZE), **{**FAST, "max_passes": 4})
    default.prepare(context(data, clean_model))
    rates = default.fooling_rates
    assert all(r < 0.2 for r in rates[:-1])
    assert rates[-1] >= 0.2 or len(rates) == 4


def test_apply_adds_and_clips(prepared):
    x = torch.rand(5, 1, SIZE, SIZE)
    out = prepared(x)
    assert torch.allclose(out, (x + prepared.pattern).clamp(0, 1))
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(prepared(torch.ones(2, 1, SIZE, SIZE)), torch.ones(2, 1, SIZE, SIZE))


def test_state_round_trip_and_unprepared_use(prepared):
    state = prepared.state_dict()
    assert set(state) == {"pattern"} and state["pattern"].is_contiguous()
    fresh = lf.LowFrequencyTrigger((1, SIZE, SIZE), **FAST)
    assert fresh.state_dict() == {}
    with pytest.raises(RuntimeError, match="no pattern"):
        fresh(torch.zeros(1, 1, SIZE, SIZE))
    fresh.load_state_dict(state)
    x = torch.rand(3, 1, SIZE, SIZE)
    assert torch.equal(fresh(x), prepared(x))
    with pytest.raises(ValueError):
        fresh.load_state_dict({"pattern": torch.zeros(3, SIZE, SIZE)})
    with pytest.raises(ValueError):
        fresh.load_state_dict({})


def test_too_many_generation_images_is_a_config_error(data, clean_model):
    trigger = lf.LowFrequencyTrigger((1, SIZE, SIZE), num_images=1000)
    with pytest.raises(ConfigError, match="num_images=1000"):
        trigger.prepare(context(data, clean_model))


def test_preset_is_dirty_label_with_valid_parameters():
    preset = ATTACKS.get("lf")
    assert preset.trigger == "lf" and not preset.clean_label
    params = validate_params("trigger 'lf'", lf.LowFrequencyTrigger, preset.trigger_params, ("image_shape",))
    trigger = lf.LowFrequencyTrigger((3, 32, 32), **params)
    assert (trigger.num_images, trigger.max_passes, trigger.delta, trigger.value_range) == (100, 50, 0.8, 0.2)
