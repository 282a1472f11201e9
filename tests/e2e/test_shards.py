"""Two shards: two rainbowd processes, each with its own --namespaces and its own Lease, sharing
one policy and one Prometheus (through a loopback proxy) as the chart's shards do. Each asks
Prometheus only for its own namespace's series, acts only on its own namespace's drained colors,
and goes on acting when the other's share fails: its namespace's data unavailable in Prometheus,
or its process killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.harness import (
    DaemonProcess,
    Fleet,
    create_color,
    eventually,
    get_deployment,
    held_connection,
    lease_holder,
    metric_sum,
    our_events,
    plan_command,
    point_service,
    policy_text,
    replicas,
    scrape_metrics,
)
from tests.fakeprom import FaultyProxy, running_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD1, OLD2, OLD3, NEW = "a1a1a1", "a2a2a2", "a3a3a3", "bbbbbb"
LEASE = ["--leader-elect", "--lease-duration=6s", "--renew-deadline=4s", "--retry-period=1s"]


@pytest.fixture
async def proxy(prometheus: PrometheusServer) -> AsyncIterator[FaultyProxy]:
    async with running_proxy(prometheus.url) as faulty:
        yield faulty


async def holding(fleet: Fleet, color: str) -> contextlib.AsyncExitStack:
    """One client held on the color until the returned stack is closed."""
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(held_connection(fleet.apps[color]))
    return stack


async def gone(api: ApiClient, namespace: str, color: str) -> bool:
    return await get_deployment(api, namespace, f"chat-{color}") is None


async def test_two_shards_act_each_on_its_own_namespace_whatever_befalls_the_other(
    cluster_full: ControlPlane,
    namespace: str,
    other_namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    proxy: FaultyProxy,
    tmp_path: Path,
) -> None:
    a_ns, b_ns = namespace, other_namespace
    (tmp_path / "b").mkdir()
    fleets = {
        a_ns: fleet,
        b_ns: Fleet(namespace=b_ns, workdir=tmp_path / "b", prometheus=prometheus, job="b"),
    }
    holds: list[contextlib.AsyncExitStack] = []
    shards: list[DaemonProcess] = []
    try:
        # Every old color predates the live one, so each is retired at first sight.
        for ns, colors in ((a_ns, (OLD1, OLD2, OLD3, NEW)), (b_ns, (OLD1, OLD2, NEW))):
            for color in colors:
                await create_color(kube_api, ns, color)
                fleets[ns].start(color)
            await point_service(kube_api, ns, NEW)
        a_old2, b_old2, a_old3 = [
            await holding(fleets[ns], color)
            for ns, color in ((a_ns, OLD2), (b_ns, OLD2), (a_ns, OLD3))
        ]
        holds += [a_old2, b_old2, a_old3]
        for ns, color, clients in (
            (a_ns, OLD1, 0),
            (b_ns, OLD1, 0),
            (a_ns, OLD2, 1),
            (b_ns, OLD2, 1),
        ):
            await fleets[ns].wait_scraped(color, clients)

        # One policy for both, as the chart's shards share its ConfigMap; both Leases in one
        # namespace, as the chart's are in the release's.
        policy = tmp_path / "policy.yaml"
        policy.write_text(policy_text(proxy.url, f"{a_ns}, {b_ns}"))
        for name, ns in (("a", a_ns), ("b", b_ns)):
            lease = [f"--lease-name=rainbowd-{name}", f"--lease-namespace={a_ns}"]
            shards.append(
                DaemonProcess(
                    cluster_full,
                    ns,
                    tmp_path,
                    policy_args=[f"--policy-file={policy}"],
                    identity=f"shard-{name}",
                    extra=[*LEASE, *lease],
                ).start()
            )
        a, b = shards

        # Healthy: each shard burns its own namespace's drained color down, holding its Lease.
        async def both_old1_gone() -> bool:
            return await gone(kube_api, a_ns, OLD1) and await gone(kube_api, b_ns, OLD1)

        await eventually(both_old1_gone, what="each shard to delete its namespace's drained color")
        assert await lease_holder(kube_api, a_ns, "rainbowd-a") == "shard-a"
        assert await lease_holder(kube_api, a_ns, "rainbowd-b") == "shard-b"
        assert {e["reportingInstance"] for e in await our_events(kube_api, a_ns)} == {"shard-a"}
        assert {e["reportingInstance"] for e in await our_events(kube_api, b_ns)} == {"shard-b"}
        # Each asked Prometheus for its own namespace's series only.
        own = {f'namespace=~"{a_ns}"', f'namespace=~"{b_ns}"'}
        assert proxy.queries
        for query in proxy.queries:
            assert len([m for m in own if m in query]) == 1, query

        # Namespace b's data unavailable: shard b's queries fail, shard a's do not touch it.
        proxy.unavailable_namespaces.add(b_ns)
        await a_old2.aclose()
        await b_old2.aclose()
        for ns in (a_ns, b_ns):
            await fleets[ns].wait_scraped(OLD2, 0)
        seen_drained = metric_sum(await scrape_metrics(b.url), "rainbowd_prometheus_errors_total")
        # `rainbowd plan` for shard a's namespace sees every connection there all the same.
        plan = json.loads(await plan_command(cluster_full, a_ns, policy, "--output=json"))
        planned = [c for app in plan["apps"] for c in app["colors"]]
        # Shard a may have deleted its drained OLD2 already: it is not blocked by b's failures.
        assert {OLD3, NEW} <= {c["color"] for c in planned} <= {OLD2, OLD3, NEW}
        assert all(c["connections"]["known"] for c in planned), planned

        async def a_old2_gone() -> bool:
            return await gone(kube_api, a_ns, OLD2)

        await eventually(a_old2_gone, what="shard a to delete its drained color, b's share failing")

        # Shard b has failed whole cycles' queries since Prometheus saw its color drained, and
        # never acted on it: unknown connections are never a drain.
        async def b_failing() -> bool:
            errors = metric_sum(await scrape_metrics(b.url), "rainbowd_prometheus_errors_total")
            return errors >= seen_drained + 2

        await eventually(b_failing, what="shard b to count its Prometheus errors")
        assert await replicas(kube_api, b_ns, f"chat-{OLD2}") == 1
        events = await our_events(kube_api, b_ns, name=f"chat-{OLD2}")
        assert not [e for e in events if e["reason"] in ("ScaledDown", "Deleted")], events
        assert proxy.faulted.get("unavailable-namespace", 0) > 0

        # Its data back, shard b burns its color down too.
        proxy.clear()

        async def b_old2_gone() -> bool:
            return await gone(kube_api, b_ns, OLD2)

        await eventually(b_old2_gone, what="shard b to delete its color once its data is back")

        # Shard b killed outright: shard a keeps its Lease and goes on acting.
        assert b.process.pid is not None
        os.kill(b.process.pid, signal.SIGKILL)
        await a_old3.aclose()
        await fleets[a_ns].wait_scraped(OLD3, 0)

        async def a_old3_gone() -> bool:
            return await gone(kube_api, a_ns, OLD3)

        await eventually(a_old3_gone, what="shard a to act with shard b killed")
        assert await lease_holder(kube_api, a_ns, "rainbowd-a") == "shard-a"
        # Shard b's Lease is its own: expired, but no other shard takes it.
        assert await lease_holder(kube_api, a_ns, "rainbowd-b") == "shard-b"
        assert a.process.running(), a.process.log_tail()
        a_metrics = await scrape_metrics(a.url)
        assert metric_sum(a_metrics, "rainbowd_actions_total", action="delete", outcome="ok") == 3
        assert {e["reportingInstance"] for e in await our_events(kube_api, a_ns)} == {"shard-a"}
    finally:
        for stack in holds:
            await stack.aclose()
        for shard in shards:
            shard.close()
        fleets[b_ns].close()
