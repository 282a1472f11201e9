"""The watch cache against a real kube-apiserver: list, watch, bookmarks, restarts, 410 re-lists.

A loopback TCP proxy in front of the apiserver cuts the cache's connections on demand, so a
dropped stream and a real 410 (resuming from a resourceVersion the restarted apiserver no longer
serves) come from the real server. A small loopback fake serves only what a real server cannot
do on demand: a 410 as an ERROR event and as a status on the WATCH itself, in a fixed order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from rainbowd.core.model import Deployment
from rainbowd.core.objects import deployment_from_k8s
from rainbowd.kube.caching import (
    CONFIGMAPS,
    DEPLOYMENTS,
    SERVICES,
    Backoff,
    ClusterCache,
    Informer,
    Key,
    configmap_from_k8s,
)
from rainbowd.kube.clients import (
    ConfigError,
    Conflict,
    Forbidden,
    Gone,
    KubeError,
    NotFound,
    make_api_client,
    request_json,
    resource_path,
    translate,
)
from rainbowd_sandbox.controlplane import ControlPlane
from tests.tcpproxy import TcpProxy

pytestmark = [pytest.mark.cluster]

FAST = Backoff(initial=0.05, cap=0.5)
WAIT = 30.0  # seconds any expected change may take to show up in the cache


# --- helpers -------------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], *, what: str, within: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)


def deployment_body(name: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    template = {"app": "chat", "color": name[-6:]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels or {"app": "chat"})},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": template},
            "template": {
                "metadata": {"labels": template},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/chat:1"}]},
            },
        },
    }


def service_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": "chat"}, "ports": [{"port": 80}]},
    }


async def create(api: ApiClient, plural: str, namespace: str, body: Mapping[str, Any]) -> None:
    group_version = "apps/v1" if plural == "deployments" else "v1"
    await request_json(
        api, "POST", resource_path(group_version, plural, namespace=namespace), body=body
    )


async def delete(api: ApiClient, plural: str, namespace: str, name: str) -> None:
    group_version = "apps/v1" if plural == "deployments" else "v1"
    path = resource_path(group_version, plural, namespace=namespace, name=name)
    await request_json(api, "DELETE", path)


async def label(api: ApiClient, namespace: str, name: str, labels: Mapping[str, str]) -> None:
    path = resource_path("apps/v1", "deployments", namespace=namespace, name=name)
    await request_json(
        api,
        "PATCH",
        path,
        body={"metadata": {"labels": dict(labels)}},
        content_type="application/merge-patch+json",
    )


def running(*coros: Awaitable[None]) -> list[asyncio.Task[None]]:
    return [asyncio.ensure_future(c) for c in coros]


async def stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


async def restart_apiserver(cluster: ControlPlane) -> None:
    # Stopping may take a while and can run aside while the cache notices; starting must run
    # on the main thread: the apiserver dies with the thread that started it.
    await asyncio.to_thread(cluster.stop_apiserver)
    cluster.start_apiserver()


@pytest.fixture
async def api(cluster: ControlPlane) -> AsyncIterator[ApiClient]:
    client = await make_api_client(kubeconfig=str(cluster.kubeconfig))
    yield client
    await client.close()


@pytest.fixture
async def other_namespace(cluster: ControlPlane) -> AsyncIterator[str]:
    name = f"other-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(cluster.create_namespace, name)
    yield name
    await asyncio.to_thread(cluster.delete_namespace, name)


@pytest.fixture
async def proxy(cluster: ControlPlane) -> AsyncIterator[TcpProxy]:
    port = int(cluster.server.rsplit(":", 1)[1])
    tcp = TcpProxy(port)
    await tcp.start()
    yield tcp
    await tcp.close()


@pytest.fixture
async def proxied_api(cluster: ControlPlane, proxy: TcpProxy) -> AsyncIterator[ApiClient]:
    client = await make_api_client(kubeconfig=str(cluster.kubeconfig))
    # The serving certificate names 127.0.0.1, so TLS through the proxy verifies as usual.
    client.configuration.host = f"https://127.0.0.1:{proxy.port}"
    yield client
    await client.close()


def calls_in(
    cluster: ControlPlane, namespace: str, resources: set[str]
) -> Counter[tuple[str, str]]:
    """rainbowd's completed calls in one namespace by (verb, resource), from the apiserver's
    audit log (it records the user agent, which apiserver_request_total does not)."""
    calls: Counter[tuple[str, str]] = Counter()
    for event in cluster.audit_events():
        ref = event.get("objectRef") or {}
        if (
            event.get("userAgent", "").startswith("rainbowd/")
            and ref.get("namespace") == namespace
            and ref.get("resource") in resources
            and not ref.get("subresource")
        ):
            calls[(event["verb"], ref["resource"])] += 1
    return calls


# --- against the real apiserver ------------------------------------------------------------


async def test_list_then_watch_sees_create_update_delete(api: ApiClient, namespace: str) -> None:
    for i in range(3):
        await create(api, "deployments", namespace, deployment_body(f"chat-{i:06x}"))
    changes: list[tuple[str, Key]] = []
    informer = Informer(
        api,
        DEPLOYMENTS,
        deployment_from_k8s,
        namespace=namespace,
        on_change=lambda event, key: changes.append((event, key)),
        backoff=FAST,
    )
    tasks = running(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        assert sorted(informer.items()) == [(namespace, f"chat-{i:06x}") for i in range(3)]
        assert all(isinstance(d, Deployment) for d in informer.items().values())
        assert informer.stats.lists == 1

        await create(api, "deployments", namespace, deployment_body("chat-00000a"))
        await eventually(lambda: informer.get(namespace, "chat-00000a") is not None, what="add")

        await label(api, namespace, "chat-000000", {"tier": "gold"})
        await eventually(
            lambda: (
                (d := informer.get(namespace, "chat-000000")) is not None
                and d.labels.get("tier") == "gold"
            ),
            what="label change",
        )

        await delete(api, "deployments", namespace, "chat-000001")
        await eventually(lambda: informer.get(namespace, "chat-000001") is None, what="delete")

        assert ("ADDED", (namespace, "chat-00000a")) in changes
        assert ("MODIFIED", (namespace, "chat-000000")) in changes
        assert ("DELETED", (namespace, "chat-000001")) in changes
        assert informer.stats.lists == 1
        assert informer.stats.relists == 0
        assert informer.stats.events >= 3
    finally:
        await stop(tasks)


async def test_list_is_paginated(api: ApiClient, namespace: str) -> None:
    for i in range(7):
        await create(api, "services", namespace, service_body(f"svc-{i}"))
    informer = Informer(api, SERVICES, lambda obj: obj, namespace=namespace, page_size=2)
    tasks = running(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        assert len(informer) == 7
        assert informer.stats.list_pages == 4
        assert informer.stats.lists == 1
    finally:
        await stop(tasks)


async def test_namespaced_cache_ignores_other_namespaces(
    api: ApiClient, namespace: str, other_namespace: str
) -> None:
    await create(api, "deployments", namespace, deployment_body("mine-000001"))
    await create(api, "deployments", other_namespace, deployment_body("theirs-000001"))
    cache = ClusterCache(api, namespaces=[namespace])
    task = asyncio.create_task(cache.run())
    try:
        assert await cache.wait_synced(WAIT)
        await create(api, "deployments", other_namespace, deployment_body("theirs-000002"))
        await create(api, "deployments", namespace, deployment_body("mine-000002"))
        await eventually(
            lambda: len(cache.deployments().get(namespace, [])) == 2, what="second deployment"
        )
        assert set(cache.deployments()) == {namespace}
        names = sorted(d.name for d in cache.deployments()[namespace])
        assert names == ["mine-000001", "mine-000002"]
    finally:
        await cache.stop()
        await task


async def test_label_selector_is_honoured(api: ApiClient, namespace: str) -> None:
    await create(
        api, "deployments", namespace, deployment_body("in-000001", labels={"managed": "yes"})
    )
    await create(
        api, "deployments", namespace, deployment_body("out-000001", labels={"managed": "no"})
    )
    await create(api, "services", namespace, service_body("chat"))
    cache = ClusterCache(api, namespaces=[namespace], label_selector="managed=yes")
    task = asyncio.create_task(cache.run())
    try:
        assert await cache.wait_synced(WAIT)
        assert [d.name for d in cache.deployments()[namespace]] == ["in-000001"]
        # The selector is for Deployments; every Service in scope may select a color.
        assert [s.name for s in cache.services()[namespace]] == ["chat"]
        # A Deployment that stops matching leaves the cache; one that starts matching joins.
        await label(api, namespace, "in-000001", {"managed": "no"})
        await label(api, namespace, "out-000001", {"managed": "yes"})
        await eventually(
            lambda: [d.name for d in cache.deployments().get(namespace, [])] == ["out-000001"],
            what="selector membership to follow the labels",
        )
        assert cache.changed.is_set()
    finally:
        await cache.stop()
        await task


async def test_configmap_by_field_selector_keeps_no_managed_fields(
    api: ApiClient, namespace: str
) -> None:
    for name in ("rainbowd-policy", "unrelated"):
        await create(
            api,
            "configmaps",
            namespace,
            {
                "metadata": {
                    "name": name,
                    "annotations": {
                        "kubectl.kubernetes.io/last-applied-configuration": "{}",
                        "team": "platform",
                    },
                },
                "data": {"policy.yaml": "dryRun: true\n"},
            },
        )
    informer = Informer(
        api,
        CONFIGMAPS,
        configmap_from_k8s,
        namespace=namespace,
        field_selector="metadata.name=rainbowd-policy",
    )
    tasks = running(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        assert list(informer.items()) == [(namespace, "rainbowd-policy")]
        cached = informer.get(namespace, "rainbowd-policy")
        assert cached is not None
        assert "managedFields" not in cached["metadata"]
        assert cached["metadata"]["annotations"] == {"team": "platform"}
        assert cached["data"] == {"policy.yaml": "dryRun: true\n"}
        assert cached["metadata"]["uid"]
    finally:
        await stop(tasks)


async def test_bad_object_is_left_out_and_logged_once(api: ApiClient, namespace: str) -> None:
    def convert(obj: Mapping[str, Any]) -> Deployment:
        if obj["metadata"]["name"].startswith("bad-"):
            raise ValueError("bad names are not convertible")
        return deployment_from_k8s(obj)

    await create(api, "deployments", namespace, deployment_body("bad-000001"))
    await create(api, "deployments", namespace, deployment_body("good-000001"))
    informer = Informer(api, DEPLOYMENTS, convert, namespace=namespace)
    tasks = running(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        assert list(informer.items()) == [(namespace, "good-000001")]
        assert informer.stats.bad_objects == 1
        events = informer.stats.events
        await label(api, namespace, "bad-000001", {"touched": "1"})
        await create(api, "deployments", namespace, deployment_body("good-000002"))
        # The controller-manager writes status on the good Deployment too, so a count of
        # events can be reached before the new one arrives: wait for the new one itself.
        await eventually(lambda: (namespace, "good-000002") in informer.items(), what="new one")
        assert informer.stats.events >= events + 2
        assert sorted(informer.items()) == [
            (namespace, "good-000001"),
            (namespace, "good-000002"),
        ]
        # Same object, same error: not logged a second time.
        assert informer.stats.bad_objects == 1
    finally:
        await stop(tasks)


async def test_bookmarks_advance_without_events_and_rewatch_without_list(
    api: ApiClient, namespace: str, other_namespace: str
) -> None:
    await create(api, "deployments", namespace, deployment_body("chat-0000b0"))
    changes: list[tuple[str, Key]] = []
    # The apiserver sends a bookmark two seconds before a watch's timeout, when its cache has
    # moved past what this watch has delivered.
    informer = Informer(
        api,
        DEPLOYMENTS,
        deployment_from_k8s,
        namespace=namespace,
        watch_timeout=4,
        on_change=lambda event, key: changes.append((event, key)),
    )
    tasks = running(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        listed_at = informer.resource_version
        changes.clear()
        # A change this namespaced watch does not deliver moves the cache forward.
        await create(api, "deployments", other_namespace, deployment_body("else-0000b0"))
        await eventually(lambda: informer.stats.bookmarks >= 1, what="a bookmark")
        await eventually(lambda: informer.stats.watches >= 2, what="a second watch")
        assert informer.resource_version != listed_at
        # When the session runs the controller-manager, it may still be writing chat-0000b0's
        # status: those MODIFIED events are real. Nothing else may have been delivered.
        assert all(change == ("MODIFIED", (namespace, "chat-0000b0")) for change in changes)
        assert informer.stats.events == len(changes)
        assert informer.stats.lists == 1
        assert informer.stats.errors == 0
        # The re-watch from the bookmark's resourceVersion still delivers changes.
        await create(api, "deployments", namespace, deployment_body("chat-0000b1"))
        await eventually(lambda: informer.get(namespace, "chat-0000b1") is not None, what="add")
        assert informer.stats.relists == 0
    finally:
        await stop(tasks)


async def test_dropped_stream_resumes_from_last_resource_version(
    api: ApiClient, proxied_api: ApiClient, proxy: TcpProxy, namespace: str
) -> None:
    for name in ("keep-000001", "gone-000001"):
        await create(api, "deployments", namespace, deployment_body(name))
    informer = Informer(
        proxied_api, DEPLOYMENTS, deployment_from_k8s, namespace=namespace, backoff=FAST
    )
    tasks = running(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        proxy.cut()
        await eventually(lambda: informer.stats.errors >= 1, what="the watch to drop")
        await delete(api, "deployments", namespace, "gone-000001")
        await create(api, "deployments", namespace, deployment_body("new-000001"))
        proxy.resume()
        await eventually(
            lambda: sorted(n for _, n in informer.items()) == ["keep-000001", "new-000001"],
            what="changes made while cut off",
        )
        # The apiserver still had those events: a WATCH caught up, no LIST needed.
        assert informer.stats.lists == 1
        assert informer.stats.relists == 0
    finally:
        await stop(tasks)


async def test_apiserver_restart_mid_watch(
    cluster: ControlPlane, api: ApiClient, namespace: str
) -> None:
    await create(api, "deployments", namespace, deployment_body("before-000001"))
    cache = ClusterCache(api, namespaces=[namespace], backoff=FAST)
    task = asyncio.create_task(cache.run())
    try:
        assert await cache.wait_synced(WAIT)
        await restart_apiserver(cluster)
        await create(api, "deployments", namespace, deployment_body("after-000001"))
        await create(api, "services", namespace, service_body("after"))
        await eventually(
            lambda: (
                len(cache.deployments().get(namespace, [])) == 2
                and len(cache.services().get(namespace, [])) == 1
            ),
            what="objects created after the restart",
        )
        assert cache.stats().errors >= 1
    finally:
        await cache.stop()
        await task


async def test_expired_resource_version_after_restart_relists(
    cluster: ControlPlane,
    api: ApiClient,
    proxied_api: ApiClient,
    proxy: TcpProxy,
    namespace: str,
) -> None:
    for name in ("keep-000001", "gone-000001"):
        await create(api, "deployments", namespace, deployment_body(name))
    changes: list[tuple[str, Key]] = []
    informer = Informer(
        proxied_api,
        DEPLOYMENTS,
        deployment_from_k8s,
        namespace=namespace,
        backoff=FAST,
        on_change=lambda event, key: changes.append((event, key)),
    )
    tasks = running(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), WAIT)
        proxy.cut()
        await delete(api, "deployments", namespace, "gone-000001")
        # A restarted apiserver's watch cache starts at etcd's current revision, newer than
        # the informer's: resuming from the old one is answered with 410 Gone.
        await restart_apiserver(cluster)
        proxy.resume()
        await eventually(
            lambda: informer.get(namespace, "gone-000001") is None,
            what="the object deleted meanwhile to disappear",
        )
        assert informer.stats.relists >= 1
        assert ("DELETED", (namespace, "gone-000001")) in changes
        assert informer.get(namespace, "keep-000001") is not None
    finally:
        await stop(tasks)


async def test_steady_state_makes_no_list_or_get(
    cluster: ControlPlane, api: ApiClient, namespace: str
) -> None:
    await create(api, "deployments", namespace, deployment_body("chat-000c01"))
    await create(api, "services", namespace, service_body("chat"))
    # A short server-side timeout so the quiet period spans several re-watches.
    cache = ClusterCache(api, namespaces=[namespace], watch_timeout=2)
    task = asyncio.create_task(cache.run())
    try:
        assert await cache.wait_synced(WAIT)
        await eventually(lambda: cache.objects() is not None, what="HPAs and PDBs listed")
        resources = {"deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets"}
        before = calls_in(cluster, namespace, resources)
        # The audit log does see this client: its start-up LISTs are there.
        assert all(before[("list", resource)] >= 1 for resource in resources)
        watches = cache.stats().watches
        await create(api, "deployments", namespace, deployment_body("chat-000c02"))
        await label(api, namespace, "chat-000c01", {"tier": "gold"})
        await delete(api, "services", namespace, "chat")
        await eventually(
            lambda: (
                len(cache.deployments().get(namespace, [])) == 2
                and not cache.services().get(namespace)
            ),
            what="watch events",
        )
        await eventually(lambda: cache.stats().watches >= watches + 4, what="re-watches")
        after = calls_in(cluster, namespace, resources)
        # The apiserver's audit log names the client: only rainbowd's own calls in this
        # namespace count, not the controllers' or the apiserver's own periodic reads.
        for verb in ("list", "get"):
            for resource in resources:
                assert after[(verb, resource)] == before[(verb, resource)], (verb, resource)
        assert after[("watch", "deployments")] > before[("watch", "deployments")]
        # One per informer, at start (none for ScaledObjects while KEDA's CRD is not installed,
        # nor for Rollouts while Argo Rollouts' is not).
        every = [*cache.informers, *cache.rollout_informers, *cache.object_informers]
        served = [i for i in every if not i.absent]
        assert cache.stats().lists == len(served) >= 4
    finally:
        await cache.stop()
        await task


async def test_stop_leaves_no_task_behind(api: ApiClient, namespace: str) -> None:
    baseline = asyncio.all_tasks()
    cache = ClusterCache(api, namespaces=[namespace, "default"])
    task = asyncio.create_task(cache.run())
    assert await cache.wait_synced(WAIT)
    await cache.stop()
    await task
    assert asyncio.all_tasks() - baseline == set()


# --- the client ----------------------------------------------------------------------------


async def test_client_from_kubeconfig_env_and_errors_naming_what_was_tried(
    cluster: ControlPlane, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    client = await make_api_client(kubeconfig=None)
    try:
        answer = await request_json(client, "GET", "/api/v1/namespaces/default")
        assert answer["metadata"]["name"] == "default"
        with pytest.raises(NotFound, match="404") as caught:
            await request_json(client, "GET", "/api/v1/namespaces/no-such-namespace")
        assert caught.value.status == 404
        assert isinstance(caught.value.__cause__, ApiException)
    finally:
        await client.close()

    missing = tmp_path / "nothing-here"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    with pytest.raises(ConfigError) as error:
        await make_api_client(kubeconfig=None)
    assert "KUBERNETES_SERVICE_HOST" in str(error.value)
    assert str(missing) in str(error.value)
    with pytest.raises(ConfigError, match="does not exist"):
        await make_api_client(kubeconfig=str(missing))
    with pytest.raises(ConfigError, match="no-such-context"):
        await make_api_client(kubeconfig=str(cluster.kubeconfig), context="no-such-context")


def test_translate_cuts_bodies_and_maps_statuses() -> None:
    for status, kind in ((409, Conflict), (404, NotFound), (410, Gone), (403, Forbidden)):
        exc = ApiException(status=status, reason="Nope")
        exc.body = json.dumps({"kind": "Status", "message": "x" * 5000, "reason": "Nope"}).encode()
        error = translate(exc)
        assert type(error) is kind
        assert error.status == status
        assert len(str(error)) < 400
    plain = ApiException(status=502, reason="Bad Gateway")
    plain.body = b"<html>" + b"y" * 5000
    error = translate(plain)
    assert type(error) is KubeError
    assert str(error).startswith("502 Bad Gateway: <html>")
    assert len(str(error)) < 400


# --- 410 in both forms, from a loopback fake -------------------------------------------------


class FakeApiserver:
    """Serves ConfigMaps in a scripted order: LIST answers and WATCH behaviours, one per call."""

    def __init__(self, lists: list[tuple[str, list[str]]], watches: list[str]) -> None:
        self.lists = lists  # (resourceVersion, names) per LIST
        self.watches = watches  # "error-event" | "status-410" | "bookmark:<rv>" | "hang"
        self.watch_versions: list[str] = []
        self.list_calls = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/ns/configmaps", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _configmap(name: str, rv: str) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "resourceVersion": rv,
                "managedFields": [{"manager": "kubectl"}],
            },
            "data": {"k": name},
        }

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            rv, names = self.lists[min(self.list_calls, len(self.lists) - 1)]
            self.list_calls += 1
            items = [self._configmap(n, rv) for n in names]
            return web.json_response({"metadata": {"resourceVersion": rv}, "items": items})
        assert request.query.get("allowWatchBookmarks") == "true"
        self.watch_versions.append(request.query.get("resourceVersion", ""))
        script = self.watches.pop(0) if self.watches else "hang"
        gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
        if script == "status-410":
            return web.json_response(gone, status=410)
        resp = web.StreamResponse()
        await resp.prepare(request)
        if script == "error-event":
            line = {"type": "ERROR", "object": gone}
        elif script.startswith("bookmark:"):
            rv = script.split(":", 1)[1]
            line = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": rv}}}
        else:
            await self._closing.wait()  # a quiet watch, until the test ends
            return resp
        await resp.write(json.dumps(line).encode() + b"\n")
        await resp.write_eof()
        return resp


async def test_410_as_error_event_and_as_status_relists_and_replaces_store() -> None:
    fake = FakeApiserver(
        lists=[("10", ["a", "b"]), ("20", ["a"]), ("30", ["a", "c"])],
        watches=["error-event", "status-410", "bookmark:40"],
    )
    await fake.start()
    api = ApiClient(Configuration(host=f"http://127.0.0.1:{fake.port}"))
    changes: list[tuple[str, Key]] = []
    informer = Informer(
        api,
        CONFIGMAPS,
        configmap_from_k8s,
        namespace="ns",
        backoff=FAST,
        on_change=lambda event, key: changes.append((event, key)),
    )
    tasks = running(informer.run())
    try:
        await eventually(lambda: fake.watch_versions == ["10", "20", "30", "40"], what="4 watches")
        assert sorted(informer.items()) == [("ns", "a"), ("ns", "c")]
        assert informer.stats.lists == 3
        assert informer.stats.relists == 2
        assert informer.stats.bookmarks == 1
        assert ("DELETED", ("ns", "b")) in changes
        assert ("ADDED", ("ns", "c")) in changes
        assert all("managedFields" not in v["metadata"] for v in informer.items().values())
    finally:
        await stop(tasks)
        await api.close()
        await fake.close()
