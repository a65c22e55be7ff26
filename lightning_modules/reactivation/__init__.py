"""Re-activation methods by short name (white-box here; black-box variants
get a query oracle instead of the model)."""

from benchmark.extension.registry import Registry, import_methods
from lightning_modules.reactivation.base import ReactivationModule

REACTIVATIONS: Registry[type[ReactivationModule]] = Registry(
    "re-activation method", group="bdbench.reactivations",
    expects=("a ReactivationModule subclass",
             lambda obj: isinstance(obj, type) and issubclass(obj, ReactivationModule)))

import_methods(__name__, __path__, ("base", "norms"))

__all__ = ["REACTIVATIONS", "ReactivationModule"]
