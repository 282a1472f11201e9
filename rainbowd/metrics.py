"""rainbowd's own Prometheus metrics, on a registry of their own (not the process-global one).

Per-color and per-app series come from a Collector that rebuilds them from the latest plan on each
scrape, so a deleted color's series vanish with it; counters and gauges about the daemon itself
are ordinary prometheus_client metrics updated by the loop.
"""

from __future__ import annotations

import enum
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rainbowd.core.forecast import ColorForecast, ColorKey
from rainbowd.core.model import Action, ColorPlan, Plan, PrometheusErrorCause
from rainbowd.core.notes import AboveFloor, Drained, DrainHold, Note


class ActionOutcome(Protocol):
    """What `record_actions` reads of an applied action (the executor's ActionResult)."""

    @property
    def action(self) -> Action: ...

    @property
    def outcome(self) -> enum.Enum: ...


# Reconcile durations: a cycle is a Prometheus query plus plan() (milliseconds) plus, when acting,
# a few API writes; the top buckets catch a Prometheus at its timeout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_COLOR_LABELS = ("namespace", "app", "color")


# A source of informer counters: resource name -> counter name -> value, read on each scrape.
InformerCounters = Callable[[], Mapping[str, Mapping[str, int]]]


class PlanCollector(Collector):
    """Per-color and per-app series from the latest plan, rebuilt on every scrape."""

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.forecasts: Mapping[ColorKey, ColorForecast] = {}

    def collect(self) -> Iterator[Metric]:
        plan = self.plan
        yield from self._forecasts(self.forecasts)
        connections = GaugeMetricFamily(
            "rainbowd_color_connections",
            "Connections Prometheus reports for the color; absent while unknown.",
            labels=_COLOR_LABELS,
        )
        state = GaugeMetricFamily(
            "rainbowd_color_state",
            "1 for the color's current state; other states have no series.",
            labels=(*_COLOR_LABELS, "state"),
        )
        retired = GaugeMetricFamily(
            "rainbowd_color_retired_seconds",
            "Seconds since the color was retired (at the last cycle); absent unless retired.",
            labels=_COLOR_LABELS,
        )
        floor = GaugeMetricFamily(
            "rainbowd_color_connection_floor",
            "The connection floor of the color's rule (at or below it the color drains); only for "
            "retired colors whose connections were weighed against it at the last cycle.",
            labels=_COLOR_LABELS,
        )
        replicas = GaugeMetricFamily(
            "rainbowd_color_replicas",
            "The color's desired replicas (spec.replicas) at the last cycle.",
            labels=_COLOR_LABELS,
        )
        kind = GaugeMetricFamily(
            "rainbowd_color_info",
            "1 per color: its kind (Deployment, or Rollout for an Argo Rollout's ReplicaSet) and "
            "the name of its object.",
            labels=(*_COLOR_LABELS, "kind", "name"),
        )
        colors = GaugeMetricFamily(
            "rainbowd_colors",
            "Colors of the app per state at the last cycle.",
            labels=("namespace", "app", "state"),
        )
        blocked = GaugeMetricFamily(
            "rainbowd_app_blocked",
            "1 when the planner does nothing for the app, with the reason.",
            labels=("namespace", "app", "reason"),
        )
        if plan is not None:
            for app in plan.apps:
                if app.blocked is not None:
                    blocked.add_metric([app.namespace, app.app, app.blocked.value], 1.0)
                per_state: Tally[str] = Tally()
                for color in app.colors:
                    labels = [color.namespace, color.app, color.color]
                    per_state[color.state.value] += 1
                    state.add_metric([*labels, color.state.value], 1.0)
                    kind.add_metric([*labels, color.kind.value, color.name], 1.0)
                    replicas.add_metric(labels, float(color.replicas))
                    if color.connections.value is not None:
                        connections.add_metric(labels, color.connections.value)
                    weighed = _floor(color)
                    if weighed is not None:
                        floor.add_metric(labels, float(weighed))
                    age = color.retired_for(plan.now)
                    if age is not None:
                        retired.add_metric(labels, max(age.total_seconds(), 0.0))
                for name, count in sorted(per_state.items()):
                    colors.add_metric([app.namespace, app.app, name], float(count))
        yield from (connections, state, kind, retired, floor, replicas, colors, blocked)

    @staticmethod
    def _forecasts(forecasts: Mapping[ColorKey, ColorForecast]) -> Iterator[Metric]:
        eta = GaugeMetricFamily(
            "rainbowd_color_drain_eta_seconds",
            "Seconds until the draining color is expected at its connection floor, from its "
            "recent samples; absent without an estimate.",
            labels=_COLOR_LABELS,
        )
        deadline = GaugeMetricFamily(
            "rainbowd_color_retired_deadline_timestamp_seconds",
            "Unix time at which maxRetiredAge forces the draining color down, connections or "
            "not; absent when the rule has no maxRetiredAge.",
            labels=_COLOR_LABELS,
        )
        for key, found in sorted(forecasts.items()):
            seconds = found.forecast.seconds
            if seconds is not None:
                eta.add_metric(list(key), seconds)
            if found.deadline is not None:
                deadline.add_metric(list(key), found.deadline)
        yield from (eta, deadline)


def _floor(color: ColorPlan) -> int | None:
    """The floor the planner weighed the color's connections against, from its note (None when
    it weighed none, or when the note is words read back from a /status document)."""
    found = color.note.found if isinstance(color.note, Note) else None
    return found.floor if isinstance(found, AboveFloor | DrainHold | Drained) else None


class InformerCollector(Collector):
    """Watch and relist counters of the informers, read from them at scrape time."""

    def __init__(self) -> None:
        self.source: InformerCounters | None = None

    def collect(self) -> Iterator[Metric]:
        source = self.source
        counters = source() if source is not None else {}
        names = sorted({name for values in counters.values() for name in values})
        for name in names:
            family = CounterMetricFamily(
                f"rainbowd_informer_{name}",
                f"Informer counter {name}, per watched resource.",
                labels=("resource",),
            )
            for resource, values in sorted(counters.items()):
                if name in values:
                    family.add_metric([resource], float(values[name]))
            yield family


class Metrics:
    """Every metric rainbowd exports, registered on `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.actions = Counter(
            "rainbowd_actions",
            "Actions attempted, by kind, reason and outcome (ok/gone/conflict/error/skipped).",
            ("action", "reason", "outcome"),
            registry=r,
        )
        self.pods_freed = Counter(
            "rainbowd_pods_freed",
            "Pods given back by consolidation steps that succeeded, per app (the idle pods of "
            "draining colors, and with stepDown their least-connected ones).",
            ("namespace", "app"),
            registry=r,
        )
        self.cycles = Counter(
            "rainbowd_reconciles",
            "Reconcile cycles, by result (ok or error).",
            ("result",),
            registry=r,
        )
        self.reconcile_duration = Histogram(
            "rainbowd_reconcile_duration_seconds",
            "Wall-clock duration of a reconcile cycle: query, plan and apply.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "rainbowd_last_successful_reconcile_timestamp_seconds",
            "Unix time at which the last cycle finished without error.",
            registry=r,
        )
        self.prometheus_errors = Counter(
            "rainbowd_prometheus_errors",
            "Failed connections queries, by cause class.",
            ("cause",),
            registry=r,
        )
        self.side_failures = Counter(
            "rainbowd_side_failures",
            "Failures of a side feature of the cycle (forecast, history, status, metrics, page, "
            "events), by component; none of them changes a decision.",
            ("component",),
            registry=r,
        )
        self.policy_valid = Gauge(
            "rainbowd_policy_valid",
            "1 when the latest policy source parsed; 0 while the last good policy is kept.",
            registry=r,
        )
        self.policy_reloads = Counter(
            "rainbowd_policy_reloads",
            "Policy documents read, by result (applied, invalid, unchanged).",
            ("result",),
            registry=r,
        )
        self.leader = Gauge(
            "rainbowd_leader",
            "1 while this process holds the lease (or runs without leader election).",
            registry=r,
        )
        self.cache_synced = Gauge(
            "rainbowd_cache_synced",
            "1 once the Deployment and Service caches hold a complete list.",
            registry=r,
        )
        self.plan_collector = PlanCollector()
        self.informer_collector = InformerCollector()
        r.register(self.plan_collector)
        r.register(self.informer_collector)
        for cause in PrometheusErrorCause:
            self.prometheus_errors.labels(cause=cause.value)
        for result in ("ok", "error"):
            self.cycles.labels(result=result)

    def observe_plan(
        self, plan: Plan, forecasts: Mapping[ColorKey, ColorForecast] | None = None
    ) -> None:
        self.plan_collector.plan = plan
        self.plan_collector.forecasts = forecasts or {}

    def watch_informers(self, source: InformerCounters) -> None:
        self.informer_collector.source = source

    def record_actions(self, results: Iterable[ActionOutcome]) -> None:
        for result in results:
            self.actions.labels(
                action=result.action.kind.value,
                reason=result.action.reason.value,
                outcome=result.outcome.value,
            ).inc()
            step = result.action.step
            if step is not None and result.outcome.value == "ok":
                self.pods_freed.labels(
                    namespace=result.action.namespace, app=result.action.app
                ).inc(len(step.removed))

    def record_prometheus_errors(self, causes: Sequence[PrometheusErrorCause]) -> None:
        for cause in causes:
            self.prometheus_errors.labels(cause=cause.value).inc()
