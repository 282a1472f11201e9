"""Helpers for the daemon's end-to-end tests: colors as real Deployments, Services, demo_app
processes scraped by the real Prometheus, held TCP connections, and rainbowd itself run
in-process (an asyncio task) or as a child process (for signals, restarts and two replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient
from prometheus_client.parser import text_string_to_metric_families

from rainbowd.core.objects import parse_time
from rainbowd.core.reporting import render_plan_table
from rainbowd.daemon import Daemon, SideParts
from rainbowd.kube.clients import (
    MERGE_PATCH,
    KubeError,
    NotFound,
    request_json,
    resource_path,
)
from rainbowd.kube.events import REPORTING_CONTROLLER
from rainbowd.settings import PolicySource, Settings
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.procs import Process, free_port
from rainbowd_sandbox.prometheus import DEFAULT_JOB, PrometheusServer
from tests.demoapps import DemoApp

ROOT = Path(__file__).resolve().parents[2]
APP = "chat"
# Deadlines for polls. Generous: two shared cores, a control plane and Prometheus all busy.
WITHIN = 90.0


async def eventually(
    check: Callable[[], Awaitable[Any]], *, within: float = WITHIN, what: str
) -> Any:
    """Poll `check` until it returns something truthy; return it, or fail naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last_error: BaseException | None = None
    while True:
        try:
            result = await check()
        except (AssertionError, aiohttp.ClientError, OSError, KubeError) as exc:
            last_error = exc
        else:
            if result:
                return result
        if loop.time() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            pytest.fail(f"timed out after {within:g}s waiting for {what}{detail}")
        await asyncio.sleep(0.2)


# --- Kubernetes objects -----------------------------------------------------------------------


def deployment_body(app: str, color: str, *, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": app, "color": color}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        # As in the seed's app.yaml: the color label is on the pod template only.
        "metadata": {"name": f"{app}-{color}", "labels": {"app": app}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/chat:1"}]},
            },
        },
    }


def deployment_path(namespace: str, name: str | None = None) -> str:
    return resource_path("apps/v1", "deployments", namespace=namespace, name=name)


async def get_deployment(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await request_json(api, "GET", deployment_path(namespace, name))
    except NotFound:
        return None


async def create_color(api: ApiClient, namespace: str, color: str, *, app: str = APP) -> None:
    """A Deployment for the color, waited on until Available with its pod ready."""
    await request_json(api, "POST", deployment_path(namespace), body=deployment_body(app, color))
    name = f"{app}-{color}"

    async def available() -> bool:
        obj = await get_deployment(api, namespace, name)
        assert obj is not None
        status = obj.get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        return bool(
            status.get("readyReplicas") == 1
            and status.get("availableReplicas") == 1
            and conditions.get("Available", {}).get("status") == "True"
        )

    await eventually(available, what=f"{name} to become Available")

    # creationTimestamp has whole seconds, and the planner orders colors by it (a color created
    # after the live one is pending). Real releases are minutes apart; here the next color must
    # at least land in a later second.
    obj = await get_deployment(api, namespace, name)
    assert obj is not None
    created = parse_time(obj["metadata"]["creationTimestamp"])

    async def next_second() -> bool:
        return datetime.now(UTC) >= created + timedelta(seconds=1)

    await eventually(next_second, what="the clock to pass the creation second")


async def point_service(api: ApiClient, namespace: str, color: str, *, app: str = APP) -> None:
    """The app's Service, created or switched to select `color`: what a rainbow deploy does."""
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app},
        "spec": {
            "selector": {"app": app, "color": color},
            "ports": [{"port": 80, "targetPort": 8080}],
        },
    }
    path = resource_path("v1", "services", namespace=namespace, name=app)
    try:
        await request_json(api, "GET", path)
    except NotFound:
        await request_json(
            api, "POST", resource_path("v1", "services", namespace=namespace), body=body
        )
        return
    await request_json(
        api,
        "PATCH",
        path,
        body={"spec": {"selector": {"app": app, "color": color}}},
        content_type=MERGE_PATCH,
    )


async def annotations_of(api: ApiClient, namespace: str, name: str) -> dict[str, str]:
    obj = await get_deployment(api, namespace, name)
    assert obj is not None, f"{name} is gone"
    return dict(obj["metadata"].get("annotations") or {})


async def replicas(api: ApiClient, namespace: str, name: str) -> int | None:
    obj = await get_deployment(api, namespace, name)
    return None if obj is None else int(obj["spec"]["replicas"])


async def our_events(
    api: ApiClient, namespace: str, *, name: str | None = None, reason: str | None = None
) -> list[dict[str, Any]]:
    listing = await request_json(
        api, "GET", resource_path("events.k8s.io/v1", "events", namespace=namespace)
    )
    out = []
    for event in listing.get("items") or []:
        if event.get("reportingController") != REPORTING_CONTROLLER:
            continue
        if name is not None and event.get("regarding", {}).get("name") != name:
            continue
        if reason is not None and event.get("reason") != reason:
            continue
        out.append(event)
    return out


async def put_configmap(api: ApiClient, namespace: str, name: str, text: str) -> None:
    path = resource_path("v1", "configmaps", namespace=namespace, name=name)
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"policy.yaml": text},
    }
    try:
        await request_json(api, "GET", path)
    except NotFound:
        await request_json(
            api, "POST", resource_path("v1", "configmaps", namespace=namespace), body=body
        )
        return
    await request_json(api, "PUT", path, body=body)


async def lease_holder(api: ApiClient, namespace: str, name: str = "rainbowd") -> str | None:
    try:
        lease = await request_json(
            api,
            "GET",
            resource_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=name),
        )
    except NotFound:
        return None
    holder = (lease.get("spec") or {}).get("holderIdentity")
    return str(holder) if holder else None


# --- policy -----------------------------------------------------------------------------------


def policy_text(
    prometheus_url: str,
    namespace: str,
    *,
    min_retired_age: str = "2s",
    drain_hold: str = "1s",
    keep_scaled_down: int = 0,
    connection_floor: int = 0,
) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: rainbowd.io/v1alpha1
        kind: DrainPolicy
        prometheus: {{url: "{prometheus_url}", timeout: 2s}}
        connections: {{metric: rainbow_open_connections}}
        defaults:
          minRetiredAge: {min_retired_age}
          drainHold: {drain_hold}
          connectionFloor: {connection_floor}
          maxRetiredAge: null
          action: scale-then-delete
          keepScaledDown: {keep_scaled_down}
        rules:
          - name: e2e
            namespaces: [{namespace}]
        """
    )


# --- demo apps and connections ----------------------------------------------------------------


@dataclass
class Fleet:
    """demo_app processes (one per color, standing in for its one pod) that Prometheus scrapes."""

    namespace: str
    workdir: Path
    prometheus: PrometheusServer
    apps: dict[str, DemoApp] = field(default_factory=dict)
    extra_targets: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    job: str = DEFAULT_JOB
    """The scrape job of the fleet's targets: fleets of two namespaces on one Prometheus each
    need their own, or the second's targets replace the first's."""

    def start(self, color: str) -> DemoApp:
        demo = DemoApp(color, workdir=self.workdir, app=APP, namespace=self.namespace).start()
        self.apps[color] = demo
        self._targets()
        return demo

    def scrape(self, address: str, job: str) -> None:
        self.prometheus.set_targets([(address, {})], job=job)

    def _targets(self) -> None:
        self.prometheus.set_targets([(d.target, {}) for d in self.apps.values()], job=self.job)

    async def wait_scraped(self, color: str, value: float) -> None:
        """Until Prometheus reports `value` connections for the color (polled without blocking
        the event loop, where an in-process daemon runs)."""
        expr = (
            f'rainbow_open_connections{{namespace="{self.namespace}",color="{color}"}} == {value:g}'
        )

        async def seen() -> bool:
            return bool(await prom_query(self.prometheus.url, expr))

        await eventually(seen, what=f"Prometheus to see {expr}")

    def close(self) -> None:
        for demo in self.apps.values():
            demo.close()


async def prom_query(url: str, expr: str) -> list[dict[str, Any]]:
    """An instant query against the real Prometheus; the vector's items."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/api/v1/query", params={"query": expr}) as resp,
    ):
        body = await resp.json()
    assert body.get("status") == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@contextlib.asynccontextmanager
async def held_connection(demo: DemoApp) -> AsyncIterator[None]:
    """One open TCP connection to the color's stream, read continuously, closed on exit."""
    reader, writer = await asyncio.open_connection("127.0.0.1", demo.tcp_port)

    async def drain() -> None:
        while await reader.read(4096):
            pass

    task = asyncio.create_task(drain())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --- rainbowd's HTTP endpoints ----------------------------------------------------------------


async def fetch_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        resp.raise_for_status()
        doc: dict[str, Any] = await resp.json()
        return doc


async def status_command(url: str) -> str:
    """`rainbowd status --url URL` run as a user runs it; its output (the exit code checked)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rainbowd",
        "status",
        f"--url={url}",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def plan_command(cluster: ControlPlane, namespace: str, policy: Path, *args: str) -> str:
    """`rainbowd plan` without a snapshot file, one read-only cycle against the live cluster, run
    as a user runs it: its output (the exit code checked)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rainbowd",
        "plan",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--namespaces={namespace}",
        f"--policy-file={policy}",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def fetch_status(base_url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(base_url) as resp:
        return resp.status


async def scrape_metrics(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as resp:
        resp.raise_for_status()
        text = await resp.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric_sum(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    total = 0.0
    for (sample_name, sample_labels), value in samples.items():
        if sample_name != name:
            continue
        have = dict(sample_labels)
        if all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def color_doc(status: Mapping[str, Any], color: str) -> dict[str, Any] | None:
    plan = status.get("plan") or {}
    for app in plan.get("apps") or []:
        for c in app.get("colors") or []:
            if c["color"] == color:
                found: dict[str, Any] = c
                return found
    return None


# --- the daemon -------------------------------------------------------------------------------


def daemon_settings(
    cluster: ControlPlane,
    namespace: str,
    *,
    policy: PolicySource,
    identity: str = "rainbowd-e2e",
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        "policy": policy,
        "kubeconfig": str(cluster.kubeconfig),
        "namespaces": (namespace,),
        "interval": 1.0,
        "debounce": 0.2,
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "leader_elect": False,
        "lease_namespace": namespace,
        "identity": identity,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_daemon(
    settings: Settings, *, sides: SideParts | None = None
) -> AsyncIterator[Daemon]:
    """rainbowd in this process, as an asyncio task; stopped (and its exit code checked) on exit.
    `sides`: the cycle's side features it is built with (default: its own)."""
    daemon = Daemon(settings, sides=sides)
    # Tasks the test started before (watchers, held connections) are the test's own.
    before = asyncio.all_tasks()
    task = asyncio.create_task(daemon.run(), name="rainbowd")

    async def listening() -> bool:
        if task.done():
            pytest.fail(f"the daemon exited early with {task.result()}")
        return daemon.http_url is not None

    try:
        await eventually(listening, what="the daemon's HTTP server")
        yield daemon
    finally:
        # Shown by pytest when the test fails: what the daemon last saw and planned.
        report = daemon.last_cycle
        if report is not None and report.plan is not None:
            print(f"last plan (cycle {report.number}):\n{render_plan_table(report.plan)}")
        daemon.request_stop()
        code = await asyncio.wait_for(task, settings.shutdown_timeout + 5)
        assert code == 0, f"the daemon exited with {code}"
        # Everything the daemon started was cancelled and awaited. (A loopback server the
        # test runs in front of a part sees the daemon's connections close a moment later.)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while True:
            leaked = [
                t
                for t in asyncio.all_tasks()
                if t is not asyncio.current_task() and not t.done() and t not in before
            ]
            if not leaked or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        assert not leaked, f"tasks left running after the daemon stopped: {leaked}"


def daemon_argv(
    cluster: ControlPlane, namespace: str, *, policy_args: list[str], port: int, identity: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rainbowd",
        "run",
        f"--kubeconfig={cluster.kubeconfig}",
        f"--namespaces={namespace}",
        *policy_args,
        "--interval=1s",
        "--debounce=200ms",
        f"--listen=127.0.0.1:{port}",
        f"--identity={identity}",
        f"--lease-namespace={namespace}",
        "--log-format=json",
        "--log-level=debug",
    ]


class DaemonProcess:
    """rainbowd as a child process, for what needs a real process: signals, two replicas."""

    def __init__(
        self,
        cluster: ControlPlane,
        namespace: str,
        workdir: Path,
        *,
        policy_args: list[str],
        identity: str,
        extra: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.identity = identity
        self.url = f"http://127.0.0.1:{self.port}"
        argv = daemon_argv(
            cluster, namespace, policy_args=policy_args, port=self.port, identity=identity
        )
        self.process = Process(
            f"rainbowd-{identity}",
            [*argv, *(extra or [])],
            log_path=workdir / f"rainbowd-{identity}.log",
            cwd=ROOT,
        )

    def start(self) -> DaemonProcess:
        self.process.start()
        return self

    async def wait_ready(self) -> None:
        async def ready() -> bool:
            if not self.process.running():
                pytest.fail(str(self.process.fail("exited before /readyz")))
            return await fetch_status(self.url + "/readyz") == 200

        await eventually(ready, what=f"{self.identity} /readyz")

    def log_entries(self) -> list[dict[str, Any]]:
        out = []
        for line in self.process.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM to the daemon alone; its exit code once it has exited."""
        pid = self.process.pid
        assert pid is not None and self.process.running()
        os.kill(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (code := self.process.returncode()) is None:
            if loop.time() > deadline:
                pytest.fail(f"{self.identity} still running {within:g}s after SIGTERM")
            await asyncio.sleep(0.1)
        self.process.stop()
        return code

    def close(self) -> None:
        self.process.stop()
