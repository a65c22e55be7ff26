"""Any timm architecture by name, e.g. ``timm:resnet18`` or ``timm:vgg19_bn``.

timm models carry no BEC/NAD layer lists of their own, so they are derived
once here from the model's structure: BEC uses every spatial (k > 1)
convolution after the stem; NAD uses the last three feature stages that timm
reports in `feature_info`.
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
        self.attention_layers = [f"model.{f['module']}" for f in info[-3:] if f.get("module")]

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
