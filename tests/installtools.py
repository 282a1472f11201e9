"""The tools the install tests run, built by tests/cluster/build: kubectl (with the control plane),
Helm and the Prometheus Operator's CRDs (an entry of the build cache). A missing one fails the
test with the command that builds it; nothing is skipped."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from rainbowd_sandbox import buildcache
from rainbowd_sandbox.controlplane import ControlPlane, default_binaries_dir

ROOT = Path(__file__).resolve().parents[1]
BUILD = "tests/cluster/build"
# Labels Helm charts put on objects for Helm's own bookkeeping; kustomize has no such thing.
HELM_LABELS = (
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
)


def _present(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.fail(f"{what} is missing at {path}: run `{BUILD}` (or `make setup`)", pytrace=False)
    return path


def _tools() -> Path:
    """The build cache's entry of the tools, for the versions pinned in tests/cluster/versions."""
    return buildcache.entry("tools", root=ROOT)


def helm() -> Path:
    return _present(_tools() / "helm", "helm")


def kubectl() -> Path:
    return _present(default_binaries_dir() / "kubectl", "kubectl")


def operator_crds() -> list[Path]:
    """The CRDs of the Operator objects rainbowd ships."""
    folder = _tools() / "prometheus-operator"
    return [
        _present(folder / f"monitoring.coreos.com_{plural}.yaml", "the Prometheus Operator CRDs")
        for plural in ("prometheusrules", "servicemonitors", "podmonitors")
    ]


def run(
    argv: Iterable[str | Path], *, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A tool's run (with `stdin` as its input), with its output in the failure message."""
    args = [str(a) for a in argv]
    result = subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(folder: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a folder of the repository."""
    return documents(run([kubectl(), "kustomize", ROOT / folder]).stdout)


def helm_template(
    *args: str, release: str = "rainbowd", namespace: str = "rainbowd"
) -> list[dict[str, Any]]:
    """`helm template RELEASE charts/rainbowd -n NAMESPACE ARGS...`."""
    argv: list[str | Path] = [helm(), "template", release, ROOT / "charts" / "rainbowd"]
    argv += ["-n", namespace, *args]
    return documents(run(argv).stdout)


Key = tuple[str, str, str, str]


def normalised(docs: Iterable[Mapping[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Objects by (apiVersion, kind, namespace, name), less Helm's bookkeeping labels; YAML
    strings inside ConfigMaps compare as text, everything else as parsed values."""
    out: dict[Key, dict[str, Any]] = {}
    for doc in docs:
        obj = _without_helm_labels(yaml.safe_load(yaml.safe_dump(dict(doc))))  # a deep copy
        meta = obj["metadata"]
        if not meta.get("labels"):
            meta.pop("labels", None)
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in out, f"twice: {key}"
        out[key] = obj
    return out


def _without_helm_labels(node: Any) -> Any:
    """`node` less Helm's bookkeeping labels wherever they stand: metadata, selectors, templates."""
    if isinstance(node, dict):
        return {k: _without_helm_labels(v) for k, v in node.items() if k not in HELM_LABELS}
    if isinstance(node, list):
        return [_without_helm_labels(v) for v in node]
    return node


def kubectl_as_admin(
    cluster: ControlPlane, *args: str | Path, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl against the test control plane, as its admin (or whom `--as=` names)."""
    return run([kubectl(), f"--kubeconfig={cluster.kubeconfig}", *args], check=check, stdin=stdin)


def ensure_namespaces(cluster: ControlPlane, names: Iterable[str]) -> None:
    """Create the namespaces that do not exist yet (tests of a session share them)."""
    for name in names:
        try:
            cluster.create_namespace(name)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise


# The namespaced variant's Roles for add-ons' objects, applied apart where the add-on runs.
ADDON_ROLES = ("keda-role.yaml", "argo-rollouts-role.yaml")


def install_namespaced_rbac(
    cluster: ControlPlane, *, as_user: str | None = None, keda: bool = False
) -> list[dict[str, Any]]:
    """The namespaced variant's ServiceAccount, Roles and RoleBindings, applied as they render,
    with the namespaces they live in. A cluster holds one variant: the cluster-wide one's
    ClusterRoleBinding (another test may have applied k8s/base) is removed first, so that the
    ServiceAccount has only its Roles' permissions. `as_user` applies them as that user rather
    than the admin. Returns the applied objects."""
    kubectl_as_admin(
        cluster, "delete", "clusterrolebinding", "rainbowd", "--ignore-not-found", "--wait"
    )
    docs = [
        d
        for d in kustomize("k8s/namespaced")
        if d["kind"] in ("ServiceAccount", "Role", "RoleBinding")
    ]
    if keda:
        # The variant's add-on Roles, applied apart where KEDA and Argo Rollouts run
        # (k8s/namespaced/keda-role.yaml, argo-rollouts-role.yaml).
        for name in ADDON_ROLES:
            docs += list(yaml.safe_load_all((ROOT / "k8s/namespaced" / name).read_text()))
    ensure_namespaces(cluster, sorted({d["metadata"]["namespace"] for d in docs}))
    as_user_flag = [f"--as={as_user}"] if as_user else []
    kubectl_as_admin(
        cluster,
        *as_user_flag,
        "apply",
        "--server-side",
        "--filename=-",
        stdin=yaml.safe_dump_all(docs),
    )
    return docs


def service_account_kubeconfig(
    cluster: ControlPlane, path: Path, *, namespace: str = "rainbowd", name: str = "rainbowd"
) -> Path:
    """A kubeconfig holding a fresh token of the ServiceAccount (TokenRequest): whoever uses it
    is that ServiceAccount to the apiserver, with exactly its RBAC."""
    review = cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    user = f"{namespace}-{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": user, "user": {"token": review["status"]["token"]}}],
        "contexts": [
            {"name": user, "context": {"cluster": admin["clusters"][0]["name"], "user": user}}
        ],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def go_module_dir(module: str, *, toolchain: str = "local") -> Path:
    """`module@version`'s source, from the module proxy into the build cache's module cache (Go
    `toolchain`: the module may require a newer one than this machine's)."""
    env = {
        **os.environ,
        "GOMODCACHE": str(buildcache.cache_root() / "go" / "mod"),
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": toolchain,
    }
    done = subprocess.run(
        ["go", "mod", "download", "-json", module],
        capture_output=True,
        text=True,
        env=env,
        cwd=buildcache.cache_root(),
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"go mod download {module}: {done.stdout}{done.stderr}", pytrace=False)
    return Path(json.loads(done.stdout)["Dir"])
