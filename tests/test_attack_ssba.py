"""SSBA: the StegaStamp-style trigger and its preset.

Fast tests train for a few steps only (the mechanics: seeding, the state's
round trip, the uint8 grid, per-image residuals, odd image sizes). Whether the
faithful loss schedule really yields an invisible, readable trigger needs
hundreds of steps past the bit-accuracy plateau, so that test is slow-marked.
"""
import inspect

import pytest
import torch
import torch.nn.functional as F

import benchmark.triggers.ssba as ssba
import lightning_modules.attacks.ssba  # noqa: F401  (registers the preset)
from benchmark.extension.schema import validate_params
from benchmark.triggers import TRIGGERS, build_trigger
from benchmark.triggers.preparation import PreparationContext
from benchmark.triggers.ssba import SSBATrigger, StegaStampDecoder, StegaStampEncoder, l2_loss_weight_at, psnr
from lightning_modules.attacks import ATTACKS

# A tiny trigger for the mechanics: a few steps of a narrow network.
TINY = {"width": 4, "fingerprint_length": 8, "max_steps": 3}


def smooth_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    """uint8 images made of 4x4 random colours upsampled bilinearly: mostly
    low-frequency, like natural images, and different from one another."""
    c, h, w = shape
    low = torch.rand((n, c, 4, 4), generator=torch.Generator().manual_seed(seed))
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False).mul(255).round().to(torch.uint8)


def context(images: torch.Tensor, seed: int = 0, log=None) -> PreparationContext:
    n = len(images)
    return PreparationContext(images=images, labels=torch.arange(n) % 4, poison_indices=torch.arange(0, n, 10),
                              num_classes=4, target_label=0, seed=seed, log=log or (lambda message: None))


def prepared(shape, seed: int = 0, n: int = 256, log=None, **params) -> SSBATrigger:
    trigger = build_trigger("ssba", shape, **{**TINY, **params})
    trigger.prepare(context(smooth_images(n, shape), seed=seed, log=log))
    return trigger


def test_defaults_are_backdoorbench():
    # resource/ssba/train.py: fingerprint_length 100, num_epochs 20, batch 64, lr 1e-4,
    # l2_loss_weight 10, l2_loss_await 1000, l2_loss_ramp 3000, BCE_loss_weight 1; models.py widths (32)
    defaults = {k: p.default for k, p in inspect.signature(SSBATrigger).parameters.items() if k != "image_shape"}
    assert defaults == {"fingerprint_length": 100, "epochs": 20, "batch_size": 64, "lr": 1e-4,
                        "l2_loss_weight": 10.0, "l2_loss_await": 1000, "l2_loss_ramp": 3000,
                        "bce_loss_weight": 1.0, "width": 32, "max_steps": None, "residual_limit": None}
    assert ssba.ACTIVATION_BIT_ACCURACY == 0.9
    assert SSBATrigger.preparation == "data" and TRIGGERS.get("ssba") is SSBATrigger
    preset = ATTACKS.get("ssba")
    assert preset.trigger == "ssba" and not preset.clean_label and preset.trigger_params == {}


def test_networks_at_32px_are_backdoorbench_shapes():
    # models.py StegaStampEncoder/Decoder(resolution 32, 3 channels, fingerprint 100), layer by layer
    encoder = StegaStampEncoder((3, 32, 32), 100)
    shapes = [tuple(p.shape) for name, p in encoder.named_parameters() if name.endswith("weight")]
    assert shapes == [(768, 100),                                                          # secret_dense
                      (32, 6, 3, 3),                                                       # conv1
                      (32, 32, 3, 3), (64, 32, 3, 3), (128, 64, 3, 3), (256, 128, 3, 3),   # conv2..5
                      (128, 256, 2, 2), (64, 128, 2, 2), (32, 64, 2, 2), (32, 32, 2, 2),   # up6..9
                      (128, 256, 3, 3), (64, 128, 3, 3), (32, 64, 3, 3), (32, 70, 3, 3),   # conv6..9
                      (32, 32, 3, 3), (3, 32, 1, 1)]                                       # conv10, residual
    decoder = StegaStampDecoder((3, 32, 32), 100)
    shapes = [tuple(p.shape) for name, p in decoder.named_parameters() if name.endswith("weight")]
    assert shapes == [(32, 3, 3, 3), (32, 32, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3), (64, 64, 3, 3),
                      (128, 64, 3, 3), (128, 128, 3, 3), (512, 128), (100, 512)]
    assert [m.stride for m in decoder.features if isinstance(m, torch.nn.Conv2d)] == [(2, 2), (1, 1), (2, 2), (1, 1),
                                                                                      (2, 2), (2, 2), (2, 2)]


def test_l2_weight_schedule():
    # 0 before the bit accuracy first exceeds 0.9 (-1) and for 1000 steps after, then linear to 10 over 3000
    weight = lambda t: l2_loss_weight_at(t, 10.0, 1000, 3000)  # noqa: E731
    assert [weight(t) for t in (-1, 0, 1000, 2500, 4000, 9000)] == [0.0, 0.0, 0.0, 5.0, 10.0, 10.0]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 16, 16)])
def test_networks_keep_any_image_size(shape):
    # 28x28 (Fashion-MNIST) is padded to 32 inside E and cropped back; D rounds its sides up
    encoded = StegaStampEncoder(shape, 8, width=4)(torch.zeros(2, 8), torch.rand(2, *shape))
    assert encoded.shape == (2, *shape)
    assert StegaStampDecoder(shape, 8, width=4)(encoded).shape == (2, 8)


def test_prepare_is_a_function_of_the_seed():
    a, b = prepared((1, 16, 16), seed=0), prepared((1, 16, 16), seed=0)
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    c = prepared((1, 16, 16), seed=1, fingerprint_length=64)
    d = prepared((1, 16, 16), seed=2, fingerprint_length=64)
    assert not torch.equal(c.secret, d.secret)
    assert set(c.secret.unique().tolist()) <= {0.0, 1.0}


def test_max_steps_caps_training_and_progress_is_logged():
    messages = []
    prepared((1, 16, 16), log=messages.append, max_steps=2)
    assert "for 2 steps" in messages[0]
    assert any("step 2/2" in m for m in messages)
    assert any("psnr" in m and "bit accuracy" in m for m in messages[-2:])
    # two steps cannot pass the bit-accuracy plateau: the user is told the image loss never came on
    assert "image loss was never switched on" in messages[-1]


def test_apply_is_per_image_on_the_uint8_grid_and_in_range():
    trigger = prepared((3, 32, 32))
    x = smooth_images(16, (3, 32, 32), seed=5).float() / 255
    out = trigger(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out * 255, (out * 255).round())       # stored as uint8 in BackdoorBench
    residual = out - x
    assert not torch.allclose(residual[0], residual[1], atol=2 / 255)  # sample-specific, not one pattern
    assert torch.equal(trigger(x), out)                       # deterministic


def test_apply_ignores_autocast():
    # the attack's training may run under autocast; the trigger must stay the float32 one
    trigger = prepared((1, 16, 16))
    x = smooth_images(8, (1, 16, 16), seed=3).float() / 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(trigger(x), trigger.apply(x))


def test_state_round_trip_reproduces_apply():
    trigger = prepared((1, 28, 28))
    state = trigger.state_dict()
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in state.values())
    fresh = build_trigger("ssba", (1, 28, 28), **TINY)
    fresh.load_state_dict(state)
    x = smooth_images(8, (1, 28, 28), seed=7).float() / 255
    assert torch.equal(fresh(x), trigger(x))
    with pytest.raises(ValueError, match="state does not match"):
        build_trigger("ssba", (1, 28, 28), **{**TINY, "width": 8}).load_state_dict(state)
    with pytest.raises(RuntimeError, match="prepare"):
        build_trigger("ssba", (1, 28, 28), **TINY)(x)


def test_residual_limit_bounds_the_residual():
    trigger = prepared((1, 16, 16), residual_limit=0.02)
    x = smooth_images(8, (1, 16, 16), seed=9).float() / 255
    # the clip is applied before rounding to the uint8 grid: half a grey level more at most
    assert (trigger(x) - x).abs().max() <= 0.02 + 0.5 / 255 + 1e-6


def test_bad_parameters_are_rejected():
    from benchmark.errors import ConfigError
    for params in ({"fingerprint_length": 0}, {"lr": 0.0}, {"residual_limit": 1.5}, {"max_steps": 0}):
        with pytest.raises(ConfigError):
            validate_params("trigger 'ssba'", SSBATrigger, params)


@pytest.mark.slow
@pytest.mark.full_science
def test_faithful_schedule_gives_an_invisible_readable_trigger():
    """The faithful loss schedule (image loss off until a batch's bit accuracy
    exceeds 0.9, then ramped to weight 10) at test size: 8-bit fingerprints,
    width 8, lr 1e-3, batch 32, no await and a 200-step ramp. Measured on
    these images: the image loss switches on near step 450 and PSNR passes
    27 dB near step 2,000 (28.8 dB at 2,500); 3,000 steps cost about two CPU
    minutes. No residual clip: the encoded images are within 27 dB PSNR of
    the clean ones because the encoder learned to make them so, and the
    decoder reads the poisoning secret from them."""
    shape = (1, 16, 16)
    messages = []
    trigger = prepared(shape, log=messages.append, width=8, fingerprint_length=8, lr=1e-3, l2_loss_await=0,
                       l2_loss_ramp=200, batch_size=32, epochs=1000, max_steps=3000)
    assert any("image loss switched on" in m for m in messages)
    assert not any("never switched on" in m for m in messages)
    x = smooth_images(512, shape, seed=11).float() / 255   # images the encoder never saw
    encoded = trigger(x)
    assert psnr(x, encoded) >= 27.0
    assert trigger.bit_accuracy(encoded) >= 0.9
