"""The /status document: its schema as typed records, its one writer and its one reader.

The daemon fills a `Status` and serves `status_to_document(status)`; `rainbowd status`, the
sandbox's story and anything else reading /status go through `status_from_document`. Keys are
camelCase throughout, as in the plan and policy documents it embeds. The README documents it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rainbowd.core.forecast import ColorForecast, ColorKey, Forecast, Method, NoEstimate
from rainbowd.core.instants import Beyond, earlier
from rainbowd.core.model import (
    Action,
    ActionKind,
    AppPlan,
    BlockReason,
    ColorPlan,
    Connections,
    Plan,
    PrometheusErrorCause,
    Reason,
    State,
    WorkloadKind,
)
from rainbowd.core.objects import parse_time
from rainbowd.core.reporting import plan_to_document


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """The policy in force and what the latest read of its source said."""

    source: str
    """Where the policy comes from: `configmap:NAMESPACE/NAME` or `file:PATH`."""
    valid: bool
    """False while the latest read was invalid (the last good policy, if any, stays in force)."""
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    loaded_at: datetime | None = None
    """When the policy in force was applied."""
    policy: Mapping[str, Any] | None = None
    """The effective policy document (`rainbowd check-policy -o json`); None: none in force."""


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """The list-then-watch caches of Deployments and Services."""

    synced: bool
    deployments: int = 0
    services: int = 0
    relists: int = 0
    watch_events: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotSummary:
    """How much the last cycle saw."""

    now: datetime
    namespaces: int
    deployments: int
    services: int
    connections_known: int
    """Colors with a usable connections figure."""
    connections_unknown: int


@dataclass(frozen=True, slots=True)
class PrometheusFailure:
    """One connections query that failed in the last cycle."""

    query: str
    """The PromQL sent."""
    cause: PrometheusErrorCause
    """The failure's class, as in the `cause` label of rainbowd_prometheus_errors_total."""
    message: str
    """For people; its wording may change."""


@dataclass(frozen=True, slots=True)
class CycleStatus:
    """The last cycle: when, how long, whether it worked, what it did."""

    number: int
    started_at: datetime
    duration: float
    """Seconds."""
    ok: bool
    error: str | None = None
    leader: bool = False
    acted: bool = False
    """Some action was attempted for real (not skipped by dry run, pause or stop)."""
    actions: Mapping[str, int] = field(default_factory=dict)
    """Actions by outcome: ok, gone, conflict, error, skipped."""
    prometheus_errors: tuple[PrometheusFailure, ...] = ()


@dataclass(frozen=True, slots=True)
class HistoryStatus:
    """The in-memory connection history behind the drain forecasts."""

    window_seconds: float
    colors: int
    points: int


@dataclass(frozen=True, slots=True)
class SideFailureStatus:
    """A side feature of the cycle failing: its latest cause, since when, how many times."""

    cause: str
    since: datetime
    count: int


Sparkline = Sequence[Sequence[float]]
"""A color's recent `[unix time, connections]` points, oldest first."""


@dataclass(frozen=True, slots=True)
class Status:
    """Everything /status reports."""

    identity: str
    leader: bool
    ready: bool
    policy: PolicyStatus
    cache: CacheStatus
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The effective settings of `rainbowd run`, camelCase keys."""
    dry_run_overlay: int = 0
    """Deployments with would-be annotations held in memory (dry run)."""
    cycle: CycleStatus | None = None
    snapshot: SnapshotSummary | None = None
    plan: Plan | None = None
    """The last plan; the reader rebuilds as much as the plan table shows."""
    history: HistoryStatus | None = None
    forecasts: Mapping[ColorKey, ColorForecast] = field(default_factory=dict)
    """Each draining color's forecast, written into its plan entry as `forecast`."""
    sparklines: Mapping[ColorKey, Sparkline] = field(default_factory=dict)
    """Each color's recent connections, written into its plan entry as `history`."""
    recent_actions: tuple[Mapping[str, Any], ...] = ()
    """The latest actions attempted, newest last, as rainbowd.timeline records them."""
    side_failures: Mapping[str, SideFailureStatus] = field(default_factory=dict)
    """The side features of the cycle failing, by component (none changes a decision)."""


# --- the writer ---------------------------------------------------------------------------------


def status_to_document(status: Status) -> dict[str, Any]:
    """The JSON document served on /status."""
    cycle = status.cycle
    snapshot = status.snapshot
    policy = status.policy
    return {
        "identity": status.identity,
        "leader": status.leader,
        "ready": status.ready,
        "settings": {camel_case(k): v for k, v in status.settings.items()},
        "dryRunOverlay": status.dry_run_overlay,
        "policy": {
            "source": policy.source,
            "valid": policy.valid,
            "errors": list(policy.errors),
            "warnings": list(policy.warnings),
            "loadedAt": _time(policy.loaded_at),
            "policy": None if policy.policy is None else dict(policy.policy),
        },
        "cache": {
            "synced": status.cache.synced,
            "deployments": status.cache.deployments,
            "services": status.cache.services,
            "relists": status.cache.relists,
            "watchEvents": status.cache.watch_events,
        },
        "cycle": None
        if cycle is None
        else {
            "number": cycle.number,
            "startedAt": _time(cycle.started_at),
            "durationSeconds": round(cycle.duration, 6),
            "ok": cycle.ok,
            "error": cycle.error,
            "leader": cycle.leader,
            "acted": cycle.acted,
            "actions": dict(cycle.actions),
            "prometheusErrors": [
                {"query": f.query, "cause": f.cause.value, "message": f.message}
                for f in cycle.prometheus_errors
            ],
        },
        "snapshot": None
        if snapshot is None
        else {
            "now": _time(snapshot.now),
            "namespaces": snapshot.namespaces,
            "deployments": snapshot.deployments,
            "services": snapshot.services,
            "connectionsKnown": snapshot.connections_known,
            "connectionsUnknown": snapshot.connections_unknown,
        },
        "history": None
        if status.history is None
        else {
            "windowSeconds": status.history.window_seconds,
            "colors": status.history.colors,
            "points": status.history.points,
        },
        "plan": None
        if status.plan is None
        else plan_to_document(status.plan, forecasts=status.forecasts, history=status.sparklines),
        "recentActions": [dict(entry) for entry in status.recent_actions],
        "sideFailures": {
            component: {"cause": f.cause, "since": _time(f.since), "count": f.count}
            for component, f in sorted(status.side_failures.items())
        },
    }


def camel_case(key: str) -> str:
    """`leader_elect` -> `leaderElect`."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), key)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# --- the reader ---------------------------------------------------------------------------------


def status_from_document(doc: Mapping[str, Any]) -> Status:
    """A /status document back into a Status. Sections a daemon has not filled yet (no cycle,
    no plan) read as None; a malformed value raises KeyError, TypeError or ValueError."""
    policy = doc.get("policy") or {}
    cache = doc.get("cache") or {}
    cycle = doc.get("cycle")
    snapshot = doc.get("snapshot")
    plan = doc.get("plan")
    history = doc.get("history")
    return Status(
        identity=str(doc.get("identity") or ""),
        leader=bool(doc.get("leader")),
        ready=bool(doc.get("ready")),
        settings=dict(doc.get("settings") or {}),
        dry_run_overlay=int(doc.get("dryRunOverlay") or 0),
        policy=PolicyStatus(
            source=str(policy.get("source") or ""),
            valid=bool(policy.get("valid")),
            errors=tuple(str(e) for e in policy.get("errors") or ()),
            warnings=tuple(str(w) for w in policy.get("warnings") or ()),
            loaded_at=_parse_time(policy.get("loadedAt")),
            policy=policy.get("policy"),
        ),
        cache=CacheStatus(
            synced=bool(cache.get("synced")),
            deployments=int(cache.get("deployments") or 0),
            services=int(cache.get("services") or 0),
            relists=int(cache.get("relists") or 0),
            watch_events=int(cache.get("watchEvents") or 0),
        ),
        cycle=None if not cycle else _cycle_from_document(cycle),
        snapshot=None
        if not snapshot
        else SnapshotSummary(
            now=parse_time(snapshot["now"]),
            namespaces=int(snapshot["namespaces"]),
            deployments=int(snapshot["deployments"]),
            services=int(snapshot["services"]),
            connections_known=int(snapshot["connectionsKnown"]),
            connections_unknown=int(snapshot["connectionsUnknown"]),
        ),
        plan=None if plan is None else plan_from_document(plan),
        history=None
        if not history
        else HistoryStatus(
            window_seconds=float(history["windowSeconds"]),
            colors=int(history["colors"]),
            points=int(history["points"]),
        ),
        forecasts={} if plan is None else forecasts_from_document(plan),
        sparklines={} if plan is None else sparklines_from_document(plan),
        recent_actions=tuple(dict(entry) for entry in doc.get("recentActions") or ()),
        side_failures={
            component: SideFailureStatus(
                cause=f["cause"], since=parse_time(f["since"]), count=f["count"]
            )
            for component, f in (doc.get("sideFailures") or {}).items()
        },
    )


def _cycle_from_document(doc: Mapping[str, Any]) -> CycleStatus:
    return CycleStatus(
        number=int(doc["number"]),
        started_at=parse_time(doc["startedAt"]),
        duration=float(doc.get("durationSeconds") or 0.0),
        ok=bool(doc.get("ok")),
        error=doc.get("error"),
        leader=bool(doc.get("leader")),
        acted=bool(doc.get("acted")),
        actions={str(k): int(v) for k, v in (doc.get("actions") or {}).items()},
        prometheus_errors=tuple(
            PrometheusFailure(
                query=f["query"], cause=PrometheusErrorCause(f["cause"]), message=f["message"]
            )
            for f in doc.get("prometheusErrors") or ()
        ),
    )


def _parse_time(value: Any) -> datetime | None:
    return None if value is None else parse_time(value)


def plan_from_document(doc: Mapping[str, Any]) -> Plan:
    """The inverse of reporting.plan_to_document, as far as the plan table needs it."""
    now = parse_time(doc["now"])
    apps = []
    for app in doc.get("apps") or []:
        namespace, app_name = app["namespace"], app["app"]
        colors = []
        for c in app.get("colors") or []:
            retired_for = c.get("retiredFor")
            # The document's times are whole seconds; retiredFor is exact, so keep the age.
            retired_at = (
                None
                if retired_for is None
                else earlier(now, float(retired_for), beyond=Beyond.LONG_AGO)
            )
            actions = tuple(
                Action(
                    kind=ActionKind(a["kind"]),
                    namespace=namespace,
                    name=c["deployment"],
                    app=app_name,
                    color=c["color"],
                    uid=a.get("uid") or "",
                    resource_version=a.get("resourceVersion") or "",
                    reason=Reason(a["reason"]),
                    message=a.get("message") or "",
                    annotations=a.get("annotations") or {},
                    connections=a.get("connections"),
                )
                for a in c.get("actions") or []
            )
            colors.append(
                ColorPlan(
                    namespace=namespace,
                    app=app_name,
                    color=c["color"],
                    name=c["deployment"],
                    state=State(c["state"]),
                    rule=c.get("rule"),
                    replicas=int(c["replicas"]),
                    ready_replicas=int(c.get("readyReplicas") or 0),
                    connections=_connections(c.get("connections") or {}),
                    created_at=parse_time(c["createdAt"]),
                    retired_at=retired_at,
                    drained_since=None
                    if c.get("drainedSince") is None
                    else parse_time(c["drainedSince"]),
                    note=c.get("note") or "",
                    actions=actions,
                    held=None if c.get("held") is None else Reason(c["held"]),
                    kind=WorkloadKind(c.get("kind") or WorkloadKind.DEPLOYMENT),
                )
            )
        apps.append(
            AppPlan(
                namespace=namespace,
                app=app_name,
                rule=app.get("rule"),
                blocked=None if app.get("blocked") is None else BlockReason(app["blocked"]),
                message=app.get("message") or "",
                colors=tuple(colors),
            )
        )
    return Plan(
        now=now,
        apps=tuple(apps),
        dry_run=bool(doc.get("dryRun")),
        paused=bool(doc.get("paused")),
        warnings=tuple(doc.get("warnings") or ()),
    )


def forecasts_from_document(doc: Mapping[str, Any]) -> dict[ColorKey, ColorForecast]:
    """Each color's `forecast` of a plan document, as far as the table's ETA column needs it."""
    now = parse_time(doc["now"]).timestamp()
    out: dict[ColorKey, ColorForecast] = {}
    for app in doc.get("apps") or []:
        for c in app.get("colors") or []:
            f = c.get("forecast")
            if not f:
                continue
            seconds = f.get("etaSeconds")
            deadline = f.get("deadlineAt")
            out[(app["namespace"], app["app"], c["color"])] = ColorForecast(
                forecast=Forecast(
                    now=now,
                    points=int(f.get("points") or 0),
                    eta=None if seconds is None else now + float(seconds),
                    method=None if f.get("method") is None else Method(f["method"]),
                    reason=None if f.get("reason") is None else NoEstimate(f["reason"]),
                ),
                floor=int(f.get("floor") or 0),
                deadline=None if deadline is None else parse_time(deadline).timestamp(),
            )
    return out


def sparklines_from_document(doc: Mapping[str, Any]) -> dict[ColorKey, Sparkline]:
    """Each color's `history` points of a plan document."""
    out: dict[ColorKey, Sparkline] = {}
    for app in doc.get("apps") or []:
        for c in app.get("colors") or []:
            points = c.get("history")
            if points is not None:
                key = (app["namespace"], app["app"], c["color"])
                out[key] = tuple((float(t), float(v)) for t, v in points)
    return out


def _connections(doc: Mapping[str, Any]) -> Connections:
    return Connections(
        value=doc.get("value"), series=doc.get("series"), cause=doc.get("cause") or ""
    )


def find_color(status: Status, color: str) -> ColorPlan | None:
    """The color in the status' last plan (the first app that has it); None when not there."""
    if status.plan is None:
        return None
    for app in status.plan.apps:
        for c in app.colors:
            if c.color == color:
                return c
    return None
