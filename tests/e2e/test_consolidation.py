"""Consolidation end to end: the real apiserver, controller-manager (whose ReplicaSet controller
honours pod-deletion-cost) and kwok's pods, each ready pod served by a real demo_app process
scraped by the real Prometheus with its pod label, and rainbowd as a child process.

A retired color of 4 pods, 2 of them holding a connection, is consolidated to its 2 busy pods:
the 2 idle ones go, no connection is dropped, a restart of rainbowd repeats nothing, and the color
then drains and is burned down as usual. A color whose series lack the pod label the policy
names is never consolidated, and /status says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import CONSOLIDATED_AT, CONSOLIDATED_FROM, RETIRED_AT
from rainbowd.kube.clients import request_json, resource_path
from rainbowd.sandbox.controlplane import ControlPlane
from rainbowd.sandbox.pods import PodRunner
from rainbowd.sandbox.prometheus import PrometheusServer
from tests.e2e.harness import (
    APP,
    DaemonProcess,
    annotations_of,
    color_doc,
    deployment_body,
    deployment_path,
    eventually,
    fetch_json,
    get_deployment,
    metric_sum,
    our_events,
    point_service,
    prom_query,
    replicas,
    scrape_metrics,
)

pytestmark = pytest.mark.cluster_full

OLD, NEW = "0c0c0c", "1d1d1d"
OLD_NAME = f"{APP}-{OLD}"


def policy_text(prometheus_url: str, namespace: str, *, pod_label: str = "pod") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: rainbowd.io/v1alpha1
        kind: DrainPolicy
        prometheus: {{url: "{prometheus_url}", timeout: 2s}}
        connections:
          metric: rainbow_open_connections
          labels: {{namespace: namespace, app: app, color: color, pod: {pod_label}}}
        defaults:
          minRetiredAge: 2s
          drainHold: 1s
          connectionFloor: 0
          maxRetiredAge: null
          keepScaledDown: 0
          consolidate: {{after: 2s, every: 1h, keepPods: 1}}
        rules:
          - name: e2e
            namespaces: [{namespace}]
        """
    )


class Client:
    """A TCP client of one pod's color stream, reading all the time: `received` grows while the
    connection lives, `closed` tells the server hung up."""

    def __init__(self, pod: str) -> None:
        self.pod = pod
        self.received = 0
        self.closed = False
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, port: int) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", port)

        async def read() -> None:
            while data := await reader.read(4096):
                self.received += len(data)
            self.closed = True

        self._task = asyncio.create_task(read(), name=f"client of {self.pod}")

    async def still_served(self) -> None:
        """Fails unless the server sends more on this connection, which it has not closed."""
        before = self.received

        async def more() -> bool:
            assert not self.closed, f"the connection to {self.pod} was dropped"
            return self.received > before

        await eventually(more, what=f"more bytes from {self.pod}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


@contextlib.asynccontextmanager
async def demo_pods(
    api: ApiClient, namespace: str, workdir: Path, prometheus: PrometheusServer
) -> AsyncIterator[PodRunner]:
    """A demo_app process for each ready pod of the app, a Prometheus target with its pod
    label, as in the sandbox."""
    runner = PodRunner(
        api, namespace=namespace, app=APP, workdir=workdir, prometheus=prometheus, interval=0.3
    )
    task = asyncio.create_task(runner.run(), name="demo pods")
    try:
        yield runner
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def create_color(api: ApiClient, namespace: str, color: str, *, count: int) -> None:
    await request_json(
        api, "POST", deployment_path(namespace), body=deployment_body(APP, color, replicas=count)
    )

    async def available() -> bool:
        obj = await get_deployment(api, namespace, f"{APP}-{color}")
        assert obj is not None
        return bool(obj.get("status", {}).get("availableReplicas") == count)

    await eventually(available, what=f"{APP}-{color} to have {count} available pods")


async def live_pods(api: ApiClient, namespace: str, color: str) -> set[str]:
    listing = await request_json(
        api,
        "GET",
        resource_path("v1", "pods", namespace=namespace),
        query={"labelSelector": f"app={APP},color={color}"},
    )
    return {
        p["metadata"]["name"]
        for p in listing.get("items") or []
        if not p["metadata"].get("deletionTimestamp")
    }


async def serving(runner: PodRunner, color: str, count: int) -> list[str]:
    async def enough() -> list[str]:
        names = sorted(p.name for p in runner.serving({"color": color}))
        return names if len(names) == count else []

    found: list[str] = await eventually(enough, what=f"{count} demo pods of {color} serving")
    return found


async def old_color_with_two_clients(
    api: ApiClient,
    namespace: str,
    runner: PodRunner,
    prometheus: PrometheusServer,
) -> tuple[list[str], list[Client]]:
    """The old color's 4 pods, 2 of them (not the first nor the last by name) each holding a
    client, seen so by Prometheus; then a new color, and the Service switched to it."""
    await create_color(api, namespace, OLD, count=4)
    await point_service(api, namespace, OLD)
    names = await serving(runner, OLD, 4)
    busy = [names[1], names[2]]
    clients = []
    for name in busy:
        client = Client(name)
        await client.open(runner.pods[name].tcp_port)
        clients.append(client)
    each = (
        f'count(rainbow_open_connections{{namespace="{namespace}",color="{OLD}"}} == 1) == 2'
        f' and count(rainbow_open_connections{{namespace="{namespace}",color="{OLD}"}}) == 4'
    )

    async def seen() -> bool:
        return bool(await prom_query(prometheus.url, each))

    await eventually(seen, what="Prometheus to see 2 of the 4 old pods holding a client")
    await create_color(api, namespace, NEW, count=1)
    await point_service(api, namespace, NEW)
    return names, clients


async def consolidation_events(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    return await our_events(api, namespace, name=OLD_NAME, reason="Consolidated")


async def test_a_retired_color_gives_back_its_idle_pods_and_drops_no_connection(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace))

    def daemon(identity: str) -> DaemonProcess:
        return DaemonProcess(
            cluster_full,
            namespace,
            tmp_path,
            policy_args=[f"--policy-file={policy}"],
            identity=identity,
        )

    first = daemon("rainbowd-first")
    second = daemon("rainbowd-second")
    async with demo_pods(kube_api, namespace, tmp_path, prometheus) as runner:
        names, clients = await old_color_with_two_clients(kube_api, namespace, runner, prometheus)
        busy = {c.pod for c in clients}
        idle = set(names) - busy
        try:
            first.start()
            await first.wait_ready()

            async def two_replicas() -> bool:
                return await replicas(kube_api, namespace, OLD_NAME) == 2

            await eventually(two_replicas, what="the old color consolidated to 2 pods")

            async def idle_pods_gone() -> bool:
                return await live_pods(kube_api, namespace, OLD) == busy

            await eventually(idle_pods_gone, what=f"only the busy pods {sorted(busy)} left")
            # Their processes stopped as the pods went, and the clients are still served.
            await serving(runner, OLD, 2)
            for client in clients:
                await client.still_served()

            [event] = await consolidation_events(kube_api, namespace)
            for name in idle:
                assert f"{name} (0)" in event["note"]
            for name in busy:
                assert name not in event["note"]
            annotations = await annotations_of(kube_api, namespace, OLD_NAME)
            assert annotations[CONSOLIDATED_FROM] == "4"
            assert CONSOLIDATED_AT in annotations
            freed = metric_sum(
                await scrape_metrics(first.url), "rainbowd_pods_freed_total", app=APP
            )
            assert freed == 2

            # A restart, then one client leaves: an idle pod again, but the last step was
            # less than `every` (1h) ago, so the new process must not take another.
            assert await first.terminate() == 0
            second.start()
            await second.wait_ready()
            await clients[0].close()

            async def one_left() -> bool:
                expr = f'sum(rainbow_open_connections{{namespace="{namespace}",color="{OLD}"}})'
                result = await prom_query(prometheus.url, expr)
                return bool(result) and float(result[0]["value"][1]) == 1

            await eventually(one_left, what="Prometheus to see 1 connection left")
            status = await fetch_json(second.url + "/status")
            start = status["cycle"]["number"]

            async def cycles_later() -> dict[str, Any] | None:
                doc = await fetch_json(second.url + "/status")
                return doc if doc["cycle"]["number"] >= start + 5 else None

            status = await eventually(cycles_later, what="5 more cycles of the new process")
            old = color_doc(status, OLD)
            assert old is not None and old["connections"]["value"] == 1
            assert await replicas(kube_api, namespace, OLD_NAME) == 2
            assert len(await consolidation_events(kube_api, namespace)) == 1
            await clients[1].still_served()

            # The last client leaves: the color drains and is burned down as usual.
            await clients[1].close()

            async def deleted() -> bool:
                return await get_deployment(kube_api, namespace, OLD_NAME) is None

            await eventually(deleted, what="the drained old color to be deleted")
            actions = [
                e
                for d in (first, second)
                for e in d.log_entries()
                if e.get("msg") == "action applied" and e.get("action") == "consolidate"
            ]
            assert [(a["outcome"], a["deployment"]) for a in actions] == [("ok", OLD_NAME)]
        finally:
            for client in clients:
                await client.close()
            first.close()
            second.close()


async def test_a_color_whose_series_lack_the_pod_label_is_never_consolidated_and_says_why(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    # The demo pods' series carry `pod`; the policy names another label for the pods.
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace, pod_label="kubernetes_pod_name"))
    daemon = DaemonProcess(
        cluster_full,
        namespace,
        tmp_path,
        policy_args=[f"--policy-file={policy}"],
        identity="rainbowd-no-pod-label",
    )
    async with demo_pods(kube_api, namespace, tmp_path, prometheus) as runner:
        _, clients = await old_color_with_two_clients(kube_api, namespace, runner, prometheus)
        try:
            daemon.start()
            await daemon.wait_ready()
            why = (
                'consolidation unavailable: 4 of its series have no "kubernetes_pod_name" '
                "label, so its pods cannot be told apart"
            )

            async def says_why() -> dict[str, Any] | None:
                doc = await fetch_json(daemon.url + "/status")
                old = color_doc(doc, OLD)
                return doc if old is not None and why in old["note"] else None

            status = await eventually(says_why, what="/status to say why")
            start = status["cycle"]["number"]
            assert RETIRED_AT in await annotations_of(kube_api, namespace, OLD_NAME)

            async def cycles_later() -> dict[str, Any] | None:
                doc = await fetch_json(daemon.url + "/status")
                return doc if doc["cycle"]["number"] >= start + 5 else None

            status = await eventually(cycles_later, what="5 more cycles")
            old = color_doc(status, OLD)
            assert old is not None and why in old["note"]
            assert old["connections"]["value"] == 2
            assert await replicas(kube_api, namespace, OLD_NAME) == 4
            assert await consolidation_events(kube_api, namespace) == []
            assert CONSOLIDATED_AT not in await annotations_of(kube_api, namespace, OLD_NAME)
            for client in clients:
                await client.still_served()
        finally:
            for client in clients:
                await client.close()
            daemon.close()
