"""KEDA ScaledObjects at the CRD level: KEDA's own CRD, from its Go module at a pinned release,
served by the real apiserver. The cache lists ScaledObjects once the CRD is there (and treats
its absence as none); a consolidation step on a color a ScaledObject scales is refused; a scale
to 0 pauses the ScaledObject the way KEDA documents (`autoscaling.keda.sh/paused-replicas: "0"`)
and a rollback's restore lifts the pause rainbowd set, and only that one.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    KEDA_PAUSED_REPLICAS,
    PAUSED_BY_RAINBOWD,
    ActionKind,
    ObjectKind,
    Reason,
)
from rainbowd.kube.autoscaling import restore
from rainbowd.kube.caching import ClusterCache
from rainbowd.kube.clients import request_json, resource_path
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import ActionOutcome, Executor
from rainbowd_sandbox.controlplane import ControlPlane
from tests.installtools import go_module_dir
from tests.integration.test_autoscalers import cache  # noqa: F401 (a fixture)
from tests.integration.test_consolidating import consolidation, pod_names
from tests.integration.test_executing import (
    action_for,
    create_deployment,
    eventually,
    get_deployment,
    plan_of,
)

pytestmark = [pytest.mark.cluster_full, pytest.mark.usefixtures("cluster_full", "keda_crd")]

# The newest KEDA release this machine's Go builds (v2.21.1 needs a newer one); its CRDs are
# the ones its operator serves.
KEDA_MODULE = "github.com/kedacore/keda/v2@v2.21.0"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_NAME = "scaledobjects.keda.sh"
NAME = "chat-c0c0c0"


def keda_source() -> Path:
    """KEDA's module, from the module proxy into the build cache's module cache."""
    return go_module_dir(KEDA_MODULE)


def wait_crd_gone(cluster: ControlPlane, name: str, *, within: float = 60) -> None:
    """Waits until the CRD `name` (another module's, being deleted) is gone, and discovery no
    longer serves its resource: the apiserver drops a deleted CRD's API a moment after the
    object itself."""
    plural, group = name.split(".", 1)
    deadline = time.monotonic() + within

    def gone() -> bool:
        try:
            cluster.request("GET", f"{CRD_PATH}/{name}")
            return False
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        try:
            found = cluster.request("GET", f"/apis/{group}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return True
            raise
        for version in found.get("versions") or []:
            try:
                served = cluster.request("GET", f"/apis/{version['groupVersion']}")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    continue
                raise
            if any(r.get("name") == plural for r in served.get("resources") or []):
                return False
        return True

    while not gone():
        if time.monotonic() > deadline:
            pytest.fail(f"CRD {name} still there after {within:g}s")
        time.sleep(0.2)


def install_crd(cluster: ControlPlane, crd: dict[str, Any]) -> None:
    """Creates `crd`, once an earlier one of that name (another module's, being deleted) is
    gone."""
    wait_crd_gone(cluster, crd["metadata"]["name"])
    cluster.request("POST", CRD_PATH, crd)


@contextlib.contextmanager
def scaled_objects_crd(cluster: ControlPlane) -> Iterator[None]:
    """KEDA's ScaledObject CRD, installed and established; deleted on the way out (what
    installs it next waits for it to be gone)."""
    crd = yaml.safe_load(
        (keda_source() / "config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml").read_text()
    )
    install_crd(cluster, crd)
    try:

        def established() -> bool:
            found = cluster.request("GET", f"{CRD_PATH}/{CRD_NAME}")
            conditions = (found.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        deadline = time.monotonic() + 30
        while not established():
            if time.monotonic() > deadline:
                pytest.fail(f"CRD {CRD_NAME} not established within 30s")
            time.sleep(0.1)
        yield
    finally:
        try:
            cluster.request("DELETE", f"{CRD_PATH}/{CRD_NAME}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # deleted already, by the test
                raise


@pytest.fixture(scope="module")
def keda_crd(cluster_full: ControlPlane) -> Iterator[None]:
    with scaled_objects_crd(cluster_full):
        yield


def scaled_object(target: str, *, minimum: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": target},
        "spec": {
            "scaleTargetRef": {"name": target},
            "minReplicaCount": minimum,
            "maxReplicaCount": 4,
            "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}],
        },
    }


def _path(namespace: str, name: str | None = None) -> str:
    return resource_path("keda.sh/v1alpha1", "scaledobjects", namespace=namespace, name=name)


async def test_scaled_objects_are_listed_a_step_refused_a_scale_to_0_pauses_and_restore_lifts(
    kube_api: ApiClient,
    namespace: str,
    cache: ClusterCache,  # noqa: F811 (the fixture imported above)
) -> None:
    obj = await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=3)
    await request_json(kube_api, "POST", _path(namespace), body=scaled_object(NAME))
    executor = Executor(kube_api, EventRecorder(kube_api, instance="test"))
    executor.objects = cache.objects

    async def listed() -> bool:
        objects = cache.objects() or {}
        return any(
            o.kind is ObjectKind.SCALED_OBJECT and o.target == NAME
            for o in objects.get(namespace, ())
        )

    await eventually(listed, what="the ScaledObject in the cache")

    # A step would be undone by KEDA's HPA: refused, nothing changed.
    names = sorted(await pod_names(kube_api, namespace))
    figures: dict[str, float | None] = {names[0]: 1.0, names[1]: 0.0, names[2]: 0.0}
    [refused] = await executor.apply(plan_of(consolidation(obj, figures)))
    assert refused.outcome is ActionOutcome.CONFLICT
    assert refused.error is not None and f"KEDA ScaledObject {NAME}" in refused.error
    assert (await get_deployment(kube_api, namespace, NAME))["spec"]["replicas"] == 3

    # A scale to 0 pauses it first, marked as rainbowd's.
    fresh = await get_deployment(kube_api, namespace, NAME)
    [scaled] = await executor.apply(plan_of(action_for(fresh, ActionKind.SCALE, Reason.DRAINED)))
    assert scaled.outcome is ActionOutcome.OK, scaled.error
    so = await request_json(kube_api, "GET", _path(namespace, NAME))
    assert so["metadata"]["annotations"][KEDA_PAUSED_REPLICAS] == "0"
    assert so["metadata"]["annotations"][PAUSED_BY_RAINBOWD] == "true"
    assert (await get_deployment(kube_api, namespace, NAME))["spec"]["replicas"] == 0

    # A rollback's restore lifts it.
    said = await restore(kube_api, namespace, NAME)
    assert said == [f"ScaledObject {NAME}: resumed (rainbowd's pause lifted)"]
    so = await request_json(kube_api, "GET", _path(namespace, NAME))
    annotations = so["metadata"].get("annotations") or {}
    assert KEDA_PAUSED_REPLICAS not in annotations and PAUSED_BY_RAINBOWD not in annotations


async def test_restore_leaves_a_pause_someone_else_set(
    kube_api: ApiClient,
    namespace: str,
    cache: ClusterCache,  # noqa: F811 (the fixture imported above)
) -> None:
    await create_deployment(kube_api, namespace, "chat", "c0c0c0", replicas=1)
    body = scaled_object(NAME)
    body["metadata"]["annotations"] = {KEDA_PAUSED_REPLICAS: "2"}
    await request_json(kube_api, "POST", _path(namespace), body=body)
    assert await restore(kube_api, namespace, NAME) == []
    so = await request_json(kube_api, "GET", _path(namespace, NAME))
    assert so["metadata"]["annotations"][KEDA_PAUSED_REPLICAS] == "2"
