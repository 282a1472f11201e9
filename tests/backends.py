"""The Prometheus-compatible backends the query and coverage tests run against, each real: the
Prometheus from Debian, VictoriaMetrics from Debian scraping the same targets through its
Prometheus-compatible scrape configuration, and Thanos Query over a Thanos sidecar on a real
Prometheus (Thanos built from its Go module, tests/cluster/thanos)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Sequence
from typing import Protocol

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rainbowd_sandbox.procs import ProcessError
from rainbowd_sandbox.prometheus import DEFAULT_JOB, PrometheusError, PrometheusServer, Target
from rainbowd_sandbox.thanos import ThanosQuery
from rainbowd_sandbox.victoriametrics import VictoriaMetricsServer

BACKENDS = ("prometheus", "victoriametrics", "thanos")


class Backend(Protocol):
    """What the tests ask of a backend: its query API's URL, its targets, an outage."""

    @property
    def url(self) -> str: ...

    def set_targets(self, targets: Sequence[Target], *, job: str = DEFAULT_JOB) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


def make_backend(kind: str) -> Backend:
    if kind == "prometheus":
        return PrometheusServer(scrape_interval=1.0)
    if kind == "victoriametrics":
        return VictoriaMetricsServer(scrape_interval=1.0)
    if kind == "thanos":
        return ThanosQuery(scrape_interval=1.0)
    raise ValueError(f"no backend {kind!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh backend per test, scraping every second; targets via `set_targets`."""
    server = make_backend(request.param)
    try:
        server.start()
    except (PrometheusError, ProcessError) as exc:
        server.close()
        pytest.fail(f"{request.param}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.close()


# Each backend's own count of the instant queries it answered, on its /metrics: family name and
# the label naming the endpoint.
_QUERY_COUNTERS = {
    PrometheusServer: ("prometheus_http_requests", "handler", "/api/v1/query"),
    VictoriaMetricsServer: ("vm_http_requests", "path", "/api/v1/query"),
    ThanosQuery: ("http_requests", "handler", "query"),
}


def query_requests(backend: Backend) -> float:
    """The instant queries `backend` has answered, read from its own /metrics."""
    family_name, label, value = _QUERY_COUNTERS[type(backend)]
    with urllib.request.urlopen(backend.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        # A family without a TYPE line keeps its _total in its name.
        if sample.name == f"{family_name}_total" and sample.labels.get(label) == value
    )
