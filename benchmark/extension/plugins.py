"""Loading methods from outside the suite: ``package.module:Name`` and
``path/to/file.py:Name`` references (see `benchmark.extension.registry`).

A file is imported once per process under a private module name derived
from its absolute path, so two plugins called `defense.py` in different
folders never collide, and the folder is remembered as the plugin's home:
code fingerprints (`benchmark.storage.fingerprint`) follow the plugin's imports of
its sibling files, as they follow the suite's own.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from benchmark.errors import ConfigError

# Folders of file plugins and top-level packages of module plugins: where a
# code fingerprint follows imports, beside the suite's own packages.
PLUGIN_DIRS: set[Path] = set()
PLUGIN_PACKAGES: set[str] = set()


def is_reference(name: str) -> bool:
    """`a.b:C` or `some/file.py:C` (a single colon, both sides non-empty)."""
    location, sep, attr = name.rpartition(":")
    return bool(sep and location and attr and attr.isidentifier())


def _is_file(location: str) -> bool:
    return location.endswith(".py") or "/" in location or "\\" in location


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _import_file(location: str, kind: str, name: str):
    path = Path(location).expanduser()
    if not path.is_file():
        raise ConfigError(f"{kind} plugin {name!r}: file {location} does not exist (paths are relative to the "
                          f"current directory {Path.cwd().name!r} or absolute)")
    path = path.resolve()
    module_name = f"bdbench_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{kind} plugin {name!r}: {location} is not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered before running, as a normal import is: dataclasses and
    # typing resolve the module's own names through sys.modules.
    sys.modules[module_name] = module
    # Sibling files import by their plain module names, as when run as a script.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    PLUGIN_DIRS.add(path.parent)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001  (any error in the user's file)
        del sys.modules[module_name]
        raise ConfigError(f"{kind} plugin {name!r}: importing {location} failed: {_first_line(exc)}") from None
    return module


def _import_module(location: str, kind: str, name: str):
    try:
        module = importlib.import_module(location)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{kind} plugin {name!r}: no module named {exc.name!r} (is its package installed or "
                          f"on PYTHONPATH?)") from None
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{kind} plugin {name!r}: importing {location} failed: {_first_line(exc)}") from None
    PLUGIN_PACKAGES.add(location.split(".")[0])
    return module


def load_reference(name: str, kind: str):
    """The object `name` refers to and the name of the module defining it."""
    location, _, attr = name.rpartition(":")
    module = _import_file(location, kind, name) if _is_file(location) else _import_module(location, kind, name)
    if not hasattr(module, attr):
        public = sorted(n for n in vars(module) if not n.startswith("_") and isinstance(vars(module)[n], type))
        raise ConfigError(f"{kind} plugin {name!r}: {location} has no {attr!r}; it defines: "
                          f"{', '.join(public) or 'no classes'}")
    return getattr(module, attr), module.__name__
