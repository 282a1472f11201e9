"""Argo Rollouts in the tests: its real controller, built from its Go module at the version
tests/cluster/argo-rollouts/versions pins (a build-cache entry of its own, kind
"argo-rollouts"), run against the worker's control plane with the five CRDs of the same module;
and the few steps a test takes with a blueGreen Rollout.

The fixture `rollouts_controller` (module scope: import it into the test module, as
`from tests.rollouts import rollouts_controller  # noqa: F401 (a fixture)`) applies the CRDs,
starts `rollouts-controller`, waits until it serves, and stops it and deletes the CRDs at the
end. Each xdist worker has its own control plane and so its own controller.

A Rollout here is an app's blueGreen Rollout named `<app>` with the Services `<app>-active` and
`<app>-preview`; its pods are kwok's (`cluster_full`). Its colors are its ReplicaSets, named by
their `rollouts-pod-template-hash` label.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.kube.clients import MERGE_PATCH, request_json, resource_path
from rainbowd_sandbox import buildcache
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.procs import Process, ProcessError, free_port, wait_until
from tests.e2e.harness import eventually
from tests.integration.test_keda import CRD_PATH, install_crd

GROUP_VERSION = "argoproj.io/v1alpha1"
HASH_LABEL = "rollouts-pod-template-hash"
"""The label Argo Rollouts puts on a Rollout's ReplicaSets, their pods and its Services'
selectors: the color."""
SCALE_DOWN_DEADLINE = "scale-down-deadline"
"""The annotation (unprefixed) on an old ReplicaSet: when the controller scales it down."""
RESYNC_SECONDS = 900
"""The controller's --rollout-resync (its default): a Rollout is reconciled at least this often
without any event."""
STARTED = "Started controller"
"""What the controller logs once its informers have synced and its workers run."""
WITHIN = 120.0
"""Seconds a test waits for the controller: two shared cores, a busy control plane."""


def rollouts_entry() -> Path:
    """The controller binary and its CRDs, built once per version, script and Go."""
    try:
        return buildcache.ensure_addon("argo-rollouts")
    except buildcache.CacheError as exc:
        pytest.fail(f"Argo Rollouts' controller could not be built: {exc}", pytrace=False)


def _established(cluster: ControlPlane, name: str) -> bool | None:
    found = cluster.request("GET", f"{CRD_PATH}/{name}")
    conditions = (found.get("status") or {}).get("conditions") or []
    ok = any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
    return True if ok else None


@dataclass
class RolloutsController:
    """The running controller: its process (log in `process.log_path`) and when it started
    (time.monotonic()), which tells whether a resync can have happened yet."""

    process: Process
    started: float


@pytest.fixture(scope="module")
def rollouts_controller(
    cluster_full: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RolloutsController]:
    """`rollouts-controller` against this worker's control plane, every namespace, its CRDs
    applied; stopped and the CRDs deleted (their Rollouts with them) at the end."""
    entry = rollouts_entry()
    crds = [yaml.safe_load(p.read_text()) for p in sorted((entry / "crds").glob("*.yaml"))]
    folder = tmp_path_factory.mktemp("argo-rollouts")
    healthz = free_port()
    # One worker per queue (it shares two cores with the rest of the suite), free ports for its
    # health and metrics servers (another worker runs its own controller).
    argv = [
        str(entry / "bin" / "rollouts-controller"),
        f"--kubeconfig={cluster_full.kubeconfig}",
        "--leader-elect=false",
        "--namespaced=false",
        f"--rollout-resync={RESYNC_SECONDS}",
        f"--healthzPort={healthz}",
        f"--metricsPort={free_port()}",
        "--rollout-threads=1",
        "--experiment-threads=1",
        "--analysis-threads=1",
        "--service-threads=1",
        "--ingress-threads=1",
        "--ephemeral-metadata-threads=1",
    ]
    process = Process("rollouts-controller", argv, log_path=folder / "controller.log")
    try:
        for crd in crds:
            install_crd(cluster_full, crd)
        names = [crd["metadata"]["name"] for crd in crds]

        def established() -> bool | None:
            return True if all(_established(cluster_full, n) for n in names) else None

        wait_until(established, timeout=WITHIN, what="Argo Rollouts' CRDs established")
        started = time.monotonic()
        process.start()

        def ready() -> bool | None:
            # /healthz answers from the start; the workers start once every informer has
            # synced, which the controller logs.
            if STARTED not in process.log_path.read_text(errors="replace"):
                return None
            url = f"http://127.0.0.1:{healthz}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return True if resp.status == 200 else None
            except (urllib.error.URLError, OSError):
                return None

        wait_until(ready, timeout=WITHIN, what="ready", process=process, interval=0.2)
        yield RolloutsController(process=process, started=started)
    except ProcessError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        process.stop()
        for crd in crds:
            try:
                cluster_full.request("DELETE", f"{CRD_PATH}/{crd['metadata']['name']}")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:  # never created: the setup failed before it
                    raise


# --- a blueGreen Rollout -------------------------------------------------------------------


def rollout_path(namespace: str, name: str | None = None) -> str:
    return resource_path(GROUP_VERSION, "rollouts", namespace=namespace, name=name)


def image_of(app: str, revision: int) -> str:
    return f"registry.invalid/{app}:{revision}"


def rollout_body(
    app: str,
    *,
    replicas: int = 1,
    revision: int = 1,
    auto_promotion: bool = True,
    scale_down_delay: int = 600,
    revision_limit: int | None = None,
) -> dict[str, Any]:
    """A blueGreen Rollout `app` with Services `<app>-active` and `<app>-preview`; its pods are
    labelled `app: <app>` (Argo Rollouts adds the hash label)."""
    blue_green: dict[str, Any] = {
        "activeService": f"{app}-active",
        "previewService": f"{app}-preview",
        "autoPromotionEnabled": auto_promotion,
        "scaleDownDelaySeconds": scale_down_delay,
    }
    if revision_limit is not None:
        blue_green["scaleDownDelayRevisionLimit"] = revision_limit
    labels = {"app": app}
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Rollout",
        "metadata": {"name": app, "labels": labels},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image_of(app, revision)}]},
            },
            "strategy": {"blueGreen": blue_green},
        },
    }


def service_body(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


async def get_rollout(api: ApiClient, namespace: str, app: str) -> dict[str, Any]:
    return await request_json(api, "GET", rollout_path(namespace, app))


async def create_rollout(
    api: ApiClient,
    namespace: str,
    app: str,
    *,
    replicas: int = 1,
    auto_promotion: bool = True,
    scale_down_delay: int = 600,
    revision_limit: int | None = None,
) -> str:
    """The Services and the Rollout (revision 1), once its first ReplicaSet is active and the
    Rollout Healthy: that ReplicaSet's hash."""
    for name in (f"{app}-active", f"{app}-preview"):
        path = resource_path("v1", "services", namespace=namespace)
        await request_json(api, "POST", path, body=service_body(name, app))
    body = rollout_body(
        app,
        replicas=replicas,
        auto_promotion=auto_promotion,
        scale_down_delay=scale_down_delay,
        revision_limit=revision_limit,
    )
    await request_json(api, "POST", rollout_path(namespace), body=body)
    return await healthy(api, namespace, app)


async def healthy(api: ApiClient, namespace: str, app: str) -> str:
    """Waits until the Rollout has caught up with its spec, is Healthy and its active Service
    selects its current ReplicaSet, then that ReplicaSet's hash."""

    async def done() -> bool:
        obj = await get_rollout(api, namespace, app)
        status = obj.get("status") or {}
        current = status.get("currentPodHash")
        return bool(
            status.get("observedGeneration") == str(obj["metadata"]["generation"])
            and status.get("phase") == "Healthy"
            and current
            and status.get("stableRS") == current
            and await selected(api, namespace, f"{app}-active") == current
        )

    await eventually(done, within=WITHIN, what=f"Rollout {app} to be Healthy")
    hash_: str = (await get_rollout(api, namespace, app))["status"]["currentPodHash"]
    return hash_


async def paused(api: ApiClient, namespace: str, app: str) -> str:
    """Waits until a Rollout without auto-promotion holds its new ReplicaSet in preview (paused,
    the preview Service selecting it), then that ReplicaSet's hash."""

    async def holding() -> bool:
        obj = await get_rollout(api, namespace, app)
        status = obj.get("status") or {}
        reasons = [c.get("reason") for c in status.get("pauseConditions") or []]
        current = status.get("currentPodHash")
        return bool(
            status.get("observedGeneration") == str(obj["metadata"]["generation"])
            and "BlueGreenPause" in reasons
            and current
            and current != status.get("stableRS")
            and await selected(api, namespace, f"{app}-preview") == current
        )

    await eventually(holding, within=WITHIN, what=f"Rollout {app} to pause in preview")
    hash_: str = (await get_rollout(api, namespace, app))["status"]["currentPodHash"]
    return hash_


async def selected(api: ApiClient, namespace: str, service: str) -> str | None:
    """The hash a Service of the Rollout selects (None before the controller set it)."""
    path = resource_path("v1", "services", namespace=namespace, name=service)
    selector = (await request_json(api, "GET", path))["spec"].get("selector") or {}
    found = selector.get(HASH_LABEL)
    return str(found) if found is not None else None


async def roll(api: ApiClient, namespace: str, app: str, revision: int) -> str:
    """A new revision (a new image): the hash of the ReplicaSet the controller makes for it,
    once that ReplicaSet exists. Promotion is the Rollout's (auto) or `promote`'s."""
    before = (await get_rollout(api, namespace, app)).get("status", {}).get("currentPodHash")
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "image": image_of(app, revision)}]}
            }
        }
    }
    await request_json(
        api, "PATCH", rollout_path(namespace, app), body=patch, content_type=MERGE_PATCH
    )

    async def made() -> str | None:
        current = (await get_rollout(api, namespace, app)).get("status", {}).get("currentPodHash")
        if current and current != before and current in await replica_sets(api, namespace, app):
            return str(current)
        return None

    found: str = await eventually(made, within=WITHIN, what=f"{app}'s revision {revision}")
    return found


async def promote(api: ApiClient, namespace: str, app: str) -> None:
    """What `kubectl argo rollouts promote` does to a paused blueGreen Rollout: clears its
    pause conditions (status) and `spec.paused`."""
    path = rollout_path(namespace, app)
    status: dict[str, Any] = {"status": {"pauseConditions": None}}
    await request_json(api, "PATCH", f"{path}/status", body=status, content_type=MERGE_PATCH)
    spec: dict[str, Any] = {"spec": {"paused": False}}
    await request_json(api, "PATCH", path, body=spec, content_type=MERGE_PATCH)


async def replica_sets(api: ApiClient, namespace: str, app: str) -> dict[str, dict[str, Any]]:
    """The Rollout's ReplicaSets by their hash."""
    path = resource_path("apps/v1", "replicasets", namespace=namespace)
    listing = await request_json(api, "GET", path, query={"labelSelector": f"app={app}"})
    found: dict[str, dict[str, Any]] = {}
    for item in listing["items"]:
        owners = item["metadata"].get("ownerReferences") or []
        if any(o.get("kind") == "Rollout" and o.get("name") == app for o in owners):
            found[item["metadata"]["labels"][HASH_LABEL]] = item
    return found


async def reconciled(api: ApiClient, namespace: str, app: str) -> None:
    """One more reconcile of the Rollout, told apart from any before it: a change of its spec
    that touches neither its pods nor its ReplicaSets (`revisionHistoryLimit` one higher), then
    the wait until the controller has written the status of that generation. The controller
    reconciles the ReplicaSets before it writes the status, so what it does to them in that
    reconcile is done by then."""
    obj = await get_rollout(api, namespace, app)
    limit = int(obj["spec"].get("revisionHistoryLimit", 10)) + 1
    body = {"spec": {"revisionHistoryLimit": limit}}
    path = rollout_path(namespace, app)
    changed = await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)
    generation = str(changed["metadata"]["generation"])

    async def seen() -> bool:
        status = (await get_rollout(api, namespace, app)).get("status") or {}
        return bool(status.get("observedGeneration") == generation)

    await eventually(
        seen, within=WITHIN, what=f"Rollout {app} reconciled (generation {generation})"
    )
