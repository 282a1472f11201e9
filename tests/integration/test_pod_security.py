"""Every install variant runs in a namespace that enforces Pod Security `restricted`, judged by the
real apiserver's PodSecurity admission (on by default): k8s/base, k8s/namespaced and the chart
(both modes) are applied into such a namespace, and rainbowd's pods are admitted and run (kwok).
The same install with `runAsNonRoot` taken out is refused with the admission's own message, so
the check can fail."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from rainbowd_sandbox.controlplane import ControlPlane
from tests.installtools import helm_template, kubectl_as_admin, kustomize

pytestmark = pytest.mark.cluster

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
NAMESPACED_CHART = (
    "--set",
    "namespaced.enabled=true",
    "--set",
    "namespaced.namespaces={team-a,team-b}",
)
ROLLOUT_TIMEOUT = 120.0

Render = Callable[[str], list[dict[str, Any]]]


def _from_kustomize(folder: str) -> Render:
    """The folder's objects that live in rainbowd's namespace, moved to `namespace`."""

    def render(namespace: str) -> list[dict[str, Any]]:
        docs = [d for d in kustomize(folder) if d["metadata"].get("namespace") == "rainbowd"]
        for doc in docs:
            doc["metadata"]["namespace"] = namespace
        return docs

    return render


def _from_chart(*values: str) -> Render:
    """The chart installed into `namespace` (less the Prometheus Operator's objects, whose CRDs
    this control plane need not serve), only the objects of that namespace."""

    def render(namespace: str) -> list[dict[str, Any]]:
        docs = helm_template(*values, "--set", "monitoring.enabled=false", namespace=namespace)
        return [d for d in docs if d["metadata"].get("namespace") == namespace]

    return render


VARIANTS = {
    "k8s/base": _from_kustomize("k8s/base"),
    "k8s/namespaced": _from_kustomize("k8s/namespaced"),
    "chart": _from_chart(),
    "chart-namespaced": _from_chart(*NAMESPACED_CHART),
}


@pytest.fixture
def restricted_namespace(cluster_full: ControlPlane) -> Iterator[str]:
    """A fresh namespace labelled to enforce Pod Security `restricted`, deleted afterwards."""
    name = f"psa-{uuid.uuid4().hex[:10]}"
    cluster_full.request(
        "POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": RESTRICTED}}
    )
    try:
        yield name
    finally:
        cluster_full.ensure_running()
        cluster_full.delete_namespace(name)


def _without_run_as_non_root(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same objects with the Deployment's `runAsNonRoot` taken out, wherever it stands."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    for context in [pod.get("securityContext") or {}] + [
        c.get("securityContext") or {} for c in pod["containers"]
    ]:
        context.pop("runAsNonRoot", None)
    return docs


def _refusal(cluster: ControlPlane, namespace: str) -> str | None:
    """The message of a ReplicaSet's failure to create its pods (the admission's refusal)."""
    sets: Any = cluster.request("GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets")
    for replica_set in sets["items"]:
        for cond in replica_set.get("status", {}).get("conditions") or []:
            if cond["type"] == "ReplicaFailure" and cond["status"] == "True":
                return str(cond["message"])
    return None


def _running_and_ready(cluster: ControlPlane, namespace: str) -> int:
    pods: Any = cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods")
    return sum(
        1
        for p in pods["items"]
        if p["status"].get("phase") == "Running"
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or []
        )
    )


def _install(cluster: ControlPlane, namespace: str, docs: list[dict[str, Any]]) -> str | None:
    """Applies `docs` and waits for the Deployment: None once every replica's pod is Running and
    Ready, else the message of the ReplicaSet's failure to create pods."""
    kubectl_as_admin(
        cluster, "apply", "--server-side", "--filename=-", stdin=yaml.safe_dump_all(docs)
    )
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment['metadata']['name']}"
    want = deployment["spec"]["replicas"]
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while True:
        refusal = _refusal(cluster, namespace)
        if refusal is not None:
            return refusal
        running = _running_and_ready(cluster, namespace)
        status = cluster.request("GET", path).get("status", {})
        if running == want and status.get("readyReplicas") == want:
            return None
        assert time.monotonic() < deadline, (
            f"{path}: {running} of {want} pods running after {ROLLOUT_TIMEOUT:.0f}s: {status}"
        )
        time.sleep(0.2)


def test_k8s_base_s_namespace_enforces_restricted() -> None:
    (namespace,) = [d for d in kustomize("k8s/base") if d["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"] == RESTRICTED


@pytest.mark.cluster_full
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_runs_where_restricted_is_enforced(
    cluster_full: ControlPlane, restricted_namespace: str, variant: str
) -> None:
    docs = VARIANTS[variant](restricted_namespace)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "NetworkPolicy"} <= kinds, kinds
    assert _install(cluster_full, restricted_namespace, docs) is None


@pytest.mark.cluster_full
@pytest.mark.parametrize("variant", ["k8s/base", "chart"])
def test_a_pod_that_may_run_as_root_is_refused_there(
    cluster_full: ControlPlane, restricted_namespace: str, variant: str
) -> None:
    """The check above can fail: without `runAsNonRoot` the admission refuses every pod."""
    docs = _without_run_as_non_root(VARIANTS[variant](restricted_namespace))
    refusal = _install(cluster_full, restricted_namespace, docs)
    assert refusal is not None
    assert 'violates PodSecurity "restricted:latest"' in refusal, refusal
    assert "runAsNonRoot" in refusal, refusal
    pods: Any = cluster_full.request("GET", f"/api/v1/namespaces/{restricted_namespace}/pods")
    assert pods["items"] == []
