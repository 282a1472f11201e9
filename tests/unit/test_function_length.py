"""No function in rainbowd/core is over 60 lines: the pure core is read far more than it is
written, and a function that long mixes concerns (docs/design.md "Adding a rule" relies on one
place per concern)."""

from __future__ import annotations

import ast
from pathlib import Path

import rainbowd.core

LIMIT = 60
CORE = Path(rainbowd.core.__file__).parent


def long_functions(root: Path, limit: int) -> list[str]:
    """Every function (methods and nested ones included) under `root` longer than `limit`
    lines, decorators and docstring included, as `path:line name (n lines)`."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                assert node.end_lineno is not None
                lines = node.end_lineno - start + 1
                if lines > limit:
                    where = path.relative_to(root.parent.parent)
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_core_is_over_60_lines() -> None:
    assert long_functions(CORE, LIMIT) == []


def test_the_walk_finds_a_long_function(tmp_path: Path) -> None:
    package = tmp_path / "pkg" / "core"
    package.mkdir(parents=True)
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (package / "long.py").write_text(f"def long() -> None:\n{body}\n", encoding="utf-8")
    assert long_functions(package, LIMIT) == ["pkg/core/long.py:1 long (61 lines)"]
