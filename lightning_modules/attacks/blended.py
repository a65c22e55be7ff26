"""Blended: alpha 0.2 blend with a seeded noise pattern (an image file can be
given instead through the trigger parameter `pattern_path`)."""
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackPreset

ATTACKS.register("blended")(AttackPreset(name="blended", trigger="blended",
                                         trigger_params={"alpha": 0.2, "pattern_seed": 1234}))
