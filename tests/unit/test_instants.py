"""Time arithmetic on values read from objects never raises, and it is the only such arithmetic:
an AST walk over `rainbowd/` finds every sum of a datetime and a duration outside
`rainbowd.core.instants`, and each must be one the helper's docstring lists (clock and constant)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rainbowd
from rainbowd.core import instants
from rainbowd.core.instants import DAWN, END, Beyond, earlier, later
from rainbowd.core.objects import parse_time

PACKAGE = Path(rainbowd.__file__).parent
HELPER = Path(instants.__file__)
# Sums the walk flags whose operands are both durations, not a datetime and a duration.
DURATION_SUMS = {"rainbowd.prom.querying: post_form"}

stamps = st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"]).map(parse_time) | (
    st.datetimes(timezones=st.just(UTC))
)
durations = st.timedeltas() | st.floats(allow_nan=True, allow_infinity=True)


@given(stamps, durations, st.sampled_from(Beyond))
def test_shifting_a_stamp_never_raises_and_out_of_range_is_the_callers_side(
    at: datetime, delta: timedelta | float, beyond: Beyond
) -> None:
    outside = END if beyond is Beyond.NEVER else DAWN
    for shifted, exact in (
        (later(at, delta, beyond=beyond), 1),
        (earlier(at, delta, beyond=beyond), -1),
    ):
        try:
            step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
            expected = at + exact * step
        except (OverflowError, ValueError):
            expected = outside
        assert shifted == expected


def test_the_hold_forever_stamp_plus_a_century_is_never_and_year_one_minus_a_day_long_ago() -> None:
    century = timedelta(days=36525)
    assert later(parse_time("9999-12-31T23:59:59Z"), century, beyond=Beyond.NEVER) == END
    assert earlier(parse_time("0001-01-01T00:00:00Z"), 86400.0, beyond=Beyond.LONG_AGO) == DAWN
    assert later(parse_time("2026-01-01T00:00:00Z"), 60.0, beyond=Beyond.NEVER) == parse_time(
        "2026-01-01T00:01:00Z"
    )


def _listed_places() -> set[str]:
    doc = instants.__doc__ or ""
    return set(re.findall(r"^- (rainbowd[\w.]*: [\w.]+)", doc, re.MULTILINE))


def _is_timedelta(annotation: ast.expr | None) -> bool:
    return annotation is not None and "timedelta" in ast.unparse(annotation)


def _trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def _duration_names(trees: dict[Path, ast.Module]) -> set[str]:
    """Names and attributes declared only as timedelta in the package (a name also declared as
    a number somewhere, such as `timeout`, is left out)."""
    durations: set[str] = set()
    others: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.AnnAssign):
                target = node.target
                name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
                (durations if _is_timedelta(node.annotation) else others).add(name)
            elif isinstance(node, ast.arg) and node.annotation is not None:
                (durations if _is_timedelta(node.annotation) else others).add(node.arg)
            elif (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Call)
                and ast.unparse(node.value.func).endswith("timedelta")
            ):
                durations.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return durations - others


def _sums(tree: ast.Module, durations: set[str]) -> Iterator[tuple[str, int, str]]:
    """Each `+`/`-` with a duration operand: (enclosing function's qualified name, line, code)."""

    def duration(e: ast.expr) -> bool:
        if isinstance(e, ast.Call):
            return ast.unparse(e.func).endswith("timedelta")
        if isinstance(e, ast.Name):
            return e.id in durations
        if isinstance(e, ast.Attribute):
            return e.attr in durations
        if isinstance(e, ast.UnaryOp):
            return duration(e.operand)
        if isinstance(e, ast.BinOp):
            return duration(e.left) or duration(e.right)
        return False

    def walk(node: ast.AST, where: str) -> Iterator[tuple[str, int, str]]:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = f"{where}.{child.name}" if where else child.name
            operands: tuple[ast.expr, ...] = ()
            if isinstance(child, ast.BinOp) and isinstance(child.op, ast.Add | ast.Sub):
                operands = (child.left, child.right)
            elif isinstance(child, ast.AugAssign) and isinstance(child.op, ast.Add | ast.Sub):
                operands = (child.value,)
            if any(duration(e) for e in operands):
                yield where, getattr(child, "lineno", 0), ast.unparse(child)
            yield from walk(child, inner)

    yield from walk(tree, "")


def test_every_datetime_and_duration_sum_goes_through_the_helper_or_is_listed() -> None:
    trees = _trees()
    durations = _duration_names(trees)
    # The walk sees what it must: the knobs and the budget's window are durations.
    assert {"max_retired_age", "scale_up_grace", "per"} <= durations
    allowed = _listed_places() | DURATION_SUMS
    found: dict[str, list[str]] = {}
    for path, tree in trees.items():
        if path == HELPER:
            continue
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for where, line, code in _sums(tree, durations):
            found.setdefault(f"{module}: {where}", []).append(f"{path.name}:{line}: {code}")
    unlisted = {place: sums for place, sums in found.items() if place not in allowed}
    assert not unlisted, (
        "a datetime shifted by a duration outside rainbowd.core.instants; use later/earlier, "
        f"or list a clock-and-constant place in its docstring: {unlisted}"
    )
    # And the list names only places that still do such a sum: it cannot go stale.
    assert allowed <= set(found), allowed - set(found)


@pytest.mark.parametrize(
    "code",
    ["deadline = retired_at + max_age", "x = stamp - timedelta(seconds=1)", "t += drain_hold"],
)
def test_the_walk_finds_a_sum_written_outside_the_helper(code: str) -> None:
    durations = {"max_age", "drain_hold"}
    assert [s[2] for s in _sums(ast.parse(code), durations)]
