"""Asks Prometheus how many connections every color holds: one pinned instant query per distinct
connections query, parsed strictly, with every fault turned into an *unknown* result and a short
human cause. A missing series is unknown, never zero.

In metric mode the query asks Prometheus for a summary per color, not the raw per-pod series:
per color, the sum, the number of distinct pods reporting (the coverage check) and, only where
there are some, the number of negative series, each a plain aggregation marked by its part
label and joined per color here. No `count_values`: each part is a `sum` or a `count`, which
horizontally scaled backends (Thanos, Mimir, VictoriaMetrics) split across shards. The answer is
two series per color whatever the number of pods, where the raw series were one per pod and per
scrape job; `per_pod=True` still asks for the raw series, for whatever needs per-pod figures.

Reading the answer is most of a steady cycle's cost at 10,000 colors, so the client remembers
each color's last answer (its value and pod count as Prometheus wrote them) and converts and
checks only the series that changed; when none did, the previous cycle's mapping is returned
as it was, the same object. An answer with the series of the last one, only their times and
values written anew (every color's connections moving), is not decoded as JSON: its values are
read where they stand (`_Shape`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

import aiohttp

from rainbowd.core.model import NO_SERIES, Connections, PrometheusErrorCause
from rainbowd.core.policy import ConnectionsQuery, PrometheusSettings, series_expr
from rainbowd.core.policy.presets import DEFAULT
from rainbowd.logs import get_logger

log = get_logger(__name__)

# The client waits this much longer than the `timeout` it asks Prometheus for, so a slow query
# is normally ended by Prometheus itself, with its own error body, rather than by a cut socket.
_CLIENT_GRACE = timedelta(seconds=1)
# Messages carry at most this much of a body or an error text: enough to recognise it in a log
# line or an Event, not enough to flood them.
_MAX_TEXT = 200

ColorKey = tuple[str, str, str]
"""(namespace, app, color)"""

# The label marking each part of the summary answer (a color's sum, its pod count, its count of
# negative series), and the one carrying each series' pod (its pod label, else its instance)
# inside the query.
PART_LABEL = "rainbowd_part"
SUM_PART = "sum"
PODS_PART = "pods"
NEGATIVE_PART = "negative"
_PARTS = (SUM_PART, PODS_PART, NEGATIVE_PART)
# The series the recording rules record (`recording_rules`), one per part of the summary.
RECORDED_SUM = "rainbowd:connections:sum"
RECORDED_PODS = "rainbowd:connections_pods:count"
RECORDED_NEGATIVE = "rainbowd:connections_negative:count"
RULE_GROUP = "rainbowd-connections"
# The recorded series are read over this many rule intervals (`summary_expr`).
RECORDED_WINDOW = 3
_POD_KEY = "rainbowd_pod"


# --- errors -----------------------------------------------------------------------------------


class PrometheusError(Exception):
    """A query failed; `cause` is the short human sentence shown as the reason it is unknown,
    `error_cause` its class for metrics and logs (each subclass has its own)."""

    error_cause: PrometheusErrorCause

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class PrometheusUnreachable(PrometheusError):
    """No HTTP answer at all: connection refused, name not resolved, connection dropped."""

    error_cause = PrometheusErrorCause.UNREACHABLE


class PrometheusTimeout(PrometheusError):
    """No complete answer within the policy's timeout."""

    error_cause = PrometheusErrorCause.TIMEOUT


class PrometheusAPIError(PrometheusError):
    """Prometheus answered with an error: an HTTP error status or `status: error`. Without
    Prometheus' error envelope (`error_type` empty) something else answered: a proxy, a 5xx page."""

    def __init__(self, cause: str, *, http_status: int, error_type: str, error: str) -> None:
        super().__init__(cause)
        self.http_status = http_status
        self.error_type = error_type
        self.error = error
        self.error_cause = PrometheusErrorCause.QUERY if error_type else PrometheusErrorCause.HTTP


class PrometheusBadResponse(PrometheusError):
    """An answer that is not what the API documents: not JSON, wrong shape, wrong result type."""

    error_cause = PrometheusErrorCause.BAD_RESPONSE


class PrometheusPartialData(PrometheusError):
    """Prometheus answered with warnings: some of the data is missing, so what did come back may
    lack some pods' connections and pass for a drain."""

    error_cause = PrometheusErrorCause.QUERY

    def __init__(self, warnings: tuple[str, ...]) -> None:
        super().__init__("partial data: " + _shorten("; ".join(warnings)))
        self.warnings = warnings


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of an instant vector. `value` may be NaN or infinite: Prometheus sends those."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Vector:
    """An instant query's result, with Prometheus' warnings (they mean partial data)."""

    samples: tuple[Sample, ...]
    warnings: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Every color's connections as one connections query saw them at one instant."""

    query: ConnectionsQuery
    at: datetime
    by_color: Mapping[ColorKey, Connections] = field(default_factory=dict)
    error: str | None = None
    """The whole query failed: every color is unknown with this cause, a sentence for people."""
    error_cause: PrometheusErrorCause | None = None
    """The failure's class, set with `error` and only then: what metrics and logs go by."""
    warnings: tuple[str, ...] = ()
    """Problems that did not fail the query (series without the color labels...)."""
    missing: Connections = NO_SERIES
    """What a color absent from the answer is: unknown, with a cause saying where it was
    looked for (`missing_cause`)."""

    def __post_init__(self) -> None:
        if (self.error is None) != (self.error_cause is None):
            raise ValueError("a failed QueryResult needs both error and error_cause")

    @property
    def ok(self) -> bool:
        return self.error is None

    def get(self, namespace: str, app: str, color: str) -> Connections:
        if self.error is not None:
            return Connections.unknown(self.error)
        return self.by_color.get((namespace, app, color), self.missing)


# --- the client -------------------------------------------------------------------------------


class PrometheusClient:
    """Instant queries against one Prometheus server, over a session the caller owns."""

    def __init__(self, session: aiohttp.ClientSession, settings: PrometheusSettings) -> None:
        self._session = session
        self._settings = settings
        # Each summary query's reader, remembering the last answer.
        self._summaries: dict[ConnectionsQuery, SummaryReader] = {}

    @property
    def settings(self) -> PrometheusSettings:
        return self._settings

    async def query(self, expr: str, *, at: datetime) -> Vector:
        """One instant query evaluated at `at` (an aware datetime); raises PrometheusError."""
        status, body = await self._post(expr, at=at)
        return parse_response(status, body)

    async def _post(self, expr: str, *, at: datetime) -> tuple[int, bytes]:
        form = {"query": expr, "time": format_timestamp(at)}
        return await post_form(self._session, self._settings, "/api/v1/query", form)

    async def connections(
        self, query: ConnectionsQuery, *, at: datetime, per_pod: bool = False
    ) -> QueryResult:
        """Every color's connections; a Prometheus fault gives an unknown result, never raises.

        In metric mode Prometheus sums per color and counts the reporting pods itself
        (`summary_expr`); `per_pod` asks for the raw series instead and sums them here, for
        the same result at the cost of one series per pod in the answer."""
        summary = query.query is None and not per_pod
        expr = expression(query, per_pod=per_pod)
        shown = query.query if query.query is not None else query.selector
        result: QueryResult | None = None
        try:
            if summary:
                reader = self._summaries.get(query)
                if reader is None:
                    reader = self._summaries[query] = SummaryReader(query)
                reused = reader.reuse(at) or await self._probed(reader, at)
                if reused is not None:
                    return reused
                answer = await self._post(expr, at=at)
                result, warnings = reader.read_answer(*answer, at=at)
            else:
                vector = await self.query(expr, at=at)
                warnings = vector.warnings
                if not warnings:
                    result = group_connections(query, vector, at=at)
        except PrometheusError as exc:
            log.warning(
                "prometheus query failed",
                cause=exc.error_cause.value,
                error=exc.cause,
                query=_shorten(shown),
            )
            return QueryResult(query=query, at=at, error=exc.cause, error_cause=exc.error_cause)
        if result is None:
            partial = PrometheusPartialData(warnings)
            log.warning(
                "prometheus query failed",
                cause=partial.error_cause.value,
                error=partial.cause,
                query=_shorten(shown),
            )
            return QueryResult(
                query=query,
                at=at,
                error=partial.cause,
                error_cause=partial.error_cause,
                warnings=warnings,
            )
        for warning in result.warnings:
            log.warning("prometheus result partly ignored", cause=warning, query=_shorten(shown))
        return result

    async def _probed(self, reader: SummaryReader, at: datetime) -> QueryResult | None:
        """The last answer's result at `at` if, its next evaluation due, the rules have not
        recorded it yet (`SummaryReader.probe`: one series asked for); else None."""
        probe = reader.probe(at)
        if probe is None:
            return None
        try:
            vector = await self.query(probe, at=at)
        except PrometheusError:
            vector = None  # the whole answer is asked for, and its fault reported
        return reader.probed(vector, at)

    def retain(self, queries: Iterable[ConnectionsQuery]) -> None:
        """Forget the remembered answers of every query but these (the ones still asked)."""
        keep = set(queries)
        for query in [q for q in self._summaries if q not in keep]:
            del self._summaries[query]


async def post_form(
    session: aiohttp.ClientSession, settings: PrometheusSettings, path: str, form: dict[str, str]
) -> tuple[int, bytes]:
    """One form POST to an endpoint of Prometheus' query API (`path`, as `/api/v1/query`),
    asking Prometheus to give up after the settings' timeout: the HTTP status and body, whatever
    they say (`parse_document` reads them); raises PrometheusTimeout or PrometheusUnreachable
    when no complete answer comes."""
    url = settings.url.rstrip("/") + path
    limit = format_duration(settings.timeout)
    client_timeout = aiohttp.ClientTimeout(total=(settings.timeout + _CLIENT_GRACE).total_seconds())
    try:
        async with session.post(
            url, data=form | {"timeout": limit}, timeout=client_timeout
        ) as resp:
            return resp.status, await resp.read()
    except TimeoutError as exc:
        raise PrometheusTimeout(f"prometheus timed out after {limit}") from exc
    except aiohttp.ClientConnectorError as exc:
        raise PrometheusUnreachable(f"prometheus unreachable: {_connect_cause(exc)}") from exc
    except aiohttp.ClientError as exc:
        raise PrometheusUnreachable(
            f"prometheus unreachable: {_shorten(str(exc) or type(exc).__name__)}"
        ) from exc


async def fetch_connections(
    client: PrometheusClient, queries: Iterable[ConnectionsQuery], *, at: datetime
) -> dict[ConnectionsQuery, QueryResult]:
    """Runs every distinct query concurrently, all pinned to the same instant."""
    distinct = list(dict.fromkeys(queries))
    client.retain(distinct)
    results = await asyncio.gather(*(client.connections(q, at=at) for q in distinct))
    return dict(zip(distinct, results, strict=True))


# --- the query (pure) -------------------------------------------------------------------------


def expression(query: ConnectionsQuery, *, per_pod: bool = False) -> str:
    """The PromQL sent for `query`: the free query as written, else the summary per color, or
    the raw per-pod series with `per_pod`."""
    if query.query is not None:
        return query.query
    return query.selector if per_pod else summary_expr(query)


def summary_expr(query: ConnectionsQuery) -> str:
    """One query answering, per color, its parts as plain aggregations, each marked by
    PART_LABEL: `sum`, the connections summed by Prometheus (NaN or infinite if any series is);
    `pods`, the number of distinct pods reporting, a pod being its pod label, else its
    `instance` (series with neither count as one pod together, which can only make the coverage
    check stricter); and, only where a color has some, `negative`, its number of negative
    series (a negative gauge summed in would hide connections). rainbowd joins them per color.

    With `query.recorded`, the parts are the series the recording rules record
    (`recording_rules`), selected as recorded over the last RECORDED_WINDOW rule intervals (one
    range selection, answered as a matrix): each figure comes with the times it was recorded,
    the newest of which is read, and its age tells whether it is fresh.
    """
    if query.recorded:
        return _recorded_expr(query)
    return _parts(*_raw_parts(query))


def _by(query: ConnectionsQuery) -> str:
    return f"{query.namespace_label}, {query.app_label}, {query.color_label}"


def _raw_parts(query: ConnectionsQuery) -> tuple[str, str, str]:
    """The sum, the pod count and the negative count, from the raw series."""
    by = _by(query)
    sel = query.selector
    # label_replace leaves a series unchanged when the regex does not match: the pod label
    # overwrites the instance only where it is set.
    pod = (
        f'label_replace(label_replace({sel}, "{_POD_KEY}", "$1", "instance", "(.+)"),'
        f' "{_POD_KEY}", "$1", "{query.pod_label}", "(.+)")'
    )
    return (
        f"sum by ({by}) ({sel})",
        f"count by ({by}) (count by ({by}, {_POD_KEY}) ({pod}))",
        f"count by ({by}) ({sel} < 0)",
    )


def _recorded_expr(query: ConnectionsQuery) -> str:
    """The three parts as the rules recorded them, selected as they are (the recorded names
    tell the parts apart; each rule also marks its series with its part) over the last
    RECORDED_WINDOW rule intervals: longer than the two intervals after which a figure is
    stale, so a stale figure is still answered (and told apart from a missing one) for an
    interval, and the answer holds about RECORDED_WINDOW samples a series."""
    # The matchers (and the namespaces managed) narrow the recorded series, which keep the
    # namespace, app and color labels.
    matchers = f", {query.series_matchers}" if query.series_matchers else ""
    window = format_duration(RECORDED_WINDOW * query.rule_interval)
    return f'{{__name__=~"{RECORDED_SUM}|{RECORDED_PODS}|{RECORDED_NEGATIVE}"{matchers}}}[{window}]'


def _parts(*exprs: str) -> str:
    """The parts of a summary in one query, each marked by PART_LABEL."""
    return " or ".join(
        f'label_replace({expr}, "{PART_LABEL}", "{part}", "", "")'
        for part, expr in zip(_PARTS, exprs, strict=False)
    )


def recording_rules(query: ConnectionsQuery) -> dict[str, Any]:
    """The rule file (Prometheus' format) recording the raw parts of `query`'s summary every
    `query.rule_interval`: what `source: recorded` reads. The rules record every series of the
    metric; the query's matchers narrow the recorded series when they are read.

    With the default preset (whose narrowing by pod is exact) the pod count is the summary's,
    made cheaper to evaluate every interval: one entry of value 1 per pod, summed per color.
    Only the (usually no) series without a pod label are relabelled, their instance made their
    pod (`unnamed`, first: a pod named by both counts once, `or` keeping the first); every
    series is then grouped by its pod label, selected without a matcher on it (matching every
    value of the pod label costs Prometheus about as much as the selection itself), so the
    series without one make one more group per color, labelled by the color alone, which an
    entry of value 0 for each such color (`podless`) stands in for.
    """
    raw = dataclasses.replace(query, matchers="", recorded=False, namespaces=())
    total, pods, negative = _raw_parts(raw)
    if raw.preset == DEFAULT:
        by, pod = _by(raw), raw.pod_label
        without = series_expr(raw, {"pod": ""})
        unnamed = (
            f"group by ({by}, {pod}) (label_replace(group by ({by}, instance) ({without}),"
            f' "{pod}", "$1", "instance", "(.+)"))'
        )
        podless = f"group by ({by}) ({without}) * 0"
        named = f"group by ({by}, {pod}) ({series_expr(raw)})"
        pods = f"sum by ({by}) ({unnamed} or {podless} or {named})"
    # The pod count last: once a color's is recorded, its whole evaluation is (`probe`).
    rules = [
        {"record": name, "expr": expr, "labels": {PART_LABEL: part}}
        for name, expr, part in (
            (RECORDED_SUM, total, SUM_PART),
            (RECORDED_NEGATIVE, negative, NEGATIVE_PART),
            (RECORDED_PODS, pods, PODS_PART),
        )
    ]
    interval = format_duration(query.rule_interval)
    return {"groups": [{"name": RULE_GROUP, "interval": interval, "rules": rules}]}


def missing_cause(query: ConnectionsQuery) -> Connections:
    """What a color absent from the answer to `query` is."""
    if query.recorded:
        return Connections.unknown(
            f"no series of the recording rule {RECORDED_SUM} for this color (group {RULE_GROUP})"
        )
    return NO_SERIES


# --- parsing (pure) ---------------------------------------------------------------------------


def parse_response(status: int, body: bytes) -> Vector:
    """An HTTP status and body from /api/v1/query into a Vector; raises PrometheusError."""
    raw, warnings = parse_document(status, body)
    samples = tuple(_parse_sample(item, i) for i, item in enumerate(raw))
    return Vector(samples=samples, warnings=warnings)


def parse_document(
    status: int, body: bytes, result_type: str = "vector"
) -> tuple[list[Any], tuple[str, ...]]:
    """The envelope of a query's answer checked, holding a `result_type` (a vector for an
    instant query, a matrix for a range query): its result items, unchecked, and its warnings;
    raises PrometheusError."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        if status >= 400:
            raise PrometheusAPIError(
                f"prometheus HTTP {status}: {_shorten_body(body)}",
                http_status=status,
                error_type="",
                error=_shorten_body(body),
            )
        raise PrometheusBadResponse(f"prometheus answered non-JSON: {_shorten_body(body)}")
    if status >= 400 or doc.get("status") != "success":
        error_type = str(doc.get("errorType") or f"http {status}")
        error = str(doc.get("error") or "no error message")
        raise PrometheusAPIError(
            f"prometheus error ({error_type}): {_shorten(error)}",
            http_status=status,
            error_type=error_type,
            error=error,
        )
    data = doc.get("data")
    if not isinstance(data, dict):
        raise PrometheusBadResponse("prometheus answered without data")
    answered = data.get("resultType")
    if answered != result_type:
        raise PrometheusBadResponse(
            f"prometheus returned a {_shorten(str(answered))}, expected a {result_type}"
        )
    raw = data.get("result")
    if not isinstance(raw, list):
        raise PrometheusBadResponse(f"prometheus answered a {result_type} that is not a list")
    warnings = doc.get("warnings") or []
    if not isinstance(warnings, list):
        warnings = [warnings]
    return raw, tuple(str(w) for w in warnings)


def is_sample_time(value: Any) -> bool:
    """Whether `value`, decoded from an answer, is a sample's time: a JSON number (the API
    writes `[<unix time as a number>, "<value>"]`). Not a JSON `true`, an int to Python."""
    return type(value) is float or type(value) is int


def _parse_sample(item: Any, index: int) -> Sample:
    if not isinstance(item, dict):
        raise PrometheusBadResponse(f"prometheus vector item {index} is not an object")
    metric = item.get("metric", {})
    if not isinstance(metric, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metric.items()
    ):
        raise PrometheusBadResponse(f"prometheus vector item {index} has malformed labels")
    pair = item.get("value")
    # The API sends [<unix time as a number>, "<value as a string>"]; a bare number would mean
    # something else is answering.
    if (
        not isinstance(pair, list)
        or len(pair) != 2
        or not isinstance(pair[1], str)
        or not is_sample_time(pair[0])
    ):
        raise PrometheusBadResponse(
            f"prometheus vector item {index} has a malformed value: {_shorten(repr(pair))}"
        )
    try:
        value = float(pair[1])
    except ValueError:
        raise PrometheusBadResponse(
            f"prometheus vector item {index} has a non-numeric value: {_shorten(pair[1])}"
        ) from None
    return Sample(labels=MappingProxyType(dict(metric)), value=value)


def group_connections(query: ConnectionsQuery, vector: Vector, *, at: datetime) -> QueryResult:
    """Sums the series per (namespace, app, color); counts the pods reporting in metric mode.

    Pods, not series: a pod scraped by two jobs, or exporting a gauge split by protocol, gives
    several series, and counting those would let them stand in for a pod that is not scraped
    at all while it still holds clients. A pod is its `pod` label (configurable), else its
    `instance`, else the series itself.

    A color with any NaN, infinite or negative series is unknown: summing it in would give a
    number that means nothing, and a wrong low number looks like a drain.
    """
    label_names = (query.namespace_label, query.app_label, query.color_label)
    sums: dict[ColorKey, float] = {}
    pods: dict[ColorKey, set[object]] = {}
    bad: dict[ColorKey, str] = {}
    unlabelled = 0
    for sample in vector:
        key = _color_key(sample.labels, label_names)
        if key is None:
            unlabelled += 1
            continue
        pods.setdefault(key, set()).add(_pod_of(sample.labels, query.pod_label))
        if key in bad:
            continue
        problem = _bad_value(sample.value)
        if problem is not None:
            bad[key] = problem
            continue
        sums[key] = sums.get(key, 0.0) + sample.value

    counting = query.query is None
    by_color: dict[ColorKey, Connections] = {}
    for key, reporting in pods.items():
        if key in bad:
            by_color[key] = Connections.unknown(bad[key])
        else:
            by_color[key] = Connections(
                value=sums[key], series=len(reporting) if counting else None
            )
    warnings: list[str] = []
    if unlabelled:
        warnings.append(
            f"{unlabelled} series without all of the labels {', '.join(label_names)} ignored"
        )
    return QueryResult(
        query=query, at=at, by_color=MappingProxyType(by_color), warnings=tuple(warnings)
    )


_Read = tuple[str, str, Connections]
"""A color's summary as last read: its sum and pod count as written, and what they made."""


class SummaryReader:
    """Reads the answers to one query's `summary_expr`, cycle after cycle.

    A color is known only with a finite, non-negative sum and a pod count of at least one, and
    without negative series, as in `group_connections`. A series that is no part of the summary
    raises PrometheusBadResponse: something other than Prometheus evaluated the query. A color
    with a sum but no pod count, or the other way round, or either twice, is unknown.

    A color whose sum and pod count read exactly as last time is not converted again: its
    Connections of last time is kept (only figures that already passed every check are
    remembered). When no color changed, `read` returns last time's mapping, the same object.

    Recorded series are read with the times they were recorded (a matrix: the newest sample of
    each series is its figure). A figure its rule did not record at its last evaluation (older
    than the newest of that rule's by half an interval or more) has ended: Prometheus marked it
    stale, and it is missing, as from an instant query. A color whose sum or pod count is older
    than two rule intervals is unknown, naming the rules. Recorded series change only when the
    rules are evaluated: an answer is used again (`reuse`), without asking Prometheus, until a
    rule interval after the oldest figure it read, when the next evaluation is due; every
    figure it holds is then still less than two intervals old.
    """

    def __init__(self, query: ConnectionsQuery) -> None:
        self.query = query
        self._names = (query.namespace_label, query.app_label, query.color_label)
        # The labels of a color's part: its three and the part's, and the recorded name.
        self._width = 5 if query.recorded else 4
        self._matrix = query.recorded  # recorded series are read as a range selection
        self._last: dict[ColorKey, _Read] = {}
        self._by_color: Mapping[ColorKey, Connections] = MappingProxyType({})
        self._rebuilt = True  # _by_color holds more than _last's figures (negative counts)
        self._warnings: tuple[str, ...] = ()
        self._body: bytes | None = None  # the last answer read, without its evaluation time
        self._shape = _NO_SHAPE  # the last answer read, but for its values (raw summary only)
        self._made: dict[tuple[str, str], Connections] = {}
        self._missing = missing_cause(query)
        # The answer last read: when it was read, when the next evaluation is due, and until
        # when all of its figures are less than two rule intervals old, as Unix times; and the
        # query probing for the next evaluation (recorded series only).
        self._reusable: tuple[float, float, float] | None = None
        self._probe: str | None = None
        self._probed_key: ColorKey | None = None
        self._evaluated: float | None = None
        twice = 2 * query.rule_interval
        self._stale = Connections.unknown(
            f"recorded series of the rules {RECORDED_SUM} and {RECORDED_PODS} (group"
            f" {RULE_GROUP}) older than {format_duration(twice)}: are the rules evaluated?"
        )

    def reuse(self, at: datetime) -> QueryResult | None:
        """The last answer's result at `at`, if no evaluation of the rules is due since it was
        read (`at` before a rule interval after its oldest figure); else None: ask again."""
        if self._reusable is not None:
            read_at, due, _ = self._reusable
            if read_at <= at.timestamp() < due:
                return self._result(at)
        return None

    def probe(self, at: datetime) -> str | None:
        """Once the next evaluation is due: the query for the time of one color's recorded pod
        count (the last rule of the group: once it is recorded, the whole evaluation is),
        while every figure of the last answer is still fresh at `at`; else None."""
        if self._reusable is not None and self._probe is not None:
            read_at, _, fresh = self._reusable
            if read_at <= at.timestamp() < fresh:
                return self._probe
        self._reusable = None
        return None

    def probed(self, vector: Vector | None, at: datetime) -> QueryResult | None:
        """The last answer's result at `at` if the probe's answer (None: it failed) is the
        probed color's pod count recorded no later than the answer's oldest figure; else
        None, and the last answer is not used again: the whole answer is to be asked for."""
        evaluated = self._evaluated
        if vector is not None and not vector.warnings and vector and evaluated is not None:
            probed = self._probed_key
            times = [s.value for s in vector if _color_key(s.labels, self._names) == probed]
            if len(times) == len(vector) and all(t <= evaluated for t in times):
                return self._result(at)
        self._reusable = None
        return None

    def read_answer(
        self, status: int, body: bytes, *, at: datetime
    ) -> tuple[QueryResult | None, tuple[str, ...]]:
        """An HTTP answer to the query: the result, or None with Prometheus' warnings (partial
        data); raises PrometheusError. An instant answer byte for byte as last time but for its
        evaluation time is not parsed again: last time's result stands, the same mapping (a
        recorded answer is always read: whether its figures are fresh depends on `at`)."""
        self._reusable = self._probe = None
        timeless = _timeless(body) if status == 200 and not self._matrix else None
        if timeless is None or timeless != self._body:
            self._body = None
            if timeless is None or not self._shape.reread(self, body):
                with _collector_paused():
                    items, warnings = parse_document(
                        status, body, "matrix" if self._matrix else "vector"
                    )
                    if warnings:
                        return None, warnings
                    self.read(items, at=at)
                    self._shape = _Shape.learn(self, body, items) if timeless else _NO_SHAPE
                    del items
            self._body = timeless
        evaluated = self._evaluated
        read_at = at.timestamp()
        twice = 2 * self.query.rule_interval.total_seconds()
        if self.query.recorded and evaluated is not None and read_at - twice <= evaluated:
            # Never past a rule interval after the read either (a clock ahead of Prometheus').
            since = min(evaluated, read_at)
            seconds = self.query.rule_interval.total_seconds()
            self._reusable = (read_at, since + seconds, since + 2 * seconds)
            self._probe = self._probe_of(self._probed_key)
        return self._result(at), ()

    def read(self, items: list[Any], *, at: datetime) -> QueryResult:
        """The answer's result items into connections per color; raises PrometheusBadResponse."""
        sums: dict[ColorKey, str] = {}
        pods: dict[ColorKey, str] = {}
        unknown: dict[ColorKey, Connections] = {}
        twice: set[ColorKey] = set()
        unlabelled = 0
        found: list[tuple[ColorKey, str, str, float]] = []
        for index, item in enumerate(items):
            series = self._part(item, index)
            if series is None:
                unlabelled += 1
            else:
                found.append(series)
        stale = self._recorded(found, at) if self.query.recorded else set()
        for key, part, text, _ in found:
            if part == NEGATIVE_PART:
                count = _number(text)
                unknown[key] = Connections.unknown(
                    f"prometheus returned a negative count ({count:g} series)"
                )
            else:
                into = sums if part == SUM_PART else pods
                if key in into:
                    twice.add(key)
                into[key] = text
        for key in stale:
            unknown.setdefault(key, self._stale)
        self._probed_key = next(iter(pods), None)
        changed = self._join(sums, pods, twice)
        if changed or unknown or self._rebuilt:
            by_color = {key: entry[2] for key, entry in self._last.items()}
            for key, figure in unknown.items():
                if key in by_color:
                    by_color[key] = figure
            self._by_color = MappingProxyType(by_color)
            self._rebuilt = bool(unknown)
        warnings: list[str] = []
        if unlabelled:
            warnings.append(
                f"series without all of the labels {', '.join(self._names)} ignored"
                f" ({unlabelled} summary series)"
            )
        if stale:
            warnings.append(f"{len(stale)} colors' {self._stale.cause}")
        self._warnings = tuple(warnings)
        return self._result(at)

    @property
    def names(self) -> tuple[str, str, str]:
        """The labels naming a color: its namespace, app and color."""
        return self._names

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the answer last read had to warn of."""
        return self._warnings

    def join_values(self, sums: dict[ColorKey, str], pods: dict[ColorKey, str]) -> None:
        """An answer with the series of the last one (every one a color's sum or pod count,
        nothing to warn of) and these values, joined as `read` joins them (`_Shape`)."""
        if self._join(sums, pods, set()) or self._rebuilt:
            self._by_color = MappingProxyType({key: entry[2] for key, entry in self._last.items()})
            self._rebuilt = False
        self._warnings = ()

    def _recorded(
        self, found: list[tuple[ColorKey, str, str, float]], at: datetime
    ) -> set[ColorKey]:
        """The recorded figures that ended removed from `found` (their rule's last evaluation
        did not record them: at least half an interval older than the newest of that rule's);
        the colors whose sum or pod count is older than two rule intervals at `at`; the time of
        the oldest sum or pod count left as `_evaluated`. Comparisons are written so that a NaN
        time counts as old."""
        seconds = self.query.rule_interval.total_seconds()
        newest = dict.fromkeys(_PARTS, -math.inf)
        for _, part, _, time in found:
            if time > newest[part]:
                newest[part] = time
        ended = {part: time - seconds / 2 for part, time in newest.items()}
        oldest = at.timestamp() - 2 * seconds
        stale: set[ColorKey] = set()
        evaluated = math.inf
        kept = []
        for entry in found:
            _, part, _, time = entry
            if not time > ended[part]:
                continue
            kept.append(entry)
            if part != NEGATIVE_PART:
                evaluated = min(evaluated, time)
                if not time >= oldest:
                    stale.add(entry[0])
        found[:] = kept
        self._evaluated = evaluated if kept and evaluated < math.inf else None
        return stale

    def _probe_of(self, key: ColorKey | None) -> str | None:
        if key is None:
            return None
        matchers = ", ".join(
            f"{name}={json.dumps(value)}" for name, value in zip(self._names, key, strict=True)
        )
        return f'timestamp({{__name__="{RECORDED_PODS}", {matchers}}})'

    def _result(self, at: datetime) -> QueryResult:
        return QueryResult(
            query=self.query,
            at=at,
            by_color=self._by_color,
            warnings=self._warnings,
            missing=self._missing,
        )

    def _join(
        self, sums: dict[ColorKey, str], pods: dict[ColorKey, str], twice: set[ColorKey]
    ) -> bool:
        """Each color's sum and pod count made one Connections, kept from last time where they
        read the same; whether any color changed."""
        last = self._last
        read: dict[ColorKey, _Read] = {}
        changed = len(sums) != len(last) or len(pods) != len(last)
        # Connections are immutable: colors reading the same figures share one (the cache is
        # bounded, and starts afresh when full).
        made = self._made
        if len(made) > _MADE_MAX:
            made.clear()
        for key, text in sums.items():
            count = pods.get(key)
            before = last.get(key)
            if before is not None and before[0] == text and before[1] == count and not twice:
                read[key] = before
                continue
            changed = True
            if count is None or key in twice:
                cause = "prometheus answered two sums" if count is not None else "no pod count"
                read[key] = ("", "", Connections.unknown(f"{cause} for this color"))
                continue
            figures = made.get((text, count))
            if figures is None:
                figures = made[(text, count)] = _summary_connections(_number(text), count)
            read[key] = (text, count, figures)
        for key in pods.keys() - sums.keys() if len(pods) != len(read) else ():
            changed = True
            read[key] = ("", "", Connections.unknown("prometheus answered a pod count, no sum"))
        self._last = read
        return changed

    def _part(self, item: Any, index: int) -> tuple[ColorKey, str, str, float] | None:
        """One series of the answer: its color, its part, its value as written (a number) and
        the time of that value (a recorded series' newest sample), or None for a series naming
        no color; raises PrometheusBadResponse for anything else."""
        namespace_label, app_label, color_label = self._names
        try:
            metric = item["metric"]
            key = (metric[namespace_label], metric[app_label], metric[color_label])
            part = metric[PART_LABEL]
            # A matrix' values come oldest first.
            pair = item["values"][-1] if self._matrix else item["value"]
            text = pair[1]
        except (TypeError, KeyError, IndexError):
            part = None
        # The usual shape, checked in full but cheaply: _parse_sample's checks on the four
        # labels there are (and the recorded name). Anything else goes through _parse_sample.
        if (
            part in _PARTS
            and type(metric) is dict
            and len(metric) == self._width
            and (self._width == 4 or type(metric.get(_NAME)) is str)
            and type(text) is str
            and type(key[0]) is str
            and type(key[1]) is str
            and type(key[2]) is str
            and key[0]
            and key[1]
            and key[2]
            and type(pair) is list
            and len(pair) == 2
            and is_sample_time(pair[0])
        ):
            return key, part, text, pair[0]
        if self._matrix:
            item = _newest_sample(item, index)
        sample = _parse_sample(item, index)
        part = sample.labels.get(PART_LABEL)
        if part not in _PARTS:
            raise PrometheusBadResponse(
                f"prometheus answered a series without a {PART_LABEL} label of"
                f" {', '.join(_PARTS)}: {_shorten(str(dict(sample.labels)))}"
            )
        found = _color_key(sample.labels, self._names)
        if found is None:
            return None
        time, text = item["value"]
        return found, part, text, time


def _newest_sample(item: Any, index: int) -> dict[str, Any]:
    """A matrix item as the vector item of its newest sample (the last: they come oldest
    first); raises PrometheusBadResponse if it holds none."""
    values = item.get("values") if isinstance(item, dict) else None
    if not isinstance(values, list) or not values:
        raise PrometheusBadResponse(
            f"prometheus matrix item {index} has no values: {_shorten(repr(values))}"
        )
    return {"metric": item.get("metric", {}), "value": values[-1]}


# A JSON number, as a sample's time is written.
_TIME = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_TIME_PATTERN = re.compile(_TIME)
# A sample's time and value in an instant answer, as Prometheus writes them: the time a JSON
# number, the value printable ASCII without a quote or a backslash (the text between the quotes
# is then the string itself, nothing to unescape). An unescaped quote never stands inside a JSON
# string: the pattern matches nowhere but at a sample.
_SAMPLE = re.compile(rb'"value":\[' + _TIME + rb',"([\x20\x21\x23-\x5b\x5d-\x7e]*)"\]')


class _Shape:
    """A raw summary answer but for its samples' times and values: the text between them
    (`pieces`), and each sample's color and part (`samples`: whether it is the sum). An answer
    whose text between its samples is the same is the last one with other times and values
    written in: the same series in the same order, valid JSON if the last one was, each value
    a string and each time a number. Only its values are then read (`reread`), into the same
    join as `SummaryReader.read`'s. Learnt only from an answer every series of which was a
    color's sum or pod count, each color having both once, with nothing to warn of; else the
    answer after it is read in full."""

    __slots__ = ("pieces", "samples")

    def __init__(self, pieces: list[bytes], samples: list[tuple[ColorKey, bool]]) -> None:
        self.pieces = pieces
        self.samples = samples

    @classmethod
    def learn(cls, reader: SummaryReader, body: bytes, items: list[Any]) -> _Shape:
        """The shape of `body`, just read by `reader` into `items` without an error."""
        if reader.query.recorded or reader.warnings or not items:
            return _NO_SHAPE
        pieces = _SAMPLE.split(body)
        if len(pieces) != 2 * len(items) + 1:
            return _NO_SHAPE  # a sample written otherwise
        namespace_label, app_label, color_label = reader.names
        samples: list[tuple[ColorKey, bool]] = []
        for item in items:
            metric = item["metric"]
            part = metric[PART_LABEL]
            if part != SUM_PART and part != PODS_PART:
                return _NO_SHAPE
            key = (metric[namespace_label], metric[app_label], metric[color_label])
            samples.append((key, part == SUM_PART))
        colors = {key for key, _ in samples}
        if len(set(samples)) != len(samples) or len(samples) != 2 * len(colors):
            return _NO_SHAPE  # a part twice, or a color without both
        return cls(pieces[::2], samples)

    def reread(self, reader: SummaryReader, body: bytes) -> bool:
        """Whether `body` has this shape; if so, its values are read into `reader`."""
        if not self.samples:
            return False
        pieces = _SAMPLE.split(body)
        if len(pieces) != 2 * len(self.samples) + 1 or pieces[::2] != self.pieces:
            return False
        sums: dict[ColorKey, str] = {}
        pods: dict[ColorKey, str] = {}
        for (key, is_sum), text in zip(self.samples, pieces[1::2], strict=True):
            (sums if is_sum else pods)[key] = text.decode("ascii")
        reader.join_values(sums, pods)
        return True


_NO_SHAPE = _Shape([], [])


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PrometheusBadResponse(
            f"prometheus answered a non-numeric value: {_shorten(text)}"
        ) from None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while an answer is decoded and read (no await inside).

    Decoding 10,000 series makes three containers each, alive until they are read: the young
    collections running meanwhile promote them, and each cycle's batch makes the next full
    collection come sooner, which walks every object the daemon holds (about a hundred
    milliseconds at 10,000 Deployments). Nothing decoded here forms a reference cycle: it is
    freed by reference counting as soon as it is read, and never promoted."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_VALUE = b'"value":['
_NAME = "__name__"
_MADE_MAX = 100_000


def _timeless(body: bytes) -> bytes:
    """An instant query's answer without its evaluation time, which every sample repeats: the
    first sample's `"value":[<time>,` made `"value":[` wherever it stands (if that time is a
    JSON number: anything else is left to fail the answer)."""
    start = body.find(_VALUE)
    if start < 0:
        return body
    end = body.find(b",", start)
    if end < 0 or _TIME_PATTERN.fullmatch(body, start + len(_VALUE), end) is None:
        return body
    return body.replace(body[start : end + 1], _VALUE)


def _summary_connections(total: float, pods: str) -> Connections:
    if 0 <= total < math.inf and pods.isascii() and pods.isdigit() and pods[0] != "0":
        return Connections(value=total, series=int(pods))
    problem = _bad_value(total)
    if problem is not None:
        return Connections.unknown(problem)
    try:
        count = float(pods)
    except ValueError:
        return Connections.unknown(f"prometheus counted {_shorten(pods)!r} pods")
    if not (math.isfinite(count) and count >= 1 and count == int(count)):
        return Connections.unknown(f"prometheus counted {count:g} pods")
    return Connections(value=total, series=int(count))


def _color_key(labels: Mapping[str, str], names: tuple[str, str, str]) -> ColorKey | None:
    namespace, app, color = (labels.get(name, "") for name in names)
    # Prometheus drops empty labels, but a relabelling rule can still produce one: an empty
    # value names no color.
    if not (namespace and app and color):
        return None
    return (namespace, app, color)


def _pod_of(labels: Mapping[str, str], pod_label: str) -> object:
    pod = labels.get(pod_label) or labels.get("instance")
    if pod:
        return pod
    return frozenset(labels.items())  # nothing names the pod: each series stands for one


def _bad_value(value: float) -> str | None:
    if math.isnan(value):
        return "prometheus returned NaN"
    if math.isinf(value):
        return f"prometheus returned {'+Inf' if value > 0 else '-Inf'}"
    if value < 0:
        return f"prometheus returned a negative count ({value:g})"
    return None


# --- formatting -------------------------------------------------------------------------------


def format_timestamp(at: datetime) -> str:
    """A Unix timestamp with milliseconds, as the API's `time` parameter takes it."""
    if at.tzinfo is None:
        # A naive datetime would be read as local time: a silent offset of hours.
        raise ValueError("query time must be timezone-aware")
    return f"{at.timestamp():.3f}"


def format_duration(value: timedelta) -> str:
    """Whole seconds as `10s`, anything finer as `1500ms`: both parse as Prometheus durations."""
    ms = round(value.total_seconds() * 1000)
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def _connect_cause(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}"
    # asyncio's strerror is "Connect call failed (host, port)"; the errno says why.
    errno = exc.os_error.errno
    text = os.strerror(errno) if errno else str(exc.os_error)
    return _shorten(text.lower() or "cannot connect")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _shorten_body(body: bytes) -> str:
    text = _shorten(body[: _MAX_TEXT * 4].decode("utf-8", errors="replace"))
    return text or "empty body"
