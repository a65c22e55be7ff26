"""The shape of the code, checked from its source (ARCHITECTURE.md draws it):
no import circles between the project's modules, the methods below the
orchestration and never importing it, and no module of the benchmark or the
sweeps grown past what a reader takes in at once.

Imports are read with `ast`, not executed: every import counts, including
those inside functions, because a circle hidden in a function is still a
circle (it only moves the failure from import time to call time), and a
lower layer importing a higher one inside a function still ties the two.
Dynamic imports (importlib, plugin references) are not seen.
"""
from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

import benchmark

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "sweeps", "lightning_modules", "datamodules")

# Methods (what a cell is made of) sit below the orchestration that runs them:
# a method that imported the cell, the CLI or the reporting could no longer be
# fingerprinted, tested or reused on its own.
METHODS = ("lightning_modules", "datamodules", "benchmark.models", "benchmark.triggers", "benchmark.measures",
           "benchmark.text")
ORCHESTRATION = ("benchmark.cell", "benchmark.reporting", "benchmark.cli", "benchmark.speed", "sweeps")
# name: (importers, modules they must never import, why)
LAYERS = {
    "methods": (METHODS, ORCHESTRATION, "the methods sit below the orchestration"),
    "cell": (("benchmark.cell",), ("sweeps", "benchmark.cli", "benchmark.reporting"),
             "one cell knows nothing of grids, the command line or the report"),
    "sweeps": (("sweeps",), ("benchmark.cli",), "grids are run by the CLI, not the other way round"),
}

# A module longer than this is doing more than one thing; split it along its seams.
MAX_LINES = 300
# The method packages hold one method per file, whatever its length.
LENGTH_CHECKED = ("benchmark", "sweeps")


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_files() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the four packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            # virtual environments and caches are not the project's code
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            parts = rel.with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _current(name: str) -> str:
    """An old module name (benchmark.report, ...) as the module that now holds its code."""
    return benchmark.moved_name(name) or name


def imported_modules(source: str, module: str, is_package: bool, known) -> set[str]:
    """The modules among `known` that `source` (the text of `module`) imports
    anywhere, old names mapped to current ones. `import a.b.c` counts a.b.c
    only (not a or a.b); `from a.b import c` counts a.b, and a.b.c as well
    when that is a module; relative imports are resolved against `module`."""
    found = set()

    def add(name: str) -> None:
        name = _current(name)
        if name in known and name != module:
            found.add(name)

    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[:len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            add(base)
            for alias in node.names:
                if alias.name != "*":
                    add(f"{base}.{alias.name}")  # only kept when it is a module
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(path.read_text(), name, path.name == "__init__.py", files)
            for name, path in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], set[str]]]:
    """Each group of mutually importing modules (strongly connected component
    with more than one module) as (chain, group): the chain [a, b, ..., a] is
    the shortest circle through the group's first module by name, so that a
    failure names one concrete circle to break, and the group all of it."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(v):  # Tarjan's algorithm, iterative: the graph may be deep
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == node:
                        break
                if len(component) > 1:
                    components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    chains = []
    for component in components:
        start = min(component)
        # breadth-first from start, inside the component, to a module that imports start
        parent, queue = {start: None}, deque([start])
        while queue:
            node = queue.popleft()
            if start in graph[node]:
                path = []
                while node is not None:
                    path.append(node)
                    node = parent[node]
                chains.append((path[::-1] + [start], component))
                break
            for child in sorted(graph[node] & component):
                if child not in parent:
                    parent[child] = node
                    queue.append(child)
    return sorted(chains, key=lambda found: found[0])


# ---- the checker itself ------------------------------------------------------------------
def test_imports_are_read_as_python_resolves_them():
    known = {"benchmark", "benchmark.cell", "benchmark.cell.spec", "benchmark.reporting",
             "benchmark.reporting.report", "benchmark.reporting.tables", "benchmark.reporting.figures"}
    source = "\n".join([
        "import benchmark.cell.spec",                        # the module named, not its packages
        "from benchmark import report",                      # an old name, through MOVED
        "from . import tables",                              # relative, a submodule
        "from .figures import plot_bec_vs_asr",              # relative, a name in a module
        "import numpy",                                      # outside the project: ignored
        "def later():",
        "    from benchmark.reporting.report import summarize",  # inside a function: counted
    ])
    assert imported_modules(source, "benchmark.reporting.leaderboard", False, known) == {
        "benchmark.cell.spec", "benchmark", "benchmark.reporting.report", "benchmark.reporting",
        "benchmark.reporting.tables", "benchmark.reporting.figures"}
    # in a package's __init__, "." is the package itself (and a module never imports itself)
    assert imported_modules("from . import report", "benchmark.reporting", True, known) == {
        "benchmark.reporting.report"}


def test_circles_are_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}  # e alone is no group
    assert _cycles(graph) == [(["a", "b", "c", "a"], {"a", "b", "c"})]
    # two circles through one module: the shorter is named, the group holds both
    assert _cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"d"}, "d": {"a"}}) == [(["a", "b", "a"], {"a", "b", "c", "d"})]
    assert _cycles({"x": {"y"}, "y": set()}) == []


def test_the_graph_holds_imports_inside_functions():
    graph = import_graph()
    # report imports its figures inside write_report (matplotlib only when drawing)
    assert "benchmark.reporting.figures" in graph["benchmark.reporting.report"]


# ---- the architecture ----------------------------------------------------------------------
def test_no_import_circles():
    found = _cycles(import_graph())
    lines = []
    for chain, group in found:
        lines.append(" -> ".join(chain))
        if rest := sorted(group - set(chain)):
            lines.append(f"    (in the same circle, {len(group)} modules in all: also {', '.join(rest)})")
    assert not found, "import circles:\n" + "\n".join(lines)


@pytest.mark.parametrize("importers,forbidden,why", LAYERS.values(), ids=list(LAYERS))
def test_layers_import_only_downwards(importers, forbidden, why):
    wrong = sorted(f"{module} imports {target}"
                   for module, targets in import_graph().items() if _within(module, importers)
                   for target in targets if _within(target, forbidden))
    assert not wrong, f"{why}:\n" + "\n".join(wrong)


def test_modules_stay_short():
    long = sorted(f"{path.relative_to(ROOT)}: {n} lines"
                  for name, path in module_files().items() if _within(name, LENGTH_CHECKED)
                  if (n := len(path.read_text().splitlines())) > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines (split them along their seams):\n" + "\n".join(long)
