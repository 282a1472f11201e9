"""Table tests of resolve (rainbowd/core/planner/resolve.py): what overrides the rules. The
disruption budget grants or holds a forced scale-down (a decision returned, the color left as
it is), a Deployment recording a disruption is kept while it counts, paused holds every
cleanup; and when time alone changes each."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import pytest

from rainbowd.core.model import DISRUPTED_AT, ActionKind, Reason, State
from rainbowd.core.notes import OverMaxColors
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.cycle import FOREVER, Cycle, Ruling, Thresholds
from rainbowd.core.planner.resolve import (
    Disruptions,
    Granted,
    Withheld,
    disruption_records,
    force,
    hold_paused,
    keep,
    settle,
)
from rainbowd.core.planner.rules import NOTHING, Decision, Due
from rainbowd.core.policy import Budget, Knobs, Policy
from rainbowd.core.reporting import render_note, render_why
from tests.unit.strategies import NOW, H, M, ago, conns, deployment, rule, snapshot, stamp


def _color(
    name: str,
    *,
    users: float | None = 30,
    replicas: int = 2,
    annotations: Mapping[str, str] | None = None,
) -> Color:
    d = deployment(name, created=ago(20 * H), replicas=replicas, annotations=annotations)
    disruptive = users is None or users > 0
    return Color(
        d, rule(), None, name, State.RETIRED, None, conns(users), ago(10 * H), disruptive=disruptive
    )


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
    old = _color("old", replicas=0, annotations=recorded)
    colors = [old, _color("a"), _color("b")]
    knobs = Knobs(max_disruptions=Budget(count, timedelta(hours=1)))
    why = OverMaxColors(3, 1)
    # The decisions, returned (a Color is immutable: it is left as it is).
    disruptions = Disruptions(cycle, colors, knobs)
    rulings = [disruptions.grant(Due(color, Reason.MAX_COLORS, why)) for color in colors[1:]]
    got = ["forced" if isinstance(r.decision, Granted) else "held" for r in rulings]
    assert got == expected
    # Within the window, the budget changes when the recorded disruption stops counting.
    counted = recorded and recorded[DISRUPTED_AT] == stamp(5 * M)
    assert {r.changes_at for r in rulings} <= {NOW - 5 * M + H if counted else None}
    # Applied.
    thresholds = Thresholds()
    disruptions = Disruptions(cycle, colors, knobs)
    decisions = [
        force(
            NOTHING,
            settle(thresholds, disruptions, Due(c, Reason.MAX_COLORS, why)),
            ActionKind.SCALE,
        )
        for c in colors[1:]
    ]
    assert ["forced" if d.cleanup is Reason.MAX_COLORS else "held" for d in decisions] == expected
    for color, decision in zip(colors[1:], decisions, strict=True):
        note = render_note(color.note(decision.decided), NOW)
        if decision.cleanup is None:
            assert decision.held is Reason.MAX_COLORS
            assert "held: 3 colors with replicas > maxColors 1, but maxDisruptions" in note
        elif not paused:
            assert decision.disrupted  # the record rides on the scale-down
            assert "(still holds 30 connections > floor 0)" in render_why(decision.said, NOW)
            assert "forced: 3 colors with replicas > maxColors 1 (still holds 30" in note
    assert thresholds.valid_until == (NOW - 5 * M + H if counted else FOREVER)


def test_a_drained_color_spends_nothing() -> None:
    cycle = _cycle()
    color = _color("a", users=0)
    knobs = Knobs(max_disruptions=Budget(0, timedelta(hours=1)))
    due = Due(color, Reason.MAX_COLORS, OverMaxColors(3, 1))
    ruling = Disruptions(cycle, [color], knobs).grant(due)
    assert ruling == Ruling(Granted(due), None)
    assert not isinstance(ruling.decision, Withheld)


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
    color = _color("a", replicas=replicas, annotations={DISRUPTED_AT: recorded})
    decision = Decision(cleanup=Reason.KEEP_SCALED_DOWN, kind=ActionKind.DELETE)
    budget = Budget(1, timedelta(hours=1))
    ruling = disruption_records(cycle, [color], budget, {color.deployment.name: decision})
    for kept in ruling.decision:
        decision = keep(decision, kept)
    assert (decision.kind, decision.cleanup) == (kind, cleanup)
    # Planned again when the record stops counting.
    assert ruling.changes_at == (None if kind is ActionKind.DELETE else NOW - 5 * M + H)
    if kind is None:
        assert render_note(color.note(decision.decided), NOW).endswith(
            "kept until 2026-11-21T12:55:00Z: it records a disruption counted by maxDisruptions"
        )


def test_paused_holds_every_cleanup() -> None:
    scaled, deleted = _color("a"), _color("b", replicas=0)
    held = hold_paused(
        {
            "a": Decision(cleanup=Reason.DRAINED, kind=ActionKind.SCALE),
            "b": Decision(cleanup=Reason.KEEP_SCALED_DOWN, kind=ActionKind.DELETE),
            "c": NOTHING,
        }
    )
    assert [(d.cleanup, d.kind, d.held) for d in held.values()] == [
        (None, None, Reason.DRAINED),
        (None, None, Reason.KEEP_SCALED_DOWN),
        (None, None, None),
    ]
    assert render_note(scaled.note(held["a"].decided), NOW).startswith(
        "paused: would scale to 0 (drained)"
    )
    assert render_note(deleted.note(held["b"].decided), NOW).startswith(
        "paused: would delete (keep-scaled-down)"
    )
