"""The executor's consolidation step against a real control plane: the ReplicaSet controller of
the real kube-controller-manager (with kwok's pods) removes exactly the pods the step's
pod-deletion-costs name, through /scale, with the step's record and its Event; a step planned on
pods that changed since is refused and changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.consolidation import decide_consolidation, pod_step
from rainbowd.core.model import (
    CONSOLIDATED_AT,
    CONSOLIDATED_FROM,
    POD_DELETION_COST,
    Action,
    ActionKind,
    Connections,
    PodConnections,
    Reason,
)
from rainbowd.core.objects import deployment_from_k8s, format_time
from rainbowd.core.policy import Consolidate, Knobs
from rainbowd.kube.clients import KubeError
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import ActionOutcome, Executor
from rainbowd.metrics import Metrics
from tests.integration.test_executing import (
    STAMP,
    action_for,
    create_deployment,
    eventually,
    get_deployment,
    list_items,
    our_events,
    plan_of,
    settled_deployment,
)

pytestmark = [pytest.mark.cluster_full, pytest.mark.usefixtures("cluster_full")]


@pytest.fixture
def executor(kube_api: ApiClient) -> Executor:
    return Executor(kube_api, EventRecorder(kube_api, instance="test"))


SELECTOR = "app=chat,color=c0c0c0"


async def pod_names(api: ApiClient, namespace: str) -> set[str]:
    pods = await list_items(api, "v1", "pods", namespace, SELECTOR)
    return {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}


def consolidation(obj: dict[str, Any], figures: dict[str, float | None]) -> Any:
    step = pod_step(figures, keep_pods=1)
    assert step is not None
    action = action_for(
        obj,
        ActionKind.CONSOLIDATE,
        Reason.IDLE_PODS,
        annotations={CONSOLIDATED_AT: STAMP, CONSOLIDATED_FROM: str(len(figures))},
        connections=sum(v or 0 for v in figures.values()),
    )
    return action._replace(step=step, message=f"consolidate {action.name}: {step.removed}")


async def test_a_step_removes_exactly_the_idle_pods_through_scale(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=4)
    names = sorted(await pod_names(kube_api, namespace))
    assert len(names) == 4
    # The two idle pods are not the two newest nor the two oldest: only their cost tells them.
    busy, idle = [names[0], names[3]], [names[1], names[2]]
    figures: dict[str, float | None] = {busy[0]: 5.0, busy[1]: None, idle[0]: 0.0, idle[1]: 0.0}
    action = consolidation(obj, figures)
    assert set(action.step.removed) == set(idle)
    metrics = Metrics()

    results = await executor.apply(plan_of(action))
    metrics.record_actions(results)

    assert [r.outcome for r in results] == [ActionOutcome.OK]
    after = await settled_deployment(kube_api, namespace, "chat-c0c0c0")
    assert after["spec"]["replicas"] == 2
    assert after["spec"]["template"] == obj["spec"]["template"]
    annotations = after["metadata"]["annotations"]
    assert annotations[CONSOLIDATED_AT] == STAMP
    assert annotations[CONSOLIDATED_FROM] == "4"

    async def only_busy_left() -> bool:
        return await pod_names(kube_api, namespace) == set(busy)

    await eventually(only_busy_left, what=f"only {busy} to be left")
    for pod in await list_items(kube_api, "v1", "pods", namespace, SELECTOR):
        cost = pod["metadata"]["annotations"][POD_DELETION_COST]
        # Busy pods rank above every removed one; unknown ones at the top.
        expected = "5" if pod["metadata"]["name"] == busy[0] else str(2**31 - 1)
        assert cost == expected
    events = [e for e in await our_events(kube_api, namespace) if e["reason"] == "Consolidated"]
    assert len(events) == 1
    assert all(name in events[0]["note"] for name in idle)
    assert metrics.pods_freed.labels(namespace=namespace, app="chat")._value.get() == 2


async def test_a_step_planned_on_pods_that_changed_is_refused(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=3)
    names = sorted(await pod_names(kube_api, namespace))
    # The plan saw a pod that is gone now (and not one that is there).
    figures: dict[str, float | None] = {names[0]: 3.0, names[1]: 0.0, "chat-c0c0c0-gone": 0.0}
    action = consolidation(obj, figures)

    [result] = await executor.apply(plan_of(action))

    assert result.outcome is ActionOutcome.CONFLICT
    assert result.error is not None and "pods changed" in result.error
    after = await get_deployment(kube_api, namespace, "chat-c0c0c0")
    assert after["spec"]["replicas"] == 3
    assert CONSOLIDATED_AT not in after["metadata"]["annotations"]
    for pod in await list_items(kube_api, "v1", "pods", namespace, SELECTOR):
        assert POD_DELETION_COST not in (pod["metadata"].get("annotations") or {})
    reasons = {e["reason"] for e in await our_events(kube_api, namespace)}
    assert reasons == {"ConsolidateConflict"}


class CrashBeforeScale(Executor):
    """Dies (as a kill -9 would leave it) after writing the step's record, before its /scale."""

    async def _scale(self, action: Action, resource_version: str) -> None:
        raise KubeError("killed before /scale")


async def test_a_step_cut_short_is_taken_again_at_once_and_a_done_one_not_repeated(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=4)
    names = sorted(await pod_names(kube_api, namespace))
    figures: dict[str, float | None] = {names[0]: 2.0, names[1]: 0.0, names[2]: 1.0, names[3]: 0.0}
    knobs = Knobs(consolidate=Consolidate(after=timedelta(0), every=timedelta(hours=1)))
    # The step as the planner decides it from the Deployment as it is now.
    now = datetime.now(UTC).replace(microsecond=0)

    def decide(found: dict[str, Any]) -> Any:
        return decide_consolidation(
            now,
            deployment_from_k8s(found),
            knobs=knobs,
            retired_at=now - timedelta(hours=1),
            connections=Connections(value=2, series=4),
            pods=PodConnections(pods=figures),
            stamp=format_time(now),
        )

    def step_action(found: dict[str, Any], decided: Any) -> Any:
        action = action_for(
            found, ActionKind.CONSOLIDATE, decided.reason, annotations=dict(decided.stamps)
        )
        return action._replace(step=decided.step, message=f"consolidate: {decided.why}")

    first = decide(obj)
    assert first.step is not None and first.step.replicas == 2
    crashed = CrashBeforeScale(kube_api, EventRecorder(kube_api, instance="test"))
    [result] = await crashed.apply(plan_of(step_action(obj, first)))
    assert result.outcome is ActionOutcome.ERROR

    # After the "restart": the record is there, the replicas are not changed: the step is due
    # again at once, not an `every` later.
    cut_short = await settled_deployment(kube_api, namespace, "chat-c0c0c0")
    assert cut_short["spec"]["replicas"] == 4
    assert cut_short["metadata"]["annotations"][CONSOLIDATED_FROM] == "4"
    again = decide(cut_short)
    assert again.step is not None and again.step.removed == first.step.removed
    [result] = await executor.apply(plan_of(step_action(cut_short, again)))
    assert result.outcome is ActionOutcome.OK

    # Done: the next cycle (or the next process) sees a step taken and waits `every`.
    done = await settled_deployment(kube_api, namespace, "chat-c0c0c0")
    assert done["spec"]["replicas"] == 2
    after = decide(done)
    assert after.step is None
    assert after.recheck_at == now + timedelta(hours=1)
