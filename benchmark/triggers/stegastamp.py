"""The StegaStamp encoder E(s, x) and decoder D(x) of SSBA / ISSBA (Li et
al., ICCV 2021), used by `benchmark.triggers.ssba`.

Reference: BackdoorBench ``resource/ssba/models.py``. The secret goes
through a linear map and a ReLU to a 16x16 map per channel, is upsampled
(nearest) to the image size and concatenated with the image; four stride-2
convolutions go down, four nearest-upsample + 2x2 convolutions come back up
with skip connections, the last merge also sees the input, then two 3x3
convolutions and a 1x1 convolution with a sigmoid. D is seven 3x3
convolutions (five of stride 2) and two linear layers. At width 32 the
channels are 32-32-64-128-256 in E, 32-32-64-64-64-128-128 and a 512-unit
hidden layer in D.

Deviations, each named (see `benchmark.triggers.ssba`): images whose sides
are not multiples of 16 are padded (replicate, bottom and right) to the next
multiple of 16 for E and cropped back, where BackdoorBench's networks only
accept multiples of 32; D reads the unpadded image (its stride-2
convolutions round up). `width` scales every channel count (BackdoorBench:
32). For 32x32 images at width 32 both networks are exactly BackdoorBench's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: stride-2 stages of E (BackdoorBench: conv2..conv5); image sides are padded to a multiple of 2**LEVELS
LEVELS = 4
#: side of the map the secret is projected to before upsampling (BackdoorBench: 16x16)
SECRET_MAP_SIDE = 16


def _padded(side: int) -> int:
    step = 2 ** LEVELS
    return math.ceil(side / step) * step


class StegaStampEncoder(nn.Module):
    """E(s, x) -> encoded image in (0, 1), same shape as x."""

    def __init__(self, image_shape: tuple[int, int, int], fingerprint_length: int, width: int = 32):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        self.padded_size = (_padded(h), _padded(w))
        # channels of the down path: BackdoorBench's 32, 32, 64, 128, 256 at width 32
        down = [width, width, 2 * width, 4 * width, 8 * width]
        self.secret_dense = nn.Linear(fingerprint_length, c * SECRET_MAP_SIDE * SECRET_MAP_SIDE)
        self.inc = nn.Conv2d(2 * c, down[0], 3, 1, 1)
        self.down = nn.ModuleList(nn.Conv2d(down[i], down[i + 1], 3, 2, 1) for i in range(LEVELS))
        # up path, deepest first: 256->128 then merge with conv4's 128, ..., 32->32 merged with conv1 and the input
        ups, merges = [], []
        for i in range(LEVELS, 0, -1):
            ups.append(nn.Conv2d(down[i], down[i - 1], 2, 1))
            merged = 2 * down[i - 1] + (2 * c if i == 1 else 0)
            merges.append(nn.Conv2d(merged, down[i - 1], 3, 1, 1))
        self.up, self.merge = nn.ModuleList(ups), nn.ModuleList(merges)
        self.refine = nn.Conv2d(down[0], down[0], 3, 1, 1)
        self.to_image = nn.Conv2d(down[0], c, 1)

    def forward(self, fingerprint: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        c, h, w = self.image_shape
        ph, pw = self.padded_size
        if (ph, pw) != (h, w):
            image_in = F.pad(image, (0, pw - w, 0, ph - h), mode="replicate")
        else:
            image_in = image
        secret = F.relu(self.secret_dense(fingerprint)).view(-1, c, SECRET_MAP_SIDE, SECRET_MAP_SIDE)
        secret = F.interpolate(secret, size=(ph, pw), mode="nearest")
        inputs = torch.cat([secret, image_in], dim=1)
        skips = [F.relu(self.inc(inputs))]
        for conv in self.down:
            skips.append(F.relu(conv(skips[-1])))
        x = skips.pop()
        for level, (up, merge) in enumerate(zip(self.up, self.merge)):
            # nearest x2, pad right/bottom by one, 2x2 conv: BackdoorBench's upsampling block
            x = F.relu(up(F.pad(F.interpolate(x, scale_factor=2.0, mode="nearest"), (0, 1, 0, 1))))
            parts = [skips.pop(), x] + ([inputs] if level == LEVELS - 1 else [])
            x = F.relu(merge(torch.cat(parts, dim=1)))
        x = F.relu(self.refine(x))
        return torch.sigmoid(self.to_image(x))[:, :, :h, :w]


class StegaStampDecoder(nn.Module):
    """D(x) -> one logit per fingerprint bit."""

    def __init__(self, image_shape: tuple[int, int, int], fingerprint_length: int, width: int = 32):
        super().__init__()
        c, h, w = image_shape
        # (out channels, stride): BackdoorBench's 32/2, 32/1, 64/2, 64/1, 64/2, 128/2, 128/2 at width 32
        layers, cin = [], c
        for cout, stride in ((width, 2), (width, 1), (2 * width, 2), (2 * width, 1), (2 * width, 2),
                             (4 * width, 2), (4 * width, 2)):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.ReLU()]
            cin = cout
            if stride == 2:  # a 3x3, padding-1, stride-2 conv maps a side n to ceil(n / 2)
                h, w = math.ceil(h / 2), math.ceil(w / 2)
        self.features = nn.Sequential(*layers)
        self.dense = nn.Sequential(nn.Linear(cin * h * w, 16 * width), nn.ReLU(),
                                   nn.Linear(16 * width, fingerprint_length))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.dense(self.features(image).flatten(1))
