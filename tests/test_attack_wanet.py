"""WaNet: the seeded warp (BackdoorBench attack/wanet.py), its noise mode,
the attack module's batch and WaNet's post-tensor augmentation."""
import inspect

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

import benchmark.triggers.wanet  # noqa: F401  (registers "wanet")
import lightning_modules.attacks.wanet  # noqa: F401  (registers the preset)
from benchmark.errors import ConfigError
from benchmark.models import build_model
from benchmark.training import TrainerFactory
from benchmark.triggers import TRIGGERS, build_trigger
from benchmark.triggers.badnets import BadNetsTrigger
from benchmark.triggers.wanet import WaNetTrigger
from datamodules.synthetic import SyntheticDataModule
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.wanet import WaNetAttackModule, rotate_nearest, shift_crop, wanet_post_tensor_augment

SHAPE = (3, 16, 16)


def defaults(fn) -> dict:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


# ---- defaults: BackdoorBench config/attack/wanet/default.yaml -------------------------------
def test_defaults_are_backdoorbench_values():
    assert TRIGGERS.get("wanet") is WaNetTrigger and WaNetTrigger.preparation == "none"
    assert not WaNetTrigger.learned_in_attack
    trig = defaults(WaNetTrigger)
    assert (trig["k"], trig["s"], trig["grid_rescale"], trig["grid_seed"]) == (4, 0.5, 1.0, None)
    mod = defaults(WaNetAttackModule)
    assert mod["cross_ratio"] == 2 and mod["random_crop"] == 5 and mod["random_rotation"] == 10
    assert (mod["crop_probability"], mod["rotation_probability"], mod["flip_probability"]) == (0.8, 0.5, 0.5)
    assert mod["augmentation"] == "wanet" and mod["augmentation_draws"] == "per_batch"
    assert mod["lr_schedule"] == "multistep" and mod["lr"] == 0.01
    assert WaNetAttackModule.LR_MILESTONES == (100, 200, 300, 400) and WaNetAttackModule.LR_GAMMA == 0.1
    preset = ATTACKS.get("wanet")
    assert preset.trigger == "wanet" and preset.module_class() is WaNetAttackModule and not preset.clean_label
    assert preset.trigger_params == {"k": 4, "s": 0.5, "grid_rescale": 1.0}


# ---- the warp field --------------------------------------------------------------------------
def test_field_is_drawn_from_the_seed_as_the_reference():
    t = WaNetTrigger(SHAPE, seed=5)
    knots = torch.rand((1, 2, 4, 4), generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert torch.allclose(t.warp_knots, knots / knots.abs().mean())
    assert t.warp_knots.abs().mean().item() == pytest.approx(1.0)
    # Bicubic with align_corners=True passes through the knots: 16 px, 4 knots -> every 5th pixel.
    assert torch.allclose(t.noise_grid[0, ::5, ::5].permute(2, 0, 1), t.warp_knots[0], atol=1e-5)
    # Identity grid: x along columns, y along rows, both linspace(-1, 1).
    assert torch.equal(t.identity_grid[0, 0, :, 0], torch.linspace(-1, 1, 16))
    assert torch.equal(t.identity_grid[0, :, 0, 1], torch.linspace(-1, 1, 16))


def test_deterministic_from_the_seed_and_grid_seed_overrides_it():
    x = torch.rand(4, *SHAPE)
    a, b = build_trigger("wanet", SHAPE, seed=3), build_trigger("wanet", SHAPE, seed=3)
    assert torch.equal(a(x), b(x)) and torch.equal(a.noise_grid, b.noise_grid)
    other = build_trigger("wanet", SHAPE, seed=4)
    assert not torch.allclose(a.noise_grid, other.noise_grid) and not torch.allclose(a(x), other(x))
    assert torch.equal(WaNetTrigger(SHAPE, seed=1, grid_seed=3).noise_grid, a.noise_grid)


def test_displacement_is_bounded_by_the_strength_and_grows_with_it():
    _, h, w = SHAPE
    maxima = []
    for s in (0.25, 0.5, 1.0):
        t = WaNetTrigger(SHAPE, s=s, seed=0)
        disp = t.pixel_displacement()
        # |clamp(I + d) - I| <= |d| for I in [-1, 1], d = s P / H normalised;
        # a normalised unit is (W - 1) / 2 px along x, (H - 1) / 2 along y.
        bound = s * t.noise_grid[0].abs() * torch.tensor([(w - 1) / 2, (h - 1) / 2]) / h
        assert torch.all(disp.abs() <= bound + 1e-5)
        assert disp.abs().max() <= s * t.noise_grid.abs().max() * (w - 1) / (2 * h) + 1e-5
        maxima.append(disp.abs().max().item())
    assert maxima[0] < maxima[1] < maxima[2] and maxima[0] > 0


def test_zero_strength_is_the_identity():
    x = torch.rand(3, *SHAPE)
    assert torch.allclose(WaNetTrigger(SHAPE, s=0.0, seed=0)(x), x, atol=1e-5)
    assert not torch.allclose(WaNetTrigger(SHAPE, seed=0)(x), x, atol=1e-2)


def test_output_in_unit_interval_and_shape_kept():
    t = build_trigger("wanet", SHAPE, seed=0)
    x = torch.cat([torch.rand(6, *SHAPE), torch.zeros(1, *SHAPE), torch.ones(1, *SHAPE)])
    for out in (t(x), t.noise_warp(x)):
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(t(torch.ones(2, *SHAPE)), torch.ones(2, *SHAPE))  # warping a flat image keeps it


def test_noise_mode_differs_from_backdoor_warp_and_is_seedable():
    t = build_trigger("wanet", SHAPE, seed=0)
    x = torch.rand(8, *SHAPE)
    noisy = t.noise_warp(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, t.noise_warp(x, generator=torch.Generator().manual_seed(1)))
    assert not torch.allclose(noisy, t.noise_warp(x, generator=torch.Generator().manual_seed(2)))
    diff = (noisy - t(x)).abs().flatten(1).amax(1)
    assert torch.all(diff > 1e-3)  # every image gets its own jitter
    # The jitter is at most 1/H normalised, i.e. (W - 1) / (2H) px: close to the backdoor warp.
    assert (noisy - t(x)).abs().mean() < (x - t(x)).abs().mean() + 0.1


def test_state_dict_round_trip_and_empty_state_accepted():
    a, b = WaNetTrigger(SHAPE, seed=0), WaNetTrigger(SHAPE, seed=9)
    x = torch.rand(2, *SHAPE)
    before = b(x)
    b.load_state_dict({})  # preparation "none": nothing to load
    assert torch.equal(b(x), before)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b(x), a(x))
    with pytest.raises(ValueError):
        b.load_state_dict({"other": torch.zeros(1)})
    with pytest.raises(ValueError):
        b.load_state_dict({"noise_grid": torch.zeros(1, 8, 8, 2)})


# ---- the attack module's batch ---------------------------------------------------------------
def _module(dm, seed=0, **kwargs):
    model = build_model("small_cnn", dm.num_classes, dm.channels, dm.size, dm.mean, dm.std)
    trigger = build_trigger("wanet", dm.image_shape, seed=seed)
    poison = dm.poison_indices(0.1, 0, seed)
    return WaNetAttackModule(model, dm.num_classes, trigger, poison, dm.num_train, 0, lr=0.01,
                             augment=dm.augment, **kwargs), poison


def test_default_backdoor_rows_are_per_batch_as_in_the_reference():
    # BackdoorBench attack/wanet.py train_step: the first int(pratio * bs)
    # rows of every shuffled batch, noise-mode rows next.
    torch.manual_seed(0)
    dm = SyntheticDataModule(channels=3, num_train=1280, num_test=16)
    module, poison = _module(dm)
    assert module.hparams.backdoor_rows == "per_batch"
    x, y, idx = dm.train_set().__getitems__(list(range(128)))
    y = torch.where(y == 0, torch.ones_like(y), y)  # no target-class rows: a flipped label marks a backdoor row
    warped_rows = []
    for _ in range(20):
        xp, yp = module.prepare_batch(x, y, idx)
        backdoor = yp != y
        assert int(backdoor.sum()) == int(0.1 * 128)  # 12 of 128, every batch
        assert torch.all(yp[backdoor] == 0)
        assert torch.allclose(xp[backdoor], module.trigger(x[backdoor]))
        changed = (xp != x).flatten(1).any(1) & ~backdoor
        assert int(changed.sum()) == 2 * 12  # cross_ratio 2
        assert not torch.allclose(xp[changed], module.trigger(x[changed]))  # noise mode, not the backdoor warp
        warped_rows.append(backdoor)
    # Different rows each batch, not the seeded poisoned indices: every image is
    # sometimes backdoored and sometimes clean.
    seen = torch.stack(warped_rows)
    assert not torch.equal(seen[0], seen[1])
    assert bool(seen.any(0).float().mean() > 0.8) and bool((~seen).any(0).all())
    assert not torch.equal(seen[0], torch.isin(idx, poison))


def test_per_batch_rows_below_one_per_batch_follow_generalize_to_lower_pratio():
    torch.manual_seed(0)
    dm = SyntheticDataModule(channels=3, num_train=1000, num_test=16)
    model = build_model("small_cnn", dm.num_classes, dm.channels, dm.size, dm.mean, dm.std)
    poison = dm.poison_indices(0.01, 0, 0)  # rate 0.01 x batch 32 = 0.32 rows per batch
    module = WaNetAttackModule(model, dm.num_classes, build_trigger("wanet", dm.image_shape, seed=0), poison,
                               dm.num_train, 0, cross_ratio=0.0)
    x, y, idx = dm.train_set().__getitems__(list(range(32)))
    y = torch.where(y == 0, torch.ones_like(y), y)
    counts = torch.tensor([int((module.prepare_batch(x, y, idx)[1] != y).sum()) for _ in range(400)])
    assert set(counts.tolist()) <= {0, 1}
    assert abs(counts.float().mean().item() - 0.32) < 0.08


def test_fixed_indices_option_poisons_by_index_and_noise_rows_keep_their_labels():
    torch.manual_seed(0)
    dm = SyntheticDataModule(channels=3, num_train=256, num_test=16)
    module, poison = _module(dm, backdoor_rows="indices")
    x, y, idx = dm.train_set().__getitems__(list(range(128)))
    xp, yp = module.prepare_batch(x, y, idx)
    poisoned = torch.isin(idx, poison)
    n = int(poisoned.sum())
    assert n > 0
    assert torch.allclose(xp[poisoned], module.trigger(x[poisoned])) and torch.all(yp[poisoned] == 0)
    changed = (xp != x).flatten(1).any(1) & ~poisoned
    assert int(changed.sum()) == int(2 * n)  # cross_ratio 2, among non-poisoned rows
    assert torch.equal(yp[~poisoned], y[~poisoned])  # noise-mode and clean rows keep their label
    assert not torch.allclose(xp[changed], module.trigger(x[changed]))  # noise mode, not the backdoor warp
    assert torch.equal(xp[~poisoned & ~changed], x[~poisoned & ~changed])


def test_cross_ratio_zero_and_batches_without_poison():
    dm = SyntheticDataModule(channels=3, num_train=256, num_test=16)
    module, poison = _module(dm, cross_ratio=0.0, backdoor_rows="indices")
    x, y, idx = dm.train_set().__getitems__(list(range(64)))
    xp, _ = module.prepare_batch(x, y, idx)
    assert torch.equal(xp[~torch.isin(idx, poison)], x[~torch.isin(idx, poison)])
    module, poison = _module(dm, backdoor_rows="indices")
    clean = torch.nonzero(~torch.isin(torch.arange(256), poison)).flatten()[:32]
    x, y, idx = dm.train_set().__getitems__(clean.tolist())
    xp, yp = module.prepare_batch(x, y, idx)
    assert torch.equal(xp, x) and torch.equal(yp, y)


def test_noise_mode_needs_the_wanet_trigger():
    dm = SyntheticDataModule(channels=3, num_train=64, num_test=16)
    model = build_model("small_cnn", dm.num_classes, 3, 16, dm.mean, dm.std)
    with pytest.raises(ConfigError, match="cross_ratio"):
        WaNetAttackModule(model, dm.num_classes, BadNetsTrigger(dm.image_shape), torch.tensor([1]), 64, 0)


# ---- WaNet's post-tensor augmentation -------------------------------------------------------
class FlippingSynthetic(SyntheticDataModule):
    horizontal_flip = True


def test_augmentation_is_a_no_op_at_probability_zero_and_keeps_shapes():
    x = torch.rand(8, *SHAPE)
    for per_sample in (False, True):
        out = wanet_post_tensor_augment(x, crop_probability=0.0, rotation_probability=0.0, flip_probability=0.0,
                                        per_sample=per_sample)
        assert torch.equal(out, x)
        torch.manual_seed(0)
        out = wanet_post_tensor_augment(x, crop_probability=1.0, rotation_probability=1.0, flip_probability=1.0,
                                        per_sample=per_sample)
        assert out.shape == x.shape and not torch.equal(out, x)


def test_crop_pads_with_the_fill_and_draws_per_batch_or_per_sample():
    x = torch.ones(16, 1, 16, 16)
    fill = torch.tensor([0.5])
    shifts = {}
    for per_sample in (False, True):
        torch.manual_seed(1)
        out = wanet_post_tensor_augment(x, fill=fill, random_crop=5, crop_probability=1.0,
                                        rotation_probability=0.0, per_sample=per_sample)
        assert set(out.unique().tolist()) <= {0.5, 1.0}
        # Which pixels come from the padding tells the offset of each image.
        shifts[per_sample] = {tuple((out[i, 0] == 1).nonzero().min(0).values.tolist()) for i in range(16)}
    assert len(shifts[False]) == 1  # one offset for the whole batch (BackdoorBench)
    assert len(shifts[True]) > 1


def test_shift_crop_and_rotation_match_torchvision():
    x = torch.rand(3, 3, 16, 16)
    fill = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1)
    out = shift_crop(x, torch.tensor([0, 5, 10]), torch.tensor([10, 5, 3]), 5, fill)
    assert torch.equal(out[1], x[1])
    padded = torch.cat([TF.pad(x[:, i:i + 1], 5, fill=fill.flatten()[i].item()) for i in range(3)], 1)
    assert torch.equal(out[0], padded[0, :, 0:16, 10:26]) and torch.equal(out[2], padded[2, :, 10:26, 3:19])
    for angle in (-10.0, 4.5, 9.0):
        ours = rotate_nearest(x, torch.full((3,), angle), fill)
        ref = TF.rotate(x, angle, interpolation=InterpolationMode.NEAREST, fill=fill.flatten().tolist())
        assert torch.equal(ours, ref)


def test_module_flips_only_datasets_that_flip_and_fills_with_the_model_mean():
    x = torch.rand(4, 3, 16, 16)
    for dm_class, flips in ((SyntheticDataModule, False), (FlippingSynthetic, True)):
        dm = dm_class(channels=3, num_train=64, num_test=16)
        module, _ = _module(dm, crop_probability=0.0, rotation_probability=0.0, flip_probability=1.0)
        assert module.augment == module.post_tensor_augment
        assert torch.equal(module.augment(x), x.flip(-1) if flips else x)
    module, _ = _module(dm, crop_probability=1.0, rotation_probability=0.0, flip_probability=0.0,
                        augmentation_draws="per_sample")
    torch.manual_seed(0)
    out = module.augment(torch.ones(16, 3, 16, 16))
    assert set(out.unique().tolist()) == {dm.mean[0], 1.0}  # padding is the normalisation mean
    module, _ = _module(dm, augmentation="dataset")
    assert module.augment == dm.augment


# ---- learning rate and a short training run --------------------------------------------------
def test_lr_is_constant_over_backdoorbench_100_epochs():
    dm = SyntheticDataModule(channels=3, num_train=64, num_test=16)
    module, _ = _module(dm)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "epoch"
    for _ in range(99):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)
    constant, _ = _module(dm, lr_schedule="constant")
    assert isinstance(constant.configure_optimizers(), torch.optim.SGD)


def test_trains_end_to_end_with_lightning():
    dm = SyntheticDataModule(channels=3, num_train=128, num_test=16)
    module, _ = _module(dm, augmentation_draws="per_sample")
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    TrainerFactory("cpu", progress=False).fit(module, dm.loader(dm.train_set(), shuffle=True, batch_size=32), 1)
    assert any(not torch.equal(before[k], v) for k, v in module.model.state_dict().items())
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)
