"""Consolidation end to end: the real apiserver, controller-manager (whose ReplicaSet controller
honours pod-deletion-cost) and kwok's pods, each ready pod served by a real demo_app process
scraped by the real Prometheus with its pod label, and rainbowd as a child process.

A retired color of 4 pods, 2 of them holding a connection, is consolidated to its 2 busy pods:
the 2 idle ones go, no connection is dropped, a restart of rainbowd repeats nothing, and the color
then drains and is burned down as usual. With stepDown, a color of pods all holding connections
gives back its least-connected pod, one per `stepDown.every` and never below `keepPods`, while the
most-connected pod's clients stay served, and a restart in between repeats nothing. A color whose
series lack the pod label the policy names is never consolidated, and /status says why.
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

from rainbowd.core.model import CONSOLIDATED_AT, CONSOLIDATED_FROM, RETIRED_AT, STEPPED_DOWN_AT
from rainbowd.core.objects import parse_stamp
from rainbowd.kube.clients import request_json, resource_path
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.pods import PodRunner
from rainbowd_sandbox.prometheus import PrometheusServer
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


def policy_text(
    prometheus_url: str,
    namespace: str,
    *,
    pod_label: str = "pod",
    consolidate: str = "{after: 2s, every: 1h, keepPods: 1}",
    more: str = "",
    kinds: str = "[Deployment]",
) -> str:
    """The e2e policy; `more` adds knobs to its defaults (one line, indented to them); `kinds`
    what its rule takes."""
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
          consolidate: {consolidate}
          {more}
        rules:
          - name: e2e
            namespaces: [{namespace}]
            kinds: {kinds}
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


async def old_color_holding(
    api: ApiClient,
    namespace: str,
    runner: PodRunner,
    prometheus: PrometheusServer,
    held: list[int],
) -> tuple[list[str], list[Client]]:
    """The old color with a pod for each of `held`, the i-th pod by name holding `held[i]`
    clients, seen so by Prometheus; then a new color, and the Service switched to it."""
    await create_color(api, namespace, OLD, count=len(held))
    await point_service(api, namespace, OLD)
    names = await serving(runner, OLD, len(held))
    clients = []
    for name, count in zip(names, held, strict=True):
        for _ in range(count):
            client = Client(name)
            await client.open(runner.pods[name].tcp_port)
            clients.append(client)
    expected = {name: float(count) for name, count in zip(names, held, strict=True)}
    series = f'rainbow_open_connections{{namespace="{namespace}",color="{OLD}"}}'

    async def seen() -> bool:
        result = await prom_query(prometheus.url, series)
        return {r["metric"].get("pod"): float(r["value"][1]) for r in result} == expected

    await eventually(seen, what=f"Prometheus to see the old pods holding {held} clients")
    await create_color(api, namespace, NEW, count=1)
    await point_service(api, namespace, NEW)
    return names, clients


async def old_color_with_two_clients(
    api: ApiClient,
    namespace: str,
    runner: PodRunner,
    prometheus: PrometheusServer,
) -> tuple[list[str], list[Client]]:
    """The old color's 4 pods, 2 of them (not the first nor the last by name) each holding a
    client."""
    return await old_color_holding(api, namespace, runner, prometheus, [0, 1, 1, 0])


def policy_daemon(
    cluster: ControlPlane, namespace: str, workdir: Path, policy: Path, identity: str
) -> DaemonProcess:
    return DaemonProcess(
        cluster, namespace, workdir, policy_args=[f"--policy-file={policy}"], identity=identity
    )


async def cycles_later(daemon: DaemonProcess, count: int = 5) -> dict[str, Any]:
    """/status once the daemon has run `count` more cycles than when asked."""
    start = (await fetch_json(daemon.url + "/status"))["cycle"]["number"]

    async def later() -> dict[str, Any] | None:
        doc = await fetch_json(daemon.url + "/status")
        return doc if doc["cycle"]["number"] >= start + count else None

    found: dict[str, Any] = await eventually(
        later, what=f"{count} more cycles of {daemon.identity}"
    )
    return found


async def pods_freed(daemon: DaemonProcess) -> float:
    return metric_sum(await scrape_metrics(daemon.url), "rainbowd_pods_freed_total", app=APP)


async def restart(first: DaemonProcess, second: DaemonProcess) -> None:
    """`first` stopped cleanly, then `second` started in its place and ready."""
    assert await first.terminate() == 0
    second.start()
    await second.wait_ready()


def consolidate_actions(*daemons: DaemonProcess) -> list[dict[str, Any]]:
    """The consolidation steps the daemons' logs say they applied, in order."""
    return [
        e
        for d in daemons
        for e in d.log_entries()
        if e.get("msg") == "action applied" and e.get("action") == "consolidate"
    ]


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

    first = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-first")
    second = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-second")
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
            assert await pods_freed(first) == 2

            # A restart, then one client leaves: an idle pod again, but the last step was
            # less than `every` (1h) ago, so the new process must not take another.
            await restart(first, second)
            await clients[0].close()

            async def one_left() -> bool:
                expr = f'sum(rainbow_open_connections{{namespace="{namespace}",color="{OLD}"}})'
                result = await prom_query(prometheus.url, expr)
                return bool(result) and float(result[0]["value"][1]) == 1

            await eventually(one_left, what="Prometheus to see 1 connection left")
            status = await cycles_later(second)
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
            actions = consolidate_actions(first, second)
            assert [(a["outcome"], a["deployment"]) for a in actions] == [("ok", OLD_NAME)]
        finally:
            for client in clients:
                await client.close()
            first.close()
            second.close()


async def test_step_down_gives_back_one_least_connected_pod_per_every_and_a_restart_repeats_none(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    # 4 pods holding 0, 1, 2 and 3 clients. The idle pod goes first (idle-pods); then no pod
    # is idle, and stepDown removes the least-connected one (maxPods 1), one per `every`, down
    # to keepPods: the pods holding 1 and then 2 go, the one holding 3 stays, its clients served.
    every = 10
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        policy_text(
            prometheus.url,
            namespace,
            consolidate="{after: 2s, every: 1s, keepPods: 1}",
            more=f"stepDown: {{every: {every}s, maxPods: 1}}\n"
            "          maxDisruptions: {count: 10, per: 1m}",
        )
    )

    first = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-step-first")
    second = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-step-second")
    async with demo_pods(kube_api, namespace, tmp_path, prometheus) as runner:
        names, clients = await old_color_holding(
            kube_api, namespace, runner, prometheus, [0, 1, 2, 3]
        )
        idle, least, less, most = names
        kept = [c for c in clients if c.pod == most]

        async def down_to(pods: list[str]) -> None:
            async def there() -> bool:
                return await replicas(kube_api, namespace, OLD_NAME) == len(pods) and (
                    await live_pods(kube_api, namespace, OLD) == set(pods)
                )

            await eventually(there, what=f"only the old pods {pods} left")
            await serving(runner, OLD, len(pods))
            for client in kept:
                await client.still_served()

        try:
            first.start()
            await first.wait_ready()
            await down_to([least, less, most])
            await down_to([less, most])
            for client in clients:
                if client.pod == less:
                    await client.still_served()
            annotations = await annotations_of(kube_api, namespace, OLD_NAME)
            first_step = parse_stamp(annotations[STEPPED_DOWN_AT])
            assert first_step is not None
            assert annotations[CONSOLIDATED_FROM] == "3"
            assert await pods_freed(first) == 2

            # A restart: the new process waits out `every` from the record, then steps once.
            await restart(first, second)
            await down_to([most])
            annotations = await annotations_of(kube_api, namespace, OLD_NAME)
            second_step = parse_stamp(annotations[STEPPED_DOWN_AT])
            assert second_step is not None
            assert (second_step - first_step).total_seconds() >= every
            assert annotations[CONSOLIDATED_FROM] == "2"

            # keepPods reached: no more steps, however many cycles pass.
            status = await cycles_later(second)
            old = color_doc(status, OLD)
            assert old is not None and old["connections"]["value"] == 3
            assert await replicas(kube_api, namespace, OLD_NAME) == 1
            for client in kept:
                await client.still_served()
            assert await pods_freed(second) == 1

            events = sorted(
                await consolidation_events(kube_api, namespace), key=lambda e: e["eventTime"]
            )
            assert len(events) == 3, [e["note"] for e in events]
            idle_note, *step_notes = (e["note"] for e in events)
            assert f"{idle} (0)" in idle_note and "stepDown" not in idle_note
            for note, (name, count) in zip(step_notes, [(least, 1), (less, 2)], strict=True):
                assert "stepDown (maxPods 1)" in note, note
                assert f"{name} ({count})" in note, note
            for note in (idle_note, *step_notes):
                assert most not in note
            actions = [(a["reason"], a["outcome"]) for a in consolidate_actions(first, second)]
            assert actions == [("idle-pods", "ok"), ("step-down", "ok"), ("step-down", "ok")]
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
    daemon = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-no-pod-label")
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

            await eventually(says_why, what="/status to say why")
            assert RETIRED_AT in await annotations_of(kube_api, namespace, OLD_NAME)
            status = await cycles_later(daemon)
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
