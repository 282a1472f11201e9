"""Table tests of resolve (rainbowd/core/planner/resolve.py): what overrides the rules. The
disruption budget spends or holds a forced scale-down, a Deployment recording a disruption is
kept while it counts, paused holds every cleanup."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rainbowd.core.model import DISRUPTED_AT, ActionKind, Reason
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.cycle import Cycle
from rainbowd.core.planner.resolve import Disruptions, hold_paused, keep_disruption_records
from rainbowd.core.planner.rules import Due
from rainbowd.core.policy import Budget, Knobs, Policy
from tests.unit.strategies import NOW, H, M, ago, conns, deployment, rule, snapshot, stamp


def _color(name: str, *, users: float | None = 30, replicas: int = 2, **annotations: str) -> Color:
    d = deployment(name, created=ago(20 * H), replicas=replicas, annotations=annotations)
    color = Color(d, rule(), None, name)
    color.retired_at = ago(10 * H)
    color.connections = conns(users)
    color.disruptive = users is None or users > 0
    return color


def _cycle(*, paused: bool = False) -> Cycle:
    return Cycle(Policy(rules=(rule(),), paused=paused), NOW, snapshot([]))


@pytest.mark.parametrize(
    ("count", "recorded", "paused", "expected"),
    [
        # One allowed: the first forced, the second held.
        (1, {}, False, ["forced", "held"]),
        (2, {}, False, ["forced", "forced"]),
        # A disruption recorded within the window already spent it.
        (1, {DISRUPTED_AT: stamp(5 * M)}, False, ["held", "held"]),
        # Recorded longer ago than the window: it no longer counts.
        (1, {DISRUPTED_AT: stamp(2 * H)}, False, ["forced", "held"]),
        # Paused: nothing is spent (hold_paused holds the decisions afterwards).
        (0, {}, True, ["forced", "forced"]),
    ],
)
def test_the_budget_spends_or_holds(
    count: int, recorded: dict[str, str], paused: bool, expected: list[str]
) -> None:
    cycle = _cycle(paused=paused)
    old = _color("old", replicas=0, **recorded)
    colors = [old, _color("a"), _color("b")]
    knobs = Knobs(max_disruptions=Budget(count, timedelta(hours=1)))
    disruptions = Disruptions(cycle, colors, knobs, ActionKind.SCALE)
    for color in colors[1:]:
        disruptions.grant(Due(color, Reason.MAX_COLORS, "3 colors with replicas > maxColors 1"))
    got = ["forced" if c.cleanup is Reason.MAX_COLORS else "held" for c in colors[1:]]
    assert got == expected
    for color in colors[1:]:
        if color.cleanup is None:
            assert color.held is Reason.MAX_COLORS
            assert "held: 3 colors with replicas > maxColors 1, but maxDisruptions" in color.note
        elif not paused:
            assert color.disrupted  # the record rides on the scale-down
            assert "(still holds 30 connections > floor 0)" in color.why


def test_a_drained_color_spends_nothing() -> None:
    cycle = _cycle()
    color = _color("a", users=0)
    knobs = Knobs(max_disruptions=Budget(0, timedelta(hours=1)))
    Disruptions(cycle, [color], knobs, ActionKind.SCALE).grant(Due(color, Reason.MAX_COLORS, "why"))
    assert (color.cleanup, color.why, color.disrupted) == (Reason.MAX_COLORS, "why", "")


@pytest.mark.parametrize(
    ("replicas", "recorded", "kind", "cleanup"),
    [
        # Still counted: one with replicas is scaled down instead, one at 0 kept.
        (2, stamp(5 * M), ActionKind.SCALE, Reason.KEEP_SCALED_DOWN),
        (0, stamp(5 * M), None, None),
        # No longer counted: deleted.
        (0, stamp(2 * H), ActionKind.DELETE, Reason.KEEP_SCALED_DOWN),
    ],
)
def test_records_are_kept_while_they_count(
    replicas: int, recorded: str, kind: ActionKind | None, cleanup: Reason | None
) -> None:
    cycle = _cycle()
    color = _color("a", replicas=replicas, **{DISRUPTED_AT: recorded})
    color.cleanup, color.kind = Reason.KEEP_SCALED_DOWN, ActionKind.DELETE
    keep_disruption_records(cycle, [color], Budget(1, timedelta(hours=1)))
    assert (color.kind, color.cleanup) == (kind, cleanup)
    if kind is None:
        assert cycle.valid_until == NOW - 5 * M + H  # planned again when the record expires


def test_paused_holds_every_cleanup() -> None:
    scaled, deleted, kept = _color("a"), _color("b", replicas=0), _color("c")
    scaled.cleanup, scaled.kind = Reason.DRAINED, ActionKind.SCALE
    deleted.cleanup, deleted.kind = Reason.KEEP_SCALED_DOWN, ActionKind.DELETE
    hold_paused([scaled, deleted, kept])
    assert [(c.cleanup, c.kind, c.held) for c in (scaled, deleted, kept)] == [
        (None, None, Reason.DRAINED),
        (None, None, Reason.KEEP_SCALED_DOWN),
        (None, None, None),
    ]
    assert scaled.note.startswith("paused: would scale to 0 (drained)")
    assert deleted.note.startswith("paused: would delete (keep-scaled-down)")
