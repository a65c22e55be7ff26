"""Multimodal (CLIP) defenses by short name. Add one by subclassing
`ClipDefenseModule` in a new file of this package decorated with
``@CLIP_DEFENSES.register("<name>")``; every file here is imported."""
import importlib
import pkgutil

from benchmark.extension.registry import Registry
from lightning_modules.clip.defenses.base import ClipDefenseModule

CLIP_DEFENSES: Registry[type[ClipDefenseModule]] = Registry(
    "CLIP defense", group="bdbench.clip_defenses",
    expects=("a ClipDefenseModule subclass", lambda obj: isinstance(obj, type) and issubclass(obj, ClipDefenseModule)))

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["CLIP_DEFENSES", "ClipDefenseModule"]
