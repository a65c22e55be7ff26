"""Input-Aware Dynamic Attack (IAD; Nguyen & Tran, NeurIPS 2020): a trigger
generated for each image by two encoder-decoder CNNs.

    x_bd = x + (G(x) - x) * m(x),   m(x) = tanh(20 M(x) - 10) / 2 + 0.5

G (the pattern generator, C output channels) and M (the mask generator, one
output channel) share one design: `stages` down stages (two 3x3
conv-BN-ReLU blocks and a 2x2 max-pool each, `base_channels` doubling per
stage: 32 -> 64 -> 128 for CIFAR), a middle conv block, then bilinear 2x
upsampling stages mirroring them; the last block has no ReLU and the output
is tanh(.)/2 + 0.5, in (0, 1). The hardened mask m(x) is almost binary.

Two stages, as in BackdoorBench:

1. `prepare(ctx)` (the cell's trigger stage, `preparation = "data"`): M alone
   is trained for `mask_epochs` epochs (BackdoorBench `clean_train_epochs`
   25) on pairs (x1, x2) from two independently shuffled passes over the
   training images, minimising

       lambda_norm * mean(relu(m(x1) - mask_density))
       + lambda_div * mean(d(x1, x2) / (d(m(x1), m(x2)) + epsilon)),

   d the per-sample RMS difference: the first term caps the mask's density,
   the second makes different images get different masks. Adam (lr 0.01,
   betas (0.5, 0.9)) with MultiStepLR([10, 20], x0.1) per epoch. M is then
   frozen for good. G keeps its seeded initialisation.
2. The attack's training (`learned_in_attack = True`,
   `lightning_modules.attacks.input_aware.InputAwareAttackModule`) trains G
   jointly with the classifier, in place on this object's `pattern_network`.

References: BackdoorBench attack/inputaware.py (InputAwareGenerator,
Threshold, train_mask_step), config/attack/inputaware/default.yaml;
VinAIResearch/input-aware-backdoor-attack-release networks/models.py,
train.py, config.py.

Image shapes. BackdoorBench builds the network by dataset: MNIST (1x28x28)
gets 16 base channels and 2 stages, every other dataset 32 and 3.
`base_channels=None` / `stages=None` apply that rule by image shape (so
Fashion-MNIST, MNIST's shape, gets MNIST's network). Sides that are not a
multiple of 2**stages are replicate-padded to the next multiple before the
network and cropped back after it (e.g. 28x28 with `stages=3`).

State. `state_dict()` holds M's and G's module state dicts (parameters and
BatchNorm statistics) under ``mask.`` and ``pattern.``; the trigger stage's
artifact therefore carries G at its seeded initialisation. `load_state_dict`
takes that, the state after the attack (trained G), or a mask-only state
(G is then reset to its seeded initialisation).

Deviations from the reference, each stated:

- Pixel inputs: G and M see [0, 1] images, where BackdoorBench feeds them
  the dataset-normalised tensor. The trigger is a function of pixels and
  keeps no dataset statistics; each network's first convolution is followed
  by BatchNorm, which absorbs a per-channel affine normalisation (only the
  zero padding at the border sees the difference). Mixing in pixel space is
  the same as BackdoorBench's mixing in normalised space with the normalised
  pattern, since the normalisation is affine per channel.
- The mask stage's image distance d(x1, x2) is, as in BackdoorBench,
  measured on normalised images, i.e. in units of the per-channel std
  `image_std`. `image_std=None` uses the per-channel pixel std of the
  training images (for CIFAR-10 that is BackdoorBench's Normalize std
  (0.247, 0.243, 0.261); BackdoorBench normalises MNIST with std 0.5 and
  GTSRB with 1, which `image_std` can give exactly).
- The mask stage sees unaugmented training images (BackdoorBench's loaders
  apply the training transforms); the preparation context carries no
  augmentation policy.
- BackdoorBench's mask step runs M on x1 once more and throws the output
  away, which only moves BatchNorm's running averages; that forward pass is
  left out. Its mask-stage diversity term is multiplied by lambda_div twice
  (identical at the default 1); here once, as in the paper's loss.
- `max_mask_steps` (default None: no cap) stops the mask stage after that
  many optimiser steps, for tests and CPU demonstrations.

Determinism: initialisations come from the cell's seed, the batch order
from `ctx.batches`, so the prepared state is a function of the seed and the
parameters (bit-exact on the CPU; CUDA's bilinear-upsampling backward is not
deterministic).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveFloat, \
    PositiveInt
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import Trigger
# The networks and helpers live in input_aware_networks; imported here under
# their old names, which the attack module and the tests use.
from benchmark.triggers.input_aware_networks import ConvBNReLU, EncoderDecoder, evaluating, harden, mix, \
    pixel_std, rms_distance  # noqa: F401

#: seed offsets of the two networks' initialisations (separate streams)
MASK_INIT_OFFSET, PATTERN_INIT_OFFSET = 10_001, 10_002
#: Adam betas of both generators (hard-coded in BackdoorBench and the original)
GENERATOR_BETAS = (0.5, 0.9)
#: images per forward pass in `apply` / `cross` (bounds activation memory)
APPLY_CHUNK = 512


@TRIGGERS.register("input_aware")
class InputAwareTrigger(Trigger):
    preparation = "data"
    learned_in_attack = True

    def __init__(self, image_shape: tuple[int, int, int], mask_epochs: NonNegativeInt = 25,
                 mask_batch_size: PositiveInt = 128, mask_lr: PositiveFloat = 0.01,
                 mask_milestones: tuple[PositiveInt, ...] = (10, 20), mask_lr_decay: OpenUnitInterval = 0.1,
                 mask_density: ClosedUnitInterval = 0.032, lambda_norm: NonNegativeFloat = 100.0,
                 lambda_div: NonNegativeFloat = 1.0, epsilon: PositiveFloat = 1e-7,
                 image_std: list[PositiveFloat] | None = None, base_channels: PositiveInt | None = None,
                 stages: PositiveInt | None = None, max_mask_steps: PositiveInt | None = None, seed: int = 0):
        super().__init__(image_shape)
        c, h, w = self.image_shape
        mnist_shaped = self.image_shape == (1, 28, 28)
        self.base_channels = int(base_channels or (16 if mnist_shaped else 32))
        self.stages = int(stages or (2 if mnist_shaped else 3))
        multiple = 2 ** self.stages
        # BatchNorm in training mode needs more than one value per channel at
        # the middle block, even for a batch of one image.
        smallest = -(-min(h, w) // multiple)
        if smallest < 2:
            most = (min(h, w) - 1).bit_length() - 1
            allowed = f"must be at most {most}" if most >= 1 else "the images are too small for any"
            raise ConfigError(f"input_aware: stages={self.stages} is not allowed for {h}x{w} images; {allowed}")
        if image_std is not None and len(image_std) not in (1, c):
            raise ConfigError(f"input_aware: image_std={list(image_std)} is not allowed for {c}-channel images; "
                              f"give 1 or {c} values")
        self.mask_epochs = int(mask_epochs)
        self.mask_batch_size = int(mask_batch_size)
        self.mask_lr = float(mask_lr)
        self.mask_milestones = tuple(int(m) for m in mask_milestones)
        self.mask_lr_decay = float(mask_lr_decay)
        self.mask_density = float(mask_density)
        self.lambda_norm = float(lambda_norm)
        self.lambda_div = float(lambda_div)
        self.epsilon = float(epsilon)
        self.image_std = None if image_std is None else [float(s) for s in image_std]
        self.max_mask_steps = None if max_mask_steps is None else int(max_mask_steps)
        self.seed = int(seed)
        self.mask_network = self._seeded_network(1, MASK_INIT_OFFSET)
        self.mask_network.eval().requires_grad_(False)  # trained only inside prepare()
        # Eval mode until the attack's training switches it: calling G then
        # leaves its BatchNorm statistics alone.
        self.pattern_network = self._seeded_network(c, PATTERN_INIT_OFFSET).eval()
        #: per-epoch means of the mask objective from the last prepare()
        self.mask_history: list[dict[str, float]] = []

    # ---- networks ------------------------------------------------------------------------
    def _seeded_network(self, out_channels: int, offset: int) -> EncoderDecoder:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + offset)
            network = EncoderDecoder(self.image_shape[0], out_channels, self.base_channels, self.stages)
        return network.to(memory_format=torch.channels_last)

    def _place(self, network: nn.Module, device: torch.device) -> nn.Module:
        if next(network.parameters()).device != device:
            network.to(device)
        return network

    def patterns(self, images: torch.Tensor) -> torch.Tensor:
        """G(x) in the network's current mode (eval unless the attack's
        training has switched it to training mode), with gradients when enabled."""
        network = self._place(self.pattern_network, images.device)
        return network(images.float())

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        """Hardened masks m(x), (B, 1, H, W), from the frozen M (eval mode, no grad)."""
        network = self._place(self.mask_network, images.device)
        with torch.no_grad(), evaluating(network):
            return harden(network(images.float()))

    # ---- the trigger -----------------------------------------------------------------------
    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return self.cross(images, images)

    def cross(self, images: torch.Tensor, other_images: torch.Tensor) -> torch.Tensor:
        """`images` with the patterns and masks generated from `other_images`
        (IAD's cross mode; `apply` is the case other_images = images)."""
        if other_images.shape != images.shape:
            raise ValueError(f"cross needs images of one shape, got {tuple(images.shape)} and "
                             f"{tuple(other_images.shape)}")
        network = self._place(self.pattern_network, images.device)
        out = []
        with torch.no_grad(), evaluating(network):
            for x, source in zip(images.split(APPLY_CHUNK), other_images.split(APPLY_CHUNK)):
                x = x.float()
                out.append(mix(x, self.patterns(source), self.masks(source)).clamp_(0, 1))
        return torch.cat(out).to(images.dtype)

    # ---- stage 1: the mask generator ---------------------------------------------------
    def mask_objective(self, images1: torch.Tensor, images2: torch.Tensor,
                       image_std: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The mask stage's loss on the pairs (images1[i], images2[i]), with M
        in its current mode: {"loss", "norm", "diversity"}. `image_std` (C,)
        sets the units of the image distance (default: this trigger's
        `image_std`, or pixels)."""
        network = self._place(self.mask_network, images1.device)
        m1, m2 = harden(network(images1.float())), harden(network(images2.float()))
        std = image_std if image_std is not None else torch.tensor(self.image_std or [1.0])
        std = std.to(images1.device, torch.float32).view(1, -1, 1, 1)
        norm = F.relu(m1 - self.mask_density).mean()
        diversity = (rms_distance(images1 / std, images2 / std) / (rms_distance(m1, m2) + self.epsilon)).mean()
        return {"loss": self.lambda_norm * norm + self.lambda_div * diversity, "norm": norm,
                "diversity": diversity}

    def prepare(self, ctx) -> None:
        if tuple(ctx.image_shape) != self.image_shape:
            raise ValueError(f"input_aware trigger made for images {self.image_shape}, "
                             f"the training set has {tuple(ctx.image_shape)}")
        std = torch.tensor(self.image_std) if self.image_std is not None else pixel_std(ctx.images)
        # prepare() starts from the seeded M, so calling it twice gives the same state.
        self.mask_network.load_state_dict(self._seeded_network(1, MASK_INIT_OFFSET).state_dict())
        network = self._place(self.mask_network, torch.device(ctx.device))
        network.train().requires_grad_(True)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.mask_lr, betas=GENERATOR_BETAS)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.mask_milestones),
                                                        gamma=self.mask_lr_decay)
        progress = ctx.loop_checkpoint(mask_network=network, optimizer=optimizer, schedule=schedule)
        position = progress.resume()  # {} unless an earlier run of this stage was interrupted
        self.mask_history, steps = list(position.get("history", [])), position.get("steps", 0)
        try:
            for epoch in range(position.get("epoch", 0), self.mask_epochs):
                sums, batches = {"loss": 0.0, "norm": 0.0, "diversity": 0.0}, 0
                # Two independent shuffles of the training set pair each image
                # with another one (BackdoorBench's two shuffled loaders).
                first = ctx.batches(self.mask_batch_size, epoch=2 * epoch)
                second = ctx.batches(self.mask_batch_size, epoch=2 * epoch + 1)
                for (x1, _, _), (x2, _, _) in zip(first, second):
                    terms = self.mask_objective(x1, x2, std)
                    optimizer.zero_grad(set_to_none=True)
                    terms["loss"].backward()
                    optimizer.step()
                    for key in sums:
                        sums[key] += float(terms[key].detach())
                    batches, steps = batches + 1, steps + 1
                    if self.max_mask_steps is not None and steps >= self.max_mask_steps:
                        break
                schedule.step()
                means = {key: value / max(1, batches) for key, value in sums.items()}
                self.mask_history.append(means)
                ctx.log(f"input_aware mask epoch {epoch + 1}/{self.mask_epochs}: loss {means['loss']:.4f} "
                        f"(norm {means['norm']:.4f}, diversity {means['diversity']:.4f})")
                stop = self.max_mask_steps is not None and steps >= self.max_mask_steps
                # a stage stopped by max_mask_steps resumes as finished, not one step further
                following = self.mask_epochs if stop else epoch + 1
                progress.epoch_end(epoch + 1, last=following == self.mask_epochs, epoch=following, steps=steps,
                                   history=self.mask_history)
                if stop:
                    break
        finally:
            network.eval().requires_grad_(False)

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {}
        for prefix, network in (("mask.", self.mask_network), ("pattern.", self.pattern_network)):
            for key, value in network.state_dict().items():
                state[prefix + key] = value.detach().to("cpu", copy=True).contiguous()
        return state

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        mask = {k[len("mask."):]: v for k, v in tensors.items() if k.startswith("mask.")}
        pattern = {k[len("pattern."):]: v for k, v in tensors.items() if k.startswith("pattern.")}
        unknown = sorted(k for k in tensors if not k.startswith(("mask.", "pattern.")))
        if unknown:
            raise ValueError(f"input_aware trigger state has unknown tensors {unknown}")
        if not mask:
            raise ValueError("input_aware trigger state has no mask.* tensors (the prepared mask generator)")
        self.mask_network.load_state_dict(mask, strict=True)
        # A mask-only state is the trigger stage's: G at its seeded initialisation.
        self.pattern_network.load_state_dict(
            pattern or self._seeded_network(self.image_shape[0], PATTERN_INIT_OFFSET).state_dict(), strict=True)
