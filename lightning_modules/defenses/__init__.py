"""Defenses by short name: the suite's extension point.

To add one, subclass `DefenseModule` in a new file of this package and
decorate it with ``@DEFENSES.register("<short name>")``; every file here is
imported, so the name is usable in the CLI and grids and the contract tests
cover it, with no other file changed.
"""

from benchmark.extension.registry import Registry, import_methods
from lightning_modules.defenses.base import DefenseModule

DEFENSES: Registry[type[DefenseModule]] = Registry(
    "defense", group="bdbench.defenses",
    expects=("a DefenseModule subclass", lambda obj: isinstance(obj, type) and issubclass(obj, DefenseModule)))

import_methods(__name__, __path__)

__all__ = ["DEFENSES", "DefenseModule"]
