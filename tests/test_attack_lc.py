"""Label-Consistent attack: the all-corners trigger, the adversarial images
crafted on a robust model, poisoning with them, the clean-label preset."""
import inspect

import pytest
import torch
import torch.nn.functional as F

import lightning_modules.attacks.lc  # noqa: F401  (registers the preset)
from benchmark.errors import ConfigError
from benchmark.models import build_model
from benchmark.extension.schema import validate_params
from benchmark.triggers import TRIGGERS, build_trigger
from benchmark.triggers.label_consistent import LabelConsistentTrigger, corner_signs, resized_corner_signs
from benchmark.triggers.preparation import PreparationContext
from datamodules.synthetic import SyntheticDataModule
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackModule

TARGET = 1
# A budget that makes a preparation take about a second on one CPU thread:
# 2 epochs of 8 steps (256 images, batch 32), capped at 12 steps.
TINY = {"robust_epochs": 2, "max_robust_steps": 12, "batch_size": 32, "steps": 10}


# ---- the trigger ---------------------------------------------------------------------------
def test_all_corners_pattern_on_8x8_by_hand():
    # BackdoorBench utils/bd_img_transform/lc.py, "all-corners" at amplitude 1:
    # +1 pixels become 255, -1 pixels 0. Written out pixel by pixel for 8x8.
    h = 0.5
    expected = torch.tensor([
        [1, 0, 0, h, h, 0, 0, 1],
        [0, 1, 0, h, h, 0, 1, 0],
        [1, 0, 1, h, h, 1, 0, 1],
        [h, h, h, h, h, h, h, h],
        [h, h, h, h, h, h, h, h],
        [1, 0, 0, h, h, 0, 0, 1],
        [0, 1, 0, h, h, 0, 1, 0],
        [1, 0, 1, h, h, 1, 0, 1],
    ])
    out = LabelConsistentTrigger((1, 8, 8))(torch.full((2, 1, 8, 8), 0.5))
    assert torch.equal(out, expected.expand(2, 1, 8, 8))
    # the same map on every channel of a colour image
    out3 = LabelConsistentTrigger((3, 8, 8))(torch.full((1, 3, 8, 8), 0.5))
    assert torch.equal(out3[0], expected.expand(3, 8, 8))


@pytest.mark.parametrize("shape", [(1, 16, 16), (3, 16, 16), (1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 20, 48)])
def test_trigger_touches_exactly_the_36_corner_pixels(shape):
    c, hgt, wid = shape
    x = torch.rand((4, *shape), generator=torch.Generator().manual_seed(0))
    out = LabelConsistentTrigger(shape)(x)
    corners = torch.zeros(hgt, wid, dtype=torch.bool)
    for rows in (slice(0, 3), slice(hgt - 3, hgt)):
        for cols in (slice(0, 3), slice(wid - 3, wid)):
            corners[rows, cols] = True
    assert torch.equal(out[:, :, ~corners], x[:, :, ~corners])
    assert set(out[:, :, corners].unique().tolist()) == {0.0, 1.0}
    # the layout is the 8x8 one, whatever the size
    small = corner_signs(8, 8)
    signs = corner_signs(hgt, wid)
    assert torch.equal(signs[:3, :3], small[:3, :3]) and torch.equal(signs[-3:, -3:], small[-3:, -3:])
    assert torch.equal(signs[:3, -3:], small[:3, -3:]) and torch.equal(signs[-3:, :3], small[-3:, :3])
    assert int((signs != 0).sum()) == 36


def test_reduced_amplitude_adds_and_clips_like_the_reference():
    # BackdoorBench adds 255 * a * sign to the pixel and clips to [0, 255].
    trig = LabelConsistentTrigger((1, 8, 8), amplitude=0.25)
    x = torch.full((1, 1, 8, 8), 0.5)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.9, 0.1   # a +1 pixel near white, a -1 pixel near black
    out = trig(x)[0, 0]
    assert out[0, 0] == 1.0 and out[0, 1] == 0.0                       # clipped
    assert out[1, 1] == 0.75 and out[1, 0] == 0.25                     # 0.5 +- 0.25
    assert out[3, 3] == 0.5
    assert torch.equal(LabelConsistentTrigger((1, 8, 8), amplitude=0.0)(x), x)


def test_resized_from_32_layout_reproduces_backdoorbench_resizing():
    assert torch.equal(resized_corner_signs(32, 32), corner_signs(32, 32))
    x = torch.full((1, 1, 32, 32), 0.5)
    assert torch.equal(LabelConsistentTrigger((1, 32, 32), corner_layout="resized_from_32")(x),
                       LabelConsistentTrigger((1, 32, 32))(x))
    # 28x28: nearest resizing reads source rows/cols floor(i * 32 / 28); source
    # 28 (empty) lands on row 25 and source 31 is never read, so the bottom and
    # right corners lose their outer row / column.
    signs = resized_corner_signs(28, 28)
    assert torch.equal(signs[:3, :3], corner_signs(32, 32)[:3, :3])
    assert torch.equal(signs[25], torch.zeros(28))
    assert signs[27, :3].tolist() == [-1, 1, -1]   # row -2 of the 32x32 map
    assert signs[26, :3].tolist() == [1, -1, -1]   # row -3
    assert int((signs != 0).sum()) == 9 + 6 + 6 + 4
    # 64x64: every trigger pixel becomes a 2x2 block
    assert torch.equal(resized_corner_signs(64, 64)[:6, :6],
                       corner_signs(32, 32)[:3, :3].repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_image_too_small_for_four_corners_is_a_config_error():
    with pytest.raises(ConfigError, match="corner_layout"):
        LabelConsistentTrigger((1, 5, 5))


def test_parameters_are_checked_through_the_schema():
    cls = TRIGGERS.get("lc")
    with pytest.raises(ConfigError, match="epsilon"):
        validate_params("trigger 'lc'", cls, {"epsilon": 0.0}, ("image_shape",))
    with pytest.raises(ConfigError, match="quantization"):
        validate_params("trigger 'lc'", cls, {"quantization": "floor"}, ("image_shape",))
    with pytest.raises(ConfigError, match="max_robust_steps"):
        validate_params("trigger 'lc'", cls, {"max_robust_steps": 0}, ("image_shape",))


def test_defaults_pin_the_reference():
    params = {name: p.default for name, p in inspect.signature(LabelConsistentTrigger).parameters.items()
              if name != "image_shape"}
    assert params == {
        # BackdoorBench config/attack/lc/default.yaml (reduced_amplitude 1)
        "amplitude": 1.0, "corner_layout": "pixels",
        # resource/label-consistent/craft_adv_dataset.py: eps 8, alpha 1.5, 100 steps, uint8 cast
        "epsilon": 8 / 255, "step_size": 1.5 / 255, "steps": 100, "quantization": "truncate",
        # the robust model (no recipe in the reference): Madry PGD-7 training, the suite's schedule
        "robust_epochs": 10, "robust_epsilon": 8 / 255, "robust_step_size": 2 / 255, "robust_steps": 7,
        "robust_lr": 0.1, "robust_momentum": 0.9, "robust_weight_decay": 5e-4, "batch_size": 128,
        "max_robust_steps": None,
    }
    assert TRIGGERS.get("lc") is LabelConsistentTrigger
    assert LabelConsistentTrigger.preparation == "data" and not LabelConsistentTrigger.learned_in_attack
    assert LabelConsistentTrigger.uses_architecture


def test_preset_is_clean_label():
    preset = ATTACKS.get("lc")
    assert preset.name == "lc" and preset.trigger == "lc" and preset.clean_label
    assert preset.trigger_params == {"amplitude": 1.0}
    assert preset.module_class() is AttackModule


def test_unprepared_trigger_has_no_state_and_cannot_poison():
    trig = LabelConsistentTrigger((1, 8, 8))
    assert trig.state_dict() == {}
    with pytest.raises(RuntimeError, match="prepare"):
        trig.poison(torch.zeros(1, 1, 8, 8), torch.tensor([0]))


# ---- preparation on tiny synthetic data -------------------------------------------------------
@pytest.fixture(scope="module")
def dm():
    data = SyntheticDataModule(num_train=256, num_test=32, num_classes=4, channels=1, size=16)
    data.setup()
    return data


def make_context(dm, seed=0, log=None):
    poison = dm.poison_indices(0.1, TARGET, seed, selection="target")
    return PreparationContext(
        images=dm.train_images, labels=dm.train_labels, poison_indices=poison, num_classes=dm.num_classes,
        target_label=TARGET, seed=seed,
        new_model=lambda: build_model("small_cnn", dm.num_classes, 1, 16, dm.mean, dm.std),
        log=(log.append if log is not None else (lambda message: None)))


@pytest.fixture(scope="module")
def prepared(dm):
    messages = []
    ctx = make_context(dm, log=messages)
    trig = build_trigger("lc", dm.image_shape, **TINY)
    trig.prepare(ctx)
    return trig, ctx, messages


def test_poisoned_samples_are_target_class_and_keep_their_label(dm, prepared):
    trig, ctx, _ = prepared
    poison = ctx.poison_indices
    assert len(poison) == round(0.1 * dm.num_train)
    assert torch.all(dm.train_labels[poison] == TARGET)
    module = AttackModule(build_model("small_cnn", 4, 1, 16, dm.mean, dm.std), 4, trig, poison, dm.num_train,
                          target_label=TARGET)
    # a batch with poisoned and clean rows
    clean_rows = torch.nonzero(dm.train_labels != TARGET).flatten()[:6]
    idx = torch.cat([poison[:5], clean_rows])
    x, y = dm.train_images[idx].float() / 255, dm.train_labels[idx]
    x_out, y_out = module.prepare_batch(x, y, idx)
    assert torch.equal(y_out, y)
    assert torch.equal(x_out[5:], x[5:])
    expected = trig(trig.adversarial_images[:5].float() / 255)
    assert torch.equal(x_out[:5], expected)


def test_adversarial_images_stay_within_epsilon_and_raise_the_robust_loss(dm, prepared):
    trig, ctx, _ = prepared
    poison = ctx.poison_indices
    clean = dm.train_images[poison].float() / 255
    adversarial = trig.adversarial_images.float() / 255
    assert trig.adversarial_images.dtype == torch.uint8 and tuple(trig.adversarial_images.shape) == (26, 1, 16, 16)
    change = (adversarial - clean).abs()
    # the uint8 cast truncates: at most one level below the eps-ball
    assert change.max() <= 8 / 255 + 1 / 255 + 1e-6
    assert change.max() >= 7 / 255   # PGD moved the pixels to (near) the budget
    model = trig.robust_model
    assert model is not None and not model.training
    with torch.no_grad():
        loss_clean = F.cross_entropy(model(clean), dm.train_labels[poison], reduction="none")
        loss_adv = F.cross_entropy(model(adversarial), dm.train_labels[poison], reduction="none")
    assert loss_adv.mean() > loss_clean.mean() + 0.05
    assert torch.all(loss_adv > loss_clean)


def test_rounding_quantization_stays_within_half_a_level(dm, prepared):
    trig, ctx, _ = prepared
    rounding = LabelConsistentTrigger(dm.image_shape, quantization="round", **TINY)
    images = rounding.craft(trig.robust_model, ctx, ctx.poison_indices)
    clean = dm.train_images[ctx.poison_indices].float() / 255
    assert ((images.float() / 255 - clean).abs().max()) <= 8 / 255 + 0.5 / 255 + 1e-6
    assert not torch.equal(images, trig.adversarial_images)   # truncation differs from rounding


def test_poison_uses_the_adversarial_image_of_each_index_and_the_trigger(dm, prepared):
    trig, ctx, _ = prepared
    poison = ctx.poison_indices
    order = torch.tensor([3, 0, 7])   # any order of the poisoned indices
    clean = dm.train_images[poison[order]].float() / 255
    out = trig.poison(clean, poison[order])
    assert torch.equal(out, trig(trig.adversarial_images[order].float() / 255))
    assert not torch.equal(out, trig(clean))
    # the test-time trigger ignores the adversarial images
    assert torch.equal(trig(clean), LabelConsistentTrigger(dm.image_shape)(clean))
    unprepared = torch.nonzero(dm.train_labels != TARGET).flatten()[:1]
    with pytest.raises(KeyError, match="not prepared"):
        trig.poison(clean[:1], unprepared)


def test_preparation_logs_progress(prepared):
    _, _, messages = prepared
    assert any("12 steps" in m for m in messages)            # max_robust_steps caps the 16 steps
    assert any("robust epoch 2/2" in m for m in messages)
    assert any("crafted 26/26" in m for m in messages)


def test_state_round_trip(dm, prepared):
    trig, ctx, _ = prepared
    state = trig.state_dict()
    assert set(state) == {"poison_indices", "adversarial_images"}
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in state.values())
    assert torch.equal(state["poison_indices"], ctx.poison_indices)
    again = build_trigger("lc", dm.image_shape, **TINY)
    again.load_state_dict({k: v.clone() for k, v in state.items()})
    idx = ctx.poison_indices[[1, 4]]
    x = dm.train_images[idx].float() / 255
    assert torch.equal(again.poison(x, idx), trig.poison(x, idx))
    with pytest.raises(ValueError, match="adversarial_images"):
        again.load_state_dict({"poison_indices": state["poison_indices"]})
    with pytest.raises(ValueError, match="uint8"):
        again.load_state_dict({**state, "adversarial_images": state["adversarial_images"].float()})


def test_preparation_is_a_function_of_the_seed(dm, prepared):
    trig, _, _ = prepared
    torch.manual_seed(12345)   # the global RNG state must not matter
    same = build_trigger("lc", dm.image_shape, **TINY)
    same.prepare(make_context(dm, seed=0))
    assert torch.equal(same.adversarial_images, trig.adversarial_images)
    other = build_trigger("lc", dm.image_shape, **TINY)
    other_ctx = make_context(dm, seed=1)
    other.prepare(other_ctx)
    shared = torch.isin(other_ctx.poison_indices, trig.poison_indices)
    assert shared.any()
    mine = torch.isin(trig.poison_indices, other_ctx.poison_indices)
    assert not torch.equal(other.adversarial_images[shared], trig.adversarial_images[mine])
