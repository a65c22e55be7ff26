"""Multimodal (CLIP) defenses by short name. Add one by subclassing
`ClipDefenseModule` in a new file of this package decorated with
``@CLIP_DEFENSES.register("<name>")``; every file here is imported."""

from benchmark.extension.registry import Registry, import_methods
from lightning_modules.clip.defenses.base import ClipDefenseModule

CLIP_DEFENSES: Registry[type[ClipDefenseModule]] = Registry(
    "CLIP defense", group="bdbench.clip_defenses",
    expects=("a ClipDefenseModule subclass", lambda obj: isinstance(obj, type) and issubclass(obj, ClipDefenseModule)))

import_methods(__name__, __path__)

__all__ = ["CLIP_DEFENSES", "ClipDefenseModule"]
