"""The executor against a real control plane: preconditions, /scale, deletes, Events, log lines.

Every test runs with the controllers and kwok (`cluster_full`): the session's control plane is
shared, so once any test has started them they write Deployment status for everyone, and a test
must wait for its Deployments to settle before taking the resourceVersion an action carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    LIVE_AT,
    ORIGINAL_REPLICAS,
    PHASE,
    RETIRED_AT,
    Action,
    ActionKind,
    AppPlan,
    ColorPlan,
    Connections,
    Plan,
    Reason,
    State,
)
from rainbowd.kube.caching import ClusterCache
from rainbowd.kube.clients import NotFound, RateLimiter, request_json, resource_path
from rainbowd.kube.events import REPORTING_CONTROLLER, EventRecorder
from rainbowd.kube.executing import SUMMARY_EVENTS_ABOVE, ActionOutcome, ActionResult, Executor
from rainbowd_sandbox.controlplane import ControlPlane

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
STAMP = "2026-11-21T10:00:00Z"
LOGGER = "rainbowd.kube.executing"

pytestmark = [pytest.mark.cluster_full, pytest.mark.usefixtures("cluster_full")]


# --- helpers -------------------------------------------------------------------------------


def deployment_body(app: str, color: str, *, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": app, "color": color}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{app}-{color}",
            "labels": {"app": app},
            "annotations": {"team": "chat"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/chat:1"}]},
            },
        },
    }


async def post_deployment(
    api: ApiClient, namespace: str, app: str, color: str, *, replicas: int = 1
) -> dict[str, Any]:
    return await request_json(
        api,
        "POST",
        resource_path("apps/v1", "deployments", namespace=namespace),
        body=deployment_body(app, color, replicas=replicas),
    )


async def get_deployment(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return await request_json(
        api, "GET", resource_path("apps/v1", "deployments", namespace=namespace, name=name)
    )


async def touch_deployment(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Change the Deployment behind the planner's back (a user editing a label)."""
    return await request_json(
        api,
        "PATCH",
        resource_path("apps/v1", "deployments", namespace=namespace, name=name),
        body={"metadata": {"labels": {"edited": "by-hand"}}},
        content_type="application/merge-patch+json",
    )


async def list_items(
    api: ApiClient, group_version: str, plural: str, namespace: str, selector: str = ""
) -> list[dict[str, Any]]:
    listing = await request_json(
        api,
        "GET",
        resource_path(group_version, plural, namespace=namespace),
        query={"labelSelector": selector or None},
    )
    items: list[dict[str, Any]] = listing["items"]
    return items


async def our_events(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    events = await list_items(api, "events.k8s.io/v1", "events", namespace)
    return [e for e in events if e.get("reportingController") == REPORTING_CONTROLLER]


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 60.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail with `what` once the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting for {what}")
        await asyncio.sleep(0.2)


async def applied_on_a_fresh_read(
    api: ApiClient,
    executor: Executor,
    namespace: str,
    name: str,
    action_of: Callable[[dict[str, Any]], Action],
    *,
    within: float = 60.0,
) -> ActionResult:
    """The action built on a fresh read of the Deployment and applied, built and applied again
    after a conflict, as the daemon's next cycle would: where a controller (an HPA's, KEDA's)
    still writes to the Deployment, its resourceVersion may be overtaken. Any outcome but OK or
    a conflict fails."""
    results: list[ActionResult] = []

    async def applied() -> bool:
        fresh = await get_deployment(api, namespace, name)
        [result] = await executor.apply(plan_of(action_of(fresh)))
        assert result.outcome in (ActionOutcome.OK, ActionOutcome.CONFLICT), result.error
        results.append(result)
        return result.outcome is ActionOutcome.OK

    await eventually(applied, within=within, what=f"an action on {name} to land")
    return results[-1]


async def settled_deployment(
    api: ApiClient, namespace: str, name: str, *, within: float = 60.0
) -> dict[str, Any]:
    """The Deployment once the controllers have caught up with it: status observed for the
    current generation, every pod ready. Any change to a Deployment's annotations bumps its
    generation and so a status write, which would overtake the resourceVersion an action
    carries if the action were built before it."""

    async def settled() -> bool:
        obj = await get_deployment(api, namespace, name)
        replicas = obj["spec"]["replicas"]
        status = obj.get("status", {})
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        progressing = conditions.get("Progressing", {})
        return bool(
            status.get("observedGeneration") == obj["metadata"]["generation"]
            and status.get("replicas", 0) == replicas
            and status.get("readyReplicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
            and status.get("updatedReplicas", 0) == replicas
            and conditions.get("Available", {}).get("status") == "True"
            and progressing.get("reason") == "NewReplicaSetAvailable"
        )

    try:
        await eventually(settled, within=within, what=f"{name} to settle")
    except pytest.fail.Exception as exc:
        raise AssertionError(f"{exc}; {await why_unsettled(api, namespace, name)}") from None
    return await get_deployment(api, namespace, name)


async def why_unsettled(api: ApiClient, namespace: str, name: str) -> str:
    """What a Deployment that would not settle shows: its status and its pods' phases, and the
    cluster's pod count against the fake Node's capacity."""
    obj = await get_deployment(api, namespace, name)
    status = obj.get("status", {})
    conditions = [
        f"{c['type']}={c['status']} ({c.get('reason')})" for c in status.get("conditions", [])
    ]
    labels = obj["spec"]["selector"]["matchLabels"]
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    pods = await list_items(api, "v1", "pods", namespace, selector=selector)
    phases = [f"{p['metadata']['name']}: {p['status'].get('phase')}" for p in pods]
    everywhere = await request_json(api, "GET", "/api/v1/pods", query={"limit": 1})
    remaining = everywhere["metadata"].get("remainingItemCount", 0)
    return (
        f"status {status.get('readyReplicas')}/{status.get('replicas')} ready, "
        f"generation {obj['metadata'].get('generation')} observed "
        f"{status.get('observedGeneration')}, conditions {conditions}; pods {phases}; "
        f"about {len(everywhere['items']) + remaining} pods in the cluster"
    )


async def create_deployment(
    api: ApiClient, namespace: str, app: str, color: str, *, replicas: int = 1
) -> dict[str, Any]:
    """Create a Deployment and wait until its pods are ready and its status settled."""
    await post_deployment(api, namespace, app, color, replicas=replicas)
    return await settled_deployment(api, namespace, f"{app}-{color}")


async def create_deployments(
    api: ApiClient, namespace: str, colors: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Create one single-replica Deployment per (app, color), all at once, and wait until every
    one has settled. The controllers and kwok roll them out concurrently, so on a busy machine the
    last one settles long after the first: the deadline grows with their number."""
    await asyncio.gather(*(post_deployment(api, namespace, app, c) for app, c in colors))
    within = 60.0 + 10.0 * len(colors)
    return list(
        await asyncio.gather(
            *(settled_deployment(api, namespace, f"{app}-{c}", within=within) for app, c in colors)
        )
    )


def action_for(
    obj: Mapping[str, Any],
    kind: ActionKind,
    reason: Reason,
    *,
    annotations: Mapping[str, str | None] | None = None,
    resource_version: str | None = None,
    uid: str | None = None,
    connections: float | None = 0.0,
) -> Action:
    meta = obj["metadata"]
    labels = obj["spec"]["template"]["metadata"]["labels"]
    return Action(
        kind=kind,
        namespace=meta["namespace"],
        name=meta["name"],
        app=labels["app"],
        color=labels["color"],
        uid=uid if uid is not None else meta["uid"],
        resource_version=(
            resource_version if resource_version is not None else meta["resourceVersion"]
        ),
        reason=reason,
        message=f"{kind.value} {meta['name']} ({reason.value})",
        annotations=dict(annotations or {}),
        connections=connections,
    )


def plan_of(*actions: Action, dry_run: bool = False, paused: bool = False) -> Plan:
    colors = tuple(
        ColorPlan(
            namespace=a.namespace,
            app=a.app,
            color=a.color,
            name=a.name,
            state=State.RETIRED,
            rule="test",
            replicas=1,
            ready_replicas=1,
            connections=Connections(value=a.connections),
            created_at=NOW,
            retired_at=None,
            drained_since=None,
            note="",
            actions=(a,),
        )
        for a in actions
    )
    app = AppPlan(
        namespace=actions[0].namespace if actions else "",
        app=actions[0].app if actions else "",
        rule="test",
        blocked=None,
        message="",
        colors=colors,
    )
    return Plan(now=NOW, apps=(app,), dry_run=dry_run, paused=paused)


def outcomes(results: list[ActionResult]) -> list[ActionOutcome]:
    return [r.outcome for r in results]


def applied_lines(caplog: pytest.LogCaptureFixture, message: str) -> list[dict[str, Any]]:
    return [
        r.rainbowd_fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == LOGGER and r.getMessage() == message
    ]


@pytest.fixture
def executor(kube_api: ApiClient) -> Executor:
    return Executor(kube_api, EventRecorder(kube_api, instance="test"))


# --- annotate ------------------------------------------------------------------------------


async def test_annotate_sets_and_removes_annotations(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa")
    stamp = action_for(
        obj,
        ActionKind.ANNOTATE,
        Reason.OBSERVED_RETIRED,
        annotations={RETIRED_AT: STAMP, LIVE_AT: STAMP},
    )
    assert outcomes(await executor.apply(plan_of(stamp))) == [ActionOutcome.OK]
    after = await settled_deployment(kube_api, namespace, "chat-aaaaaa")
    before = obj["metadata"]["annotations"]
    assert before["team"] == "chat"
    assert after["metadata"]["annotations"] == {**before, RETIRED_AT: STAMP, LIVE_AT: STAMP}

    clear = action_for(
        after, ActionKind.ANNOTATE, Reason.LIVE_AGAIN, annotations={RETIRED_AT: None}
    )
    assert outcomes(await executor.apply(plan_of(clear))) == [ActionOutcome.OK]
    cleared = await get_deployment(kube_api, namespace, "chat-aaaaaa")
    assert cleared["metadata"]["annotations"] == {**before, LIVE_AT: STAMP}
    # Annotations only: the spec, and so the pod template, is untouched (no rollout).
    assert cleared["spec"] == obj["spec"]
    replica_sets = await list_items(kube_api, "apps/v1", "replicasets", namespace, "color=aaaaaa")
    assert len(replica_sets) == 1


async def test_annotate_with_a_stale_resource_version_conflicts_and_changes_nothing(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa")
    edited = await touch_deployment(kube_api, namespace, "chat-aaaaaa")
    stale = action_for(
        obj, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={RETIRED_AT: STAMP}
    )
    [result] = await executor.apply(plan_of(stale))
    assert result.outcome is ActionOutcome.CONFLICT
    assert result.error
    after = await get_deployment(kube_api, namespace, "chat-aaaaaa")
    assert after["metadata"]["resourceVersion"] == edited["metadata"]["resourceVersion"]
    assert after["metadata"]["annotations"] == edited["metadata"]["annotations"]
    assert RETIRED_AT not in after["metadata"]["annotations"]


# --- scale ---------------------------------------------------------------------------------


async def test_scale_down_goes_through_scale_and_keeps_the_template(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa", replicas=2)
    selector = "app=chat,color=aaaaaa"
    assert len(await list_items(kube_api, "v1", "pods", namespace, selector)) == 2
    scale = action_for(obj, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "2"})

    assert outcomes(await executor.apply(plan_of(scale))) == [ActionOutcome.OK]

    after = await get_deployment(kube_api, namespace, "chat-aaaaaa")
    assert after["spec"]["replicas"] == 0
    assert after["metadata"]["annotations"][ORIGINAL_REPLICAS] == "2"
    assert after["spec"]["template"] == obj["spec"]["template"]
    # One ReplicaSet still: a template change would have started a second one (a rollout).
    replica_sets = await list_items(kube_api, "apps/v1", "replicasets", namespace, selector)
    assert len(replica_sets) == 1

    async def no_pods() -> bool:
        return not await list_items(kube_api, "v1", "pods", namespace, selector)

    await eventually(no_pods, what="the color's pods to go away")


class StatusMovesAfterStamp(Executor):
    """Waits, after the original-replicas stamp, for the deployment controller's status write,
    so the resourceVersion the stamp returned is surely stale when /scale is called."""

    async def _annotate(self, action: Action, resource_version: str) -> dict[str, Any]:
        written = await super()._annotate(action, resource_version)
        settled = await settled_deployment(self._api, action.namespace, action.name)
        assert settled["metadata"]["resourceVersion"] != written["metadata"]["resourceVersion"]
        return written


class SpecEditedAfterStamp(Executor):
    """A user edits the spec between the original-replicas stamp and the scale."""

    async def _annotate(self, action: Action, resource_version: str) -> dict[str, Any]:
        written = await super()._annotate(action, resource_version)
        await request_json(
            self._api,
            "PATCH",
            resource_path("apps/v1", "deployments", namespace=action.namespace, name=action.name),
            body={"spec": {"minReadySeconds": 7}},
            content_type="application/merge-patch+json",
        )
        return written


async def test_scale_down_survives_the_status_write_its_own_stamp_causes(
    kube_api: ApiClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    executor = StatusMovesAfterStamp(kube_api, EventRecorder(kube_api, instance="test"))
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa", replicas=2)
    scale = action_for(obj, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "2"})
    assert outcomes(await executor.apply(plan_of(scale))) == [ActionOutcome.OK]
    assert len(applied_lines(caplog, "scale retried")) == 1
    after = await get_deployment(kube_api, namespace, "chat-aaaaaa")
    assert after["spec"]["replicas"] == 0
    assert after["metadata"]["annotations"][ORIGINAL_REPLICAS] == "2"


async def test_scale_down_after_a_spec_edit_between_stamp_and_scale_conflicts(
    kube_api: ApiClient, namespace: str
) -> None:
    executor = SpecEditedAfterStamp(kube_api, EventRecorder(kube_api, instance="test"))
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa", replicas=2)
    scale = action_for(obj, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "2"})
    [result] = await executor.apply(plan_of(scale))
    assert result.outcome is ActionOutcome.CONFLICT
    after = await get_deployment(kube_api, namespace, "chat-aaaaaa")
    assert after["spec"]["replicas"] == 2
    assert after["spec"]["minReadySeconds"] == 7


async def test_scale_down_with_a_stale_resource_version_conflicts(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa", replicas=3)
    edited = await touch_deployment(kube_api, namespace, "chat-aaaaaa")
    scale = action_for(
        obj, ActionKind.SCALE, Reason.MAX_COLORS, annotations={ORIGINAL_REPLICAS: "3"}
    )
    [result] = await executor.apply(plan_of(scale))
    assert result.outcome is ActionOutcome.CONFLICT
    after = await get_deployment(kube_api, namespace, "chat-aaaaaa")
    assert after["spec"]["replicas"] == 3
    assert ORIGINAL_REPLICAS not in after["metadata"]["annotations"]
    assert after["metadata"]["resourceVersion"] == edited["metadata"]["resourceVersion"]


async def test_scale_down_without_annotations_uses_the_planned_resource_version(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa", replicas=2)
    fresh = action_for(obj, ActionKind.SCALE, Reason.MAX_RETIRED_AGE)
    assert outcomes(await executor.apply(plan_of(fresh))) == [ActionOutcome.OK]
    assert (await get_deployment(kube_api, namespace, "chat-aaaaaa"))["spec"]["replicas"] == 0

    obj2 = await create_deployment(kube_api, namespace, "chat", "bbbbbb", replicas=2)
    await touch_deployment(kube_api, namespace, "chat-bbbbbb")
    stale = action_for(obj2, ActionKind.SCALE, Reason.MAX_RETIRED_AGE)
    assert outcomes(await executor.apply(plan_of(stale))) == [ActionOutcome.CONFLICT]
    assert (await get_deployment(kube_api, namespace, "chat-bbbbbb"))["spec"]["replicas"] == 2


# --- delete --------------------------------------------------------------------------------


async def test_delete_with_matching_preconditions_deletes_then_gone(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa")
    delete = action_for(obj, ActionKind.DELETE, Reason.KEEP_SCALED_DOWN)
    assert outcomes(await executor.apply(plan_of(delete))) == [ActionOutcome.OK]
    with pytest.raises(NotFound):
        await get_deployment(kube_api, namespace, "chat-aaaaaa")
    # Applying the same plan again (a restart between delete and its bookkeeping) is success.
    [again] = await executor.apply(plan_of(delete))
    assert again.outcome is ActionOutcome.GONE
    assert again.error is None


async def test_delete_with_a_stale_resource_version_or_wrong_uid_does_not_delete(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa")
    await touch_deployment(kube_api, namespace, "chat-aaaaaa")
    stale = action_for(obj, ActionKind.DELETE, Reason.KEEP_SCALED_DOWN)
    assert outcomes(await executor.apply(plan_of(stale))) == [ActionOutcome.CONFLICT]
    current = await get_deployment(kube_api, namespace, "chat-aaaaaa")

    # The same name recreated is another object: its uid differs from the planned one.
    wrong_uid = action_for(
        current,
        ActionKind.DELETE,
        Reason.KEEP_SCALED_DOWN,
        uid="00000000-0000-0000-0000-000000000000",
    )
    assert outcomes(await executor.apply(plan_of(wrong_uid))) == [ActionOutcome.CONFLICT]
    # No uid at all would make the delete unconditional: refused without calling the API.
    no_uid = action_for(current, ActionKind.DELETE, Reason.KEEP_SCALED_DOWN, uid="")
    [refused] = await executor.apply(plan_of(no_uid))
    assert refused.outcome is ActionOutcome.ERROR
    assert refused.error == "no uid to use as precondition"
    still = await get_deployment(kube_api, namespace, "chat-aaaaaa")
    assert still["metadata"]["uid"] == obj["metadata"]["uid"]
    assert "deletionTimestamp" not in still["metadata"]


async def test_delete_garbage_collects_replica_sets_and_pods(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "aaaaaa", replicas=2)
    selector = "app=chat,color=aaaaaa"
    assert len(await list_items(kube_api, "apps/v1", "replicasets", namespace, selector)) == 1
    delete = action_for(obj, ActionKind.DELETE, Reason.KEEP_SCALED_DOWN)
    assert outcomes(await executor.apply(plan_of(delete))) == [ActionOutcome.OK]

    async def collected() -> bool:
        replica_sets = await list_items(kube_api, "apps/v1", "replicasets", namespace, selector)
        pods = await list_items(kube_api, "v1", "pods", namespace, selector)
        return not replica_sets and not pods

    await eventually(collected, what="the ReplicaSet and pods to be garbage-collected")


async def test_a_failed_action_does_not_stop_the_others(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    a, b = await asyncio.gather(
        create_deployment(kube_api, namespace, "chat", "aaaaaa"),
        create_deployment(kube_api, namespace, "chat", "bbbbbb"),
    )
    # The apiserver rejects an annotation key with a space in it (422 Invalid).
    invalid = action_for(
        a, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={"rainbowd.io/bad key": "x"}
    )
    fine = action_for(
        b, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={RETIRED_AT: STAMP}
    )
    results = await executor.apply(plan_of(invalid, fine))
    assert outcomes(results) == [ActionOutcome.ERROR, ActionOutcome.OK]
    assert results[0].error is not None and "422" in results[0].error
    events = {e["regarding"]["name"]: e for e in await our_events(kube_api, namespace)}
    assert (events["chat-aaaaaa"]["type"], events["chat-aaaaaa"]["reason"]) == (
        "Warning",
        "MarkRetiredFailed",
    )
    assert events["chat-bbbbbb"]["reason"] == "MarkedRetired"
    annotated = await get_deployment(kube_api, namespace, "chat-bbbbbb")
    assert annotated["metadata"]["annotations"][RETIRED_AT] == STAMP


# --- dry run and stop ----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["plan", "executor"])
async def test_dry_run_applies_nothing_but_logs_every_action(
    kube_api: ApiClient, namespace: str, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    executor = Executor(
        kube_api, EventRecorder(kube_api, instance="test"), dry_run=where == "executor"
    )
    a, b, c = await asyncio.gather(
        create_deployment(kube_api, namespace, "chat", "aaaaaa"),
        create_deployment(kube_api, namespace, "chat", "bbbbbb", replicas=2),
        create_deployment(kube_api, namespace, "chat", "cccccc"),
    )
    plan = plan_of(
        action_for(
            a, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={RETIRED_AT: STAMP}
        ),
        action_for(b, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "2"}),
        action_for(c, ActionKind.DELETE, Reason.KEEP_SCALED_DOWN),
        dry_run=where == "plan",
    )

    results = await executor.apply(plan)

    assert outcomes(results) == [ActionOutcome.SKIPPED] * 3
    for before in (a, b, c):
        now = await get_deployment(kube_api, namespace, before["metadata"]["name"])
        assert now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert await our_events(kube_api, namespace) == []
    lines = applied_lines(caplog, "action skipped")
    assert [(f["deployment"], f["action"], f["dry_run"]) for f in lines] == [
        ("chat-aaaaaa", "annotate", True),
        ("chat-bbbbbb", "scale", True),
        ("chat-cccccc", "delete", True),
    ]
    assert applied_lines(caplog, "action applied") == []


async def test_paused_plan_holds_scale_and_delete_but_keeps_stamping(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    a, b = await asyncio.gather(
        create_deployment(kube_api, namespace, "chat", "aaaaaa"),
        create_deployment(kube_api, namespace, "chat", "bbbbbb", replicas=2),
    )
    plan = plan_of(
        action_for(
            a, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={RETIRED_AT: STAMP}
        ),
        action_for(b, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "2"}),
        paused=True,
    )
    assert outcomes(await executor.apply(plan)) == [ActionOutcome.OK, ActionOutcome.SKIPPED]
    assert (await get_deployment(kube_api, namespace, "chat-bbbbbb"))["spec"]["replicas"] == 2
    annotated = await get_deployment(kube_api, namespace, "chat-aaaaaa")
    assert annotated["metadata"]["annotations"][RETIRED_AT] == STAMP


class StopAfterFirstEvent(EventRecorder):
    """Sets the stop flag while the first action is being applied, as SIGTERM would."""

    def __init__(self, api: ApiClient, stop: asyncio.Event) -> None:
        super().__init__(api, instance="test")
        self.stop = stop

    async def emit(self, **kwargs: Any) -> None:
        await super().emit(**kwargs)
        self.stop.set()


async def test_stop_during_apply_finishes_the_current_action_and_skips_the_rest(
    kube_api: ApiClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    stop = asyncio.Event()
    executor = Executor(kube_api, StopAfterFirstEvent(kube_api, stop))
    a, b, c = await asyncio.gather(
        create_deployment(kube_api, namespace, "chat", "aaaaaa", replicas=2),
        create_deployment(kube_api, namespace, "chat", "bbbbbb", replicas=2),
        create_deployment(kube_api, namespace, "chat", "cccccc"),
    )
    plan = plan_of(
        action_for(a, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "2"}),
        action_for(b, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "2"}),
        action_for(c, ActionKind.DELETE, Reason.KEEP_SCALED_DOWN),
    )

    results = await executor.apply(plan, stop=stop)

    assert outcomes(results) == [ActionOutcome.OK, ActionOutcome.SKIPPED, ActionOutcome.SKIPPED]
    assert (await get_deployment(kube_api, namespace, "chat-aaaaaa"))["spec"]["replicas"] == 0
    untouched = await get_deployment(kube_api, namespace, "chat-bbbbbb")
    assert untouched["metadata"]["resourceVersion"] == b["metadata"]["resourceVersion"]
    await get_deployment(kube_api, namespace, "chat-cccccc")  # still there
    skipped = applied_lines(caplog, "action skipped")
    assert [(f["deployment"], f["why"]) for f in skipped] == [
        ("chat-bbbbbb", "stopping"),
        ("chat-cccccc", "stopping"),
    ]


# --- events and log lines ------------------------------------------------------------------


async def test_each_applied_action_has_one_event_and_one_log_line(
    kube_api: ApiClient, namespace: str, executor: Executor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    live, retired, drained, old, raced, malformed = await asyncio.gather(
        create_deployment(kube_api, namespace, "chat", "aaaaaa"),
        create_deployment(kube_api, namespace, "chat", "bbbbbb"),
        create_deployment(kube_api, namespace, "chat", "cccccc", replicas=2),
        create_deployment(kube_api, namespace, "chat", "dddddd"),
        create_deployment(kube_api, namespace, "chat", "eeeeee"),
        create_deployment(kube_api, namespace, "chat", "ffffff"),
    )
    await touch_deployment(kube_api, namespace, "chat-eeeeee")
    plan = plan_of(
        action_for(live, ActionKind.ANNOTATE, Reason.OBSERVED_LIVE, annotations={LIVE_AT: STAMP}),
        action_for(
            retired, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={RETIRED_AT: STAMP}
        ),
        action_for(
            drained,
            ActionKind.SCALE,
            Reason.DRAINED,
            annotations={ORIGINAL_REPLICAS: "2"},
            connections=3.0,
        ),
        action_for(old, ActionKind.DELETE, Reason.KEEP_SCALED_DOWN),
        action_for(
            raced, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={RETIRED_AT: STAMP}
        ),
        action_for(
            malformed,
            ActionKind.ANNOTATE,
            Reason.MALFORMED_ANNOTATION,
            annotations={RETIRED_AT: STAMP},
            connections=None,
        ),
    )

    results = await executor.apply(plan)

    assert outcomes(results) == [
        ActionOutcome.OK,
        ActionOutcome.OK,
        ActionOutcome.OK,
        ActionOutcome.OK,
        ActionOutcome.CONFLICT,
        ActionOutcome.OK,
    ]
    events = await our_events(kube_api, namespace)
    by_name = {e["regarding"]["name"]: e for e in events}
    assert len(events) == len(by_name) == 6
    expected = {
        "chat-aaaaaa": ("Normal", "MarkedLive", "Annotate", live),
        "chat-bbbbbb": ("Normal", "MarkedRetired", "Annotate", retired),
        "chat-cccccc": ("Normal", "ScaledDown", "Scale", drained),
        "chat-dddddd": ("Normal", "Deleted", "Delete", old),
        "chat-eeeeee": ("Warning", "MarkRetiredConflict", "Annotate", raced),
        "chat-ffffff": ("Warning", "MalformedAnnotation", "Annotate", malformed),
    }
    for name, (type_, reason, verb, obj) in expected.items():
        event = by_name[name]
        assert (event["type"], event["reason"], event["action"]) == (type_, reason, verb), name
        assert event["regarding"]["kind"] == "Deployment"
        assert event["regarding"]["apiVersion"] == "apps/v1"
        assert event["regarding"]["uid"] == obj["metadata"]["uid"]
        assert event["note"].startswith(plan.actions[list(expected).index(name)].message)

    # Urgent actions (the scale-down, the delete) go first, the stamps after: the log lines
    # follow that order, the results the plan's.
    lines = applied_lines(caplog, "action applied")
    assert [line["deployment"] for line in lines[:2]] == ["chat-cccccc", "chat-dddddd"]
    by_deployment = {line["deployment"]: line for line in lines}
    assert len(lines) == len(by_deployment) == 6
    for action, result in zip(plan.actions, results, strict=True):
        assert result.action == action
        assert by_deployment[action.name] == {
            "namespace": namespace,
            "app": "chat",
            "color": action.color,
            "deployment": action.name,
            "action": action.kind.value,
            "reason": action.reason.value,
            "connections": action.connections,
            "outcome": result.outcome.value,
            "message": action.message,
            "dry_run": False,
            **({"error": result.error} if result.outcome is ActionOutcome.CONFLICT else {}),
        }


# --- pods of retired colors ----------------------------------------------------------------


async def phases(api: ApiClient, namespace: str, selector: str) -> list[str | None]:
    pods = await list_items(api, "v1", "pods", namespace, selector)
    return [(p["metadata"].get("annotations") or {}).get(PHASE) for p in pods]


@contextlib.asynccontextmanager
async def two_colors_watched(
    api: ApiClient, namespace: str
) -> AsyncIterator[tuple[tuple[dict[str, Any], dict[str, Any]], ClusterCache]]:
    """chat-aaaaaa (2 pods) and chat-bbbbbb (1 pod), and a cache that has listed their pods."""
    aaa, bbb = await asyncio.gather(
        create_deployment(api, namespace, "chat", "aaaaaa", replicas=2),
        create_deployment(api, namespace, "chat", "bbbbbb", replicas=1),
    )
    cache = ClusterCache(api, namespaces=[namespace])
    cache.watch_pods("app", "color")
    try:

        async def pods_known() -> bool:
            pods = cache.pods()
            return pods is not None and len(pods) == 3

        await eventually(pods_known, what="the pod watch to list the three pods")
        yield (aaa, bbb), cache
    finally:
        await cache.stop()


async def test_pods_of_a_retired_color_are_marked_and_unmarked_when_live_again(
    kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    async with two_colors_watched(kube_api, namespace) as ((aaa, bbb), cache):
        retired_plan = colors_plan(aaa=State.DRAINING, bbb=State.LIVE, objs=(aaa, bbb))
        assert await executor.mark_pods(retired_plan, cache.pods()) == 2
        assert await phases(kube_api, namespace, "app=chat,color=aaaaaa") == ["retired", "retired"]
        assert await phases(kube_api, namespace, "app=chat,color=bbbbbb") == [None]

        async def watch_caught_up() -> bool:
            return sorted(p.phase or "" for p in cache.pods() or []) == ["", "retired", "retired"]

        await eventually(watch_caught_up, what="the watch to see the marks")
        # In line: no request at all.
        assert await executor.mark_pods(retired_plan, cache.pods()) == 0

        live_again = colors_plan(aaa=State.LIVE, bbb=State.LIVE, objs=(aaa, bbb))
        assert await executor.mark_pods(live_again, cache.pods()) == 2
        assert await phases(kube_api, namespace, "app=chat,color=aaaaaa") == [None, None]
        # Dry run marks nothing; unknown pods (no watch yet) mark nothing.
        assert (
            await executor.mark_pods(
                colors_plan(aaa=State.DRAINING, bbb=State.LIVE, objs=(aaa, bbb), dry_run=True),
                cache.pods(),
            )
            == 0
        )
        assert await executor.mark_pods(retired_plan, None) == 0


async def test_a_pod_mark_that_fails_is_logged_as_failed_not_as_done(
    kube_api: ApiClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with two_colors_watched(kube_api, namespace) as (objs, cache):
        caplog.set_level(logging.INFO, logger=LOGGER)
        # No answer can come within the timeout: each patch fails.
        hurried = Executor(kube_api, EventRecorder(kube_api, instance="test"), timeout=1e-9)
        plan = colors_plan(aaa=State.DRAINING, bbb=State.LIVE, objs=objs)
        assert await hurried.mark_pods(plan, cache.pods()) == 0
        assert len(applied_lines(caplog, "pod not annotated")) == 2
        assert applied_lines(caplog, "pod annotated") == []


def colors_plan(
    *, aaa: State, bbb: State, objs: tuple[dict[str, Any], ...], dry_run: bool = False
) -> Plan:
    colors = tuple(
        ColorPlan(
            namespace=obj["metadata"]["namespace"],
            app="chat",
            color=color,
            name=obj["metadata"]["name"],
            state=state,
            rule="test",
            replicas=1,
            ready_replicas=1,
            connections=Connections(value=0.0),
            created_at=NOW,
            retired_at=None if state is State.LIVE else NOW,
            drained_since=None,
            note="",
        )
        for color, state, obj in (("aaaaaa", aaa, objs[0]), ("bbbbbb", bbb, objs[1]))
    )
    app = AppPlan(
        namespace=colors[0].namespace,
        app="chat",
        rule="test",
        blocked=None,
        message="",
        colors=colors,
    )
    return Plan(now=NOW, apps=(app,), dry_run=dry_run)


# --- a crash cannot leave an action unrecorded --------------------------------------------


async def test_a_scale_down_or_delete_is_announced_before_it_is_made(
    cluster_full: ControlPlane, kube_api: ApiClient, namespace: str, executor: Executor
) -> None:
    scaled, deleted = await asyncio.gather(
        create_deployment(kube_api, namespace, "chat", "aaaaaa"),
        create_deployment(kube_api, namespace, "chat", "bbbbbb"),
    )
    plan = plan_of(
        action_for(scaled, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "1"}),
        action_for(deleted, ActionKind.DELETE, Reason.KEEP_SCALED_DOWN),
    )
    assert outcomes(await executor.apply(plan)) == [ActionOutcome.OK, ActionOutcome.OK]
    ours = [
        e
        for e in cluster_full.audit_events()
        if (e.get("objectRef") or {}).get("namespace") == namespace
        and (e.get("objectRef") or {}).get("resource") in ("events", "deployments")
        and e.get("verb") in ("create", "patch", "delete")
    ]
    # The first /scale call: one conflicting with the controller's status write is retried.
    scale = min(
        (e for e in ours if e["objectRef"].get("subresource") == "scale"),
        key=lambda e: str(e["requestReceivedTimestamp"]),
    )
    (delete,) = [e for e in ours if e["verb"] == "delete"]
    # The executor's Events: those its client (the same user agent) wrote, in order.
    events = sorted(
        (e["requestReceivedTimestamp"], e["stageTimestamp"])
        for e in ours
        if e["objectRef"]["resource"] == "events" and e.get("userAgent") == scale.get("userAgent")
    )
    assert len(events) == 2, events  # one Event each: the announcement, nothing after a success
    # Each Event is written (completed) before its action is even received.
    assert events[0][1] <= scale["requestReceivedTimestamp"]
    assert events[1][1] <= delete["requestReceivedTimestamp"]
    reasons = {e["regarding"]["name"]: e["reason"] for e in await our_events(kube_api, namespace)}
    assert reasons == {"chat-aaaaaa": "ScaledDown", "chat-bbbbbb": "Deleted"}


# --- many stamps at once ---------------------------------------------------------------------


async def test_many_first_sight_stamps_get_one_summary_event_per_app(
    kube_api: ApiClient, namespace: str
) -> None:
    limiter = RateLimiter(qps=1000, burst=50)
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"), limiter=limiter)
    apps = [f"app{i:02d}" for i in range(SUMMARY_EVENTS_ABOVE // 2 + 1)]
    made = await create_deployments(
        kube_api, namespace, [(app, c) for app in apps for c in ("aa", "bb")]
    )
    actions = []
    for obj in made:
        live = obj["metadata"]["name"].endswith("-bb")
        actions.append(
            action_for(
                obj,
                ActionKind.ANNOTATE,
                Reason.OBSERVED_LIVE if live else Reason.OBSERVED_RETIRED,
                annotations={LIVE_AT if live else RETIRED_AT: STAMP},
            )
        )
    results = await executor.apply(plan_of(*actions))
    assert outcomes(results) == [ActionOutcome.OK] * len(actions)
    for obj in made:
        got = await get_deployment(kube_api, namespace, obj["metadata"]["name"])
        assert {LIVE_AT, RETIRED_AT} & set(got["metadata"].get("annotations") or {})
    events = await our_events(kube_api, namespace)
    assert sorted(e["regarding"]["name"].split("-")[0] for e in events) == apps
    assert {e["reason"] for e in events} == {"ColorsMarked"}
    (one,) = [e for e in events if e["regarding"]["name"].startswith("app00-")]
    assert one["note"] == (
        "stamped 2 color(s) of app00 at first sight: live-at on app00-bb; retired-at on app00-aa"
    )


async def test_an_app_whose_stamps_straddle_the_budget_still_gets_one_summary_event(
    kube_api: ApiClient, namespace: str
) -> None:
    # 4 writes a second and a budget of 2 s: the first cycle stamps part of the apps' colors, the
    # next cycle the rest; each app's one Event lists all its colors.
    executor = Executor(
        kube_api,
        EventRecorder(kube_api, instance="test"),
        limiter=RateLimiter(qps=4, burst=1),
        stamp_budget=2.0,
    )
    apps = [f"app{i:02d}" for i in range(SUMMARY_EVENTS_ABOVE // 2 + 1)]
    # Every app's first color, then every app's second: the budget ends between an app's two.
    made = await create_deployments(
        kube_api, namespace, [(app, c) for c in ("aa", "bb") for app in apps]
    )
    actions = [
        action_for(o, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={RETIRED_AT: STAMP})
        for o in made
    ]
    first = await executor.apply(plan_of(*actions))
    deferred = [r.action for r in first if r.outcome is ActionOutcome.SKIPPED]
    assert deferred and len(deferred) < len(actions), outcomes(first)
    straddling = {a.app for a in deferred} & {
        r.action.app for r in first if r.outcome is ActionOutcome.OK
    }
    assert straddling, outcomes(first)
    # What the next cycle's plan asks: the stamps that did not land.
    executor.stamp_budget = 60.0
    second = await executor.apply(plan_of(*deferred))
    assert outcomes(second) == [ActionOutcome.OK] * len(deferred)

    events = await our_events(kube_api, namespace)
    assert sorted(e["note"].split(" of ")[1].split(" ")[0] for e in events) == apps
    for event in events:
        app = event["note"].split(" of ")[1].split(" ")[0]
        assert event["note"].startswith(f"stamped 2 color(s) of {app} at first sight"), event


async def test_stamps_past_the_budget_are_deferred_and_urgent_actions_go_first(
    kube_api: ApiClient, namespace: str
) -> None:
    # 2 writes a second and a budget of half a second: the scale-down takes the first token,
    # a few stamps go out, the rest wait for the next cycle.
    executor = Executor(
        kube_api,
        EventRecorder(kube_api, instance="test"),
        limiter=RateLimiter(qps=2, burst=1),
        stamp_budget=0.5,
    )
    stamped = await create_deployments(
        kube_api, namespace, [("chat", f"a{i:05d}") for i in range(10)]
    )
    drained = await create_deployment(kube_api, namespace, "chat", "dddddd", replicas=2)
    plan = plan_of(
        *(
            action_for(
                o, ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED, annotations={RETIRED_AT: STAMP}
            )
            for o in stamped
        ),
        action_for(drained, ActionKind.SCALE, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "2"}),
    )
    results = await executor.apply(plan)
    assert results[-1].outcome is ActionOutcome.OK
    assert (await get_deployment(kube_api, namespace, "chat-dddddd"))["spec"]["replicas"] == 0
    stamps = outcomes(results[:-1])
    assert ActionOutcome.SKIPPED in stamps, stamps
    assert set(stamps) <= {ActionOutcome.OK, ActionOutcome.SKIPPED}


# --- the live check ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ActionKind.SCALE, ActionKind.DELETE])
async def test_a_color_a_service_selects_now_is_never_touched_whatever_the_plan_says(
    kube_api: ApiClient, namespace: str, executor: Executor, kind: ActionKind
) -> None:
    """A plan made from a lagging Service cache (a rollback to this color not seen yet) asks
    to scale down or delete a color that is live: the executor reads the Services itself,
    refuses, and says why; the Deployment keeps its replicas and annotations."""
    await create_deployment(kube_api, namespace, "chat", "aaaaaa")
    obj = await create_deployment(kube_api, namespace, "chat", "bbbbbb")
    await request_json(
        kube_api,
        "POST",
        resource_path("v1", "services", namespace=namespace),
        body={
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "chat"},
            "spec": {
                "selector": {"app": "chat", "color": "bbbbbb"},
                "ports": [{"port": 80}],
            },
        },
    )
    action = action_for(obj, kind, Reason.DRAINED, annotations={ORIGINAL_REPLICAS: "1"})

    [result] = await executor.apply(plan_of(action))

    assert result.outcome is ActionOutcome.CONFLICT
    assert result.error is not None and "Service chat selects this color" in result.error
    after = await get_deployment(kube_api, namespace, "chat-bbbbbb")
    assert after["spec"]["replicas"] == 1
    assert ORIGINAL_REPLICAS not in after["metadata"].get("annotations", {})
    notes = [e.get("note", "") for e in await our_events(kube_api, namespace)]
    assert any("Service chat selects this color" in n for n in notes), notes
    # The color the Service does not select is still acted on.
    other = action_for(
        await settled_deployment(kube_api, namespace, "chat-aaaaaa"), kind, Reason.DRAINED
    )
    assert outcomes(await executor.apply(plan_of(other))) == [ActionOutcome.OK]
