"""Argo Rollouts' own controller (tests/rollouts.py) against the test control plane: what it
does with a blueGreen Rollout's old ReplicaSets and their `scale-down-deadline`, the facts
rainbowd acts on for Rollout colors, each stated as an assertion.

- A new revision, promoted, stamps the old ReplicaSet `scale-down-deadline: <RFC 3339 UTC, whole
  seconds>` about now + `scaleDownDelaySeconds`.
- A deadline moved into the past scales that ReplicaSet to 0 on the edit itself (the edit is a
  ReplicaSet update, which queues its Rollout), not at the next resync.
- A deadline pushed into the future keeps it up through later reconciles.
- The controller puts a hand-lowered `spec.replicas` of a delayed old ReplicaSet back to the
  Rollout's replicas, and leaves `controller.kubernetes.io/pod-deletion-cost` on its pods alone.
- With `scaleDownDelayRevisionLimit: 1`, a third revision scales the oldest delayed ReplicaSet
  down at once, while its own deadline is still ahead.
- A deadline a few seconds ahead is kept with no edit (the controller queues the Rollout again
  for the time left, when that is shorter than its resync period), and not before it.
- A removed deadline is stamped again from now; one that does not parse scales the ReplicaSet
  down at once.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.kube.clients import MERGE_PATCH, request_json, resource_path
from tests.e2e.harness import eventually
from tests.rollouts import (
    HASH_LABEL,
    RESYNC_SECONDS,
    SCALE_DOWN_DEADLINE,
    WITHIN,
    RolloutsController,
    create_rollout,
    healthy,
    paused,
    promote,
    reconciled,
    replica_sets,
    roll,
    rollouts_controller,  # noqa: F401 (a fixture)
    selected,
)

pytestmark = [
    pytest.mark.cluster_full,
    pytest.mark.usefixtures("cluster_full", "rollouts_controller"),
]

APP = "chat"
DELAY = 600
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deadline_of(rs: dict[str, Any]) -> datetime | None:
    text = (rs["metadata"].get("annotations") or {}).get(SCALE_DOWN_DEADLINE)
    if text is None:
        return None
    assert STAMP.fullmatch(text), f"{SCALE_DOWN_DEADLINE}: {text!r}"
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def now() -> datetime:
    return datetime.now(UTC)


async def replica_set(api: ApiClient, namespace: str, hash_: str) -> dict[str, Any]:
    found = await replica_sets(api, namespace, APP)
    return found[hash_]


async def replicas(api: ApiClient, namespace: str, hash_: str) -> int:
    count: int = (await replica_set(api, namespace, hash_))["spec"]["replicas"]
    return count


async def patch_replica_set(
    api: ApiClient, namespace: str, hash_: str, body: dict[str, Any]
) -> None:
    name = (await replica_set(api, namespace, hash_))["metadata"]["name"]
    path = resource_path("apps/v1", "replicasets", namespace=namespace, name=name)
    await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)


async def set_deadline(api: ApiClient, namespace: str, hash_: str, when: datetime) -> None:
    body = {"metadata": {"annotations": {SCALE_DOWN_DEADLINE: stamp(when)}}}
    await patch_replica_set(api, namespace, hash_, body)


async def promoted_once(
    api: ApiClient, namespace: str, *, replicas: int = 1, revision_limit: int | None = None
) -> tuple[str, str]:
    """A Rollout auto-promoted from revision 1 to 2, the old ReplicaSet stamped: (old, new)."""
    first = await create_rollout(
        api,
        namespace,
        APP,
        replicas=replicas,
        scale_down_delay=DELAY,
        revision_limit=revision_limit,
    )
    second = await roll(api, namespace, APP, 2)
    assert await healthy(api, namespace, APP) == second

    async def stamped() -> bool:
        return deadline_of(await replica_set(api, namespace, first)) is not None

    await eventually(stamped, within=WITHIN, what="the old ReplicaSet's scale-down-deadline")
    return first, second


async def test_a_new_revision_stamps_the_old_replica_set_with_now_plus_the_delay(
    kube_api: ApiClient, namespace: str
) -> None:
    first = await create_rollout(kube_api, namespace, APP, scale_down_delay=DELAY)
    assert await selected(kube_api, namespace, f"{APP}-active") == first
    # The stamp has whole seconds: the earliest it can read is this second + the delay.
    before = now().replace(microsecond=0)
    second = await roll(kube_api, namespace, APP, 2)
    assert await healthy(kube_api, namespace, APP) == second

    async def stamped() -> datetime | None:
        return deadline_of(await replica_set(kube_api, namespace, first))

    deadline = await eventually(stamped, within=WITHIN, what="the old ReplicaSet's deadline")
    after = now()
    assert before + timedelta(seconds=DELAY) <= deadline <= after + timedelta(seconds=DELAY)
    sets = await replica_sets(kube_api, namespace, APP)
    assert sets[first]["spec"]["replicas"] == 1  # held up until the deadline
    assert deadline_of(sets[second]) is None  # the active one carries none
    assert sets[second]["metadata"]["labels"][HASH_LABEL] == second
    assert await selected(kube_api, namespace, f"{APP}-active") == second


async def test_a_deadline_moved_into_the_past_scales_the_old_replica_set_down_on_the_edit(
    kube_api: ApiClient,
    namespace: str,
    rollouts_controller: RolloutsController,  # noqa: F811 (the fixture imported above)
) -> None:
    first, second = await promoted_once(kube_api, namespace)
    edited = time.monotonic()
    await set_deadline(kube_api, namespace, first, now() - timedelta(minutes=1))

    async def down() -> bool:
        return await replicas(kube_api, namespace, first) == 0

    await eventually(down, within=WITHIN, what="the controller to scale the old ReplicaSet to 0")
    seen = time.monotonic()
    print(f"old ReplicaSet scaled to 0 {seen - edited:.1f}s after its deadline was moved back")
    # No resync can have come yet: the edit itself (a ReplicaSet update, which queues the
    # Rollout that owns it) made the reconcile that scaled it down.
    assert seen - rollouts_controller.started < RESYNC_SECONDS
    assert await replicas(kube_api, namespace, second) == 1
    assert await selected(kube_api, namespace, f"{APP}-active") == second


async def test_a_deadline_pushed_into_the_future_keeps_the_old_replica_set_up(
    kube_api: ApiClient, namespace: str
) -> None:
    first, _ = await promoted_once(kube_api, namespace)
    later = now() + timedelta(hours=1)
    await set_deadline(kube_api, namespace, first, later)
    for _ in range(2):
        await reconciled(kube_api, namespace, APP)
        rs = await replica_set(kube_api, namespace, first)
        assert rs["spec"]["replicas"] == 1
        assert deadline_of(rs) == later.replace(microsecond=0)  # left as set


async def test_the_controller_restores_a_hand_lowered_old_replica_set_and_leaves_pod_costs(
    kube_api: ApiClient, namespace: str
) -> None:
    first, _ = await promoted_once(kube_api, namespace, replicas=2)
    pods_path = resource_path("v1", "pods", namespace=namespace)

    async def old_pods() -> list[dict[str, Any]]:
        query = {"labelSelector": f"{HASH_LABEL}={first}"}
        items: list[dict[str, Any]] = (await request_json(kube_api, "GET", pods_path, query=query))[
            "items"
        ]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    pods = await old_pods()
    assert len(pods) == 2
    costs = {p["metadata"]["name"]: str(cost) for p, cost in zip(pods, (-5, 7), strict=True)}
    for name, cost in costs.items():
        body = {"metadata": {"annotations": {DELETION_COST: cost}}}
        await request_json(
            kube_api, "PATCH", f"{pods_path}/{name}", body=body, content_type=MERGE_PATCH
        )
    await reconciled(kube_api, namespace, APP)
    assert {
        p["metadata"]["name"]: p["metadata"]["annotations"].get(DELETION_COST)
        for p in await old_pods()
    } == costs

    # Lowered by hand below the Rollout's replicas while its deadline is ahead: put back.
    await patch_replica_set(kube_api, namespace, first, {"spec": {"replicas": 1}})

    async def restored() -> bool:
        return await replicas(kube_api, namespace, first) == 2

    await eventually(restored, within=WITHIN, what="the controller to restore the replicas")
    await reconciled(kube_api, namespace, APP)
    assert await replicas(kube_api, namespace, first) == 2
    # The pod the ReplicaSet controller kept (the costlier one) still carries its cost.
    kept = [p for p in await old_pods() if p["metadata"]["name"] in costs]
    assert kept
    for pod in kept:
        assert pod["metadata"]["annotations"].get(DELETION_COST) == costs[pod["metadata"]["name"]]


async def test_the_revision_limit_scales_the_oldest_delayed_replica_set_down_at_once(
    kube_api: ApiClient, namespace: str
) -> None:
    first, second = await promoted_once(kube_api, namespace, revision_limit=1)
    first_deadline = deadline_of(await replica_set(kube_api, namespace, first))
    assert first_deadline is not None
    third = await roll(kube_api, namespace, APP, 3)
    assert await healthy(kube_api, namespace, APP) == third

    async def down() -> bool:
        return await replicas(kube_api, namespace, first) == 0

    await eventually(down, within=WITHIN, what="the revision limit to scale revision 1 down")
    assert now() < first_deadline  # scaled down while its own deadline was still ahead
    rs = await replica_set(kube_api, namespace, second)
    assert rs["spec"]["replicas"] == 1
    assert deadline_of(rs) is not None


async def test_a_deadline_a_few_seconds_ahead_is_kept_by_the_controller_on_its_own(
    kube_api: ApiClient, namespace: str
) -> None:
    """Within the resync period the controller queues the Rollout again for the remaining time:
    the old ReplicaSet goes down once its deadline passes, with no edit, and not before."""
    first, second = await promoted_once(kube_api, namespace)
    deadline = now().replace(microsecond=0) + timedelta(seconds=5)
    await set_deadline(kube_api, namespace, first, deadline)

    async def down() -> bool:
        count = await replicas(kube_api, namespace, first)
        # A reading that came back before the deadline must show it up (pytest.fail: the
        # poll takes an AssertionError for "not yet").
        if count != 1 and now() < deadline:
            pytest.fail(f"scaled to {count} before its deadline {stamp(deadline)}")
        return count == 0

    await eventually(down, within=WITHIN, what="the controller to keep the deadline")
    assert await replicas(kube_api, namespace, second) == 1


async def test_a_removed_deadline_is_stamped_again_from_now(
    kube_api: ApiClient, namespace: str
) -> None:
    first, _ = await promoted_once(kube_api, namespace)
    before = now().replace(microsecond=0)
    body: dict[str, Any] = {"metadata": {"annotations": {SCALE_DOWN_DEADLINE: None}}}
    await patch_replica_set(kube_api, namespace, first, body)

    async def stamped() -> datetime | None:
        return deadline_of(await replica_set(kube_api, namespace, first))

    deadline = await eventually(stamped, within=WITHIN, what="a new deadline")
    assert before + timedelta(seconds=DELAY) <= deadline <= now() + timedelta(seconds=DELAY)
    assert await replicas(kube_api, namespace, first) == 1


async def test_a_deadline_that_does_not_parse_scales_the_old_replica_set_down_at_once(
    kube_api: ApiClient, namespace: str
) -> None:
    """The controller logs a warning and treats it as no deadline left: a writer of the
    annotation must never leave it malformed."""
    first, second = await promoted_once(kube_api, namespace)
    body = {"metadata": {"annotations": {SCALE_DOWN_DEADLINE: "tomorrow"}}}
    await patch_replica_set(kube_api, namespace, first, body)

    async def down() -> bool:
        return await replicas(kube_api, namespace, first) == 0

    await eventually(down, within=WITHIN, what="the controller to scale the old ReplicaSet to 0")
    assert await replicas(kube_api, namespace, second) == 1


async def test_a_revision_without_auto_promotion_waits_in_preview_until_promoted(
    kube_api: ApiClient, namespace: str
) -> None:
    first = await create_rollout(
        kube_api, namespace, APP, auto_promotion=False, scale_down_delay=DELAY
    )
    second = await roll(kube_api, namespace, APP, 2)
    assert await paused(kube_api, namespace, APP) == second
    assert await selected(kube_api, namespace, f"{APP}-active") == first
    assert deadline_of(await replica_set(kube_api, namespace, first)) is None
    await promote(kube_api, namespace, APP)
    assert await healthy(kube_api, namespace, APP) == second

    async def stamped() -> bool:
        return deadline_of(await replica_set(kube_api, namespace, first)) is not None

    await eventually(stamped, within=WITHIN, what="the old ReplicaSet's deadline")
