"""Each color's past connections from one range query, to seed the in-memory history at start-up
so a restart does not lose the drain forecast's samples. Informative only: nothing acts on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from rainbowd.core.policy import ConnectionsQuery, PrometheusSettings
from rainbowd.prom.querying import (
    RECORDED_SUM,
    ColorKey,
    PrometheusBadResponse,
    PrometheusPartialData,
    format_duration,
    format_timestamp,
    is_sample_time,
    parse_document,
    post_form,
)

Point = tuple[float, float]


def range_expression(query: ConnectionsQuery) -> str:
    """The connections query summed per color: one series per color, not per pod. With
    `source: recorded`, the recorded sums (`rainbowd:connections:sum`), one series per color
    already, narrowed by the matchers and the namespaces managed."""
    labels = ", ".join((query.namespace_label, query.app_label, query.color_label))
    if query.recorded:
        inner = f"{RECORDED_SUM}{{{query.series_matchers}}}"
    elif query.query is not None:
        inner = query.query
    else:
        inner = query.selector
    return f"sum by ({labels}) ({inner})"


async def fetch_range(
    session: aiohttp.ClientSession,
    settings: PrometheusSettings,
    query: ConnectionsQuery,
    *,
    start: datetime,
    end: datetime,
    step: timedelta,
) -> dict[ColorKey, list[Point]]:
    """Every color's points between `start` and `end`; raises PrometheusError on any fault."""
    form = {
        "query": range_expression(query),
        "start": format_timestamp(start),
        "end": format_timestamp(end),
        "step": format_duration(step),
    }
    status, body = await post_form(session, settings, "/api/v1/query_range", form)
    return parse_matrix(status, body, query)


def parse_matrix(status: int, body: bytes, query: ConnectionsQuery) -> dict[ColorKey, list[Point]]:
    """A /api/v1/query_range answer as points per color; raises PrometheusError. An answer with
    warnings is refused whole, as an instant query's is: its sums may miss some pods, and the
    history would take a color's lower figures for a drain under way."""
    result, warnings = parse_document(status, body, "matrix")
    if warnings:
        raise PrometheusPartialData(warnings)
    names = (query.namespace_label, query.app_label, query.color_label)
    out: dict[ColorKey, list[Point]] = {}
    for series in result:
        if not isinstance(series, dict) or not isinstance(series.get("metric"), dict):
            raise PrometheusBadResponse("prometheus matrix item is not an object with labels")
        labels = series["metric"]
        namespace, app, color = (str(labels.get(name) or "") for name in names)
        if not (namespace and app and color):
            continue
        out.setdefault((namespace, app, color), []).extend(_points(series.get("values")))
    return out


def _points(values: Any) -> Iterable[Point]:
    if not isinstance(values, list):
        raise PrometheusBadResponse("prometheus matrix values are not a list")
    for pair in values:
        if not (isinstance(pair, list) and len(pair) == 2 and is_sample_time(pair[0])):
            raise PrometheusBadResponse(f"prometheus matrix value is malformed: {pair!r:.80}")
        try:
            value = float(pair[1])
        except (TypeError, ValueError):
            raise PrometheusBadResponse(
                f"prometheus matrix value is not a number: {pair[1]!r:.80}"
            ) from None
        if math.isfinite(value) and value >= 0:
            yield (float(pair[0]), value)
