"""The connection sources `connections.preset` names, and `series_expr`: the PromQL of the
connections per pod, labelled with the namespace, app, color and pod labels, for any preset.

Every query rainbowd sends is built on `series_expr`: the summary per color, the per-pod query of
consolidation and the deletion costs, the range query seeding the history, and the recording
rules. The default preset is the gauge the apps export (`metric{matchers}`, as written); the
others read what a mesh or a load balancer already exports, each with its own names, labels and
caveats, which `check-policy` prints beside the expansion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

DEFAULT = "default"


class SeriesQuery(Protocol):
    """What `series_expr` reads of a connections query (`ConnectionsQuery`)."""

    @property
    def preset(self) -> str: ...
    @property
    def metric(self) -> str | None: ...
    @property
    def matchers(self) -> str: ...
    @property
    def namespace_label(self) -> str: ...
    @property
    def app_label(self) -> str: ...
    @property
    def color_label(self) -> str: ...
    @property
    def pod_label(self) -> str: ...
    @property
    def namespaces_regex(self) -> str: ...


Narrow = Mapping[str, str]
"""Regexes (PromQL string contents) a query may narrow the series by, keyed `namespace`, `app`,
`color` and `pod`: a preset narrows what it can on the raw series, so the answer is a superset of
those colors (the caller filters it exactly). `{"pod": ".+"}` keeps the series naming their pod,
`{"pod": ""}` the others."""


@dataclass(frozen=True, slots=True)
class Preset:
    """One connection source: what it counts, where each label comes from, and its caveats."""

    name: str
    counts: str
    labels: str
    caveats: tuple[str, ...]
    build: Callable[[SeriesQuery, Narrow], str]
    metric: str | None = None
    """The metric the preset reads (None: the query's own, for the default)."""


def _select(metric: str, *matchers: str) -> str:
    return f"{metric}{{{', '.join(m for m in matchers if m)}}}"


def _narrowing(query: SeriesQuery, narrow: Narrow, *roles: str) -> list[str]:
    labels = {
        "namespace": query.namespace_label,
        "app": query.app_label,
        "color": query.color_label,
        "pod": query.pod_label,
    }
    return [f'{labels[role]}=~"{narrow[role]}"' for role in roles if role in narrow]


_ALL = ("namespace", "app", "color", "pod")


def _gauge(metric: str | None, fixed: str = "") -> Callable[[SeriesQuery, Narrow], str]:
    """A gauge per pod carrying the four labels itself: `metric` (None: the query's own) with
    the `fixed` matchers, the query's and the narrowing ones."""

    def build(query: SeriesQuery, narrow: Narrow) -> str:
        name = metric if metric is not None else str(query.metric)
        return _select(name, fixed, query.matchers, *_narrowing(query, narrow, *_ALL))

    return build


LINKERD_METRIC = "tcp_open_connections"
LINKERD_MATCHERS = 'direction="inbound", peer="src"'


ISTIO_OPENED = "istio_tcp_connections_opened_total"
ISTIO_CLOSED = "istio_tcp_connections_closed_total"
ISTIO_MATCHERS = 'reporter="destination"'


def _istio(query: SeriesQuery, narrow: Narrow) -> str:
    """Opened minus closed, per pod. The two counters are summed per pod first, so the
    subtraction matches on the pod's labels only (`instance` kept as the pod's fallback): a
    connection's closed series may differ from its opened one in labels set at close
    (`response_flags`). A pod that never closed a connection has no closed series: `or` keeps
    its opened count rather than dropping the pod."""
    by = ", ".join(
        (query.namespace_label, query.app_label, query.color_label, query.pod_label, "instance")
    )
    matchers = (ISTIO_MATCHERS, query.matchers, *_narrowing(query, narrow, *_ALL))
    opened = f"sum by ({by}) ({_select(ISTIO_OPENED, *matchers)})"
    closed = f"sum by ({by}) ({_select(ISTIO_CLOSED, *matchers)})"
    return f"({opened} - {closed} or {opened})"


HAPROXY_METRIC = "haproxy_server_current_sessions"
# A Deployment's pod is named <Deployment>-<pod-template-hash>-<suffix>, and a color's Deployment
# <app>-<color>: the last dash-free part before the two hashes is the color. A server named
# otherwise matches the empty alternative, which takes the app and color labels away.
POD_NAME = "(?:(.+)-([^-]+)-[a-z0-9]+-[a-z0-9]+|.*)"


def _haproxy(query: SeriesQuery, narrow: Narrow) -> str:
    """The server's sessions as its pod's: the pod label from the server name (overwriting the
    HAProxy pod's own), the app and color parsed from it; the namespace is the series' own."""
    server = []
    if "app" in narrow or "color" in narrow:
        apps, colors = narrow.get("app", ".+"), narrow.get("color", "[^-]+")
        server.append(f'server=~"(?:{apps})-(?:{colors})-.+"')
    if "pod" in narrow:
        server.append(f'server=~"{narrow["pod"]}"')
    sessions = _select(
        HAPROXY_METRIC, query.matchers, *_narrowing(query, narrow, "namespace"), *server
    )
    pod = f'label_replace({sessions}, "{query.pod_label}", "$1", "server", "(.*)")'
    app = f'label_replace({pod}, "{query.app_label}", "$1", "server", "{POD_NAME}")'
    return f'label_replace({app}, "{query.color_label}", "$2", "server", "{POD_NAME}")'


ENVOY_METRIC = "envoy_cluster_endpoint_cx_active"


PRESETS: Mapping[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name=DEFAULT,
            counts="the gauge each pod exports (metric, matchers)",
            labels="the series' own namespace, app, color and pod labels",
            caveats=(),
            build=_gauge(None),
        ),
        Preset(
            name="linkerd",
            counts=(
                "the inbound TCP connections Linkerd's proxy accepted for the pod "
                f"({LINKERD_METRIC}{{{LINKERD_MATCHERS}}})"
            ),
            labels=(
                "namespace and pod set by linkerd-viz's scrape of each proxy; app and color are "
                "the pod's labels, which that scrape copies"
            ),
            caveats=(
                "ports the proxy skips (config.linkerd.io/skip-inbound-ports, opaque ports "
                "outside the mesh) are not seen: their connections do not count",
                "only meshed pods report: a color's unmeshed pod is missing, and the coverage "
                "check makes the color unknown",
            ),
            build=_gauge(LINKERD_METRIC, LINKERD_MATCHERS),
            metric=LINKERD_METRIC,
        ),
        Preset(
            name="istio",
            counts=(
                f"TCP connections opened minus closed at the pod's sidecar ({ISTIO_OPENED} - "
                f"{ISTIO_CLOSED}, {ISTIO_MATCHERS}), summed per pod"
            ),
            labels=(
                "namespace and pod set by the scrape of each sidecar (Istio's kubernetes-pods "
                "job); app and color are the pod's labels, which that scrape copies"
            ),
            caveats=(
                "the sidecar reports open connections every 15s (tcpReportingDuration) and at "
                "close: a connection opened in the last 15s may not count yet; set drainHold "
                "well above 15s plus the scrape interval",
                "connections on ports Istio treats as HTTP are requests, not TCP connections: a "
                "websocket or any long request on an HTTP port is not counted at all; name "
                "those ports tcp- (or appProtocol: tcp) before relying on this preset",
                "a pod that has had no TCP connection since its sidecar started has no series: "
                "the coverage check makes its color unknown until one arrives",
                "sidecar mode only: in ambient mode ztunnel reports for every pod of its node "
                "and only at open and close, so the pod label names ztunnel, not the pod",
            ),
            build=_istio,
            metric=ISTIO_OPENED,
        ),
        Preset(
            name="haproxy",
            counts=(
                f"the sessions HAProxy holds to each server ({HAPROXY_METRIC}, its built-in "
                "Prometheus exporter), servers named after the pods"
            ),
            labels=(
                "pod: the server name; app and color: parsed from it as "
                "<app>-<color>-<pod-template-hash>-<suffix> (Deployments named <app>-<color>, "
                "colors without a dash; a server named otherwise names no color and is "
                "ignored, so a Deployment named past 46 characters, whose pod names Kubernetes "
                "cuts, has its colors unknown); namespace: the series' own namespace label, "
                "which the scrape of HAProxy must set (HAProxy knows no namespace)"
            ),
            caveats=(
                "only connections through HAProxy count: clients reaching the pods another "
                "way are not seen",
                "every HAProxy instance in front of the pods must be scraped: the coverage "
                "check counts pods, not load balancers, so one instance not scraped hides its "
                "sessions",
                "in mode http a server's sessions are the requests in progress, not idle "
                "keep-alive connections; long-lived connections count in mode tcp (or as "
                "upgraded websocket tunnels)",
            ),
            build=_haproxy,
            metric=HAPROXY_METRIC,
        ),
        Preset(
            name="envoy",
            counts=(
                f"the active connections of each upstream endpoint ({ENVOY_METRIC}), "
                "Envoy's per-endpoint statistics"
            ),
            labels=(
                "the series' own namespace, app, color and pod labels, which your scrape must "
                "add: Envoy names an endpoint only by its address (envoy_endpoint_address), "
                "and rainbowd does not guess a pod from an address a later pod may reuse"
            ),
            caveats=(
                "per-endpoint statistics are off by default: enable them per cluster "
                "(track_cluster_stats.per_endpoint_stats, or Envoy Gateway's "
                "enablePerEndpointStats); one series per endpoint and statistic",
                "without the namespace, app, color and pod labels on every series (added by "
                "your scrape or a sidecar Envoy scraped with its pod's labels) every series is "
                "ignored and every color is unknown: never a drain, but never an action either",
                "only connections through that Envoy count, and every Envoy in front of the "
                "pods must be scraped; for HTTP they are Envoy's pooled upstream connections, "
                "not the clients'",
            ),
            build=_gauge(ENVOY_METRIC),
            metric=ENVOY_METRIC,
        ),
    )
}
PRESET_NAMES = tuple(PRESETS)


def series_expr(query: SeriesQuery, narrow: Narrow | None = None) -> str:
    """The PromQL of `query`'s connections per pod: series labelled with its namespace, app,
    color and pod labels (several per pod may be, summed by whoever reads them), narrowed by
    `narrow` where the preset can, and always to the namespaces managed (a shard's), which
    every preset narrows by. For the default preset unnarrowed, `metric{matchers}` as written."""
    narrow = narrow or {}
    managed = query.namespaces_regex
    if managed and "namespace" not in narrow:
        narrow = {**narrow, "namespace": managed}
    return PRESETS[query.preset].build(query, narrow)
