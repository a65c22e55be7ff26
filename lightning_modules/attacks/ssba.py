"""SSBA (Li et al., ICCV 2021): dirty-label poisoning with a StegaStamp
encoder's sample-specific, invisible trigger (trigger "ssba", prepared from
the attacker's training data). BackdoorBench config/attack/ssba/default.yaml
and attack/ssba.py: pratio 0.1, target 0, all-to-one; the encoder's training
defaults are the trigger's (BackdoorBench resource/ssba/train.py)."""
from lightning_modules.attacks import ATTACKS
from lightning_modules.attacks.base import AttackPreset

ATTACKS.register("ssba")(AttackPreset(name="ssba", trigger="ssba"))
