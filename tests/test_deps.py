"""dvc.yaml's code deps cover every project module each stage imports, so they cannot drift.

Two views, both must be covered: what a stage's modules import when loaded (a static scan
of module-level imports), and what a real run of the stage imported, lazy imports included
(`python -X importtime`, on a small stand-in build).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_project

ROOT = Path(__file__).resolve().parent.parent
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SKIP = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _load_time_nodes(tree: ast.AST):
    """Yield the nodes that run when a module is imported: not function bodies, and not
    `if TYPE_CHECKING:` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, SKIP):
            continue
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
            if name == "TYPE_CHECKING":
                todo.extend(node.orelse)
                continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def imported(module: str) -> set[str]:
    """Return the project modules a module imports when loaded, transitively."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        path = Path(spec.origin)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        for node in _load_time_nodes(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [base]
                targets += [
                    f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")
                ]
            todo.extend(t for t in targets if t.split(".")[0] in ("stages", "standins"))
    return seen


def module_file(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin).relative_to(ROOT)


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def stage_instances():
    """Yield (stage name, entry module, source or None, code deps) for every expanded stage."""
    for name, stage in DVC["stages"].items():
        if "foreach" in stage:
            over = PARAMS[stage["foreach"].strip("${}")]
            body = stage["do"]
            for key, item in over.items():

                def expand(text: str, key=key, item=item) -> str:
                    text = text.replace("${key}", key)
                    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)

                # A stage given the source's name loads its package; export-folders is not.
                cmd = expand(body["cmd"])
                source = key if cmd.split()[3] == key else None
                yield f"{name}@{key}", cmd, source, [expand(d) for d in body["deps"]]
        else:
            yield name, stage["cmd"], None, stage["deps"]


STAGES = list(stage_instances())


@pytest.fixture(scope="module")
def traced(tmp_path_factory, standin_root):
    """Run every stage command once on a small build; return the modules each one imported."""
    from standins.figure8 import Figure8Standin
    from standins.kinetics import KineticsStandin, generate
    from standins.lila import LilaStandin
    from standins.tator import TatorStandin, empty

    tmp = tmp_path_factory.mktemp("traced")
    generate(tmp / "kinetics")
    out = {}
    with (
        LilaStandin(standin_root) as srv,
        KineticsStandin(tmp / "kinetics") as kin,
        TatorStandin(token="traced") as tator,
        TatorStandin(empty(), token="traced") as into,
        Figure8Standin(key="traced") as f8,
    ):
        into.annotate = True
        proj = make_project(
            tmp / "repo",
            tmp / "cache",
            srv.index_url,
            kinetics_url=kin.url,
            tator_url=tator.url,
            figure8_url=f8.url,
            import_url=into.url,
        )
        proj.env["TATOR_TOKEN"] = proj.env["FIGURE_EIGHT_KEY"] = "traced"
        for name, cmd, _, _ in STAGES:
            argv = cmd.split()
            assert argv[0] == "python"
            proc = proj.run(sys.executable, "-X", "importtime", *argv[1:], check=False)
            assert proc.returncode == 0, proc.stderr[-3000:]
            out[name] = {
                line.rsplit("|", 1)[1].strip()
                for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line
            }
    return out


def stage_files(name: str, cmd: str, source: str | None, traced) -> list[Path]:
    """Return the project files a stage instance imports (static roots plus its run's trace)."""
    entry = re.search(r"python -m (\S+)", cmd).group(1)
    roots = [entry, f"stages.sources.{source}"] if source else [entry]
    if name == "compose":
        roots += [f"stages.sources.{p.stem}" for p in sorted((ROOT / "conf/source").glob("*.yaml"))]
    modules = set().union(*(imported(r) for r in roots))
    modules |= {m for m in traced[name] if m.split(".")[0] == "stages"}
    return sorted({module_file(m) for m in modules})


_FAMILY: dict[str, list[Path]] = {}


def family_files(traced) -> dict[str, list[Path]]:
    """Return every stage instance's imported files (computed once)."""
    if not _FAMILY:
        for name, cmd, source, _ in STAGES:
            _FAMILY[name] = stage_files(name, cmd, source, traced)
    return _FAMILY


@pytest.mark.parametrize("name, cmd, source, deps", STAGES, ids=[s[0] for s in STAGES])
def test_code_deps_cover_every_import(name, cmd, source, deps, traced):
    entry = re.search(r"python -m (\S+)", cmd).group(1)
    roots = [entry]
    if source is not None:
        roots.append(f"stages.sources.{source}")  # loaded by name from argv
    elif name == "compose":  # compose loads every source package named in conf/source/
        roots += [f"stages.sources.{p.stem}" for p in sorted((ROOT / "conf/source").glob("*.yaml"))]
    modules = set().union(*(imported(r) for r in roots))
    ran = {m for m in traced[name] if m.split(".")[0] in ("stages", "standins")}
    # The trace misses the entry (it runs as __main__) and the source package (importlib loads
    # it, which -X importtime does not report): the static roots above cover both.
    assert "stages.core.config" in ran
    modules |= ran
    assert not any(m.split(".")[0] == "standins" for m in modules), "a stage imports a stand-in"
    files = sorted({module_file(m) for m in modules})
    missing = [str(f) for f in files if not covered(f, deps)]
    assert not missing, f"{name} imports code its deps do not cover: {missing}"
    for dep in deps:
        assert not dep.startswith("standins"), "editing a stand-in must never re-run a stage"
        if dep.startswith(("data/", "conf")):
            continue
        assert (ROOT / dep).exists(), f"{name}: dep {dep} does not exist"
        # No dep wider than needed: code the stage never imports must not re-run it. A
        # foreach family shares one deps list, so a dep must serve one of its instances.
        family = name.split("@")[0]
        used = [
            f
            for other, fs in family_files(traced).items()
            if other.split("@")[0] == family
            for f in fs
        ]
        assert any(covered(f, [dep]) for f in used), f"{name} depends on unused {dep}"


def test_the_run_trace_sees_lazy_imports(traced):
    """Fetch-only code is imported lazily: only the trace sees it, and only in fetch."""
    assert "stages.sources.lila.fetch" not in imported("stages.sources.lila")
    assert "stages.sources.lila.fetch" in traced["fetch@lila"]
    assert "stages.net.download" in traced["fetch@lila"]
    assert "stages.net.download" not in traced["clean-annotations@lila"]
