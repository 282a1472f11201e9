"""Each color's past connections from one range query, to seed the in-memory history at start-up
so a restart does not lose the drain forecast's samples. Informative only: nothing acts on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from rainbowd.core.policy import ConnectionsQuery, PrometheusSettings
from rainbowd.prom.querying import (
    ColorKey,
    PrometheusAPIError,
    PrometheusBadResponse,
    PrometheusTimeout,
    PrometheusUnreachable,
    format_duration,
    format_timestamp,
)

Point = tuple[float, float]


def range_expression(query: ConnectionsQuery) -> str:
    """The connections query summed per color: one series per color, not per pod."""
    labels = ", ".join((query.namespace_label, query.app_label, query.color_label))
    inner = query.query if query.query is not None else query.selector
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
        "timeout": format_duration(settings.timeout),
    }
    url = settings.url.rstrip("/") + "/api/v1/query_range"
    timeout = aiohttp.ClientTimeout(total=settings.timeout.total_seconds() + 1)
    try:
        async with session.post(url, data=form, timeout=timeout) as resp:
            body = await resp.read()
            status = resp.status
    except TimeoutError as exc:
        raise PrometheusTimeout(
            f"prometheus timed out after {format_duration(settings.timeout)}"
        ) from exc
    except aiohttp.ClientError as exc:
        cause = str(exc) or type(exc).__name__
        raise PrometheusUnreachable(f"prometheus unreachable: {cause[:200]}") from exc
    return parse_matrix(status, body, query)


def parse_matrix(status: int, body: bytes, query: ConnectionsQuery) -> dict[ColorKey, list[Point]]:
    """A /api/v1/query_range answer as points per color; raises PrometheusError."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or status >= 400 or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        text = str(error) if error else body[:200].decode("utf-8", errors="replace")
        raise PrometheusAPIError(
            f"prometheus HTTP {status}: {' '.join(text.split())[:200] or 'empty body'}",
            http_status=status,
            error_type=str(doc.get("errorType") if isinstance(doc, dict) else ""),
            error=str(error or ""),
        )
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise PrometheusBadResponse("prometheus answered a range query without a matrix")
    result = data.get("result")
    if not isinstance(result, list):
        raise PrometheusBadResponse("prometheus answered a matrix that is not a list")
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
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int | float)):
            raise PrometheusBadResponse(f"prometheus matrix value is malformed: {pair!r:.80}")
        try:
            value = float(pair[1])
        except (TypeError, ValueError):
            raise PrometheusBadResponse(
                f"prometheus matrix value is not a number: {pair[1]!r:.80}"
            ) from None
        if math.isfinite(value) and value >= 0:
            yield (float(pair[0]), value)
