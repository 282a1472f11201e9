"""The loopback Prometheus scrapes real targets: values reach instant queries, target changes
apply without a restart, a new job is added by reload, and stop/start keeps port and data."""

from __future__ import annotations

import random
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from rainbowd_sandbox.procs import free_port
from rainbowd_sandbox.prometheus import PrometheusError, PrometheusServer


@dataclass
class Exporter:
    address: str
    gauge: Gauge


def _exporter(metric: str) -> Iterator[Exporter]:
    registry = CollectorRegistry()
    gauge = Gauge(metric, "a value set by the test", registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(f"127.0.0.1:{server.server_port}", gauge)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    yield from _exporter("rainbow_test_value")


@pytest.fixture
def other_exporter() -> Iterator[Exporter]:
    yield from _exporter("rainbow_test_value")


@pytest.mark.prometheus
def test_scrapes_a_loopback_target(prometheus: PrometheusServer, exporter: Exporter) -> None:
    value = round(random.uniform(1, 1000), 3)
    exporter.gauge.set(value)
    prometheus.set_targets([(exporter.address, {"app": "chat", "color": "1a2b3c"})])
    samples = prometheus.wait_for("rainbow_test_value", lambda s: len(s) == 1)
    assert samples[0].value == value
    assert samples[0].labels["app"] == "chat"
    assert samples[0].labels["color"] == "1a2b3c"
    assert samples[0].labels["job"] == "targets"
    assert samples[0].labels["instance"] == exporter.address

    exporter.gauge.set(value + 1)
    prometheus.wait_for("rainbow_test_value", lambda s: len(s) == 1 and s[0].value == value + 1)


@pytest.mark.prometheus
def test_targets_change_without_restart(
    prometheus: PrometheusServer, exporter: Exporter, other_exporter: Exporter
) -> None:
    pid = prometheus.pid
    prometheus.set_targets([(exporter.address, {"color": "aaaaaa"})])
    prometheus.wait_for('up{color="aaaaaa"} == 1', lambda s: len(s) == 1)

    prometheus.set_targets(
        [(exporter.address, {"color": "aaaaaa"}), (other_exporter.address, {"color": "bbbbbb"})]
    )
    prometheus.wait_for("up == 1", lambda s: {x.labels["color"] for x in s} == {"aaaaaa", "bbbbbb"})

    prometheus.set_targets([(other_exporter.address, {"color": "bbbbbb"})])
    prometheus.wait_for(
        "rainbow_test_value", lambda s: [x.labels["color"] for x in s] == ["bbbbbb"]
    )
    assert prometheus.pid == pid


@pytest.mark.prometheus
def test_a_new_job_is_added_by_reload(prometheus: PrometheusServer, exporter: Exporter) -> None:
    prometheus.set_targets([(exporter.address, {})], job="rainbowd")
    samples = prometheus.wait_for('up{job="rainbowd"}', lambda s: len(s) == 1)
    assert samples[0].value == 1


@pytest.mark.prometheus
def test_stop_and_start_keep_port_and_data(
    prometheus: PrometheusServer, exporter: Exporter
) -> None:
    exporter.gauge.set(7)
    prometheus.set_targets([(exporter.address, {})])
    prometheus.wait_for("rainbow_test_value == 7", lambda s: len(s) == 1)
    url = prometheus.url

    prometheus.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/-/ready", timeout=2)
    with pytest.raises(urllib.error.URLError):
        prometheus.query("up")

    prometheus.start()
    assert prometheus.url == url
    # The sample scraped before the outage is still in the TSDB.
    samples = prometheus.query("max_over_time(rainbow_test_value[10m])")
    assert [s.value for s in samples] == [7]


@pytest.mark.prometheus
def test_query_errors_are_raised(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusError, match="parse error"):
        prometheus.query("sum(")


def test_a_port_another_prometheus_took_first_is_given_up_for_another(
    prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests side by side: the free port picked can be bound by another process first, here a
    running Prometheus that even answers /-/ready. The new server notices it is not the one
    answering, and starts again on another port."""
    picks = iter([prometheus.port])
    monkeypatch.setattr(
        "rainbowd_sandbox.prometheus.free_port", lambda: next(picks, None) or free_port()
    )
    with PrometheusServer(scrape_interval=1.0) as second:
        assert second.port != prometheus.port
        assert second.query("vector(1)")[0].value == 1.0
    assert prometheus.query("vector(2)")[0].value == 2.0
