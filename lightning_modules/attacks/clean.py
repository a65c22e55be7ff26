"""No poisoning: trains the clean model f_C that BEC is normalised against."""
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackPreset

ATTACKS.register("clean")(AttackPreset(name="clean", trigger=None))
