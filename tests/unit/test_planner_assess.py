"""Table test of assess (rainbowd/core/planner/assess.py), called directly: each color's state,
the stamps it needs (with their `Reason`), the retired colors handed to the cleanup rules, and
which of them the drained rule then asks to scale down."""

from __future__ import annotations

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
from rainbowd.core.planner.cycle import Cycle
from rainbowd.core.planner.rules import drained as drained_rule
from rainbowd.core.policy import Policy
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

KNOBS = {"min_retired_age": 30 * M, "drain_hold": 5 * M, "connection_floor": 0}
LIVE = deployment("live", created=ago(H), annotations={LIVE_AT: stamp(H)})


@pytest.mark.parametrize(
    ("annotations", "replicas", "users", "state", "stamps", "drained"),
    [
        # First seen retired: stamped, and draining while it holds users.
        ({LIVE_AT: stamp(5 * H)}, 2, conns(12), State.DRAINING, [Reason.OBSERVED_RETIRED], False),
        # Drained, long enough: the drained rule marks it.
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(10 * M)},
            2,
            conns(0),
            State.DRAINED,
            [],
            True,
        ),
        # At the floor for the first time: the drain starts.
        ({RETIRED_AT: stamp(2 * H)}, 2, conns(0), State.DRAINING, [Reason.DRAIN_STARTED], False),
        # Unknown connections reset a drain in progress and are never drained.
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(10 * M)},
            2,
            None,
            State.UNKNOWN_CONNECTIONS,
            [Reason.DRAIN_RESET],
            False,
        ),
        # Protected or held: never a candidate, whatever its drain.
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(H), PROTECT: "true"},
            2,
            conns(0),
            State.PROTECTED,
            [],
            False,
        ),
        (
            {RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(H), HOLD_UNTIL: "soon"},
            2,
            conns(0),
            State.PROTECTED,
            [],
            False,
        ),
        # Scaled down by rainbowd: kept for a rollback.
        ({RETIRED_AT: stamp(9 * H), ORIGINAL_REPLICAS: "2"}, 0, None, State.SCALED_DOWN, [], False),
    ],
)
def test_a_retired_color(
    annotations: dict[str, str],
    replicas: int,
    users: Connections | None,
    state: State,
    stamps: list[Reason],
    drained: bool,
) -> None:
    old = deployment("old", created=ago(10 * H), replicas=replicas, annotations=annotations)
    connections = {(NS, APP, "live"): conns(40)}
    if users is not None:
        connections[(NS, APP, "old")] = users
    snap = snapshot([LIVE, old], [service({"app": APP, "color": "live"})], connections)
    cycle = Cycle(Policy(rules=(rule(**KNOBS),)), NOW, snap)
    namespace = snap.namespaces[NS]
    [(app, colors)] = group(cycle, namespace)
    cycle.start_app()
    assessed = assess_app(cycle, namespace, app, colors, [])
    by_name = {c.color: c for c in colors}
    assert by_name["live"].state is State.LIVE
    color = by_name["old"]
    assert color.state is state
    assert [reason for reason, _ in color.reasons or []] == stamps
    assert [d.color for d in drained_rule(assessed.retired)] == ([color] if drained else [])
    assert assessed.blocked is None and [c.color for c in assessed.retired] == ["old"]


def test_a_blocked_app_hands_no_color_to_the_rules() -> None:
    old = deployment("old", created=ago(10 * H), annotations={RETIRED_AT: stamp(2 * H)})
    snap = snapshot([old], [], {(NS, APP, "old"): conns(0)})
    cycle = Cycle(Policy(rules=(rule(**KNOBS),)), NOW, snap)
    namespace = snap.namespaces[NS]
    [(app, colors)] = group(cycle, namespace)
    cycle.start_app()
    assessed = assess_app(cycle, namespace, app, colors, [])
    assert assessed.blocked is not None and assessed.retired == []
    assert colors[0].state is State.RETIRED and "not evaluated" in colors[0].note


def test_a_threshold_ahead_sets_valid_until() -> None:
    # Retired 2 hours ago and drained for 10 minutes: draining until minRetiredAge 3h, an hour
    # away; the note shows "retired for 2h", which reads "2h1m" a minute on: valid until then.
    old = deployment(
        "old",
        created=ago(10 * H),
        annotations={RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(10 * M)},
    )
    snap = snapshot(
        [LIVE, old], [service({"app": APP, "color": "live"})], {(NS, APP, "old"): conns(0)}
    )
    cycle = Cycle(Policy(rules=(rule(**{**KNOBS, "min_retired_age": 3 * H}),)), NOW, snap)
    namespace = snap.namespaces[NS]
    [(app, colors)] = group(cycle, namespace)
    cycle.start_app()
    assess_app(cycle, namespace, app, colors, [])
    assert colors[-1].note == "draining: drained, but retired for 2h of minRetiredAge 3h"
    assert cycle.valid_until == NOW + M
