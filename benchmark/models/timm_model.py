"""Any timm architecture by name, e.g. ``timm:resnet18`` or ``timm:vgg19_bn``.

timm models carry no BEC/NAD layer lists of their own, so they are derived
once here from the model's structure: BEC uses every spatial (k > 1)
convolution after the stem; NAD uses the last three feature stages that timm
reports in `feature_info`. The head is what `get_classifier()` returns; CLP's
conv -> BatchNorm pairs are taken in registration order (a convolution and
the BatchNorm registered right after it with as many channels), which is
right for the post-activation conv-BN-ReLU layout of most timm CNNs.
"""
from __future__ import annotations

import timm
from torch import nn

from benchmark.errors import UnknownNameError

TIMM_PREFIX = "timm:"


class TimmBackbone(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        convs = [n for n, m in model.named_modules()
                 if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1]
        self.bec_layers = [f"model.{n}" for n in convs[1:]]
        info = getattr(model, "feature_info", None) or []
        # NAD: the last two feature stages (BackdoorBench distils layer3 and layer4).
        self.attention_layers = [f"model.{f['module']}" for f in info[-2:] if f.get("module")]
        names = {id(m): n for n, m in model.named_modules()}
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        self.head_layer = f"model.{names[id(head)]}" if isinstance(head, nn.Linear) else None
        ordered = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        self.conv_bn_pairs = [(f"model.{a}", f"model.{b}") for (a, conv), (b, bn) in zip(ordered, ordered[1:])
                              if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                              and bn.num_features == conv.out_channels]

    def forward(self, x):
        return self.model(x)


def build_timm(name: str, num_classes: int, in_channels: int, image_size: int) -> TimmBackbone:
    if name not in timm.list_models():
        raise UnknownNameError("timm model", name, timm.list_models()[:20] + ["... (timm.list_models())"])
    kwargs = dict(pretrained=False, num_classes=num_classes, in_chans=in_channels)
    try:
        model = timm.create_model(name, img_size=image_size, **kwargs)
    except TypeError:  # convolutional models take no img_size
        model = timm.create_model(name, **kwargs)
    return TimmBackbone(model)
