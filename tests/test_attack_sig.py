"""SIG: the sinusoid trigger (BackdoorBench utils/bd_img_transform/sig.py)
and its clean-label preset (attack/sig.py)."""
import inspect
import math

import pytest
import torch

import benchmark.triggers.sig  # noqa: F401  (registers "sig")
import lightning_modules.attacks.sig  # noqa: F401  (registers the preset)
from benchmark.errors import ConfigError
from benchmark.models import build_model
from benchmark.extension.schema import validate_params
from benchmark.triggers import TRIGGERS, AdditiveTrigger, build_trigger
from benchmark.triggers.sig import SIGTrigger
from datamodules.synthetic import SyntheticDataModule
from lightning_modules.attacks import ATTACKS


def test_defaults_are_backdoorbench_values():
    params = inspect.signature(SIGTrigger).parameters
    assert params["delta"].default == 40 and params["frequency"].default == 6  # sig_delta, sig_f
    assert TRIGGERS.get("sig") is SIGTrigger and issubclass(SIGTrigger, AdditiveTrigger)
    assert SIGTrigger.preparation == "none"
    preset = ATTACKS.get("sig")
    assert preset.trigger == "sig" and preset.clean_label
    assert preset.trigger_params == {"delta": 40.0, "frequency": 6.0}


def test_pattern_on_hand_computed_columns():
    # 32 px wide, f = 6: column j has phase 2 pi j 6 / 32 = j * 3 pi / 8.
    trig = build_trigger("sig", (3, 4, 32))
    out = trig(torch.full((2, 3, 4, 32), 0.5))
    expected = {0: 0.0,                                  # sin 0
                1: 40 / 255 * 0.9238795325112867,       # sin(3 pi / 8)
                4: -40 / 255,                           # sin(3 pi / 2)
                8: 0.0,                                  # sin(3 pi)
                3: 40 / 255 * -0.3826834323650898}      # sin(9 pi / 8)
    for column, value in expected.items():
        # the same on every image, channel and row
        assert torch.allclose(out[..., column], torch.full((2, 3, 4), 0.5 + value), atol=1e-6), column
    assert trig.pattern.amax().item() == pytest.approx(40 / 255, abs=2e-3)


def test_pattern_formula_for_other_parameters():
    trig = SIGTrigger((1, 2, 10), delta=20.0, frequency=1.5)
    j = torch.arange(10, dtype=torch.float64)
    wave = 20 / 255 * torch.sin(2 * math.pi * j * 1.5 / 10)
    assert torch.allclose(trig.pattern, wave.float().expand(1, 2, 10))


def test_clipped_to_unit_interval():
    trig = build_trigger("sig", (1, 2, 32))
    wave = trig.pattern[0]  # (rows, columns)
    positive, negative = wave > 0, wave < 0
    up = trig(torch.ones(1, 1, 2, 32))[0, 0]
    assert torch.all(up[positive] == 1.0) and torch.allclose(up[negative], 1.0 + wave[negative])
    down = trig(torch.zeros(1, 1, 2, 32))[0, 0]
    assert torch.all(down[negative] == 0.0) and torch.allclose(down[positive], wave[positive])
    assert negative.any() and positive.any()


def test_parameters_are_checked():
    for params in ({"delta": 0}, {"frequency": -1.0}, {"delta": "large"}):
        with pytest.raises(ConfigError):
            validate_params("trigger 'sig'", SIGTrigger, params, ("image_shape",))


def test_clean_label_poisoning_keeps_labels():
    dm = SyntheticDataModule(num_train=200, num_test=16, num_classes=4)
    target, seed = 2, 0
    poison = dm.poison_indices(0.1, target, seed, selection="target")
    assert len(poison) == 20 and torch.all(dm.train_labels[poison] == target)
    preset = ATTACKS.get("sig")
    trigger = build_trigger(preset.trigger, dm.image_shape, seed=seed, **preset.trigger_params)
    model = build_model("small_cnn", dm.num_classes, 1, 16, dm.mean, dm.std)
    module = preset.module_class()(model, dm.num_classes, trigger, poison, dm.num_train, target, lr=0.01,
                                   augment=dm.augment)
    x, y, idx = dm.train_set().__getitems__(list(range(100)))
    poisoned = torch.isin(idx, poison)
    assert poisoned.any()
    xp, yp = module.prepare_batch(x, y, idx)
    assert torch.equal(yp, y)  # clean label: nothing relabelled
    assert torch.allclose(xp[poisoned], trigger(x[poisoned]))
    assert not torch.allclose(xp[poisoned], x[poisoned])
    assert torch.equal(xp[~poisoned], x[~poisoned])
