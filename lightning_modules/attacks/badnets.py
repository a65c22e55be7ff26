"""BadNets: 3x3 white patch at the bottom-right corner (BackdoorBench default)."""
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackPreset

ATTACKS.register("badnets")(AttackPreset(name="badnets", trigger="badnets",
                                         trigger_params={"size": 3, "value": 1.0, "position": "bottom_right"}))
