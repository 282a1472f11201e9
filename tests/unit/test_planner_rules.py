"""Table tests of the cleanup rules (rainbowd/core/planner/rules.py), one function each, called
directly: which colors a rule decides for, with which reason and words (rendered by the reporting
module from the figures it records), which it leaves alone, and when time alone would change its
decisions (its `Ruling`'s `changes_at`).

The whole planner (rules in order, the budget, paused) is tested through `plan()` in
test_planner.py; these pin each rule on its own, as docs/design.md "Adding a rule" asks of a new
one.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rainbowd.core.model import (
    CONSOLIDATED_AT,
    CONSOLIDATED_FROM,
    DISRUPTED_AT,
    NO_SERIES,
    ActionKind,
    Connections,
    PodConnections,
    Reason,
    State,
)
from rainbowd.core.notes import Drained, Why
from rainbowd.core.planner import rules
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.resolve import delete
from rainbowd.core.planner.rules import (
    NOTHING,
    Decision,
    Unavailable,
    consolidation,
    delete_recorded,
    drained,
    keep_scaled_down,
    max_colors,
    max_retired_age,
)
from rainbowd.core.policy import Budget, Consolidate, Knobs, StepDown
from rainbowd.core.reporting import render_why
from tests.unit.strategies import NOW, H, M, ago, deployment, rule, stamp


@dataclass
class Spec:
    """A retired color as the rules see it once assessed."""

    name: str
    retired: timedelta  # how long ago
    replicas: int = 2
    protected: bool = False
    cleanup: Reason | None = None  # already decided (drained)
    kind: ActionKind | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    state: State = State.RETIRED
    connections: float | None = None  # None: unknown


def _colors(specs: list[Spec]) -> list[Color]:
    colors = []
    for i, spec in enumerate(specs):
        d = deployment(
            spec.name,
            created=ago(spec.retired + (i + 1) * H),
            replicas=spec.replicas,
            annotations=spec.annotations,
        )
        connections = (
            NO_SERIES
            if spec.connections is None
            else Connections(value=spec.connections, series=spec.replicas)
        )
        retired_at = ago(spec.retired)
        color = Color(d, rule(), None, spec.name, spec.state, None, connections, retired_at)
        colors.append(color._replace(protected=spec.protected))
    return colors


def _decided(colors: list[Color], specs: list[Spec]) -> dict[str, Decision]:
    """The decisions taken before the rule under test (by Deployment name)."""
    return {
        color.deployment.name: Decision(cleanup=spec.cleanup, kind=spec.kind)
        for color, spec in zip(colors, specs, strict=True)
        if spec.cleanup is not None or spec.kind is not None
    }


def _live() -> Color:
    return Color(
        deployment("live", created=NOW - H), rule(), "svc", "live", State.LIVE, None, NO_SERIES
    )


def _words(why: Why) -> str:
    return render_why([why], NOW)


@pytest.mark.parametrize(
    ("states", "due"),
    [
        # Only the colors assess found drained; protected ones are never (their state says so).
        ([State.DRAINED, State.DRAINING, State.DRAINED], ["a", "c"]),
        ([State.PROTECTED, State.UNKNOWN_CONNECTIONS, State.SCALED_DOWN], []),
    ],
)
def test_drained(states: list[State], due: list[str]) -> None:
    colors = [
        color._replace(state=state, found=Drained(0, 0, ago(10 * M)))
        for color, state in zip(
            _colors([Spec(name, 10 * H) for name in "abc"]), states, strict=True
        )
    ]
    ruling = drained(colors)
    assert [d.color.color for d in ruling.decision] == due
    assert all(d.reason is Reason.DRAINED for d in ruling.decision)
    assert [_words(d.why) for d in ruling.decision] == ["drained: 0 <= floor 0 for 10m"] * len(due)
    assert ruling.changes_at is None  # when it became drained is assess's threshold


@pytest.mark.parametrize(
    ("specs", "max_age", "forced"),
    [
        # Oldest first; a protected one, one at 0 replicas, one already drained are not asked.
        (
            [Spec("a", 100 * H), Spec("b", 80 * H), Spec("c", 10 * H)],
            72 * H,
            [
                ("a", "retired for 4d4h > maxRetiredAge 3d"),
                ("b", "retired for 3d8h > maxRetiredAge 3d"),
            ],
        ),
        ([Spec("a", 100 * H, protected=True)], 72 * H, []),
        ([Spec("a", 100 * H, replicas=0)], 72 * H, []),
        ([Spec("a", 100 * H, cleanup=Reason.DRAINED)], 72 * H, []),
        ([Spec("a", 100 * H)], None, []),
        ([Spec("a", 72 * H)], 72 * H, []),  # not longer than maxRetiredAge yet
    ],
)
def test_max_retired_age(
    specs: list[Spec], max_age: timedelta | None, forced: list[tuple[str, str]]
) -> None:
    colors = _colors(specs)
    knobs = Knobs(max_retired_age=max_age)
    due = max_retired_age(NOW, colors, knobs, _decided(colors, specs)).decision
    assert [(d.color.color, d.reason, _words(d.why)) for d in due] == [
        (c, Reason.MAX_RETIRED_AGE, why) for c, why in forced
    ]


def test_max_retired_age_says_when_its_decisions_next_change() -> None:
    # Not overdue yet: at its maxRetiredAge. Overdue stays overdue (its words show how long,
    # rendered when read: they change nothing). The earliest of the colors'.
    knobs = Knobs(max_retired_age=72 * H)
    assert max_retired_age(NOW, _colors([Spec("a", 70 * H)]), knobs, {}).changes_at == ago(-2 * H)
    assert max_retired_age(NOW, _colors([Spec("a", 100 * H)]), knobs, {}).changes_at is None
    both = _colors([Spec("a", 100 * H), Spec("b", 71.5 * H), Spec("c", 71 * H)])
    assert max_retired_age(NOW, both, knobs, {}).changes_at == ago(-0.5 * H)
    # Colors it never acts on change nothing.
    kept = _colors([Spec("a", 70 * H, protected=True), Spec("b", 70 * H, replicas=0)])
    assert max_retired_age(NOW, kept, knobs, {}).changes_at is None
    no_age = Knobs(max_retired_age=None)
    assert max_retired_age(NOW, _colors([Spec("a", 70 * H)]), no_age, {}).changes_at is None


@pytest.mark.parametrize(
    ("specs", "limit", "forced"),
    [
        # Three running with the live color (not retired, counted): two over maxColors 2.
        ([Spec("a", 10 * H), Spec("b", 5 * H), Spec("c", 1 * H)], 2, ["a", "b"]),
        ([Spec("a", 10 * H), Spec("b", 5 * H)], 3, []),
        # Protected colors count but are never asked; the next oldest is.
        ([Spec("a", 10 * H, protected=True), Spec("b", 5 * H)], 2, ["b"]),
        # At 0 replicas a color does not count; a drained one is already going.
        ([Spec("a", 10 * H, replicas=0), Spec("b", 5 * H, cleanup=Reason.DRAINED)], 1, []),
        ([Spec("a", 10 * H)], None, []),
    ],
)
def test_max_colors(specs: list[Spec], limit: int | None, forced: list[str]) -> None:
    retired = _colors(specs)
    decisions = _decided(retired, specs)
    asked = []
    ruling = max_colors([_live(), *retired], retired, Knobs(max_colors=limit), decisions)
    assert ruling.changes_at is None  # it counts, compares no time
    for due in ruling.decision:
        asked.append(due)
        decisions[due.color.deployment.name] = Decision(cleanup=due.reason)  # granted
    assert [d.color.color for d in asked] == forced
    assert all(d.reason is Reason.MAX_COLORS for d in asked)
    running = len(specs) + 1 - sum(s.replicas == 0 or s.cleanup is not None for s in specs)
    assert [_words(d.why) for d in asked[:1]] == (
        [f"{running} colors with replicas > maxColors {limit}"] if forced else []
    )


def test_max_colors_asks_for_the_next_oldest_when_one_is_held() -> None:
    retired = _colors([Spec("a", 10 * H), Spec("b", 5 * H), Spec("c", 1 * H)])
    ruling = max_colors([_live(), *retired], retired, Knobs(max_colors=3), {})
    asked = [d.color.color for d in ruling.decision]
    # Nothing granted: four colors keep their replicas, so each is asked for in turn.
    assert asked == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("specs", "keep", "deleted"),
    [
        # Newest kept (by creation), the rest deleted.
        ([Spec("a", 30 * H, replicas=0), Spec("b", 20 * H, replicas=0)], 1, {"a"}),
        ([Spec("a", 30 * H, replicas=0), Spec("b", 20 * H, replicas=0)], 2, set()),
        # Scaled down this cycle counts as scaled down; protected ones do not count.
        (
            [
                Spec("a", 30 * H, replicas=0, protected=True),
                Spec("b", 20 * H, replicas=0),
                Spec("c", 10 * H, cleanup=Reason.DRAINED, kind=ActionKind.SCALE),
            ],
            1,
            {"b"},
        ),
        ([Spec("a", 30 * H, replicas=0)], 0, {"a"}),
    ],
)
def test_keep_scaled_down(specs: list[Spec], keep: int, deleted: set[str]) -> None:
    colors = _colors(specs)
    taken = _decided(colors, specs)
    ruling = keep_scaled_down(colors, keep, taken)
    assert ruling.changes_at is None
    decisions = ruling.decision
    assert {d.color.color for d in decisions} == deleted
    for d in decisions:
        assert d.reason is Reason.KEEP_SCALED_DOWN
        assert _words(d.why) == f"scaled down, beyond the newest keepScaledDown {keep}"
    # Applied, a color already being scaled down is deleted directly and keeps its reason.
    for d in decisions:
        name = d.color.deployment.name
        taken[name] = delete(taken.get(name, NOTHING), d)
    after = {c.color: taken.get(c.deployment.name, NOTHING) for c in colors}
    assert {c for c, decision in after.items() if decision.kind is ActionKind.DELETE} == deleted
    for spec in specs:
        if spec.name in deleted:
            assert after[spec.name].cleanup is (spec.cleanup or Reason.KEEP_SCALED_DOWN)


@pytest.mark.parametrize(
    ("specs", "deleted"),
    [
        ([Spec("a", 30 * H, replicas=0, annotations={DISRUPTED_AT: stamp(20 * H)})], {"a"}),
        ([Spec("a", 30 * H, replicas=0)], set()),  # scaled down without a disruption
        ([Spec("a", 30 * H, annotations={DISRUPTED_AT: stamp(20 * H)})], set()),  # replicas
        (
            [Spec("a", 30 * H, replicas=0, protected=True, annotations={DISRUPTED_AT: stamp(H)})],
            set(),
        ),
    ],
)
def test_delete_recorded(specs: list[Spec], deleted: set[str]) -> None:
    colors = _colors(specs)
    ruling = delete_recorded(colors, Budget(1, timedelta(minutes=10)), _decided(colors, specs))
    assert ruling.changes_at is None  # the records' ends are resolve's (disruption_records)
    assert {d.color.color for d in ruling.decision} == deleted
    assert all(d.reason is Reason.DISRUPTION_RECORDED for d in ruling.decision)
    assert [_words(d.why) for d in ruling.decision] == [
        "scaled down to record a disruption (maxDisruptions 1 per 10m); action delete"
    ] * len(deleted)


CONSOLIDATE = Knobs(
    consolidate=Consolidate(after=30 * M, every=5 * M, keep_pods=1),
    step_down=StepDown(every=H, max_pods=1),
)
FOUR = PodConnections(pods={"p-a": 4, "p-b": 1, "p-c": 0, "p-d": 0})
BUSY = PodConnections(pods={"p-a": 4, "p-b": 1})


def _draining(name: str, **kwargs: Any) -> Spec:
    fields: dict[str, Any] = {"retired": H, "replicas": 4, "state": State.DRAINING}
    return Spec(name, **(fields | {"connections": 5.0} | kwargs))


@pytest.mark.parametrize(
    ("specs", "pods", "decided", "changes_at"),
    [
        # Its idle pods given back; the others are not candidates.
        (
            [
                _draining("a"),
                _draining("b", protected=True),
                _draining("c", cleanup=Reason.MAX_COLORS, kind=ActionKind.SCALE),
                _draining("d", replicas=0),
                _draining("e", state=State.DRAINED, connections=0.0),
            ],
            {c: FOUR for c in "abcde"},
            {
                "a": "2 of 4 pods hold no connections: 4 -> 2 pods (keepPods 1), removing p-c (0), "
                "p-d (0)"
            },
            None,
        ),
        # Retired 10m ago: its turn comes at 30m.
        ([_draining("a", retired=10 * M)], {"a": FOUR}, {}, NOW + 20 * M),
        # Stepped 2m ago: the next step 5m after it.
        (
            [_draining("a", annotations={CONSOLIDATED_AT: stamp(2 * M), CONSOLIDATED_FROM: "6"})],
            {"a": FOUR},
            {},
            NOW + 3 * M,
        ),
        # No figures, or unknown connections: unavailable, said why.
        (
            [_draining("a")],
            {},
            {"a": "unavailable: per-pod connections not known this cycle"},
            None,
        ),
        (
            [_draining("a", state=State.UNKNOWN_CONNECTIONS, connections=None)],
            {"a": FOUR},
            {"a": "unavailable: connections unknown (no series for this color)"},
            None,
        ),
        # No idle pod: stepDown's least-connected one.
        (
            [_draining("a", replicas=2)],
            {"a": BUSY},
            {
                "a": "stepDown (maxPods 1): no pod is idle, 2 -> 1 pods, removing the "
                "least-connected p-b (1)"
            },
            None,
        ),
    ],
)
def test_consolidation(
    specs: list[Spec],
    pods: dict[str, PodConnections],
    decided: dict[str, str],
    changes_at: datetime | None,
) -> None:
    colors = _colors(specs)
    decisions = _decided(colors, specs)
    ruling = consolidation(NOW, "2026-11-21T12:00:00Z", colors, CONSOLIDATE, pods, decisions)
    found = {}
    for decision in ruling.decision:
        if isinstance(decision, Unavailable):
            found[decision.color.color] = f"unavailable: {decision.why}"
        else:
            found[decision.color.color] = _words(decision.why)
            assert decision.stamps[:2] == (
                (CONSOLIDATED_AT, "2026-11-21T12:00:00Z"),
                (CONSOLIDATED_FROM, str(decision.color.deployment.replicas)),
            )
    assert found == decided
    assert ruling.changes_at == changes_at


_HELPERS = {"retired_order", "decision_of"}  # the rules' helpers, not rules


def test_every_rule_returns_a_ruling_read_only_through_thresholds() -> None:
    # How a decision cannot lose its threshold: each rule returns a Ruling, and nothing in the
    # planner reads a Ruling's decision but Thresholds.take, which folds in its changes_at.
    for name, function in inspect.getmembers(rules, inspect.isfunction):
        if function.__module__ == rules.__name__ and name[0] != "_" and name not in _HELPERS:
            returns = str(inspect.signature(function).return_annotation)
            assert returns.startswith("Ruling["), (name, returns)
    for path in sorted(Path(rules.__file__).parent.glob("*.py")):
        if path.name == "cycle.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"decision", "changes_at"}:
                raise AssertionError(f"{path.name}:{node.lineno} reads a Ruling's {node.attr}")
