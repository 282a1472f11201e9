"""rainbowd/core/ stays pure: no module there imports an I/O, async or client library.

Walks the AST of every core module, so a lazy import inside a function is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rainbowd.core

CORE = Path(rainbowd.core.__file__).parent
FORBIDDEN = (
    "asyncio",
    "aiohttp",
    "kubernetes_asyncio",
    "kubernetes",
    "prometheus_client",
    "yaml",
    "socket",
    "subprocess",
    "requests",
    "urllib.request",
    "http.client",
)
MODULES = sorted(CORE.rglob("*.py"))


def imported_names(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append(node.args[0].value)
    return names


def forbidden_in(names: list[str]) -> list[str]:
    return [n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]


def test_core_has_modules() -> None:
    found = {str(p.relative_to(CORE)) for p in MODULES}
    assert found >= {"model.py", "planner/rules.py", "reporting.py", "snapshots.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert forbidden_in(imported_names(tree)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import yaml as y",
        "from aiohttp import web",
        "from kubernetes_asyncio.client import ApiClient",
        "def f():\n    import prometheus_client",
        "import importlib\nimportlib.import_module('yaml')",
    ],
)
def test_the_walk_catches_impure_imports(source: str) -> None:
    assert forbidden_in(imported_names(ast.parse(source)))


def test_the_walk_allows_pure_imports() -> None:
    source = "import math\nfrom datetime import UTC\nfrom rainbowd.core.model import Plan"
    assert forbidden_in(imported_names(ast.parse(source))) == []
