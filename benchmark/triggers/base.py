"""What a backdoor trigger is to the suite.

A `Trigger` is a batched op on [0, 1] images (B, C, H, W), on any device.
Three kinds exist:

- a pure function of its parameters (BadNets, Blended, SIG, WaNet's seeded
  warp): `preparation = "none"`;
- a trigger whose state is computed before poisoning, in its own stage of the
  cell whose artifact (safetensors) every later job shares: from the
  attacker's training data (`preparation = "data"`: SSBA's encoder, LC's
  adversarial images, Input-Aware's mask generator) or on the cell's clean
  model f_C (`preparation = "clean_model"`: LF's universal perturbation,
  TrojanNN's neuron-driven patch). `prepare(ctx)` computes the state,
  `state_dict()` / `load_state_dict()` carry it through the store;
- a trigger trained together with the backdoored model
  (`learned_in_attack = True`, Input-Aware's pattern generator): its state is
  saved beside f_A's weights under the prefix ``trigger.``.

Subclasses implement `apply`; `__call__` is the one entry point (shape check,
then `apply`), which is what the defense contract watches. `poison` is what
the attack's training applies to the poisoned samples: the test-time trigger
by default, something else for attacks whose poisoned training images differ
from the test-time ones (LC replaces them with adversarial images first).
"""
from __future__ import annotations

from typing import ClassVar

import torch

STATE_PREFIX = "trigger."
PREPARATIONS = ("none", "data", "clean_model")


class Trigger:
    #: "none", "data" or "clean_model" (see the module docstring)
    preparation: ClassVar[str] = "none"
    #: the attack's training learns (part of) the trigger; saved with f_A
    learned_in_attack: ClassVar[bool] = False
    #: the preparation trains a model of the cell's architecture (LC's robust
    #: model), so the architecture is part of the trigger stage's key
    uses_architecture: ClassVar[bool] = False
    #: poisoning row i depends on image i only (not on its index, not on the
    #: batch), so a batch can be triggered whole and the poisoned rows kept:
    #: the sync-free GPU path of `AttackModule.prepare_batch`
    rowwise: ClassVar[bool] = False

    def __init__(self, image_shape: tuple[int, int, int]):
        self.image_shape = tuple(int(v) for v in image_shape)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[-3:]) != self.image_shape:
            raise ValueError(f"trigger made for images {self.image_shape}, got {tuple(images.shape[-3:])}")
        return self.apply(images)

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def poison(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Training-time poisoning of the samples with dataset `indices`."""
        return self(images)

    # ---- state computed in a preparation stage (or by the attack's training) ----
    def prepare(self, ctx) -> None:
        """Compute the state from a `benchmark.triggers.preparation.PreparationContext`."""
        raise NotImplementedError(f"{type(self).__name__} has preparation {self.preparation!r} but no prepare()")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            raise ValueError(f"{type(self).__name__} keeps no state, got {sorted(tensors)}")

    @property
    def has_stage(self) -> bool:
        return self.preparation != "none"


class PatternTrigger(Trigger):
    """A pattern blended in through a mask: x' = (1 - m) x + m p. Patch
    triggers (BadNets) use a binary mask, blending triggers a constant alpha.
    One broadcast op on a whole batch."""
    rowwise = True

    def __init__(self, pattern: torch.Tensor, mask: torch.Tensor):
        super().__init__(tuple(pattern.shape))
        # pattern, mask: (C, H, W) float in [0, 1]
        self.pattern = pattern.float()
        self.mask = mask.float()

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        pattern, mask = on_device(self, "pattern", images), on_device(self, "mask", images)
        return images * (1 - mask) + pattern * mask


def on_device(trigger: Trigger, name: str, images: torch.Tensor) -> torch.Tensor:
    """`trigger.<name>` on the images' device and dtype, copied there once
    (not once per training step: a host-to-device copy per step stalls a GPU).
    The copy is refreshed when the attribute is replaced (LF and TrojanNN set
    their pattern after preparation or loading)."""
    source = getattr(trigger, name)
    cache = trigger.__dict__.setdefault("_device_copies", {})
    key = (name, images.device, images.dtype)
    held = cache.get(key)
    if held is None or held[0] is not source:
        held = cache[key] = (source, source.to(images.device, images.dtype))
    return held[1]


class AdditiveTrigger(Trigger):
    """x' = clip(x + v, 0, 1) for a fixed (C, H, W) pattern v (SIG's sinusoid,
    LF's low-frequency perturbation, TrojanNN's masked patch)."""
    rowwise = True

    def __init__(self, image_shape: tuple[int, int, int], pattern: torch.Tensor | None = None):
        super().__init__(image_shape)
        self.pattern = torch.zeros(self.image_shape) if pattern is None else pattern.float()

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        return (images + on_device(self, "pattern", images)).clamp(0, 1)
