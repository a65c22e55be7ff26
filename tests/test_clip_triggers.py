"""The CLIP triggers: CleanCLIP's per-image random noise patch (3-channel
noise on the RGB image, wrapped modulo 256 by the uint8 cast) and blend,
the seeded TrojanVQA stand-in, made deterministic per image, and the
fixed-corner positive control."""
from __future__ import annotations

import math

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.triggers import build_trigger
from benchmark.triggers.hashed_noise import normal, row_keys, uniform
from benchmark.triggers.noise_patch import to_bytes
from lightning_modules.clip.attacks import CLIP_ATTACKS


def _images(n=64, shape=(3, 32, 32), seed=0):
    return (torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed)) * 255).round() / 255


@pytest.mark.parametrize("name, params", [("noise_patch", {"size": 6}), ("seeded_patch", {"size": 6}),
                                          ("noise_blend", {})])
def test_a_triggered_image_does_not_depend_on_batching_or_global_rng(name, params):
    trigger = build_trigger(name, (3, 32, 32), seed=1, **params)
    x = _images()
    torch.manual_seed(123)
    whole = trigger(x)
    torch.manual_seed(999)
    one_by_one = torch.cat([trigger(x[i:i + 1]) for i in range(len(x))])
    assert torch.equal(whole, one_by_one)
    assert whole.min() >= 0 and whole.max() <= 1
    assert torch.allclose(whole * 255, (whole * 255).round(), atol=1e-4)  # 8-bit, as the PIL round trip


@pytest.mark.parametrize("name", ["noise_patch", "seeded_patch"])
def test_patches_land_at_per_image_offsets_covering_the_reference_range(name):
    size, n = 4, 400
    extra = {"channels": "data"} if name == "noise_patch" else {}
    trigger = build_trigger(name, (1, 28, 28), seed=0, size=size, **extra)
    x = _images(n, (1, 28, 28))
    changed = (trigger(x) != x)[:, 0]
    rows = changed.any(2).float().argmax(1)
    cols = changed.any(1).float().argmax(1)
    # only a size x size window changes (a patch pixel may equal the image's)
    assert int(changed.flatten(1).sum(1).max()) <= size * size
    # offsets in [0, H - 1 - size] (the reference's randint(0, 223 - patch))
    assert int(rows.min()) == 0 and int(rows.max()) == 28 - 1 - size
    assert int(cols.min()) == 0 and int(cols.max()) == 28 - 1 - size


def test_the_seeded_patch_is_the_same_for_every_image_and_changes_with_the_seed():
    a = build_trigger("seeded_patch", (3, 32, 32), seed=0, size=5)
    b = build_trigger("seeded_patch", (3, 32, 32), seed=1, size=5)
    x = torch.zeros(2, 3, 32, 32)
    x[1] += 0.5
    y = a(x)
    patches = [y[i][:, (y[i] != x[i]).any(0).any(1)][:, :, (y[i] != x[i]).any(0).any(0)] for i in range(2)]
    assert torch.equal(patches[0], patches[1])
    assert not torch.equal(a.patch, b.patch)


def test_clamped_noise_patch_is_gaussian_around_the_image_mean_and_clipped():
    """overflow="clamp", the suite's earlier patch: mean + N(0, 1) clipped."""
    size = 16
    trigger = build_trigger("noise_patch", (3, 64, 64), seed=0, size=size, overflow="clamp")
    # mid-grey images that differ (so each gets its own noise): pixels 127-129
    x = (127 + torch.randint(0, 3, (200, 3, 64, 64), generator=torch.Generator().manual_seed(0))) / 255
    y = trigger(x)
    # mean + N(0, 1) clipped to [0, 1]: P(clip) = P(|z| > 0.5) ~ 0.617
    clipped = ((y == 0) | (y == 1)).float().sum() / (200 * 3 * size * size)
    assert clipped.item() == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))), abs=0.02)


def _patch_pixels(x, y):
    """The changed window of each image, (B, C, s, s), for a square patch."""
    changed = (y != x).any(1)
    out = []
    for i in range(len(x)):
        rows, cols = torch.nonzero(changed[i].any(1)).flatten(), torch.nonzero(changed[i].any(0)).flatten()
        out.append(y[i][:, int(rows.min()):int(rows.max()) + 1, int(cols.min()):int(cols.max()) + 1])
    return out


def test_the_noise_patch_wraps_out_of_range_values_as_the_uint8_cast():
    """CleanCLIP's ToPILImage does pic.mul(255).byte(): truncate, no clamp,
    wrap modulo 256; the patch is then close to uniform random bytes."""
    levels = torch.tensor([-2.0, -1.5, -0.5, 0.0, 100.7, 255.0, 256.0, 300.2, 511.0]) / 255
    assert (to_bytes(levels, "wrap") * 255).round().tolist() == [254, 255, 0, 0, 100, 255, 0, 44, 255]
    assert (to_bytes(levels, "clamp") * 255).round().tolist() == [0, 0, 0, 0, 101, 255, 255, 255, 255]
    size, shape = 6, (3, 24, 24)
    trigger = build_trigger("noise_patch", shape, seed=3, size=size)
    x = _images(300, shape)
    y = trigger(x)
    keys = row_keys(x, 3)
    z = normal(keys, 3 * size * size, stream=3).view(-1, 3, size, size)
    expected = torch.remainder(torch.trunc((x.mean(dim=(2, 3), keepdim=True) + z) * 255), 256)
    top = (uniform(keys, 1, 0)[:, 0] * (24 - size)).long()
    left = (uniform(keys, 1, 1)[:, 0] * (24 - size)).long()
    for i in range(len(x)):
        got = y[i, :, int(top[i]):int(top[i]) + size, int(left[i]):int(left[i]) + size] * 255
        torch.testing.assert_close(got, expected[i], atol=1e-3, rtol=0)
    # near-uniform bytes: about 1/256 of the patch is black, never ~40 %
    patch = torch.stack([expected[i] for i in range(len(x))]) / 255
    assert (patch == 0).float().mean().item() < 0.02
    assert patch.mean().item() == pytest.approx(0.5, abs=0.03)


def test_a_grey_image_gets_a_colour_patch_and_grey_data_is_refused_unless_asked():
    """CleanCLIP converts to RGB and draws 3-channel noise: on a grey image
    (three equal channels) the patch's channels differ. A 1-channel image
    shape is refused by default; channels="data" gives the grey patch."""
    size = 4
    grey = _images(100, (1, 28, 28))
    rgb = grey.expand(-1, 3, -1, -1).contiguous()
    y = build_trigger("noise_patch", (3, 28, 28), seed=0, size=size)(rgb)
    for patch in _patch_pixels(rgb, y):
        assert not torch.equal(patch[0], patch[1]) and not torch.equal(patch[1], patch[2])
    with pytest.raises(ConfigError, match="channels='rgb'.*1 channel"):
        build_trigger("noise_patch", (1, 28, 28), seed=0, size=size)
    y1 = build_trigger("noise_patch", (1, 28, 28), seed=0, size=size, channels="data")(grey)
    assert y1.shape == grey.shape and int((y1 != grey).flatten(1).sum(1).max()) <= size * size


def test_on_a_black_background_the_wrapped_patch_is_visible_and_the_clamped_one_half_black():
    size = 8
    x = torch.zeros(200, 3, 32, 32)
    x[:, :, 10:20, 10:20] = torch.rand(200, 3, 1, 1, generator=torch.Generator().manual_seed(0))  # distinct images
    wrapped = build_trigger("noise_patch", (3, 32, 32), seed=0, size=size)(x)
    clamped = build_trigger("noise_patch", (3, 32, 32), seed=0, size=size, overflow="clamp")(x)
    changed_w = (wrapped != x).flatten(1).float().sum(1).mean() / (3 * size * size)
    changed_c = (clamped != x).flatten(1).float().sum(1).mean() / (3 * size * size)
    assert changed_w.item() > 0.9
    assert changed_c.item() < 0.75


def test_the_positive_control_is_one_fixed_patch_at_a_fixed_corner():
    size, shape = 4, (3, 28, 28)
    x = _images(20, shape)
    corner = build_trigger("noise_patch", shape, seed=0, size=size, location="corner", noise="fixed")(x)
    changed = (corner != x).any(1)
    assert not changed[:, size:, :].any() and not changed[:, :, size:].any()
    assert all(torch.equal(corner[0, :, :size, :size], corner[i, :, :size, :size]) for i in range(len(x)))
    other_seed = build_trigger("noise_patch", shape, seed=1, size=size, location="corner", noise="fixed")(x)
    assert not torch.equal(other_seed[0, :, :size, :size], corner[0, :, :size, :size])
    four = build_trigger("noise_patch", shape, seed=0, size=size, location="four_corners")(x)
    for i in range(len(x)):
        p = four[i, :, :size, :size]
        for top, left in ((0, 28 - size), (28 - size, 0), (28 - size, 28 - size)):
            assert torch.equal(four[i, :, top:top + size, left:left + size], p)
    assert not torch.equal(four[0, :, :size, :size], four[1, :, :size, :size])  # noise per image
    preset = CLIP_ATTACKS.get("badnets_corner")
    assert (preset.trigger, preset.trigger_params) == ("noise_patch", {"size": 16, "location": "corner",
                                                                       "noise": "fixed"})
    with pytest.raises(ConfigError, match="location='middle' unknown"):
        build_trigger("noise_patch", shape, seed=0, size=size, location="middle")


def test_the_blend_is_point_eight_image_plus_point_two_uniform_noise():
    trigger = build_trigger("noise_blend", (1, 28, 28), seed=0)
    x = _images(50, (1, 28, 28))
    noise = (trigger(x) - 0.8 * x) / 0.2
    assert noise.min() > -0.03 and noise.max() < 1.03
    assert noise.mean().item() == pytest.approx(0.5, abs=0.02)
    assert noise.std().item() == pytest.approx(1 / math.sqrt(12), abs=0.02)


def test_hashed_noise_statistics_and_keys():
    keys = row_keys(_images(8), seed=0)
    assert len(set(keys.tolist())) == 8
    x = _images(1)
    y = x.clone()
    y[0, 0, 0, 0] = (y[0, 0, 0, 0] * 255 + 1) % 256 / 255
    assert row_keys(x, 0) != row_keys(y, 0) and row_keys(x, 0) != row_keys(x, 1)
    u = uniform(keys, 20000)
    assert u.min() >= 0 and u.max() < 1 and u.mean().item() == pytest.approx(0.5, abs=0.01)
    z = normal(keys, 20000)
    assert z.mean().item() == pytest.approx(0.0, abs=0.02) and z.std().item() == pytest.approx(1.0, abs=0.02)
    assert abs(torch.corrcoef(u[:2])[0, 1].item()) < 0.05


def test_reference_defaults_and_a_patch_too_large():
    assert CLIP_ATTACKS.get("badnets").trigger_params == {"size": 16}
    assert CLIP_ATTACKS.get("blended").trigger_params == {"alpha": 0.2}
    assert CLIP_ATTACKS.get("sig").trigger_params == {"delta": 60.0, "frequency": 6.0}
    assert CLIP_ATTACKS.get("trojanvqa").trigger_params == {"size": 16}
    with pytest.raises(ConfigError, match="size=40 is not allowed"):
        build_trigger("noise_patch", (1, 28, 28), seed=0, size=40)
