"""KEDA's own operator, built from its Go module at a pinned release (tests/cluster/keda, its own
build-cache entry), running against the test control plane with its CRDs from the same module.

A ScaledObject with `minReplicaCount: 1` brings a color scaled to 0 back up (what a plain
/scale, as rainbowd did before, meets); rainbowd's scale to 0 pauses it the way KEDA documents,
KEDA reports it paused and leaves the color at 0, and a rollback's restore lifts the pause, after
which KEDA scales the color up again.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import ActionKind, Reason
from rainbowd.kube.autoscaling import restore
from rainbowd.kube.clients import MERGE_PATCH, request_json, resource_path
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import Executor
from rainbowd_sandbox import buildcache
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.procs import free_port
from tests.integration.test_autoscalers import cache  # noqa: F401 (a fixture)
from tests.integration.test_executing import (
    action_for,
    applied_on_a_fresh_read,
    create_deployment,
    eventually,
    get_deployment,
)
from tests.integration.test_keda import CRD_PATH, _path, install_crd

pytestmark = [pytest.mark.cluster_full, pytest.mark.usefixtures("cluster_full", "keda_operator")]

NAME = "chat-c0c0c0"
SENTINEL = "sentinel-5e5e5e"


def keda_entry() -> Path:
    """The operator binary and CRDs, built once per KEDA version, script and Go."""
    try:
        return buildcache.ensure_addon("keda")
    except buildcache.CacheError as exc:
        pytest.fail(f"KEDA's operator could not be built: {exc}", pytrace=False)


def _wait(check: Any, what: str, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g}s waiting for {what}", pytrace=False)
        time.sleep(0.2)


@pytest.fixture(scope="module")
def keda_operator(
    cluster_full: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    entry = keda_entry()
    crds = [yaml.safe_load(p.read_text()) for p in sorted((entry / "crds").glob("*.yaml"))]
    for crd in crds:
        install_crd(cluster_full, crd)

    def established() -> bool:
        for crd in crds:
            found = cluster_full.request("GET", f"{CRD_PATH}/{crd['metadata']['name']}")
            conditions = (found.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return False
        return True

    _wait(established, "KEDA's CRDs to be established")
    cluster_full.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keda"}},
    )
    probe = free_port()
    folder = tmp_path_factory.mktemp("keda")
    log = (folder / "operator.log").open("w")
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster_full.kubeconfig),
        "KEDA_CLUSTER_OBJECT_NAMESPACE": "keda",
        "WATCH_NAMESPACE": "",
    }
    command = [
        str(entry / "bin" / "keda-operator"),
        "--leader-elect=false",
        "--metrics-bind-address=0",
        f"--health-probe-bind-address=127.0.0.1:{probe}",
        f"--metrics-service-bind-address=127.0.0.1:{free_port()}",
        # Its own certificates for its metrics service, in a Secret of its namespace and in
        # this folder; no webhook or APIService to patch here.
        "--enable-cert-rotation=true",
        f"--cert-dir={folder / 'certs'}",
        "--enable-webhook-patching=false",
        "--enable-apiservice-patching=false",
    ]
    # The first start writes its certificates' Secret and exits to be restarted, as a pod is.
    first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first.wait(timeout=120)
    except subprocess.TimeoutExpired:
        first.kill()
        first.wait()
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"keda-operator exited {proc.returncode}; its log: {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{probe}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        _wait(ready, "keda-operator to be ready")
        yield
        # KEDA puts its finalizer on each ScaledObject: they go while it runs, or never (and
        # their CRD with them).
        listing = cluster_full.request("GET", "/apis/keda.sh/v1alpha1/scaledobjects")
        for item in listing.get("items") or []:
            meta = item["metadata"]
            cluster_full.request("DELETE", _path(meta["namespace"], meta["name"]))

        def none_left() -> bool:
            found = cluster_full.request("GET", "/apis/keda.sh/v1alpha1/scaledobjects")
            return not found.get("items")

        _wait(none_left, "KEDA to finalize the ScaledObjects")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for crd in crds:
            cluster_full.request("DELETE", f"{CRD_PATH}/{crd['metadata']['name']}")


def scaled_object(target: str) -> dict[str, Any]:
    """A ScaledObject KEDA can act on with no external service: a cron trigger whose window
    never opens, so only minReplicaCount holds the color up."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": target},
        "spec": {
            "scaleTargetRef": {"name": target},
            "minReplicaCount": 1,
            "maxReplicaCount": 3,
            "pollingInterval": 1,
            "cooldownPeriod": 1,
            "triggers": [
                {
                    "type": "cron",
                    "metadata": {
                        "timezone": "Etc/UTC",
                        "start": "0 0 1 1 *",
                        "end": "1 0 1 1 *",
                        "desiredReplicas": "3",
                    },
                }
            ],
        },
    }


async def replicas(api: ApiClient, namespace: str, name: str = NAME) -> int:
    found: int = (await get_deployment(api, namespace, name))["spec"]["replicas"]
    return found


async def scale(api: ApiClient, namespace: str, name: str, count: int) -> None:
    path = resource_path("apps/v1", "deployments", namespace=namespace, name=name)
    body = {"spec": {"replicas": count}}
    await request_json(api, "PATCH", f"{path}/scale", body=body, content_type=MERGE_PATCH)


async def condition(api: ApiClient, namespace: str, type_: str) -> str | None:
    status = (await request_json(api, "GET", _path(namespace, NAME))).get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


async def test_keda_brings_a_plain_scale_to_0_back_up(kube_api: ApiClient, namespace: str) -> None:
    """What rainbowd met before: its /scale to 0, and KEDA's minReplicaCount undoing it."""
    await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=2)
    await request_json(kube_api, "POST", _path(namespace), body=scaled_object(NAME))

    async def active() -> bool:
        return await condition(kube_api, namespace, "Ready") == "True"

    await eventually(active, within=120, what="KEDA to take the ScaledObject on")
    await scale(kube_api, namespace, NAME, 0)

    async def back() -> bool:
        return await replicas(kube_api, namespace) >= 1

    await eventually(back, within=120, what="KEDA to scale the color back up")


async def test_a_scale_to_0_pauses_the_scaled_object_and_restore_resumes_it(
    kube_api: ApiClient,
    namespace: str,
    cache: Any,  # noqa: F811 (the fixture imported above)
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=2)
    await request_json(kube_api, "POST", _path(namespace), body=scaled_object(NAME))

    async def active() -> bool:
        return await condition(kube_api, namespace, "Ready") == "True"

    await eventually(active, within=120, what="KEDA to take the ScaledObject on")

    async def listed() -> bool:
        return any(o.target == NAME for o in (cache.objects() or {}).get(namespace, ()))

    await eventually(listed, what="the ScaledObject in the cache")
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    executor.objects = cache.objects

    # KEDA's HPA and the Deployment controller still write to the color: on a conflict the
    # action is built again on a fresh read, as the daemon's next cycle would.
    await applied_on_a_fresh_read(
        kube_api,
        executor,
        namespace,
        NAME,
        lambda fresh: action_for(fresh, ActionKind.SCALE, Reason.DRAINED),
    )

    async def paused() -> bool:
        return await condition(kube_api, namespace, "Paused") == "True"

    await eventually(paused, within=120, what="KEDA to report the ScaledObject paused")
    # Rounds of KEDA's scale loops, told by a sentinel it brings back from 0 each time: the
    # paused color stays at 0 through them.
    await create_deployment(kube_api, namespace, "sentinel", "5e5e5e", replicas=1)
    await request_json(kube_api, "POST", _path(namespace), body=scaled_object(SENTINEL))
    for _ in range(3):
        await scale(kube_api, namespace, SENTINEL, 0)

        async def sentinel_back() -> bool:
            return await replicas(kube_api, namespace, SENTINEL) >= 1

        await eventually(sentinel_back, within=120, what="KEDA to bring the sentinel back")
        assert await replicas(kube_api, namespace) == 0

    assert await restore(kube_api, namespace, NAME) == [
        f"ScaledObject {NAME}: resumed (rainbowd's pause lifted)"
    ]

    async def back() -> bool:
        return await replicas(kube_api, namespace) >= 1

    await eventually(back, within=120, what="KEDA, resumed, to scale the color back up")
    assert obj["metadata"]["name"] == NAME
