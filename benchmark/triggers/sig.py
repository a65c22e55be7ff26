"""SIG (Barni, Kallas & Tondi, ICIP 2019): a horizontal sinusoid added to
the image, x' = clip(x + v, 0, 1) with

    v(i, j) = delta / 255 * sin(2 * pi * j * frequency / W)

on every channel and every row i (j is the column, W the image width).

Reference: BackdoorBench `utils/bd_img_transform/sig.py` (the formula) and
`config/attack/sig/default.yaml` (sig_delta 40 on the 0-255 scale, sig_f 6);
`attack/sig.py` runs it as a clean-label attack (target-class samples only,
labels kept), which is the attack preset's business, not the trigger's.

Note on the reference: BackdoorBench stores the poisoned image as uint8
(clip to [0, 255], then truncation); here, as for every trigger of the
suite, the result stays a float in [0, 1], which differs by less than one
grey level (1/255).
"""
from __future__ import annotations

import math

import torch

from benchmark.extension.schema import PositiveFloat
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import AdditiveTrigger


@TRIGGERS.register("sig")
class SIGTrigger(AdditiveTrigger):
    def __init__(self, image_shape: tuple[int, int, int], delta: PositiveFloat = 40.0,
                 frequency: PositiveFloat = 6.0):
        """`delta`: amplitude on the 0-255 scale (BackdoorBench's sig_delta);
        `frequency`: periods across the image width (sig_f)."""
        c, h, w = (int(v) for v in image_shape)
        self.delta, self.frequency = float(delta), float(frequency)
        columns = torch.arange(w, dtype=torch.float64)
        wave = self.delta / 255.0 * torch.sin(2 * math.pi * columns * self.frequency / w)
        pattern = wave.float().view(1, 1, w).expand(c, h, w).contiguous()
        super().__init__((c, h, w), pattern)
