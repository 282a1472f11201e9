"""The policy's domain types: typed and frozen, built only by parsing (`parsing.py`) and read by
the planner. What each knob means is here; how each is read and shown is in `knobs.py`."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from rainbowd.core.durations import format_duration
from rainbowd.core.policy.presets import DEFAULT, series_expr
from rainbowd.core.policy.selectors import Selector

DEPLOYMENT = "Deployment"
ROLLOUT = "Rollout"
WORKLOAD_KINDS = (DEPLOYMENT, ROLLOUT)
"""What a rule can take (`kinds`): the values of the model's WorkloadKind."""
DEFAULT_KINDS = frozenset({DEPLOYMENT})
"""A rule takes Argo Rollouts only when it says so: an existing rule never starts driving
their timers because rainbowd learnt to."""

API_VERSION = "rainbowd.io/v1alpha1"
KIND = "DrainPolicy"


class CleanupAction(enum.StrEnum):
    SCALE = "scale"
    DELETE = "delete"
    SCALE_THEN_DELETE = "scale-then-delete"


@dataclass(frozen=True, slots=True)
class Budget:
    """At most `count` forced scale-downs of colors still holding connections in any window of
    `per`: a bound on reconnection storms, whatever the cycle interval."""

    count: int = 1
    per: timedelta = timedelta(minutes=10)

    def __str__(self) -> str:
        return f"{self.count} per {format_duration(self.per)}"


@dataclass(frozen=True, slots=True)
class Consolidate:
    """Give back a draining color's idle pods: once retired for `after` and still above the
    floor, every `every` the color is scaled down by its pods holding no connections, never
    below `keep_pods` nor below the pods that hold connections (docs/design.md)."""

    after: timedelta = timedelta(minutes=30)
    """Retired this long before the first step: most sessions of a fresh color end early."""
    every: timedelta = timedelta(minutes=5)
    """At most one step this often, counted from the rainbowd.io/consolidated-at stamp."""
    keep_pods: int = 1
    """Never fewer pods than this: room for the clients still there to reconnect to."""

    def __str__(self) -> str:
        return (
            f"after {format_duration(self.after)}, every {format_duration(self.every)}, "
            f"keepPods {self.keep_pods}"
        )


@dataclass(frozen=True, slots=True)
class StepDown:
    """Beyond the idle pods: remove the least-connected pods, at most `max_pods` every `every`;
    each step disconnects users, so it spends the disruption budget (maxDisruptions)."""

    every: timedelta = timedelta(hours=1)
    """At most one step-down this often, counted from the rainbowd.io/stepped-down-at stamp."""
    max_pods: int = 1
    """Pods holding connections removed per step, least-connected first."""

    def __str__(self) -> str:
        return f"every {format_duration(self.every)}, maxPods {self.max_pods}"


@dataclass(frozen=True, slots=True)
class Knobs:
    """The burn-down knobs, as in `defaults:` or overridden by a rule."""

    min_retired_age: timedelta = timedelta(minutes=30)
    """No action on a color retired for less than this (forced rules excepted)."""
    connection_floor: int = 0
    """At or below this many connections a color counts as drained."""
    drain_hold: timedelta = timedelta(minutes=5)
    """Connections must stay at or below the floor this long: one low sample is not a drain."""
    max_colors: int | None = 4
    """Colors with replicas > 0 per app (live + pending + retired); None: no cap."""
    max_retired_age: timedelta | None = timedelta(hours=72)
    """Force the scale-down after this long retired, connections or not; None: never."""
    action: CleanupAction = CleanupAction.SCALE_THEN_DELETE
    """What to do with a drained color."""
    keep_scaled_down: int = 2
    """Newest scaled-down colors kept (never deleted) for a fast rollback."""
    max_disruptions: Budget = Budget()
    """Forced scale-downs of colors still holding connections, per app, per time window."""
    abandoned_after: timedelta | None = None
    """A pending color never promoted counts as retired after this long; None: never."""
    scale_up_grace: timedelta = timedelta(minutes=30)
    """After a user scales a color rainbowd scaled down back up (a rollback's first step), no
    rule scales or deletes it for this long: the Service switch usually follows within minutes."""
    consolidate: Consolidate | None = None
    """Give back a draining color's idle pods; None: never (the color keeps every pod until
    it drains)."""
    step_down: StepDown | None = None
    """Remove pods holding connections too, least-connected first (needs consolidate); None:
    only idle pods are given back."""
    deadline_ahead: timedelta = timedelta(minutes=10)
    """An Argo Rollout's retired color still held (connections, protect, a hold) has its
    scale-down-deadline kept at least half this far ahead of now, moved to this far ahead
    (never past maxRetiredAge). Long enough to outlast a missed cycle or two, short enough
    that with rainbowd stopped Argo Rollouts' own timer takes over within it."""


@dataclass(frozen=True, slots=True)
class ConnectionsQuery:
    """How to ask Prometheus for every color's connections in one query."""

    # Where the connections come from (`presets.PRESETS`): the default reads `metric`; the others
    # read what a mesh or a load balancer exports, `metric` unused.
    preset: str = DEFAULT
    metric: str | None = "rainbow_open_connections"
    matchers: str = ""
    namespace_label: str = "namespace"
    app_label: str = "app"
    color_label: str = "color"
    # The label telling the pods of a color apart, for the coverage check: one pod may export
    # several series (scraped by two jobs, or split by protocol), so pods are counted, not
    # series. Series without it fall back to `instance`.
    pod_label: str = "pod"
    # The escape hatch: free PromQL returning one series per (namespace, app, color), summed
    # by rainbowd if several share the labels. The coverage check cannot be made then.
    query: str | None = None
    # Read the series the recording rules record (`rainbowd recording-rules` prints them for
    # this query) instead of asking Prometheus to aggregate the raw series every cycle; the
    # rules are evaluated every `rule_interval`, and a recorded figure older than two of those
    # is unknown.
    recorded: bool = False
    rule_interval: timedelta = timedelta(seconds=15)
    # The namespaces this rainbowd manages (`--namespaces`, a shard's share of the cluster):
    # the query asks only for their series, so each shard costs Prometheus its share. Empty:
    # every namespace. Not a policy key: `narrowed` sets it from the daemon's settings.
    namespaces: tuple[str, ...] = ()

    @property
    def per_pod_problem(self) -> str | None:
        """Why per-pod connections (what consolidation needs) cannot be asked for, or None."""
        if self.query is not None:
            return (
                "the connections are a free query, so the per-pod series cannot be asked for "
                "(use metric and matchers, with the pod label on the series)"
            )
        return None

    @property
    def namespaces_regex(self) -> str:
        """The namespaces managed as one regex (`a|b`), what every selection of the series is
        narrowed by (`presets.series_expr`, the recorded reads); empty: not narrowed.
        Namespace names are DNS labels: nothing in them needs escaping."""
        return "|".join(sorted(self.namespaces))

    @property
    def series_matchers(self) -> str:
        """The label matchers of a selection of the recorded series, which keep the namespace,
        app and color labels: the policy's `matchers` and the namespaces managed."""
        narrowing = f'{self.namespace_label}=~"{self.namespaces_regex}"' if self.namespaces else ""
        return ", ".join(m for m in (self.matchers, narrowing) if m)

    @property
    def selector(self) -> str:
        """The connections per pod (`presets.series_expr`), e.g.
        `rainbow_open_connections{job="chat"}` for the default preset.

        The daemon wraps it into one query answering the sum per color and the number of
        pods reporting it (the coverage check), so each distinct query costs one request.
        """
        return series_expr(self)


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    url: str = "http://localhost:9090"
    timeout: timedelta = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    knobs: Knobs
    connections: ConnectionsQuery
    namespaces: frozenset[str] | None = None  # None: every namespace
    selector: Selector = Selector()  # noqa: RUF009 - frozen, so one shared default is safe
    kinds: frozenset[str] = DEFAULT_KINDS
    """What the rule takes: Deployments unless it names Argo Rollouts too (`kinds`)."""

    def matches(self, namespace: str, labels: Mapping[str, str], kind: str = DEPLOYMENT) -> bool:
        if kind not in self.kinds:
            return False
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        return self.selector.matches(labels)


@dataclass(frozen=True, slots=True)
class Policy:
    rules: tuple[Rule, ...]
    defaults: Knobs = Knobs()
    connections: ConnectionsQuery = ConnectionsQuery()
    prometheus: PrometheusSettings = PrometheusSettings()
    dry_run: bool = False
    paused: bool = False
    app_label: str = "app"
    """Pod-template label holding the app name."""
    color_label: str = "color"
    """Pod-template label holding the color."""
    max_disruptions: Budget | None = None
    """Forced scale-downs of colors still holding connections, all apps together; None: only
    the per-app budgets bound them."""

    def rule_for(
        self, namespace: str, labels: Mapping[str, str], kind: str = DEPLOYMENT
    ) -> Rule | None:
        """First matching rule wins; None means the workload is never touched."""
        for rule in self.rules:
            if rule.matches(namespace, labels, kind):
                return rule
        return None

    def narrowed(self, namespaces: Iterable[str]) -> Policy:
        """The policy as a rainbowd managing only `namespaces` applies it (empty: every
        namespace, the policy as it is): each connections query asks Prometheus for those
        namespaces' series only. A free query (`query`) is sent as written: rainbowd cannot
        narrow PromQL it did not write (`narrowing_warnings` says so)."""
        names = tuple(sorted(set(namespaces)))
        if not names:
            return self

        def narrow(query: ConnectionsQuery) -> ConnectionsQuery:
            return query if query.query is not None else replace(query, namespaces=names)

        rules = tuple(replace(rule, connections=narrow(rule.connections)) for rule in self.rules)
        return replace(self, connections=narrow(self.connections), rules=rules)

    @property
    def queries(self) -> tuple[ConnectionsQuery, ...]:
        """The distinct connections queries: one Prometheus query each per cycle."""
        seen: dict[ConnectionsQuery, None] = {}
        for rule in self.rules:
            seen.setdefault(rule.connections, None)
        return tuple(seen)


class PolicyError(ValueError):
    """A policy document is invalid. `errors` holds every problem, each prefixed by its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors
