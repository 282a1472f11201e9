"""Per-pod connections, for consolidation: the raw series of the few colors that need them, one
instant query per distinct connections query, and only in a cycle where some color is due for a
step (the per-cycle query stays the summary of `querying.summary_expr`).

Each color's series are summed per pod, a pod being the series' pod label. A color with a series
without that label cannot be told apart pod by pod: it is unavailable, never guessed. A pod with
a NaN, infinite or negative series is unknown (counted as busy by consolidation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rainbowd.core.policy import ConnectionsQuery, series_expr
from rainbowd.logs import get_logger
from rainbowd.prom.querying import ColorKey, PrometheusClient, PrometheusError, Vector

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PodSeries:
    """One color's connections per pod (None: a NaN, infinite or negative series), or why they
    cannot be had."""

    pods: Mapping[str, float | None] = field(default_factory=dict)
    unavailable: str | None = None


def _regex_values(values: Iterable[str]) -> str:
    # Label values of namespaces, apps and colors are letters, digits, '-', '_' and '.': only
    # the dot is special in a regex (and its backslash must be doubled in a PromQL string).
    return "|".join(sorted({v.replace(".", "\\\\.") for v in values}))


def pods_expr(query: ConnectionsQuery, colors: Iterable[ColorKey]) -> str:
    """The per-pod series of `colors` only: the rule's series (`series_expr`) narrowed by
    namespace, app and color where its preset can (a superset of the colors, filtered exactly
    when grouped)."""
    wanted = list(colors)
    narrow = {
        role: _regex_values(k[i] for k in wanted)
        for i, role in enumerate(("namespace", "app", "color"))
    }
    return series_expr(query, narrow)


def group_pods(
    query: ConnectionsQuery, vector: Vector, colors: Iterable[ColorKey]
) -> dict[ColorKey, PodSeries]:
    """The answer to `pods_expr` per wanted color: its pods' sums, or why it has none."""
    wanted = set(colors)
    label_names = (query.namespace_label, query.app_label, query.color_label)
    sums: dict[ColorKey, dict[str, float | None]] = {key: {} for key in wanted}
    unlabelled: dict[ColorKey, int] = {}
    for sample in vector:
        key = (
            sample.labels.get(label_names[0], ""),
            sample.labels.get(label_names[1], ""),
            sample.labels.get(label_names[2], ""),
        )
        if key not in wanted:
            continue
        pod = sample.labels.get(query.pod_label, "")
        if not pod:
            unlabelled[key] = unlabelled.get(key, 0) + 1
            continue
        value = sample.value
        pods = sums[key]
        if not math.isfinite(value) or value < 0:
            pods[pod] = None
        elif pod not in pods or pods[pod] is not None:
            pods[pod] = (pods.get(pod) or 0.0) + value
    out: dict[ColorKey, PodSeries] = {}
    for key in wanted:
        missing = unlabelled.get(key, 0)
        if missing:
            out[key] = PodSeries(
                unavailable=f'{missing} of its series have no "{query.pod_label}" label, so its '
                "pods cannot be told apart"
            )
        else:
            out[key] = PodSeries(pods=sums[key])
    return out


async def fetch_pods(
    client: PrometheusClient,
    query: ConnectionsQuery,
    colors: Iterable[ColorKey],
    *,
    at: datetime,
) -> dict[ColorKey, PodSeries]:
    """Each color's per-pod connections at `at`; a failed query makes them all unavailable."""
    wanted = list(colors)
    problem = query.per_pod_problem
    if problem is None:
        try:
            vector = await client.query(pods_expr(query, wanted), at=at)
        except PrometheusError as exc:
            log.warning("per-pod query failed", cause=exc.error_cause.value, error=exc.cause)
            problem = f"the per-pod query failed: {exc.cause}"
        else:
            if vector.warnings:
                problem = "the per-pod query returned partial data"
            else:
                return group_pods(query, vector, wanted)
    return {key: PodSeries(unavailable=problem) for key in wanted}
