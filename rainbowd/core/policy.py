"""The burn-down policy: typed, frozen, validated.

`parse_policy` turns the decoded `policy.yaml` document into a `Policy`, or raises `PolicyError`
listing every problem of the document at once, each prefixed with its path.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta


class CleanupAction(enum.StrEnum):
    SCALE = "scale"
    DELETE = "delete"
    SCALE_THEN_DELETE = "scale-then-delete"


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
    max_disruptions_per_cycle: int = 1
    """Forced scale-downs of colors still holding connections, per app per cycle."""
    abandoned_after: timedelta | None = None
    """A pending color never promoted counts as retired after this long; None: never."""


class Operator(enum.StrEnum):
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator is Operator.EXISTS:
            return self.key in labels
        if self.operator is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        if self.operator is Operator.IN:
            return labels.get(self.key) in self.values
        # notin, as in Kubernetes: a missing key matches.
        value = labels.get(self.key)
        return value is None or value not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    """A Kubernetes label selector (`app=chat,tier in (a,b),!legacy`); empty matches all."""

    requirements: tuple[Requirement, ...] = ()
    text: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


@dataclass(frozen=True, slots=True)
class ConnectionsQuery:
    """How to ask Prometheus for every color's connections in one query."""

    metric: str | None = "rainbow_open_connections"
    matchers: str = ""
    namespace_label: str = "namespace"
    app_label: str = "app"
    color_label: str = "color"
    # The escape hatch: free PromQL returning one series per (namespace, app, color), summed
    # by rainbowd if several share the labels. The coverage check cannot be made then.
    query: str | None = None

    @property
    def selector(self) -> str:
        """The series selector, e.g. `rainbow_open_connections{job="chat"}`.

        One query of the raw per-pod series gives both the sum per color and the number of
        series reporting it (the coverage check), so each distinct query costs one request.
        """
        return f"{self.metric}{{{self.matchers}}}"


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
    selector: Selector = Selector()

    def matches(self, namespace: str, labels: Mapping[str, str]) -> bool:
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

    def rule_for(self, namespace: str, labels: Mapping[str, str]) -> Rule | None:
        """First matching rule wins; None means the Deployment is never touched."""
        for rule in self.rules:
            if rule.matches(namespace, labels):
                return rule
        return None

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


def parse_policy(document: object) -> Policy:
    """Validate a decoded policy.yaml document; raise PolicyError with every error found."""
    raise NotImplementedError
