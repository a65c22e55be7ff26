"""TrojanNN (Liu et al., NDSS 2018), as BackdoorBench's data-poisoning variant:
a masked patch optimised on the clean model f_C to drive a few strongly
connected neurons to a high value, then added to the poisoned images in
8-bit levels, x' = ((255 x + 255 t) mod 256) / 255.

Reference: BackdoorBench attack/trojannn.py (get_most_connected_neuron_idxes,
pgd_with_mask_to_selected_neuron, TrojanTrigger),
config/attack/trojannn/preactresnet18.yaml (selected layer `linear`,
num_neuron 2, neuron_target_values 100, mask_update_iters 1000; PGD eps 0.3,
alpha 0.1, tolerance 1e-3 are that file's function defaults). As there:

1. neurons = the inputs of the model's classifier head (`model.head_layer`,
   the 512 pooled features of PreAct-ResNet18), ranked by the column sums of
   |W| of a head weight W; the top `num_neurons` (2) are kept. Which W is
   `neuron_ranking`'s choice (below); by default, as BackdoorBench, a
   randomly initialised head;
2. the initial trigger is the mask image (white inside the mask, 0 outside);
   the keep-mask is where it is > 0;
3. PGD, `iterations` (1000) steps of signed-gradient descent with step
   `step_size` (0.1), L-inf `epsilon` (0.3) around the initial trigger,
   clipped to [0, 1], on the cost sum over the selected neurons of
   (feature - `target_value`)^2 with target value 100, the features being the
   head's input for the model input trigger * keep-mask (captured by a forward
   hook); it stops early once the cost is below `tolerance` (1e-3);
4. the trigger is the optimised image (zero outside the mask, as no gradient
   reaches it there), truncated to 1/255 steps as the reference's uint8
   conversion does;
5. poisoning adds the trigger to the image in 8-bit levels, as
   BackdoorBench's `TrojanTrigger.add_trigger` (attack/trojannn.py, around
   lines 129-130) does: it casts the float sum of two uint8 images to uint8
   *before* clipping, so a sum above 255 wraps modulo 256 (200 + 100 = 300
   -> 44) and the clip after the cast does nothing. Inside the mask the
   trigger's levels are 178-255 (PGD keeps it within epsilon 0.3 of white),
   so the trigger darkens bright pixels and brightens dark ones: an
   image-dependent texture, not a white patch. Images are taken in 8-bit
   levels (round(255 x), x in [0, 1], as the suite's images are uint8 / 255)
   and the result is returned as levels / 255.

Options:

- `neuron_ranking`. "random_head" (the default) is BackdoorBench's ranking:
  its ranking model is built with 1000 classes (attack/trojannn.py,
  `stage1_non_training_data_prepare`), so `partially_load_state_dict` skips
  the 10-class checkpoint's head and the neurons are ranked on the column
  sums of a freshly initialised 1000 x 512 head (PyTorch's Linear default,
  uniform in +-1/sqrt(512)): in effect a random choice of neurons. Here that
  head is drawn, `random_head_outputs` (1000) rows uniform in
  +-1/sqrt(features), from a generator seeded by the cell's seed. "trained_head"
  ranks on f_C's actual head weights, which is what the method intends; it
  is a deviation from BackdoorBench.
- `overflow`. "wrap" (the default) is BackdoorBench's modulo-256 sum (step
  5). "clip" clips the sum to 0..255 instead, which saturates most of the
  mask to white: a BadNets-like white patch, easier to learn than the
  reference's texture and not comparable with BackdoorBench-derived numbers.

Deviations from the reference, each named:

- Normalisation. BackdoorBench's PGD feeds [0, 1] images to a model trained on
  normalised ones; the suite's ImageClassifier normalises internally, so the
  PGD sees the trigger in the same space as the poisoned images.
- The mask (`mask_shape`). BackdoorBench's apple logo (resource/trojannn/
  apple4.png, a 224 x 224 white apple on black, resized to the image) is a data
  file that is not available offline. "apple" rasterises an apple silhouette of
  the same placement and size: a body ellipse centred at (row 0.772, column
  0.723) of the image side with half-axes 0.136 x 0.152, a bite (disc of
  radius 0.055 at (0.715, 0.885)) cut from its right side and a leaf (ellipse
  0.05 x 0.022 tilted 45 degrees at (0.585, 0.76)); its bounding box is the
  logo's (rows 0.54-0.91, columns 0.57-0.87) and it covers about 6.5-7 % of the
  image (the logo covers 7.0 % at 224 px). Pixels are in where at least half of
  an 8 x 8 supersampling grid is. "square" is BackdoorBench's square.png: a
  square over rows and columns 145-203 of 224 (6.9 %). `mask_path` loads a PNG
  mask instead (e.g. a copy of apple4.png), resized bilinearly to the image as
  the reference does, whose grey edge pixels then start grey.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch

from benchmark.errors import ConfigError, DataNotFoundError
from benchmark.extension.schema import LinfBudget, NonNegativeFloat, PositiveFloat, PositiveInt
from benchmark.triggers import TRIGGERS
from benchmark.triggers.base import AdditiveTrigger, on_device

#: the reference mask image's side, in pixels: the shapes below are measured on it
REFERENCE_SIDE = 224
#: supersampling per pixel side when rasterising a shape
SUPERSAMPLING = 8
#: 8-bit levels: images and trigger are added as integers 0..255
LEVELS = 255
#: seed offset of the random ranking head's generator (its own stream)
RANDOM_HEAD_OFFSET = 20_011


@TRIGGERS.register("trojannn")
class TrojanNNTrigger(AdditiveTrigger):
    preparation = "clean_model"

    def __init__(self, image_shape: tuple[int, int, int], num_neurons: PositiveInt = 2,
                 target_value: float = 100.0, iterations: PositiveInt = 1000, step_size: PositiveFloat = 0.1,
                 epsilon: LinfBudget = 0.3, tolerance: NonNegativeFloat = 1e-3,
                 mask_shape: Literal["apple", "square"] = "apple", mask_path: str | None = None,
                 overflow: Literal["wrap", "clip"] = "wrap",
                 neuron_ranking: Literal["random_head", "trained_head"] = "random_head",
                 random_head_outputs: PositiveInt = 1000):
        super().__init__(image_shape)
        if overflow not in ("wrap", "clip"):
            raise ConfigError(f"trojannn: overflow={overflow!r} is not allowed; must be one of: wrap, clip")
        if neuron_ranking not in ("random_head", "trained_head"):
            raise ConfigError(f"trojannn: neuron_ranking={neuron_ranking!r} is not allowed; must be one of: "
                              f"random_head, trained_head")
        self.overflow = overflow
        self.neuron_ranking = neuron_ranking
        self.random_head_outputs = int(random_head_outputs)
        c, h, w = self.image_shape
        self.num_neurons = int(num_neurons)
        self.target_value = float(target_value)
        self.iterations = int(iterations)
        self.step_size = float(step_size)
        self.epsilon = float(epsilon)
        self.tolerance = float(tolerance)
        # (C, H, W) in [0, 1]: the trigger PGD starts from, zero outside the mask
        if mask_path:
            self.initial = load_mask_image(Path(mask_path), c, h, w)
        else:
            self.initial = rasterise(mask_shape, h, w).float().expand(c, h, w).contiguous()
        if not (self.initial > 0).any():
            raise ConfigError(f"trojannn: the mask ({mask_path or mask_shape}) covers no pixel of {h}x{w} images")
        self.mask = (self.initial > 0).float()
        self.neuron_indices = torch.zeros(0, dtype=torch.long)
        self.prepared = False
        #: the PGD's last cost and number of steps (diagnostics, not state)
        self.final_cost = math.nan
        self.steps_taken = 0

    # ---- applying ------------------------------------------------------------------
    def apply(self, images: torch.Tensor) -> torch.Tensor:
        if not self.prepared:
            raise RuntimeError("trojannn trigger has no pattern yet: run prepare(ctx) or load_state_dict() first")
        return add_levels(images, on_device(self, "pattern", images.float()), self.overflow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.prepared:
            return {}
        return {"pattern": self.pattern.detach().cpu().contiguous(), "mask": self.mask.cpu().contiguous(),
                "neuron_indices": self.neuron_indices.cpu().contiguous()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = {"pattern", "mask", "neuron_indices"}
        if set(tensors) != expected:
            raise ValueError(f"trojannn trigger state must hold {sorted(expected)}, got {sorted(tensors)}")
        for key in ("pattern", "mask"):
            if tuple(tensors[key].shape) != self.image_shape:
                raise ValueError(f"trojannn {key} has shape {tuple(tensors[key].shape)}, expected {self.image_shape}")
        self.pattern = tensors["pattern"].detach().float().cpu().contiguous()
        self.mask = tensors["mask"].detach().float().cpu().contiguous()
        self.neuron_indices = tensors["neuron_indices"].detach().long().cpu().contiguous()
        self.prepared = True

    # ---- preparation on the clean model --------------------------------------------
    def prepare(self, ctx) -> None:
        model = ctx.clean_model
        if model is None:
            raise ValueError("trojannn needs the clean model f_C (preparation 'clean_model')")
        head = head_linear(model)
        if self.num_neurons > head.in_features:
            raise ConfigError(f"trojannn: num_neurons={self.num_neurons} is not allowed for a head with "
                              f"{head.in_features} inputs; must be at most {head.in_features}")
        if self.neuron_ranking == "random_head":
            weight = random_head_weight(self.random_head_outputs, head.in_features,
                                        ctx.generator(offset=RANDOM_HEAD_OFFSET))
        else:
            weight = head.weight
        indices = most_connected_neurons(weight, self.num_neurons)
        was_training = model.training
        model.eval()
        try:
            image = self._optimise(model, head, indices)
        finally:
            model.train(was_training)
        ctx.log(f"trojannn: neurons {indices.tolist()} ({self.neuron_ranking} ranking), cost {self.final_cost:.4g} after {self.steps_taken} steps")
        # ToPILImage's uint8 conversion (x * 255, truncated) in the reference.
        pattern = torch.floor(image.cpu() * 255) / 255 * self.mask
        self.pattern = pattern.contiguous()
        self.neuron_indices = indices.cpu()
        self.prepared = True

    def _optimise(self, model, head, indices: torch.Tensor) -> torch.Tensor:
        device = head.weight.device
        initial = self.initial[None].to(device)
        keep = self.mask[None].to(device)
        indices = indices.to(device)
        captured = {}
        handle = head.register_forward_hook(lambda module, inputs, output: captured.__setitem__("x", inputs[0]))
        image = initial.clone()
        try:
            with torch.enable_grad():
                for step in range(self.iterations):
                    image.requires_grad_(True)
                    model(image * keep)
                    cost = (captured["x"][:, indices] - self.target_value).pow(2).sum()
                    (grad,) = torch.autograd.grad(cost, image)
                    moved = image.detach() - self.step_size * grad.sign()
                    image = (initial + (moved - initial).clamp(-self.epsilon, self.epsilon)).clamp(0, 1)
                    self.final_cost, self.steps_taken = float(cost.detach()), step + 1
                    # As in the reference: the cost before this step's update decides.
                    if self.final_cost < self.tolerance:
                        break
        finally:
            handle.remove()
        return image[0].detach()


# ---- the pieces, as functions so that tests can pin them ---------------------------------
def head_linear(model) -> torch.nn.Linear:
    name = getattr(model, "head_layer", None)
    head = model.submodule(name) if name else None
    if not isinstance(head, torch.nn.Linear):
        raise ValueError(f"trojannn needs a model whose head_layer names a Linear, got {name!r}")
    return head


def add_levels(images: torch.Tensor, pattern: torch.Tensor, overflow: str) -> torch.Tensor:
    """images + pattern in 8-bit levels: both taken as round(255 v), summed,
    then wrapped modulo 256 ("wrap", BackdoorBench's uint8 cast) or clipped
    to 0..255 ("clip"); returned as levels / 255 in the images' dtype."""
    x = torch.round(images.float().clamp(0, 1) * LEVELS)
    total = x + torch.round(pattern.float() * LEVELS)
    if overflow == "wrap":
        total = torch.remainder(total, LEVELS + 1)
    elif overflow == "clip":
        total = total.clamp(0, LEVELS)
    else:
        raise ValueError(f"trojannn: overflow={overflow!r} is not allowed; must be one of: wrap, clip")
    return (total / LEVELS).to(images.dtype)


def random_head_weight(outputs: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """A freshly initialised (outputs x features) head weight, as PyTorch's
    Linear draws it: uniform in +-1/sqrt(features)."""
    bound = 1.0 / math.sqrt(features)
    return (torch.rand(outputs, features, generator=generator, dtype=torch.float64) * 2 - 1).float() * bound


def most_connected_neurons(weight: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` head inputs with the largest column sums of
    |weight| (out_features x in_features), strongest first; ties keep the
    lower index."""
    scores = weight.detach().abs().sum(0)
    return torch.argsort(scores, descending=True, stable=True)[:count].cpu()


def rasterise(shape: str, h: int, w: int) -> torch.Tensor:
    """A boolean (H, W) mask of `shape`, scaled to the image, in where at
    least half of a pixel's supersamples are (see the module docstring)."""
    rows = (torch.arange(h * SUPERSAMPLING, dtype=torch.float64) + 0.5) / (h * SUPERSAMPLING)
    cols = (torch.arange(w * SUPERSAMPLING, dtype=torch.float64) + 0.5) / (w * SUPERSAMPLING)
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    if shape == "apple":
        inside = ((r - 0.772) / 0.136) ** 2 + ((c - 0.723) / 0.152) ** 2 <= 1            # body
        inside &= (r - 0.715) ** 2 + (c - 0.885) ** 2 > 0.055 ** 2                          # bite
        along = (c - 0.76 - (r - 0.585)) / math.sqrt(2)     # leaf axis, pointing up and right
        across = (c - 0.76 + (r - 0.585)) / math.sqrt(2)
        inside |= (along / 0.05) ** 2 + (across / 0.022) ** 2 <= 1                          # leaf
    elif shape == "square":
        low, high = 145 / REFERENCE_SIDE, 204 / REFERENCE_SIDE
        inside = (r >= low) & (r < high) & (c >= low) & (c < high)
    else:
        raise ConfigError(f"trojannn: mask_shape={shape!r} is not allowed; must be one of: apple, square")
    coverage = inside.double().reshape(h, SUPERSAMPLING, w, SUPERSAMPLING).mean((1, 3))
    return coverage >= 0.5


def load_mask_image(path: Path, c: int, h: int, w: int) -> torch.Tensor:
    """A mask image file resized to (C, H, W) in [0, 1], as the reference's
    transforms.Resize + ToTensor on the PIL image."""
    from PIL import Image

    if not path.is_file():
        raise DataNotFoundError(f"trojannn mask image {path} does not exist")
    with Image.open(path) as img:
        img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    image = data.view(h, w, -1).permute(2, 0, 1).float().div(255)
    if image.shape[0] != c:
        image = image[:1].expand(c, h, w)
    return image.contiguous()
