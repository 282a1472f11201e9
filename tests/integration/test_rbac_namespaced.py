"""The namespaced variant (k8s/namespaced) gives rainbowd enough in the namespaces it lists and
nothing anywhere else, checked by the real apiserver as in test_rbac.py; and it holds nothing
cluster-scoped, so a team without cluster-admin can apply it."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml

from rainbowd.cli import build_parser
from rainbowd.settings import settings_from_args
from rainbowd_sandbox.controlplane import ControlPlane
from tests.installtools import ADDON_ROLES, install_namespaced_rbac, kustomize
from tests.integration.test_rbac import NEEDED, SA, _allowed

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
MANAGED = ("team-a", "team-b")
# What rainbowd does to apps (test_rbac's list, less its own namespace's ConfigMap and Lease).
APP_NEEDS = [attrs for attrs in NEEDED if attrs.get("namespace", "") != "rainbowd"]
# All of it in each managed namespace.
IN_NAMESPACE = [{**attrs, "namespace": ns} for ns in MANAGED for attrs in APP_NEEDS]
# In its own namespace: its policy ConfigMap and its Lease, as in the cluster-wide variant.
OWN = [attrs for attrs in NEEDED if attrs.get("namespace") == "rainbowd"]
FORBIDDEN = [
    # None of it cluster-wide, nor in a namespace it does not manage.
    *({**attrs, "namespace": ""} for attrs in APP_NEEDS),
    *({**attrs, "namespace": "chat"} for attrs in APP_NEEDS),
    dict(verb="list", resource="namespaces"),
    # And in its own namespaces no more than the cluster-wide variant has.
    dict(verb="create", resource="deployments", group="apps", namespace="team-a"),
    dict(verb="update", resource="deployments", group="apps", namespace="team-a", name="x"),
    dict(verb="delete", resource="pods", namespace="team-a", name="p"),
    dict(verb="patch", resource="services", namespace="team-b", name="chat"),
    dict(verb="get", resource="secrets", namespace="team-b", name="s"),
    dict(verb="list", resource="configmaps", namespace="team-a"),
    dict(verb="get", resource="configmaps", namespace="rainbowd", name="other"),
]


def _ids(attrs: dict[str, str]) -> str:
    sub = f"/{attrs['subresource']}" if attrs.get("subresource") else ""
    return f"{attrs['verb']}-{attrs['resource']}{sub}-{attrs.get('namespace') or 'cluster'}"


@pytest.fixture(scope="module")
def namespaced(cluster: ControlPlane) -> ControlPlane:
    install_namespaced_rbac(cluster, keda=True)
    return cluster


def test_the_variant_holds_nothing_cluster_scoped() -> None:
    docs = kustomize("k8s/namespaced")
    assert all(d["metadata"].get("namespace") for d in docs), [
        f"{d['kind']}/{d['metadata']['name']}" for d in docs if not d["metadata"].get("namespace")
    ]
    roles = {(d["kind"], d["metadata"]["namespace"]) for d in docs if d["kind"].startswith("Role")}
    assert {("Role", ns) for ns in MANAGED} <= roles
    assert {("RoleBinding", ns) for ns in MANAGED} <= roles
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespaces={','.join(MANAGED)}" in args


def test_the_deployment_runs_rainbowd_on_what_its_roles_cover() -> None:
    """Its args, read by rainbowd's own parser: the listed namespaces (each with its Role), and
    the policy ConfigMap and Lease its own namespace's Role names."""
    deployment = next(d for d in kustomize("k8s/namespaced") if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    settings = settings_from_args(build_parser().parse_args(args), {})
    assert tuple(settings.namespaces) == MANAGED
    policy = settings.policy
    assert (policy.configmap_namespace, policy.configmap_name) == ("rainbowd", "rainbowd-policy")
    assert settings.leader_elect
    assert (settings.lease_namespace, settings.lease_name) == ("rainbowd", "rainbowd")
    own = {(a["resource"], a.get("name")) for a in OWN}
    assert {("configmaps", "rainbowd-policy"), ("leases", "rainbowd")} <= own, own


def test_the_app_roles_grant_what_the_cluster_role_grants() -> None:
    """The per-namespace Roles are the ClusterRole of k8s/base, rule for rule: the variant's
    own, and keda-role.yaml's and argo-rollouts-role.yaml's for KEDA's and Argo Rollouts'
    objects (which Kubernetes' admin role does not hold, so a namespace admin could not apply
    them; applied apart where the add-on runs)."""
    base = list(yaml.safe_load_all((ROOT / "k8s" / "base" / "rbac.yaml").read_text()))
    cluster_role = next(d for d in base if d["kind"] == "ClusterRole")
    groups = {"keda-role.yaml": "keda.sh", "argo-rollouts-role.yaml": "argoproj.io"}
    assert set(groups) == set(ADDON_ROLES)
    for ns in MANAGED:
        [own] = [
            d["rules"]
            for d in kustomize("k8s/namespaced")
            if d["kind"] == "Role" and d["metadata"]["namespace"] == ns
        ]
        addons = []
        for name, group in groups.items():
            docs = list(yaml.safe_load_all((ROOT / "k8s" / "namespaced" / name).read_text()))
            [addon] = [
                d["rules"] for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == ns
            ]
            assert all(r["apiGroups"] == [group] for r in addon), addon
            assert not any(group in r["apiGroups"] for r in own), own
            addons += addon
        assert sorted(map(repr, own + addons)) == sorted(map(repr, cluster_role["rules"])), ns


@pytest.mark.parametrize("attrs", [*IN_NAMESPACE, *OWN], ids=_ids)
def test_service_account_may(namespaced: ControlPlane, attrs: dict[str, str]) -> None:
    assert _allowed(namespaced, **attrs), f"k8s/namespaced does not allow {attrs}"


@pytest.mark.parametrize("attrs", FORBIDDEN, ids=_ids)
def test_service_account_may_not(namespaced: ControlPlane, attrs: dict[str, str]) -> None:
    assert not _allowed(namespaced, **attrs), f"k8s/namespaced allows more than needed: {attrs}"


@pytest.mark.parametrize(
    "path",
    ["/apis/apps/v1/deployments", "/apis/apps/v1/namespaces/chat/deployments"],
    ids=["cluster-wide", "elsewhere"],
)
def test_impersonated_reads_outside_its_namespaces_are_refused(
    namespaced: ControlPlane, path: str
) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        namespaced.request("GET", path, headers={"Impersonate-User": SA})
    assert err.value.code == 403


def test_impersonated_read_in_its_namespace_is_allowed(namespaced: ControlPlane) -> None:
    listing: Any = namespaced.request(
        "GET", "/apis/apps/v1/namespaces/team-a/deployments", headers={"Impersonate-User": SA}
    )
    assert listing["kind"] == "DeploymentList"
