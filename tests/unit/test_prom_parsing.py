"""Parsing Prometheus answers and grouping series into per-color connections, without a server."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rainbowd.core.model import (
    DRAINED_SINCE,
    LIVE_AT,
    NO_SERIES,
    RETIRED_AT,
    Connections,
    PrometheusErrorCause,
    State,
)
from rainbowd.core.planner import plan
from rainbowd.core.policy import ConnectionsQuery
from rainbowd.prom.querying import (
    NEGATIVE_PART,
    PART_LABEL,
    PODS_PART,
    SUM_PART,
    PrometheusAPIError,
    PrometheusBadResponse,
    QueryResult,
    Sample,
    SummaryReader,
    Vector,
    format_duration,
    format_timestamp,
    group_connections,
    parse_response,
    summary_expr,
)
from tests.unit.strategies import NOW, H, deployment, policy, service, snapshot, stamp

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
QUERY = ConnectionsQuery()


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def envelope(result: list[Any], **extra: Any) -> bytes:
    return body({"status": "success", "data": {"resultType": "vector", "result": result}} | extra)


def test_parses_values_as_strings_including_special_floats() -> None:
    vec = parse_response(
        200,
        envelope(
            [
                {"metric": {"color": "a"}, "value": [1.5, "3"]},
                {"metric": {"color": "b"}, "value": [1, "NaN"]},
                {"metric": {"color": "c"}, "value": [1, "+Inf"]},
                {"metric": {"color": "d"}, "value": [1, "-Inf"]},
                {"metric": {"color": "e"}, "value": [1, "1e+06"]},
            ]
        ),
    )
    values = [s.value for s in vec]
    assert values[0] == 3.0
    assert math.isnan(values[1])
    assert values[2:4] == [math.inf, -math.inf]
    assert values[4] == 1e6
    assert vec.warnings == ()


@pytest.mark.parametrize(
    "item",
    [
        {"metric": {"color": "a"}, "value": [1, 3]},  # a bare number: not the API's shape
        {"metric": {"color": "a"}, "value": ["1", "3"]},
        {"metric": {"color": "a"}, "value": [True, "3"]},  # a JSON `true` is no time
        {"metric": {"color": "a"}, "value": [1]},
        {"metric": {"color": "a"}},
        {"metric": {"color": 1}, "value": [1, "3"]},
        {"metric": ["color"], "value": [1, "3"]},
        {"metric": {"color": "a"}, "value": [1, "three"]},
        "not an object",
    ],
)
def test_malformed_samples_are_a_bad_response(item: Any) -> None:
    with pytest.raises(PrometheusBadResponse, match="vector item 0"):
        parse_response(200, envelope([item]))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"status": "success"}, "prometheus answered without data"),
        (
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}},
            "prometheus returned a scalar, expected a vector",
        ),
        (
            {"status": "success", "data": {"resultType": "vector", "result": {}}},
            "prometheus answered a vector that is not a list",
        ),
        ([1, 2], "prometheus answered non-JSON: [1, 2]"),
    ],
)
def test_wrong_shapes(doc: Any, message: str) -> None:
    with pytest.raises(PrometheusBadResponse) as raised:
        parse_response(200, body(doc))
    assert raised.value.cause == message


def test_error_status_without_error_fields_still_names_the_status() -> None:
    with pytest.raises(PrometheusAPIError) as raised:
        parse_response(503, body({"status": "error"}))
    assert raised.value.cause == "prometheus error (http 503): no error message"
    assert raised.value.http_status == 503


def test_a_success_envelope_with_an_error_status_code_is_still_an_error() -> None:
    with pytest.raises(PrometheusAPIError):
        parse_response(500, envelope([]))


def test_long_error_text_is_cut_short() -> None:
    with pytest.raises(PrometheusAPIError) as raised:
        parse_response(
            422, body({"status": "error", "errorType": "execution", "error": "x" * 5000})
        )
    assert len(raised.value.cause) < 250
    assert raised.value.cause.endswith("...")
    # The full text stays on the exception for whoever wants it.
    assert raised.value.error == "x" * 5000


def test_warnings_are_kept() -> None:
    vec = parse_response(200, envelope([], warnings=["store b: timeout"]))
    assert vec.warnings == ("store b: timeout",)


def test_empty_label_values_name_no_color() -> None:
    vec = Vector(
        samples=(
            Sample({"namespace": "n", "app": "a", "color": ""}, 5.0),
            Sample({"namespace": "n", "app": "a", "color": "c"}, 2.0),
        )
    )
    result = group_connections(QUERY, vec, at=AT)
    assert dict(result.by_color) == {("n", "a", "c"): Connections(value=2.0, series=1)}
    assert result.warnings == ("1 series without all of the labels namespace, app, color ignored",)


def test_a_bad_series_makes_its_color_unknown_whatever_the_order() -> None:
    good = Sample({"namespace": "n", "app": "a", "color": "c"}, 2.0)
    bad = Sample({"namespace": "n", "app": "a", "color": "c"}, -1.0)
    for samples in ((good, bad), (bad, good)):
        result = group_connections(QUERY, Vector(samples=samples), at=AT)
        conn = result.get("n", "a", "c")
        assert not conn.known
        assert conn.cause == "prometheus returned a negative count (-1)"


def part_item(color: str, part: str, value: str, **extra: str) -> dict[str, Any]:
    metric = {"namespace": "n", "app": "a", "color": color, PART_LABEL: part, **extra}
    return {"metric": metric, "value": [1700000000.0, value]}


def summary_items(color: str, value: str, pods: str) -> list[dict[str, Any]]:
    """A color's two parts of the summary answer: its sum and its pod count."""
    return [part_item(color, SUM_PART, value), part_item(color, PODS_PART, pods)]


def test_the_summary_reader_checks_every_series_it_has_not_seen_as_it_is() -> None:
    reader = SummaryReader(QUERY)
    items = [*summary_items("c", "5", "3"), *summary_items("d", "1", "1")]
    items += summary_items("", "2", "1")
    first = reader.read(items, at=AT)
    assert dict(first.by_color) == {
        ("n", "a", "c"): Connections(value=5.0, series=3),
        ("n", "a", "d"): Connections(value=1.0, series=1),
    }
    assert first.warnings == (
        "series without all of the labels namespace, app, color ignored (2 summary series)",
    )
    assert reader.read(items, at=AT).by_color is first.by_color
    # The parts in any order join the same.
    assert reader.read(items[::-1], at=AT).by_color is first.by_color
    # A negative series for a color read as last time still makes it unknown, and only while
    # it is there.
    negative = part_item("c", NEGATIVE_PART, "2")
    with_negative = reader.read([*items, negative], at=AT)
    assert (
        with_negative.get("n", "a", "c").cause == "prometheus returned a negative count (2 series)"
    )
    assert with_negative.get("n", "a", "d") == Connections(value=1.0, series=1)
    assert reader.read(items, at=AT).get("n", "a", "c") == Connections(value=5.0, series=3)
    # Two sums for one color, even one read as last time, say nothing trustworthy.
    twice = reader.read([*items, part_item("c", SUM_PART, "5")], at=AT)
    assert not twice.get("n", "a", "c").known
    assert reader.read(items, at=AT).get("n", "a", "c") == Connections(value=5.0, series=3)
    # A sum without its pod count, or a pod count without its sum: unknown, that color only.
    for lone in (part_item("c", SUM_PART, "5"), part_item("c", PODS_PART, "3")):
        alone = reader.read([lone, *summary_items("d", "1", "1")], at=AT)
        assert not alone.get("n", "a", "c").known
        assert alone.get("n", "a", "d") == Connections(value=1.0, series=1)
    # A pod count that is no count.
    for pods, cause in (("0", "counted 0 pods"), ("2.5", "counted 2.5 pods"), ("x", "'x'")):
        got = reader.read(summary_items("c", "5", pods), at=AT).get("n", "a", "c")
        assert not got.known
        assert cause in got.cause


def test_an_answer_as_last_time_but_for_its_time_is_not_read_again() -> None:
    def answer(at: float, value: str, warnings: list[str] | None = None) -> bytes:
        items = [*summary_items("c", value, "3"), *summary_items("d", "1", "1")]
        for item in items:
            item["value"][0] = at
        extra = {"warnings": warnings} if warnings else {}
        return envelope(items, **extra)

    reader = SummaryReader(QUERY)
    first, warnings = reader.read_answer(200, answer(1700000000.5, "5"), at=AT)
    assert first is not None and warnings == ()
    later, _ = reader.read_answer(200, answer(1700000030.25, "5"), at=AT)
    assert later is not None and later.by_color is first.by_color
    moved, _ = reader.read_answer(200, answer(1700000060.0, "6"), at=AT)
    assert moved is not None and moved.get("n", "a", "c") == Connections(value=6.0, series=3)
    # Partial data is never taken for an answer, nor remembered as one.
    partial, warnings = reader.read_answer(200, answer(1700000090.0, "6", ["store down"]), at=AT)
    assert partial is None and warnings == ("store down",)
    with pytest.raises(PrometheusAPIError):
        reader.read_answer(503, answer(1700000090.0, "6"), at=AT)
    again, _ = reader.read_answer(200, answer(1700000120.0, "6"), at=AT)
    assert again is not None and again.get("n", "a", "c") == Connections(value=6.0, series=3)


def written(metric: dict[str, str], time: str, value: str) -> str:
    """One series of an answer, its time and value written as given (JSON or not)."""
    return f'{{"metric":{json.dumps(metric, separators=(",", ":"))},"value":[{time},{value}]}}'


def outcome(reader: SummaryReader, answer: bytes) -> object:
    """What reading `answer` gives: each color's connections and the warnings, or the fault."""
    try:
        result, warnings = reader.read_answer(200, answer, at=AT)
    except PrometheusBadResponse as exc:
        return exc.cause
    if result is None:
        return warnings
    return dict(result.by_color), result.warnings


def test_an_answer_with_the_series_of_the_last_one_has_its_values_read() -> None:
    def answer(time: str, value: str, pods: str = '"3"') -> bytes:
        metric = {"namespace": "n", "app": "a", PART_LABEL: SUM_PART}
        series = [
            written(metric | {"color": "c"}, time, value),
            written(metric | {"color": "c", PART_LABEL: PODS_PART}, time, pods),
            written(metric | {"color": "d"}, time, '"1"'),
            written(metric | {"color": "d", PART_LABEL: PODS_PART}, time, '"1"'),
        ]
        head = '{"status":"success","data":{"resultType":"vector","result":['
        return f"{head}{','.join(series)}]}}}}".encode()

    reader = SummaryReader(QUERY)
    first = outcome(reader, answer("1700000000.5", '"5"'))
    assert first == (
        {("n", "a", "c"): Connections(5.0, 3), ("n", "a", "d"): Connections(1.0, 1)},
        (),
    )
    assert outcome(reader, answer("1700000030", '"6"'))[0][("n", "a", "c")] == Connections(6, 3)  # type: ignore[index]
    assert outcome(reader, answer("1700000060", '"NaN"', '"4"'))[0][("n", "a", "c")] == (  # type: ignore[index]
        Connections.unknown("prometheus returned NaN")
    )
    # What is not a sample as Prometheus writes it is read in full, and fails as it would.
    for time, value in (("1.2.3", '"5"'), ('"1"', '"5"'), ("1", "5"), ("1", '"five"')):
        assert isinstance(outcome(reader, answer("1", '"5"')), tuple)  # the last answer read
        fault = outcome(reader, answer(time, value))
        assert isinstance(fault, str) and fault.startswith("prometheus")
        assert fault == outcome(SummaryReader(QUERY), answer(time, value))
    # An escaped value is unescaped, as JSON reads it.
    assert outcome(reader, answer("1", '"5\\n"'))[0][("n", "a", "c")] == Connections(5, 3)  # type: ignore[index]
    assert outcome(reader, answer("1700000090", '"7"', '"x"'))[0][("n", "a", "c")] == (  # type: ignore[index]
        Connections.unknown("prometheus counted 'x' pods")
    )


_colors = st.lists(st.sampled_from(["c", "d", "e"]), min_size=1, max_size=3, unique=True)
_times = st.sampled_from(["1700000000.5", "1700000000", "-1", "1e3", "1.2.3", '"1"', "01", "true"])
_values = st.one_of(
    st.sampled_from(['"0"', '"3"', '"5.5"', '"NaN"', '"+Inf"', '"-1"', '"x"', '""', "5", "null"]),
    st.text(max_size=3).map(json.dumps),
)


@st.composite
def _layouts(draw: st.DrawFn) -> list[tuple[str, str]]:
    """The series of an answer: each (color, part), the usual two per color or not."""
    usual = [(color, part) for color in draw(_colors) for part in (SUM_PART, PODS_PART)]
    others = st.lists(st.sampled_from(usual), max_size=6)
    return draw(st.one_of(st.just(usual), st.permutations(usual), others))


@given(
    _layouts(),
    st.lists(
        st.tuples(
            _layouts() | st.none(),
            st.lists(st.tuples(st.integers(0, 5), st.tuples(_times, _values)), max_size=2),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_a_reader_reads_each_answer_as_a_new_reader_would(
    layout: list[tuple[str, str]],
    answers: list[tuple[list[tuple[str, str]] | None, list[tuple[int, tuple[str, str]]]]],
) -> None:
    """Answers one after another, each with the series of the one before or others, and a few
    of its times or values written anew, as Prometheus writes them or not: whatever the reader
    keeps from the last answer, each reads as it would read alone."""
    reader = SummaryReader(QUERY)
    samples = [("1700000000.5", '"3"')] * 6
    for other, changes in answers:
        layout = other or layout
        for index, sample in changes:
            samples[index] = sample
        series = [
            written({"namespace": "n", "app": "a", "color": color, PART_LABEL: part}, *sample)
            for (color, part), sample in zip(layout, samples, strict=False)
        ]
        head = '{"status":"success","data":{"resultType":"vector","result":['
        answer = f"{head}{','.join(series)}]}}}}".encode()
        assert outcome(reader, answer) == outcome(SummaryReader(QUERY), answer)


@pytest.mark.parametrize(
    "item",
    [
        {"metric": {"namespace": "n", "app": "a", "color": "c"}, "value": [1, "5"]},
        part_item("c", "count", "5"),
        {
            "metric": {"namespace": "n", "app": "a", "color": "c", PART_LABEL: "sum"},
            "value": [1, 5],
        },
        {"metric": {"namespace": "n", "app": "a", "color": "c", PART_LABEL: 3}, "value": [1, "5"]},
        part_item("c", SUM_PART, "five"),
        part_item("c", NEGATIVE_PART, "two"),
        ["metric"],
    ],
)
def test_a_series_that_is_no_part_of_the_summary_fails_it(item: Any) -> None:
    reader = SummaryReader(QUERY)
    reader.read(summary_items("c", "5", "3"), at=AT)
    with pytest.raises(PrometheusBadResponse):
        reader.read([item, part_item("c", PODS_PART, "3")], at=AT)


def test_query_result_get() -> None:
    ok = QueryResult(query=QUERY, at=AT, by_color={("n", "a", "c"): Connections(1.0, 1)})
    assert ok.get("n", "a", "c") == Connections(1.0, 1)
    assert ok.get("n", "a", "other") is NO_SERIES
    failed = QueryResult(
        query=QUERY,
        at=AT,
        by_color=ok.by_color,
        error="prometheus down",
        error_cause=PrometheusErrorCause.UNREACHABLE,
    )
    assert failed.get("n", "a", "c") == Connections.unknown("prometheus down")
    assert not failed.ok


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=10), "10s"),
        (timedelta(minutes=2), "120s"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(milliseconds=200), "200ms"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


def test_format_timestamp_needs_an_aware_time() -> None:
    assert format_timestamp(datetime(1970, 1, 1, 0, 1, 0, 500000, tzinfo=UTC)) == "60.500"
    plus_one = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(1970, 1, 1, 1, 1, tzinfo=plus_one)) == "60.000"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 3, 1, 12, 0))


# Every cause the client writes starts with one of these: the daemon classifies errors by them.
CAUSE_PREFIXES = (
    "prometheus unreachable",
    "prometheus timed out",
    "prometheus HTTP",
    "prometheus error",
    "partial data",
    "prometheus answered",
    "prometheus returned",
    "prometheus vector",
)


@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (200, b"not json"),
        (502, b"<html>bad gateway</html>"),
        (400, body({"status": "error", "errorType": "bad_data", "error": "parse error"})),
        (200, body({"status": "success", "data": {"resultType": "matrix", "result": []}})),
        (200, envelope([{"metric": {}, "value": [1, 2]}])),
        (200, body({"status": "success", "data": {"resultType": "vector", "result": 1}})),
    ],
)
def test_causes_keep_their_documented_prefixes(status: int, raw: bytes) -> None:
    with pytest.raises((PrometheusAPIError, PrometheusBadResponse)) as raised:
        parse_response(status, raw)
    assert raised.value.cause.startswith(CAUSE_PREFIXES)


labels = st.fixed_dictionaries(
    {
        "namespace": st.sampled_from(["n1", "n2"]),
        "app": st.sampled_from(["web", "chat"]),
        "color": st.sampled_from(["3c3fdc", "9d2cc9", "ffffff"]),
    },
    optional={
        "pod": st.sampled_from(["p1", "p2", "p3"]),
        "instance": st.sampled_from(["10.0.0.1:8080", "10.0.0.2:8080"]),
        "job": st.sampled_from(["chat", "chat-blackbox"]),
    },
)
counts = st.integers(min_value=0, max_value=10_000)


def pod_of(m: dict[str, str]) -> object:
    return m.get("pod") or m.get("instance") or frozenset(m.items())


@given(st.lists(st.tuples(labels, counts), max_size=30))
def test_grouping_sums_the_series_and_counts_the_pods_present(
    series: list[tuple[dict[str, str], int]],
) -> None:
    vec = Vector(samples=tuple(Sample(dict(m), float(v)) for m, v in series))
    metric = group_connections(QUERY, vec, at=AT)
    free = group_connections(ConnectionsQuery(metric=None, query="q"), vec, at=AT)
    for ns in ("n1", "n2"):
        for app in ("web", "chat"):
            for color in ("3c3fdc", "9d2cc9", "ffffff"):
                mine = [
                    (m, v)
                    for m, v in series
                    if (m["namespace"], m["app"], m["color"]) == (ns, app, color)
                ]
                if not mine:
                    # Never a zero for a color nobody reports.
                    assert metric.get(ns, app, color) is NO_SERIES
                    assert free.get(ns, app, color) is NO_SERIES
                    continue
                total = float(sum(v for _, v in mine))
                pods = len({pod_of(m) for m, _ in mine})
                assert metric.get(ns, app, color) == Connections(total, pods)
                assert free.get(ns, app, color) == Connections(total, None)


def sample(pod: str, value: float, **extra: str) -> Sample:
    return Sample({"namespace": "n1", "app": "chat", "color": "3c3fdc", "pod": pod, **extra}, value)


@pytest.mark.parametrize(
    "samples",
    [
        # One pod scraped by two jobs; the other pod, holding a client, not scraped at all.
        [sample("chat-1", 0, job="chat"), sample("chat-1", 0, job="chat-blackbox")],
        # One pod's gauge split by protocol.
        [sample("chat-1", 0, protocol="ws"), sample("chat-1", 0, protocol="xmpp")],
    ],
)
def test_several_series_of_one_pod_never_cover_a_pod_not_scraped(samples: list[Sample]) -> None:
    got = group_connections(QUERY, Vector(samples=tuple(samples)), at=AT).get(
        "n1", "chat", "3c3fdc"
    )
    assert got.series == 1
    retired = deployment(
        "3c3fdc",
        app="chat",
        namespace="n1",
        replicas=2,
        annotations={RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(H)},
    )
    live = deployment("9d2cc9", app="chat", namespace="n1", annotations={LIVE_AT: stamp(H)})
    snap = snapshot(
        [live, retired],
        [service({"app": "chat", "color": "9d2cc9"}, name="chat", namespace="n1")],
        {("n1", "chat", "3c3fdc"): got},
    )
    p = plan(snap, policy(app="chat"), NOW)
    (c,) = [c for a in p.apps for c in a.colors if c.color == "3c3fdc"]
    assert c.state is State.UNKNOWN_CONNECTIONS
    assert not [a for a in p.actions if a.disruptive]


def test_more_series_than_pods_is_full_coverage() -> None:
    samples = [sample(pod, 0, protocol=proto) for pod in ("a", "b") for proto in ("ws", "tcp")]
    got = group_connections(QUERY, Vector(samples=tuple(samples)), at=AT).get(
        "n1", "chat", "3c3fdc"
    )
    assert got == Connections(0.0, 2)


def test_pods_fall_back_to_the_instance_label() -> None:
    samples = [
        Sample({"namespace": "n1", "app": "chat", "color": "c", "instance": i, "job": j}, 1)
        for i in ("10.0.0.1:80", "10.0.0.2:80")
        for j in ("a", "b")
    ]
    got = group_connections(QUERY, Vector(samples=tuple(samples)), at=AT).get("n1", "chat", "c")
    assert got == Connections(4.0, 2)


def test_the_pod_label_is_configurable() -> None:
    query = ConnectionsQuery(pod_label="kubernetes_pod_name")
    samples = [
        Sample(
            {"namespace": "n1", "app": "chat", "color": "c", "kubernetes_pod_name": "x", "j": j}, 1
        )
        for j in ("a", "b")
    ]
    got = group_connections(query, Vector(samples=tuple(samples)), at=AT).get("n1", "chat", "c")
    assert got == Connections(2.0, 1)


def test_the_summary_is_plain_aggregations_a_sharding_backend_splits() -> None:
    expr = summary_expr(QUERY)
    # count_values is the aggregation Mimir's and VictoriaMetrics' sharding does not split.
    assert "count_values" not in expr
    assert "group_left" not in expr
    parts = expr.split(" or ")
    assert [part.split("(")[1].split(" ")[0] for part in parts] == ["sum", "count", "count"]
