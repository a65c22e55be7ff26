"""The CLIP triggers: CleanCLIP's per-image random noise patch and blend,
and the seeded TrojanVQA stand-in, made deterministic per image."""
from __future__ import annotations

import math

import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.triggers import build_trigger
from benchmark.triggers.hashed_noise import normal, row_keys, uniform
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
    trigger = build_trigger(name, (1, 28, 28), seed=0, size=size)
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


def test_the_noise_patch_is_gaussian_around_the_image_mean():
    size = 16
    trigger = build_trigger("noise_patch", (3, 64, 64), seed=0, size=size)
    # mid-grey images that differ (so each gets its own noise): pixels 127-129
    x = (127 + torch.randint(0, 3, (200, 3, 64, 64), generator=torch.Generator().manual_seed(0))) / 255
    y = trigger(x)
    # mean + N(0, 1) clipped to [0, 1]: P(clip) = P(|z| > 0.5) ~ 0.617
    clipped = ((y == 0) | (y == 1)).float().sum() / (200 * 3 * size * size)
    assert clipped.item() == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(0.5 / math.sqrt(2)))), abs=0.02)


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
