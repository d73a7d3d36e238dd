"""The stand-ins are independent of the product: a stand-in built from product code would agree
with the product's bugs, so no module under `standins/` may import the `stages` package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STANDINS = Path(__file__).resolve().parent.parent / "standins"
PRODUCT = "stages"
DYNAMIC = {"import_module", "__import__"}


def is_product(module: str | None) -> bool:
    """Return whether a dotted module name is the product package or inside it."""
    return module is not None and (module == PRODUCT or module.startswith(PRODUCT + "."))


def product_imports(source: str) -> list[tuple[int, str]]:
    """Return (line, module) of every product import in the source, wherever it sits."""
    found = []
    # ast.walk visits every node: imports in functions, methods, TYPE_CHECKING and try blocks.
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if is_product(a.name)]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and is_product(node.module):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if name in DYNAMIC and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                if is_product(arg.value):
                    found.append((node.lineno, arg.value))
    return found


@pytest.mark.parametrize(
    "source, line",
    [
        ("import stages.core.errors\n", 1),
        ("import numpy, stages as s\n", 1),
        ("from stages.sources.figure8.montage import Geometry\n", 1),
        ("from stages import core\n", 1),
        ("def f():\n    from stages.core import errors\n", 2),
        ("class A:\n    def m(self):\n        import stages\n", 3),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stages.x import Y\n", 3),
        ("try:\n    pass\nexcept ImportError:\n    import stages.y\n", 4),
        ("import importlib\nM = importlib.import_module('stages.labels')\n", 2),
        ("M = __import__('stages')\n", 1),
    ],
)
def test_the_scan_finds_product_imports_wherever_they_are(source, line):
    assert [n for n, _ in product_imports(source)] == [line]


@pytest.mark.parametrize(
    "source",
    [
        "import stagesque\n",  # another package whose name starts the same
        "from standins.http import Handler\n",
        "from . import http\n",
        "import numpy as stages\n",  # a local name, not the package
        "x = 'stages.core'\n",
    ],
)
def test_the_scan_ignores_what_is_not_the_product(source):
    assert product_imports(source) == []


def test_no_standin_imports_product_code():
    modules = sorted(STANDINS.rglob("*.py"))
    assert any(p.name == "figure8.py" for p in modules)  # the scan sees the stand-ins
    offenders = {
        str(p.relative_to(STANDINS.parent)): found
        for p in modules
        if (found := product_imports(p.read_text(encoding="utf-8")))
    }
    assert offenders == {}
