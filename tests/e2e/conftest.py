"""Fixtures of the daemon's end-to-end tests: the full control plane and a fleet of demo apps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusError, PrometheusServer
from tests import summary
from tests.e2e.faultkit import Pods
from tests.e2e.faultlog import LEDGER, Witness
from tests.e2e.harness import Fleet


@pytest.fixture
def fleet(
    cluster_full: ControlPlane, namespace: str, prometheus: PrometheusServer, tmp_path: Path
) -> Iterator[Fleet]:
    """demo_app processes for the test's namespace, scraped by the test's Prometheus."""
    fleet = Fleet(namespace=namespace, workdir=tmp_path, prometheus=prometheus)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
async def pods(
    namespace: str, shared_prometheus: PrometheusServer, tmp_path: Path
) -> AsyncIterator[Pods]:
    """demo_app processes for the fault suite's colors, scraped by the shared Prometheus."""
    p = Pods(namespace, tmp_path, shared_prometheus)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="session")
def shared_prometheus() -> Iterator[PrometheusServer]:
    """One Prometheus for the fault suite's tests (each sets its own targets)."""
    server = PrometheusServer(scrape_interval=1.0)
    try:
        server.start()
    except PrometheusError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def witness(
    cluster_full: ControlPlane, namespace: str, kube_api: ApiClient, request: pytest.FixtureRequest
) -> AsyncIterator[Witness]:
    """Watches the test's namespace and judges every scale-down and delete rainbowd made there,
    from the audit log; the faults it records go to the summary at the end of the run."""
    witness = Witness(kube_api, cluster_full, namespace, request.node.nodeid)
    await witness.start()
    try:
        yield witness
    finally:
        await witness.stop()
        witness.check()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The ledger's rows go to the run's summary (tests/conftest.py prints it, and fails the run
    # on a wrongful action), from whichever process ran these tests.
    summary.parts["fault suite"] = LEDGER.rows()
