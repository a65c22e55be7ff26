"""SSBA / ISSBA (Li et al., ICCV 2021): a sample-specific, invisible trigger.

A StegaStamp-style encoder E(s, x) returns an image that looks like x and
carries the bit string s; a decoder D reads s back. Every poisoned (and every
test-time) image is encoded with one fixed secret, so the residual E(s, x) - x
differs from image to image while the hidden message stays the same.

Reference: BackdoorBench ``resource/ssba/{models.py, train.py,
embed_fingerprints.py}``, ``config/attack/ssba/default.yaml`` and
``attack/ssba.py`` (BackdoorBench trains E and D once, offline, encodes the
whole data set and loads the stored uint8 arrays). Here `prepare` does the
same inside the cell's trigger stage:

- training (``train.py``): E and D are trained jointly on all of the
  attacker's clean training images with a fresh random fingerprint per image
  and step; loss = w(t) * MSE(E(s, x), x) + bce_loss_weight * BCE(D(E(s, x)), s).
  w is 0 until the bitwise accuracy of a batch exceeds 0.9; once it has,
  w = clip(l2_loss_weight * (t - l2_loss_await) / l2_loss_ramp, 0,
  l2_loss_weight) with t the steps since that batch. Adam, one optimiser for
  both networks; the output is the encoded image itself (``use_residual 0``:
  a sigmoid image, not x + residual).
- networks (``models.py``): the secret goes through a linear map and a ReLU
  to a 16x16 map per channel, is upsampled (nearest) to the image size and
  concatenated with the image; four stride-2 convolutions go down, four
  nearest-upsample + 2x2 convolutions come back up with skip connections, the
  last merge also sees the input, then two 3x3 convolutions and a 1x1
  convolution with a sigmoid. D is seven 3x3 convolutions (five of stride 2)
  and two linear layers.
- embedding (``embed_fingerprints.py``): every image is encoded with the
  same fingerprint (``--identical_fingerprints``), and the result is stored
  as uint8 images, so `apply` rounds to the uint8 grid.

Defaults are BackdoorBench's: fingerprint_length 100, num_epochs 20, batch
64, lr 1e-4, l2_loss_weight 10, l2_loss_await 1000, l2_loss_ramp 3000,
BCE_loss_weight 1, base width 32 (channels 32-32-64-128-256 in E,
32-32-64-64-64-128-128 and a 512-unit hidden layer in D).

Deviations, each named:

- the secret is a bit string drawn from the cell's seed, not the
  BCH-coded string "stega!!" of ``embed_fingerprints.py`` (no bchlib; the
  error-correcting code matters only for reading the message back as text,
  which the attack never does);
- images whose sides are not multiples of 16 (Fashion-MNIST's 28x28) are
  padded (replicate, bottom and right) to the next multiple of 16 for E and
  cropped back; BackdoorBench's networks only accept multiples of 32. D reads
  the unpadded image (its stride-2 convolutions round up). For 32x32 both
  networks are exactly BackdoorBench's;
- `width` scales every channel count of E and D (BackdoorBench: 32); a
  smaller width trades fidelity for CPU time;
- `max_steps` caps the number of training steps (tests, CPU demos);
  `None` trains the full `epochs`;
- `residual_limit` (off by default, the faithful behaviour) clips the
  residual E(s, x) - x to +-residual_limit in [0, 1] pixel units before
  quantisation.

Cost (measured, one CPU core, batch 64, CPU seconds per training step):
width 32 about 1.1 s, width 16 about 0.36 s, width 8 about 0.16 s, for
1x28x28 and 3x32x32 alike (28 is padded to 32). Fashion-MNIST's 60,000
images for 20 epochs are 18,760 steps: about 5.7 CPU-hours at width 32,
1.9 at width 16, 0.8 at width 8; a GPU takes minutes. The bit accuracy sits
at chance for the first ~10^3 steps before the encoder and decoder agree on
a code, so `max_steps` far below that leaves an untrained trigger: until a
batch's bit accuracy exceeds 0.9 the image loss is off and the encoded
images need not resemble the originals (on Fashion-MNIST at width 8 the bit
accuracy was 0.68 and the PSNR 6 dB after 6,000 of the 18,760 steps);
`prepare` logs a warning when training ends in that state.

State (`state_dict`): ``secret``, ``encoder.*`` and ``decoder.*`` (the
decoder is not needed by `apply`; it is kept so that `bit_accuracy` can
check that poisoned images carry the secret).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from benchmark.extension.schema import NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import Trigger
# The networks live in stegastamp; imported here under their old names.
from benchmark.triggers.stegastamp import LEVELS, SECRET_MAP_SIDE, StegaStampDecoder, StegaStampEncoder  # noqa: F401

#: bitwise accuracy of a training batch that switches the image loss on (hard-coded in train.py)
ACTIVATION_BIT_ACCURACY = 0.9
#: images encoded per forward pass in `apply` (bounds memory; not a per-sample loop)
APPLY_CHUNK = 256
#: streams of the cell's generator used here (ctx.batches uses offsets 1..epochs for the data order)
_INIT_OFFSET, _FINGERPRINT_OFFSET, _SECRET_OFFSET = 1_000_001, 1_000_002, 1_000_003


def l2_loss_weight_at(steps_since_activation: int, weight: float, await_steps: int, ramp_steps: int) -> float:
    """BackdoorBench train.py's schedule: 0 before activation (-1) and for
    `await_steps` after it, then linear up to `weight` over `ramp_steps`."""
    return min(max(0.0, weight * (steps_since_activation - await_steps) / ramp_steps), weight)


def psnr(clean: torch.Tensor, encoded: torch.Tensor) -> float:
    """Mean over images of 10 log10(1 / MSE) in dB, images in [0, 1]."""
    mse = (encoded.float() - clean.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())


@TRIGGERS.register("ssba")
class SSBATrigger(Trigger):
    preparation = "data"

    def __init__(self, image_shape: tuple[int, int, int], fingerprint_length: PositiveInt = 100,
                 epochs: PositiveInt = 20, batch_size: PositiveInt = 64, lr: PositiveFloat = 1e-4,
                 l2_loss_weight: NonNegativeFloat = 10.0, l2_loss_await: NonNegativeInt = 1000,
                 l2_loss_ramp: PositiveInt = 3000, bce_loss_weight: PositiveFloat = 1.0,
                 width: PositiveInt = 32, max_steps: PositiveInt | None = None,
                 residual_limit: OpenUnitInterval | None = None):
        super().__init__(image_shape)
        self.fingerprint_length, self.epochs, self.batch_size, self.lr = fingerprint_length, epochs, batch_size, lr
        self.l2_loss_weight, self.l2_loss_await, self.l2_loss_ramp = l2_loss_weight, l2_loss_await, l2_loss_ramp
        self.bce_loss_weight, self.width, self.max_steps = bce_loss_weight, width, max_steps
        self.residual_limit = residual_limit
        self.encoder: StegaStampEncoder | None = None
        self.decoder: StegaStampDecoder | None = None
        self.secret: torch.Tensor | None = None   # (fingerprint_length,) float in {0, 1}

    # ---- networks -------------------------------------------------------------------
    def _networks(self) -> tuple[StegaStampEncoder, StegaStampDecoder]:
        return (StegaStampEncoder(self.image_shape, self.fingerprint_length, self.width),
                StegaStampDecoder(self.image_shape, self.fingerprint_length, self.width))

    # ---- preparation ----------------------------------------------------------------
    def prepare(self, ctx) -> None:
        if tuple(ctx.image_shape) != self.image_shape:
            raise ValueError(f"ssba: trigger made for images {self.image_shape}, data has {tuple(ctx.image_shape)}")
        device = torch.device(ctx.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=ctx.generator(_INIT_OFFSET))))
            encoder, decoder = self._networks()
        encoder, decoder = encoder.to(device).train(), decoder.to(device).train()
        optimiser = torch.optim.Adam(list(decoder.parameters()) + list(encoder.parameters()), lr=self.lr)
        fingerprint_gen = ctx.generator(_FINGERPRINT_OFFSET)

        steps_per_epoch = math.ceil(len(ctx.images) / self.batch_size)
        total = self.epochs * steps_per_epoch if self.max_steps is None else min(self.max_steps,
                                                                                 self.epochs * steps_per_epoch)
        log_every = max(1, min(200, total // 10))
        ctx.log(f"ssba: training the StegaStamp encoder/decoder for {total} steps "
                f"({len(ctx.images)} images, batch {self.batch_size}, width {self.width})")
        progress = ctx.loop_checkpoint(encoder=encoder, decoder=decoder, optimiser=optimiser,
                                       fingerprints=fingerprint_gen)
        position = progress.resume()  # {} unless an earlier run of this stage was interrupted
        step, since_activation = position.get("step", 0), position.get("since_activation", -1)
        for epoch in range(position.get("epoch", 0), self.epochs):
            for images, _, _ in ctx.batches(self.batch_size, epoch=epoch):
                if step >= total:
                    break
                step += 1
                fingerprints = torch.randint(0, 2, (len(images), self.fingerprint_length),
                                             generator=fingerprint_gen).float().to(device)
                w = l2_loss_weight_at(since_activation, self.l2_loss_weight, self.l2_loss_await, self.l2_loss_ramp)
                encoded = encoder(fingerprints, images)
                logits = decoder(encoded)
                l2 = F.mse_loss(encoded, images)
                bce = F.binary_cross_entropy_with_logits(logits, fingerprints)
                loss = w * l2 + self.bce_loss_weight * bce
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                bit_accuracy = float(((logits.detach() > 0).float() == fingerprints).float().mean())
                if since_activation == -1:
                    if bit_accuracy > ACTIVATION_BIT_ACCURACY:
                        since_activation = 0
                        ctx.log(f"ssba: step {step}: bitwise accuracy {bit_accuracy:.3f}, image loss switched on")
                else:
                    since_activation += 1
                if step % log_every == 0 or step == total:
                    ctx.log(f"ssba: step {step}/{total} epoch {epoch}: bce {bce.item():.4f} mse {l2.item():.5f} "
                            f"(psnr {10 * math.log10(1 / max(l2.item(), 1e-12)):.1f} dB) l2 weight {w:.2f} "
                            f"bit accuracy {bit_accuracy:.3f}")
            progress.epoch_end(epoch + 1, last=step >= total or epoch + 1 == self.epochs, epoch=epoch + 1,
                               step=step, since_activation=since_activation)
            if step >= total:
                break

        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        self.secret = torch.randint(0, 2, (self.fingerprint_length,), generator=ctx.generator(_SECRET_OFFSET)).float()
        sample = ctx.float_images(torch.arange(min(len(ctx.images), 1024)))
        encoded = self.apply(sample)
        ctx.log(f"ssba: with the poisoning secret on {len(sample)} training images: psnr {psnr(sample, encoded):.2f} dB, "
                f"bit accuracy {self.bit_accuracy(encoded):.3f}")
        if since_activation == -1:
            # train.py's schedule never weighs the image loss in this case: the encoded images need not
            # resemble the originals at all, which a user comparing PSNRs must know
            ctx.log(f"ssba: warning: the bitwise accuracy never exceeded {ACTIVATION_BIT_ACCURACY} in {step} steps, "
                    f"so the image loss was never switched on; train longer (epochs, max_steps)")

    # ---- the trigger -------------------------------------------------------------------
    def _ready(self, device: torch.device) -> tuple[StegaStampEncoder, torch.Tensor]:
        if self.encoder is None or self.secret is None:
            raise RuntimeError("ssba: the trigger has no encoder yet; call prepare() or load_state_dict() first")
        if next(self.encoder.parameters()).device != device:
            self.encoder.to(device)
        return self.encoder, self.secret.to(device)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        encoder, secret = self._ready(images.device)
        out = []
        # float32 outside any autocast: the trigger must not depend on the caller's precision
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            for chunk in images.float().split(APPLY_CHUNK):
                encoded = encoder(secret.expand(len(chunk), -1), chunk)
                if self.residual_limit is not None:
                    encoded = chunk + (encoded - chunk).clamp(-self.residual_limit, self.residual_limit)
                # BackdoorBench stores the encoded images as uint8
                out.append(encoded.mul(255).round().div(255).clamp(0, 1))
        return torch.cat(out).to(images.dtype) if out else images.clone()

    def bit_accuracy(self, images: torch.Tensor) -> float:
        """Fraction of the secret's bits the decoder reads from `images`."""
        if self.decoder is None or self.secret is None:
            raise RuntimeError("ssba: the trigger has no decoder yet; call prepare() or load_state_dict() first")
        decoder = self.decoder.to(images.device)
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            bits = torch.cat([(decoder(chunk) > 0).float() for chunk in images.float().split(APPLY_CHUNK)])
        return float((bits == self.secret.to(images.device)).float().mean()) if len(bits) else float("nan")

    # ---- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.encoder is None or self.decoder is None or self.secret is None:
            raise RuntimeError("ssba: nothing to save before prepare()")
        state = {"secret": self.secret.detach().cpu().contiguous()}
        for prefix, net in (("encoder.", self.encoder), ("decoder.", self.decoder)):
            state.update({prefix + k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
        return state

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        encoder, decoder = self._networks()
        expected = {"secret": (self.fingerprint_length,)}
        for prefix, net in (("encoder.", encoder), ("decoder.", decoder)):
            expected.update({prefix + k: tuple(v.shape) for k, v in net.state_dict().items()})
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if got != expected:
            wrong = sorted(k for k in expected.keys() & got.keys() if expected[k] != got[k])
            raise ValueError(f"ssba: state does not match the trigger's parameters (fingerprint_length, width, "
                             f"image shape); missing {sorted(expected.keys() - got.keys())}, unexpected "
                             f"{sorted(got.keys() - expected.keys())}, other shapes {wrong}")
        encoder.load_state_dict({k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")})
        decoder.load_state_dict({k[len("decoder."):]: v for k, v in tensors.items() if k.startswith("decoder.")})
        self.encoder, self.decoder = encoder.eval(), decoder.eval()
        self.secret = tensors["secret"].float().cpu()
