"""Test builders for planner inputs, Hypothesis strategies of snapshots and policies, and
`apply_plan`: what the cluster looks like after a plan's actions, for re-planning.

Test-only: production never applies a plan to a snapshot, the executor applies it to the API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from rainbowd.core.model import (
    DRAINED_SINCE,
    LIVE_AT,
    PROTECT,
    RETIRED_AT,
    ActionKind,
    Condition,
    Connections,
    Deployment,
    Namespace,
    Plan,
    Service,
    Snapshot,
)
from rainbowd.core.objects import format_time
from rainbowd.core.policy import (
    CleanupAction,
    ConnectionsQuery,
    Knobs,
    Operator,
    Policy,
    Requirement,
    Rule,
    Selector,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
APP = "rainbow-deploys"
NS = "default"
H = timedelta(hours=1)
M = timedelta(minutes=1)


def ago(delta: timedelta) -> datetime:
    return NOW - delta


def stamp(delta: timedelta) -> str:
    """An annotation value `delta` before NOW."""
    return format_time(NOW - delta)


def deployment(
    color: str,
    *,
    app: str = APP,
    namespace: str = NS,
    created: datetime | None = None,
    replicas: int = 2,
    ready: int | None = None,
    available: bool = True,
    progress_deadline_exceeded: bool = False,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    template_labels: Mapping[str, str] | None = None,
) -> Deployment:
    """A Deployment shaped like the seed's app.yaml: `color` only in the pod template."""
    ready_replicas = replicas if ready is None else ready
    conditions = [Condition("Available", "True" if available else "False")]
    if progress_deadline_exceeded:
        conditions.append(Condition("Progressing", "False", reason="ProgressDeadlineExceeded"))
    return Deployment(
        namespace=namespace,
        name=f"{app}-{color}",
        uid=f"uid-{namespace}-{app}-{color}",
        resource_version="1",
        created_at=created if created is not None else ago(10 * H),
        labels={"app": app} if labels is None else dict(labels),
        template_labels=(
            {"app": app, "color": color} if template_labels is None else dict(template_labels)
        ),
        annotations=dict(annotations or {}),
        replicas=replicas,
        ready_replicas=ready_replicas,
        available_replicas=ready_replicas if available else 0,
        conditions=tuple(conditions),
    )


def service(selector: Mapping[str, str], *, name: str = APP, namespace: str = NS) -> Service:
    return Service(namespace=namespace, name=name, selector=dict(selector))


def snapshot(
    deployments: Iterable[Deployment],
    services: Iterable[Service] = (),
    connections: Mapping[tuple[str, str, str], Connections] | None = None,
    *,
    now: datetime = NOW,
) -> Snapshot:
    """Connections keyed by (namespace, app, color)."""
    by_ns: dict[str, dict[str, Any]] = {}

    def ns(name: str) -> dict[str, Any]:
        return by_ns.setdefault(name, {"deployments": [], "services": [], "connections": {}})

    for d in deployments:
        ns(d.namespace)["deployments"].append(d)
    for s in services:
        ns(s.namespace)["services"].append(s)
    for (namespace, app, color), value in (connections or {}).items():
        ns(namespace)["connections"][(app, color)] = value
    return Snapshot(
        now=now,
        namespaces={
            name: Namespace(
                name=name,
                deployments=tuple(parts["deployments"]),
                services=tuple(parts["services"]),
                connections=parts["connections"],
            )
            for name, parts in by_ns.items()
        },
    )


def conns(value: float | None, *, series: int | None = None, cause: str = "") -> Connections:
    if value is None:
        return Connections.unknown(cause or "no series for this color")
    return Connections(value=value, series=series, cause=cause)


def rule(
    name: str = "rainbow",
    *,
    app: str | None = APP,
    namespaces: Iterable[str] | None = None,
    **knobs: Any,
) -> Rule:
    """A rule selecting Deployments labelled app=<app> (any Deployment when app is None)."""
    requirements = () if app is None else (Requirement("app", Operator.IN, frozenset({app})),)
    return Rule(
        name=name,
        knobs=Knobs(**knobs),
        connections=ConnectionsQuery(),
        namespaces=None if namespaces is None else frozenset(namespaces),
        selector=Selector(requirements=requirements, text="" if app is None else f"app={app}"),
    )


def policy(*rules: Rule, dry_run: bool = False, paused: bool = False, **knobs: Any) -> Policy:
    """One rule for the seed's app with the given knobs, unless rules are given."""
    return Policy(rules=rules or (rule(**knobs),), dry_run=dry_run, paused=paused)


# --- applying a plan, as the executor would ---------------------------------------------------


def _bump(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else version + "+"


def _annotated(d: Deployment, changes: Mapping[str, str | None]) -> dict[str, str]:
    annotations = dict(d.annotations)
    for key, value in changes.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    return annotations


def apply_plan(snap: Snapshot, plan: Plan) -> Snapshot:
    """The snapshot after every action of `plan` succeeded (dry run and paused included: the
    plan's actions are what would be applied). Connections and Services are unchanged."""
    by_name: dict[tuple[str, str], list[Any]] = {}
    for action in plan.actions:
        by_name.setdefault((action.namespace, action.name), []).append(action)
    namespaces: dict[str, Namespace] = {}
    for name, ns in snap.namespaces.items():
        kept: list[Deployment] = []
        for d in ns.deployments:
            deleted = False
            for action in by_name.get((d.namespace, d.name), ()):
                assert action.uid == d.uid and action.resource_version == d.resource_version
                if action.kind is ActionKind.DELETE:
                    deleted = True
                    break
                d = dataclasses.replace(
                    d,
                    annotations=_annotated(d, action.annotations),
                    resource_version=_bump(d.resource_version),
                )
                if action.kind is ActionKind.SCALE:
                    d = dataclasses.replace(d, replicas=0, ready_replicas=0, available_replicas=0)
            if not deleted:
                kept.append(d)
        namespaces[name] = dataclasses.replace(ns, deployments=tuple(kept))
    return dataclasses.replace(snap, namespaces=namespaces)


# --- Hypothesis strategies --------------------------------------------------------------------

COLORS = ("3c3fdc", "9d2cc9", "a1b2c3", "d4e5f6", "0f0f0f", "c0ffee")
APPS = ("rainbow-deploys", "chat")
_STAMP_OFFSETS = st.sampled_from([0, 1, 20, 45, 90, 300, 4000, -30])  # minutes before NOW


@st.composite
def _stamp_value(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["yesterday", "", "2026-13-40T00:00:00Z", "12:00"]))
    return stamp(timedelta(minutes=draw(_STAMP_OFFSETS)))


def knobs_strategy() -> st.SearchStrategy[Knobs]:
    minutes = st.sampled_from([0, 5, 30, 60, 600])
    return st.builds(
        Knobs,
        min_retired_age=minutes.map(lambda m: timedelta(minutes=m)),
        connection_floor=st.sampled_from([0, 0, 3, 25]),
        drain_hold=st.sampled_from([0, 5, 30]).map(lambda m: timedelta(minutes=m)),
        max_colors=st.sampled_from([None, 1, 2, 3, 4]),
        max_retired_age=st.sampled_from([None, 60, 1440]).map(
            lambda m: None if m is None else timedelta(minutes=m)
        ),
        action=st.sampled_from(list(CleanupAction)),
        keep_scaled_down=st.integers(0, 3),
        max_disruptions_per_cycle=st.integers(0, 2),
        abandoned_after=st.sampled_from([None, 30, 600]).map(
            lambda m: None if m is None else timedelta(minutes=m)
        ),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    knobs = draw(knobs_strategy())
    rules = [
        Rule(
            name=f"rule-{app}",
            knobs=knobs if i == 0 else draw(knobs_strategy()),
            connections=ConnectionsQuery(),
            selector=Selector(
                requirements=(Requirement("app", Operator.IN, frozenset({app})),),
                text=f"app={app}",
            ),
        )
        for i, app in enumerate(APPS)
    ]
    return Policy(
        rules=tuple(rules),
        dry_run=draw(st.booleans()),
        paused=draw(st.integers(0, 5)) == 0,
    )


@st.composite
def _connections(draw: st.DrawFn, ready: int) -> Connections | None:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return None  # no series at all
    if kind == 1:
        return Connections.unknown("query failed")
    value = float(draw(st.sampled_from([0, 0, 1, 2, 3, 10, 25, 26, 400])))
    series = draw(st.sampled_from([None, ready, max(ready - 1, 0), ready + 1]))
    return Connections(value=value, series=series)


@st.composite
def app_colors(
    draw: st.DrawFn, app: str, namespace: str = NS
) -> tuple[list[Deployment], list[Service], dict[tuple[str, str, str], Connections]]:
    n = draw(st.integers(1, 6))
    deployments: list[Deployment] = []
    connections: dict[tuple[str, str, str], Connections] = {}
    for color in COLORS[:n]:
        replicas = draw(st.integers(0, 3))
        ready = draw(st.integers(0, replicas))
        annotations: dict[str, str] = {}
        for key in (LIVE_AT, RETIRED_AT, DRAINED_SINCE):
            if draw(st.integers(0, 2)) == 0:
                annotations[key] = draw(_stamp_value())
        if draw(st.integers(0, 6)) == 0:
            annotations[PROTECT] = "true"
        managed = draw(st.integers(0, 7)) != 0
        d = deployment(
            color,
            app=app,
            namespace=namespace,
            created=ago(timedelta(minutes=draw(st.sampled_from([5, 60, 120, 600, 3000, 6000])))),
            replicas=replicas,
            ready=ready,
            available=draw(st.integers(0, 7)) != 0,
            annotations=annotations,
            labels={"app": app} if managed else {"team": "x"},
        )
        deployments.append(d)
        c = draw(_connections(ready))
        if c is not None:
            connections[(namespace, app, color)] = c
    services: list[Service] = []
    shape = draw(st.integers(0, 9))
    if shape == 0:
        pass  # no Service: blocked
    elif shape == 1:
        services.append(service({"app": app}, name=app, namespace=namespace))  # canary
    else:
        live = draw(st.sampled_from(COLORS[:n]))
        services.append(service({"app": app, "color": live}, name=app, namespace=namespace))
        if shape == 2:
            preview = draw(st.sampled_from(COLORS[:n]))
            services.append(
                service({"app": app, "color": preview}, name=f"{app}-preview", namespace=namespace)
            )
    return deployments, services, connections


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    deployments: list[Deployment] = []
    services: list[Service] = []
    connections: dict[tuple[str, str, str], Connections] = {}
    for app in draw(st.sampled_from([APPS[:1], APPS])):
        d, s, c = draw(app_colors(app))
        deployments += d
        services += s
        connections.update(c)
    return snapshot(deployments, services, connections)
