"""CLP, Channel Lipschitzness-based Pruning (Zheng et al., ECCV 2022): a
data-free defense.

References: SCLBD/BackdoorBench@f02e353 `defense/clp.py` (`CLP_prune`) with
`config/defense/clp/cifar10.yaml`, and the authors' original
rkteddy/channel-Lipschitzness-based-pruning@49aeef7 `defense.py` (`CLP`); the
two compute the same thing.

For each (convolution, BatchNorm) pair, every output channel k gets an upper
bound of its Lipschitz constant (UCLC): the largest singular value of that
channel's kernel, reshaped to (in_channels/groups) x (kh*kw), times
|gamma_k / sqrt(running_var_k)|. Within the layer, channels whose UCLC exceeds
mean + u * std (unbiased std, strict ">") are pruned by zeroing that
BatchNorm channel's weight and bias. As in both references the std has no
BatchNorm eps added, the convolution's own bias is ignored, and the model is
otherwise untouched.

Defaults (BackdoorBench cifar10.yaml): u = 3. The yaml's u_min / u_max /
u_num only drive a report-only sweep of u scored on the test set, so they are
not parameters here. No data is read: `prepare` never touches the clean
subset and `epochs` is 0 (the reference does not fine-tune; a value other
than 0 is refused rather than silently turning CLP into CLP + FT).

Pairing. Both references walk `named_modules()` and pair each BatchNorm with
the convolution registered just before it. That is right for conv -> BN ->
ReLU networks but wrong for PreAct-ResNet18, where BatchNorm comes before the
convolution: a block registers bn1, conv1, bn2, conv2 (and a 1x1 shortcut),
so every block's bn1 after the first is matched with the previous block's
conv2, or with its 1x1 shortcut after a downsampling block, while that bn1
really normalises conv2's output plus the shortcut, a sum that no single
kernel bounds (the first block's bn1 does normalise the stem's output, but
that output also bypasses it through the identity shortcut). The CLP author reports poor results on a PreAct checkpoint for this
reason (channel-Lipschitzness-based-pruning issue #2). Here the pairs come
from the model (`conv_bn_pairs`), which for PreAct-ResNet18 lists only
conv1 -> bn2 of each block.

`report`: `pruned_channels` (BatchNorm name -> list of pruned channel
indices, one entry per pair), `pruned_total`, and the per-layer thresholds.
"""
from __future__ import annotations

import torch
from torch import nn

from benchmark.errors import ConfigError
from benchmark.extension.schema import Momentum, NonNegativeFloat, PositiveFloat, PositiveInt
from lightning_modules.defenses import DEFENSES
from lightning_modules.defenses.base import DefenseModule, NoTraining


def channel_lipschitz_bounds(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """UCLC per output channel of `conv` followed by `bn`, shape (out_channels,)."""
    weight = conv.weight.detach()
    kernels = weight.reshape(weight.shape[0], weight.shape[1], -1)  # (out, in/groups, kh*kw)
    # A positive per-channel factor scales every singular value alike, so the
    # largest singular value of the scaled kernel is the factor times that of
    # the kernel.
    spectral = torch.linalg.svdvals(kernels.float()).amax(dim=-1)
    scale = (bn.weight.detach().float() / bn.running_var.detach().float().sqrt()).abs()
    return spectral * scale


def outlying_channels(bounds: torch.Tensor, u: float) -> tuple[torch.Tensor, float]:
    """Indices of channels with bound > mean + u * std (unbiased), and that threshold."""
    threshold = bounds.mean() + u * bounds.std()
    return torch.nonzero(bounds > threshold).flatten(), float(threshold)


@DEFENSES.register("clp")
class ChannelLipschitzPruning(DefenseModule):
    def __init__(self, model, num_classes: int, target_label: int = 0, augment=None,
                 epochs: NoTraining = 0, batch_size: PositiveInt = 256, u: NonNegativeFloat = 3.0,
                 lr: PositiveFloat = 0.01, momentum: Momentum = 0.9, weight_decay: NonNegativeFloat = 5e-4):
        super().__init__(model, num_classes, target_label, augment, epochs, batch_size, lr, momentum, weight_decay)
        self.pairs = self._resolve_pairs(model)

    @staticmethod
    def _resolve_pairs(model) -> list[tuple[str, nn.Conv2d, str, nn.BatchNorm2d]]:
        names = list(getattr(model, "conv_bn_pairs", None) or [])
        if not names:
            raise ConfigError(f"clp: {type(model).__name__} names no (convolution, BatchNorm) pairs "
                              f"(`conv_bn_pairs`); CLP needs at least one")
        modules = dict(model.named_modules())
        pairs = []
        for conv_name, bn_name in names:
            conv, bn = modules.get(conv_name), modules.get(bn_name)
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                raise ConfigError(f"clp: pair ({conv_name!r}, {bn_name!r}) must name a Conv2d and a BatchNorm2d "
                                  f"of the model, got {type(conv).__name__} and {type(bn).__name__}")
            if bn.num_features != conv.out_channels:
                raise ConfigError(f"clp: pair ({conv_name!r}, {bn_name!r}) has {conv.out_channels} convolution "
                                  f"channels but {bn.num_features} BatchNorm channels; they must match")
            if bn.weight is None or bn.running_var is None:
                raise ConfigError(f"clp: BatchNorm {bn_name!r} needs an affine weight and running statistics")
            pairs.append((conv_name, conv, bn_name, bn))
        return pairs

    @torch.no_grad()
    def prepare(self, clean_set, fit) -> None:
        # Data-free: `clean_set` is deliberately left unread.
        u = self.hparams.u
        pruned, thresholds = {}, {}
        # Every bound is computed before anything is zeroed, so the order of
        # the pairs cannot matter (a BatchNorm is only ever read by its own pair).
        decisions = []
        for _conv_name, conv, bn_name, bn in self.pairs:
            index, threshold = outlying_channels(channel_lipschitz_bounds(conv, bn), u)
            decisions.append((bn, index))
            pruned[bn_name] = index.tolist()
            thresholds[bn_name] = threshold
        for bn, index in decisions:
            index = index.to(bn.weight.device)
            bn.weight[index] = 0
            bn.bias[index] = 0
        self.report = {"u": float(u), "pruned_channels": pruned,
                       "pruned_total": sum(len(v) for v in pruned.values()), "thresholds": thresholds}
