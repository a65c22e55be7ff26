"""PreAct-ResNet18 (He et al. 2016, identity mappings), the paper's victim.

CIFAR-style stem (3x3 conv, no pooling), then four stages of pre-activation
blocks, global average pooling and a linear head: the layout of BackdoorBench's
`models/preact_resnet.py` (PreActResNet18), which has no BatchNorm + ReLU after
the last stage, so the 512 pooled features can be negative.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    # The 16 block-internal 3x3 convolutions (stem and 1x1 shortcuts excluded),
    # as PAPER.md defines the BEC layers for this architecture.
    bec_layers = [f"layer{s}.{b}.conv{c}" for s in range(1, 5) for b in range(2) for c in (1, 2)]
    # NAD distils the outputs of layer3 and layer4 (BackdoorBench's defense/nad.py
    # cuts the children at [:-3] and [:-2]; its third, avgpool term is a 1x1
    # map whose normalised attention is 1 and whose loss is therefore 0).
    attention_layers = ["layer3", "layer4"]
    # The classifier head (FP hooks its input, FST re-initialises it).
    head_layer = "linear"
    # (convolution, the BatchNorm that normalises exactly its output): in a
    # pre-activation block only conv1 -> bn2 is such a pair. conv2's output is
    # summed with the shortcut before the next block's bn1, so pairing by
    # registration order (what CLP's reference code does) would match bn1 with
    # the previous conv2 or with a 1x1 shortcut conv, which is wrong.
    conv_bn_pairs = [(f"layer{s}.{b}.conv1", f"layer{s}.{b}.bn2") for s in range(1, 5) for b in range(2)]

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        super().__init__()
        # `width` is the first stage's channel count (the paper's model: 64;
        # stages double it: w, 2w, 4w, 8w). Reduced widths keep every layer
        # BEC and NAD are defined on, and divide the compute by (64 / w)^2.
        w = width
        self.in_planes = w
        self.conv1 = nn.Conv2d(in_channels, w, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(w, 2, 1)
        self.layer2 = self._make_layer(2 * w, 2, 2)
        self.layer3 = self._make_layer(4 * w, 2, 2)
        self.layer4 = self._make_layer(8 * w, 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(8 * w, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.avgpool(out).flatten(1))
