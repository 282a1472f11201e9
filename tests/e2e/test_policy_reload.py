"""The policy ConfigMap edited under a running daemon: a broken edit is reported and ignored, a
valid edit changes behaviour at the next cycle.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.harness import (
    Fleet,
    color_doc,
    create_color,
    daemon_settings,
    eventually,
    fetch_json,
    metric_sum,
    our_events,
    point_service,
    policy_text,
    put_configmap,
    replicas,
    running_daemon,
    scrape_metrics,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD, NEW = "aaaaaa", "bbbbbb"
CONFIGMAP = "rainbowd-policy"


async def test_configmap_edits(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    old_name = f"chat-{OLD}"
    await create_color(kube_api, namespace, OLD)
    await create_color(kube_api, namespace, NEW)
    await point_service(kube_api, namespace, NEW)
    fleet.start(OLD)
    fleet.start(NEW)
    await fleet.wait_scraped(OLD, 0)

    # First a policy that keeps every retired color for an hour.
    patient = policy_text(prometheus.url, namespace, min_retired_age="1h")
    await put_configmap(kube_api, namespace, CONFIGMAP, patient)
    settings = daemon_settings(
        cluster_full,
        namespace,
        policy=PolicySource(configmap_namespace=namespace, configmap_name=CONFIGMAP),
    )
    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url

        async def drained_but_young() -> bool:
            doc = color_doc(await fetch_json(url + "/status"), OLD)
            return bool(
                doc
                and doc["state"] == "draining"
                and doc["connections"]["value"] == 0
                and (doc["retiredFor"] or 0) >= 4
            )

        await eventually(drained_but_young, what="the old color held by minRetiredAge 1h")

        # A broken edit: reported on the ConfigMap, in the metric, and ignored.
        broken = patient.replace("connectionFloor: 0", 'connectionFloor: "ten"')
        broken = broken.replace("minRetiredAge: 1h", "minRetiredAge: 0s")
        await put_configmap(kube_api, namespace, CONFIGMAP, broken)

        async def reported() -> list[dict[str, object]]:
            return await our_events(kube_api, namespace, name=CONFIGMAP, reason="InvalidPolicy")

        events = await eventually(reported, what="a Warning Event InvalidPolicy on the ConfigMap")
        assert events[0]["type"] == "Warning"
        assert "defaults.connectionFloor" in str(events[0]["note"])
        metrics = await scrape_metrics(url)
        assert metric_sum(metrics, "rainbowd_policy_valid") == 0
        status = await fetch_json(url + "/status")
        assert status["policy"]["valid"] is False
        assert any("defaults.connectionFloor" in e for e in status["policy"]["errors"])
        # The last good policy still acts: a few more cycles, and the old color stays.
        cycles = daemon.cycles

        async def more_cycles() -> bool:
            return daemon.cycles >= cycles + 3

        await eventually(more_cycles, what="three more cycles")
        assert await replicas(kube_api, namespace, old_name) == 1
        assert status["policy"]["policy"]["defaults"]["minRetiredAge"] == "1h"

        # A valid edit: the very next cycle plans with it, and the old color goes.
        generation = daemon.policy.generation
        await put_configmap(
            kube_api,
            namespace,
            CONFIGMAP,
            patient.replace("minRetiredAge: 1h", "minRetiredAge: 2s"),
        )

        async def applied() -> bool:
            return daemon.policy.generation > generation

        await eventually(applied, what="the valid edit to be applied")
        # Every cycle numbered above this one started after the edit was applied.
        applied_at = daemon.cycles

        async def next_cycle_done() -> bool:
            report = daemon.last_cycle
            return report is not None and report.number > applied_at

        await eventually(next_cycle_done, what="the first cycle under the new policy")
        report = daemon.last_cycle
        assert report is not None and report.plan is not None
        assert report.number == applied_at + 1, "a cycle went by unobserved"
        acted_on = {a.color for a in report.plan.actions}
        assert OLD in acted_on, report.plan

        async def scaled_down_or_gone() -> bool:
            return await replicas(kube_api, namespace, old_name) in (0, None)

        await eventually(scaled_down_or_gone, what="the scale-down under the new policy")
        metrics = await scrape_metrics(url)
        assert metric_sum(metrics, "rainbowd_policy_valid") == 1
