"""A consolidation step on a color with a HorizontalPodAutoscaler, against the real
kube-controller-manager's HPA controller (it enforces minReplicas and maxReplicas with no metrics
API, every `--horizontal-pod-autoscaler-sync-period`): without the HPA's bounds lowered, the HPA
scales the color straight back up (the tug of war); with them lowered, the step holds through
several of the HPA's passes, and a rollback's restore gives the HPA its bounds and the color its
replicas back. The HPAs come to the executor through the cache's watch, as in the daemon.
And the pod-deletion-costs kept on a draining color's pods make the HPA's own scale-down remove
its idle pods.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    HPA_BOUNDS,
    ActionKind,
    AppPlan,
    ColorPlan,
    Connections,
    Namespace,
    ObjectKind,
    Plan,
    PodConnections,
    Reason,
    Snapshot,
    State,
)
from rainbowd.kube.autoscaling import restore
from rainbowd.kube.caching import ClusterCache
from rainbowd.kube.clients import MERGE_PATCH, request_json, resource_path
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import ActionOutcome, Executor
from rainbowd_sandbox.controlplane import ControlPlane
from tests.integration.test_consolidating import consolidation, pod_names
from tests.integration.test_executing import (
    NOW,
    action_for,
    applied_on_a_fresh_read,
    create_deployment,
    eventually,
    list_items,
    our_events,
    plan_of,
    settled_deployment,
)

pytestmark = [pytest.mark.cluster_full, pytest.mark.usefixtures("cluster_full")]

NAME = "chat-c0c0c0"


def hpa_body(name: str, target: str, *, low: int, high: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }


def _hpa_path(namespace: str, name: str | None = None) -> str:
    return resource_path(
        "autoscaling/v2", "horizontalpodautoscalers", namespace=namespace, name=name
    )


async def create_hpa(api: ApiClient, namespace: str, target: str, *, low: int, high: int) -> None:
    await request_json(
        api, "POST", _hpa_path(namespace), body=hpa_body(target, target, low=low, high=high)
    )


async def get_hpa(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await request_json(api, "GET", _hpa_path(namespace, name))


async def replicas(api: ApiClient, namespace: str, name: str) -> int:
    path = resource_path("apps/v1", "deployments", namespace=namespace, name=name)
    found: int = (await request_json(api, "GET", path))["spec"]["replicas"]
    return found


async def seen_by_hpa(api: ApiClient, namespace: str, name: str, count: int) -> bool:
    """Whether the HPA controller's last pass over the HPA saw its target at `count` replicas
    (with no metrics API, a pass within the bounds records only that)."""
    status = (await get_hpa(api, namespace, name)).get("status") or {}
    return bool(status.get("currentReplicas") == count)


async def hpa_passes(api: ApiClient, namespace: str, passes: int) -> None:
    """Waits for `passes` more passes of the HPA controller, told by a sentinel: a Deployment
    set below its own HPA's minReplicas, which only the controller's next pass brings back up.
    The controller visits every HPA once per sync period, so n sentinel passes span at least
    n - 1 whole periods, with a pass over every other HPA in each."""
    sentinel = "sentinel-5e5e5e"
    path = resource_path("apps/v1", "deployments", namespace=namespace, name=sentinel)
    if not await exists(api, namespace, sentinel):
        await create_deployment(api, namespace, "sentinel", "5e5e5e", replicas=2)
        await create_hpa(api, namespace, sentinel, low=2, high=2)
    for _ in range(passes):
        await request_json(
            api,
            "PATCH",
            f"{path}/scale",
            body={"spec": {"replicas": 1}},
            content_type=MERGE_PATCH,
        )

        async def back_up() -> bool:
            return await replicas(api, namespace, sentinel) == 2

        await eventually(back_up, what="the HPA controller to bring the sentinel back to 2")


async def exists(api: ApiClient, namespace: str, name: str) -> bool:
    path = resource_path("apps/v1", "deployments", namespace=namespace)
    listing = await request_json(api, "GET", path)
    return any(d["metadata"]["name"] == name for d in listing["items"])


@pytest.fixture
async def cache(kube_api: ApiClient, namespace: str) -> AsyncIterator[ClusterCache]:
    found = ClusterCache(kube_api, namespaces=[namespace])
    task = asyncio.create_task(found.run())
    yield found
    await found.stop()
    await asyncio.gather(task, return_exceptions=True)


async def step_on_a_color_with_an_hpa(
    api: ApiClient, namespace: str, executor: Executor, cache: ClusterCache
) -> None:
    """chat-c0c0c0 at 4 pods under an HPA with minReplicas 4, stepped to its 2 busy pods."""
    obj = await create_deployment(api, namespace, "chat", "c0c0c0", replicas=4)
    await create_hpa(api, namespace, NAME, low=4, high=6)

    async def listed() -> bool:
        objects = cache.objects()
        return objects is not None and any(
            o.kind is ObjectKind.HPA and o.target == NAME for o in objects.get(namespace, ())
        )

    await eventually(listed, what="the HPA in the cache")
    names = sorted(await pod_names(api, namespace))
    figures: dict[str, float | None] = {names[0]: 3.0, names[1]: 0.0, names[2]: 0.0}
    figures[names[3]] = 1.0
    [result] = await executor.apply(plan_of(consolidation(obj, figures)))
    assert result.outcome is ActionOutcome.OK, result.error


async def test_without_its_bounds_lowered_the_hpa_undoes_the_step(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    """The tug of war the HPA's bounds are lowered against: an executor that does not know
    the color's HPA (as before) steps it to 2, and the HPA controller puts it back to 4."""
    blind = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    blind.objects = lambda: {}
    await step_on_a_color_with_an_hpa(kube_api, namespace, blind, cache)

    async def back_to_four() -> bool:
        return await replicas(kube_api, namespace, NAME) == 4

    await eventually(back_to_four, what="the HPA controller to scale the color back to 4")


async def test_a_step_lowers_the_hpa_bounds_and_holds_through_its_passes(
    kube_api: ApiClient, namespace: str, cache: ClusterCache, cluster_full: ControlPlane
) -> None:
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    executor.objects = cache.objects
    await step_on_a_color_with_an_hpa(kube_api, namespace, executor, cache)

    hpa = await get_hpa(kube_api, namespace, NAME)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    record = json.loads(hpa["metadata"]["annotations"][HPA_BOUNDS])
    assert record == {"minReplicas": 4, "maxReplicas": 6}

    async def seen() -> bool:
        return await seen_by_hpa(kube_api, namespace, NAME, 2)

    await eventually(seen, what="the HPA controller to see the color at 2")
    # Three more passes of the controller: the color stays at 2 through each.
    for _ in range(3):
        await hpa_passes(kube_api, namespace, 2)
        assert await replicas(kube_api, namespace, NAME) == 2
        assert await seen_by_hpa(kube_api, namespace, NAME, 2)

    # A rollback's restore: the HPA's bounds back, and with them the color's 4 pods.
    said = await restore(kube_api, namespace, NAME)
    assert said == [f"HorizontalPodAutoscaler {NAME}: bounds restored to 4..6"]
    hpa = await get_hpa(kube_api, namespace, NAME)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 6)
    assert HPA_BOUNDS not in (hpa["metadata"].get("annotations") or {})

    async def four_again() -> bool:
        return await replicas(kube_api, namespace, NAME) == 4

    await eventually(four_again, what="the HPA controller to bring the color back to 4")


async def test_a_second_step_keeps_the_first_record(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    executor.objects = cache.objects
    await step_on_a_color_with_an_hpa(kube_api, namespace, executor, cache)

    async def hpa_listed_lowered() -> bool:
        objects = cache.objects() or {}
        return any(o.min_replicas == 2 for o in objects.get(namespace, ()) if o.target == NAME)

    await eventually(hpa_listed_lowered, what="the lowered HPA in the cache")

    async def two_pods() -> bool:
        return len(await pod_names(kube_api, namespace)) == 2

    await eventually(two_pods, what="the step's two pods to be left")
    await settled_deployment(kube_api, namespace, NAME)
    names = sorted(await pod_names(kube_api, namespace))
    await applied_on_a_fresh_read(
        kube_api,
        executor,
        namespace,
        NAME,
        lambda fresh: consolidation(fresh, {names[0]: 2.0, names[1]: 0.0}),
    )
    hpa = await get_hpa(kube_api, namespace, NAME)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    assert json.loads(hpa["metadata"]["annotations"][HPA_BOUNDS]) == {
        "minReplicas": 4,
        "maxReplicas": 6,
    }


async def test_a_step_on_a_color_with_two_hpas_is_refused(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    executor.objects = cache.objects
    obj = await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=3)
    await create_hpa(kube_api, namespace, NAME, low=3, high=3)
    await request_json(
        kube_api,
        "POST",
        _hpa_path(namespace),
        body=hpa_body("chat-other", NAME, low=3, high=3),
    )

    async def both_listed() -> bool:
        objects = cache.objects() or {}
        return sum(1 for o in objects.get(namespace, ()) if o.target == NAME) == 2

    await eventually(both_listed, what="both HPAs in the cache")
    names = sorted(await pod_names(kube_api, namespace))
    [result] = await executor.apply(
        plan_of(consolidation(obj, {names[0]: 1.0, names[1]: 0.0, names[2]: 0.0}))
    )
    assert result.outcome is ActionOutcome.CONFLICT
    assert result.error is not None and "chat-c0c0c0, chat-other" in result.error
    assert await replicas(kube_api, namespace, NAME) == 3


def draining(namespace: str, figures: dict[str, float | None]) -> tuple[Plan, Snapshot]:
    """A plan with chat-c0c0c0 draining and no step planned, and the per-pod figures."""
    color = ColorPlan(
        namespace=namespace,
        app="chat",
        color="c0c0c0",
        name=NAME,
        state=State.DRAINING,
        rule="chat",
        replicas=len(figures),
        ready_replicas=len(figures),
        connections=Connections(value=sum(v or 0 for v in figures.values())),
        created_at=NOW,
        retired_at=NOW,
        drained_since=None,
        note="",
    )
    app = AppPlan(namespace, "chat", "chat", None, "", (color,))
    pods = {("chat", "c0c0c0"): PodConnections(pods=figures)}
    snapshot = Snapshot(now=NOW, namespaces={namespace: Namespace(name=namespace, pods=pods)})
    return Plan(now=NOW, apps=(app,)), snapshot


async def test_the_hpa_scaling_a_draining_color_down_removes_its_idle_pods(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    """Costs kept current on a draining color's pods make the HPA's own scale-down (its
    maxReplicas lowered under the replicas) remove the idle pods: here the two newest, which
    the ReplicaSet controller would remove first without them."""
    await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=4)
    await create_hpa(kube_api, namespace, NAME, low=1, high=4)
    cache.watch_pods("app", "color")

    async def listed() -> bool:
        return len([p for p in cache.pods() or [] if p.ready]) == 4

    await eventually(listed, what="the color's 4 pods in the pod watch")
    pods = await list_items(kube_api, "v1", "pods", namespace, "app=chat,color=c0c0c0")
    # Busy: the newest, which the ReplicaSet controller removes first when costs are equal
    # (pods created in one second tie, and then it picks any).
    newest_first = sorted(
        pods,
        key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]),
        reverse=True,
    )
    names = [p["metadata"]["name"] for p in newest_first]
    busy, idle = set(names[:2]), set(names[2:])
    figures: dict[str, float | None] = {name: 0.0 for name in idle}
    figures.update({name: 3.0 for name in busy})
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    plan, snapshot = draining(namespace, figures)

    assert await executor.keep_costs(plan, snapshot, cache.pods()) == 4

    async def costs_seen() -> bool:
        return {p.name: p.cost for p in cache.pods() or []} == {
            name: "3" if name in busy else "0" for name in names
        }

    await eventually(costs_seen, what="the costs in the pod watch")
    # Only on change: the next cycle patches nothing.
    assert await executor.keep_costs(plan, snapshot, cache.pods()) == 0
    await request_json(
        kube_api,
        "PATCH",
        _hpa_path(namespace, NAME),
        body={"spec": {"maxReplicas": 2}},
        content_type=MERGE_PATCH,
    )

    async def busy_left() -> bool:
        return await pod_names(kube_api, namespace) == busy

    await eventually(busy_left, what=f"the HPA's scale-down to leave only {sorted(busy)}")


async def test_deleting_a_color_reports_what_it_leaves_behind(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    """A color deployed otherwise (its HPA and PDB with no ownerReference to it) is deleted as
    the policy deletes it: a Warning Event `LeftBehind` and the result (/status's
    recentActions) name what the garbage collector leaves; an owned object is not named."""
    obj = await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=1)
    await create_hpa(kube_api, namespace, NAME, low=1, high=2)
    owned = hpa_body("chat-owned", NAME, low=1, high=2)
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME, "uid": obj["metadata"]["uid"]}
    ]
    await request_json(kube_api, "POST", _hpa_path(namespace), body=owned)
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "chat-pdb"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "chat"}}},
    }
    await request_json(
        kube_api,
        "POST",
        resource_path("policy/v1", "poddisruptionbudgets", namespace=namespace),
        body=pdb,
    )

    async def listed() -> bool:
        return len((cache.objects() or {}).get(namespace, ())) == 3

    await eventually(listed, what="the HPAs and the PDB in the cache")
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    executor.objects = cache.objects
    fresh = await settled_deployment(kube_api, namespace, NAME)
    [deleted] = await executor.apply(plan_of(action_for(fresh, ActionKind.DELETE, Reason.DRAINED)))

    assert deleted.outcome is ActionOutcome.OK, deleted.error
    assert deleted.left_behind == (
        f"HorizontalPodAutoscaler {NAME}",
        "PodDisruptionBudget chat-pdb",
    )
    [event] = [e for e in await our_events(kube_api, namespace) if e["reason"] == "LeftBehind"]
    assert event["type"] == "Warning"
    assert f"HorizontalPodAutoscaler {NAME}, PodDisruptionBudget chat-pdb" in event["note"]
