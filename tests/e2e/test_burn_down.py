"""The whole burn-down of an old color, end to end: real apiserver with kwok, real Prometheus
scraping real demo_app processes, rainbowd running in this process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import LIVE_AT, ORIGINAL_REPLICAS, RETIRED_AT
from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.harness import (
    Fleet,
    annotations_of,
    color_doc,
    create_color,
    daemon_settings,
    eventually,
    fetch_json,
    fetch_status,
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
    status_command,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

# Created in this order: OLDEST and OLD predate NEW, the release the test deploys.
OLDEST, OLD, NEW = "aaaaaa", "bbbbbb", "cccccc"


async def test_old_color_is_held_while_connected_then_scaled_down_and_deleted(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    oldest_name, old_name, new_name = f"chat-{OLDEST}", f"chat-{OLD}", f"chat-{NEW}"
    for color in (OLDEST, OLD, NEW):
        await create_color(kube_api, namespace, color)
        fleet.start(color)
    await point_service(kube_api, namespace, OLD)
    for color in (OLDEST, OLD, NEW):
        await fleet.wait_scraped(color, 0)

    policy = tmp_path / "policy.yaml"
    # One scaled-down color is kept for a rollback; the one beyond it is deleted.
    policy.write_text(policy_text(prometheus.url, namespace, keep_scaled_down=1))
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))
    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url
        fleet.scrape(url.removeprefix("http://"), job="rainbowd")

        async def probes_pass() -> bool:
            return (
                await fetch_status(url + "/readyz") == 200
                and await fetch_status(url + "/healthz") == 200
            )

        await eventually(probes_pass, what="/readyz and /healthz to answer 200")

        # OLDEST predates the live color and holds nothing: retired, drained, scaled to 0,
        # and kept (keepScaledDown 1).
        async def oldest_scaled_down() -> bool:
            return await replicas(kube_api, namespace, oldest_name) == 0

        await eventually(oldest_scaled_down, what="the drained oldest color to be scaled to 0")

        async def old_marked_live() -> bool:
            return LIVE_AT in await annotations_of(kube_api, namespace, old_name)

        await eventually(old_marked_live, what="the live color to be stamped live-at")

        async with held_connection(fleet.apps[OLD]):
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
                    # The history the sparklines draw: one point per cycle, the latest last.
                    and len(doc["history"]) >= 3
                    and doc["history"][-1][1] == 1
                )

            await eventually(held_past_its_age, what="the old color held while connected")
            assert await replicas(kube_api, namespace, old_name) == 1
            assert not await our_events(kube_api, namespace, name=old_name, reason="ScaledDown")
            assert await replicas(kube_api, namespace, oldest_name) == 0  # still kept

        # The last client left: OLD drains and is scaled to 0; now two colors are scaled down,
        # one more than keepScaledDown, so the older of them is deleted.
        async def old_scaled_down() -> bool:
            return await replicas(kube_api, namespace, old_name) == 0

        await eventually(old_scaled_down, what="the drained old color to be scaled to 0")

        async def oldest_deleted() -> bool:
            return await get_deployment(kube_api, namespace, oldest_name) is None

        await eventually(oldest_deleted, what="the color beyond keepScaledDown to be deleted")

        # rainbowd's own metrics, scraped by the real Prometheus and queried back.
        async def scraped_state() -> bool:
            found = await prom_query(
                prometheus.url,
                f'rainbowd_color_state{{namespace="{namespace}",app="chat",color="{NEW}",'
                'state="live"} == 1',
            )
            return bool(found)

        await eventually(scraped_state, what="Prometheus to hold rainbowd_color_state")

        # `rainbowd status` against the running daemon prints the plan table: once a cycle has
        # seen OLD at 0 (the cycle that scaled it also deleted OLDEST, and showed it drained).
        async def status_after() -> str | None:
            out: str = await status_command(url)
            rows = [line.split()[:4] for line in out.splitlines()]
            return out if [namespace, "chat", OLD, "scaled-down"] in rows else None

        out = await eventually(status_after, what="rainbowd status to show OLD scaled down")
        rows = [line.split()[:4] for line in out.splitlines()]
        assert [namespace, "chat", NEW, "live"] in rows
        assert OLDEST not in out

        metrics = await scrape_metrics(url)

    # Each action once: two scale-downs, one delete, one Event each.
    assert metric_sum(metrics, "rainbowd_actions_total", action="scale", outcome="ok") == 2
    assert metric_sum(metrics, "rainbowd_actions_total", action="delete", outcome="ok") == 1
    assert len(await our_events(kube_api, namespace, name=oldest_name, reason="ScaledDown")) == 1
    assert len(await our_events(kube_api, namespace, name=oldest_name, reason="Deleted")) == 1
    assert len(await our_events(kube_api, namespace, name=old_name, reason="ScaledDown")) == 1
    old = await get_deployment(kube_api, namespace, old_name)
    assert old is not None and old["spec"]["replicas"] == 0
    assert old["metadata"]["annotations"][ORIGINAL_REPLICAS] == "1"

    # The live color was never touched: still one replica, never retired, no disruptive Event.
    new = await get_deployment(kube_api, namespace, new_name)
    assert new is not None
    assert new["spec"]["replicas"] == 1
    new_annotations = new["metadata"].get("annotations") or {}
    assert RETIRED_AT not in new_annotations and ORIGINAL_REPLICAS not in new_annotations
    reasons = {e["reason"] for e in await our_events(kube_api, namespace, name=new_name)}
    assert reasons <= {"MarkedLive"}, reasons
