"""What `kubectl apply -k` installs is accepted by a real apiserver: the Prometheus Operator's CRDs
(from its Go module, pinned in tests/cluster/versions) are installed, then k8s/, k8s/monitoring
and k8s/namespaced are applied server-side as dry runs, so the apiserver validates every object
(the NetworkPolicy included), the Operator's ones against the CRDs' schemas. That the pods run
where Pod Security `restricted` is enforced: test_pod_security.py."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import yaml

from rainbowd_sandbox.controlplane import ControlPlane
from tests.installtools import (
    ensure_namespaces,
    helm_template,
    install_namespaced_rbac,
    kubectl_as_admin,
    kustomize,
    operator_crds,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ["k8s", "k8s/monitoring", "k8s/namespaced"]


@pytest.fixture(scope="module")
def with_crds(cluster: ControlPlane) -> ControlPlane:
    """The Operator's CRDs installed and served, and the namespaces the manifests use."""
    files = operator_crds()
    kubectl_as_admin(cluster, "apply", "--server-side", *(f"--filename={f}" for f in files))
    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    kubectl_as_admin(
        cluster,
        "wait",
        "--for=condition=Established",
        "--timeout=120s",
        *(f"crd/{name}" for name in names),
    )
    ensure_namespaces(cluster, ("rainbowd", "team-a", "team-b"))
    return cluster


def _dry_run(cluster: ControlPlane, manifest: str) -> subprocess.CompletedProcess[str]:
    return kubectl_as_admin(
        cluster,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--filename=-",
        check=False,
        stdin=manifest,
    )


def _dry_run_objects(
    cluster: ControlPlane, *source: str | Path, stdin: str | None = None
) -> list[dict[str, Any]]:
    """The objects the apiserver answers a server-side dry run of `source` (`-k DIR`, or
    `--filename=-` with `stdin`) with."""
    result = kubectl_as_admin(
        cluster,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--output=json",
        *source,
        stdin=stdin,
    )
    answered = json.loads(result.stdout)
    items: list[dict[str, Any]] = (
        answered["items"] if answered.get("kind") == "List" else [answered]
    )
    return items


def test_the_operator_kinds_are_served(with_crds: ControlPlane) -> None:
    resources: Any = with_crds.request("GET", "/apis/monitoring.coreos.com/v1")
    served = {r["name"] for r in resources["resources"]}
    assert {"prometheusrules", "servicemonitors", "podmonitors"} <= served


@pytest.mark.parametrize("folder", FOLDERS)
def test_server_side_dry_run_is_accepted(with_crds: ControlPlane, folder: str) -> None:
    docs = kustomize(folder)
    items = _dry_run_objects(with_crds, "-k", ROOT / folder)
    got = {(i["kind"], i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in items}
    want = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs}
    assert got == want
    # A dry run writes nothing: the objects the server answered with have no uid in etcd.
    if folder == "k8s/monitoring":
        kinds = {kind for kind, _, _ in got}
        assert {"PrometheusRule", "ServiceMonitor", "PodMonitor"} <= kinds
        listing = kubectl_as_admin(with_crds, "get", "prometheusrules", "-A", "-o", "json")
        assert json.loads(listing.stdout)["items"] == []


@pytest.mark.parametrize(
    ("kind", "break_it", "complaint"),
    [
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr"), "expr"),
        (
            "ServiceMonitor",
            lambda d: d["spec"]["endpoints"][0].update(interval="often"),
            "interval",
        ),
        (
            "PodMonitor",
            lambda d: d["spec"].update(podMetricsEndpoints="http"),
            "podMetricsEndpoints",
        ),
    ],
)
def test_a_broken_operator_object_is_refused(
    with_crds: ControlPlane, kind: str, break_it: Any, complaint: str
) -> None:
    """The dry run can fail: the CRDs' schemas refuse a malformed object."""
    doc = next(d for d in kustomize("k8s/monitoring") if d["kind"] == kind)
    assert _dry_run(with_crds, yaml.safe_dump(doc)).returncode == 0
    break_it(doc)
    result = _dry_run(with_crds, yaml.safe_dump(doc))
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_the_network_policy_is_validated_by_the_apiserver(with_crds: ControlPlane) -> None:
    """The NetworkPolicy k8s/base ships passes the apiserver's validation; one with a protocol
    Kubernetes does not know is refused, so the dry run does validate it."""
    doc = next(d for d in kustomize("k8s/base") if d["kind"] == "NetworkPolicy")
    accepted = _dry_run(with_crds, yaml.safe_dump(doc))
    assert accepted.returncode == 0, accepted.stderr
    doc["spec"]["egress"][-1]["ports"][0]["protocol"] = "ICMP"
    refused = _dry_run(with_crds, yaml.safe_dump(doc))
    assert refused.returncode != 0
    assert "spec.egress[2].ports[0].protocol" in refused.stderr, refused.stderr


@pytest.mark.cluster_full
def test_a_namespace_admin_can_install_the_namespaced_variant(
    with_crds: ControlPlane, cluster_full: ControlPlane
) -> None:
    """What the namespaced variant is for: someone who is only `admin` in rainbowd's namespace and
    the ones it manages (Kubernetes' own ClusterRole, bound per namespace) may apply it, Roles
    included (RBAC refuses a Role granting more than its creator holds)."""
    user = "team-lead"

    # The controller-manager aggregates edit and view into admin.
    def admin_aggregated() -> bool:
        role: Any = cluster_full.request(
            "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin"
        )
        return any("deployments" in rule.get("resources", []) for rule in role.get("rules") or [])

    deadline = time.monotonic() + 60
    while not admin_aggregated():
        assert time.monotonic() < deadline, "the admin ClusterRole was never aggregated"
        time.sleep(0.2)
    for ns in ("rainbowd", "team-a", "team-b"):
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-admin", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "admin",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        }
        try:
            with_crds.request(
                "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", binding
            )
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
    # A dry run cannot bind a Role that does not exist yet, so the RBAC is applied for real
    # (as every test of the variant does), then the whole variant as a dry run.
    install_namespaced_rbac(with_crds, as_user=user)
    namespaced = ROOT / "k8s" / "namespaced"
    result = kubectl_as_admin(
        with_crds, f"--as={user}", "apply", "--server-side", "--dry-run=server", "-k", namespaced
    )
    assert "serverside-applied (server dry run)" in result.stdout
    # The cluster-wide variant is not for them.
    refused = kubectl_as_admin(
        with_crds,
        f"--as={user}",
        "apply",
        "--server-side",
        "--dry-run=server",
        "-k",
        ROOT / "k8s",
        check=False,
    )
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr


def test_a_sharded_chart_render_is_accepted_by_the_apiserver(
    with_crds: ControlPlane, tmp_path: Path
) -> None:
    """Two shards of the chart, monitoring included, pass the apiserver's validation as a server
    dry run: each shard's Deployment and Service beside the shared objects."""
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "shards": [
                    {"name": "a", "namespaces": ["team-a"]},
                    {"name": "b", "namespaces": ["team-b"], "selector": "tier in (chat,xmpp)"},
                ]
            }
        )
    )
    docs = helm_template("-f", str(values))
    objects = _dry_run_objects(with_crds, "--filename=-", stdin=yaml.safe_dump_all(docs))
    got = {(i["kind"], i["metadata"]["name"]) for i in objects}
    assert {("Deployment", "rainbowd-a"), ("Deployment", "rainbowd-b")} <= got
    assert {("Service", "rainbowd-a"), ("Service", "rainbowd-b")} <= got
    assert len(got) == len(docs)
