"""The start-up range query: its expression, its answer parsed strictly, a failure harmless."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from rainbowd.core.history import ConnectionHistory
from rainbowd.core.policy import ConnectionsQuery, Policy, PrometheusSettings
from rainbowd.daemon.cycles import seed_history
from rainbowd.prom.querying import (
    PrometheusAPIError,
    PrometheusBadResponse,
    PrometheusError,
    PrometheusPartialData,
)
from rainbowd.prom.ranges import parse_matrix, range_expression

QUERY = ConnectionsQuery(matchers='job="chat"')
LABELS = {"namespace": "ns", "app": "chat", "color": "aaaaaa"}


def test_the_expression_sums_per_color() -> None:
    assert range_expression(QUERY) == (
        'sum by (namespace, app, color) (rainbow_open_connections{job="chat"})'
    )
    free = ConnectionsQuery(metric=None, query="sum by (ns, svc, c) (x)", namespace_label="ns")
    assert range_expression(free) == "sum by (ns, app, color) (sum by (ns, svc, c) (x))"


def matrix(result: object) -> bytes:
    return json.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": result}}
    ).encode()


def test_a_matrix_becomes_points_per_color() -> None:
    body = matrix(
        [
            {
                "metric": {"namespace": "ns", "app": "chat", "color": "aaaaaa"},
                "values": [[100, "5"], [130.5, "4"], [160, "NaN"], [190, "-1"]],
            },
            {"metric": {"namespace": "ns", "app": "chat"}, "values": [[100, "1"]]},
        ]
    )
    assert parse_matrix(200, body, QUERY) == {
        ("ns", "chat", "aaaaaa"): [(100.0, 5.0), (130.5, 4.0)]
    }


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            b'{"status":"error","errorType":"bad_data","error":"parse error"}',
            PrometheusAPIError,
        ),
        (502, b"<html>bad gateway</html>", PrometheusAPIError),
        (
            200,
            b'{"status":"success","data":{"resultType":"vector","result":[]}}',
            PrometheusBadResponse,
        ),
        (200, matrix([{"metric": LABELS, "values": "x"}]), PrometheusBadResponse),
        (200, matrix([{"metric": LABELS, "values": [[1, "x"]]}]), PrometheusBadResponse),
        (200, matrix([{"metric": LABELS, "values": [["1", "2"]]}]), PrometheusBadResponse),
        (200, matrix([{"metric": LABELS, "values": [[True, "2"]]}]), PrometheusBadResponse),
        (200, matrix(["x"]), PrometheusBadResponse),
        (200, b"not json", PrometheusBadResponse),
        (
            200,
            json.dumps(
                {
                    "status": "success",
                    "data": {"resultType": "matrix", "result": []},
                    "warnings": ["remote read store-b: connection refused"],
                }
            ).encode(),
            PrometheusPartialData,
        ),
    ],
)
def test_bad_answers_raise(status: int, body: bytes, error: type[PrometheusError]) -> None:
    with pytest.raises(error):
        parse_matrix(status, body, QUERY)


async def test_a_failed_seed_is_logged_and_keeps_the_history() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = PrometheusSettings(url=f"http://127.0.0.1:{port}", timeout=timedelta(seconds=2))
    history = ConnectionHistory()
    history.add(("ns", "chat", "aaaaaa"), 1000.0, 7.0)
    async with aiohttp.ClientSession() as session:
        await seed_history(
            history,
            session,
            Policy(rules=(), prometheus=settings),
            [QUERY],
            now=datetime.now(UTC),
            interval=30.0,
        )
    assert dict(history) == {("ns", "chat", "aaaaaa"): [(1000.0, 7.0)]}


def test_an_error_names_what_prometheus_said() -> None:
    body = b'{"status":"error","errorType":"bad_data","error":"1:5: parse error"}'
    with pytest.raises(
        PrometheusAPIError, match=r"^prometheus error \(bad_data\): 1:5: parse error$"
    ):
        parse_matrix(400, body, QUERY)
    with pytest.raises(
        PrometheusAPIError, match=r"^prometheus HTTP 502: <html>bad gateway </html>$"
    ):
        parse_matrix(502, b"<html>bad gateway\n</html>", QUERY)
