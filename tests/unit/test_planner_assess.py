"""Table test of assess (rainbowd/core/planner/assess.py), called directly: each color's state,
the stamps it needs (with their `Reason`), the retired colors handed to the cleanup rules, which
of them the drained rule then asks to scale down, and when time alone changes the assessment."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rainbowd.core.model import (
    DRAINED_SINCE,
    HOLD_UNTIL,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    PROTECT,
    RETIRED_AT,
    Connections,
    Reason,
    State,
)
from rainbowd.core.planner.assess import assess_app, group
from rainbowd.core.planner.cycle import FOREVER, Cycle, Thresholds
from rainbowd.core.planner.rules import drained as drained_rule
from rainbowd.core.policy import Policy
from rainbowd.core.reporting import render_note
from tests.unit.strategies import (
    APP,
    NOW,
    NS,
    H,
    M,
    ago,
    conns,
    deployment,
    rule,
    service,
    snapshot,
    stamp,
)


def assessing(min_retired_age: timedelta = 30 * M) -> Policy:
    """The policy of these cases: one rule, drained at 0 connections held for 5 minutes."""
    return Policy(
        rules=(rule(min_retired_age=min_retired_age, drain_hold=5 * M, connection_floor=0),)
    )


LIVE = deployment("live", created=ago(H), annotations={LIVE_AT: stamp(H)})


@pytest.mark.parametrize(
    ("annotations", "replicas", "users", "state", "stamps", "drained", "changes_at"),
    [
        # First seen retired: stamped, and draining while it holds users.
        (
            {LIVE_AT: stamp(5 * H)},
            2,
            conns(12),
            State.DRAINING,
            [Reason.OBSERVED_RETIRED],
            False,
            None,
        ),
        # Drained, long enough: the drained rule marks it.
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(10 * M)},
            2,
            conns(0),
            State.DRAINED,
            [],
            True,
            None,
        ),
        # At the floor for the first time: the drain starts, drained once drainHold has passed.
        (
            {RETIRED_AT: stamp(2 * H)},
            2,
            conns(0),
            State.DRAINING,
            [Reason.DRAIN_STARTED],
            False,
            NOW + 5 * M,
        ),
        # Drained, but not retired for minRetiredAge yet.
        (
            {RETIRED_AT: stamp(20 * M), DRAINED_SINCE: stamp(10 * M)},
            2,
            conns(0),
            State.DRAINING,
            [],
            False,
            NOW + 10 * M,
        ),
        # Unknown connections reset a drain in progress and are never drained.
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(10 * M)},
            2,
            None,
            State.UNKNOWN_CONNECTIONS,
            [Reason.DRAIN_RESET],
            False,
            None,
        ),
        # Protected or held: never a candidate, whatever its drain.
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(H), PROTECT: "true"},
            2,
            conns(0),
            State.PROTECTED,
            [],
            False,
            None,
        ),
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(H), HOLD_UNTIL: "soon"},
            2,
            conns(0),
            State.PROTECTED,
            [],
            False,
            None,
        ),
        # Held until a time: protected until then.
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(H), HOLD_UNTIL: stamp(-H)},
            2,
            conns(0),
            State.PROTECTED,
            [],
            False,
            NOW + H,
        ),
        # Scaled down by rainbowd: kept for a rollback.
        (
            {RETIRED_AT: stamp(9 * H), ORIGINAL_REPLICAS: "2"},
            0,
            None,
            State.SCALED_DOWN,
            [],
            False,
            None,
        ),
    ],
)
def test_a_retired_color(
    annotations: dict[str, str],
    replicas: int,
    users: Connections | None,
    state: State,
    stamps: list[Reason],
    drained: bool,
    changes_at: datetime | None,
) -> None:
    old = deployment("old", created=ago(10 * H), replicas=replicas, annotations=annotations)
    connections = {(NS, APP, "live"): conns(40)}
    if users is not None:
        connections[(NS, APP, "old")] = users
    snap = snapshot([LIVE, old], [service({"app": APP, "color": "live"})], connections)
    cycle = Cycle(assessing(), NOW, snap)
    namespace = snap.namespaces[NS]
    [(app, colors)] = group(cycle, namespace)
    cycle.start_app()
    thresholds = Thresholds()
    assessed = assess_app(cycle, thresholds, namespace, app, colors, [])
    by_name = {c.color: c for c in assessed.colors}
    assert by_name["live"].state is State.LIVE
    color = by_name["old"]
    assert color.state is state
    assert [reason for reason, _ in color.reasons or []] == stamps
    assert [d.color for d in drained_rule(assessed.retired).decision] == (
        [color] if drained else []
    )
    assert assessed.blocked is None and [c.color for c in assessed.retired] == ["old"]
    assert thresholds.valid_until == (FOREVER if changes_at is None else changes_at)


def test_a_blocked_app_hands_no_color_to_the_rules() -> None:
    old = deployment("old", created=ago(10 * H), annotations={RETIRED_AT: stamp(2 * H)})
    snap = snapshot([old], [], {(NS, APP, "old"): conns(0)})
    cycle = Cycle(assessing(), NOW, snap)
    namespace = snap.namespaces[NS]
    [(app, colors)] = group(cycle, namespace)
    cycle.start_app()
    assessed = assess_app(cycle, Thresholds(), namespace, app, colors, [])
    assert assessed.blocked is not None and assessed.retired == []
    assert assessed.colors[0].state is State.RETIRED
    assert "not evaluated" in render_note(assessed.colors[0].note(), NOW)


def test_a_threshold_ahead_sets_valid_until() -> None:
    # Retired 2 hours ago and drained for 10 minutes: draining until minRetiredAge 3h, an hour
    # away: valid until then. The note's durations are rendered when read, against that now.
    old = deployment(
        "old",
        created=ago(10 * H),
        annotations={RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(10 * M)},
    )
    snap = snapshot(
        [LIVE, old], [service({"app": APP, "color": "live"})], {(NS, APP, "old"): conns(0)}
    )
    cycle = Cycle(assessing(min_retired_age=3 * H), NOW, snap)
    namespace = snap.namespaces[NS]
    [(app, colors)] = group(cycle, namespace)
    cycle.start_app()
    thresholds = Thresholds()
    assessed = assess_app(cycle, thresholds, namespace, app, colors, [])
    note = assessed.colors[-1].note()
    assert render_note(note, NOW) == "draining: drained, but retired for 2h of minRetiredAge 3h"
    assert (
        render_note(note, NOW + M) == "draining: drained, but retired for 2h1m of minRetiredAge 3h"
    )
    assert thresholds.valid_until == NOW + H
