"""Re-activation methods by short name (white-box here; black-box variants
get a query oracle instead of the model)."""
import importlib
import pkgutil

from benchmark.extension.registry import Registry
from lightning_modules.reactivation.base import ReactivationModule

REACTIVATIONS: Registry[type[ReactivationModule]] = Registry(
    "re-activation method", group="bdbench.reactivations",
    expects=("a ReactivationModule subclass",
             lambda obj: isinstance(obj, type) and issubclass(obj, ReactivationModule)))

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "norms"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["REACTIVATIONS", "ReactivationModule"]
