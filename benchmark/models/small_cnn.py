"""A three-convolution CNN that trains on Fashion-MNIST on two CPU cores in
well under a minute per epoch."""
from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    # BEC compares the outputs of conv2 and conv3, before their BatchNorm.
    # conv1 plays the stem's part (excluded for PreAct-ResNet18 too): it is a
    # near-linear map of the pixels, so its CKA is ~0.9999 for every model,
    # clean or not (measured on Fashion-MNIST), and would only flatten BEC.
    bec_layers = ["conv2", "conv3"]
    # NAD: the outputs of the last two of the three stages, the counterparts of
    # PreAct-ResNet18's layer3 and layer4 (BackdoorBench's NAD layers).
    attention_layers = ["block2", "block3"]
    head_layer = "head.2"
    # Each convolution is followed directly by its BatchNorm (conv -> BN -> ReLU).
    conv_bn_pairs = [("conv1", "block1.0"), ("conv2", "block2.0"), ("conv3", "block3.0")]

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        # `width` is conv1's channel count (conv2: 2w, conv3: 4w).
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        # Pooling after every block keeps the cost at ~2 M multiply-adds per
        # 28x28 image, which is what makes a CPU epoch take seconds, not minutes.
        self.block1 = nn.Sequential(nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False)
        self.block2 = nn.Sequential(nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False)
        self.block3 = nn.Sequential(nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))

    def forward(self, x):
        x = self.block1(self.conv1(x))
        x = self.block2(self.conv2(x))
        x = self.block3(self.conv3(x))
        return self.head(x)
