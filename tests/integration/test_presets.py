"""`connections.preset` against the real Prometheus: HAProxy for real (Debian's haproxy and its
built-in Prometheus exporter in front of demo_app processes, servers named after the pods), and
Linkerd, Istio and Envoy through an exporter serving each one's documented exposition, scraped
as those projects' own scrape configurations scrape it (one target per pod, with the pod's
namespace, name and labels as target labels). Each answer per color, and per pod, is the one
the exposition implies."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from rainbowd.core.model import NO_SERIES, Connections
from rainbowd.core.planner.assess import effective_connections
from rainbowd.core.policy import ConnectionsQuery, PrometheusSettings
from rainbowd.prom import PrometheusClient, QueryResult
from rainbowd.prom.pods import fetch_pods
from rainbowd.prom.ranges import fetch_range
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.demoapps import DemoApp
from tests.exposition import Exposition
from tests.haproxy import HAProxy
from tests.integration.test_prom_real import A, B, demos, eventually, until_connections
from tests.integration.test_prom_recorded import record

__all__ = ["demos"]

pytestmark = pytest.mark.prometheus

C = "c0ffee"
# Pods as a Deployment <app>-<color> names them: <Deployment>-<pod-template-hash>-<suffix>.
A1, A2 = f"web-{A}-5d8f7c9b4-x2b9q", f"web-{A}-5d8f7c9b4-k7m2p"
B1 = f"web-{B}-7c6d5f8b9-q4w8z"


@pytest.fixture
def settings(prometheus: PrometheusServer) -> PrometheusSettings:
    return PrometheusSettings(url=prometheus.url, timeout=timedelta(seconds=5))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def client(session: aiohttp.ClientSession, settings: PrometheusSettings) -> PrometheusClient:
    return PrometheusClient(session, settings)


Pod = tuple[str, str]
"""A pod's color and name."""


@contextlib.contextmanager
def scraped_pods(
    prometheus: PrometheusServer, job: str, expositions: Mapping[Pod, str]
) -> Iterator[None]:
    """One exporter per pod serving its exposition, scraped under `job` with the target labels
    a pod scrape gives (Kubernetes service discovery relabelled: namespace, pod, the pod's app
    and color labels)."""
    with contextlib.ExitStack() as stack:
        targets = []
        for (color, pod), text in expositions.items():
            exporter = stack.enter_context(Exposition(text))
            labels = {"namespace": "chat", "pod": pod, "app": "web", "color": color}
            targets.append((exporter.target, labels))
        prometheus.set_targets(targets, job=job)
        yield


def family(name: str, kind: str, series: list[tuple[dict[str, str], float]]) -> str:
    lines = [f"# TYPE {name} {kind}"]
    for labels, value in series:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{inner}}} {value:g}")
    return "\n".join(lines) + "\n"


async def per_pod(
    client: PrometheusClient, query: ConnectionsQuery, color: str, at: datetime
) -> dict[str, float | None]:
    found = await fetch_pods(client, query, [("chat", "web", color)], at=at)
    series = found[("chat", "web", color)]
    assert series.unavailable is None, series.unavailable
    return dict(series.pods)


async def answers(
    client: PrometheusClient,
    query: ConnectionsQuery,
    colors: dict[str, Connections],
    pods_of_a: dict[str, float],
) -> QueryResult:
    """The answer per color once it is `colors`, and A's per pod at the same instant."""
    got = await until_connections(client, colors, query)
    assert await per_pod(client, query, A, got.at) == pods_of_a
    return got


# --- Linkerd ------------------------------------------------------------------------------------
# The proxy's transport metrics (https://linkerd.io/2/reference/proxy-metrics/, "Transport-Level
# Metrics": `tcp_open_connections`, a gauge, labelled `direction` inbound/outbound and `peer` src
# for connections the proxy accepted, dst for those it opened; linkerd/linkerd2#2224), with the
# `tls` and target labels the proxy adds. linkerd-viz's Prometheus scrape (its `linkerd-proxy`
# job) adds namespace and pod and copies the pod's labels.


def linkerd(inbound: list[tuple[str, float]], *, to_app: float, outbound: float) -> str:
    """A proxy's tcp_open_connections: accepted inbound connections per `tls` value, the
    proxy's own connections to the app (inbound, peer dst) and to other services (outbound)."""
    target = {"target_addr": "198.18.0.7:8080", "target_ip": "198.18.0.7", "target_port": "8080"}
    series = [
        ({"direction": "inbound", "peer": "src", **target, "tls": tls}, value)
        for tls, value in inbound
    ]
    series.append(({"direction": "inbound", "peer": "dst", **target, "tls": "no_identity"}, to_app))
    series.append(
        (
            {"direction": "outbound", "peer": "dst", "target_addr": "198.18.1.3:5432"},
            outbound,
        )
    )
    return family("tcp_open_connections", "gauge", series)


async def test_linkerd_counts_the_inbound_connections_the_proxies_accepted(
    prometheus: PrometheusServer, client: PrometheusClient
) -> None:
    pods = {
        (A, A1): linkerd([("true", 2), ("no_identity", 1)], to_app=3, outbound=5),
        (A, A2): linkerd([("true", 0)], to_app=0, outbound=9),
        (B, B1): linkerd([("true", 4)], to_app=4, outbound=1),
    }
    query = ConnectionsQuery(preset="linkerd", matchers='job="linkerd-proxy"')
    with scraped_pods(prometheus, "linkerd-proxy", pods):
        got = await answers(
            client, query, {A: Connections(3.0, 2), B: Connections(4.0, 1)}, {A1: 3.0, A2: 0.0}
        )
    # A third pod of A, ready but not meshed (nothing scraped): the coverage check.
    assert effective_connections(got.get("chat", "web", A), ready=3).value is None
    assert got.get("chat", "web", C) == NO_SERIES


# --- Istio --------------------------------------------------------------------------------------
# Istio's standard metrics (https://istio.io/latest/docs/reference/config/metrics/): the counters
# istio_tcp_connections_opened_total and istio_tcp_connections_closed_total, labelled `reporter`
# (destination at the server's sidecar, source at the client's), the source_* and destination_*
# workload labels, `response_flags` and `connection_security_policy`. The sidecar serves them on
# :15020/stats/prometheus; Istio's sample Prometheus (its kubernetes-pods job) adds namespace
# and pod and copies the pod's labels.


def istio(counters: list[tuple[str, str, str, float]], *, outbound: float = 0) -> str:
    """A sidecar's TCP counters as the destination, each (opened or closed, source workload,
    response flags, value); and as a source, the connections it opened itself."""

    def labels(reporter: str, source: str, flags: str) -> dict[str, str]:
        return {
            "reporter": reporter,
            "source_workload": source,
            "source_workload_namespace": "chat",
            "destination_workload": "web",
            "destination_workload_namespace": "chat",
            "destination_service": "web.chat.svc.cluster.local",
            "request_protocol": "tcp",
            "response_flags": flags,
            "connection_security_policy": "mutual_tls",
        }

    opened = [(labels("destination", s, f), v) for k, s, f, v in counters if k == "opened"]
    closed = [(labels("destination", s, f), v) for k, s, f, v in counters if k == "closed"]
    if outbound:
        opened.append((labels("source", "web", "-"), outbound))
    text = family("istio_tcp_connections_opened_total", "counter", opened)
    return text + (
        family("istio_tcp_connections_closed_total", "counter", closed) if closed else ""
    )


async def test_istio_counts_opened_minus_closed_per_pod(
    prometheus: PrometheusServer,
    client: PrometheusClient,
    session: aiohttp.ClientSession,
    settings: PrometheusSettings,
) -> None:
    pods = {
        # From the gateway: 10 opened, 7 closed. From the worker: 5 opened, 3 closed normally
        # and 1 closed with a response flag the opened series does not carry.
        (A, A1): istio(
            [
                ("opened", "gateway", "-", 10),
                ("closed", "gateway", "-", 7),
                ("opened", "worker", "-", 5),
                ("closed", "worker", "-", 3),
                ("closed", "worker", "UC", 1),
            ],
            outbound=20,
        ),
        # Never closed a connection: no closed series at all.
        (A, A2): istio([("opened", "gateway", "-", 4)]),
        # Every connection closed: drained.
        (B, B1): istio([("opened", "gateway", "-", 2), ("closed", "gateway", "-", 2)], outbound=6),
    }
    query = ConnectionsQuery(preset="istio", matchers='job="kubernetes-pods"')
    with scraped_pods(prometheus, "kubernetes-pods", pods):
        got = await answers(
            client, query, {A: Connections(8.0, 2), B: Connections(0.0, 1)}, {A1: 4.0, A2: 4.0}
        )
        history = await fetch_range(
            session,
            settings,
            query,
            start=got.at - timedelta(seconds=2),
            end=got.at,
            step=timedelta(seconds=1),
        )
    assert history[("chat", "web", A)][-1][1] == 8.0
    assert history[("chat", "web", B)][-1][1] == 0.0


async def test_istio_recorded_reads_as_the_raw_series_do(
    prometheus: PrometheusServer, client: PrometheusClient, tmp_path: Path
) -> None:
    # The recording rules check-policy prints for the preset, evaluated by Prometheus.
    pods = {
        (A, A1): istio([("opened", "gateway", "-", 3), ("closed", "worker", "UC", 1)]),
        (A, A2): istio([("opened", "gateway", "-", 4)]),
    }
    recorded = record(prometheus, ConnectionsQuery(preset="istio"), tmp_path)
    with scraped_pods(prometheus, "kubernetes-pods", pods):
        await until_connections(client, {A: Connections(6.0, 2)}, recorded)


# --- Envoy --------------------------------------------------------------------------------------
# Envoy's per-endpoint statistics (https://www.envoyproxy.io/docs/envoy/latest/configuration/
# upstream/cluster_manager/cluster_stats, "Per-endpoint statistics", enabled by the cluster's
# track_cluster_stats.per_endpoint_stats; envoyproxy/envoy#29709): on /stats/prometheus as
# envoy_cluster_endpoint_cx_active, labelled envoy_cluster_name and envoy_endpoint_address.


def envoy(endpoints: list[tuple[str, str, float]]) -> str:
    return family(
        "envoy_cluster_endpoint_cx_active",
        "gauge",
        [
            ({"envoy_cluster_name": cluster, "envoy_endpoint_address": address}, value)
            for cluster, address, value in endpoints
        ],
    )


async def test_envoy_reads_the_pod_labels_the_scrape_adds_and_never_guesses_them(
    prometheus: PrometheusServer, client: PrometheusClient
) -> None:
    # A sidecar Envoy per pod, scraped with its pod's labels: its inbound cluster's endpoint is
    # the app beside it.
    pods = {
        (A, A1): envoy([("inbound|8080||", "127.0.0.1:8080", 6)]),
        (A, A2): envoy([("inbound|8080||", "127.0.0.1:8080", 1)]),
        (B, B1): envoy([("inbound|8080||", "127.0.0.1:8080", 0)]),
    }
    query = ConnectionsQuery(preset="envoy", matchers='job="envoy-sidecars"')
    with scraped_pods(prometheus, "envoy-sidecars", pods):
        await answers(
            client, query, {A: Connections(7.0, 2), B: Connections(0.0, 1)}, {A1: 6.0, A2: 1.0}
        )

    # A shared Envoy (a gateway) names its endpoints by address only: no color is named, every
    # color is unknown, and the answer says why.
    gateway = envoy(
        [
            ("chat/web", "198.18.0.11:8080", 6),
            ("chat/web", "198.18.0.12:8080", 1),
        ]
    )
    shared = ConnectionsQuery(preset="envoy", matchers='job="envoy-gateway"')
    with Exposition(gateway) as exporter:
        prometheus.set_targets(
            [(exporter.target, {"namespace": "envoy-gateway-system"})], job="envoy-gateway"
        )

        async def ignored() -> bool | None:
            result = await client.connections(shared, at=datetime.now(UTC))
            return True if result.warnings else None

        await eventually(ignored, "the gateway's series ignored")
        result = await client.connections(shared, at=datetime.now(UTC))
    assert result.error is None
    assert result.by_color == {}
    assert result.get("chat", "web", A) == NO_SERIES
    assert "series without all of the labels namespace, app, color ignored" in result.warnings[0]


# --- HAProxy, for real --------------------------------------------------------------------------


async def test_haproxy_a_held_session_keeps_the_old_color_until_it_closes(
    prometheus: PrometheusServer,
    client: PrometheusClient,
    demos: Callable[[str], DemoApp],
    tmp_path: Path,
) -> None:
    a1, a2, b1 = demos(A), demos(A), demos(B)
    # The servers named after the pods, one backend per color (a Service per color).
    servers = {
        "web_a": [
            (A1, f"127.0.0.1:{a1.tcp_port}"),
            (A2, f"127.0.0.1:{a2.tcp_port}"),
        ],
        "web_b": [(B1, f"127.0.0.1:{b1.tcp_port}")],
    }
    query = ConnectionsQuery(preset="haproxy", matchers='job="haproxy"')
    idle = {A: Connections(0.0, 2), B: Connections(0.0, 1)}
    with HAProxy(servers, workdir=tmp_path) as lb:
        # HAProxy knows no namespace: the scrape sets it.
        prometheus.set_targets([(lb.metrics_target, {"namespace": "chat"})], job="haproxy")
        await until_connections(client, idle, query)

        reader, writer = await asyncio.open_connection("127.0.0.1", lb.port("web_a"))
        try:
            # The first line proves HAProxy reached a pod of A and the pod accepted.
            line = await asyncio.wait_for(reader.readline(), 30)
            assert line == f"The color is #{A}\n".encode()
            held = await until_connections(
                client, {A: Connections(1.0, 2), B: Connections(0.0, 1)}, query
            )
            # Not drained: one connection on the old color, both its pods reporting.
            assert effective_connections(held.get("chat", "web", A), ready=2).value == 1.0
            by_pod = await per_pod(client, query, A, held.at)
            assert set(by_pod) == {name for name, _ in servers["web_a"]}
            assert sorted(v or 0.0 for v in by_pod.values()) == [0.0, 1.0]
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

        # The client gone, the color reads 0 from both its pods: drained.
        drained = await until_connections(client, idle, query)
        assert effective_connections(drained.get("chat", "web", A), ready=2).value == 0.0
