"""The whole burn-down of an old color, end to end: real apiserver with kwok, real Prometheus
scraping real demo_app processes, rainbowd running in this process.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import LIVE_AT, ORIGINAL_REPLICAS, RETIRED_AT
from rainbowd.sandbox.controlplane import ControlPlane
from rainbowd.sandbox.prometheus import PrometheusServer
from rainbowd.settings import PolicySource
from tests.e2e.harness import (
    ROOT,
    Fleet,
    annotations_of,
    color_doc,
    create_color,
    daemon_settings,
    eventually,
    fetch_json,
    get_deployment,
    held_connection,
    metric_sum,
    our_events,
    point_service,
    policy_text,
    prom_query,
    replicas,
    running_daemon,
    scrape_metrics,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD, NEW = "aaaaaa", "bbbbbb"


async def test_old_color_is_held_while_connected_then_scaled_down_and_deleted(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    old_name, new_name = f"chat-{OLD}", f"chat-{NEW}"
    await create_color(kube_api, namespace, OLD)
    await create_color(kube_api, namespace, NEW)
    await point_service(kube_api, namespace, OLD)
    demo_old = fleet.start(OLD)
    fleet.start(NEW)
    await fleet.wait_scraped(OLD, 0)
    await fleet.wait_scraped(NEW, 0)

    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace))
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))
    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url
        fleet.scrape(url.removeprefix("http://"), job="rainbowd")

        async def old_marked_live() -> bool:
            return LIVE_AT in await annotations_of(kube_api, namespace, old_name)

        await eventually(old_marked_live, what="the live color to be stamped live-at")

        async with held_connection(demo_old):
            await fleet.wait_scraped(OLD, 1)
            # The deploy: the Service switches to the new color.
            await point_service(kube_api, namespace, NEW)

            async def old_retired() -> bool:
                return RETIRED_AT in await annotations_of(kube_api, namespace, old_name)

            await eventually(old_retired, what="the old color to be stamped retired-at")

            # Past minRetiredAge (2s) + drainHold (1s) with margin, as the daemon itself sees
            # it, and still holding one connection: it must stay up.
            async def held_past_its_age() -> bool:
                doc = color_doc(await fetch_json(url + "/status"), OLD)
                return bool(
                    doc is not None
                    and doc["state"] == "draining"
                    and doc["connections"]["value"] == 1
                    and (doc["retiredFor"] or 0) >= 6
                )

            await eventually(held_past_its_age, what="the old color held while connected")
            assert await replicas(kube_api, namespace, old_name) == 1
            assert not await our_events(kube_api, namespace, name=old_name, reason="ScaledDown")

        # The last client left: drained, scaled to 0, then deleted (keepScaledDown 0).
        async def old_scaled_down_or_gone() -> bool:
            return await replicas(kube_api, namespace, old_name) in (0, None)

        await eventually(old_scaled_down_or_gone, what="the drained color to be scaled to 0")

        async def old_deleted() -> bool:
            return await get_deployment(kube_api, namespace, old_name) is None

        await eventually(old_deleted, what="the scaled-down color to be deleted")

        # rainbowd's own metrics, scraped by the real Prometheus and queried back.
        async def scraped_state() -> bool:
            found = await prom_query(
                prometheus.url,
                f'rainbowd_color_state{{namespace="{namespace}",app="chat",color="{NEW}",'
                'state="live"} == 1',
            )
            return bool(found)

        await eventually(scraped_state, what="Prometheus to hold rainbowd_color_state")

        # `rainbowd status` against the running daemon prints the plan table.
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
        rows = [line.split() for line in out.decode().splitlines()]
        assert [namespace, "chat", NEW, "live"] in [row[:4] for row in rows]
        assert OLD not in out.decode()

        metrics = await scrape_metrics(url)

    # Exactly one scale-down and one delete, both of the old color, each with its Event.
    assert metric_sum(metrics, "rainbowd_actions_total", action="scale", outcome="ok") == 1
    assert metric_sum(metrics, "rainbowd_actions_total", action="delete", outcome="ok") == 1
    assert len(await our_events(kube_api, namespace, name=old_name, reason="ScaledDown")) == 1
    assert len(await our_events(kube_api, namespace, name=old_name, reason="Deleted")) == 1

    # The live color was never touched: still one replica, never retired, no disruptive Event.
    new = await get_deployment(kube_api, namespace, new_name)
    assert new is not None
    assert new["spec"]["replicas"] == 1
    new_annotations = new["metadata"].get("annotations") or {}
    assert RETIRED_AT not in new_annotations and ORIGINAL_REPLICAS not in new_annotations
    reasons = {e["reason"] for e in await our_events(kube_api, namespace, name=new_name)}
    assert reasons <= {"MarkedLive"}, reasons
