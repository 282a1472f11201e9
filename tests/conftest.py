"""Shared fixtures: the real control plane (`cluster`, `cluster_full`), a fresh `namespace`, an
async `kube_api` client, and a real `prometheus` server, all on loopback.

Nothing is skipped: a missing binary fails the fixture with the command that builds it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis._settings import is_in_ci
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from rainbowd_sandbox import buildcache, procs
from rainbowd_sandbox.controlplane import ControlPlane, ControlPlaneError
from rainbowd_sandbox.prometheus import PrometheusError, PrometheusServer
from tests import summary

_timings: dict[str, float] = {}
summary.parts["sandbox start times"] = _timings
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
"""This process's xdist worker ("gw0"...), empty without xdist."""
_FOLDERS = ("unit", "integration", "e2e", "node")

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
    # An xdist worker takes the controller's seed, so the one in the header replays the run.
    workerinput = getattr(config, "workerinput", {})
    if workerinput.get("hypothesis_seed") is not None:
        config.option.hypothesis_seed = workerinput["hypothesis_seed"]
    elif is_in_ci() and config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(random.SystemRandom().randrange(2**32))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist, on the controller: what each worker starts with."""
    node.workerinput["hypothesis_seed"] = node.config.getoption("hypothesis_seed", None)


NODE_TESTS = "tests/node/"
"""The real node's tests: one node per machine, shared by the session's tests."""


BUILT_APART = {"thanos": "thanos", "rollouts_controller": "argo-rollouts", "keda_operator": "keda"}
"""What some tests need that the build cache keeps in an entry of its own (Thanos as the `backend`
fixture's parameter, the controllers as fixtures), in the order scripts/setup builds them in the
background on a machine that has not built them yet."""


@functools.cache
def _unbuilt() -> tuple[str, ...]:
    """The names of BUILT_APART whose entry is not there yet (being built, or to be)."""
    return tuple(
        name
        for name, kind in BUILT_APART.items()
        if not (buildcache.entry(kind) / buildcache.MANIFEST).exists()
    )


def _order(item: pytest.Item) -> int:
    if item.nodeid.startswith(NODE_TESTS):
        return 0
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec else ()
    needs = {*getattr(item, "fixturenames", ()), *(p for p in params if isinstance(p, str))}
    return next((2 + i for i, name in enumerate(_unbuilt()) if name in needs), 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The real node's tests first: with xdist their one worker is the longest, so it starts
    # while the others share out the rest. The tests needing what is still being built last, so
    # the rest run meanwhile.
    items.sort(key=_order)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist, on the controller: the real node's tests all on one worker (they share the session's
    node; a second run of the suite waits for the machine lock, rainbowd_sandbox.node), every
    other test to whichever worker is free. xdist's own `loadgroup` marks the group in
    `item._nodeid`, which pytest 9 no longer reads, so the group is chosen here, by path."""
    from xdist.scheduler import LoadScopeScheduling

    class NodeTestsOnOneWorker(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return NODE_TESTS if nodeid.startswith(NODE_TESTS) else nodeid

    return NodeTestsOnOneWorker(config, log)


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
    _timings.update({f"{_WORKER} control plane {k}".lstrip(): v for k, v in cp.timings.items()})
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def cluster_full(cluster: ControlPlane) -> ControlPlane:
    """The session control plane plus controller-manager, scheduler, kwok and a fake Node, so
    Deployments roll out, become Available and garbage-collect their pods."""
    cluster.start_full()
    _timings.update(
        {f"{_WORKER} control plane {k}".lstrip(): v for k, v in cluster.timings.items()}
    )
    return cluster


@contextlib.contextmanager
def fresh_namespace(cluster: ControlPlane) -> Iterator[str]:
    """A namespace of its own, deleted afterwards (finalized when cluster_full runs)."""
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
def namespace(cluster: ControlPlane) -> Iterator[str]:
    """A fresh namespace for one test."""
    with fresh_namespace(cluster) as name:
        yield name


@pytest.fixture
def other_namespace(cluster: ControlPlane) -> Iterator[str]:
    """A second fresh namespace, for tests of two (shards)."""
    with fresh_namespace(cluster) as name:
        yield name


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


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # After the session's fixtures are torn down (and their figures written): an xdist worker
    # sends its part of the summary to the controller.
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[summary.KEY] = summary.dump()
        return
    wrongful = [w for rows in summary.every("fault suite") for row in rows for w in row["wrongful"]]
    # Each test fails on its own wrongful actions; this makes sure the run does too.
    if wrongful and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist, on the controller: a worker finished; keep its part of the summary."""
    text = getattr(node, "workeroutput", {}).get(summary.KEY)
    if text is not None:
        summary.gather(text)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    seed = terminalreporter.config.getoption("hypothesis_seed", None)
    if seed is not None and terminalreporter.stats.get("failed"):
        terminalreporter.section("hypothesis")
        terminalreporter.write_line(
            f"hypothesis seed: {seed}; replay with --hypothesis-seed={seed}"
        )
    timings = {k: v for part in summary.every("sandbox start times") for k, v in part.items()}
    if timings:
        terminalreporter.section("sandbox start times")
        for name, seconds in sorted(timings.items()):
            terminalreporter.write_line(f"{name}: {seconds:.2f}s")
    rows = [row for part in summary.every("fault suite") for row in part]
    if rows:
        from tests.e2e.faultlog import ledger_lines

        terminalreporter.section("fault suite")
        for line in ledger_lines(sorted(rows, key=lambda row: float(row["injected_at"]))):
            terminalreporter.write_line(line)
    figures = {k: v for part in summary.every("real node figures") for k, v in part.items()}
    if figures:
        terminalreporter.section("real node figures")
        for name, value in figures.items():
            terminalreporter.write_line(f"{name}: {value}")
    _folder_totals(terminalreporter)


def _folder_totals(terminalreporter: pytest.TerminalReporter) -> None:
    """Seconds of setup, call and teardown per top folder of tests/, and how many tests: with
    xdist, summed over the workers, so more than the wall time."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if not isinstance(report, pytest.TestReport):
                continue
            parts = report.nodeid.split("/")
            folder = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
            seconds[folder] = seconds.get(folder, 0.0) + report.duration
            if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
                counts[folder] = counts.get(folder, 0) + 1
    if not seconds:
        return
    terminalreporter.section("time per folder (setup + call + teardown, summed over workers)")
    order = [f for f in _FOLDERS if f in seconds] + sorted(set(seconds) - set(_FOLDERS))
    for folder in order:
        terminalreporter.write_line(
            f"{folder:<12} {seconds[folder]:>8.1f}s  {counts.get(folder, 0):>5} tests"
        )
