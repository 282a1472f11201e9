"""Fixtures of the daemon's end-to-end tests: the full control plane and a fleet of demo apps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rainbowd.sandbox.controlplane import ControlPlane
from rainbowd.sandbox.prometheus import PrometheusServer
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
