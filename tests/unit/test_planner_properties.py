"""Hypothesis properties of the planner over generated snapshots and policies.

Each property states a safety rule of docs/design.md independently of the planner's own reasoning
where it can (live is recomputed from the Services, protection from the annotation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from rainbowd.core.model import (
    ANNOTATION_PREFIX,
    DISRUPTED_AT,
    DRAINED_SINCE,
    HOLD_REASON,
    HOLD_UNTIL,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    PROTECT,
    RETIRED_AT,
    SCALE_DOWN_GENERATION,
    SCALED_UP_AT,
    ActionKind,
    AppPlan,
    ColorPlan,
    Connections,
    Deployment,
    Plan,
    Reason,
    Snapshot,
    State,
)
from rainbowd.core.objects import format_time, parse_time
from rainbowd.core.planner import Planner, plan
from rainbowd.core.policy import Budget, Knobs, Policy
from rainbowd.core.reporting import render_note
from tests.unit.strategies import (
    EXTREME_STAMPS,
    NOW,
    NS,
    PROTECT_SPELLINGS,
    apply_plan,
    policies,
    snapshots,
    with_annotations,
)

EXAMPLES = settings(max_examples=1000, deadline=None)


def disruptive_targets(p: Plan) -> set[tuple[str, str]]:
    return {(a.namespace, a.name) for a in p.actions if a.kind is not ActionKind.ANNOTATE}


def is_live(snap: Snapshot, d: Deployment) -> bool:
    ns = snap.namespaces[d.namespace]
    return any(
        s.selector and all(d.template_labels.get(k) == v for k, v in s.selector.items())
        for s in ns.services
    )


def protected(d: Deployment) -> bool:
    """Protected or held, by docs/design.md's words: any protect value but a spelling of false; a
    hold-until in the future or not a time."""
    value = d.annotations.get(PROTECT)
    if value is not None and value.strip().lower() not in ("false", "no", "n", "off", "0"):
        return True
    hold = d.annotations.get(HOLD_UNTIL)
    if hold is None:
        return False
    try:
        return parse_time(hold) > NOW
    except ValueError:
        return True


@EXAMPLES
@given(snapshots(), policies())
def test_live_pending_and_protected_colors_are_never_scaled_or_deleted(
    snap: Snapshot, pol: Policy
) -> None:
    p = plan(snap, pol, NOW)
    hit = disruptive_targets(p)
    for ns in snap.namespaces.values():
        for d in ns.deployments:
            if is_live(snap, d) or protected(d):
                assert (d.namespace, d.name) not in hit
    for app in p.apps:
        for c in app.colors:
            if c.state in (State.LIVE, State.PENDING, State.PROTECTED) or c.rule is None:
                assert not any(a.kind is not ActionKind.ANNOTATE for a in c.actions)
            if app.blocked is not None:
                # A blocked app only has its drains reset, or a scale-up recorded.
                assert all(
                    a.kind is ActionKind.ANNOTATE
                    and a.reason in (Reason.DRAIN_RESET, Reason.SCALED_UP)
                    for a in c.actions
                )


@EXAMPLES
@given(snapshots(), policies())
def test_unknown_connections_never_give_a_drained_action(snap: Snapshot, pol: Policy) -> None:
    p = plan(snap, pol, NOW)
    for app in p.apps:
        for c in app.colors:
            raw = snap.connections_for(app.namespace, app.app, c.color)
            unknown = (
                raw.value is None
                or (raw.series is not None and raw.series < c.ready_replicas)
                or c.connections.value is None
            )
            if unknown:
                assert not any(a.reason is Reason.DRAINED for a in c.actions)
                assert c.state is not State.DRAINED


@EXAMPLES
@given(snapshots(), policies(), st.integers(0, 999_999))
def test_replanning_the_applied_plan_yields_no_action(
    snap: Snapshot, pol: Policy, microseconds: int
) -> None:
    # A daemon's clock has fractions of a second; stamps are written in whole seconds.
    now = NOW + timedelta(microseconds=microseconds)
    first = plan(snap, pol, now)
    applied = apply_plan(snap, first)
    again = plan(applied, pol, now)
    budget_held = not pol.paused and any(c.held for a in first.apps for c in a.colors)
    if not budget_held:
        assert again.actions == ()
        return
    # Cleanups held by the disruption budget (maxDisruptions) come due again once it allows
    # more: those rounds must still end, each on a snapshot the previous round produced.
    rounds = sum(len(ns.deployments) for ns in snap.namespaces.values()) + 1
    for _ in range(rounds):
        if not again.actions:
            break
        assert all(a.kind is not ActionKind.ANNOTATE for a in again.actions)
        applied = apply_plan(applied, again)
        again = plan(applied, pol, now)
    assert again.actions == ()


def with_connections(
    snap: Snapshot, namespace: str, key: tuple[str, str], c: Connections
) -> Snapshot:
    ns = snap.namespaces[namespace]
    connections = dict(ns.connections)
    connections[key] = c
    namespaces = dict(snap.namespaces)
    namespaces[namespace] = dataclasses.replace(ns, connections=connections)
    return dataclasses.replace(snap, namespaces=namespaces)


@EXAMPLES
@given(snapshots(), policies(), st.data())
def test_more_connections_never_make_a_color_scaled_or_deleted(
    snap: Snapshot, pol: Policy, data: st.DataObject
) -> None:
    p = plan(snap, pol, NOW)
    hit = disruptive_targets(p)
    spared = [(app, c) for app in p.apps for c in app.colors if (app.namespace, c.name) not in hit]
    if not spared:
        return
    app, c = data.draw(st.sampled_from(spared))
    before = snap.connections_for(app.namespace, app.app, c.color)
    unknown = st.just(Connections.unknown("query failed"))
    if before.value is None:
        raised = data.draw(unknown)  # nothing to raise; a different failure changes nothing
    else:
        value = before.value
        raised = data.draw(
            st.one_of(
                unknown,
                st.integers(1, 500).map(
                    lambda n: Connections(value=value + n, series=before.series)
                ),
            )
        )
    after = plan(with_connections(snap, app.namespace, (app.app, c.color), raised), pol, NOW)
    assert (app.namespace, c.name) not in disruptive_targets(after)


@EXAMPLES
@given(snapshots(), policies())
def test_every_action_is_explained_and_carries_preconditions(snap: Snapshot, pol: Policy) -> None:
    p = plan(snap, pol, NOW)
    seen: set[tuple[str, str]] = set()
    for app in p.apps:
        for c in app.colors:
            assert render_note(c.note, p.now) and "\n" not in render_note(c.note, p.now)
            assert len(c.actions) <= 1  # one write per Deployment per cycle: one precondition
            for a in c.actions:
                assert a.message and "\n" not in a.message
                assert a.uid and a.resource_version
                assert (a.namespace, a.name) not in seen
                seen.add((a.namespace, a.name))
                assert all(key.startswith(ANNOTATION_PREFIX) for key in a.annotations)
                if a.kind is ActionKind.ANNOTATE:
                    assert a.annotations
    assert p.dry_run is pol.dry_run and p.paused is pol.paused
    if pol.paused:
        assert not disruptive_targets(p)


def knobs_of(pol: Policy, app: AppPlan) -> Knobs:
    (rule,) = [r for r in pol.rules if r.name == app.rule]
    return rule.knobs


@EXAMPLES
@given(snapshots(), policies())
def test_a_drained_action_needs_known_connections_at_or_below_the_floor(
    snap: Snapshot, pol: Policy
) -> None:
    p = plan(snap, pol, NOW)
    for app in p.apps:
        for c in app.colors:
            if any(a.reason is Reason.DRAINED for a in c.actions):
                value = c.connections.value
                assert value is not None and value <= knobs_of(pol, app).connection_floor


def recent_disruptions(deployments: Iterable[Deployment], budget: Budget) -> int:
    """Independently of the planner: disrupted-at stamps counting at NOW (malformed: now)."""
    count = 0
    for d in deployments:
        value = d.annotations.get(DISRUPTED_AT)
        if value is None:
            continue
        for token in value.split() or [value]:
            try:
                at = parse_time(token)
            except ValueError:
                count += 1
                continue
            if at > NOW - budget.per:
                count += 1
    return count


@EXAMPLES
@given(snapshots(), policies())
def test_forced_disruptions_stay_within_the_budgets_left(snap: Snapshot, pol: Policy) -> None:
    p = plan(snap, pol, NOW)
    everyone = [d for ns in snap.namespaces.values() for d in ns.deployments]
    cluster = 0
    for app in p.apps:
        knobs = knobs_of(pol, app)
        disruptions = [
            a
            for c in app.colors
            for a in c.actions
            if a.reason in (Reason.MAX_RETIRED_AGE, Reason.MAX_COLORS)
            and (c.connections.value is None or c.connections.value > knobs.connection_floor)
        ]
        for a in disruptions:
            assert str(a.annotations.get(DISRUPTED_AT)).split()[-1] == format_time(NOW), a
        mine = [
            d
            for d in everyone
            if d.namespace == app.namespace and d.template_labels.get("app") == app.app
        ]
        assert len(disruptions) <= max(
            0, knobs.max_disruptions.count - recent_disruptions(mine, knobs.max_disruptions)
        )
        cluster += len(disruptions)
    if pol.max_disruptions is not None:
        budget = pol.max_disruptions
        assert cluster <= max(0, budget.count - recent_disruptions(everyone, budget))
    # A Deployment recording a disruption that still counts is never deleted.
    by_name = {(d.namespace, d.name): d for d in everyone}
    for a in p.actions:
        if a.kind is ActionKind.DELETE:
            d = by_name[(a.namespace, a.name)]
            (app,) = [x for x in p.apps if x.namespace == a.namespace and x.app == a.app]
            assert recent_disruptions([d], knobs_of(pol, app).max_disruptions) == 0


@EXAMPLES
@given(snapshots(), policies())
def test_keep_scaled_down_keeps_the_newest_scaled_down_colors(snap: Snapshot, pol: Policy) -> None:
    p = plan(snap, pol, NOW)
    after = apply_plan(snap, p)
    for app in p.apps:
        deletes = [a for c in app.colors for a in c.actions if a.reason is Reason.KEEP_SCALED_DOWN]
        if not deletes:
            continue
        keep = knobs_of(pol, app).keep_scaled_down
        deleted = {a.name for a in deletes}
        created = {d.name: d.created_at for d in snap.namespaces[app.namespace].deployments}
        kept = [
            c
            for c in app.colors
            if c.name not in deleted
            and not _kept_as_a_record(p, c)
            and c.state is not State.LIVE
            and c.state is not State.PENDING
            # A protected color is kept by its protection, outside keepScaledDown's count.
            and c.state is not State.PROTECTED
            and c.rule is not None
            and any(
                d.name == c.name and d.replicas == 0
                for d in after.namespaces[app.namespace].deployments
            )
        ]
        assert len(kept) >= keep
        # Every deleted one is older than every one kept (newest kept for a rollback).
        if keep:
            assert max(created[n] for n in deleted) <= min(created[c.name] for c in kept)


def _kept_as_a_record(p: Plan, color: ColorPlan) -> bool:
    """A color whose delete waits while it records a disruption (scaled down first, or kept
    until the record stops counting): kept whatever keepScaledDown would have it do."""
    return "it records a disruption" in render_note(color.note, p.now) or any(
        "deleted once maxDisruptions.per has passed" in a.message for a in color.actions
    )


# Every annotation rainbowd reads, and values a person might write into each.
READ = (LIVE_AT, RETIRED_AT, DRAINED_SINCE, ORIGINAL_REPLICAS, PROTECT, HOLD_UNTIL, HOLD_REASON,
        SCALED_UP_AT, SCALE_DOWN_GENERATION, DISRUPTED_AT)  # fmt: skip
# Those whose any value (but a valid time in the past, for the two stamps a person may set back
# on purpose) must never make rainbowd harsher on the Deployment than the annotation absent.
NEVER_HARSHER = frozenset(READ) - {LIVE_AT, SCALE_DOWN_GENERATION}
_HARSHNESS = {None: 0, ActionKind.ANNOTATE: 0, ActionKind.SCALE: 1, ActionKind.DELETE: 2}

values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(EXTREME_STAMPS + PROTECT_SPELLINGS),
    st.sampled_from(PROTECT_SPELLINGS).map(str.upper),
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(lambda t: t.isoformat()),
    st.integers(-5, 10).map(str),
)


def harshness(p: Plan, name: str) -> int:
    kinds = [a.kind for a in p.actions if a.name == name]
    return max((_HARSHNESS[k] for k in kinds), default=0)


def past_time(value: str) -> bool:
    try:
        return parse_time(value) <= NOW
    except ValueError:
        return False


@EXAMPLES
@given(snapshots(), policies(), st.data(), st.sampled_from(READ), values)
def test_any_annotation_value_affects_only_its_deployment_and_never_harshens_it(
    snap: Snapshot, pol: Policy, data: st.DataObject, key: str, value: str
) -> None:
    namespace = snap.namespaces[NS]
    target = data.draw(st.sampled_from(namespace.deployments))
    without = {k: v for k, v in target.annotations.items() if k != key}
    marked = with_annotations(snap, target, {**without, key: value})
    base = plan(with_annotations(snap, target, without), pol, NOW)
    odd = plan(marked, pol, NOW)  # no exception escapes, whatever the value
    assert Planner().plan(marked, pol, NOW) == odd
    if never_harsher(odd, target.name, key, value):
        assert harshness(odd, target.name) <= harshness(base, target.name)


def never_harsher(odd: Plan, name: str, key: str, value: str) -> bool:
    """Whether `value` in annotation `key` of Deployment `name` must leave the plan `odd` no
    harsher on it than the annotation absent (the cases it may, each explained)."""
    return (
        key in NEVER_HARSHER
        and not (key in (RETIRED_AT, DRAINED_SINCE) and past_time(value))
        and not _asked_for_by_max_colors_in_place_of_a_held_color(odd, name, key)
        and not _a_past_record_of_a_color_scaled_down_to_keep_it(odd, name, key, value)
    )


def _a_past_record_of_a_color_scaled_down_to_keep_it(
    p: Plan, name: str, key: str, value: str
) -> bool:
    """With action delete, a color at 0 replicas whose disrupted-at is a valid time that no
    longer counts was scaled down only to record a disruption, and is deleted now (docs/design.md
    "What the planner decides"); it has no pods, so the delete disconnects no one. A malformed
    record counts as now and keeps it."""
    return (
        key == DISRUPTED_AT
        and past_time(value)
        and any(a.name == name and a.reason is Reason.DISRUPTION_RECORDED for a in p.actions)
    )


def _asked_for_by_max_colors_in_place_of_a_held_color(p: Plan, name: str, key: str) -> bool:
    """A disrupted-at, even a garbled one, counts against the app's maxDisruptions: it may hold
    an older color's forced scale-down of users, and maxColors then asks for the next oldest, this
    one, which the budget lets go only if it disrupts no one (docs/design.md "What the planner
    decides")."""
    return (
        key == DISRUPTED_AT
        and any(a.name == name and a.reason is Reason.MAX_COLORS for a in p.actions)
        and any(c.held is Reason.MAX_COLORS for app in p.apps for c in app.colors)
    )
