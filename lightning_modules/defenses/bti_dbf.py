"""BTI-DBF(U): Backdoor Trigger Inversion via Decoupling Benign Features,
the unlearning variant (Xu et al., ICLR 2024), as the PAM authors run it.

References (facts only):
- AISafety-HKUST/stable_backdoor_purification@7a9e3f5, fine_tune/BTIDBF/:
  `pretrain.py` (generator pre-training), `btidbfu.py` (`reverse`, `unlearn`,
  the round loop), `evaluate.py` (`get_target_label`), `models/mask.py`
  (the feature mask), `models/unet_model.py` + `models/unet_blocks.py` (the
  generator), `models/resnet.py` (`from_input_to_features`: layer4's output
  before pooling), `loader.py` (the clean loader: normalised, augmented,
  shuffled), `cfg.py` (defaults), `defense.sh` (the command that is run);
- the authors' release xuxiong0214/BTIDBF (`btidbfu.py`, `cfg.py`, README),
  for the differences listed at the end.

With f the backdoored classifier, F(x) its penultimate feature map and
h(.) the rest of the network (pooling, linear head), G a UNet generator and
CE / MSE the batch means:

0. Pre-training (`preround` epochs, Adam lr `gen_lr`, f frozen in eval mode):
   G learns to reproduce its input,
       L = CE(softmax(f(x)) as logits, softmax(f(G(x))) as soft targets)
           + MSE(F(x), F(G(x))) + w * MSE(x, G(x)),
   w = 100 while the image MSE is above 0.1, 0.01 otherwise (pretrain.py;
   the first term is the reference's `ce(softmax(cln_out), softmax(pur_out))`
   taken literally: the clean probabilities are the CE's logits).
1. For `nround` rounds, on a fresh copy f' of the current model:
   a. mask search (`mround` epochs, f' in *train* mode, as the reference
      sets it, so only the copy's BatchNorm statistics move): a mask
      m = tanh(a) / (2 + 1e-7) + 0.5 of F's shape (one sample), a ~ N(0, 1),
      minimises CE(h(m * F(x)), y) - CE(h((1 - m) * F(x)), y) with Adam
      (lr `mask_lr`): m keeps the benign features, 1 - m the rest;
   b. generator update (`uround` epochs, f' in eval mode, one Adam on G
      with lr `gen_lr`, created once and kept across rounds):
          benign = MSE(m F(x), m F(G(x))), backdoor = MSE((1-m) F(x), (1-m) F(G(x))),
          norm = MSE(x, G(x)),
          L = norm                             if norm > norm_bound or benign > feat_bound,
              -backdoor + 0.01 * benign        otherwise,
      plus CE(f'(G(x)), t) from the second round on, with t the label
      detected after round 0;
   c. after round 0: t = the most frequent prediction of f (eval) on
      G(x + 0.03 * noise) over the clean subset (`get_target_label`); with
      `early_stop`, later rounds recompute it and stop when it changes;
   d. unlearning (`ul_round` epochs, f in train mode, Adam lr 1e-4): in each
      batch a random int(0.2 * B + 1) images are replaced by G(x) (true
      labels kept) and
          L = CE(f(x_mixed), y) + MSE(F(x), F(x_mixed)).
   The training epochs are therefore nround * ul_round; steps a-c run at the
   start of every round's first epoch.

Defaults (cfg.py and defense.sh): batch 128; preround 50, gen_lr 1e-3;
mround 20 (mask Adam lr 0.01, btidbfu.py); uround 30, norm_bound 0.3,
feat_bound 3; nround 3 (defense.sh: `--nround 3`; cfg.py's default is 5 and
the BTI-DBF README uses 5: `nround=5` reproduces those); ul_round 30;
unlearning Adam lr 1e-4, betas (0.9, 0.999), no weight decay, no schedule
(btidbfu.py); 20 % + 1 generated images per batch, feature-loss weight 1;
early_stop False (`--earlystop` default); detection noise 0.03; UNet with 4
blocks of 32, 64, 128, 256 filters and a 512-filter bottleneck
(`UNet(base_filter_num=32, num_blocks=4)`); all phases on the augmented
clean loader. The reference uses 2,500 clean CIFAR-10 images; the suite
gives the defender its clean subset.

Deviations and options:
- Image space. The reference's images are normalised tensors and its UNet
  output is unbounded in that space. Here G maps [0, 1] pixels to [0, 1]
  pixels (a sigmoid after the 1x1 output convolution), so the generated
  images are valid images. The image MSE (`norm_bound`, pre-training's 0.1
  switch) and the detection noise are measured in the model's normalised
  units by default (`image_units="normalized"`: (x - mean) / std with the
  model's own statistics), where the reference's numbers were set;
  `image_units="pixel"` measures them in [0, 1] pixels.
- Sizes. The reference's UNet needs sides divisible by 2^blocks and, with
  InstanceNorm, a bottleneck larger than 1x1 (32x32 CIFAR gives 2x2). The
  input is padded (replicate) to the next multiple of 2^depth, at least
  2^(depth + 1), and the output cropped back: 28x28 and 16x16 images run
  at 32x32, 32x32 runs as the reference does. `unet_width` / `unet_depth`
  scale the generator.
- Feature map. `feature_site="map"` (default) reads F at the model's last
  stage output (the last of its `attention_layers`: layer4 of
  PreAct-ResNet18, as the reference's `from_input_to_features`), before
  pooling; `"pooled"` uses the linear head's input (for models that name no
  stages). The two mask branches run through h as one batch of 2B feature
  maps: exact for the suite's models, whose layers after the site (pooling,
  flatten, linear) act per sample.
- The unlearning's generated rows are drawn with torch's seeded generator
  (the reference uses Python's `random.sample`); G runs without gradient
  there (the reference lets gradients reach G and clears them before G's
  next update, the same updates).
- The bound test in step b is a `torch.where` on the device rather than a
  Python `if` (the same loss, no host sync).
- Precision: every phase runs in fp32 (`mixed_precision=False`), as the
  reference (no autocast anywhere); `mixed_precision=True` lets the
  unlearning steps use the trainer's precision (bf16 autocast on GPUs).
- `generated_fraction` (0.2) and `feature_loss_weight` (1) are the
  reference's constants made options; the authors' own release
  (xuxiong0214/BTIDBF) uses 0.1 and `feat_bound` 5.

`report`: `feature_site`, `detected_label`, `round_labels` (the label found
after each round where it was computed), `rounds` run, `early_stopped`,
per round `mask_mean`, `decoupling_loss` and `generator_image_mse` (means
over the last mask / generator epoch), and `pretrain_image_mse` (last
pre-training epoch).
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import Fraction, Momentum, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule

#: keeps the mask strictly inside (0, 1) (models/mask.py's _EPSILON)
MASK_EPSILON = 1e-7
#: pre-training: image MSE above which the image term weighs PRETRAIN_HIGH, else PRETRAIN_LOW (pretrain.py)
PRETRAIN_SWITCH, PRETRAIN_HIGH, PRETRAIN_LOW = 0.1, 100.0, 0.01
#: weight of the benign-feature term in the generator update (btidbfu.py)
BENIGN_WEIGHT = 0.01
#: the UNet's channel cap per encoder block (unet_model.py, "GPU mem constraints")
UNET_MAX_FILTERS = 512


# ---- the generator ------------------------------------------------------------------
def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 conv -> affine InstanceNorm -> LeakyReLU), the reference's EncoderBlock."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.InstanceNorm2d(out_channels, affine=True),
        nn.LeakyReLU(0.01),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.InstanceNorm2d(out_channels, affine=True),
        nn.LeakyReLU(0.01))


class UNetGenerator(nn.Module):
    """Image-to-image UNet: `depth` encoder blocks of width, 2 width, ...
    (capped at 512) with 2x2 max pooling, a bottleneck of twice the last
    width, decoder blocks that upsample with a 3x3 stride-2 transposed
    convolution (+ LeakyReLU) and concatenate the encoder output of the same
    scale, then a 1x1 convolution and a sigmoid. Any input size: sides are
    padded (replicate) to a multiple of 2^depth, at least 2^(depth + 1) so
    the bottleneck's InstanceNorm sees more than one pixel, and the output is
    cropped back."""

    def __init__(self, channels: int, width: int = 32, depth: int = 4):
        super().__init__()
        self.depth = depth
        widths = [min(width * 2 ** i, UNET_MAX_FILTERS) for i in range(depth)]
        self.encoders = nn.ModuleList()
        previous = channels
        for w in widths:
            self.encoders.append(_conv_block(previous, w))
            previous = w
        self.bottleneck = _conv_block(previous, 2 * previous)
        previous *= 2
        self.upsamplers, self.decoders = nn.ModuleList(), nn.ModuleList()
        for w in reversed(widths):
            self.upsamplers.append(nn.ConvTranspose2d(previous, previous, 3, stride=2, padding=1, output_padding=1))
            self.decoders.append(_conv_block(previous + w, w))
            previous = w
        self.output = nn.Conv2d(previous, channels, 1)

    def padded_side(self, side: int) -> int:
        unit = 2 ** self.depth
        return max(math.ceil(side / unit) * unit, 2 * unit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = self.padded_side(height) - height, self.padded_side(width) - width
        top, left = pad_h // 2, pad_w // 2
        if pad_h or pad_w:
            x = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="replicate")
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips)):
            x = decoder(torch.cat([F.leaky_relu(up(x), 0.01), skip], dim=1))
        out = torch.sigmoid(self.output(x))
        return out[..., top:top + height, left:left + width]


# ---- the feature map ------------------------------------------------------------------
class _Stop(Exception):
    """Ends a forward pass once the features are read (the rest is not needed)."""


class FeatureSite:
    """Where a model's penultimate features are read, or replaced, during its
    forward pass: a module's output (`at_input=False`) or a module's input
    (`at_input=True`, the linear head)."""

    def __init__(self, name: str, at_input: bool):
        self.name, self.at_input = name, at_input

    def run(self, model: nn.Module, x: torch.Tensor, edit: Callable[[torch.Tensor], torch.Tensor] | None = None,
            stop: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(logits, features) of `model` on `x`. With `edit` the rest of the
        network runs on edit(features); with `stop` it does not run at all
        (logits None)."""
        captured = {}

        def swap(features):
            captured["features"] = features
            if stop:
                raise _Stop
            return None if edit is None else edit(features)

        module = model.get_submodule(self.name)
        if self.at_input:
            def pre_hook(_module, args):
                new = swap(args[0])
                return None if new is None else (new, *args[1:])
            handle = module.register_forward_pre_hook(pre_hook)
        else:
            handle = module.register_forward_hook(lambda _module, _args, output: swap(output))
        try:
            logits = model(x)
        except _Stop:
            logits = None
        finally:
            handle.remove()
        return logits, captured["features"]


def resolve_feature_site(model: nn.Module, kind: str, owner: str) -> FeatureSite:
    if kind == "map":
        layers = list(getattr(model, "attention_layers", None) or [])
        if not layers:
            raise ConfigError(f"{owner}: {type(model).__name__} names no stage outputs (attention_layers) to read "
                              f"the feature map at; use feature_site='pooled' (the linear head's input)")
        return FeatureSite(layers[-1], at_input=False)
    head_name = getattr(model, "head_layer", None)
    head = dict(model.named_modules()).get(head_name) if head_name else None
    if not isinstance(head, nn.Linear):
        raise ConfigError(f"{owner}: {type(model).__name__} has no Linear classifier head "
                          f"(head_layer={head_name!r}) whose input feature_site='pooled' reads")
    return FeatureSite(head_name, at_input=True)


# ---- the losses ---------------------------------------------------------------------------
def feature_mask(raw: torch.Tensor) -> torch.Tensor:
    """Pre-tanh parameter -> mask in (0, 1) (models/mask.py)."""
    return torch.tanh(raw) / (2 + MASK_EPSILON) + 0.5


def decoupling_loss(model: nn.Module, site: FeatureSite, mask: torch.Tensor, x: torch.Tensor,
                    y: torch.Tensor) -> torch.Tensor:
    """CE(h(m F), y) - CE(h((1 - m) F), y): the mask search's objective."""
    logits, _ = site.run(model, x, edit=lambda f: torch.cat([mask * f, (1 - mask) * f]))
    kept, removed = logits.split(len(x))
    return F.cross_entropy(kept, y) - F.cross_entropy(removed, y)


def generator_loss(model: nn.Module, site: FeatureSite, generated: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                   to_units: Callable[[torch.Tensor], torch.Tensor], norm_bound: float, feat_bound: float,
                   target: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(generator update loss, image MSE) for G's output `generated` = G(x)."""
    with torch.no_grad():
        _, clean = site.run(model, x, stop=True)
    logits, fake = site.run(model, generated, stop=target is None)
    benign = F.mse_loss(mask * clean, mask * fake)
    backdoor = F.mse_loss((1 - mask) * clean, (1 - mask) * fake)
    norm = F.mse_loss(to_units(x), to_units(generated))
    out_of_bounds = (norm > norm_bound) | (benign > feat_bound)
    loss = torch.where(out_of_bounds, norm, -backdoor + BENIGN_WEIGHT * benign)
    if target is not None:
        loss = loss + F.cross_entropy(logits, torch.full_like(logits[:, 0], target, dtype=torch.long))
    return loss, norm.detach()


def pretrain_loss(model: nn.Module, site: FeatureSite, generated: torch.Tensor, x: torch.Tensor,
                  to_units: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-training loss, image MSE) for G's output `generated` = G(x)."""
    with torch.no_grad():
        clean_logits, clean = site.run(model, x)
    fake_logits, fake = site.run(model, generated)
    # The reference's CE(softmax(clean), softmax(fake)): clean probabilities
    # as logits, fake probabilities as soft targets (G gets its gradient
    # through the targets).
    prediction = F.cross_entropy(F.softmax(clean_logits, dim=1), F.softmax(fake_logits, dim=1))
    norm = F.mse_loss(to_units(x), to_units(generated))
    weight = torch.where(norm.detach() > PRETRAIN_SWITCH, PRETRAIN_HIGH, PRETRAIN_LOW)
    return prediction + F.mse_loss(clean, fake) + weight * norm, norm.detach()


@DEFENSES.register("bti-dbf")
class BTIDBF(DefenseModule):
    #: the name errors and reports use
    defense_name = "bti-dbf"
    #: base-class hyperparameters this defense's optimiser does not use
    unused_hparams: tuple[str, ...] = ("momentum",)

    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 batch_size: PositiveInt = 128, lr: PositiveFloat = 1e-4,
                 betas: tuple[Momentum, Momentum] = (0.9, 0.999), weight_decay: NonNegativeFloat = 0.0,
                 preround: NonNegativeInt = 50, gen_lr: PositiveFloat = 1e-3, mround: PositiveInt = 20,
                 mask_lr: PositiveFloat = 0.01, uround: PositiveInt = 30, norm_bound: PositiveFloat = 0.3,
                 feat_bound: PositiveFloat = 3.0, nround: PositiveInt = 3, ul_round: PositiveInt = 30,
                 generated_fraction: Fraction = 0.2, feature_loss_weight: NonNegativeFloat = 1.0,
                 early_stop: bool = False, detection_noise: NonNegativeFloat = 0.03,
                 unet_width: PositiveInt = 32, unet_depth: PositiveInt = 4,
                 feature_site: Literal["map", "pooled"] = "map",
                 image_units: Literal["normalized", "pixel"] = "normalized", mixed_precision: bool = False):
        # The training epochs are the rounds' unlearning epochs, not a free parameter.
        super().__init__(model, num_classes, target_label, augment, epochs=nround * ul_round,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay)
        for key in self.unused_hparams:
            self.hparams.pop(key, None)
        self.site = resolve_feature_site(model, feature_site, self.defense_name)
        self.clean_set = None
        self.generator: UNetGenerator | None = None
        self.generator_optimizer: torch.optim.Optimizer | None = None
        self.detected_label: int | None = None
        self.stopped = False
        self.report = {"feature_site": self.site.name, "detected_label": None, "round_labels": [], "rounds": 0,
                       "early_stopped": False, "mask_mean": [], "decoupling_loss": [], "generator_image_mse": [],
                       "pretrain_image_mse": None}

    # ---- helpers ------------------------------------------------------------------------
    def to_units(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the units of the image MSE: the model's normalised input, or pixels."""
        mean, std = getattr(self.model, "mean", None), getattr(self.model, "std", None)
        if self.hparams.image_units == "pixel" or mean is None or std is None:
            return images
        return (images - mean) / std

    def _seed(self) -> int:
        # Shuffles follow the run's seeded global generator (resumed with it).
        return int(torch.randint(2**31 - 1, ()))

    def _frozen_copy(self) -> nn.Module:
        return copy.deepcopy(self.model).requires_grad_(False)

    # ---- 0. pre-training --------------------------------------------------------------------
    def prepare(self, clean_set, fit) -> None:
        h = self.hparams
        self.clean_set = clean_set
        self.generator = UNetGenerator(clean_set.images.shape[1], h.unet_width, h.unet_depth).to(self.model_device)
        # f_A in eval mode, through a frozen copy so the model's own
        # requires_grad flags and weights are never touched here.
        frozen = self._frozen_copy().eval()
        optimizer = torch.optim.Adam(self.generator.parameters(), lr=h.gen_lr)
        self.generator.train()
        with torch.enable_grad():
            for _ in range(h.preround):
                norms = []
                for x, _ in self.batches(clean_set, shuffle=True, seed=self._seed(), augment=True):
                    loss, norm = pretrain_loss(frozen, self.site, self.generator(x), x, self.to_units)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    norms.append(norm)
                self.report["pretrain_image_mse"] = torch.stack(norms).mean().item()
        self.generator.eval()
        # A new optimiser for the rounds, kept across them (btidbfu.py's opt_bd).
        self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), lr=h.gen_lr)

    # ---- 1a-c. trigger inversion -----------------------------------------------------------
    def search_mask(self, inverted: nn.Module) -> tuple[torch.Tensor, float]:
        """The benign-feature mask of `inverted` (trained in train mode, as the reference does)."""
        h = self.hparams
        probe = torch.ones((1, *self.clean_set.images.shape[1:]), device=self.model_device)
        with torch.no_grad():
            _, features = self.site.run(inverted.eval(), probe, stop=True)
        raw = torch.randn(features.shape).to(self.model_device).requires_grad_(True)
        optimizer = torch.optim.Adam([raw], lr=h.mask_lr)
        inverted.train()
        losses = []
        for _ in range(h.mround):
            losses = []
            for x, y in self.batches(self.clean_set, shuffle=True, seed=self._seed(), augment=True):
                loss = decoupling_loss(inverted, self.site, feature_mask(raw), x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
        return feature_mask(raw).detach(), torch.stack(losses).mean().item()

    def update_generator(self, inverted: nn.Module, mask: torch.Tensor, target: int | None) -> float:
        h = self.hparams
        inverted.eval()
        self.generator.train()
        norms = []
        for _ in range(h.uround):
            norms = []
            for x, _ in self.batches(self.clean_set, shuffle=True, seed=self._seed(), augment=True):
                loss, norm = generator_loss(inverted, self.site, self.generator(x), x, mask, self.to_units,
                                            h.norm_bound, h.feat_bound, target)
                self.generator_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.generator_optimizer.step()
                norms.append(norm)
        self.generator.eval()
        return torch.stack(norms).mean().item()

    @torch.no_grad()
    def detect_target(self) -> int:
        """The label f predicts most often on generated images (evaluate.py's get_target_label)."""
        was_training = self.model.training
        self.model.eval()
        counts = torch.zeros(self.hparams.num_classes, dtype=torch.long, device=self.model_device)
        scale = self.hparams.detection_noise
        std = getattr(self.model, "std", None)
        if self.hparams.image_units == "normalized" and std is not None:
            scale = scale * std
        for x, _ in self.batches(self.clean_set, shuffle=True, seed=self._seed(), augment=True):
            generated = self.generator(x + scale * torch.randn_like(x))
            counts += torch.bincount(self.model(generated).argmax(dim=1), minlength=len(counts))
        self.model.train(was_training)
        return int(counts.argmax())

    def invert_round(self, round_index: int) -> None:
        """Steps a-c of round `round_index`: mask, generator, label check."""
        h = self.hparams
        inverted = self._frozen_copy()
        with torch.enable_grad():
            mask, mask_loss = self.search_mask(inverted)
            image_mse = self.update_generator(inverted, mask, self.detected_label if round_index > 0 else None)
        del inverted
        self.report["rounds"] = round_index + 1
        self.report["mask_mean"].append(mask.mean().item())
        self.report["decoupling_loss"].append(mask_loss)
        self.report["generator_image_mse"].append(image_mse)
        if round_index == 0 or h.early_stop:
            label = self.detect_target()
            self.report["round_labels"].append(label)
            if round_index == 0:
                self.detected_label = label
                self.report["detected_label"] = label
            elif label != self.detected_label:
                # The reference breaks out of the round loop before unlearning.
                self.stopped = True
                self.report["early_stopped"] = True

    # ---- 1d. unlearning ---------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        ul_round = self.hparams.ul_round
        if self.stopped or self.current_epoch % ul_round:
            return
        self.invert_round(self.current_epoch // ul_round)
        if self.stopped:
            self.trainer.should_stop = True

    def on_train_batch_start(self, batch, batch_idx):
        # An early stop skips the remaining epochs before any step.
        return -1 if self.stopped else None

    def mixed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """x with a random int(fraction * B + 1) rows replaced by G(x)."""
        count = min(len(x), int(self.hparams.generated_fraction * len(x) + 1))
        rows = torch.randperm(len(x), device=x.device)[:count]
        with torch.no_grad():
            mixed = x.clone()
            mixed[rows] = self.generator(x[rows]).to(mixed.dtype)
        return mixed

    def unlearning_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """CE(f(x_mixed), y) + feature_loss_weight * MSE(F(x), F(x_mixed))."""
        weight = self.hparams.feature_loss_weight
        mixed = self.mixed_batch(x)
        clean = self.site.run(self.model, x, stop=True)[1] if weight > 0 else None
        logits, features = self.site.run(self.model, mixed)
        loss = F.cross_entropy(logits, y)
        if clean is not None:
            loss = loss + weight * F.mse_loss(clean, features)
        return loss

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        if self.augment is not None:
            x = self.augment(x)
        with self.precision_context():
            loss = self.unlearning_loss(x, y)
        self.check_finite(loss)
        self.log_training_loss(loss)
        return loss

    def configure_optimizers(self):
        h = self.hparams
        return torch.optim.Adam(self.model.parameters(), lr=h.lr, betas=tuple(h.betas), weight_decay=h.weight_decay)

    # ---- resumption: state outside the model's and the generator's weights ---------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bti_dbf"] = {"generator_optimizer": self.generator_optimizer.state_dict(),
                                 "detected_label": self.detected_label, "stopped": self.stopped,
                                 "report": copy.deepcopy(self.report)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("bti_dbf")
        if saved is None:
            return
        self.generator_optimizer.load_state_dict(saved["generator_optimizer"])
        self.detected_label, self.stopped = saved["detected_label"], saved["stopped"]
        self.report = saved["report"]
