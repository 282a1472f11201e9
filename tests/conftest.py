"""Shared fixtures: the real control plane (`cluster`, `cluster_full`), a fresh `namespace`, an
async `kube_api` client, and a real `prometheus` server, all on loopback.

Nothing is skipped: a missing binary fails the fixture with the command that builds it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis._settings import is_in_ci
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from rainbowd.sandbox import procs
from rainbowd.sandbox.controlplane import ControlPlane, ControlPlaneError
from rainbowd.sandbox.prometheus import PrometheusError, PrometheusServer

_timings: dict[str, float] = {}

# Hypothesis' own "ci" profile derandomizes: every CI run would replay the same examples and
# never find what the last one missed. This one keeps its other choices (no database, no
# deadline, the reproduction blob printed) and draws a fresh seed per run, printed in the header
# and again after a failure: `pytest --hypothesis-seed=N` replays it.
settings.register_profile(
    "ci",
    derandomize=False,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
if is_in_ci():
    settings.load_profile("ci")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if is_in_ci() and config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(random.SystemRandom().randrange(2**32))


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("hypothesis_seed", None)
    return None if seed is None else f"hypothesis seed: {seed} (replay: --hypothesis-seed={seed})"


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Fails the session's teardown if any sandbox process outlives its fixture."""
    yield
    left = {(p.name, p.pid) for p in procs.running_processes()}
    # Also ask the kernel, in case a process escaped the bookkeeping (e.g. a stop() that lied).
    left |= {
        (name, pid)
        for name, pid, started in procs.started_processes()
        if procs.pid_alive(pid, started)
    }
    procs.kill_all()
    if left:
        names = ", ".join(f"{name} (pid {pid})" for name, pid in sorted(left, key=str))
        pytest.fail(f"sandbox processes left running at session end: {names}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver for the whole session; admin kubeconfig in `.kubeconfig`."""
    cp = ControlPlane()
    try:
        cp.start()
    except ControlPlaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    _timings.update({f"control plane {k}": v for k, v in cp.timings.items()})
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def cluster_full(cluster: ControlPlane) -> ControlPlane:
    """The session control plane plus controller-manager, scheduler, kwok and a fake Node, so
    Deployments roll out, become Available and garbage-collect their pods."""
    cluster.start_full()
    _timings.update({f"control plane {k}": v for k, v in cluster.timings.items()})
    return cluster


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (finalized when cluster_full runs)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        # A test that failed between stop_apiserver() and start_apiserver() must not break the
        # session's control plane for every test after it.
        cluster.ensure_running()
        cluster.delete_namespace(name)


@pytest.fixture
async def kube_api(cluster: ControlPlane) -> AsyncIterator[k8s.ApiClient]:
    """An admin kubernetes_asyncio ApiClient for the session control plane."""
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(cluster.kubeconfig), client_configuration=configuration
    )
    api = k8s.ApiClient(configuration)
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
def prometheus() -> Iterator[PrometheusServer]:
    """A fresh Prometheus (1 s scrape interval) per test; targets via `set_targets`."""
    server = PrometheusServer(scrape_interval=1.0)
    try:
        server.start()
    except PrometheusError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    seed = terminalreporter.config.getoption("hypothesis_seed", None)
    if seed is not None and terminalreporter.stats.get("failed"):
        terminalreporter.section("hypothesis")
        terminalreporter.write_line(
            f"hypothesis seed: {seed}; replay with --hypothesis-seed={seed}"
        )
    if _timings:
        terminalreporter.section("sandbox start times")
        for name, seconds in _timings.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f}s")
