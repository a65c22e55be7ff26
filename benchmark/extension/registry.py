"""Name -> object registries. Short names are what grids, the CLI and W&B
tags use.

Besides the names registered by this suite, every registry that has an
entry-point `group` resolves
- a reference to an importable object, ``package.module:Class``;
- a reference to a file, ``path/to/file.py:Class`` (relative to the current
  directory, or absolute);
- the name of an entry point an installed package declares in `group`, e.g.
  in its pyproject.toml::

      [project.entry-points."bdbench.defenses"]
      my-defense = "my_package.defense:MyDefense"

A reference is used as the method's name everywhere (store, report, W&B),
so the same plugin always gets the same name. `expects` checks that what a
reference points to is the right kind of object (a DefenseModule subclass,
...), with a one-line error otherwise.
"""
from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from benchmark.errors import ConfigError, UnknownNameError
from benchmark.extension.plugins import is_reference, load_reference

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str | None = None,
                 expects: tuple[str, Callable[[object], bool]] | None = None):
        self.kind = kind
        self.group = group
        self.expects = expects
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}   # name -> module that defines the object
        self._plugins: dict[str, T] = {}     # references and entry points, resolved once

    def register(self, name: str) -> Callable[[T], T]:
        # The module calling register() is where the object is defined (a
        # class's own module, or the module that builds a preset object).
        caller = sys._getframe(1).f_globals.get("__name__", "")

        def decorate(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            self._origins[name] = getattr(obj, "__module__", None) if isinstance(obj, type) else caller
            return obj

        return decorate

    # ---- plugins ---------------------------------------------------------------------
    def _entry_points(self) -> dict:
        if self.group is None:
            return {}
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def _check(self, name: str, obj) -> T:
        if self.expects is not None:
            what, ok = self.expects
            if not ok(obj):
                raise ConfigError(f"{self.kind} {name!r} is {obj!r}, not {what}")
        return obj

    def _plugin(self, name: str) -> T | None:
        if name in self._plugins:
            return self._plugins[name]
        if self.group is not None and is_reference(name):
            obj, module = load_reference(name, self.kind)
        else:
            ep = self._entry_points().get(name)
            if ep is None:
                return None
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001  (a broken installed plugin)
                raise ConfigError(f"{self.kind} {name!r} (entry point {ep.value} of {self.group}) could not be "
                                  f"loaded: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                                  ) from None
            module = ep.module
        self._plugins[name] = self._check(name, obj)
        self._origins[name] = getattr(obj, "__module__", None) if isinstance(obj, type) else module
        return obj

    # ---- lookup ----------------------------------------------------------------------
    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        obj = self._plugin(name) if isinstance(name, str) else None
        if obj is None:
            hint = ", or a plugin: package.module:Class or path/to/file.py:Class" if self.group else ""
            raise UnknownNameError(self.kind, name, self.names(), hint) from None
        return obj

    def origin(self, name: str) -> str:
        """The module that defines `name` (for code fingerprints)."""
        self.get(name)
        return self._origins[name]

    def names(self) -> list[str]:
        """Built-in names and those of installed entry points (references are
        not listed: any importable one is accepted)."""
        return sorted(set(self._entries) | set(self._entry_points()))

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_methods(package: str, path, skip: tuple[str, ...] = ("base",)) -> None:
    """Import every module of a method package (their `register` decorators
    fill its registry), except its shared modules in `skip`: a new method
    is a new file and nothing else."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(path):
        if info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
