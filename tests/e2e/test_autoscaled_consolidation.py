"""Consolidation of a color with a HorizontalPodAutoscaler, end to end: rainbowd as a child
process, the real controller-manager's HPA controller (minReplicas above the step's target),
kwok's pods each served by a real demo_app process scraped by the real Prometheus. The step
lowers the HPA's bounds with the replicas, so the color stays at its busy pods through several
of the HPA controller's passes and no client is dropped; `rainbowd rollback` to the color then
gives the HPA its bounds back and the color its pods.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import HPA_BOUNDS
from rainbowd.deploy.common import AppRef
from rainbowd.deploy.rollback import rollback
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
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
from tests.integration.test_autoscalers import create_hpa, get_hpa, hpa_passes, seen_by_hpa

pytestmark = pytest.mark.cluster_full


async def test_a_consolidated_color_with_an_hpa_stays_consolidated_and_rolls_back(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace))
    daemon = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-hpa")
    async with demo_pods(kube_api, namespace, tmp_path, prometheus) as runner:
        names, clients = await old_color_with_two_clients(kube_api, namespace, runner, prometheus)
        busy = {c.pod for c in clients}
        await create_hpa(kube_api, namespace, OLD_NAME, low=4, high=6)
        try:
            daemon.start()
            await daemon.wait_ready()

            async def hpa_lowered() -> bool:
                spec = (await get_hpa(kube_api, namespace, OLD_NAME))["spec"]
                return bool(spec["minReplicas"] == 2)

            await eventually(hpa_lowered, what="the HPA's minReplicas lowered to 2")

            async def busy_left() -> bool:
                return await live_pods(kube_api, namespace, OLD) == busy

            await eventually(busy_left, what=f"only the busy pods {sorted(busy)} left")

            async def seen() -> bool:
                return await seen_by_hpa(kube_api, namespace, OLD_NAME, 2)

            await eventually(seen, what="the HPA controller to see the color at 2")
            # Three more passes of the HPA controller: no re-scale, no pod churn.
            for _ in range(3):
                await hpa_passes(kube_api, namespace, 2)
                assert await replicas(kube_api, namespace, OLD_NAME) == 2
                assert await live_pods(kube_api, namespace, OLD) == busy
            await serving(runner, OLD, 2)
            for client in clients:
                await client.still_served()
            hpa = await get_hpa(kube_api, namespace, OLD_NAME)
            assert json.loads(hpa["metadata"]["annotations"][HPA_BOUNDS]) == {
                "minReplicas": 4,
                "maxReplicas": 6,
            }

            # The new color turns out bad: back to the old one, its HPA's bounds first.
            said: list[str] = []
            await rollback(kube_api, AppRef(namespace=namespace, app=APP), to=OLD, say=said.append)
            assert f"HorizontalPodAutoscaler {OLD_NAME}: bounds restored to 4..6" in said
            hpa = await get_hpa(kube_api, namespace, OLD_NAME)
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 6)
            assert HPA_BOUNDS not in (hpa["metadata"].get("annotations") or {})

            async def four_again() -> bool:
                return await replicas(kube_api, namespace, OLD_NAME) == 4

            await eventually(four_again, what="the rolled-back color at 4 replicas")
            await hpa_passes(kube_api, namespace, 2)
            assert await replicas(kube_api, namespace, OLD_NAME) == 4
            for client in clients:
                await client.still_served()
            assert len(names) == 4
        finally:
            for client in clients:
                await client.close()
            daemon.close()
