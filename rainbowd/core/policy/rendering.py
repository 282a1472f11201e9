"""The effective policy back as a plain document: durations formatted, every knob resolved per
rule, for `check-policy -o json`, /status and the daemon's log. `parse_policy` reads it back to an
equal Policy."""

from __future__ import annotations

from rainbowd.core.durations import format_duration
from rainbowd.core.policy.knobs import budget_document, knobs_document
from rainbowd.core.policy.presets import DEFAULT
from rainbowd.core.policy.types import (
    API_VERSION,
    KIND,
    WORKLOAD_KINDS,
    ConnectionsQuery,
    Policy,
)


def _connections_document(query: ConnectionsQuery) -> dict[str, object]:
    out: dict[str, object]
    if query.query is not None:
        out = {"query": query.query}
    elif query.preset != DEFAULT:
        out = {"preset": query.preset, "matchers": query.matchers}
    else:
        out = {"metric": query.metric, "matchers": query.matchers}
    out["labels"] = {
        "namespace": query.namespace_label,
        "app": query.app_label,
        "color": query.color_label,
        "pod": query.pod_label,
    }
    if query.query is None:
        out["source"] = "recorded" if query.recorded else "raw"
        out["ruleInterval"] = format_duration(query.rule_interval)
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
            None if policy.max_disruptions is None else budget_document(policy.max_disruptions)
        ),
        "defaults": knobs_document(policy.defaults),
        "rules": [
            {
                "name": rule.name,
                "namespaces": None if rule.namespaces is None else sorted(rule.namespaces),
                "selector": rule.selector.text,
                "kinds": [kind for kind in WORKLOAD_KINDS if kind in rule.kinds],
                "connections": _connections_document(rule.connections),
                **knobs_document(rule.knobs),
            }
            for rule in policy.rules
        ],
    }
