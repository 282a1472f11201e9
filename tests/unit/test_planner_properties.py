"""Hypothesis properties of the planner over generated snapshots and policies.

Each property states a safety rule of docs/design.md independently of the planner's own reasoning
where it can (live is recomputed from the Services, protection from the annotation).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from rainbowd.core.model import (
    ANNOTATION_PREFIX,
    PROTECT,
    ActionKind,
    Connections,
    Deployment,
    Plan,
    Reason,
    Snapshot,
    State,
)
from rainbowd.core.planner import plan
from rainbowd.core.policy import Policy
from tests.unit.strategies import NOW, apply_plan, policies, snapshots

EXAMPLES = settings(max_examples=2000, deadline=None)


def disruptive_targets(p: Plan) -> set[tuple[str, str]]:
    return {(a.namespace, a.name) for a in p.actions if a.kind is not ActionKind.ANNOTATE}


def is_live(snap: Snapshot, d: Deployment) -> bool:
    ns = snap.namespaces[d.namespace]
    return any(
        s.selector and all(d.template_labels.get(k) == v for k, v in s.selector.items())
        for s in ns.services
    )


@EXAMPLES
@given(snapshots(), policies())
def test_live_pending_and_protected_colors_are_never_scaled_or_deleted(
    snap: Snapshot, pol: Policy
) -> None:
    p = plan(snap, pol, NOW)
    hit = disruptive_targets(p)
    for ns in snap.namespaces.values():
        for d in ns.deployments:
            if is_live(snap, d) or d.annotations.get(PROTECT) == "true":
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
    # Cleanups held by maxDisruptionsPerCycle come due again with a new budget: those rounds
    # must still end, each on a snapshot the previous round produced.
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
            assert c.note and "\n" not in c.note
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
