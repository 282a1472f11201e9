"""The Prometheus adapter against a scripted fake server on loopback: each fault becomes unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from rainbowd.core.history import ConnectionHistory
from rainbowd.core.model import NO_SERIES, Connections, PrometheusErrorCause
from rainbowd.core.policy import ConnectionsQuery, Policy, PrometheusSettings
from rainbowd.daemon.cycles import seed_history
from rainbowd.prom import (
    PrometheusAPIError,
    PrometheusBadResponse,
    PrometheusClient,
    PrometheusError,
    PrometheusPartialData,
    PrometheusTimeout,
    PrometheusUnreachable,
    fetch_connections,
)
from rainbowd.prom.querying import (
    NEGATIVE_PART,
    PART_LABEL,
    PODS_PART,
    RECORDED_NEGATIVE,
    RECORDED_PODS,
    RECORDED_SUM,
    SUM_PART,
    QueryResult,
    summary_expr,
)
from rainbowd.prom.ranges import fetch_range, range_expression
from tests.fakeprom import FakePrometheus, Reply, fakeprom, vector

__all__ = ["fakeprom"]

AT = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
METRIC = ConnectionsQuery(matchers='job="chat"')
FREE = ConnectionsQuery(metric=None, query="sum by (namespace, app, color) (x)")


def labels(ns: str, app: str, color: str, **extra: str) -> dict[str, str]:
    return {"__name__": "rainbow_open_connections", "namespace": ns, "app": app, "color": color} | (
        extra
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def summary(*colors: tuple[str, str, str, str, str], **extra: str) -> dict[str, object]:
    """The answer to the summary query: (namespace, app, color, sum, pods) per color."""
    series = [
        ({"namespace": ns, "app": app, "color": color, PART_LABEL: part}, value)
        for ns, app, color, total, pods in colors
        for part, value in ((SUM_PART, total), (PODS_PART, pods))
    ]
    return vector(*series, **extra)  # type: ignore[arg-type]


def client_for(session: aiohttp.ClientSession, url: str, timeout: float = 10.0) -> PrometheusClient:
    return PrometheusClient(
        session, PrometheusSettings(url=url, timeout=timedelta(seconds=timeout))
    )


async def test_per_pod_mode_sums_and_counts_series_per_color(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(
        body=vector(
            (labels("chat", "web", "3c3fdc", pod="a"), "4"),
            (labels("chat", "web", "3c3fdc", pod="b"), "1.5"),
            (labels("chat", "web", "9d2cc9", pod="c"), "0"),
            (labels("other", "web", "3c3fdc", pod="d"), "7"),
        )
    )
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT, per_pod=True)
    assert result.error is None
    assert result.get("chat", "web", "3c3fdc") == Connections(value=5.5, series=2)
    assert result.get("chat", "web", "9d2cc9") == Connections(value=0.0, series=1)
    assert result.get("other", "web", "3c3fdc") == Connections(value=7.0, series=1)
    # Absent from the answer: unknown, never zero.
    assert result.get("chat", "web", "ffffff") == NO_SERIES
    assert not result.get("chat", "web", "ffffff").known


async def test_one_form_post_with_pinned_time_and_timeout(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    await client_for(session, fakeprom.url, timeout=2.5).connections(METRIC, at=AT)
    assert len(fakeprom.requests) == 1
    req = fakeprom.requests[0]
    assert req.method == "POST"
    assert req.path == "/api/v1/query"
    assert req.content_type == "application/x-www-form-urlencoded"
    assert req.query_string == {}
    assert req.form["query"] == summary_expr(METRIC)
    assert float(req.form["time"]) == pytest.approx(AT.timestamp(), abs=0.001)
    assert req.form["timeout"] == "2500ms"


async def test_free_query_mode_sums_without_series_counts(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(
        body=vector(
            ({"namespace": "chat", "app": "web", "color": "3c3fdc"}, "3"),
            ({"namespace": "chat", "app": "web", "color": "3c3fdc", "zone": "b"}, "2"),
        )
    )
    result = await client_for(session, fakeprom.url).connections(FREE, at=AT)
    assert fakeprom.requests[0].form["query"] == FREE.query
    assert result.get("chat", "web", "3c3fdc") == Connections(value=5.0, series=None)


async def test_custom_label_names_group_the_series(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    query = ConnectionsQuery(
        namespace_label="kubernetes_namespace", app_label="label_app", color_label="label_color"
    )
    fakeprom.reply = Reply(
        body=vector(
            ({"kubernetes_namespace": "n", "label_app": "a", "label_color": "c", "pod": "p1"}, "2"),
            ({"kubernetes_namespace": "n", "label_app": "a", "label_color": "c", "pod": "p2"}, "3"),
        )
    )
    result = await client_for(session, fakeprom.url).connections(query, at=AT, per_pod=True)
    assert result.get("n", "a", "c") == Connections(value=5.0, series=2)


@pytest.mark.parametrize(
    ("raw", "cause"),
    [("NaN", "NaN"), ("+Inf", "+Inf"), ("-Inf", "-Inf"), ("-2", "negative")],
)
async def test_bad_values_make_only_that_color_unknown(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession, raw: str, cause: str
) -> None:
    fakeprom.reply = Reply(
        body=vector(
            (labels("chat", "web", "3c3fdc", pod="a"), "4"),
            (labels("chat", "web", "3c3fdc", pod="b"), raw),
            (labels("chat", "web", "9d2cc9", pod="c"), "1"),
        )
    )
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT, per_pod=True)
    assert result.error is None
    bad = result.get("chat", "web", "3c3fdc")
    assert not bad.known
    assert cause in bad.cause
    assert result.get("chat", "web", "9d2cc9") == Connections(value=1.0, series=1)


async def test_series_missing_a_label_are_ignored_with_a_warning(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(
        body=vector(
            (labels("chat", "web", "3c3fdc"), "4"),
            ({"namespace": "chat", "app": "web"}, "100"),
            ({"namespace": "chat", "color": "3c3fdc"}, "100"),
        )
    )
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT, per_pod=True)
    assert result.error is None
    assert result.get("chat", "web", "3c3fdc") == Connections(value=4.0, series=1)
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("2 series")


def unknown_everywhere(result_get: Connections, cause: str) -> None:
    assert not result_get.known
    assert result_get.cause == cause


async def test_status_error_in_a_200(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(
        body={"status": "error", "errorType": "execution", "error": "many-to-many matching"}
    )
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT)
    assert result.error == "prometheus error (execution): many-to-many matching"
    unknown_everywhere(result.get("chat", "web", "3c3fdc"), result.error)


@pytest.mark.parametrize(
    ("status", "error_type", "error"),
    [
        (503, "timeout", "query timed out in expression evaluation"),
        (422, "execution", "query processing would load too many samples into memory"),
        (400, "bad_data", 'invalid parameter "query": 1:10: parse error'),
    ],
)
async def test_http_errors_with_prometheus_error_body(
    fakeprom: FakePrometheus,
    session: aiohttp.ClientSession,
    status: int,
    error_type: str,
    error: str,
) -> None:
    fakeprom.reply = Reply(
        status=status, body={"status": "error", "errorType": error_type, "error": error}
    )
    client = client_for(session, fakeprom.url)
    result = await client.connections(METRIC, at=AT)
    assert result.error == f"prometheus error ({error_type}): {error}"
    with pytest.raises(PrometheusAPIError) as raised:
        await client.query("x", at=AT)
    assert raised.value.http_status == status
    assert raised.value.error_type == error_type


async def test_http_error_without_json_body_is_cut_short(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(status=502, body=b"<html>" + b"bad gateway " * 200 + b"</html>")
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT)
    assert result.error is not None
    assert result.error.startswith("prometheus HTTP 502: <html>bad gateway")
    assert len(result.error) < 260


async def test_non_json_body(fakeprom: FakePrometheus, session: aiohttp.ClientSession) -> None:
    fakeprom.reply = Reply(body=b"this is not json")
    client = client_for(session, fakeprom.url)
    result = await client.connections(METRIC, at=AT)
    assert result.error == "prometheus answered non-JSON: this is not json"
    with pytest.raises(PrometheusBadResponse):
        await client.query("x", at=AT)


async def test_wrong_result_type(fakeprom: FakePrometheus, session: aiohttp.ClientSession) -> None:
    fakeprom.reply = Reply(
        body={"status": "success", "data": {"resultType": "matrix", "result": []}}
    )
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT)
    assert result.error == "prometheus returned a matrix, expected a vector"


async def test_warnings_mean_partial_data(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(
        body=vector(
            (labels("chat", "web", "3c3fdc"), "4"),
            warnings=["remote read store-b: connection refused"],
        )
    )
    client = client_for(session, fakeprom.url)
    result = await client.connections(METRIC, at=AT)
    assert result.error == "partial data: remote read store-b: connection refused"
    assert result.warnings == ("remote read store-b: connection refused",)
    # Even the colors that did come back are unknown: their sum may be missing pods.
    unknown_everywhere(result.get("chat", "web", "3c3fdc"), result.error)
    vec = await client.query("x", at=AT)
    assert vec.warnings == ("remote read store-b: connection refused",)


async def test_hang_past_the_timeout(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(hang=True)
    client = client_for(session, fakeprom.url, timeout=0.2)
    result = await client.connections(METRIC, at=AT)
    assert result.error == "prometheus timed out after 200ms"
    with pytest.raises(PrometheusTimeout) as raised:
        await client.query("x", at=AT)
    assert isinstance(raised.value.__cause__, TimeoutError)


async def test_connection_refused(fakeprom: FakePrometheus, session: aiohttp.ClientSession) -> None:
    url = fakeprom.url
    await fakeprom.stop()
    client = client_for(session, url)
    result = await client.connections(METRIC, at=AT)
    assert result.error == "prometheus unreachable: connection refused"
    with pytest.raises(PrometheusUnreachable) as raised:
        await client.query("x", at=AT)
    assert isinstance(raised.value.__cause__, aiohttp.ClientConnectorError)


async def test_fetch_connections_sends_one_request_per_distinct_query(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(body=summary(("chat", "web", "3c3fdc", "4", "1")))
    other = ConnectionsQuery(matchers='job="other"')
    same_as_metric = ConnectionsQuery(matchers='job="chat"')
    results = await fetch_connections(
        client_for(session, fakeprom.url), [METRIC, other, same_as_metric, METRIC], at=AT
    )
    assert set(results) == {METRIC, other}
    assert sorted(r.form["query"] for r in fakeprom.requests) == sorted(
        [summary_expr(METRIC), summary_expr(other)]
    )
    assert {r.form["time"] for r in fakeprom.requests} == {f"{AT.timestamp():.3f}"}
    for q, result in results.items():
        assert result.query == q
        assert result.at == AT
        assert result.get("chat", "web", "3c3fdc") == Connections(value=4.0, series=1)


async def test_metric_mode_reads_the_summary_per_color(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(
        body=summary(("chat", "web", "3c3fdc", "5.5", "2"), ("chat", "web", "9d2cc9", "0", "1"))
    )
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT)
    assert result.error is None
    assert result.get("chat", "web", "3c3fdc") == Connections(value=5.5, series=2)
    assert result.get("chat", "web", "9d2cc9") == Connections(value=0.0, series=1)
    assert result.get("chat", "web", "ffffff") == NO_SERIES


@pytest.mark.parametrize(
    ("total", "pods", "cause"),
    [
        ("NaN", "2", "NaN"),
        ("+Inf", "2", "+Inf"),
        ("-1", "2", "negative"),
        ("3", "0", "counted 0 pods"),
        ("3", "NaN", "counted nan pods"),
    ],
)
async def test_bad_summary_values_make_only_that_color_unknown(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession, total: str, pods: str, cause: str
) -> None:
    fakeprom.reply = Reply(
        body=summary(("chat", "web", "3c3fdc", total, pods), ("chat", "web", "9d2cc9", "1", "1"))
    )
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT)
    bad = result.get("chat", "web", "3c3fdc")
    assert not bad.known
    assert cause in bad.cause
    assert result.get("chat", "web", "9d2cc9") == Connections(value=1.0, series=1)


async def answer_with(
    session: aiohttp.ClientSession, fakeprom: FakePrometheus, labels: dict[str, str], value: str
) -> QueryResult:
    """The connections read from a summary of one good color (9d2cc9) and one series more."""
    answer = summary(("chat", "web", "9d2cc9", "1", "1"))
    answer["data"]["result"].append(  # type: ignore[index]
        {"metric": {"namespace": "chat", "app": "web", **labels}, "value": [1700000000.0, value]}
    )
    fakeprom.reply = Reply(body=answer)
    return await client_for(session, fakeprom.url).connections(METRIC, at=AT)


async def test_a_negative_series_hidden_in_the_sum_makes_its_color_unknown(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    result = await answer_with(
        session, fakeprom, {"color": "9d2cc9", PART_LABEL: NEGATIVE_PART}, "1"
    )
    got = result.get("chat", "web", "9d2cc9")
    assert not got.known
    assert got.cause == "prometheus returned a negative count (1 series)"


async def test_a_sum_without_its_pod_count_is_unknown(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    result = await answer_with(session, fakeprom, {"color": "3c3fdc", PART_LABEL: SUM_PART}, "0")
    assert result.error is None
    assert result.get("chat", "web", "3c3fdc").cause == "no pod count for this color"
    assert result.get("chat", "web", "9d2cc9") == Connections(value=1.0, series=1)


async def test_a_series_no_part_of_the_summary_fails_the_query(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    result = await answer_with(session, fakeprom, {"color": "3c3fdc"}, "0")
    assert result.error is not None
    assert result.error.startswith(f"prometheus answered a series without a {PART_LABEL} label")
    assert not result.get("chat", "web", "3c3fdc").known
    assert not result.get("chat", "web", "9d2cc9").known


async def test_an_answer_read_as_last_time_is_kept_and_a_changed_one_read_anew(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    client = client_for(session, fakeprom.url)
    fakeprom.reply = Reply(
        body=summary(("chat", "web", "3c3fdc", "4", "2"), ("chat", "web", "9d2cc9", "1", "1"))
    )
    first = await client.connections(METRIC, at=AT)
    again = await client.connections(METRIC, at=AT)
    assert again.by_color is first.by_color
    # One color loses a pod: only it reads anew, and the coverage figure follows.
    fakeprom.reply = Reply(
        body=summary(("chat", "web", "3c3fdc", "4", "1"), ("chat", "web", "9d2cc9", "1", "1"))
    )
    moved = await client.connections(METRIC, at=AT)
    assert moved.by_color is not first.by_color
    assert moved.get("chat", "web", "3c3fdc") == Connections(value=4.0, series=1)
    assert moved.get("chat", "web", "9d2cc9") is first.get("chat", "web", "9d2cc9")
    # A failed query in between forgets nothing it should not: the next answer reads as sent.
    fakeprom.reply = Reply(status=503, body=b"down")
    assert not (await client.connections(METRIC, at=AT)).ok
    fakeprom.reply = Reply(body=summary(("chat", "web", "3c3fdc", "NaN", "1")))
    last = await client.connections(METRIC, at=AT)
    assert last.get("chat", "web", "3c3fdc").cause == "prometheus returned NaN"
    assert last.get("chat", "web", "9d2cc9") == NO_SERIES


async def test_raw_series_where_a_summary_was_asked_fail_the_query(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    # Something other than Prometheus evaluating the query (a proxy, a cache) answering raw
    # series: nothing in them can be trusted as a per-color summary.
    fakeprom.reply = Reply(body=vector((labels("chat", "web", "3c3fdc", pod="a"), "4")))
    result = await client_for(session, fakeprom.url).connections(METRIC, at=AT)
    assert result.error is not None
    assert result.error.startswith("prometheus answered a series without")
    assert not result.get("chat", "web", "3c3fdc").known


# --- the start-up range query: the same faults, the same causes --------------------------------

RANGE_START = AT - timedelta(minutes=10)
RANGE_ENTRY = {
    "metric": {"namespace": "chat", "app": "web", "color": "3c3fdc"},
    "values": [[1700000000.0, "4"], [1700000030.0, "3"]],
}


def matrix(**extra: object) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "matrix", "result": [RANGE_ENTRY]}} | extra


async def fetch_range_from(
    session: aiohttp.ClientSession, url: str, seconds: float = 10.0
) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    settings = PrometheusSettings(url=url, timeout=timedelta(seconds=seconds))
    return await fetch_range(
        session, settings, METRIC, start=RANGE_START, end=AT, step=timedelta(seconds=30)
    )


async def test_a_range_query_posts_its_window_and_reads_the_matrix(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fakeprom.reply = Reply(body=matrix())
    points = await fetch_range_from(session, fakeprom.url, seconds=2.5)
    assert points == {("chat", "web", "3c3fdc"): [(1700000000.0, 4.0), (1700000030.0, 3.0)]}
    (req,) = fakeprom.requests
    assert (req.method, req.path) == ("POST", "/api/v1/query_range")
    assert req.form == {
        "query": range_expression(METRIC),
        "start": f"{RANGE_START.timestamp():.3f}",
        "end": f"{AT.timestamp():.3f}",
        "step": "30s",
        "timeout": "2500ms",
    }


@pytest.mark.parametrize(
    ("reply", "error", "cause", "message"),
    [
        (
            Reply(status=500, body=b"internal server error"),
            PrometheusAPIError,
            PrometheusErrorCause.HTTP,
            "prometheus HTTP 500: internal server error",
        ),
        (
            Reply(body={"status": "error", "errorType": "execution", "error": "out of memory"}),
            PrometheusAPIError,
            PrometheusErrorCause.QUERY,
            "prometheus error (execution): out of memory",
        ),
        (
            Reply(
                status=503,
                body={"status": "error", "errorType": "unavailable", "error": "TSDB not ready"},
            ),
            PrometheusAPIError,
            PrometheusErrorCause.QUERY,
            "prometheus error (unavailable): TSDB not ready",
        ),
        (
            Reply(body=matrix(warnings=["remote read store-b: connection refused"])),
            PrometheusPartialData,
            PrometheusErrorCause.QUERY,
            "partial data: remote read store-b: connection refused",
        ),
        (
            Reply(body=b"this is not json"),
            PrometheusBadResponse,
            PrometheusErrorCause.BAD_RESPONSE,
            "prometheus answered non-JSON: this is not json",
        ),
        (
            Reply(body=vector((labels("chat", "web", "3c3fdc"), "4"))),
            PrometheusBadResponse,
            PrometheusErrorCause.BAD_RESPONSE,
            "prometheus returned a vector, expected a matrix",
        ),
        (
            Reply(hang=True),
            PrometheusTimeout,
            PrometheusErrorCause.TIMEOUT,
            "prometheus timed out after 200ms",
        ),
    ],
    ids=["http500", "status-error", "http503", "warnings", "non-json", "vector", "hang"],
)
async def test_a_range_query_fault_raises_with_its_cause(
    fakeprom: FakePrometheus,
    session: aiohttp.ClientSession,
    reply: Reply,
    error: type[PrometheusError],
    cause: PrometheusErrorCause,
    message: str,
) -> None:
    fakeprom.reply = reply
    with pytest.raises(error) as raised:
        await fetch_range_from(session, fakeprom.url, seconds=0.2)
    assert raised.value.cause == message
    assert raised.value.error_cause is cause
    assert fakeprom.requests[0].path == "/api/v1/query_range"


async def test_a_range_query_to_nobody_is_unreachable(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    url = fakeprom.url
    await fakeprom.stop()
    with pytest.raises(PrometheusUnreachable) as raised:
        await fetch_range_from(session, url)
    assert raised.value.cause == "prometheus unreachable: connection refused"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(hang=True),
        Reply(status=500, body=b"internal server error"),
        Reply(body={"status": "error", "errorType": "execution", "error": "out of memory"}),
        Reply(body=matrix(warnings=["remote read store-b: connection refused"])),
    ],
    ids=["hang", "http500", "status-error", "warnings"],
)
async def test_a_failed_range_query_seeds_nothing(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession, reply: Reply
) -> None:
    settings = PrometheusSettings(url=fakeprom.url, timeout=timedelta(seconds=0.2))
    policy = Policy(rules=(), prometheus=settings)
    history = ConnectionHistory()
    history.add(("chat", "web", "3c3fdc"), 1700000060.0, 7.0)

    async def seed() -> None:
        await seed_history(history, session, policy, [METRIC], now=AT, interval=30.0)

    fakeprom.reply = reply
    await seed()
    assert len(fakeprom.requests) == 1
    assert dict(history) == {("chat", "web", "3c3fdc"): [(1700000060.0, 7.0)]}
    # The same history seeds from a good answer: the failure above was the fault's alone.
    fakeprom.reply = Reply(body=matrix())
    await seed()
    assert dict(history)[("chat", "web", "3c3fdc")][0] == (1700000000.0, 4.0)


# What each part of the recorded answer is recorded as.
RECORDED_NAMES = {
    SUM_PART: RECORDED_SUM,
    PODS_PART: RECORDED_PODS,
    NEGATIVE_PART: RECORDED_NEGATIVE,
}


def recorded(*series: tuple[str, str, list[tuple[float, str]]]) -> dict[str, object]:
    """The answer to the recorded read (a range selection, so a matrix): (color, part, its
    samples as (seconds before AT, value), oldest first) per series, in namespace chat, app
    web."""
    result = [
        {
            "metric": {
                "__name__": RECORDED_NAMES[part],
                "namespace": "chat",
                "app": "web",
                "color": color,
                PART_LABEL: part,
            },
            "values": [[round(AT.timestamp() - ago, 3), value] for ago, value in samples],
        }
        for color, part, samples in series
    ]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


async def test_a_recorded_answer_stands_until_the_next_evaluation_is_due_unless_it_failed(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    query = ConnectionsQuery(recorded=True, rule_interval=timedelta(seconds=15))
    client = client_for(session, fakeprom.url)
    # The oldest figure recorded half a second before AT: the next evaluation is due at 14.5 s.
    fakeprom.reply = Reply(
        body=recorded(
            ("3c3fdc", SUM_PART, [(15.5, "9"), (0.5, "4")]),
            ("3c3fdc", PODS_PART, [(15.5, "3"), (0.5, "2")]),
        )
    )
    first = await client.connections(query, at=AT)
    later = await client.connections(query, at=AT + timedelta(seconds=14))
    assert len(fakeprom.requests) == 1
    assert later.by_color is first.by_color and later.at == AT + timedelta(seconds=14)
    assert later.get("chat", "web", "3c3fdc") == Connections(value=4.0, series=2)
    # Due: the probe for the next evaluation fails, so the whole answer is asked for, and a
    # failed answer is never used again.
    fakeprom.reply = Reply(status=503, body=b"down")
    assert not (await client.connections(query, at=AT + timedelta(seconds=15))).ok
    probe, whole = (r.form["query"] for r in fakeprom.requests[1:])
    assert probe.startswith("timestamp(") and whole == summary_expr(query)
    assert not (await client.connections(query, at=AT + timedelta(seconds=16))).ok
    assert len(fakeprom.requests) == 4
    # An answer without a figure is not used again either.
    fakeprom.reply = Reply(body=recorded())
    await client.connections(query, at=AT + timedelta(seconds=17))
    await client.connections(query, at=AT + timedelta(seconds=17))
    assert len(fakeprom.requests) == 6


async def test_the_recorded_read_is_one_range_selection_each_figure_judged_by_its_newest_time(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    query = ConnectionsQuery(recorded=True, rule_interval=timedelta(seconds=10))
    fakeprom.reply = Reply(
        body=recorded(
            # Its newest figures, recorded 1 s ago, count (not the older ones).
            ("aaaaaa", SUM_PART, [(21, "0"), (11, "0"), (1, "5")]),
            ("aaaaaa", PODS_PART, [(21, "1"), (11, "1"), (1, "2")]),
            # Negative series, recorded in the last evaluation: unknown.
            ("dddddd", SUM_PART, [(1, "0")]),
            ("dddddd", PODS_PART, [(1, "2")]),
            ("dddddd", NEGATIVE_PART, [(1, "1")]),
            # Ended: not recorded by the last evaluation of its rule (Prometheus marked it
            # stale), though less than two intervals old: missing, as from an instant query.
            ("eeeeee", SUM_PART, [(11, "0")]),
            ("eeeeee", PODS_PART, [(11, "2")]),
            # A negative count that ended: the color is read by its sum and pods.
            ("ffffff", SUM_PART, [(1, "2")]),
            ("ffffff", PODS_PART, [(1, "1")]),
            ("ffffff", NEGATIVE_PART, [(11, "1")]),
        )
    )
    result = await client_for(session, fakeprom.url).connections(query, at=AT)
    (request,) = fakeprom.requests
    assert request.form["query"] == (
        f'{{__name__=~"{RECORDED_SUM}|{RECORDED_PODS}|{RECORDED_NEGATIVE}"}}[30s]'
    )
    assert result.get("chat", "web", "aaaaaa") == Connections(value=5.0, series=2)
    assert result.get("chat", "web", "dddddd").cause == (
        "prometheus returned a negative count (1 series)"
    )
    assert result.get("chat", "web", "eeeeee").cause == (
        f"no series of the recording rule {RECORDED_SUM} for this color"
        " (group rainbowd-connections)"
    )
    assert result.get("chat", "web", "ffffff") == Connections(value=2.0, series=1)
    assert result.warnings == ()

    # Exactly two intervals old: still fresh.
    fakeprom.reply = Reply(
        body=recorded(("bbbbbb", SUM_PART, [(20, "3")]), ("bbbbbb", PODS_PART, [(20, "1")]))
    )
    result = await client_for(session, fakeprom.url).connections(query, at=AT)
    assert result.get("chat", "web", "bbbbbb") == Connections(value=3.0, series=1)

    # The pod counts older than two intervals (their rule no longer evaluated): unknown,
    # naming the rules, with a warning.
    fakeprom.reply = Reply(
        body=recorded(
            ("bbbbbb", SUM_PART, [(1, "3")]),
            ("bbbbbb", PODS_PART, [(25, "1")]),
            ("cccccc", SUM_PART, [(1, "0")]),
            ("cccccc", PODS_PART, [(25, "2")]),
        )
    )
    result = await client_for(session, fakeprom.url).connections(query, at=AT)
    stale = result.get("chat", "web", "cccccc")
    assert not stale.known and result.get("chat", "web", "bbbbbb") == stale
    assert stale.cause == (
        f"recorded series of the rules {RECORDED_SUM} and {RECORDED_PODS} (group"
        " rainbowd-connections) older than 20s: are the rules evaluated?"
    )
    assert result.warnings == (f"2 colors' {stale.cause}",)


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        ("NaN", "prometheus returned NaN"),
        ("+Inf", "prometheus returned +Inf"),
        ("-1", "prometheus returned a negative count (-1)"),
    ],
)
async def test_a_recorded_sum_not_a_count_is_unknown(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession, value: str, cause: str
) -> None:
    query = ConnectionsQuery(recorded=True, rule_interval=timedelta(seconds=10))
    fakeprom.reply = Reply(
        body=recorded(
            ("aaaaaa", SUM_PART, [(11, "0"), (1, value)]),
            ("aaaaaa", PODS_PART, [(11, "1"), (1, "1")]),
        )
    )
    result = await client_for(session, fakeprom.url).connections(query, at=AT)
    assert result.get("chat", "web", "aaaaaa").cause == cause


async def test_a_recorded_series_without_samples_is_a_bad_answer(
    fakeprom: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    query = ConnectionsQuery(recorded=True, rule_interval=timedelta(seconds=10))
    fakeprom.reply = Reply(body=recorded(("aaaaaa", SUM_PART, [])))
    result = await client_for(session, fakeprom.url).connections(query, at=AT)
    assert result.error_cause is PrometheusErrorCause.BAD_RESPONSE
    assert result.error == "prometheus matrix item 0 has no values: []"
    # An instant vector is not what a range selection answers.
    fakeprom.reply = Reply(body=summary(("chat", "web", "aaaaaa", "4", "2")))
    result = await client_for(session, fakeprom.url).connections(query, at=AT)
    assert result.error == "prometheus returned a vector, expected a matrix"
