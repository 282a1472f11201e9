"""Two replicas with leader election against one cluster: only the leader acts; when it is
stopped (SIGTERM) it releases the Lease and the other takes over.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.kube.clients import request_json, resource_path
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.harness import (
    DaemonProcess,
    Fleet,
    create_color,
    eventually,
    fetch_json,
    get_deployment,
    held_connection,
    lease_holder,
    metric_sum,
    our_events,
    point_service,
    policy_text,
    replicas,
    scrape_metrics,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

FIRST_OLD, SECOND_OLD, NEW = "aaaaaa", "cccccc", "bbbbbb"
# Short lease timings so a takeover after a crash would take seconds, not the default 15 s.
LEASE = ["--leader-elect", "--lease-duration=6s", "--renew-deadline=4s", "--retry-period=1s"]


async def test_only_the_leader_acts_and_the_other_takes_over(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    # Both old colors predate the live one, so both are retired at first sight.
    for color in (FIRST_OLD, SECOND_OLD, NEW):
        await create_color(kube_api, namespace, color)
        fleet.start(color)
    await point_service(kube_api, namespace, NEW)
    for color in (FIRST_OLD, SECOND_OLD, NEW):
        await fleet.wait_scraped(color, 0)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace))
    args = [f"--policy-file={policy}"]

    async with held_connection(fleet.apps[SECOND_OLD]):
        await fleet.wait_scraped(SECOND_OLD, 1)
        a = DaemonProcess(
            cluster_full, namespace, tmp_path, policy_args=args, identity="rb-a", extra=LEASE
        ).start()
        b: DaemonProcess | None = None
        try:

            async def a_leads() -> bool:
                return await lease_holder(kube_api, namespace) == "rb-a"

            await eventually(a_leads, what="rb-a to hold the Lease")
            b = DaemonProcess(
                cluster_full, namespace, tmp_path, policy_args=args, identity="rb-b", extra=LEASE
            ).start()
            await b.wait_ready()

            # The drained first color is burned down, by the leader alone.
            async def first_gone() -> bool:
                return await get_deployment(kube_api, namespace, f"chat-{FIRST_OLD}") is None

            await eventually(first_gone, what="the leader to delete the drained color")
            a_metrics = await scrape_metrics(a.url)
            b_metrics = await scrape_metrics(b.url)
            assert metric_sum(a_metrics, "rainbowd_leader") == 1
            assert metric_sum(b_metrics, "rainbowd_leader") == 0
            assert metric_sum(a_metrics, "rainbowd_actions_total", action="delete") == 1
            assert metric_sum(b_metrics, "rainbowd_actions_total") == 0
            instances = {e["reportingInstance"] for e in await our_events(kube_api, namespace)}
            assert instances == {"rb-a"}
            # The standby still plans and reports.
            b_status = await fetch_json(b.url + "/status")
            assert b_status["leader"] is False and b_status["plan"] is not None

            stopped_at = time.monotonic()
            assert await a.terminate() == 0, a.process.log_tail()
            assert any(e.get("msg") == "lease released" for e in a.log_entries())

            async def b_leads() -> bool:
                return await lease_holder(kube_api, namespace) == "rb-b"

            # A released Lease is taken at the standby's next retry; a lease duration is the
            # bound even for a leader that vanished without releasing.
            await eventually(b_leads, within=6.0 + 2.0, what="rb-b to take the Lease over")
            print(f"takeover after SIGTERM: {time.monotonic() - stopped_at:.2f}s")

            async def b_leader_metric() -> bool:
                return metric_sum(await scrape_metrics(b.url), "rainbowd_leader") == 1

            await eventually(b_leader_metric, what="rb-b to report rainbowd_leader 1")
        except BaseException:
            a.close()
            if b is not None:
                b.close()
            raise
    assert b is not None
    try:
        # The connection closed: the new leader burns the second color down.
        async def second_gone() -> bool:
            return await replicas(kube_api, namespace, f"chat-{SECOND_OLD}") in (0, None)

        await eventually(second_gone, what="the new leader to clean the second color up")
        events = await our_events(kube_api, namespace, name=f"chat-{SECOND_OLD}")
        # keepScaledDown 0: the drained color is deleted directly.
        cleanups = [e for e in events if e["reason"] in ("ScaledDown", "Deleted")]
        assert [e["reportingInstance"] for e in cleanups] == ["rb-b"], cleanups
        assert await b.terminate() == 0, b.process.log_tail()
    finally:
        b.close()


async def leading_daemon(
    cluster: ControlPlane, namespace: str, kube_api: ApiClient, tmp_path: Path, identity: str
) -> DaemonProcess:
    """One daemon with leader election, started and ready once it holds the Lease."""
    policy = tmp_path / "policy.yaml"
    # Nothing in the namespace to manage, so no Prometheus is ever asked.
    policy.write_text(policy_text("http://127.0.0.1:9", namespace))
    daemon = DaemonProcess(
        cluster,
        namespace,
        tmp_path,
        policy_args=[f"--policy-file={policy}"],
        identity=identity,
        extra=LEASE,
    ).start()
    try:

        async def leads() -> bool:
            return await lease_holder(kube_api, namespace) == identity

        await eventually(leads, what=f"{identity} to hold the Lease")
        await daemon.wait_ready()
    except BaseException:
        daemon.close()
        raise
    return daemon


async def test_sigterm_exits_0_and_releases_the_lease(
    cluster: ControlPlane, namespace: str, kube_api: ApiClient, tmp_path: Path
) -> None:
    daemon = await leading_daemon(cluster, namespace, kube_api, tmp_path, "rb-solo")
    try:
        code = await daemon.terminate()
    finally:
        daemon.close()
    assert code == 0, daemon.process.log_tail()
    assert await lease_holder(kube_api, namespace) is None


async def test_losing_the_lease_exits_non_zero(
    cluster: ControlPlane, namespace: str, kube_api: ApiClient, tmp_path: Path
) -> None:
    daemon = await leading_daemon(cluster, namespace, kube_api, tmp_path, "rb-victim")
    try:
        # Another holder writes the Lease over ours (as a replica that judged it expired would).
        path = resource_path(
            "coordination.k8s.io/v1", "leases", namespace=namespace, name="rainbowd"
        )
        lease = await request_json(kube_api, "GET", path)
        lease["spec"]["holderIdentity"] = "rb-thief"
        lease["spec"]["leaseDurationSeconds"] = 3600
        lease["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await request_json(kube_api, "PUT", path, body=lease)

        async def exited() -> bool:
            return daemon.process.returncode() is not None

        await eventually(exited, what="rb-victim to exit after losing the Lease")
        code = daemon.process.returncode()
        entries = daemon.log_entries()
    finally:
        daemon.close()
    assert code == 1, daemon.process.log_tail()
    assert any(e.get("msg") == "lease lost, exiting" for e in entries)
    # It must not hand back a Lease it no longer holds.
    assert await lease_holder(kube_api, namespace) == "rb-thief"
