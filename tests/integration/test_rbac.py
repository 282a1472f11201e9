"""The RBAC in k8s/base is enough for rainbowd and no more, checked by the real apiserver.

The manifests are applied as they ship; each question is asked as the ServiceAccount itself
(impersonation), so the apiserver's RBAC authorizer gives the answer, not our reading of YAML.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml

from rainbowd_sandbox.controlplane import ControlPlane

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SA = "system:serviceaccount:rainbowd:rainbowd"

# Where each kind of the base manifests is created.
_PATHS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


def _apply(cluster: ControlPlane, doc: dict[str, Any]) -> None:
    ns = doc["metadata"].get("namespace", "")
    try:
        cluster.request("POST", _PATHS[doc["kind"]].format(ns=ns), doc)
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # already there from an earlier test of the session
            raise


@pytest.fixture(scope="module")
def rbac_applied(cluster: ControlPlane) -> ControlPlane:
    for name in ("namespace.yaml", "serviceaccount.yaml", "rbac.yaml"):
        for doc in yaml.safe_load_all((ROOT / "k8s" / "base" / name).read_text()):
            _apply(cluster, doc)
    return cluster


def _allowed(
    cluster: ControlPlane,
    *,
    verb: str,
    resource: str,
    group: str = "",
    namespace: str = "",
    name: str = "",
    subresource: str = "",
) -> bool:
    review = cluster.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": SA,
                "groups": ["system:serviceaccounts", "system:serviceaccounts:rainbowd"],
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                    "namespace": namespace,
                    "name": name,
                },
            },
        },
    )
    return bool(review["status"].get("allowed"))


# What rainbowd does: the watch cache, the executor, Events, its policy and its Lease.
NEEDED = [
    dict(verb="list", resource="deployments", group="apps"),
    dict(verb="watch", resource="deployments", group="apps"),
    dict(verb="patch", resource="deployments", group="apps", namespace="chat", name="chat-3c3fdc"),
    # After a scale meets a conflict, the executor reads the Deployment again.
    dict(verb="get", resource="deployments", group="apps", namespace="chat", name="chat-3c3fdc"),
    dict(verb="delete", resource="deployments", group="apps", namespace="chat", name="x"),
    dict(
        verb="patch",
        resource="deployments",
        group="apps",
        namespace="chat",
        name="x",
        subresource="scale",
    ),
    dict(verb="list", resource="services"),
    dict(verb="watch", resource="services"),
    dict(verb="list", resource="pods"),
    dict(verb="watch", resource="pods"),
    dict(verb="patch", resource="pods", namespace="chat", name="p"),
    dict(verb="create", resource="events", group="events.k8s.io", namespace="chat"),
    # What scales a color or guards its pods: watched; an HPA lowered with a step (read fresh
    # first), a ScaledObject paused with a scale to 0.
    dict(verb="list", resource="horizontalpodautoscalers", group="autoscaling"),
    dict(verb="watch", resource="horizontalpodautoscalers", group="autoscaling"),
    dict(
        verb="get",
        resource="horizontalpodautoscalers",
        group="autoscaling",
        namespace="chat",
        name="chat-3c3fdc",
    ),
    dict(
        verb="patch",
        resource="horizontalpodautoscalers",
        group="autoscaling",
        namespace="chat",
        name="chat-3c3fdc",
    ),
    dict(verb="list", resource="poddisruptionbudgets", group="policy"),
    dict(verb="watch", resource="poddisruptionbudgets", group="policy"),
    dict(verb="list", resource="scaledobjects", group="keda.sh"),
    dict(verb="watch", resource="scaledobjects", group="keda.sh"),
    dict(verb="patch", resource="scaledobjects", group="keda.sh", namespace="chat", name="x"),
    # Argo Rollouts and their ReplicaSets: watched; a ReplicaSet annotated (its deadline), read
    # fresh first.
    dict(verb="list", resource="rollouts", group="argoproj.io"),
    dict(verb="watch", resource="rollouts", group="argoproj.io"),
    dict(verb="list", resource="replicasets", group="apps"),
    dict(verb="watch", resource="replicasets", group="apps"),
    dict(verb="get", resource="replicasets", group="apps", namespace="chat", name="chat-6d4f"),
    dict(verb="patch", resource="replicasets", group="apps", namespace="chat", name="chat-6d4f"),
    dict(verb="watch", resource="configmaps", namespace="rainbowd", name="rainbowd-policy"),
    dict(verb="list", resource="configmaps", namespace="rainbowd", name="rainbowd-policy"),
    dict(verb="create", resource="leases", group="coordination.k8s.io", namespace="rainbowd"),
    dict(
        verb="get",
        resource="leases",
        group="coordination.k8s.io",
        namespace="rainbowd",
        name="rainbowd",
    ),
    dict(
        verb="update",
        resource="leases",
        group="coordination.k8s.io",
        namespace="rainbowd",
        name="rainbowd",
    ),
]

# What it must not be able to do: change what runs, read secrets, touch other config.
FORBIDDEN = [
    dict(verb="create", resource="deployments", group="apps", namespace="chat"),
    dict(verb="update", resource="deployments", group="apps", namespace="chat", name="x"),
    dict(verb="delete", resource="pods", namespace="chat", name="p"),
    dict(verb="patch", resource="services", namespace="chat", name="chat"),
    dict(verb="get", resource="secrets", namespace="chat", name="s"),
    dict(verb="list", resource="secrets"),
    dict(verb="list", resource="configmaps", namespace="chat"),
    dict(verb="get", resource="configmaps", namespace="rainbowd", name="other"),
    dict(verb="update", resource="configmaps", namespace="rainbowd", name="rainbowd-policy"),
    dict(
        verb="update",
        resource="leases",
        group="coordination.k8s.io",
        namespace="rainbowd",
        name="someone-elses",
    ),
    dict(verb="delete", resource="namespaces", name="chat"),
    # Watched, lowered or paused, never made or removed: that is the deploy's (the user's).
    dict(verb="create", resource="horizontalpodautoscalers", group="autoscaling", namespace="c"),
    dict(verb="delete", resource="horizontalpodautoscalers", group="autoscaling", namespace="c"),
    dict(verb="patch", resource="poddisruptionbudgets", group="policy", namespace="c", name="p"),
    dict(verb="delete", resource="poddisruptionbudgets", group="policy", namespace="c", name="p"),
    dict(verb="delete", resource="scaledobjects", group="keda.sh", namespace="c", name="x"),
    dict(verb="list", resource="scaledjobs", group="keda.sh"),
    # A Rollout's ReplicaSets are Argo Rollouts' to scale and delete: only their deadline is ours.
    dict(verb="delete", resource="replicasets", group="apps", namespace="c", name="x"),
    dict(
        verb="patch",
        resource="replicasets",
        group="apps",
        namespace="c",
        name="x",
        subresource="scale",
    ),
    dict(verb="patch", resource="rollouts", group="argoproj.io", namespace="c", name="x"),
    dict(verb="delete", resource="rollouts", group="argoproj.io", namespace="c", name="x"),
]


@pytest.mark.parametrize("attrs", NEEDED, ids=lambda a: f"{a['verb']}-{a['resource']}")
def test_service_account_may(rbac_applied: ControlPlane, attrs: dict[str, str]) -> None:
    assert _allowed(rbac_applied, **attrs), f"k8s/base RBAC does not allow {attrs}"


@pytest.mark.parametrize("attrs", FORBIDDEN, ids=lambda a: f"{a['verb']}-{a['resource']}")
def test_service_account_may_not(rbac_applied: ControlPlane, attrs: dict[str, str]) -> None:
    assert not _allowed(rbac_applied, **attrs), f"k8s/base RBAC allows more than needed: {attrs}"


def test_impersonated_request_is_refused(rbac_applied: ControlPlane) -> None:
    """A real request as the ServiceAccount for something it lacks gets 403 from the apiserver."""
    with pytest.raises(urllib.error.HTTPError) as err:
        rbac_applied.request(
            "GET", "/api/v1/namespaces/rainbowd/secrets", headers={"Impersonate-User": SA}
        )
    assert err.value.code == 403
