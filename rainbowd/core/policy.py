"""The burn-down policy: typed, frozen, validated.

`parse_policy` turns the decoded `policy.yaml` document into a `Policy`, or raises `PolicyError`
listing every problem of the document at once, each prefixed with its path; `policy_to_document`
renders the effective policy back, per rule, for people and for /status.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from rainbowd.core.durations import DurationError, format_duration, parse_duration

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
    # The label telling the pods of a color apart, for the coverage check: one pod may export
    # several series (scraped by two jobs, or split by protocol), so pods are counted, not
    # series. Series without it fall back to `instance`.
    pod_label: str = "pod"
    # The escape hatch: free PromQL returning one series per (namespace, app, color), summed
    # by rainbowd if several share the labels. The coverage check cannot be made then.
    query: str | None = None

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
    def selector(self) -> str:
        """The series selector, e.g. `rainbow_open_connections{job="chat"}`.

        The daemon wraps it into one query answering the sum per color and the number of
        pods reporting it (the coverage check), so each distinct query costs one request.
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
    max_disruptions: Budget | None = None
    """Forced scale-downs of colors still holding connections, all apps together; None: only
    the per-app budgets bound them."""

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


# --- values in messages ------------------------------------------------------------------------


def _show(value: object) -> str:
    """A decoded YAML value as the user wrote it, short enough for one error line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


class _Errors:
    """Collects every problem of a document: one bad field must not hide the next."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def __len__(self) -> int:
        return len(self.items)


def _key(path: str, key: object) -> str:
    name = key if isinstance(key, str) else _show(key)
    return f"{path}.{name}" if path else name


def _normalized(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _unknown_key(key: object, known: Sequence[str]) -> str:
    if isinstance(key, str):
        # snake_case or wrong case is the commonest slip: suggest the exact camelCase key.
        for candidate in known:
            if _normalized(candidate) == _normalized(key):
                return f'unknown key (did you mean "{candidate}"?)'
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            return f'unknown key (did you mean "{close[0]}"?)'
    return f"unknown key (expected one of: {', '.join(known)})"


def _mapping(value: object, path: str, errors: _Errors) -> Mapping[Any, object] | None:
    """A section's mapping; null counts as empty so a section of commented-out lines is valid."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping, got {_show(value)}")
        return None
    return value


def _check_keys(
    mapping: Mapping[Any, object],
    known: Sequence[str],
    path: str,
    errors: _Errors,
    *,
    hint: Callable[[str], str | None] | None = None,
) -> None:
    for key in mapping:
        if isinstance(key, str) and key in known:
            continue
        extra = hint(key) if hint is not None and isinstance(key, str) else None
        errors.add(_key(path, key), extra or _unknown_key(key, known))


# --- scalar fields -------------------------------------------------------------------------------


def _bool(value: object, path: str, errors: _Errors) -> bool | None:
    if not isinstance(value, bool):
        errors.add(path, f"expected true or false, got {_show(value)}")
        return None
    return value


def _non_negative_int(value: object, path: str, errors: _Errors) -> int | None:
    # bool is an int in Python; `connectionFloor: yes` must not mean 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors.add(path, f"expected a non-negative integer, got {_show(value)}")
        return None
    return value


def _max_colors(value: object, path: str, errors: _Errors) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(path, f"expected an integer >= 1, or null for no cap, got {_show(value)}")
        return None
    if value < 1:
        errors.add(path, f"must be >= 1, got {value}")
        return None
    return value


def _duration(value: object, path: str, errors: _Errors) -> timedelta | None:
    try:
        return parse_duration(value)
    except DurationError as exc:
        errors.add(path, str(exc))
        return None


def _budget(value: object, path: str, errors: _Errors) -> Budget | None:
    section = _mapping(value, path, errors)
    if section is None:
        return None
    before = len(errors)
    _check_keys(section, ("count", "per"), path, errors)
    for key in ("count", "per"):
        if key not in section:
            errors.add(_key(path, key), 'required, e.g. "maxDisruptions: {count: 1, per: 10m}"')
    count = (
        _non_negative_int(section["count"], _key(path, "count"), errors)
        if "count" in section
        else None
    )
    per = (
        _positive_duration(section["per"], _key(path, "per"), errors) if "per" in section else None
    )
    if len(errors) > before or count is None or per is None:
        return None
    return Budget(count=count, per=per)


def _positive_duration(value: object, path: str, errors: _Errors) -> timedelta | None:
    parsed = _duration(value, path, errors)
    if parsed is not None and parsed <= timedelta(0):
        errors.add(path, f"must be greater than 0, got {_show(value)}")
        return None
    return parsed


def _positive_int(value: object, path: str, errors: _Errors) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.add(path, f"expected an integer >= 1, got {_show(value)}")
        return None
    return value


def _section(
    value: object,
    path: str,
    errors: _Errors,
    fields: Sequence[tuple[str, str, Callable[[object, str, _Errors], object]]],
    example: str,
) -> dict[str, Any] | None:
    """A small mapping of optional fields (key, field name, parser): the fields it sets, or
    None with its errors added."""
    if not isinstance(value, Mapping):
        errors.add(
            path, f"expected a mapping like {example}, or null for never, got {_show(value)}"
        )
        return None
    before = len(errors)
    _check_keys(value, [key for key, _, _ in fields], path, errors)
    parsed: dict[str, Any] = {}
    for key, field, parse in fields:
        if key in value:
            parsed[field] = parse(value[key], _key(path, key), errors)
    return None if len(errors) > before else parsed


def _consolidate(value: object, path: str, errors: _Errors) -> Consolidate | None:
    fields = _section(
        value,
        path,
        errors,
        (
            ("after", "after", _duration),
            ("every", "every", _positive_duration),
            ("keepPods", "keep_pods", _positive_int),
        ),
        '"{after: 30m, every: 5m, keepPods: 1}"',
    )
    return None if fields is None else Consolidate(**fields)


def _step_down(value: object, path: str, errors: _Errors) -> StepDown | None:
    fields = _section(
        value,
        path,
        errors,
        (("every", "every", _positive_duration), ("maxPods", "max_pods", _positive_int)),
        '"{every: 1h, maxPods: 1}"',
    )
    return None if fields is None else StepDown(**fields)


def _action(value: object, path: str, errors: _Errors) -> CleanupAction | None:
    choices = [a.value for a in CleanupAction]
    if isinstance(value, str) and value in choices:
        return CleanupAction(value)
    message = f"expected one of {', '.join(choices)}, got {_show(value)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value.replace("_", "-").lower(), choices, n=1)
        if close:
            message += f' (did you mean "{close[0]}"?)'
    errors.add(path, message)
    return None


_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PROM_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PROM_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key (`app`, `example.com/tier`), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return (
            f"invalid label key {_show(key)}: the prefix before '/' must be a DNS subdomain "
            "(lowercase letters, digits, '-' and '.')"
        )
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            f"invalid label key {_show(key)}: at most 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value (empty is valid), or None."""
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return (
            f"invalid label value {_show(value)}: at most 63 letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    return None


def _label_key(value: object, path: str, errors: _Errors) -> str | None:
    if not isinstance(value, str):
        errors.add(path, f'expected a label key like "app", got {_show(value)}')
        return None
    problem = label_key_problem(value)
    if problem:
        errors.add(path, problem)
        return None
    return value


def _url(value: object, path: str, errors: _Errors) -> str | None:
    expected = 'expected an http:// or https:// URL like "http://prometheus:9090"'
    if not isinstance(value, str):
        errors.add(path, f"{expected}, got {_show(value)}")
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        errors.add(path, f"{expected}, got {_show(value)} ({exc})")
        return None
    has_space = any(c.isspace() for c in value)
    if parts.scheme not in ("http", "https") or not parts.hostname or has_space:
        errors.add(path, f"{expected}, got {_show(value)}")
        return None
    if parts.query or parts.fragment:
        errors.add(path, f"must not have a query or fragment, got {_show(value)}")
        return None
    return value


# --- label selectors -----------------------------------------------------------------------------


class SelectorError(ValueError):
    """A label selector that Kubernetes would not accept either."""


_SELECTOR_TOKEN = re.compile(r"\s*(!=|==|=|!|,|\(|\)|<|>|[^\s!=,()<>]+)")
_OPERATORS = ("=", "==", "!=", "in", "notin")


def _selector_tokens(text: str) -> list[str]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _SELECTOR_TOKEN.match(text, pos)
        if match is None:  # only trailing whitespace is left
            break
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def parse_selector(text: str) -> Selector:
    """Kubernetes label-selector syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
    `a`, `!a`, joined by commas. `!=` is notin with one value, so a missing key matches it."""
    tokens = _selector_tokens(text)
    if not tokens:
        return Selector((), text="")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str | None:
        nonlocal pos
        token = peek()
        pos += 1
        return token

    def key(token: str | None, after: str) -> str:
        if token is None or token in ("!=", "==", "=", "!", ",", "(", ")", "<", ">"):
            found = "the end" if token is None else f'"{token}"'
            raise SelectorError(f"expected a label key {after}, got {found}")
        problem = label_key_problem(token)
        if problem:
            raise SelectorError(problem)
        return token

    def value(token: str) -> str:
        problem = label_value_problem(token)
        if problem:
            raise SelectorError(problem)
        return token

    requirements = []
    while True:
        first = take()
        if first == "!":
            requirements.append(Requirement(key(take(), 'after "!"'), Operator.DOES_NOT_EXIST))
        else:
            name = key(first, "at the start" if pos == 1 else 'after ","')
            op = peek()
            if op is None or op == ",":
                requirements.append(Requirement(name, Operator.EXISTS))
            elif op in ("=", "==", "!="):
                take()
                # `a=` selects an empty value, as in Kubernetes.
                nxt = peek()
                val = "" if nxt is None or nxt == "," else value(take() or "")
                kind = Operator.NOT_IN if op == "!=" else Operator.IN
                requirements.append(Requirement(name, kind, frozenset((val,))))
            elif op in ("in", "notin"):
                take()
                if take() != "(":
                    raise SelectorError(f'expected "(" after "{name} {op}"')
                values: list[str] = []
                while True:
                    token = take()
                    if token is None:
                        raise SelectorError(f'missing ")" after "{name} {op} ("')
                    if token == ")" and not values:
                        raise SelectorError(f'"{name} {op} ()" needs at least one value')
                    if token in (",", ")", "(", "=", "==", "!=", "!", "<", ">"):
                        raise SelectorError(f'expected a value in "{name} {op} (...)"')
                    values.append(value(token))
                    closing = take()
                    if closing == ")":
                        break
                    if closing is None:
                        raise SelectorError(f'missing ")" after "{name} {op} ("')
                    if closing != ",":
                        raise SelectorError(f'expected "," or ")" in "{name} {op} (...)"')
                kind = Operator.IN if op == "in" else Operator.NOT_IN
                requirements.append(Requirement(name, kind, frozenset(values)))
            elif op in ("<", ">"):
                raise SelectorError(f'the "{op}" operator is not supported in rule selectors')
            else:
                raise SelectorError(
                    f'expected "=", "==", "!=", "in", "notin", "," or the end after "{name}", '
                    f'got "{op}"'
                )
        token = take()
        if token is None:
            break
        if token != ",":
            raise SelectorError(f'expected "," between requirements, got "{token}"')
    return Selector(tuple(requirements), text=text.strip())


# --- connections ---------------------------------------------------------------------------------


_MATCHER = re.compile(
    r"""\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*"""
)


def matchers_problem(text: str) -> str | None:
    """Why `text` is not a comma-separated list of PromQL label matchers, or None."""
    body = text.strip()
    if body.startswith("{"):
        return f"write the matchers without braces, e.g. 'job=\"chat\"', got {_show(text)}"
    pos = 0
    while pos < len(body):
        match = _MATCHER.match(body, pos)
        if match is None:
            return (
                'expected label matchers like \'job="chat", env!="dev"\', '
                f"got {_show(text)} (at {_show(body[pos:])})"
            )
        pos = match.end()
        if pos < len(body):
            if body[pos] != ",":
                return f'expected "," between label matchers, got {_show(text)}'
            pos += 1
    return None


_CONNECTIONS_KEYS = ("metric", "matchers", "labels", "query")
_LABELS_KEYS = ("namespace", "app", "color", "pod")


def _connections(value: object, path: str, errors: _Errors) -> ConnectionsQuery | None:
    section = _mapping(value, path, errors)
    if section is None:
        return None
    before = len(errors)
    _check_keys(section, _CONNECTIONS_KEYS, path, errors)
    base = ConnectionsQuery()
    fields: dict[str, Any] = {}
    if "metric" in section:
        metric = section["metric"]
        if not isinstance(metric, str) or not _PROM_METRIC.match(metric):
            errors.add(
                _key(path, "metric"),
                f'expected a Prometheus metric name like "rainbow_open_connections", '
                f"got {_show(metric)}",
            )
        else:
            fields["metric"] = metric
    if "matchers" in section:
        matchers = section["matchers"]
        if matchers is None:
            matchers = ""
        if not isinstance(matchers, str):
            errors.add(_key(path, "matchers"), f"expected a string, got {_show(matchers)}")
        elif problem := matchers_problem(matchers):
            errors.add(_key(path, "matchers"), problem)
        else:
            fields["matchers"] = matchers.strip()
    query = section.get("query")
    if query is not None:
        if not isinstance(query, str) or not query.strip():
            errors.add(_key(path, "query"), f"expected a PromQL expression, got {_show(query)}")
        elif "metric" in section or "matchers" in section:
            errors.add(
                _key(path, "query"),
                'cannot be combined with "metric" or "matchers": query is free PromQL '
                "that replaces both",
            )
        else:
            fields.update(query=query.strip(), metric=None, matchers="")
    labels_path = _key(path, "labels")
    labels = _mapping(section.get("labels"), labels_path, errors)
    if labels is not None:
        _check_keys(labels, _LABELS_KEYS, labels_path, errors)
        seen: dict[str, str] = {}
        for name in _LABELS_KEYS:
            if name not in labels:
                continue
            label = labels[name]
            here = _key(labels_path, name)
            if not isinstance(label, str) or not _PROM_LABEL.match(label):
                errors.add(here, f"expected a Prometheus label name, got {_show(label)}")
                continue
            fields[f"{name}_label"] = label
        for name in _LABELS_KEYS:
            label = fields.get(f"{name}_label", getattr(base, f"{name}_label"))
            if label in seen:
                errors.add(
                    _key(labels_path, name),
                    f'same label "{label}" as labels.{seen[label]}: '
                    "namespace, app, color and pod need four different labels",
                )
            seen.setdefault(label, name)
    if len(errors) > before:
        return None
    return dataclasses.replace(base, **fields)


# --- knobs and rules -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Knob:
    key: str
    field: str
    parse: Callable[[object, str, _Errors], object]
    nullable: bool = False


_KNOBS = (
    _Knob("minRetiredAge", "min_retired_age", _duration),
    _Knob("connectionFloor", "connection_floor", _non_negative_int),
    _Knob("drainHold", "drain_hold", _duration),
    _Knob("maxColors", "max_colors", _max_colors, nullable=True),
    _Knob("maxRetiredAge", "max_retired_age", _duration, nullable=True),
    _Knob("action", "action", _action),
    _Knob("keepScaledDown", "keep_scaled_down", _non_negative_int),
    _Knob("maxDisruptions", "max_disruptions", _budget),
    _Knob("abandonedAfter", "abandoned_after", _duration, nullable=True),
    _Knob("scaleUpGrace", "scale_up_grace", _duration),
    _Knob("consolidate", "consolidate", _consolidate, nullable=True),
    _Knob("stepDown", "step_down", _step_down, nullable=True),
)
KNOB_KEYS = tuple(k.key for k in _KNOBS)
_BY_KEY = {k.key: k for k in _KNOBS}


def _knob_overrides(
    section: Mapping[Any, object], path: str, errors: _Errors
) -> tuple[dict[str, Any], set[str]]:
    """The knobs a section sets, by field name, and the keys whose value was bad."""
    overrides: dict[str, Any] = {}
    bad: set[str] = set()
    for knob in _KNOBS:
        if knob.key not in section:
            continue
        raw = section[knob.key]
        if raw is None and knob.nullable:
            overrides[knob.field] = None
            continue
        before = len(errors)
        parsed = knob.parse(raw, _key(path, knob.key), errors)
        if len(errors) > before:
            bad.add(knob.key)
        else:
            overrides[knob.field] = parsed
    return overrides, bad


def _check_ages(knobs: Knobs, path: str, errors: _Errors, *, origin: Callable[[str], str]) -> None:
    if knobs.max_retired_age is not None and knobs.max_retired_age < knobs.min_retired_age:
        errors.add(
            path,
            f"maxRetiredAge ({format_duration(knobs.max_retired_age)}{origin('maxRetiredAge')}) "
            f"must be >= minRetiredAge ({format_duration(knobs.min_retired_age)}"
            f"{origin('minRetiredAge')})",
        )


def _check_step_down(knobs: Knobs, path: str, errors: _Errors, *, here: bool) -> None:
    """stepDown only goes beyond the idle pods consolidation gives back: it needs consolidate."""
    if knobs.step_down is not None and knobs.consolidate is None:
        where = "" if here else " (from defaults)"
        errors.add(
            _key(path, "stepDown"),
            f"needs consolidate{where}: stepDown removes pods beyond the idle ones consolidation "
            'gives back; set "consolidate: {after: 30m, every: 5m, keepPods: 1}" too, or null '
            "stepDown",
        )


_RULE_KEYS = ("name", "namespaces", "selector", "connections", *KNOB_KEYS)
_TOP_KEYS = (
    "apiVersion",
    "kind",
    "dryRun",
    "paused",
    "appLabel",
    "colorLabel",
    "prometheus",
    "connections",
    "maxDisruptions",
    "defaults",
    "rules",
)


_PER_CYCLE_GONE = (
    "unknown key: the budget is per time now, not per cycle: maxDisruptions: {count: 1, per: 10m}"
)


def _knob_hint(key: str) -> str | None:
    return _PER_CYCLE_GONE if key == "maxDisruptionsPerCycle" else None


def _top_level_hint(key: str) -> str | None:
    if key == "maxDisruptionsPerCycle":
        return _PER_CYCLE_GONE
    if key in _BY_KEY:
        return 'unknown key at the top level (knobs go under "defaults:" or in a rule)'
    return None


def _rule(
    raw: object,
    path: str,
    errors: _Errors,
    *,
    defaults: Knobs,
    defaults_set: Mapping[str, object],
    connections: ConnectionsQuery,
    names: dict[str, str],
) -> Rule | None:
    section = _mapping(raw, path, errors)
    if section is None:
        return None
    if not section:
        errors.add(path, 'expected a rule with at least a "name"')
        return None
    before = len(errors)
    _check_keys(section, _RULE_KEYS, path, errors, hint=_knob_hint)

    name = section.get("name")
    name_path = _key(path, "name")
    if name is None:
        errors.add(name_path, 'required: a unique name like "chat"')
    elif not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
        errors.add(
            name_path,
            f"expected a name of lowercase letters, digits and '-' (at most 63), got {_show(name)}",
        )
    elif name in names:
        errors.add(name_path, f'duplicate rule name "{name}" (also {names[name]})')
    else:
        names[name] = path

    namespaces: frozenset[str] | None = None
    raw_namespaces = section.get("namespaces")
    ns_path = _key(path, "namespaces")
    if raw_namespaces is not None:
        if not isinstance(raw_namespaces, list):
            errors.add(ns_path, f"expected a list of namespaces, got {_show(raw_namespaces)}")
        elif not raw_namespaces:
            errors.add(
                ns_path, "an empty list matches no namespace; leave it out to match every one"
            )
        else:
            for i, ns in enumerate(raw_namespaces):
                if not isinstance(ns, str) or len(ns) > 63 or not _DNS_LABEL.match(ns):
                    errors.add(
                        f"{ns_path}[{i}]",
                        f"expected a namespace name (lowercase letters, digits and '-'), "
                        f"got {_show(ns)}",
                    )
            namespaces = frozenset(ns for ns in raw_namespaces if isinstance(ns, str))

    selector = Selector()
    raw_selector = section.get("selector")
    if raw_selector is not None:
        if not isinstance(raw_selector, str):
            errors.add(
                _key(path, "selector"),
                f'expected a label selector like "app=chat", got {_show(raw_selector)}',
            )
        else:
            try:
                selector = parse_selector(raw_selector)
            except SelectorError as exc:
                errors.add(_key(path, "selector"), f"{exc} (in {_show(raw_selector)})")

    query = connections
    if "connections" in section:
        # A rule's connections replace the top-level ones wholesale: merging would make the
        # effective query depend on two places, and `query` excludes `metric` anyway.
        parsed_query = _connections(section["connections"], _key(path, "connections"), errors)
        if parsed_query is not None:
            query = parsed_query

    overrides, bad = _knob_overrides(section, path, errors)
    knobs = dataclasses.replace(defaults, **overrides)
    overridden = {"minRetiredAge", "maxRetiredAge"} & section.keys()
    if overridden and not bad & {"minRetiredAge", "maxRetiredAge"}:

        def origin(key: str) -> str:
            if key in section:
                return ""
            return ", from defaults" if key in defaults_set else ", built-in default"

        _check_ages(knobs, path, errors, origin=origin)
    if not bad & {"consolidate", "stepDown"} and {"consolidate", "stepDown"} & section.keys():
        _check_step_down(knobs, path, errors, here="stepDown" in section)

    if len(errors) > before or not isinstance(name, str):
        return None
    return Rule(name=name, knobs=knobs, connections=query, namespaces=namespaces, selector=selector)


def parse_policy(document: object) -> Policy:
    """Validate a decoded policy.yaml document; raise PolicyError with every error found."""
    errors = _Errors()
    if document is None:
        raise PolicyError(["empty document: expected a DrainPolicy"])
    if not isinstance(document, Mapping):
        raise PolicyError([f"expected a mapping (a DrainPolicy document), got {_show(document)}"])

    _check_keys(document, _TOP_KEYS, "", errors, hint=_top_level_hint)
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key not in document:
            errors.add(key, f'required: "{expected}"')
        elif document[key] != expected:
            errors.add(key, f'expected "{expected}", got {_show(document[key])}')

    fields: dict[str, Any] = {}
    for key, field in (("dryRun", "dry_run"), ("paused", "paused")):
        if key in document:
            fields[field] = _bool(document[key], key, errors)
    for key, field in (("appLabel", "app_label"), ("colorLabel", "color_label")):
        if key in document:
            fields[field] = _label_key(document[key], key, errors)
    if fields.get("app_label") is not None and fields.get("app_label") == fields.get("color_label"):
        errors.add("colorLabel", f'must differ from appLabel, both are "{fields["app_label"]}"')

    prometheus = PrometheusSettings()
    section = _mapping(document.get("prometheus"), "prometheus", errors)
    if section is not None:
        _check_keys(section, ("url", "timeout"), "prometheus", errors)
        url = _url(section["url"], "prometheus.url", errors) if "url" in section else None
        timeout = None
        if "timeout" in section:
            timeout = _positive_duration(section["timeout"], "prometheus.timeout", errors)
        prometheus = PrometheusSettings(
            url=url or prometheus.url, timeout=timeout or prometheus.timeout
        )

    if document.get("maxDisruptions") is not None:
        fields["max_disruptions"] = _budget(document["maxDisruptions"], "maxDisruptions", errors)

    connections = ConnectionsQuery()
    if "connections" in document:
        connections = _connections(document["connections"], "connections", errors) or connections

    defaults = Knobs()
    section = _mapping(document.get("defaults"), "defaults", errors)
    defaults_set: Mapping[Any, object] = {}
    if section is not None:
        defaults_set = section
        _check_keys(section, KNOB_KEYS, "defaults", errors, hint=_knob_hint)
        overrides, bad = _knob_overrides(section, "defaults", errors)
        defaults = dataclasses.replace(defaults, **overrides)
        if not bad & {"minRetiredAge", "maxRetiredAge"}:

            def origin(key: str) -> str:
                return "" if key in section else ", built-in default"

            _check_ages(defaults, "defaults", errors, origin=origin)
        if not bad & {"consolidate", "stepDown"}:
            _check_step_down(defaults, "defaults", errors, here=True)

    rules: list[Rule] = []
    raw_rules = document.get("rules")
    if raw_rules is not None and not isinstance(raw_rules, list):
        errors.add("rules", f"expected a list of rules, got {_show(raw_rules)}")
    elif raw_rules:
        names: dict[str, str] = {}
        for i, raw in enumerate(raw_rules):
            rule = _rule(
                raw,
                f"rules[{i}]",
                errors,
                defaults=defaults,
                defaults_set=defaults_set,
                connections=connections,
                names=names,
            )
            if rule is not None:
                rules.append(rule)

    if errors.items:
        raise PolicyError(errors.items)
    return Policy(
        rules=tuple(rules),
        defaults=defaults,
        connections=connections,
        prometheus=prometheus,
        **{k: v for k, v in fields.items() if v is not None},
    )


# --- the effective policy, back as a document ----------------------------------------------------


def _knobs_document(knobs: Knobs) -> dict[str, object]:
    out: dict[str, object] = {}
    for knob in _KNOBS:
        value = getattr(knobs, knob.field)
        if isinstance(value, timedelta):
            value = format_duration(value)
        elif isinstance(value, CleanupAction):
            value = value.value
        elif isinstance(value, Budget):
            value = _budget_document(value)
        elif isinstance(value, Consolidate):
            value = {
                "after": format_duration(value.after),
                "every": format_duration(value.every),
                "keepPods": value.keep_pods,
            }
        elif isinstance(value, StepDown):
            value = {"every": format_duration(value.every), "maxPods": value.max_pods}
        out[knob.key] = value
    return out


def _budget_document(budget: Budget) -> dict[str, object]:
    return {"count": budget.count, "per": format_duration(budget.per)}


def _connections_document(query: ConnectionsQuery) -> dict[str, object]:
    out: dict[str, object] = (
        {"query": query.query}
        if query.query is not None
        else {"metric": query.metric, "matchers": query.matchers}
    )
    out["labels"] = {
        "namespace": query.namespace_label,
        "app": query.app_label,
        "color": query.color_label,
        "pod": query.pod_label,
    }
    return out


def policy_to_document(policy: Policy) -> dict[str, object]:
    """The effective policy as a plain document (durations formatted, every knob resolved per
    rule); `parse_policy` reads it back to an equal Policy. Null namespaces: every namespace."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "dryRun": policy.dry_run,
        "paused": policy.paused,
        "appLabel": policy.app_label,
        "colorLabel": policy.color_label,
        "prometheus": {
            "url": policy.prometheus.url,
            "timeout": format_duration(policy.prometheus.timeout),
        },
        "connections": _connections_document(policy.connections),
        "maxDisruptions": (
            None if policy.max_disruptions is None else _budget_document(policy.max_disruptions)
        ),
        "defaults": _knobs_document(policy.defaults),
        "rules": [
            {
                "name": rule.name,
                "namespaces": None if rule.namespaces is None else sorted(rule.namespaces),
                "selector": rule.selector.text,
                "connections": _connections_document(rule.connections),
                **_knobs_document(rule.knobs),
            }
            for rule in policy.rules
        ],
    }


def policy_warnings(policy: Policy) -> list[str]:
    """Valid but probably not meant: no rules at all, or rules an earlier rule always shadows."""
    if not policy.rules:
        return ["rules: no rules, so no Deployment will be managed"]
    warnings = []
    for i, rule in enumerate(policy.rules):
        problem = rule.connections.per_pod_problem
        if rule.knobs.consolidate is not None and problem is not None:
            warnings.append(f"rules[{i}]: consolidation unavailable: {problem}")
        for j, earlier in enumerate(policy.rules[:i]):
            if _shadows(earlier, rule):
                warnings.append(
                    f'rules[{i}]: never matches anything: rules[{j}] ("{earlier.name}") comes '
                    "first and matches every Deployment it would"
                )
                break
    return warnings


def _shadows(earlier: Rule, later: Rule) -> bool:
    # Sufficient, not necessary: fewer requirements over more namespaces matches a superset.
    if earlier.namespaces is not None and (
        later.namespaces is None or not later.namespaces <= earlier.namespaces
    ):
        return False
    return set(earlier.selector.requirements) <= set(later.selector.requirements)
