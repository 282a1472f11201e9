"""The daemon through outages of the parts it depends on: Prometheus stopped (unknown
connections never act) and the apiserver restarted (watches resume, no action applied twice).
Both are part of the fault suite (`test_fault_suite_*.py`): the witness judges their actions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import RETIRED_AT
from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.faultlog import Witness
from tests.e2e.harness import (
    DaemonProcess,
    Fleet,
    annotations_of,
    color_doc,
    create_color,
    daemon_settings,
    eventually,
    fetch_json,
    get_deployment,
    metric_sum,
    our_events,
    point_service,
    policy_text,
    replicas,
    running_daemon,
    scrape_metrics,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD, NEW = "aaaaaa", "bbbbbb"


async def two_colors(api: ApiClient, namespace: str, fleet: Fleet) -> None:
    """OLD and NEW running, the Service on NEW: OLD is retired from the daemon's first look."""
    await create_color(api, namespace, OLD)
    await create_color(api, namespace, NEW)
    await point_service(api, namespace, NEW)
    fleet.start(OLD)
    fleet.start(NEW)
    await fleet.wait_scraped(OLD, 0)
    await fleet.wait_scraped(NEW, 0)


async def test_no_action_while_prometheus_is_down_and_resume_after(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    witness: Witness,
    tmp_path: Path,
) -> None:
    old_name = f"chat-{OLD}"
    await two_colors(kube_api, namespace, fleet)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace, min_retired_age="3s"))
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))

    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url
        # A client keeps the old color busy until Prometheus is gone, so nothing drains early.
        async with witness.holding_connection(fleet.apps[OLD], old_name):
            await fleet.wait_scraped(OLD, 1)

            async def seen_connected() -> bool:
                doc = color_doc(await fetch_json(url + "/status"), OLD)
                return bool(doc and doc["connections"]["value"] == 1)

            await eventually(seen_connected, what="the daemon to see the held connection")
            fault = witness.injected("prometheus down", (old_name,))
            hands_off = witness.hands_off_from(old_name, "acted while Prometheus was down")
            prometheus.stop()
        # The client left while nobody was looking: the color is drained, but unknown.

        async def held_while_unknown() -> bool:
            status = await fetch_json(url + "/status")
            doc = color_doc(status, OLD)
            return bool(
                doc is not None
                and doc["state"] == "unknown-connections"
                and not doc["connections"]["known"]
                and (doc["retiredFor"] or 0) >= 8  # minRetiredAge 3s + drainHold 1s, doubled
                and status["cycle"]["prometheusErrors"]
            )

        await eventually(held_while_unknown, what="the old color held while Prometheus is down")
        assert await replicas(kube_api, namespace, old_name) == 1
        assert not await our_events(kube_api, namespace, name=old_name, reason="ScaledDown")
        metrics = await scrape_metrics(url)
        assert metric_sum(metrics, "rainbowd_prometheus_errors_total", cause="unreachable") > 0
        assert metric_sum(metrics, "rainbowd_actions_total", action="scale") == 0

        witness.end_hands_off(hands_off)
        prometheus.start()
        witness.cleared(fault)

        async def scaled_down_or_gone() -> bool:
            return await replicas(kube_api, namespace, old_name) in (0, None)

        await eventually(scaled_down_or_gone, what="the scale-down once Prometheus is back")
        witness.converged(fault)
    witness.assert_no_wrongful()


async def test_apiserver_restart_mid_run_applies_each_action_once(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    witness: Witness,
    tmp_path: Path,
) -> None:
    old_name = f"chat-{OLD}"
    await two_colors(kube_api, namespace, fleet)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace))
    daemon = DaemonProcess(
        cluster_full,
        namespace,
        tmp_path,
        policy_args=[f"--policy-file={policy}"],
        identity="rainbowd-restart",
    )
    try:
        # A client holds the old color from before the daemon starts until after the restart.
        async with witness.holding_connection(fleet.apps[OLD], old_name):
            await fleet.wait_scraped(OLD, 1)
            daemon.start()
            await daemon.wait_ready()

            async def retired() -> bool:
                return RETIRED_AT in await annotations_of(kube_api, namespace, old_name)

            await eventually(retired, what="the old color to be stamped retired")
            before = await scrape_metrics(daemon.url)

            # Blocks this test (not the daemon, a separate process) while the apiserver is down.
            fault = witness.injected("apiserver restarted", (old_name,))
            cluster_full.restart_apiserver()

        async def deleted() -> bool:
            return await get_deployment(kube_api, namespace, old_name) is None

        await eventually(deleted, what="the old color deleted after the restart")
        witness.converged(fault)
        after = await scrape_metrics(daemon.url)
        assert daemon.process.running(), daemon.process.log_tail()
        code = await daemon.terminate()
    finally:
        daemon.close()
    assert code == 0, daemon.process.log_tail()

    # The watches came back after the restart.
    assert metric_sum(after, "rainbowd_informer_watches_total") > metric_sum(
        before, "rainbowd_informer_watches_total"
    )
    # Each action applied once (attempts that failed while the apiserver was down, or hit a
    # stale copy, were not applied): with keepScaledDown 0 the drained color is deleted
    # directly, and each stamp and the delete has exactly one Normal Event.
    assert metric_sum(after, "rainbowd_actions_total", action="delete", outcome="ok") == 1
    assert metric_sum(after, "rainbowd_actions_total", outcome="gone") == 0
    for reason in ("observed-retired", "drain-started"):
        assert metric_sum(after, "rainbowd_actions_total", reason=reason, outcome="ok") == 1
    events = await our_events(kube_api, namespace, name=old_name)
    applied = sorted(e["reason"] for e in events if e["type"] == "Normal")
    assert applied == ["Deleted", "DrainStarted", "MarkedRetired"], applied
    witness.assert_no_wrongful()
