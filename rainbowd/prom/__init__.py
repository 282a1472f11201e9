"""Prometheus HTTP API adapter: the connections every color holds, or why they are unknown."""

from rainbowd.prom.querying import (
    PrometheusAPIError,
    PrometheusBadResponse,
    PrometheusClient,
    PrometheusError,
    PrometheusPartialData,
    PrometheusTimeout,
    PrometheusUnreachable,
    QueryResult,
    Sample,
    Vector,
    fetch_connections,
)

__all__ = [
    "PrometheusAPIError",
    "PrometheusBadResponse",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusPartialData",
    "PrometheusTimeout",
    "PrometheusUnreachable",
    "QueryResult",
    "Sample",
    "Vector",
    "fetch_connections",
]
