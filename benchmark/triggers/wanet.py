"""WaNet (Nguyen & Tran, ICLR 2021): a smooth, seeded image warp.

Reference: BackdoorBench `attack/wanet.py` (warp field, noise mode) and
`config/attack/wanet/default.yaml` (k 4, s 0.5, grid_rescale 1); the original
code is VinAIResearch/Warping-based_Backdoor_Attack-release.

The warp field, drawn once from the seed:

1. knots: a 2 x k x k tensor of U(-1, 1) entries, divided by its mean
   absolute value (so the knots average +-1 in magnitude);
2. noise grid P: the knots upsampled bicubically (align_corners=True) to
   H x W, laid out as (1, H, W, 2) with (x, y) in the last dimension, the
   order `grid_sample` reads;
3. identity grid I: `linspace(-1, 1)` along each axis;
4. backdoor grid G = clamp((I + s * P / H) * grid_rescale, -1, 1);
5. x_bd = grid_sample(x, G, bilinear, align_corners=True).

Noise ("cross") mode, used by the attack's training only: every image gets
its own grid clamp(G + U(-1, 1)^(H x W x 2) / H, -1, 1), so the model learns
that only the exact warp G means "target" (`noise_warp`).

Notes on the reference:
- BackdoorBench warps normalised tensors; warping commutes with the
  per-channel affine normalisation and the clamp keeps every sample point
  inside the image, so warping [0, 1] images is the same operation.
- P is divided by H for both axes, as in the reference (its images are
  square); for non-square images the x axis uses the same 1/H scale.
- The field comes from the cell's seed (`seed`), or from `grid_seed` when
  given, instead of the global RNG state at the start of training; the
  trigger is thus rebuilt identically by every job without storing it.
  `state_dict()` still returns P for inspection, and `load_state_dict`
  accepts {} or a P of the right shape (e.g. one saved by BackdoorBench).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.extension.schema import PositiveFloat, PositiveInt
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import Trigger


@TRIGGERS.register("wanet")
class WaNetTrigger(Trigger):
    preparation = "none"
    rowwise = True  # one fixed warp, sampled per row

    def __init__(self, image_shape: tuple[int, int, int], k: PositiveInt = 4, s: PositiveFloat = 0.5,
                 grid_rescale: PositiveFloat = 1.0, seed: int = 0, grid_seed: int | None = None):
        super().__init__(image_shape)
        _, h, w = self.image_shape
        self.k, self.s, self.grid_rescale = int(k), float(s), float(grid_rescale)
        self.field_seed = int(seed if grid_seed is None else grid_seed)

        generator = torch.Generator().manual_seed(self.field_seed)
        knots = torch.rand((1, 2, self.k, self.k), generator=generator) * 2 - 1
        #: (1, 2, k, k) control values of the field, mean |value| = 1
        self.warp_knots = knots / knots.abs().mean()

        rows = torch.linspace(-1, 1, h)
        cols = torch.linspace(-1, 1, w)
        grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
        #: (1, H, W, 2) identity sampling grid, (x, y) = (column, row) in [-1, 1]
        self.identity_grid = torch.stack((grid_cols, grid_rows), dim=-1)[None]
        self._set_noise_grid(F.interpolate(self.warp_knots, size=(h, w), mode="bicubic", align_corners=True)
                             .permute(0, 2, 3, 1).contiguous())

    def _set_noise_grid(self, noise_grid: torch.Tensor) -> None:
        _, h, _ = self.image_shape
        #: (1, H, W, 2) noise grid P (upsampled knots)
        self.noise_grid = noise_grid.float().contiguous()
        #: (1, H, W, 2) the backdoor grid G in grid_sample's normalised units
        self.backdoor_grid = ((self.identity_grid + self.s * self.noise_grid / h) * self.grid_rescale).clamp(-1, 1)
        self._grid_on_device: dict[torch.device, torch.Tensor] = {}

    def _grid(self, device: torch.device) -> torch.Tensor:
        # One copy per device, so a training loop does not move the grid every step.
        if device not in self._grid_on_device:
            self._grid_on_device[device] = self.backdoor_grid.to(device)
        return self._grid_on_device[device]

    @staticmethod
    def _sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        # Bilinear interpolation of [0, 1] pixels stays in [0, 1]; the clamp
        # only removes float rounding. Computed in float32 whatever the input.
        warped = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return warped.clamp(0, 1).to(images.dtype)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        grid = self._grid(images.device)
        return self._sample(images, grid.expand(images.shape[0], -1, -1, -1))

    def noise_warp(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise-mode images: each image warped by G plus its own U(-1, 1)/H
        jitter per grid point. Draws from `generator` (on its device) or from
        the global RNG of the images' device."""
        b, _, h, w = images.shape
        device = generator.device if generator is not None else images.device
        jitter = torch.rand((b, h, w, 2), generator=generator, device=device).to(images.device) * 2 - 1
        grid = (self._grid(images.device) + jitter / h).clamp(-1, 1)
        return self._sample(images, grid)

    def pixel_displacement(self) -> torch.Tensor:
        """(H, W, 2) displacement of the backdoor grid from the identity, in
        pixels along (x, y): with align_corners=True a normalised step of 2
        spans W - 1 (x) or H - 1 (y) pixels."""
        _, h, w = self.image_shape
        scale = torch.tensor([(w - 1) / 2, (h - 1) / 2])
        return ((self.backdoor_grid - self.identity_grid) * scale)[0]

    # ---- state: none needed (the field is a function of the seed) ------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"noise_grid": self.noise_grid.contiguous()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        unknown = sorted(set(tensors) - {"noise_grid"})
        if unknown:
            raise ValueError(f"WaNetTrigger keeps only 'noise_grid', got {unknown}")
        if "noise_grid" in tensors:
            grid = tensors["noise_grid"]
            if tuple(grid.shape) != tuple(self.noise_grid.shape):
                raise ValueError(f"WaNetTrigger: noise_grid must have shape {tuple(self.noise_grid.shape)}, "
                                 f"got {tuple(grid.shape)}")
            self._set_noise_grid(grid.detach().cpu())
