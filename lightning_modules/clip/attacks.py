"""The paper's CLIP attacks (Figure 5: BadNets, Blended, SIG, TrojanVQA) as
triggers with their reference parameters, at the reference's 224 px (patch
sizes are in pixels of the data; scale them for smaller images).

- badnets: a 16 x 16 Gaussian-noise patch around the image mean at a random
  location, drawn on the RGB image with 3 channels and wrapped modulo 256 by
  the uint8 cast (CleanCLIP backdoor/utils.py, patch_type "random";
  benchmark/triggers/noise_patch.py); `channels="data"`,
  `overflow="clamp"` give the suite's earlier grey, clamped patch;
- blended: 0.2 * U(0, 1) noise + 0.8 * image (patch_type "blended");
- sig: the 60/255-amplitude sinusoid with f = 6 added to the image, as
  BadCLIP adds it (LiangSiyuan21/BadCLIP backdoor/utils.py; the suite's SIG
  trigger, `delta` in 0-255 units); CleanCLIP blends it at 0.2 instead;
- trojanvqa: a 16 x 16 patch at a random location; TrojanVQA's optimised
  patch file is not available offline, so the patch is drawn from the seed;
- badnets_corner: not a paper attack but the positive control: one noise
  patch drawn from the seed, the same on every image, at the top-left
  corner (noise_patch with location "corner", noise "fixed"). A pipeline
  that cannot implant it has a bug; one that implants it but not badnets
  meets the harder, translation-invariant trigger.
Per-image randomness (location, noise) is derived from the image itself so a
triggered image is the same in every job (benchmark/triggers/hashed_noise.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from benchmark.extension.registry import Registry


@dataclass(frozen=True)
class ClipAttack:
    name: str
    trigger: str
    trigger_params: dict = field(default_factory=dict)


CLIP_ATTACKS: Registry[ClipAttack] = Registry(
    "CLIP attack", group="bdbench.clip_attacks",
    expects=("a ClipAttack (a trigger name and its parameters)", lambda obj: isinstance(obj, ClipAttack)))

for _attack in (ClipAttack("badnets", "noise_patch", {"size": 16}),
                ClipAttack("blended", "noise_blend", {"alpha": 0.2}),
                ClipAttack("sig", "sig", {"delta": 60.0, "frequency": 6.0}),
                ClipAttack("trojanvqa", "seeded_patch", {"size": 16}),
                ClipAttack("badnets_corner", "noise_patch", {"size": 16, "location": "corner", "noise": "fixed"})):
    CLIP_ATTACKS.register(_attack.name)(_attack)
