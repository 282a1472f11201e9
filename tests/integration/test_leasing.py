"""Leader election against a real kube-apiserver: one leader, hand-over on release, take-over
after expiry, and a leader that gives up when it cannot renew."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.kube.clients import make_api_client, request_json, resource_path
from rainbowd.kube.leasing import LeaderElector
from rainbowd_sandbox.controlplane import ControlPlane

pytestmark = [pytest.mark.cluster]

LEASE = "rainbowd-leader"
WAIT = 30.0


@pytest.fixture
async def api(cluster: ControlPlane) -> AsyncIterator[ApiClient]:
    client = await make_api_client(kubeconfig=str(cluster.kubeconfig))
    yield client
    await client.close()


async def read_lease(api: ApiClient, namespace: str) -> dict[str, Any]:
    path = resource_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=LEASE)
    return await request_json(api, "GET", path)


async def first_leader(*electors: LeaderElector) -> LeaderElector:
    waits = {asyncio.create_task(e.leading.wait()): e for e in electors}
    done, pending = await asyncio.wait(waits, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    assert done, "nobody became leader"
    return waits[next(iter(done))]


async def finish(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def renewals(api: ApiClient, namespace: str, count: int) -> None:
    """Waits until the Lease's renewTime has changed `count` times."""
    seen = {(await read_lease(api, namespace))["spec"]["renewTime"]}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while len(seen) <= count:
        assert loop.time() < deadline, "the lease is not being renewed"
        await asyncio.sleep(0.05)
        seen.add((await read_lease(api, namespace))["spec"]["renewTime"])


async def test_one_leads_and_release_hands_over_before_expiry(
    api: ApiClient, namespace: str
) -> None:
    a = LeaderElector(api, namespace, LEASE, "replica-a", retry_period=0.3)
    b = LeaderElector(api, namespace, LEASE, "replica-b", retry_period=0.3)
    tasks = {a: asyncio.create_task(a.run()), b: asyncio.create_task(b.run())}
    try:
        leader = await first_leader(a, b)
        follower = b if leader is a else a
        await renewals(api, namespace, 3)
        assert leader.is_leader
        assert not follower.is_leader
        lease = await read_lease(api, namespace)
        assert lease["spec"]["holderIdentity"] == leader.identity
        assert lease["spec"]["leaseDurationSeconds"] == 15
        assert lease["spec"]["renewTime"].endswith("Z")

        assert await leader.release()
        await asyncio.wait_for(tasks[leader], WAIT)  # run() returns after release
        assert not leader.is_leader
        assert not leader.lost.is_set()  # released, not lost
        # Released, the lease is free at once: the follower must not wait out the 15 s.
        await asyncio.wait_for(follower.leading.wait(), timeout=leader.lease_duration)
        lease = await read_lease(api, namespace)
        assert lease["spec"]["holderIdentity"] == follower.identity
        assert lease["spec"]["leaseTransitions"] == 1
        assert not leader.is_leader
    finally:
        await finish(*tasks.values())


async def test_release_by_a_non_holder_changes_nothing(api: ApiClient, namespace: str) -> None:
    a = LeaderElector(api, namespace, LEASE, "replica-a", retry_period=0.3)
    b = LeaderElector(api, namespace, LEASE, "replica-b", retry_period=0.3)
    task_a = asyncio.create_task(a.run())
    try:
        await asyncio.wait_for(a.leading.wait(), WAIT)
        task_b = asyncio.create_task(b.run())
        await renewals(api, namespace, 2)
        assert not await b.release()
        await asyncio.wait_for(task_b, WAIT)
        await renewals(api, namespace, 2)
        assert (await read_lease(api, namespace))["spec"]["holderIdentity"] == "replica-a"
        assert a.is_leader
    finally:
        await finish(task_a)


async def test_takeover_after_expiry_when_leader_vanishes(api: ApiClient, namespace: str) -> None:
    a, b = (
        LeaderElector(
            api, namespace, LEASE, who, lease_duration=3.0, renew_deadline=2.0, retry_period=0.25
        )
        for who in ("replica-a", "replica-b")
    )
    task_a = asyncio.create_task(a.run())
    await asyncio.wait_for(a.leading.wait(), WAIT)
    task_b = asyncio.create_task(b.run())
    try:
        await renewals(api, namespace, 2)
        assert not b.is_leader
        loop = asyncio.get_running_loop()
        # Gone without a word, like a killed process: no release.
        await finish(task_a)
        vanished = loop.time()
        await asyncio.wait_for(b.leading.wait(), WAIT)
        waited = loop.time() - vanished
        # b saw a's last renewal at most one retry period before a vanished; it must then
        # wait out the whole lease duration, never take over early.
        assert waited >= b.lease_duration - 2 * b.retry_period
        lease = await read_lease(api, namespace)
        assert lease["spec"]["holderIdentity"] == "replica-b"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        await finish(task_b)


async def test_leader_that_cannot_renew_gives_up_within_renew_deadline(
    cluster: ControlPlane, api: ApiClient, namespace: str
) -> None:
    lost_calls: list[str] = []
    elector = LeaderElector(
        api,
        namespace,
        LEASE,
        "replica-a",
        lease_duration=8.0,
        renew_deadline=4.0,
        retry_period=0.5,
        on_lost=lambda: lost_calls.append("lost"),
    )
    task = asyncio.create_task(elector.run())
    try:
        await asyncio.wait_for(elector.leading.wait(), WAIT)
        try:
            await asyncio.to_thread(cluster.stop_apiserver)
            # Slack: one retry period plus the scheduling of this test.
            await asyncio.wait_for(elector.lost.wait(), elector.renew_deadline + 2.0)
            await asyncio.wait_for(task, WAIT)  # run() returns once leadership is lost
            assert not elector.is_leader
            assert not elector.leading.is_set()
            assert lost_calls == ["lost"]
        finally:
            # On the main thread: the apiserver dies with the thread that started it.
            cluster.start_apiserver()
        # After losing, the lease is not written to any more: release() has nothing to do.
        assert not await elector.release()
    finally:
        await finish(task)


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElector(
            None,  # type: ignore[arg-type]
            "ns",
            LEASE,
            "x",
            lease_duration=5,
            renew_deadline=10,
        )
