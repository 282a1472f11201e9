"""The Prometheus adapter against the real Prometheus, scraping real demo_app processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from rainbowd.core.model import NO_SERIES, Connections, PrometheusErrorCause
from rainbowd.core.planner.assess import effective_connections
from rainbowd.core.policy import (
    API_VERSION,
    KIND,
    ConnectionsQuery,
    PrometheusSettings,
    parse_policy,
)
from rainbowd.prom import PrometheusClient, QueryResult, fetch_connections
from rainbowd.prom import querying as q
from tests.backends import Backend, backend, query_requests
from tests.demoapps import DemoApp
from tests.exposition import Exposition, gauge

pytestmark = pytest.mark.prometheus
__all__ = ["backend"]

T = TypeVar("T")
# Generous: a 1 s scrape interval on a shared, busy machine.
DEADLINE = 45.0
A, B = "3c3fdc", "9d2cc9"
QUERY = ConnectionsQuery(matchers='job="targets"')
Streams = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[Callable[[str], DemoApp]]:
    started: list[DemoApp] = []

    def start(color: str) -> DemoApp:
        app = DemoApp(color, workdir=tmp_path, namespace="chat", app="web", interval=0.5)
        started.append(app)
        return app.start()

    try:
        yield start
    finally:
        for app in started:
            app.close()


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[PrometheusClient]:
    async with aiohttp.ClientSession() as session:
        yield PrometheusClient(
            session, PrometheusSettings(url=backend.url, timeout=timedelta(seconds=5))
        )


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = await check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {DEADLINE}s")
        await asyncio.sleep(0.2)


async def until_connections(
    client: PrometheusClient,
    expected: dict[str, Connections],
    query: ConnectionsQuery = QUERY,
) -> QueryResult:
    last: QueryResult | None = None

    async def check() -> QueryResult | None:
        nonlocal last
        last = await client.connections(query, at=datetime.now(UTC))
        seen = {color: last.get("chat", "web", color) for color in expected}
        return last if seen == expected else None

    try:
        return await eventually(check, f"connections {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last result: {last}") from None


async def open_streams(app: DemoApp, n: int) -> Streams:
    streams = [await asyncio.open_connection("127.0.0.1", app.tcp_port) for _ in range(n)]
    for reader, _ in streams:
        # The first line proves the server has accepted and counts the connection.
        assert (
            await asyncio.wait_for(reader.readline(), DEADLINE)
            == f"The color is #{app.color}\n".encode()
        )
    return streams


async def close_streams(streams: Streams) -> None:
    for _, writer in streams:
        writer.close()
        await writer.wait_closed()


async def test_sums_and_series_per_color_follow_the_connections(
    backend: Backend,
    client: PrometheusClient,
    demos: Callable[[str], DemoApp],
) -> None:
    before_any_scrape = datetime.now(UTC) - timedelta(minutes=5)
    a1, a2, b1 = demos(A), demos(A), demos(B)
    backend.set_targets([(a.target, {}) for a in (a1, a2, b1)])
    a1_streams = await open_streams(a1, 3)
    a2_streams = await open_streams(a2, 2)
    b1_streams = await open_streams(b1, 1)
    try:
        result = await until_connections(
            client, {A: Connections(value=5.0, series=2), B: Connections(value=1.0, series=1)}
        )
        assert result.error is None
        assert result.warnings == ()
        assert result.get("chat", "web", "ffffff") == NO_SERIES

        # Connections closing: the sum falls, every pod still reports.
        await close_streams(a1_streams[:2])
        await close_streams(b1_streams)
        await until_connections(
            client, {A: Connections(value=3.0, series=2), B: Connections(value=0.0, series=1)}
        )

        # A pod of A dies: its series goes stale at once. The sum drops with it, and only the
        # series count (1 of 2 ready pods) tells a lost pod from a drain.
        a2.close()
        await until_connections(
            client, {A: Connections(value=1.0, series=1), B: Connections(value=0.0, series=1)}
        )
    finally:
        await close_streams(a1_streams[2:] + a2_streams)

    # The query time is pinned: before the first scrape there was nothing, which is unknown.
    past = await client.connections(QUERY, at=before_any_scrape)
    assert past.error is None
    assert past.by_color == {}
    assert not past.get("chat", "web", A).known


async def test_free_query_sums_without_coverage(
    backend: Backend,
    client: PrometheusClient,
    demos: Callable[[str], DemoApp],
) -> None:
    a1, a2 = demos(A), demos(A)
    backend.set_targets([(a.target, {}) for a in (a1, a2)])
    streams = await open_streams(a1, 2) + await open_streams(a2, 1)
    free = ConnectionsQuery(
        metric=None, query="sum by (namespace, app, color) (rainbow_open_connections)"
    )
    try:
        await until_connections(client, {A: Connections(value=3.0, series=None)}, free)
    finally:
        await close_streams(streams)


async def test_one_request_per_distinct_query(
    backend: Backend,
    client: PrometheusClient,
    demos: Callable[[str], DemoApp],
) -> None:
    a1 = demos(A)
    backend.set_targets([(a1.target, {})])
    await until_connections(client, {A: Connections(value=0.0, series=1)})
    other = ConnectionsQuery(matchers='job="targets",instance!=""')
    before = await asyncio.to_thread(query_requests, backend)
    results = await fetch_connections(
        client,
        [QUERY, other, ConnectionsQuery(matchers='job="targets"'), QUERY],
        at=datetime.now(UTC),
    )

    # The backend's own request counter, read from /metrics, not through the query API
    # (VictoriaMetrics publishes its counters about a second late).
    async def counted() -> float | None:
        after = await asyncio.to_thread(query_requests, backend)
        return after if after - before >= 2 else None

    assert await eventually(counted, "the two queries counted") - before == 2
    assert set(results) == {QUERY, other}
    for result in results.values():
        assert result.get("chat", "web", A) == Connections(value=0.0, series=1)


async def test_prometheus_down_is_unknown_then_recovers(
    backend: Backend,
    client: PrometheusClient,
    demos: Callable[[str], DemoApp],
) -> None:
    a1 = demos(A)
    backend.set_targets([(a1.target, {})])
    await until_connections(client, {A: Connections(value=0.0, series=1)})

    await asyncio.to_thread(backend.stop)
    down = await client.connections(QUERY, at=datetime.now(UTC))
    assert down.error == "prometheus unreachable: connection refused"
    assert down.get("chat", "web", A) == Connections.unknown(down.error)

    await asyncio.to_thread(backend.start)
    await until_connections(client, {A: Connections(value=0.0, series=1)})


async def test_bad_matcher_is_a_query_error(backend: Backend, client: PrometheusClient) -> None:
    result = await client.connections(
        ConnectionsQuery(matchers='job=~"(unclosed"'), at=datetime.now(UTC)
    )
    assert result.error is not None
    # bad_data from Prometheus and Thanos, 422 from VictoriaMetrics: the backend's own error.
    assert result.error.startswith("prometheus error (")
    assert result.error_cause == PrometheusErrorCause.QUERY
    assert not result.get("chat", "web", A).known


async def test_a_pod_scraped_twice_never_covers_a_pod_not_scraped(
    backend: Backend,
    client: PrometheusClient,
    demos: Callable[[str], DemoApp],
) -> None:
    scraped, unscraped = demos(A), demos(A)
    # The scraped pod under two jobs: two series of one pod. The other pod of the color holds
    # a client and is scraped by nobody.
    backend.set_targets([(scraped.target, {})])
    backend.set_targets([(scraped.target, {})], job="twice")
    streams = await open_streams(scraped, 1) + await open_streams(unscraped, 1)
    both_jobs = ConnectionsQuery(matchers='job=~"targets|twice"')
    try:
        got = await until_connections(client, {A: Connections(value=2.0, series=1)}, both_jobs)
        assert got.warnings == ()
        # The raw per-pod shape agrees: one pod, two series.
        raw = await client.connections(both_jobs, at=got.at, per_pod=True)
        assert raw.get("chat", "web", A) == got.get("chat", "web", A)
        # With two ready pods, the color is unknown: the coverage check catches the pod
        # nobody scrapes, from the one series per color the summary answers.
        checked = effective_connections(got.get("chat", "web", A), ready=2)
        assert checked.value is None
        assert checked.cause == "coverage: 1 of 2 ready pods report"
    finally:
        await close_streams(streams)


def color_series(color: str, pod: str, value: str, **extra: str) -> tuple[dict[str, str], str]:
    return {"namespace": "chat", "app": "web", "color": color, "pod": pod, **extra}, value


SERIES = [
    # Three pods, one exporting its gauge split by protocol.
    color_series("aaaaaa", "a-1", "3", protocol="ws"),
    color_series("aaaaaa", "a-1", "2", protocol="xmpp"),
    color_series("aaaaaa", "a-2", "0"),
    color_series("aaaaaa", "a-3", "7"),
    # NaN, +Inf and a negative gauge each make their color unknown.
    color_series("bbbbbb", "b-1", "NaN"),
    color_series("bbbbbb", "b-2", "4"),
    color_series("cccccc", "c-1", "+Inf"),
    color_series("dddddd", "d-1", "-2"),
    color_series("dddddd", "d-2", "5"),
    # A series without a color names none.
    ({"namespace": "chat", "app": "web", "pod": "x"}, "9"),
]


async def test_the_summary_answers_as_the_per_pod_series_do(
    backend: Backend, client: PrometheusClient
) -> None:
    metric = "rainbow_test_connections"
    query = ConnectionsQuery(metric=metric, matchers='job="exposition"')
    with Exposition(gauge(metric, SERIES)) as target:
        backend.set_targets([(target.target, {})], job="exposition")
        summary = await until_connections(
            client, {"aaaaaa": Connections(value=12.0, series=3)}, query
        )
        raw = await client.connections(query, at=summary.at, per_pod=True)
    # Each color's pods, all ready. VictoriaMetrics stores no NaN (a NaN sample is dropped), so
    # there bbbbbb reads as its one other pod: the coverage check makes it unknown all the same.
    ready = {"bbbbbb": 2, "cccccc": 1, "dddddd": 2}
    for color, pods in ready.items():
        assert effective_connections(summary.get("chat", "web", color), pods).value is None, color
        assert effective_connections(raw.get("chat", "web", color), pods).value is None, color
    assert summary.get("chat", "web", "cccccc").cause == "prometheus returned +Inf"
    assert summary.get("chat", "web", "dddddd").cause.startswith(
        "prometheus returned a negative count"
    )
    assert set(summary.by_color) == set(raw.by_color)
    assert summary.warnings and raw.warnings


async def test_a_shard_s_policy_asks_only_for_its_namespaces_series(
    backend: Backend, client: PrometheusClient, tmp_path: Path
) -> None:
    """A rainbowd managing only `chat` (a shard) sends queries narrowed to it: the answer holds
    chat's colors and none of `other`'s, which the same policy unnarrowed answers too."""
    chat = DemoApp(A, workdir=tmp_path, namespace="chat", app="web", interval=0.5)
    other = DemoApp(B, workdir=tmp_path, namespace="other", app="web", interval=0.5)
    try:
        chat.start()
        other.start()
        backend.set_targets([(chat.target, {}), (other.target, {})])
        policy = parse_policy(
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "connections": {"metric": "rainbow_open_connections", "matchers": 'job="targets"'},
                "rules": [{"name": "all"}],
            }
        )
        await until_connections(client, {A: Connections(value=0.0, series=1)})
        (whole,) = policy.queries
        (narrowed,) = policy.narrowed(["chat"]).queries
        assert narrowed.selector == 'rainbow_open_connections{job="targets", namespace=~"chat"}'

        async def both_seen() -> dict[ConnectionsQuery, QueryResult] | None:
            results = await fetch_connections(client, [whole, narrowed], at=datetime.now(UTC))
            seen = {key[0] for key in results[whole].by_color}
            return results if seen == {"chat", "other"} else None

        results = await eventually(both_seen, "both namespaces' colors")
        assert dict(results[narrowed].by_color) == {
            ("chat", "web", A): Connections(value=0.0, series=1)
        }
        assert results[narrowed].get("other", "web", B) == NO_SERIES
    finally:
        chat.close()
        other.close()


# Series as the recording rules record them (`recording_rules`), served by a target here so
# every backend holds them: the sum, the pod count and, for one color, negative series (an
# infinite sum, not NaN: VictoriaMetrics stores no NaN).
RECORDED_SERIES = {
    q.RECORDED_SUM: [("aaaaaa", "5"), ("bbbbbb", "0"), ("cccccc", "+Inf")],
    q.RECORDED_PODS: [("aaaaaa", "2"), ("bbbbbb", "3"), ("cccccc", "1")],
    q.RECORDED_NEGATIVE: [("bbbbbb", "1")],
}


async def test_the_recorded_series_are_read_as_one_range_selection(
    backend: Backend, client: PrometheusClient
) -> None:
    parts = {
        q.RECORDED_SUM: q.SUM_PART,
        q.RECORDED_PODS: q.PODS_PART,
        q.RECORDED_NEGATIVE: q.NEGATIVE_PART,
    }
    families = "".join(
        gauge(
            name,
            [
                ({"namespace": "chat", "app": "web", "color": color, q.PART_LABEL: parts[name]}, v)
                for color, v in series
            ],
        )
        for name, series in RECORDED_SERIES.items()
    )
    recorded = ConnectionsQuery(recorded=True, rule_interval=timedelta(seconds=3))
    with Exposition(families) as target:
        backend.set_targets([(target.target, {})], job="recorded")
        got = await until_connections(client, {"aaaaaa": Connections(5.0, 2)}, recorded)
    assert got.error is None
    assert got.get("chat", "web", "bbbbbb").cause == (
        "prometheus returned a negative count (1 series)"
    )
    assert got.get("chat", "web", "cccccc").cause == "prometheus returned +Inf"
    # Read a window later the figures are older than two intervals: unknown, naming the rules.
    later = await client.connections(recorded, at=got.at + timedelta(seconds=6.5))
    assert later.error is None
    stale = later.get("chat", "web", "aaaaaa")
    assert not stale.known and q.RECORDED_PODS in stale.cause
