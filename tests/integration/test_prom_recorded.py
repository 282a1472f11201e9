"""`connections.source: recorded` against the real Prometheus evaluating the recording rules
(`recording_rules`, the rule file check-policy prints and k8s/monitoring ships): the recorded
figures read as the raw series do, and a recorded figure too old or missing is unknown, naming
the rule."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml

from rainbowd.core.model import Connections
from rainbowd.core.planner.assess import effective_connections
from rainbowd.core.policy import ConnectionsQuery, PrometheusSettings
from rainbowd.prom import PrometheusClient, QueryResult
from rainbowd.prom.querying import RECORDED_PODS, RECORDED_SUM, RULE_GROUP, recording_rules
from rainbowd.prom.ranges import fetch_range, range_expression
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.demoapps import DemoApp
from tests.exposition import Exposition, gauge
from tests.integration.test_prom_real import (
    SERIES,
    A,
    close_streams,
    demos,
    eventually,
    open_streams,
    until_connections,
)

__all__ = ["demos"]

pytestmark = pytest.mark.prometheus

# The rules are evaluated every second, as Prometheus scrapes here.
EVERY = timedelta(seconds=1)


@pytest.fixture
async def client(prometheus: PrometheusServer) -> AsyncIterator[PrometheusClient]:
    async with aiohttp.ClientSession() as session:
        yield PrometheusClient(
            session, PrometheusSettings(url=prometheus.url, timeout=timedelta(seconds=5))
        )


def record(
    prometheus: PrometheusServer,
    query: ConnectionsQuery,
    tmp_path: Path,
    every: timedelta = EVERY,
) -> ConnectionsQuery:
    """Prometheus evaluating the recording rules of `query`'s metric every `every`; the query
    read as recorded (its matchers, which select the raw series, dropped: the recorded ones
    lack those labels)."""
    raw = dataclasses.replace(query, rule_interval=every)
    path = tmp_path / "recording-rules.yaml"
    path.write_text(yaml.safe_dump(recording_rules(raw), sort_keys=False))
    prometheus.set_rule_files([path])
    return dataclasses.replace(raw, recorded=True, matchers="")


# Series without a pod label: each counts as the pod its instance names (here the one target),
# beside the pods named by their label.
PODLESS = [
    ({"namespace": "chat", "app": "web", "color": "eeeeee"}, "6"),
    ({"namespace": "chat", "app": "web", "color": "ffffff", "protocol": "ws"}, "1"),
    ({"namespace": "chat", "app": "web", "color": "ffffff", "protocol": "xmpp"}, "2"),
    ({"namespace": "chat", "app": "web", "color": "ffffff", "pod": "f-1"}, "4"),
]


async def test_the_recorded_figures_read_as_the_raw_series_do(
    prometheus: PrometheusServer, client: PrometheusClient, tmp_path: Path
) -> None:
    metric = "rainbow_test_connections"
    raw = ConnectionsQuery(metric=metric, matchers='job="exposition"')
    recorded = record(prometheus, raw, tmp_path)
    with Exposition(gauge(metric, SERIES + PODLESS)) as target:
        prometheus.set_targets([(target.target, {})], job="exposition")

        async def agreeing() -> QueryResult | None:
            # The rules of one evaluation may see a scrape's samples at slightly different
            # moments: the first evaluations after a scrape can disagree, the next ones agree.
            at = datetime.now(UTC)
            got = await client.connections(recorded, at=at)
            direct = await client.connections(raw, at=at)
            wanted = got.get("chat", "web", "aaaaaa") == Connections(value=12.0, series=3)
            return got if wanted and got.by_color == direct.by_color else None

        got = await eventually(agreeing, "the recorded figures as the raw ones")
    assert got.error is None
    for color in ("bbbbbb", "cccccc", "dddddd"):
        assert not got.get("chat", "web", color).known
    assert got.get("chat", "web", "cccccc").cause == "prometheus returned +Inf"
    assert got.get("chat", "web", "eeeeee") == Connections(value=6.0, series=1)
    assert got.get("chat", "web", "ffffff") == Connections(value=7.0, series=2)


async def test_a_pod_scraped_twice_never_covers_a_pod_not_scraped(
    prometheus: PrometheusServer,
    client: PrometheusClient,
    demos: Callable[[str], DemoApp],
    tmp_path: Path,
) -> None:
    scraped, unscraped = demos(A), demos(A)
    prometheus.set_targets([(scraped.target, {})])
    prometheus.set_targets([(scraped.target, {})], job="twice")
    recorded = record(prometheus, ConnectionsQuery(matchers='job=~"targets|twice"'), tmp_path)
    streams = await open_streams(scraped, 1) + await open_streams(unscraped, 1)
    try:
        got = await until_connections(client, {A: Connections(value=2.0, series=1)}, recorded)
        checked = effective_connections(got.get("chat", "web", A), ready=2)
        assert checked.cause == "coverage: 1 of 2 ready pods report"
    finally:
        await close_streams(streams)


async def recorded_once(
    prometheus: PrometheusServer, client: PrometheusClient, tmp_path: Path
) -> tuple[ConnectionsQuery, QueryResult]:
    """SERIES recorded by the rules and read fresh, then no longer scraped."""
    metric = "rainbow_test_connections"
    recorded = record(prometheus, ConnectionsQuery(metric=metric), tmp_path)
    with Exposition(gauge(metric, SERIES)) as target:
        prometheus.set_targets([(target.target, {})], job="exposition")
        fresh = await until_connections(client, {"aaaaaa": Connections(12.0, 3)}, recorded)
    return recorded, fresh


def last_recorded(prometheus: PrometheusServer) -> datetime | None:
    """The time of the newest recorded sum or pod count, once the rules record none any more
    (Prometheus marked them stale: an instant selection answers none); else None."""
    figures = f'{{__name__=~"{RECORDED_SUM}|{RECORDED_PODS}"}}'
    if prometheus.api("query", {"query": figures})["result"]:
        return None
    series = prometheus.api("query", {"query": f"{figures}[5m]"})["result"]
    return datetime.fromtimestamp(max(item["values"][-1][0] for item in series), UTC)


async def test_a_recorded_figure_too_old_or_missing_is_unknown_naming_the_rule(
    prometheus: PrometheusServer, client: PrometheusClient, tmp_path: Path
) -> None:
    recorded, _ = await recorded_once(prometheus, client, tmp_path)

    async def ended() -> datetime | None:
        return last_recorded(prometheus)

    last = await eventually(ended, "the recorded series ended")
    # Asked at an instant the last recorded samples are older than two rule intervals, within
    # the window the recorded series are read over (three): unknown, naming the rule.
    later = await client.connections(recorded, at=last + 2.5 * EVERY)
    assert later.error is None
    old = later.get("chat", "web", "aaaaaa")
    assert not old.known
    assert RECORDED_SUM in old.cause and RULE_GROUP in old.cause and "older than 2s" in old.cause
    assert any(RECORDED_SUM in warning for warning in later.warnings)
    # Past the window nothing is recorded for the color: unknown, naming the rule.
    gone = await client.connections(recorded, at=last + 10 * EVERY)
    missing = gone.get("chat", "web", "aaaaaa")
    assert not missing.known
    assert missing.cause == f"no series of the recording rule {RECORDED_SUM} for this color" + (
        f" (group {RULE_GROUP})"
    )
    # And two intervals after the last samples, they are still fresh.
    fresh = await client.connections(recorded, at=last + 2 * EVERY)
    assert fresh.get("chat", "web", "aaaaaa") == Connections(12.0, 3)


@contextlib.asynccontextmanager
async def counting(
    prometheus: PrometheusServer, sent: list[str]
) -> AsyncIterator[PrometheusClient]:
    """A client of `prometheus` whose every request is added to `sent`."""

    async def count(_: object, __: object, params: aiohttp.TraceRequestStartParams) -> None:
        sent.append(str(params.url))

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(count)
    settings = PrometheusSettings(url=prometheus.url, timeout=timedelta(seconds=5))
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        yield PrometheusClient(session, settings)


def oldest_figure(prometheus: PrometheusServer, at: datetime) -> datetime:
    """The time of the oldest recorded sum or pod count Prometheus answers at `at`."""
    figures = f'{{__name__=~"{RECORDED_SUM}|{RECORDED_PODS}"}}'
    params = {"query": f"min(timestamp({figures}))", "time": f"{at.timestamp():.3f}"}
    found = prometheus.api("query", params)["result"]
    return datetime.fromtimestamp(float(found[0]["value"][1]), UTC)


async def test_the_recorded_series_are_read_once_an_evaluation_not_every_cycle(
    prometheus: PrometheusServer, client: PrometheusClient, tmp_path: Path
) -> None:
    metric = "rainbow_test_connections"
    recorded = record(prometheus, ConnectionsQuery(metric=metric), tmp_path)
    sent: list[str] = []
    with Exposition(gauge(metric, SERIES)) as target:
        prometheus.set_targets([(target.target, {})], job="exposition")
        fresh = await until_connections(client, {"aaaaaa": Connections(12.0, 3)}, recorded)
        async with counting(prometheus, sent) as counted:

            def evaluated(at: datetime) -> datetime:
                return oldest_figure(prometheus, at)

            # Asked at instants between two evaluations, Prometheus answers the first of them:
            # it is read once, then used again until the next evaluation is due.
            first = evaluated(fresh.at)
            read = await counted.connections(recorded, at=first + EVERY / 10)
            again = await counted.connections(recorded, at=first + EVERY / 2)
            assert len(sent) == 1
            assert again.at == first + EVERY / 2 and again.by_color is read.by_color
            assert again.get("chat", "web", "aaaaaa") == Connections(12.0, 3)

            # Once the next evaluation is due, every cycle asks again.
            due = first + EVERY + EVERY / 10

            async def next_evaluation() -> datetime | None:
                return due if evaluated(due) > first else None

            await eventually(next_evaluation, "the rules evaluated again")
            await counted.connections(recorded, at=due)
            # (the probe for the next evaluation, which is there, then the whole answer)
            assert len(sent) == 3
            # ...and an instant before the answer read is not served from it.
            await counted.connections(recorded, at=first + EVERY / 2)
            assert len(sent) == 4


async def test_the_history_is_seeded_from_the_recorded_sums(
    prometheus: PrometheusServer, client: PrometheusClient, tmp_path: Path
) -> None:
    recorded, fresh = await recorded_once(prometheus, client, tmp_path)
    assert range_expression(recorded) == f"sum by (namespace, app, color) ({RECORDED_SUM}{{}})"
    async with aiohttp.ClientSession() as session:
        points = await fetch_range(
            session,
            PrometheusSettings(url=prometheus.url, timeout=timedelta(seconds=5)),
            recorded,
            start=fresh.at - timedelta(seconds=10),
            end=fresh.at,
            step=EVERY,
        )
    assert points[("chat", "web", "aaaaaa")][-1][1] == 12.0


async def test_a_due_evaluation_not_recorded_yet_is_probed_for_with_one_series(
    prometheus: PrometheusServer, client: PrometheusClient, tmp_path: Path
) -> None:
    metric = "rainbow_test_connections"
    every = timedelta(seconds=10)
    recorded = record(prometheus, ConnectionsQuery(metric=metric), tmp_path, every=every)
    sent: list[str] = []
    with Exposition(gauge(metric, SERIES)) as target:
        prometheus.set_targets([(target.target, {})], job="exposition")
        fresh = await until_connections(client, {"aaaaaa": Connections(12.0, 3)}, recorded)
        first = oldest_figure(prometheus, fresh.at)
        async with counting(prometheus, sent) as counted:
            read = await counted.connections(recorded, at=first + every / 10)
            # Due a second ago, but asked at an instant the next evaluation has not reached yet
            # (it is 10 s away): only the probe is sent, and the answer read stands.
            later = await counted.connections(recorded, at=first + every + timedelta(seconds=1))
            assert len(sent) == 2
            assert later.by_color is read.by_color
            assert later.get("chat", "web", "aaaaaa") == Connections(12.0, 3)
            # Two intervals after its oldest figure, the whole answer is asked for (one range
            # selection, each figure with its time): stale, unknown, naming the rule.
            old = await counted.connections(recorded, at=first + 2 * every + timedelta(seconds=1))
            assert len(sent) == 3
            stale = old.get("chat", "web", "aaaaaa")
            assert not stale.known and RECORDED_SUM in stale.cause
