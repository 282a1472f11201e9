"""rainbowd as users run it: the image (uid 65532, read-only root filesystem, the package's
version), the manifests' ServiceAccount and RBAC (no Secrets, no deleting Services), and two
leader-elected replicas where deleting the leader hands the work to the other, done once."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from rainbowd import __version__
from rainbowd_sandbox.images import Images
from rainbowd_sandbox.incluster import (
    NAMESPACE,
    SERVICE_ACCOUNT,
    Kubectl,
    live_page,
    rainbow_deploy,
)
from rainbowd_sandbox.node import Node
from rainbowd_sandbox.nodestory import APP, new_color, poll
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.node.conftest import figures
from tests.node.test_story import rainbowd_calls


@pytest.mark.e2e
def test_the_image_runs_as_65532_read_only_with_the_package_version(
    node: Node, node_images: Images, kubectl: Kubectl
) -> None:
    name = f"image-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            # No runAsUser: the uid is the image's own USER.
            "containers": [
                {
                    "name": "probe",
                    "image": node_images.rainbowd.ref,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c"],
                    "args": [
                        "id -u; if touch /probe 2>/dev/null; then echo writable; "
                        "else echo read-only; fi; rainbowd --version"
                    ],
                    "securityContext": {"readOnlyRootFilesystem": True},
                }
            ],
        },
    }
    kubectl.apply([pod], namespace="default")
    poll(
        lambda: kubectl.json("get", "pod", name)["status"].get("phase") == "Succeeded",
        what=f"pod {name} Succeeded",
    )
    assert kubectl("logs", name).splitlines() == ["65532", "read-only", f"rainbowd {__version__}"]
    kubectl("delete", "pod", name, "--wait=false")


@pytest.mark.e2e
def test_rainbowd_runs_with_its_service_account_which_cannot_read_secrets_or_delete_services(
    rainbowd_incluster: Kubectl,
) -> None:
    kubectl = rainbowd_incluster
    pods = kubectl.json("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=rainbowd")
    assert len(pods["items"]) == 2
    for pod in pods["items"]:
        assert pod["spec"]["serviceAccountName"] == "rainbowd"
        assert any(v.get("projected") for v in pod["spec"]["volumes"])  # its token, mounted

    def can(verb: str, resource: str) -> str:
        args = ("auth", "can-i", verb, resource, f"--as={SERVICE_ACCOUNT}", "--all-namespaces")
        return kubectl(*args, check=False).strip()

    assert can("get", "secrets") == "no"
    assert can("list", "secrets") == "no"
    assert can("delete", "services") == "no"
    assert can("patch", "services") == "no"
    assert can("delete", "deployments.apps") == "yes"
    assert can("patch", "deployments.apps/scale") == "yes"


@pytest.mark.e2e
def test_prometheus_finds_the_demo_pods_through_the_apiserver_and_scrapes_their_pod_ips(
    node_images: Images, kubectl: Kubectl, node_prometheus: PrometheusServer
) -> None:
    namespace = f"sd-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    color = new_color()
    rainbow_deploy(
        kubectl,
        namespace,
        color,
        image=node_images.rainbowd.ref,
        replicas=1,
        fixed_node_ports=False,
    )
    (pod,) = kubectl.json("get", "pods", "-n", namespace, "-l", f"app={APP},color={color}")["items"]
    ip = pod["status"]["podIP"]

    def scraped() -> dict[str, object] | None:
        for target in node_prometheus.targets():
            if target["labels"].get("namespace") == namespace and target["health"] == "up":
                found: dict[str, object] = target
                return found
        return None

    target = poll(scraped, what=f"a healthy target in {namespace}")
    assert target["scrapeUrl"] == f"http://{ip}:8080/metrics"
    discovered = target["discoveredLabels"]
    assert isinstance(discovered, dict)
    assert discovered["__meta_kubernetes_pod_ip"] == ip
    assert discovered["__meta_kubernetes_pod_name"] == pod["metadata"]["name"]
    # The app's own series, with the labels rainbowd's default connections query reads.
    samples = node_prometheus.wait_for(
        f'rainbow_open_connections{{namespace="{namespace}"}}', timeout=120
    )
    assert [(s.labels["app"], s.labels["color"], s.value) for s in samples] == [(APP, color, 0.0)]
    kubectl("delete", "namespace", namespace, "--wait=false")


def _lease(kubectl: Kubectl) -> dict[str, object]:
    spec: dict[str, object] = kubectl.json("get", "lease", "rainbowd", "-n", NAMESPACE)["spec"]
    return spec


def _when(stamp: object) -> float:
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


@pytest.mark.e2e
def test_deleting_the_leader_hands_the_burn_down_to_the_other_replica_done_once(
    node: Node, node_images: Images, rainbowd_incluster: Kubectl
) -> None:
    kubectl = rainbowd_incluster
    namespace = f"leader-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    old, new = new_color(), new_color()
    image = node_images.rainbowd.ref
    rainbow_deploy(kubectl, namespace, old, image=image, replicas=1, fixed_node_ports=False)
    rainbow_deploy(kubectl, namespace, new, image=image, replicas=1, fixed_node_ports=False)
    lease = poll(
        lambda: _lease(kubectl) if _lease(kubectl).get("holderIdentity") else None, what="a leader"
    )
    leader = str(lease["holderIdentity"])
    duration = float(str(lease["leaseDurationSeconds"]))
    deleted_at = time.time()
    kubectl("delete", "pod", leader, "-n", NAMESPACE, "--wait=false")

    def taken_over() -> dict[str, object] | None:
        now = _lease(kubectl)
        holder = now.get("holderIdentity")
        return now if holder and holder != leader else None

    after = poll(taken_over, what="another replica holding the lease")
    took = _when(after["acquireTime"]) - deleted_at
    figures["leader takeover after deleting the leader pod"] = f"{max(took, 0):.1f}s"
    # The old leader released the lease on SIGTERM: the other took it within the lease duration.
    assert took <= duration, json.dumps(after)

    # The new leader finishes the work: the old color drained (no connections), scaled to 0,
    # once: neither replica scaled it twice.
    def scaled_down() -> bool:
        found = kubectl.json("get", "deployment", f"{APP}-{old}", "-n", namespace)
        return int(found["spec"]["replicas"]) == 0

    poll(scaled_down, what=f"{APP}-{old} scaled down")
    calls = rainbowd_calls(node, namespace, f"{APP}-{old}")
    assert len([c for c in calls if c[1] == "scale"]) == 1, calls
    assert not [c for c in calls if c[0] == "delete"], calls
    assert (
        kubectl.json("get", "deployment", f"{APP}-{new}", "-n", namespace)["spec"]["replicas"] == 1
    )


@pytest.mark.e2e
def test_kubectl_rainbow_dashboard_and_status_reach_the_in_cluster_rainbowd(
    rainbowd_incluster: Kubectl, tmp_path: Path
) -> None:
    """`kubectl rainbow dashboard` as a user runs it: the real kubectl finds the plugin on PATH,
    which port-forwards to the rainbowd Service and opens the page in the user's browser ($BROWSER,
    here a script noting the address); Ctrl-C stops it and kubectl's forward with it."""
    kubectl = rainbowd_incluster
    pods = kubectl.json("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=rainbowd")
    names = {pod["metadata"]["name"] for pod in pods["items"]}
    path = os.pathsep.join([str(kubectl.binary.parent), str(Path(sys.executable).parent)])
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    # Builtins only: the plugin's PATH has kubectl's and Python's folders alone.
    browser.write_text(f'#!/bin/sh\nprintf %s "$1" > {opened}\n')
    browser.chmod(0o755)
    proc = subprocess.Popen(
        [str(kubectl.binary), "rainbow", "dashboard"],
        env={
            **os.environ,
            "PATH": path,
            "KUBECONFIG": str(kubectl.kubeconfig),
            "BROWSER": str(browser),
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches it
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        first = lines.get(timeout=120)
        found = re.match(r"rainbowd's live page: (http://127\.0\.0\.1:\d+/) ", first)
        assert found is not None, first
        url = found.group(1)
        deadline = time.monotonic() + 60
        while not (opened.exists() and opened.read_text()):
            assert time.monotonic() < deadline, "the page was not opened in the browser"
            time.sleep(0.1)
        assert opened.read_text() == url
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert answer.status == 200
            assert "<title>rainbowd</title>" in answer.read().decode()
        with urllib.request.urlopen(url + "status", timeout=30) as answer:
            assert json.load(answer)["identity"] in names
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    # Nothing of it is left: the plugin stopped kubectl's port-forward before it exited.
    leftover = subprocess.run(
        ["pgrep", "-g", str(proc.pid)], capture_output=True, text=True, check=False
    )
    assert leftover.stdout == "", leftover.stdout

    # `kubectl rainbow status` reads the same in-cluster rainbowd's plan, with no --url.
    status = subprocess.run(
        [str(kubectl.binary), "rainbow", "status"],
        env={**os.environ, "PATH": path, "KUBECONFIG": str(kubectl.kubeconfig)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    daemon = re.match(r"daemon:  (\S+)  leader=(yes|no)", status.stdout)
    assert daemon is not None and daemon.group(1) in names, status.stdout


@pytest.mark.e2e
def test_the_node_sandbox_forwards_the_live_page_it_prints(rainbowd_incluster: Kubectl) -> None:
    """`make run` on a real node prints the page's address before the story: the forward the
    sandbox keeps (rainbowd_sandbox.incluster.live_page) answers with the page and /status."""
    with live_page(rainbowd_incluster) as forward:
        assert forward.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(forward.url, timeout=30) as answer:
            assert answer.status == 200
            assert "<title>rainbowd</title>" in answer.read().decode()
        with urllib.request.urlopen(forward.url + "status", timeout=30) as answer:
            assert "identity" in json.load(answer)
        process = forward.process
    # Stopped with the block: nothing of it is left.
    assert process.poll() is not None
