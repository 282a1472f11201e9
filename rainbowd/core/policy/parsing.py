"""policy.yaml to `Policy`: `parse_policy` validates a decoded document and raises `PolicyError`
listing every problem at once, each prefixed with its path; `policy_warnings` names what is valid
but probably not meant. Knobs are read through the knob table (`knobs.py`)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rainbowd.core.durations import format_duration
from rainbowd.core.policy.fields import (
    Errors,
    boolean,
    check_keys,
    key_path,
    mapping,
    one_of,
    positive_duration,
    show,
    url,
)
from rainbowd.core.policy.knobs import BY_KEY, KNOB_KEYS, budget, knob_overrides
from rainbowd.core.policy.presets import DEFAULT, PRESET_NAMES, PRESETS
from rainbowd.core.policy.selectors import (
    Selector,
    SelectorError,
    label_key_problem,
    parse_selector,
)
from rainbowd.core.policy.types import (
    API_VERSION,
    DEFAULT_KINDS,
    KIND,
    WORKLOAD_KINDS,
    ConnectionsQuery,
    Knobs,
    Policy,
    PolicyError,
    PrometheusSettings,
    Rule,
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PROM_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_PROM_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _label_key(value: object, path: str, errors: Errors) -> str | None:
    if not isinstance(value, str):
        errors.add(path, f'expected a label key like "app", got {show(value)}')
        return None
    problem = label_key_problem(value)
    if problem:
        errors.add(path, problem)
        return None
    return value


# --- connections ---------------------------------------------------------------------------------


_MATCHER = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*"""
)


def matchers_problem(text: str) -> str | None:
    """Why `text` is not a comma-separated list of PromQL label matchers, or None."""
    body = text.strip()
    if body.startswith("{"):
        return f"write the matchers without braces, e.g. 'job=\"chat\"', got {show(text)}"
    pos = 0
    while pos < len(body):
        match = _MATCHER.match(body, pos)
        if match is None:
            return (
                'expected label matchers like \'job="chat", env!="dev"\', '
                f"got {show(text)} (at {show(body[pos:])})"
            )
        pos = match.end()
        if pos < len(body):
            if body[pos] != ",":
                return f'expected "," between label matchers, got {show(text)}'
            pos += 1
    return None


_CONNECTIONS_KEYS = (
    "preset",
    "metric",
    "matchers",
    "labels",
    "query",
    "source",
    "ruleInterval",
)
SOURCES = ("raw", "recorded")
"""`connections.source`: the raw series aggregated by Prometheus each cycle, or the series the
recording rules record."""
_LABELS_KEYS = ("namespace", "app", "color", "pod")
_KEPT = ("namespace", "app", "color")  # the labels the recorded series keep


def _series(fields: Mapping[Any, object], path: str, errors: Errors) -> dict[str, Any]:
    """`metric` and `matchers`, or the free `query` replacing both."""
    out: dict[str, Any] = {}
    if "metric" in fields:
        metric = fields["metric"]
        if not isinstance(metric, str) or not _PROM_METRIC.match(metric):
            errors.add(
                key_path(path, "metric"),
                f'expected a Prometheus metric name like "rainbow_open_connections", '
                f"got {show(metric)}",
            )
        else:
            out["metric"] = metric
    if "matchers" in fields:
        matchers = "" if fields["matchers"] is None else fields["matchers"]
        if not isinstance(matchers, str):
            errors.add(key_path(path, "matchers"), f"expected a string, got {show(matchers)}")
        elif problem := matchers_problem(matchers):
            errors.add(key_path(path, "matchers"), problem)
        else:
            out["matchers"] = matchers.strip()
    query = fields.get("query")
    if query is not None:
        if not isinstance(query, str) or not query.strip():
            errors.add(key_path(path, "query"), f"expected a PromQL expression, got {show(query)}")
        elif "metric" in fields or "matchers" in fields:
            errors.add(
                key_path(path, "query"),
                'cannot be combined with "metric" or "matchers": query is free PromQL '
                "that replaces both",
            )
        else:
            out.update(query=query.strip(), metric=None, matchers="")
    return out


def _preset(fields: Mapping[Any, object], path: str, errors: Errors) -> dict[str, Any]:
    """`preset`: where the connections come from. A preset other than the default reads its
    own metric: a different `metric`, or a free `query`, conflicts with it."""
    if "preset" not in fields:
        return {}
    name = one_of(fields["preset"], PRESET_NAMES, key_path(path, "preset"), errors)
    if name is None:
        return {}
    if name == DEFAULT:
        return {"preset": name}
    reads = PRESETS[name].metric
    if fields.get("query") is not None:
        errors.add(
            key_path(path, "query"),
            f"cannot be combined with preset {name}: the preset builds the query (reading "
            f"{reads}); drop query, or the preset",
        )
    if "metric" in fields and fields["metric"] != reads:
        errors.add(
            key_path(path, "metric"),
            f"preset {name} reads {reads}, not {show(fields['metric'])}: drop metric, or the "
            "preset to read your own gauge",
        )
    return {"preset": name}


def _series_labels(value: object, path: str, errors: Errors) -> dict[str, Any]:
    """`labels: {namespace, app, color, pod}`: four different Prometheus label names."""
    labels = mapping(value, path, errors)
    if labels is None:
        return {}
    check_keys(labels, _LABELS_KEYS, path, errors)
    out: dict[str, Any] = {}
    for name in _LABELS_KEYS:
        if name not in labels:
            continue
        label = labels[name]
        if not isinstance(label, str) or not _PROM_LABEL.match(label):
            errors.add(key_path(path, name), f"expected a Prometheus label name, got {show(label)}")
            continue
        out[f"{name}_label"] = label
    base = ConnectionsQuery()
    seen: dict[str, str] = {}
    for name in _LABELS_KEYS:
        label = out.get(f"{name}_label", getattr(base, f"{name}_label"))
        if label in seen:
            errors.add(
                key_path(path, name),
                f'same label "{label}" as labels.{seen[label]}: '
                "namespace, app, color and pod need four different labels",
            )
        seen.setdefault(label, name)
    return out


def _recorded_matchers_problem(fields: Mapping[Any, object]) -> str | None:
    """Why the matchers cannot narrow the recorded series, which keep only the namespace, app
    and color labels; None when they can (or are checked elsewhere)."""
    matchers = fields.get("matchers")
    labels = fields.get("labels")
    if not isinstance(matchers, str) or matchers_problem(matchers) is not None:
        return None
    given = labels if isinstance(labels, Mapping) else {}
    base = ConnectionsQuery()
    kept = [str(given.get(name, getattr(base, f"{name}_label"))) for name in _KEPT]
    other = [m.group(1) for m in _MATCHER.finditer(matchers) if m.group(1) not in kept]
    if not other:
        return None
    return (
        "with source recorded, matchers narrow the recorded series, which keep only the labels "
        f"{', '.join(kept)}: {', '.join(other)} cannot be matched"
    )


def _source(fields: Mapping[Any, object], path: str, errors: Errors) -> dict[str, Any]:
    """`source: raw | recorded` and the recording rules' `ruleInterval`."""
    out: dict[str, Any] = {}
    if "source" in fields:
        source = fields["source"]
        if source not in SOURCES:
            errors.add(
                key_path(path, "source"),
                f"expected one of {', '.join(SOURCES)}, got {show(source)}",
            )
        elif source == "recorded" and fields.get("query") is not None:
            errors.add(
                key_path(path, "source"),
                "recorded cannot be combined with a free query: the recording rules record "
                "what metric selects",
            )
        elif source == "recorded" and (problem := _recorded_matchers_problem(fields)):
            errors.add(key_path(path, "matchers"), problem)
        else:
            out["recorded"] = source == "recorded"
    if "ruleInterval" in fields:
        interval = positive_duration(fields["ruleInterval"], key_path(path, "ruleInterval"), errors)
        if interval is not None:
            out["rule_interval"] = interval
    return out


def _connections(value: object, path: str, errors: Errors) -> ConnectionsQuery | None:
    fields = mapping(value, path, errors)
    if fields is None:
        return None
    before = len(errors)
    check_keys(fields, _CONNECTIONS_KEYS, path, errors)
    parsed = _series(fields, path, errors)
    preset = _preset(fields, path, errors)
    if preset.get("preset", DEFAULT) != DEFAULT:
        parsed.pop("metric", None)  # the preset's own, checked by _preset
    parsed.update(preset)
    parsed.update(_series_labels(fields.get("labels"), key_path(path, "labels"), errors))
    parsed.update(_source(fields, path, errors))
    if len(errors) > before:
        return None
    return dataclasses.replace(ConnectionsQuery(), **parsed)


# --- knobs and rules -----------------------------------------------------------------------------


Origin = Callable[[str], str]
"""Where a knob's value comes from, for messages: "", ", from defaults", ", built-in default"."""


def _check_ages(knobs: Knobs, path: str, errors: Errors, *, origin: Origin) -> None:
    if knobs.max_retired_age is not None and knobs.max_retired_age < knobs.min_retired_age:
        errors.add(
            path,
            f"maxRetiredAge ({format_duration(knobs.max_retired_age)}{origin('maxRetiredAge')}) "
            f"must be >= minRetiredAge ({format_duration(knobs.min_retired_age)}"
            f"{origin('minRetiredAge')})",
        )


def _check_step_down(knobs: Knobs, path: str, errors: Errors, *, here: bool) -> None:
    """stepDown only goes beyond the idle pods consolidation gives back: it needs consolidate."""
    if knobs.step_down is not None and knobs.consolidate is None:
        where = "" if here else " (from defaults)"
        errors.add(
            key_path(path, "stepDown"),
            f"needs consolidate{where}: stepDown removes pods beyond the idle ones consolidation "
            'gives back; set "consolidate: {after: 30m, every: 5m, keepPods: 1}" too, or null '
            "stepDown",
        )


_AGES = frozenset({"minRetiredAge", "maxRetiredAge"})
_PODS = frozenset({"consolidate", "stepDown"})


def _knobs(
    fields: Mapping[Any, object],
    path: str,
    errors: Errors,
    *,
    base: Knobs,
    origin: Origin,
    only_if_set: bool,
) -> Knobs:
    """`base` with the knobs `fields` sets, checked together. A rule (`only_if_set`) checks only
    the combinations it touches: an invalid default is reported once, at defaults."""
    overrides, bad = knob_overrides(fields, path, errors)
    knobs = dataclasses.replace(base, **overrides)
    if not bad & _AGES and not (only_if_set and not _AGES & fields.keys()):
        _check_ages(knobs, path, errors, origin=origin)
    if not bad & _PODS and not (only_if_set and not _PODS & fields.keys()):
        _check_step_down(knobs, path, errors, here=not only_if_set or "stepDown" in fields)
    return knobs


_RULE_KEYS = ("name", "namespaces", "selector", "kinds", "connections", *KNOB_KEYS)
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
    if key in BY_KEY:
        return 'unknown key at the top level (knobs go under "defaults:" or in a rule)'
    return None


def _rule_name(value: object, path: str, errors: Errors, names: dict[str, str]) -> None:
    """Checks a rule's name and records it in `names` (name: the rule's path)."""
    here = key_path(path, "name")
    if value is None:
        errors.add(here, 'required: a unique name like "chat"')
    elif not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.match(value):
        errors.add(
            here,
            f"expected a name of lowercase letters, digits and '-' (at most 63), got {show(value)}",
        )
    elif value in names:
        errors.add(here, f'duplicate rule name "{value}" (also {names[value]})')
    else:
        names[value] = path


def _namespaces(value: object, path: str, errors: Errors) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        errors.add(path, f"expected a list of namespaces, got {show(value)}")
        return None
    if not value:
        errors.add(path, "an empty list matches no namespace; leave it out to match every one")
        return None
    for i, ns in enumerate(value):
        if not isinstance(ns, str) or len(ns) > 63 or not _DNS_LABEL.match(ns):
            errors.add(
                f"{path}[{i}]",
                f"expected a namespace name (lowercase letters, digits and '-'), got {show(ns)}",
            )
    return frozenset(ns for ns in value if isinstance(ns, str))


def _kinds(value: object, path: str, errors: Errors) -> frozenset[str]:
    if value is None:
        return DEFAULT_KINDS
    if not isinstance(value, list):
        errors.add(path, f"expected a list of {' and '.join(WORKLOAD_KINDS)}, got {show(value)}")
        return DEFAULT_KINDS
    if not value:
        errors.add(path, "an empty list takes nothing; leave it out to take Deployments only")
        return DEFAULT_KINDS
    kinds = [one_of(kind, WORKLOAD_KINDS, f"{path}[{i}]", errors) for i, kind in enumerate(value)]
    return frozenset(kind for kind in kinds if kind is not None)


def _selector(value: object, path: str, errors: Errors) -> Selector:
    if value is None:
        return Selector()
    if not isinstance(value, str):
        errors.add(path, f'expected a label selector like "app=chat", got {show(value)}')
        return Selector()
    try:
        return parse_selector(value)
    except SelectorError as exc:
        errors.add(path, f"{exc} (in {show(value)})")
        return Selector()


@dataclasses.dataclass(frozen=True, slots=True)
class _Inherited:
    """What every rule starts from: the defaults, the keys `defaults:` set (for messages), the
    top-level connections, and the rule names seen so far (name: the rule's path)."""

    defaults: Knobs
    defaults_set: Mapping[Any, object]
    connections: ConnectionsQuery
    names: dict[str, str]

    def origin(self, fields: Mapping[Any, object]) -> Origin:
        def origin(key: str) -> str:
            if key in fields:
                return ""
            return ", from defaults" if key in self.defaults_set else ", built-in default"

        return origin


def _rule(raw: object, path: str, errors: Errors, inherited: _Inherited) -> Rule | None:
    fields = mapping(raw, path, errors)
    if fields is None:
        return None
    if not fields:
        errors.add(path, 'expected a rule with at least a "name"')
        return None
    before = len(errors)
    check_keys(fields, _RULE_KEYS, path, errors, hint=_knob_hint)
    name = fields.get("name")
    _rule_name(name, path, errors, inherited.names)
    namespaces = _namespaces(fields.get("namespaces"), key_path(path, "namespaces"), errors)
    selector = _selector(fields.get("selector"), key_path(path, "selector"), errors)
    kinds = _kinds(fields.get("kinds"), key_path(path, "kinds"), errors)
    query = inherited.connections
    if "connections" in fields:
        # A rule's connections replace the top-level ones wholesale: merging would make the
        # effective query depend on two places, and `query` excludes `metric` anyway.
        query = _connections(fields["connections"], key_path(path, "connections"), errors) or query
    knobs = _knobs(
        fields,
        path,
        errors,
        base=inherited.defaults,
        origin=inherited.origin(fields),
        only_if_set=True,
    )
    if len(errors) > before or not isinstance(name, str):
        return None
    return Rule(
        name=name,
        knobs=knobs,
        connections=query,
        namespaces=namespaces,
        selector=selector,
        kinds=kinds,
    )


def _header(document: Mapping[Any, object], errors: Errors) -> dict[str, Any]:
    """Checks the top-level keys, apiVersion and kind; the flags and labels set, by field."""
    check_keys(document, _TOP_KEYS, "", errors, hint=_top_level_hint)
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key not in document:
            errors.add(key, f'required: "{expected}"')
        elif document[key] != expected:
            errors.add(key, f'expected "{expected}", got {show(document[key])}')
    fields: dict[str, Any] = {}
    for key, field in (("dryRun", "dry_run"), ("paused", "paused")):
        if key in document:
            fields[field] = boolean(document[key], key, errors)
    for key, field in (("appLabel", "app_label"), ("colorLabel", "color_label")):
        if key in document:
            fields[field] = _label_key(document[key], key, errors)
    if fields.get("app_label") is not None and fields.get("app_label") == fields.get("color_label"):
        errors.add("colorLabel", f'must differ from appLabel, both are "{fields["app_label"]}"')
    return fields


def _prometheus(value: object, errors: Errors) -> PrometheusSettings:
    built_in = PrometheusSettings()
    fields = mapping(value, "prometheus", errors)
    if fields is None:
        return built_in
    check_keys(fields, ("url", "timeout"), "prometheus", errors)
    address = url(fields["url"], "prometheus.url", errors) if "url" in fields else None
    timeout = None
    if "timeout" in fields:
        timeout = positive_duration(fields["timeout"], "prometheus.timeout", errors)
    return PrometheusSettings(url=address or built_in.url, timeout=timeout or built_in.timeout)


def _defaults(value: object, errors: Errors) -> tuple[Knobs, Mapping[Any, object]]:
    """The `defaults:` knobs over the built-in ones, and the keys it sets."""
    fields = mapping(value, "defaults", errors)
    if fields is None:
        return Knobs(), {}
    check_keys(fields, KNOB_KEYS, "defaults", errors, hint=_knob_hint)

    def origin(key: str) -> str:
        return "" if key in fields else ", built-in default"

    knobs = _knobs(fields, "defaults", errors, base=Knobs(), origin=origin, only_if_set=False)
    return knobs, fields


def _rules(value: object, errors: Errors, inherited: _Inherited) -> tuple[Rule, ...]:
    if value is not None and not isinstance(value, list):
        errors.add("rules", f"expected a list of rules, got {show(value)}")
        return ()
    rules = (_rule(raw, f"rules[{i}]", errors, inherited) for i, raw in enumerate(value or ()))
    return tuple(rule for rule in rules if rule is not None)


def parse_policy(document: object) -> Policy:
    """Validate a decoded policy.yaml document; raise PolicyError with every error found."""
    if document is None:
        raise PolicyError(["empty document: expected a DrainPolicy"])
    if not isinstance(document, Mapping):
        raise PolicyError([f"expected a mapping (a DrainPolicy document), got {show(document)}"])
    errors = Errors()
    fields = _header(document, errors)
    prometheus = _prometheus(document.get("prometheus"), errors)
    if document.get("maxDisruptions") is not None:
        fields["max_disruptions"] = budget(document["maxDisruptions"], "maxDisruptions", errors)
    connections = ConnectionsQuery()
    if "connections" in document:
        connections = _connections(document["connections"], "connections", errors) or connections
    defaults, defaults_set = _defaults(document.get("defaults"), errors)
    inherited = _Inherited(defaults, defaults_set, connections, names={})
    rules = _rules(document.get("rules"), errors, inherited)
    if errors.items:
        raise PolicyError(errors.items)
    return Policy(
        rules=rules,
        defaults=defaults,
        connections=connections,
        prometheus=prometheus,
        **{k: v for k, v in fields.items() if v is not None},
    )


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
                    "first and matches everything it would"
                )
                break
    return warnings


def narrowing_warnings(policy: Policy, namespaces: Iterable[str]) -> list[str]:
    """What `Policy.narrowed(namespaces)` could not narrow: free queries, which Prometheus
    evaluates over every namespace whatever rainbowd manages."""
    names = sorted(set(namespaces))
    if not names:
        return []
    return [
        f'rules[{i}] ("{rule.name}"): its connections query is free PromQL, sent as written,'
        f" not narrowed to the namespaces managed ({', '.join(names)}): Prometheus evaluates it"
        " over every namespace"
        for i, rule in enumerate(policy.rules)
        if rule.connections.query is not None
    ]


def _shadows(earlier: Rule, later: Rule) -> bool:
    # Sufficient, not necessary: fewer requirements over more namespaces and kinds matches a
    # superset.
    if not later.kinds <= earlier.kinds:
        return False
    if earlier.namespaces is not None and (
        later.namespaces is None or not later.namespaces <= earlier.namespaces
    ):
        return False
    return set(earlier.selector.requirements) <= set(later.selector.requirements)
