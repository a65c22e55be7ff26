"""Code fingerprints: a hash of the source code that computes a stage, part
of the stage's store key.

The fingerprint of a set of objects (classes, functions, modules, preset
objects) covers the source files of the modules that define them (for a
class: every class in its MRO), and, followed transitively, every module
those files import that belongs to this suite or to a plugin's home (its
folder, or its top-level package). Editing a defense's file therefore
recomputes that defense's stages and, through their keys, everything
downstream; editing a file no stage imports (the report, the sweep
machinery) recomputes nothing. Third-party libraries are not followed:
their versions are the environment's business.

The orchestration that plans and runs stages (the `benchmark/cell/`
package: spec, model families, stage units, rows), the command line and
the reporting are deliberately not part of any fingerprint, so refactoring
them keeps the store; a change there that alters results bumps
`store.CODE_SALT`.

Sources are read as text, with line endings normalised, and hashed by
module name, not path, so the same code gives the same key on any machine.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
import types
from pathlib import Path

from benchmark.extension import plugins
# The suite's own packages, whose imports a fingerprint follows.
SUITE_PACKAGES = ("benchmark", "lightning_modules", "datamodules")
# Modules that only orchestrate (plan, schedule, report) and never compute a
# stage's result: not fingerprinted (see the module docstring).
ORCHESTRATION = ("benchmark.cell", "benchmark.cli", "benchmark.reporting")


_FILES: dict[str, Path | None] = {}


def _module_file(name: str) -> Path | None:
    """The source file of a module; memoised once the module is imported."""
    if name in _FILES:
        return _FILES[name]
    file = _find_module_file(name)
    if name in sys.modules:
        _FILES[name] = file
    return file


def _find_module_file(name: str) -> Path | None:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    if file is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        file = spec.origin if spec is not None else None
    return Path(file) if file and file.endswith(".py") else None


_TRACKED: dict[tuple, bool] = {}


def _tracked(name: str) -> bool:
    """Whether a module's code counts; memoised per plugin configuration (a
    grid's plan asks this about the same few hundred names thousands of times)."""
    key = (name, frozenset(plugins.PLUGIN_PACKAGES), frozenset(plugins.PLUGIN_DIRS))
    if key not in _TRACKED:
        _TRACKED[key] = _decide_tracked(name)
    return _TRACKED[key]


def _decide_tracked(name: str) -> bool:
    if any(name == o or name.startswith(o + ".") for o in ORCHESTRATION):
        return False
    top = name.split(".")[0]
    if top in SUITE_PACKAGES or top in plugins.PLUGIN_PACKAGES or top.startswith("bdbench_plugin_"):
        return True
    file = _module_file(name)
    return file is not None and any(file.resolve().parent == d or d in file.resolve().parents
                                    for d in plugins.PLUGIN_DIRS)


def read_source(path: Path) -> str:
    """The text of a source file, line endings normalised."""
    return path.read_text(encoding="utf-8").replace("\r\n", "\n")


_SOURCES: dict[tuple, tuple[str, list[str]]] = {}


def _digest_and_imports(name: str, path: Path) -> tuple[str, list[str]]:
    """(sha256 of the module's source, names of the modules it imports);
    cached per file state."""
    stat = path.stat()
    key = (name, str(path), stat.st_mtime_ns, stat.st_size, read_source)
    if key not in _SOURCES:
        text = read_source(path)
        _SOURCES[key] = (hashlib.sha256(text.encode()).hexdigest(), _imports(name, path, text))
    return _SOURCES[key]


def _imports(name: str, path: Path, text: str) -> list[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(module)
            # `from package import submodule` imports the submodule too
            found += [f"{module}.{alias.name}" for alias in node.names]
    out = []
    for module in found:
        parts = module.split(".")
        # `import a.b.c` runs a, a.b and a.b.c
        out += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return out


def modules_of(obj) -> list[str]:
    """The modules whose code defines `obj`."""
    if isinstance(obj, types.ModuleType):
        return [obj.__name__]
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, type):
        return [c.__module__ for c in inspect.getmro(obj) if c.__module__ not in ("builtins",)]
    if callable(obj) and hasattr(obj, "__module__"):
        return [obj.__module__]
    return modules_of(type(obj))


def closure(names) -> dict[str, str]:
    """Digest of every tracked module reachable from `names` by imports."""
    seen: dict[str, str] = {}
    frontier = [n for n in names if _tracked(n)]
    while frontier:
        name = frontier.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        digest, imported = _digest_and_imports(name, path)
        seen[name] = digest
        frontier += [m for m in imported if m not in seen and _tracked(m)]
    return seen


def code_fingerprint(*objects) -> str:
    """One hash over the code of `objects` and what it imports (see above)."""
    names = [m for obj in objects for m in modules_of(obj)]
    digests = closure(names)
    payload = "\n".join(f"{name} {digest}" for name, digest in sorted(digests.items()))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
