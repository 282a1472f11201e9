"""`Planner` reuses an app's plan across cycles; it must always return exactly what `plan()` does.

A Hypothesis property drives random multi-cycle sequences (time advancing and sometimes stepping
back, plans applied, connections refreshed or changed, Deployments and Services replaced, the
policy swapped) and compares the two at every step. Table tests check that a plan is reused in
the steady state and that each condition of reuse, broken alone, makes the app be planned again.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbowd.core.model import (
    DRAINED_SINCE,
    LIVE_AT,
    RETIRED_AT,
    AppPlan,
    Connections,
    Deployment,
    Namespace,
    Plan,
    PodConnections,
    Service,
    Snapshot,
    State,
)
from rainbowd.core.notes import AboveFloor, Note
from rainbowd.core.planner import Planner, plan
from rainbowd.core.planner.cycle import FOREVER, Ruling, Thresholds, earliest
from rainbowd.core.policy import Consolidate, Policy
from rainbowd.core.reporting import compact_duration, format_count, render_note
from tests.unit.strategies import (
    _WORD,
    APP,
    NOW,
    Choices,
    H,
    M,
    apply_plan,
    connections_from,
    conns,
    deployment,
    policies,
    policy,
    service,
    snapshot,
    snapshots,
    stamp,
)
from tests.unit.test_consolidation_properties import consolidating, draining

EXAMPLES = settings(max_examples=2000, deadline=None)
S = timedelta(seconds=1)

# Mostly a cycle interval or less (reuse is exercised), sometimes long enough to cross a
# threshold, now and then a clock stepping back.
_STEPS = (0 * S, 1 * S, 30 * S, 30 * S, 30 * S, 59 * S, 5 * M, 30 * M, 61 * M, 25 * H, -30 * S)


def _with_namespace(
    snap: Snapshot,
    name: str,
    *,
    deployments: tuple[Deployment, ...] | None = None,
    services: tuple[Service, ...] | None = None,
    connections: Mapping[tuple[str, str], Connections] | None = None,
) -> Snapshot:
    """`snap` with namespace `name`'s deployments, services or connections replaced."""
    ns = snap.namespaces[name]
    namespaces = dict(snap.namespaces)
    namespaces[name] = dataclasses.replace(
        ns,
        deployments=ns.deployments if deployments is None else deployments,
        services=ns.services if services is None else services,
        connections=ns.connections if connections is None else connections,
    )
    return dataclasses.replace(snap, namespaces=namespaces)


def _fresh_connections(snap: Snapshot) -> Snapshot:
    """Every Connections a new object with the same value, as each Prometheus answer gives."""
    namespaces = {
        key: dataclasses.replace(
            ns,
            connections={k: dataclasses.replace(v) for k, v in ns.connections.items()},
        )
        for key, ns in snap.namespaces.items()
    }
    return dataclasses.replace(snap, namespaces=namespaces)


# A scrape's worth of change to a known figure: mostly a small step, which the generated figures
# (0, 1, 2, 3, 10, 25, 26, 400) and floors (0, 3, 25) keep on their side of the floor or take
# across it (to it, to zero, below zero); now and then a pod fewer reporting.
_NUDGES = (1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 0.0)


def _nudged(c: Choices, snap: Snapshot, name: str) -> Snapshot:
    """Every known figure of namespace `name` moved a little, as each scrape of draining
    colors moves them."""
    ns = snap.namespaces[name]
    moved: dict[tuple[str, str], Connections] = {}
    for key, before in ns.connections.items():
        if before.value is None:
            moved[key] = before
            continue
        series = before.series
        if series is not None and c.chance(8):
            series -= 1  # coverage may be lost
        moved[key] = Connections(before.value + c.pick(_NUDGES), series, before.cause)
    return _with_namespace(snap, name, connections=moved)


_UNLISTED = PodConnections(unavailable="the colors' pods are not listed yet")


def _with_pods(snap: Snapshot, name: str, d: Deployment, c: Choices) -> Snapshot:
    """`snap` with new per-pod figures for `d`'s color: none, unavailable, an equal copy, or
    one pod's figure changed (consolidation decides on them; they keep a draining color's
    pods' deletion costs whatever its rule)."""
    ns = snap.namespaces[name]
    key = (d.template_labels["app"], d.template_labels["color"])
    pods = dict(ns.pods)
    kind = c.pick(("unlisted", "figures", "copy", "drop"))
    if kind == "drop":
        pods.pop(key, None)
    elif kind == "unlisted":
        pods[key] = dataclasses.replace(_UNLISTED)
    elif kind == "copy" and key in pods:
        pods[key] = dataclasses.replace(pods[key], pods=dict(pods[key].pods))
    else:
        figures = {f"{d.name}-{i}": float(c.pick((0, 1, 0, 3))) for i in range(d.ready_replicas)}
        pods[key] = PodConnections(pods=figures)
    namespaces = {**snap.namespaces, name: dataclasses.replace(ns, pods=pods)}
    return dataclasses.replace(snap, namespaces=namespaces)


def _step(c: Choices, snap: Snapshot, pol: Policy, last: Plan) -> tuple[Snapshot, Policy]:
    """One cycle's worth of change, decoded from one drawn integer."""
    if c.chance(3):
        snap = apply_plan(snap, last)
    if c.chance(2):
        snap = _fresh_connections(snap)
    ns_name = c.pick(tuple(snap.namespaces))
    nudge = c.chance(2)
    ns = snap.namespaces[ns_name]
    if ns.deployments and c.chance(3):
        # New connections for one color: another value, unknown, or no series at all.
        d: Deployment = c.pick(ns.deployments)
        key = (d.template_labels["app"], d.template_labels["color"])
        value = connections_from(c, d.ready_replicas)
        connections = dict(ns.connections)
        if value is None:
            connections.pop(key, None)
        else:
            connections[key] = value
        snap = _with_namespace(snap, ns_name, connections=connections)
    ns = snap.namespaces[ns_name]
    if ns.deployments and c.chance(4):
        # One Deployment rebuilt by the watch cache: an equal copy, or a real change.
        index = c.pick(tuple(range(len(ns.deployments))))
        d = ns.deployments[index]
        kind = c.pick(("copy", "replicas", "unready", "unstamp", "delete"))
        if kind == "copy":
            d = dataclasses.replace(d)
        elif kind == "replicas":
            d = dataclasses.replace(d, replicas=c.pick((0, 1, 3)), ready_replicas=0)
        elif kind == "unready":
            d = dataclasses.replace(d, available_replicas=0)
        elif kind == "unstamp":
            annotations = dict(d.annotations)
            annotations.pop(c.pick((LIVE_AT, RETIRED_AT, DRAINED_SINCE)), None)
            d = dataclasses.replace(d, annotations=annotations)
        deployments = list(ns.deployments)
        if kind == "delete":
            del deployments[index]
        else:
            deployments[index] = d
        snap = _with_namespace(snap, ns_name, deployments=tuple(deployments))
    ns = snap.namespaces[ns_name]
    if c.chance(6):
        # A Service switched, dropped, or rebuilt equal.
        services = list(ns.services)
        kind = c.pick(("equal", "switch", "drop"))
        if services and kind == "drop":
            services.pop()
        elif services and kind == "equal":
            services = [dataclasses.replace(s, selector=dict(s.selector)) for s in services]
        elif ns.deployments:
            d = c.pick(ns.deployments)
            services = [service(dict(d.template_labels), name=d.template_labels["app"])]
        snap = _with_namespace(snap, ns_name, services=tuple(services))
    if c.chance(8):
        pol = dataclasses.replace(pol, paused=c.pick((pol.paused, not pol.paused)))
    ns = snap.namespaces[ns_name]
    if ns.deployments and c.chance(2):
        snap = _with_pods(snap, ns_name, c.pick(ns.deployments), c)
    if nudge:  # last: it reads as many choices as the namespace has figures
        snap = _nudged(c, snap, ns_name)
    return snap, pol


def _cycles(snap: Snapshot, pol: Policy, words: list[int], *, settled: bool = False) -> None:
    """Planner and plan() over the cycles `words` decode; `settled`: from the snapshot once
    its first plans' stamps are written, so more plans are reused."""
    if settled:
        for _ in range(2):
            snap = apply_plan(snap, plan(snap, pol, NOW))
    planner = Planner()
    now = NOW
    expected = plan(snap, pol, now)
    assert planner.plan(snap, pol, now) == expected
    for word in words:
        c = Choices(word)
        now += c.pick(_STEPS)
        snap, pol = _step(c, snap, pol, expected)
        expected = plan(snap, pol, now)
        assert planner.plan(snap, pol, now) == expected


@EXAMPLES
@given(snapshots(), policies(), st.lists(_WORD, min_size=1, max_size=8))
def test_planner_plans_what_plan_does_at_every_cycle(
    snap: Snapshot, pol: Policy, words: list[int]
) -> None:
    _cycles(snap, pol, words)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(snapshots(), draining()), consolidating(), st.lists(_WORD, min_size=1, max_size=8))
def test_planner_plans_what_plan_does_with_consolidate_on(
    snap: Snapshot, pol: Policy, words: list[int]
) -> None:
    # Per-pod figures come, go and change: without them a color due a step is shown as
    # unavailable, one not due yet waits for its time, and a draining color's figure may move
    # under either. `draining()`: the case consolidation is for, every retired color with them.
    _cycles(snap, pol, words, settled=True)


@pytest.mark.parametrize(
    ("thresholds", "valid_until"),
    [
        ([], FOREVER),
        ([None, None], FOREVER),
        ([NOW + H, None, NOW + M, NOW + 2 * M], NOW + M),
        ([None, NOW + S], NOW + S),
    ],
)
def test_thresholds_fold_the_earliest_changes_at(
    thresholds: list[datetime | None], valid_until: datetime
) -> None:
    folded = Thresholds()
    for i, at in enumerate(thresholds):
        assert folded.take(Ruling(i, at)) == i  # the decision, as is
    assert folded.valid_until == valid_until
    earliest_of = None
    for at in thresholds:
        earliest_of = earliest(earliest_of, at)
    assert (earliest_of or FOREVER) == valid_until


# --- reuse and each of its conditions -------------------------------------------------------


LIVE, OLD, OLDER = "3c3fdc", "9d2cc9", "a1b2c3"


def _steady() -> tuple[Snapshot, Policy]:
    """An app with nothing to do: live, one retired color draining, one scaled down."""
    deployments = [
        deployment(LIVE, created=NOW - 5 * H, annotations={LIVE_AT: stamp(5 * H)}),
        deployment(
            OLD,
            created=NOW - 20 * H,
            annotations={LIVE_AT: stamp(20 * H), RETIRED_AT: stamp(5 * H)},
        ),
        deployment(
            OLDER,
            created=NOW - 30 * H,
            replicas=0,
            annotations={LIVE_AT: stamp(30 * H), RETIRED_AT: stamp(20 * H)},
        ),
    ]
    snap = snapshot(
        deployments,
        [service({"app": APP, "color": LIVE})],
        {("default", APP, LIVE): conns(50, series=2), ("default", APP, OLD): conns(10, series=2)},
    )
    return snap, policy(max_retired_age=100 * H, min_retired_age=H, drain_hold=5 * M)


def _app(p: Plan) -> AppPlan:
    (app,) = p.apps
    return app


def _planned_twice(
    first: Snapshot, second: Snapshot, pol: Policy, pol2: Policy | None = None, *, later: timedelta
) -> tuple[AppPlan, AppPlan]:
    planner = Planner()
    before = _app(planner.plan(first, pol, NOW))
    result = planner.plan(second, pol2 or pol, NOW + later)
    assert result == plan(second, pol2 or pol, NOW + later)
    return before, _app(result)


def _connections(snap: Snapshot, color: str, value: Connections) -> Snapshot:
    ns = snap.namespaces["default"]
    return _with_namespace(snap, "default", connections={**ns.connections, (APP, color): value})


def test_a_steady_app_is_reused_with_fresh_equal_objects_around_it() -> None:
    snap, pol = _steady()
    before, after = _planned_twice(snap, _fresh_connections(snap), pol, later=30 * S)
    assert after is before
    assert not any(c.actions for c in before.colors)


def test_a_rebuilt_snapshot_of_the_same_objects_is_reused() -> None:
    snap, pol = _steady()
    ns = snap.namespaces["default"]
    rebuilt = dataclasses.replace(
        snap,
        namespaces={
            "default": Namespace(
                "default", tuple(list(ns.deployments)), tuple(ns.services), dict(ns.connections)
            )
        },
    )
    before, after = _planned_twice(snap, rebuilt, pol, later=30 * S)
    assert after is before


def test_a_new_policy_object_invalidates() -> None:  # (a)
    snap, pol = _steady()
    before, after = _planned_twice(snap, snap, pol, dataclasses.replace(pol), later=30 * S)
    assert after is not before and after == before


def test_a_replaced_deployment_invalidates_its_app() -> None:  # (b)
    snap, pol = _steady()
    ns = snap.namespaces["default"]
    copy = (dataclasses.replace(ns.deployments[1]), *ns.deployments[:1], *ns.deployments[2:])
    before, after = _planned_twice(
        snap, _with_namespace(snap, "default", deployments=copy), pol, later=30 * S
    )
    assert after is not before and after == before


def test_an_unequal_service_invalidates() -> None:  # (b)
    snap, pol = _steady()
    preview = service({"app": APP, "color": "ffffff"}, name="preview")
    services = (*snap.namespaces["default"].services, preview)
    before, after = _planned_twice(
        snap, _with_namespace(snap, "default", services=services), pol, later=30 * S
    )
    assert after is not before and after == before


def _kept_but(before: AppPlan, after: AppPlan, index: int) -> bool:
    """Whether `after` is `before` with only the color at `index` written anew: no other
    color's plan was built again, so the app was not planned again."""
    others = [i for i in range(len(before.colors)) if i != index]
    return after.colors[index] is not before.colors[index] and all(
        after.colors[i] is before.colors[i] for i in others
    )


def test_a_retired_colors_figure_moving_above_the_floor_is_written_in() -> None:  # (c)
    # Still above the floor: what was found carries the figure, nothing else depends on it.
    snap, pol = _steady()
    pol = policy(max_retired_age=100 * H, min_retired_age=H, drain_hold=5 * M, connection_floor=5)
    planner = Planner()
    first = _app(planner.plan(snap, pol, NOW))
    assert first.colors[1].note == Note(AboveFloor(10, 5))
    app = first
    for i, value in enumerate((9, 11.5, 6, 400), start=1):
        now = NOW + i * 30 * S
        moved = _connections(snap, OLD, conns(value, series=2))
        result = planner.plan(moved, pol, now)
        assert result == plan(moved, pol, now)
        assert _kept_but(app, _app(result), 1)
        app = _app(result)
        assert app.colors[1].connections.value == value
        assert render_note(app.colors[1].note, now) == (
            f"draining: {format_count(value)} connections > floor 5"
        )


def test_a_drain_holds_figure_moving_below_the_floor_is_written_in() -> None:  # (c)
    snap, pol = _steady()
    pol = policy(max_retired_age=100 * H, min_retired_age=H, drain_hold=5 * M, connection_floor=5)
    snap = _retired_for(snap, 5 * H, 2 * M)  # at 0, for 2m of drainHold 5m
    moved = _connections(snap, OLD, conns(3, series=2))
    before, after = _planned_twice(snap, moved, pol, later=30 * S)
    assert _kept_but(before, after, 1)
    assert render_note(after.colors[1].note, NOW + 30 * S).startswith("draining: 3 <= floor 5")


@pytest.mark.parametrize(
    ("floor", "figure", "state"),
    [
        (5, conns(5, series=2), State.DRAINING),  # to the floor: a drain starts
        (0, conns(0, series=2), State.DRAINING),  # to zero (the lowest floor)
        (5, conns(9, series=1), State.UNKNOWN_CONNECTIONS),  # one of its 2 ready pods reports
        (5, conns(None, cause="query failed"), State.UNKNOWN_CONNECTIONS),
        (5, conns(math.inf, series=2), State.UNKNOWN_CONNECTIONS),
    ],
)
def test_a_retired_colors_figure_crossing_what_matters_plans_it_again(
    floor: int, figure: Connections, state: State
) -> None:  # (c)
    snap, pol = _steady()
    pol = policy(
        max_retired_age=100 * H, min_retired_age=H, drain_hold=5 * M, connection_floor=floor
    )
    before, after = _planned_twice(snap, _connections(snap, OLD, figure), pol, later=30 * S)
    assert after.colors[0] is not before.colors[0]  # every color built again
    assert after.colors[1].state is state


def test_a_drain_crossing_back_above_the_floor_plans_it_again() -> None:  # (c)
    snap, pol = _steady()
    snap = _retired_for(snap, 5 * H, 2 * M)  # at 0 <= floor 0
    before, after = _planned_twice(
        snap, _connections(snap, OLD, conns(1, series=2)), pol, later=30 * S
    )
    assert after.colors[0] is not before.colors[0]
    assert [a.reason for c in after.colors for a in c.actions] == ["drain-reset"]


def _with_figures(snap: Snapshot, **pods: float) -> Snapshot:
    """`snap` with per-pod figures for the retired color OLD."""
    ns = snap.namespaces["default"]
    figures = {(APP, OLD): PodConnections(pods=dict(pods))}
    return dataclasses.replace(snap, namespaces={"default": dataclasses.replace(ns, pods=figures)})


def test_per_pod_figures_count_only_where_a_rule_consolidates() -> None:
    # A draining color has per-pod figures for its pods' deletion costs, whatever its rule.
    snap, pol = _steady()
    before, after = _planned_twice(snap, _with_figures(snap, a=4.0, b=6.0), pol, later=30 * S)
    assert after is before


def test_changed_per_pod_figures_plan_a_consolidating_app_again() -> None:
    # Due a step (retired 5h, `after` 0), with no idle pod: nothing to do, reused while its
    # figures are equal, planned again when one changes.
    snap, pol = _steady()
    consolidate = Consolidate(after=0 * S, every=5 * M, keep_pods=1)
    pol = policy(max_retired_age=100 * H, min_retired_age=H, consolidate=consolidate)
    first = _with_figures(snap, a=4.0, b=6.0)
    before, after = _planned_twice(first, _with_figures(snap, a=4.0, b=6.0), pol, later=30 * S)
    assert after is before
    before, after = _planned_twice(first, _with_figures(snap, a=4.0, b=5.0), pol, later=30 * S)
    assert after.colors[0] is not before.colors[0]


def test_new_connections_of_a_live_color_are_shown_without_replanning() -> None:  # (c)
    # A live color's connections decide nothing: the plan is patched, the rest kept.
    snap, pol = _steady()
    before, after = _planned_twice(
        snap, _connections(snap, LIVE, conns(51, series=2)), pol, later=30 * S
    )
    assert after is not before
    assert after.colors[0].connections.value == 51
    assert after.colors[1:] == before.colors[1:]
    assert all(a is b for a, b in zip(after.colors[1:], before.colors[1:], strict=True))


def test_an_app_with_actions_is_planned_again() -> None:  # (d)
    snap, pol = _steady()
    ns = snap.namespaces["default"]
    unstamped = dataclasses.replace(ns.deployments[0], annotations={})
    snap = _with_namespace(snap, "default", deployments=(unstamped, *ns.deployments[1:]))
    before, after = _planned_twice(snap, snap, pol, later=30 * S)
    assert any(c.actions for c in before.colors)
    assert after is not before  # and equal to plan(): checked by _planned_twice


def _retired_for(snap: Snapshot, retired: timedelta, drained: timedelta | None) -> Snapshot:
    ns = snap.namespaces["default"]
    annotations = {LIVE_AT: stamp(20 * H), RETIRED_AT: stamp(retired)}
    if drained is not None:
        annotations[DRAINED_SINCE] = stamp(drained)
    old = dataclasses.replace(ns.deployments[1], annotations=annotations)
    snap = _with_namespace(snap, "default", deployments=(ns.deployments[0], old, ns.deployments[2]))
    return _connections(snap, OLD, conns(0 if drained is not None else 10, series=2))


def _crossing(snap: Snapshot, pol: Policy, *, within: timedelta, state: State) -> None:
    """Reused just before the crossing `within` from NOW; planned again (to `state`) at it."""
    planner = Planner()
    first = _app(planner.plan(snap, pol, NOW))
    assert _app(planner.plan(snap, pol, NOW + within - S)) is first
    at = planner.plan(snap, pol, NOW + within)
    assert at == plan(snap, pol, NOW + within)
    assert _app(at) is not first
    assert _app(at).colors[1].state is state


def test_reaching_drain_hold_invalidates() -> None:  # (e)
    snap, pol = _steady()
    # Drained for 4m of 5m: reused until drainHold is reached (the note's "for 4m30s" is
    # rendered when read, against the plan's now).
    snap = _retired_for(snap, 5 * H, 4 * M)
    _crossing(snap, pol, within=M, state=State.DRAINED)


def test_reaching_min_retired_age_invalidates() -> None:  # (e)
    snap, pol = _steady()
    pol = policy(max_retired_age=100 * H, min_retired_age=3 * H, drain_hold=5 * M)
    # Retired 2h30m of 3h; drained long enough.
    snap = _retired_for(snap, 150 * M, 2 * H)
    _crossing(snap, pol, within=30 * M, state=State.DRAINED)


def test_reaching_max_retired_age_invalidates() -> None:  # (e)
    snap, pol = _steady()
    # Retired 99h30m of maxRetiredAge 100h, still holding connections: no time in any note.
    snap = _retired_for(snap, 99 * H + 30 * M, None)
    _crossing(snap, pol, within=30 * M, state=State.DRAINING)
    planner = Planner()
    planner.plan(snap, pol, NOW)
    forced = _app(planner.plan(snap, pol, NOW + 30 * M + S))
    assert [a.reason for c in forced.colors for a in c.actions] == ["max-retired-age"]


def test_reaching_abandoned_after_invalidates() -> None:  # (e)
    snap, pol = _steady()
    pol = policy(max_retired_age=100 * H, abandoned_after=2 * H)
    pending = deployment("d4e5f6", created=NOW - H - 30 * M)
    ns = snap.namespaces["default"]
    snap = _with_namespace(snap, "default", deployments=(*ns.deployments, pending))
    planner = Planner()
    first = _app(planner.plan(snap, pol, NOW))
    assert first.colors[0].state is State.PENDING
    assert _app(planner.plan(snap, pol, NOW + 30 * M - S)) is first
    at = planner.plan(snap, pol, NOW + 30 * M)
    assert at == plan(snap, pol, NOW + 30 * M)
    assert any(a.reason == "abandoned" for c in _app(at).colors for a in c.actions)


def test_a_clock_stepping_back_invalidates() -> None:
    snap, pol = _steady()
    planner = Planner()
    first = _app(planner.plan(snap, pol, NOW))
    assert _app(planner.plan(snap, pol, NOW - S)) is not first


def test_notes_with_durations_are_never_stale() -> None:
    snap, pol = _steady()
    snap = _retired_for(snap, 5 * H, 2 * M)  # "... for 2m of drainHold 5m"
    planner = Planner()
    first = _app(planner.plan(snap, pol, NOW))
    for seconds in range(0, 180, 7):
        now = NOW + seconds * S
        reused = planner.plan(snap, pol, now)
        assert reused == plan(snap, pol, now)
        assert _app(reused) is first  # the threshold, drainHold, is 3 minutes away
        held_for = compact_duration(2 * M + seconds * S)
        assert render_note(_app(reused).colors[1].note, now) == (
            f"draining: 0 <= floor 0 for {held_for} of drainHold 5m"
        )


def test_a_naive_now_is_utc_as_in_plan() -> None:
    snap, pol = _steady()
    naive = datetime(2026, 11, 21, 12, 0)
    assert Planner().plan(snap, pol, naive) == plan(snap, pol, naive)


def test_an_added_service_selecting_nothing_changes_nothing() -> None:
    # A Service with no selector selects no pod: the namespace's Services differ, so the app is
    # planned again, to the same plan.
    snap, pol = _steady()
    services = (*snap.namespaces["default"].services, Service("default", "external", {}))
    before, after = _planned_twice(
        snap, _with_namespace(snap, "default", services=services), pol, later=S
    )
    assert after == before
