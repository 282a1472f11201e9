"""`connections.preset`: every query is built on one per-pod series expression, the default's
queries are sent as before, each preset narrows the per-pod query where it can, and a preset
that conflicts with the rest of `connections` is an error naming the field."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rainbowd.core.policy import (
    PRESET_NAMES,
    PRESETS,
    ConnectionsQuery,
    PolicyError,
    parse_policy,
    policy_to_document,
    series_expr,
)
from rainbowd.prom.pods import pods_expr
from rainbowd.prom.querying import expression, recording_rules, summary_expr
from rainbowd.prom.ranges import range_expression

HEADER = {"apiVersion": "rainbowd.io/v1alpha1", "kind": "DrainPolicy"}
CHAT = ConnectionsQuery(matchers='job="chat"')
COLORS = [("ns", "web", "c1"), ("ns", "web", "c2")]


def test_the_default_preset_sends_its_queries_as_before() -> None:
    assert series_expr(CHAT) == 'rainbow_open_connections{job="chat"}'
    assert expression(CHAT, per_pod=True) == 'rainbow_open_connections{job="chat"}'
    assert range_expression(CHAT) == (
        'sum by (namespace, app, color) (rainbow_open_connections{job="chat"})'
    )
    sel = 'rainbow_open_connections{job="chat"}'
    assert summary_expr(CHAT) == (
        f'label_replace(sum by (namespace, app, color) ({sel}), "rainbowd_part", "sum", "", "")'
        " or label_replace(count by (namespace, app, color) (count by (namespace, app, color,"
        f' rainbowd_pod) (label_replace(label_replace({sel}, "rainbowd_pod", "$1", "instance",'
        ' "(.+)"), "rainbowd_pod", "$1", "pod", "(.+)"))), "rainbowd_part", "pods", "", "")'
        f' or label_replace(count by (namespace, app, color) ({sel} < 0), "rainbowd_part",'
        ' "negative", "", "")'
    )


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_query_is_built_on_the_one_series_expression(name: str) -> None:
    query = ConnectionsQuery(preset=name, matchers='job="j"')
    series = series_expr(query)
    assert query.selector == series
    assert expression(query, per_pod=True) == series
    assert range_expression(query) == f"sum by (namespace, app, color) ({series})"
    assert summary_expr(query).count(series) == 3
    rules = recording_rules(query)["groups"][0]["rules"]
    unmatched = ConnectionsQuery(preset=name)
    # (the default's pod count selects the series with a pod label and the others apart)
    built = (series_expr(unmatched), series_expr(unmatched, {"pod": ".+"}))
    assert all(any(s in rule["expr"] for s in built) for rule in rules)


def test_the_series_of_each_preset() -> None:
    def of(name: str) -> str:
        return series_expr(ConnectionsQuery(preset=name, matchers='job="j"'))

    assert of("linkerd") == 'tcp_open_connections{direction="inbound", peer="src", job="j"}'
    assert of("envoy") == 'envoy_cluster_endpoint_cx_active{job="j"}'
    by = "namespace, app, color, pod, instance"
    opened = (
        f'sum by ({by}) (istio_tcp_connections_opened_total{{reporter="destination", job="j"}})'
    )
    closed = (
        f'sum by ({by}) (istio_tcp_connections_closed_total{{reporter="destination", job="j"}})'
    )
    assert of("istio") == f"({opened} - {closed} or {opened})"
    haproxy = of("haproxy")
    assert haproxy.startswith(
        'label_replace(label_replace(label_replace(haproxy_server_current_sessions{job="j"},'
        ' "pod", "$1", "server", "(.*)"), "app", "$1", "server", '
    )


def test_the_labels_the_query_names_are_the_ones_each_preset_writes() -> None:
    labels = ConnectionsQuery(
        namespace_label="ns", app_label="svc", color_label="hue", pod_label="p"
    )
    haproxy = series_expr(replace(labels, preset="haproxy"))
    assert '"p", "$1", "server"' in haproxy
    assert '"svc", "$1", "server"' in haproxy
    assert '"hue", "$2", "server"' in haproxy
    istio = series_expr(replace(labels, preset="istio"))
    assert "sum by (ns, svc, hue, p, instance)" in istio


def test_the_per_pod_query_is_narrowed_where_each_preset_can() -> None:
    narrowed = 'namespace=~"ns", app=~"web", color=~"c1|c2"'
    for name in ("default", "linkerd", "envoy"):
        assert narrowed in pods_expr(ConnectionsQuery(preset=name), COLORS), name
    istio = pods_expr(ConnectionsQuery(preset="istio"), COLORS)
    assert istio.count(narrowed) == 3
    # HAProxy's app and color are parsed from the server name: narrowed on it, and on the
    # namespace the scrape sets.
    haproxy = pods_expr(ConnectionsQuery(preset="haproxy"), COLORS)
    assert 'haproxy_server_current_sessions{namespace=~"ns", server=~"(?:web)-(?:c1|c2)-.+"}' in (
        haproxy
    )


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_a_preset_reads_back_from_the_effective_policy(name: str) -> None:
    document = {**HEADER, "connections": {"preset": name, "matchers": 'job="j"'}}
    policy = parse_policy(document)
    assert policy.connections.preset == name
    assert parse_policy(policy_to_document(policy)) == policy
    # Naming the metric the preset reads is no conflict.
    metric = PRESETS[name].metric or "rainbow_open_connections"
    same = parse_policy({**HEADER, "connections": {"preset": name, "metric": metric}})
    assert same.connections == parse_policy({**HEADER, "connections": {"preset": name}}).connections


@pytest.mark.parametrize(
    ("connections", "error"),
    [
        (
            {"preset": "istoi"},
            "connections.preset: expected one of default, linkerd, istio, haproxy, envoy, got"
            ' "istoi" (did you mean "istio"?)',
        ),
        ({"preset": 3}, "connections.preset: expected one of default, linkerd, istio,"),
        (
            {"preset": "istio", "metric": "my_sessions"},
            "connections.metric: preset istio reads istio_tcp_connections_opened_total, not"
            ' "my_sessions": drop metric, or the preset to read your own gauge',
        ),
        (
            {"preset": "linkerd", "query": "sum by (namespace, app, color) (x)"},
            "connections.query: cannot be combined with preset linkerd: the preset builds the"
            " query (reading tcp_open_connections); drop query, or the preset",
        ),
    ],
)
def test_a_bad_or_conflicting_preset_names_the_field(
    connections: dict[str, object], error: str
) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy({**HEADER, "connections": connections})
    assert any(line.startswith(error) for line in raised.value.errors), raised.value.errors
    with pytest.raises(PolicyError) as in_rule:
        parse_policy({**HEADER, "rules": [{"name": "chat", "connections": connections}]})
    assert any(line.startswith(f"rules[0].{error}") for line in in_rule.value.errors)


def test_the_series_can_be_split_by_whether_they_name_their_pod() -> None:
    for name in ("default", "linkerd", "envoy"):
        query = ConnectionsQuery(preset=name)
        assert 'pod=~".+"' in series_expr(query, {"pod": ".+"}), name
        assert 'pod=~""' in series_expr(query, {"pod": ""}), name
    assert series_expr(ConnectionsQuery(preset="istio"), {"pod": ""}).count('pod=~""') == 3
    # HAProxy's pod is its server name.
    assert 'server=~".+"' in series_expr(ConnectionsQuery(preset="haproxy"), {"pod": ".+"})
