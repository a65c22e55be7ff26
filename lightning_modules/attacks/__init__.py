"""Attacks by short name. An attack is a trigger plus a preset; a new module
class is needed only when the training objective itself changes."""

from benchmark.extension.registry import Registry, import_methods
from lightning_modules.attacks.base import AttackModule, AttackPreset

ATTACKS: Registry[AttackPreset] = Registry(
    "attack", group="bdbench.attacks",
    expects=("an AttackPreset (a trigger name, its parameters and the module that trains with it)",
             lambda obj: isinstance(obj, AttackPreset)))

# Every file of this package registers its preset on import; discovered, not
# named, so an attack's code fingerprint does not cover the other attacks.
import_methods(__name__, __path__)

__all__ = ["ATTACKS", "AttackModule", "AttackPreset"]
