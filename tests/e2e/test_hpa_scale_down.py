"""The HPA's own scale-down of a draining color, end to end: rainbowd as a child process with
consolidation off (it takes no step itself), the real controller-manager's HPA and ReplicaSet
controllers, kwok's pods each served by a real demo_app process scraped by the real Prometheus,
and the witness judging rainbowd's actions from the audit log. rainbowd keeps each pod's
`pod-deletion-cost` at its connections, so when the color's HPA is lowered to 2 (as a user
would) the ReplicaSet controller removes the 2 idle pods and every held client stays served.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import POD_DELETION_COST
from rainbowd.kube.clients import MERGE_PATCH, request_json, resource_path
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.faultlog import Witness
from tests.e2e.harness import APP, eventually, replicas
from tests.e2e.test_consolidation import (
    OLD,
    OLD_NAME,
    demo_pods,
    live_pods,
    old_color_with_two_clients,
    policy_daemon,
    policy_text,
    serving,
)
from tests.integration.test_autoscalers import create_hpa, hpa_passes, seen_by_hpa

pytestmark = pytest.mark.cluster_full


async def deletion_costs(api: ApiClient, namespace: str, color: str) -> dict[str, str | None]:
    """Each live pod of the color with its pod-deletion-cost (None: none set)."""
    listing = await request_json(
        api,
        "GET",
        resource_path("v1", "pods", namespace=namespace),
        query={"labelSelector": f"app={APP},color={color}"},
    )
    return {
        p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(POD_DELETION_COST)
        for p in listing.get("items") or []
        if not p["metadata"].get("deletionTimestamp")
    }


async def test_the_hpa_scaling_a_draining_color_down_removes_only_its_idle_pods(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    witness: Witness,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace, consolidate="null"))
    daemon = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-hpa-down")
    async with demo_pods(kube_api, namespace, tmp_path, prometheus) as runner:
        names, clients = await old_color_with_two_clients(kube_api, namespace, runner, prometheus)
        busy = {c.pod for c in clients}
        await create_hpa(kube_api, namespace, OLD_NAME, low=4, high=4)
        try:
            with witness.holding_clients(OLD_NAME):
                daemon.start()
                await daemon.wait_ready()
                wanted = {name: "1" if name in busy else "0" for name in names}

                async def costs_kept() -> bool:
                    return await deletion_costs(kube_api, namespace, OLD) == wanted

                await eventually(costs_kept, what=f"rainbowd to keep the pods' costs {wanted}")

                # The user lowers the color's HPA; its controller scales the Deployment down.
                path = resource_path(
                    "autoscaling/v2", "horizontalpodautoscalers", namespace=namespace, name=OLD_NAME
                )
                await request_json(
                    kube_api,
                    "PATCH",
                    path,
                    body={"spec": {"minReplicas": 2, "maxReplicas": 2}},
                    content_type=MERGE_PATCH,
                )

                async def busy_left() -> bool:
                    return await live_pods(kube_api, namespace, OLD) == busy

                await eventually(busy_left, what=f"only the busy pods {sorted(busy)} left")

                async def seen() -> bool:
                    return await seen_by_hpa(kube_api, namespace, OLD_NAME, 2)

                await eventually(seen, what="the HPA controller to see the color at 2")
                await hpa_passes(kube_api, namespace, 2)
                assert await replicas(kube_api, namespace, OLD_NAME) == 2
                assert await live_pods(kube_api, namespace, OLD) == busy
                # The idle pods' processes stopped with them; the busy ones serve their clients.
                assert set(await serving(runner, OLD, 2)) == busy
                for client in clients:
                    await client.still_served()
            # rainbowd itself scaled nothing: the HPA did, through the ReplicaSet controller.
            assert witness.applied() == []
            witness.assert_no_wrongful()
        finally:
            for client in clients:
                await client.close()
            daemon.close()
