"""The import graph of stages/: no layer imports a higher one, and no modules import in a cycle.

Every import counts: at module level, inside functions and under `if TYPE_CHECKING:` (a lazy
or type-only import couples the code all the same). Relative imports are resolved; an
`importlib.import_module` call with a computed name (how sources are loaded by name) is not
an import here, nor is the parent package Python loads before a submodule (a package whose
__init__ imports its submodules would otherwise be a cycle).
"""

from __future__ import annotations

import ast
import warnings
from collections import defaultdict, deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ROOT / "stages"

# What each layer may import (itself included), lowest layer first; `entry` is the stages
# package and the stage modules stages/*.py. No layer imports a higher one, and peers stay
# apart: formats and net, sources and targets (but for the tator target, below).
MAY_IMPORT = {
    "core": {"core"},
    "formats": {"core", "formats"},
    "net": {"core", "net"},
    "families": {"core", "formats", "families"},
    "sources": {"core", "formats", "net", "families", "sources"},
    # The tator target calls the Tator source's API client and reads labels with its code.
    "targets": {"core", "formats", "net", "sources", "targets"},
    "pipeline": {"core", "formats", "net", "families", "sources", "targets", "pipeline"},
    "entry": {"core", "formats", "net", "families", "sources", "targets", "pipeline", "entry"},
}

# Known violations, to be removed: (importer, imported) edges the layer and cycle checks skip.
KNOWN: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    """Map every module under stages/ (a package by its own name) to its file."""
    out = {}
    for path in sorted(STAGES.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    """Return the longest prefix of a dotted name that is a module of ours."""
    parts = name.split(".")
    while len(parts) > 1 and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Return (imported module, line) for every stages/standins import in a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module mod; `from mod import name`, mod.
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "stages":
                found.append((_resolve(name), node.lineno))
            elif name.split(".")[0] == "standins":
                found.append(("standins", node.lineno))
    return found


def _edges() -> dict[tuple[str, str], list[int]]:
    """Map each (importer, imported) pair to the lines it is imported on."""
    edges = defaultdict(list)
    for module, path in MODULES.items():
        for target, line in _imports(module, path):
            if target != module:
                edges[module, target].append(line)
    return edges


EDGES = _edges()


def layer(module: str) -> str:
    """Return a module's layer: its subpackage of stages/, else entry."""
    if module == "standins":
        return "standins"  # in no layer's set: no stage imports a stand-in
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (STAGES / parts[1]).is_dir() else "entry"


def where(importer: str, imported: str) -> str:
    """Return `file:line[,line...]` of an import."""
    lines = ",".join(map(str, sorted(set(EDGES[importer, imported]))))
    return f"{MODULES[importer].relative_to(ROOT)}:{lines}"


def test_every_package_is_in_a_layer():
    unknown = sorted({layer(m) for m in MODULES} - set(MAY_IMPORT))
    assert not unknown, f"stages/{unknown[0]} is in no layer: add it to MAY_IMPORT in this file"


def test_no_layer_imports_a_higher_one():
    bad = []
    for importer, imported in sorted(EDGES):
        if (importer, imported) in KNOWN:
            continue
        src, dst = layer(importer), layer(imported)
        if dst not in MAY_IMPORT.get(src, {src}):
            allowed = ", ".join(sorted(MAY_IMPORT.get(src, {src})))
            bad.append(
                f"{where(importer, imported)}: {importer} ({src}) imports {imported} ({dst}); "
                f"{src} may import only {allowed}"
            )
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_sources_do_not_import_each_other():
    """Keep each source's package to itself and the base (stages.sources)."""
    bad = []
    for importer, imported in sorted(EDGES):
        mine, theirs = importer.split(".")[:3], imported.split(".")[:3]
        if mine[:2] == theirs[:2] == ["stages", "sources"] and len(theirs) == 3 and mine != theirs:
            bad.append(f"{where(importer, imported)}: {importer} imports {imported}")
    assert not bad, "a source imports another source's package:\n" + "\n".join(bad)


def _parts(graph: dict[str, set[str]]) -> list[set[str]]:
    """Return the strongly connected parts of more than one module (Tarjan)."""
    index, low, stack, on_stack, parts = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = {v}
            while (w := stack.pop()) != v:
                part.add(w)
            on_stack.difference_update(part)
            if len(part) > 1:
                parts.append(part)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return parts


def _shortest_cycle(graph: dict[str, set[str]], part: set[str]) -> list[str]:
    """Return a shortest cycle through the first module of a strongly connected part."""
    start = min(part)
    back = {start: start}
    todo = deque([start])
    while todo:
        v = todo.popleft()
        if start in graph[v]:
            path = [v]
            while path[-1] != start:
                path.append(back[path[-1]])
            return [*reversed(path), start]
        for w in sorted(graph[v] & part - back.keys()):
            back[w] = v
            todo.append(w)
    raise AssertionError(f"no cycle through {start}")


def test_no_import_cycles():
    graph = {module: set() for module in MODULES}
    for importer, imported in EDGES:
        if imported in MODULES and (importer, imported) not in KNOWN:
            graph[importer].add(imported)
    text = []
    for part in _parts(graph):
        text.append("cycle " + " -> ".join(_shortest_cycle(graph, part)) + "; all imports in it:")
        text += [
            f"  {where(a, b)}: {a} imports {b}"
            for a in sorted(part)
            for b in sorted(graph[a] & part)
        ]
    assert not text, "import cycles:\n" + "\n".join(text)


def test_known_violations_still_exist():
    """Warn about allow-list entries whose import is gone, so the list only shrinks."""
    for importer, imported in sorted(KNOWN - set(EDGES)):
        warnings.warn(f"{importer} no longer imports {imported}: drop it from KNOWN", stacklevel=1)
