"""Every pod of a retired color carries `rainbowd.io/phase: retired`, pods created after the color
was stamped retired included, at the cost of a watch, not a LIST per cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import PHASE, RETIRED_AT
from rainbowd.kube.clients import request_json, resource_path
from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.harness import (
    APP,
    annotations_of,
    create_color,
    daemon_settings,
    eventually,
    point_service,
    policy_text,
    running_daemon,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD, NEW = "aaaaaa", "bbbbbb"


async def pods_of(api: ApiClient, namespace: str, color: str) -> dict[str, str | None]:
    """Each running (not terminating) pod of the color, by name, with its phase mark."""
    listing = await request_json(
        api,
        "GET",
        resource_path("v1", "pods", namespace=namespace),
        query={"labelSelector": f"app={APP},color={color}"},
    )
    items: list[dict[str, Any]] = listing.get("items") or []
    return {
        p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(PHASE)
        for p in items
        if not p["metadata"].get("deletionTimestamp")
    }


def pod_lists(cluster: ControlPlane, namespace: str) -> int:
    return sum(
        1
        for event in cluster.audit_events()
        if event.get("userAgent", "").startswith("rainbowd/")
        and event.get("verb") == "list"
        and (event.get("objectRef") or {}).get("resource") == "pods"
        and (event.get("objectRef") or {}).get("namespace") == namespace
    )


async def test_a_pod_created_after_its_color_retired_is_marked_retired_too(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    await create_color(kube_api, namespace, OLD)
    await create_color(kube_api, namespace, NEW)
    await point_service(kube_api, namespace, NEW)
    policy = tmp_path / "policy.yaml"
    # Never old enough to act on: this is about the mark, not the burn-down.
    policy.write_text(policy_text(prometheus.url, namespace, min_retired_age="24h"))
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))
    async with running_daemon(settings) as daemon:

        async def stamped_retired() -> bool:
            return RETIRED_AT in await annotations_of(kube_api, namespace, f"{APP}-{OLD}")

        await eventually(stamped_retired, what=f"{OLD} to be stamped retired")

        async def all_marked() -> bool:
            pods = await pods_of(kube_api, namespace, OLD)
            return bool(pods) and set(pods.values()) == {"retired"}

        await eventually(all_marked, what=f"the pods of {OLD} to be marked retired")
        (first,) = await pods_of(kube_api, namespace, OLD)
        assert set((await pods_of(kube_api, namespace, NEW)).values()) == {None}

        # The pod goes away (a node drain, an eviction): its ReplicaSet makes a new one, which
        # must learn it belongs to a retired color.
        await request_json(
            kube_api,
            "DELETE",
            resource_path("v1", "pods", namespace=namespace, name=first),
        )

        async def replacement_marked() -> bool:
            pods = await pods_of(kube_api, namespace, OLD)
            return first not in pods and bool(pods) and set(pods.values()) == {"retired"}

        await eventually(replacement_marked, what=f"the new pod of {OLD} to be marked retired")
        lists = pod_lists(cluster_full, namespace)
        # More cycles (interval 1s): the pods are watched, never listed again.
        cycles = daemon.cycles

        async def three_more_cycles() -> bool:
            return daemon.cycles >= cycles + 3

        await eventually(three_more_cycles, what="three more cycles")
        assert pod_lists(cluster_full, namespace) == lists <= 1
