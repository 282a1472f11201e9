"""rainbowd installed on a real node the way users install it, and the seed's app run as real pods:
`kubectl apply -k` of k8s/sandbox (k8s/ with the locally built image) plus the sandbox's Prometheus
URL and durations, and `k8s/demo/app.yaml` shipped one color at a time with `rainbowd deploy -f`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd import deploy as rainbow
from rainbowd import forwarding
from rainbowd.deploy import substitute_color
from rainbowd.forwarding import Forward
from rainbowd.kube.clients import ConfigError, KubeError, make_api_client
from rainbowd.policyfile import load_policy_text
from rainbowd_sandbox.controlplane import default_binaries_dir

_ROOT = Path(__file__).resolve().parents[2]
OVERLAY = _ROOT / "k8s" / "sandbox"
DEMO_APP = _ROOT / "k8s" / "demo" / "app.yaml"
SANDBOX_POLICY = _ROOT / "config" / "sandbox-policy.yaml"
NAMESPACE = "rainbowd"
DEPLOYMENT = "rainbowd"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:rainbowd"
ROLLOUT_TIMEOUT = "300s"
AVAILABLE_TIMEOUT = 300.0
"""Seconds `rainbowd deploy` and `rollback` wait for a color to be Available."""
DEMO_APP_NAME = "rainbow-deploys"
"""The app of k8s/demo/app.yaml."""


T = TypeVar("T")


class InClusterError(RuntimeError):
    """kubectl failed; the message has the command and its output."""


class Kubectl:
    """The pinned kubectl (tests/cluster/build) against one kubeconfig."""

    def __init__(self, kubeconfig: Path, *, binary: Path | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.binary = binary if binary is not None else default_binaries_dir() / "kubectl"

    def __call__(
        self, *args: str, input_text: str | None = None, check: bool = True, timeout: float = 360
    ) -> str:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        try:
            done = subprocess.run(
                argv, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError:
            raise InClusterError(f"{self.binary} missing; build it: tests/cluster/build") from None
        except subprocess.TimeoutExpired:
            raise InClusterError(f"kubectl {' '.join(args)}: no answer in {timeout:g}s") from None
        if check and done.returncode != 0:
            raise InClusterError(
                f"kubectl {' '.join(args)} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def apply(self, documents: Sequence[Mapping[str, Any]], *, namespace: str) -> None:
        # JSON, not YAML: a color such as 836e91 is a plain string to PyYAML but a float to the
        # YAML reader of kubectl, and a label value must be a string.
        items = {"apiVersion": "v1", "kind": "List", "items": list(documents)}
        self("apply", "-n", namespace, "-f", "-", input_text=json.dumps(items))


def pod_scrape_config(kubeconfig: Path, *, job: str = "pods") -> dict[str, Any]:
    """A Prometheus job finding pods as clusters do (kubernetes_sd_configs, role pod, through the
    apiserver) and scraping each pod's `http` port on its pod IP, with the app's own labels."""
    return {
        "job_name": job,
        "honor_labels": True,
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": "http",
                "action": "keep",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "Running",
                "action": "keep",
            },
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        ],
    }


def sandbox_policy_text(prometheus_url: str, **defaults: Any) -> str:
    """config/sandbox-policy.yaml with the node's Prometheus and the given defaults, validated."""
    document: dict[str, Any] = yaml.safe_load(SANDBOX_POLICY.read_text())
    document["prometheus"]["url"] = prometheus_url
    document["defaults"].update(defaults)
    text = yaml.safe_dump(document, sort_keys=False)
    load_policy_text(text, source="sandbox policy")
    return text


def write_overlay(folder: Path, *, policy: str, interval: str = "2s") -> Path:
    """A kustomization over k8s/sandbox with the policy ConfigMap's content and a short cycle."""
    folder.mkdir(parents=True, exist_ok=True)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "rainbowd-policy", "namespace": NAMESPACE},
        "data": {"policy.yaml": policy},
    }
    args_patch = [
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/args/-",
            "value": f"--interval={interval}",
        }
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(OVERLAY, folder)],
        "patches": [
            {"patch": yaml.safe_dump(configmap, sort_keys=False)},
            {
                "target": {"kind": "Deployment", "name": DEPLOYMENT},
                "patch": yaml.safe_dump(args_patch, sort_keys=False),
            },
        ],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return folder


def install(kubectl: Kubectl, *, policy: str, interval: str = "2s") -> None:
    """`kubectl apply -k` of the sandbox overlay; returns once the Deployment is rolled out."""
    with tempfile.TemporaryDirectory(prefix="rainbowd-overlay-") as tmp:
        overlay = write_overlay(Path(tmp), policy=policy, interval=interval)
        kubectl("apply", "-k", str(overlay))
    kubectl(
        "rollout",
        "status",
        f"deployment/{DEPLOYMENT}",
        "-n",
        NAMESPACE,
        f"--timeout={ROLLOUT_TIMEOUT}",
    )


@contextlib.contextmanager
def live_page(kubectl: Kubectl) -> Iterator[Forward]:
    """The installed rainbowd's live page on 127.0.0.1, through `kubectl port-forward` to its
    Service, as `kubectl rainbow dashboard` reaches it; kept for the block."""
    target = argparse.Namespace(
        kubeconfig=str(kubectl.kubeconfig),
        context=None,
        namespace=NAMESPACE,
        service=forwarding.SERVICE,
        kubectl=str(kubectl.binary),
        port=0,
    )
    with forwarding.forwarded(target) as forward:
        yield forward


def demo_template(*, image: str, fixed_node_ports: bool = True) -> str:
    """k8s/demo/app.yaml running the local image (never pulled), __COLOR__ kept: the template
    `rainbowd deploy -f` renders. Without `fixed_node_ports` the apiserver picks the node ports,
    so two namespaces can run the app."""
    documents = [d for d in yaml.safe_load_all(DEMO_APP.read_text()) if d]
    for document in documents:
        if document["kind"] == "Service" and not fixed_node_ports:
            for port in document["spec"]["ports"]:
                port.pop("nodePort", None)
        if document["kind"] == "Deployment":
            for container in document["spec"]["template"]["spec"]["containers"]:
                container["image"] = image
                container["imagePullPolicy"] = "Never"
    return yaml.safe_dump_all(documents, sort_keys=False)


def demo_documents(
    color: str, *, image: str, fixed_node_ports: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Service, Deployment) of `demo_template` for `color`."""
    text = demo_template(image=image, fixed_node_ports=fixed_node_ports)
    documents = [substitute_color(d, color) for d in yaml.safe_load_all(text)]
    service = next(d for d in documents if d["kind"] == "Service")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    return service, deployment


def rainbow_deploy(
    kubectl: Kubectl,
    namespace: str,
    color: str,
    *,
    image: str,
    replicas: int | None = None,
    fixed_node_ports: bool = True,
) -> None:
    """`rainbowd deploy -f` of the demo app's color with the node's kubeconfig, by the command's
    own code: the Deployment, Available, then the Service switched (created the first time)."""
    request = rainbow.DeployRequest(
        ref=rainbow.AppRef(namespace=namespace, app=DEMO_APP_NAME),
        color=color,
        template=demo_template(image=image, fixed_node_ports=fixed_node_ports),
        template_source=str(DEMO_APP.relative_to(_ROOT)),
        replicas=replicas,
        timeout=AVAILABLE_TIMEOUT,
    )

    async def body(api: ApiClient) -> None:
        await rainbow.deploy(api, request, say=lambda text: _say("deploy", text))

    _with_api(kubectl, f"rainbowd deploy of #{color}", body)


def rainbow_rollback(kubectl: Kubectl, namespace: str, *, to: str | None = None) -> str:
    """`rainbowd rollback` of the demo app with the node's kubeconfig, by the command's own code;
    returns the color the Service selects again."""
    ref = rainbow.AppRef(namespace=namespace, app=DEMO_APP_NAME)

    async def body(api: ApiClient) -> str:
        outcome = await rainbow.rollback(
            api, ref, to=to, within=AVAILABLE_TIMEOUT, say=lambda text: _say("rollback", text)
        )
        return outcome.color

    return _with_api(kubectl, "rainbowd rollback", body)


def _say(command: str, text: str) -> None:
    print(f"  rainbowd {command}: {text}", flush=True)


def _with_api(kubectl: Kubectl, what: str, body: Callable[[ApiClient], Awaitable[T]]) -> T:
    """`body`'s result, run with a client for the node's kubeconfig; its failure is an
    InClusterError."""

    async def main() -> T:
        api = await make_api_client(kubeconfig=str(kubectl.kubeconfig))
        try:
            return await body(api)
        finally:
            await api.close()

    try:
        return asyncio.run(main())
    except (rainbow.DeployError, KubeError, ConfigError) as exc:
        raise InClusterError(f"{what} failed: {exc}") from exc
