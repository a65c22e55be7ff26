"""Attacks by short name. An attack is a trigger plus a preset; a new module
class is needed only when the training objective itself changes."""
from benchmark.registry import Registry
from lightning_modules.attacks.base import AttackModule, AttackPreset

ATTACKS: Registry[AttackPreset] = Registry(
    "attack", group="bdbench.attacks",
    expects=("an AttackPreset (a trigger name, its parameters and the module that trains with it)",
             lambda obj: isinstance(obj, AttackPreset)))

from lightning_modules.attacks import (badnets, blended, clean, input_aware, lc, lf, sig, ssba,  # noqa: E402,F401
                                       trojannn, wanet)  # (registers)

__all__ = ["ATTACKS", "AttackModule", "AttackPreset"]
