"""Every stage that trains something is a LightningModule: attacks (poisoned
training), defenses (the extension point) and re-activation (the universal
perturbation)."""
from lightning_modules.base import BackdoorStage

__all__ = ["BackdoorStage"]
