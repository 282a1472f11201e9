"""Argo Rollout colors against the real apiserver: Argo Rollouts' own CRDs (from its Go module at
a pinned release), a blueGreen Rollout, and ReplicaSets shaped as Argo Rollouts makes them
(owned by the Rollout, labelled with their hash; the ReplicaSet controller and kwok run their
pods). The watch cache joins them into colors; the planner's decisions reach them through the
ReplicaSet's scale-down-deadline alone: a drained one gets it set to now, a held one has it
kept ahead, their replicas never touched by rainbowd; dry-run, paused and protect hold the
scale-down; a bad deadline on one Rollout affects only it. Events go on the ReplicaSet and on
the Rollout.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    LIVE_AT,
    PROTECT,
    RETIRED_AT,
    ROLLOUT_HASH,
    SCALE_DOWN_DEADLINE,
    ActionKind,
    Connections,
    Namespace,
    Plan,
    Reason,
    Snapshot,
    WorkloadKind,
)
from rainbowd.core.objects import format_time, parse_time
from rainbowd.core.planner import plan
from rainbowd.core.policy import WORKLOAD_KINDS, Policy, PrometheusSettings
from rainbowd.daemon.cycles import Pipeline
from rainbowd.deploy import AppRef, history, render_history
from rainbowd.kube.caching import ClusterCache
from rainbowd.kube.clients import MERGE_PATCH, request_json, resource_path
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import ActionOutcome, Executor
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.demoapps import DemoApp
from tests.integration.test_events import list_events
from tests.integration.test_executing import eventually
from tests.rollouts import rollouts_entry
from tests.unit.strategies import policy, rule

pytestmark = [pytest.mark.cluster_full, pytest.mark.usefixtures("cluster_full", "rollout_crds")]

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
APP = "chat"
# Argo Rollouts' hashes are longer; six hex digits let a demo_app process export them as its
# color, as the shipped PodMonitor labels a Rollout's pods' series with their hash.
NEW, OLD = "6d4f8b", "5c8d7e"


def _established(cluster: ControlPlane, name: str) -> bool:
    found = cluster.request("GET", f"{CRD_PATH}/{name}")
    conditions = (found.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def rollout_crds(cluster_full: ControlPlane) -> Iterator[None]:
    """All five of Argo Rollouts' CRDs (its build-cache entry's, from its module at the pinned
    release), established, without its controller; left for the session when another module
    had them first."""
    created: list[str] = []
    for path in sorted((rollouts_entry() / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        try:
            cluster_full.request("POST", CRD_PATH, crd)
            created.append(crd["metadata"]["name"])
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
    deadline = time.monotonic() + 30
    while not _established(cluster_full, "rollouts.argoproj.io"):
        if time.monotonic() > deadline:
            pytest.fail("CRD rollouts.argoproj.io not established within 30s")
        time.sleep(0.1)
    try:
        yield
    finally:
        for name in created:
            cluster_full.request("DELETE", f"{CRD_PATH}/{name}")


def stamp(delta: timedelta) -> str:
    return format_time(datetime.now(UTC) - delta)


async def create(api: ApiClient, group_version: str, plural: str, ns: str, body: Any) -> Any:
    return await request_json(
        api, "POST", resource_path(group_version, plural, namespace=ns), body=body
    )


async def get_rs(api: ApiClient, ns: str, name: str) -> dict[str, Any]:
    path = resource_path("apps/v1", "replicasets", namespace=ns, name=name)
    found: dict[str, Any] = await request_json(api, "GET", path)
    return found


async def make_rollout(
    api: ApiClient,
    ns: str,
    *,
    name: str = APP,
    old_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A blueGreen Rollout, its active Service on NEW, and its two ReplicaSets as Argo Rollouts
    leaves them after a promotion: NEW live, OLD retired with its deadline; both running."""
    labels = {"app": name}
    template = {
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/chat:1"}]},
    }
    rollout = await create(
        api,
        "argoproj.io/v1alpha1",
        "rollouts",
        ns,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": template,
                "strategy": {
                    "blueGreen": {"activeService": f"{name}-active", "scaleDownDelaySeconds": 30}
                },
            },
        },
    )
    await create(
        api,
        "v1",
        "services",
        ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-active"},
            "spec": {"selector": {**labels, ROLLOUT_HASH: NEW}, "ports": [{"port": 80}]},
        },
    )
    owner = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "name": name,
        "uid": rollout["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for hash_, stamps in (
        (NEW, {LIVE_AT: stamp(timedelta(hours=1))}),
        (OLD, dict(old_annotations or {})),
    ):
        pod_labels = {**labels, ROLLOUT_HASH: hash_}
        await create(
            api,
            "apps/v1",
            "replicasets",
            ns,
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{name}-{hash_}",
                    "labels": pod_labels,
                    "annotations": stamps,
                    "ownerReferences": [owner],
                },
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": pod_labels},
                    "template": {**template, "metadata": {"labels": pod_labels}},
                },
            },
        )
        # Created one after the other: NEW is the older object here, so the ages come from
        # the stamps, as for a color rainbowd found already retired.

    async def running() -> bool:
        for hash_ in (NEW, OLD):
            status = (await get_rs(api, ns, f"{name}-{hash_}")).get("status") or {}
            if status.get("availableReplicas") != 1:
                return False
        return True

    await eventually(running, what=f"{name}'s ReplicaSets running")
    made: dict[str, Any] = rollout
    return made


def retired_drained() -> dict[str, str]:
    """Retired 2h ago, drained for 1h, Argo Rollouts' deadline 10 minutes ahead."""
    return {
        LIVE_AT: stamp(timedelta(hours=3)),
        RETIRED_AT: stamp(timedelta(hours=2)),
        "rainbowd.io/drained-since": stamp(timedelta(hours=1)),
        SCALE_DOWN_DEADLINE: format_time(datetime.now(UTC) + timedelta(minutes=10)),
    }


def retired_held() -> dict[str, str]:
    """Retired 2h ago, Argo Rollouts' deadline 30 s ahead: its timer about to fire."""
    return {
        LIVE_AT: stamp(timedelta(hours=3)),
        RETIRED_AT: stamp(timedelta(hours=2)),
        SCALE_DOWN_DEADLINE: format_time(datetime.now(UTC) + timedelta(seconds=30)),
    }


@pytest.fixture
async def cache(kube_api: ApiClient, namespace: str) -> AsyncIterator[ClusterCache]:
    cache = ClusterCache(kube_api, namespaces=[namespace])
    task = asyncio.create_task(cache.run())
    try:
        assert await cache.wait_synced(60), "caches not synced within 60s"
        yield cache
    finally:
        await cache.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def snapshot_of(
    cache: ClusterCache, ns: str, connections: Mapping[tuple[str, str], float | None], count: int
) -> Snapshot:
    """The cache's view of `ns` once it holds `count` colors, with the connections given."""

    async def seen() -> bool:
        return len(cache.deployments().get(ns, ())) >= count

    await eventually(seen, what=f"{count} colors in the cache")
    figures = {
        key: Connections(value) if value is not None else Connections.unknown("test")
        for key, value in connections.items()
    }
    return Snapshot(
        now=datetime.now(UTC),
        namespaces={
            ns: Namespace(
                name=ns,
                deployments=tuple(cache.deployments()[ns]),
                services=tuple(cache.services().get(ns, ())),
                connections=figures,
            )
        },
    )


def any_app() -> Policy:
    return policy(rule(app=None, kinds=WORKLOAD_KINDS))


async def fresh_plan(
    cache: ClusterCache,
    ns: str,
    connections: Mapping[tuple[str, str], float | None],
    pol: Policy,
    *,
    count: int = 2,
    rv: str = "",
) -> Plan:
    """A plan of the cache's view once it shows the OLD ReplicaSet past resourceVersion `rv`."""

    async def caught_up() -> bool:
        colors = cache.deployments().get(ns, ())
        return any(d.name == f"{APP}-{OLD}" and d.resource_version != rv for d in colors)

    await eventually(caught_up, what="the cache to see the ReplicaSet")
    snap = await snapshot_of(cache, ns, connections, count)
    return plan(snap, pol, snap.now)


async def applied(api: ApiClient, p: Plan, ns: str) -> dict[str, Any]:
    """The OLD ReplicaSet once the plan's one action is applied, as the apiserver has it."""
    executor = Executor(api, EventRecorder(api, instance="test"))
    (result,) = await executor.apply(p)
    assert result.outcome is ActionOutcome.OK, result.error
    return await get_rs(api, ns, f"{APP}-{OLD}")


# --- the cache --------------------------------------------------------------------------------


async def test_the_cache_joins_a_rollouts_replicasets_as_its_colors(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    await make_rollout(kube_api, namespace, old_annotations=retired_held())
    snap = await snapshot_of(cache, namespace, {}, 2)
    colors = {d.color_of("color"): d for d in snap.namespaces[namespace].deployments}
    assert set(colors) == {NEW, OLD}
    assert all(d.kind is WorkloadKind.ROLLOUT for d in colors.values())
    rollout = colors[OLD].rollout
    assert rollout is not None and rollout.name == APP
    assert colors[OLD].labels == {"app": APP}  # the Rollout's
    assert SCALE_DOWN_DEADLINE in colors[OLD].annotations
    # No LIST per cycle: the same objects while nothing changed.
    assert cache.deployments() is cache.deployments()
    p = plan(snap, any_app(), snap.now)
    states = {c.color: c.state.value for a in p.apps for c in a.colors}
    assert states == {NEW: "live", OLD: "unknown-connections"}


# --- what the executor does -------------------------------------------------------------------


async def test_a_drained_replicaset_gets_its_deadline_set_to_now_and_keeps_its_replicas(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    await make_rollout(kube_api, namespace, old_annotations=retired_drained())
    before = await get_rs(kube_api, namespace, f"{APP}-{OLD}")
    p = await fresh_plan(cache, namespace, {(APP, NEW): 3, (APP, OLD): 0}, any_app())
    (action,) = p.actions
    assert (action.kind, action.workload) == (ActionKind.SCALE, WorkloadKind.ROLLOUT)
    after = await applied(kube_api, p, namespace)
    deadline = parse_time(after["metadata"]["annotations"][SCALE_DOWN_DEADLINE])
    assert deadline <= datetime.now(UTC)
    assert after["metadata"]["annotations"]["rainbowd.io/original-replicas"] == "1"
    # Argo Rollouts' to scale: rainbowd left the replicas and the generation alone.
    assert after["spec"]["replicas"] == 1
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    live = await get_rs(kube_api, namespace, f"{APP}-{NEW}")
    assert SCALE_DOWN_DEADLINE not in (live["metadata"].get("annotations") or {})

    async def told() -> bool:
        kinds = {e["regarding"]["kind"] for e in await list_events(kube_api, namespace)}
        return {"ReplicaSet", "Rollout"} <= kinds

    await eventually(told, what="ScaledDown Events on the ReplicaSet and the Rollout")
    events = await list_events(kube_api, namespace)
    assert {e["reason"] for e in events} == {"ScaledDown"}
    assert {e["regarding"]["name"] for e in events} == {APP, f"{APP}-{OLD}"}
    # Planned again on what was written: asked already, nothing more to do.
    p = await fresh_plan(
        cache,
        namespace,
        {(APP, NEW): 3, (APP, OLD): 0},
        any_app(),
        rv=before["metadata"]["resourceVersion"],
    )
    assert p.actions == ()


async def test_a_held_replicaset_has_its_deadline_kept_ahead(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    await make_rollout(kube_api, namespace, old_annotations=retired_held())
    p = await fresh_plan(cache, namespace, {(APP, NEW): 3, (APP, OLD): 2}, any_app())
    (action,) = p.actions
    assert (action.kind, action.reason) == (ActionKind.ANNOTATE, Reason.DEADLINE_KEPT)
    after = await applied(kube_api, p, namespace)
    deadline = parse_time(after["metadata"]["annotations"][SCALE_DOWN_DEADLINE])
    assert deadline > datetime.now(UTC) + timedelta(minutes=5)
    # deadlineAhead from the plan's now, stamped as the second after it.
    assert deadline <= p.now + timedelta(minutes=10, seconds=1)
    assert after["spec"]["replicas"] == 1


@pytest.mark.parametrize("guard", ["dry-run", "paused", "protect"])
async def test_dry_run_paused_and_protect_never_set_the_deadline_to_now(
    kube_api: ApiClient, namespace: str, cache: ClusterCache, guard: str
) -> None:
    annotations = retired_drained()
    if guard == "protect":
        annotations[PROTECT] = "true"
    await make_rollout(kube_api, namespace, old_annotations=annotations)
    pol = policy(
        rule(app=None, kinds=WORKLOAD_KINDS), dry_run=guard == "dry-run", paused=guard == "paused"
    )
    p = await fresh_plan(cache, namespace, {(APP, NEW): 3, (APP, OLD): 0}, pol)
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    await executor.apply(p)
    after = await get_rs(kube_api, namespace, f"{APP}-{OLD}")
    deadline = parse_time(after["metadata"]["annotations"][SCALE_DOWN_DEADLINE])
    assert deadline > datetime.now(UTC) + timedelta(minutes=5), guard
    assert after["spec"]["replicas"] == 1
    assert "rainbowd.io/original-replicas" not in after["metadata"]["annotations"]


async def test_a_bad_deadline_on_one_rollout_affects_only_it(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    bad = {**retired_held(), SCALE_DOWN_DEADLINE: "tomorrow"}
    await make_rollout(kube_api, namespace, name="other", old_annotations=bad)
    await make_rollout(kube_api, namespace, old_annotations=retired_drained())
    connections = {(APP, NEW): 3, (APP, OLD): 0, ("other", NEW): 3, ("other", OLD): 2}
    p = await fresh_plan(cache, namespace, connections, any_app(), count=4)
    assert [w.split(":")[0] for w in p.warnings] == [f"{namespace}/other-{OLD}"]
    by_name = {a.name: a for a in p.actions}
    assert by_name[f"{APP}-{OLD}"].kind is ActionKind.SCALE
    assert by_name[f"other-{OLD}"].reason is Reason.DEADLINE_KEPT
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    results = await executor.apply(p)
    assert {r.outcome for r in results} == {ActionOutcome.OK}
    assert (
        await executor.report_warnings(p, await snapshot_of(cache, namespace, {}, 4), p.warnings)
        == 1
    )
    fixed = await get_rs(kube_api, namespace, f"other-{OLD}")
    assert parse_time(fixed["metadata"]["annotations"][SCALE_DOWN_DEADLINE]) > datetime.now(UTC)


async def test_a_replicaset_changed_since_the_plan_is_not_annotated(
    kube_api: ApiClient, namespace: str, cache: ClusterCache
) -> None:
    """The plan's resourceVersion is the patch's precondition, as for a Deployment."""
    await make_rollout(kube_api, namespace, old_annotations=retired_drained())
    p = await fresh_plan(cache, namespace, {(APP, NEW): 3, (APP, OLD): 0}, any_app())
    path = resource_path("apps/v1", "replicasets", namespace=namespace, name=f"{APP}-{OLD}")
    body = {"metadata": {"labels": {"edited": "by-hand"}}}
    await request_json(kube_api, "PATCH", path, body=body, content_type=MERGE_PATCH)
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    (result,) = await executor.apply(p)
    assert result.outcome is ActionOutcome.CONFLICT
    after = await get_rs(kube_api, namespace, f"{APP}-{OLD}")
    assert parse_time(after["metadata"]["annotations"][SCALE_DOWN_DEADLINE]) > datetime.now(UTC)


# --- Prometheus says so -----------------------------------------------------------------------


@pytest.mark.prometheus
async def test_a_replicaset_prometheus_sees_connected_is_kept_and_scaled_down_once_drained(
    kube_api: ApiClient,
    namespace: str,
    cache: ClusterCache,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    """The daemon's pipeline (the cache, the real Prometheus scraping demo_app processes that
    export the colors' connections): a client holds a connection to OLD, whose deadline Argo
    Rollouts set 30 s ahead; it is moved to deadlineAhead. The client leaves: once drained
    (drainHold 2s), the deadline is set to now."""
    await make_rollout(kube_api, namespace, old_annotations=retired_held())
    pol = Policy(
        rules=(
            rule(
                app=None,
                kinds=WORKLOAD_KINDS,
                min_retired_age=timedelta(0),
                drain_hold=timedelta(seconds=2),
            ),
        ),
        prometheus=PrometheusSettings(url=prometheus.url, timeout=timedelta(seconds=5)),
    )
    apps = [
        DemoApp(color, workdir=tmp_path, namespace=namespace, app=APP, interval=0.2).start()
        for color in (NEW, OLD)
    ]
    try:
        prometheus.set_targets([(app.target, {}) for app in apps])
        reader, writer = await asyncio.open_connection("127.0.0.1", apps[1].tcp_port)
        await asyncio.wait_for(reader.readline(), 30)
        async with aiohttp.ClientSession() as session:
            pipeline = Pipeline(session)

            executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))

            async def planned(reason: Reason) -> Plan | None:
                """The cycle's plan if it has OLD's action for `reason`; else its stamps are
                applied (the drain's drained-since), as the daemon's cycle does."""
                planned = await pipeline.run(
                    pol, cache.deployments(), cache.services(), now=datetime.now(UTC)
                )
                found = [a for a in planned.plan.actions if a.name == f"{APP}-{OLD}"]
                if [a.reason for a in found] == [reason]:
                    return planned.plan
                assert not any(a.disruptive for a in planned.plan.actions), planned.plan.actions
                await executor.apply(planned.plan)
                return None

            kept = await until(lambda: planned(Reason.DEADLINE_KEPT), "the deadline kept")
            after = await applied(kube_api, kept, namespace)
            deadline = parse_time(after["metadata"]["annotations"][SCALE_DOWN_DEADLINE])
            assert deadline > datetime.now(UTC) + timedelta(minutes=5)
            writer.close()
            await writer.wait_closed()
            drained = await until(lambda: planned(Reason.DRAINED), "the color drained")
            after = await applied(kube_api, drained, namespace)
            deadline = parse_time(after["metadata"]["annotations"][SCALE_DOWN_DEADLINE])
            assert deadline <= datetime.now(UTC)
            assert after["spec"]["replicas"] == 1
    finally:
        for app in apps:
            app.close()


async def until(check: Callable[[], Awaitable[Plan | None]], what: str) -> Plan:
    """The first plan `check` accepts, polled with a deadline."""
    found: list[Plan] = []

    async def accepted() -> bool:
        plan = await check()
        if plan is not None:
            found.append(plan)
        return plan is not None

    await eventually(accepted, within=90.0, what=what)
    return found[0]


# --- rainbowd history -------------------------------------------------------------------------


async def test_history_lists_a_rollouts_colors_with_their_kind(
    kube_api: ApiClient, namespace: str
) -> None:
    await make_rollout(kube_api, namespace, old_annotations=retired_held())
    rows = {row.color: row for row in await history(kube_api, AppRef(namespace, APP))}
    assert {c: (r.kind, r.state) for c, r in rows.items()} == {
        NEW: (WorkloadKind.ROLLOUT, "live"),
        OLD: (WorkloadKind.ROLLOUT, "retired"),
    }
    assert rows[OLD].deployment == f"{APP}-{OLD}"
    text = render_history(list(rows.values()))
    assert f"{OLD} (Rollout)" in text
