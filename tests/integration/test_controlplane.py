"""The loopback control plane is a real Kubernetes: Deployments roll out on the kwok node and are
garbage-collected, Services switch and stream watch events, RBAC is enforced, the apiserver
restarts with its data, and no process outlives its ControlPlane."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from rainbowd_sandbox.controlplane import (
    FAKE_NODE,
    KUBERNETES_SERVICE_IP,
    ControlPlane,
    ControlPlaneError,
    kubernetes_version,
)
from rainbowd_sandbox.procs import Process, pid_alive, wait_until

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], *, within: float, what: str) -> T:
    """Polls an async check until it returns something other than None, or fails."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"not {what} within {within}s")
        await asyncio.sleep(0.1)


def live_pids() -> set[int]:
    """Every live (non-zombie) process on the machine, from /proc."""
    return {
        int(entry) for entry in os.listdir("/proc") if entry.isdigit() and pid_alive(int(entry))
    }


def deployment(name: str, *, app: str, color: str, replicas: int) -> k8s.V1Deployment:
    labels = {"app": app, "color": color}
    return k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name=name, labels=labels),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(
                    containers=[k8s.V1Container(name="app", image="registry.invalid/app:1")]
                ),
            ),
        ),
    )


@pytest.mark.cluster
def test_version_is_the_pinned_release(cluster: ControlPlane) -> None:
    version = cluster.request("GET", "/version")
    assert version["gitVersion"] == kubernetes_version()


@pytest.mark.cluster
def test_services_and_the_serving_certificate_use_the_benchmarking_range(
    cluster: ControlPlane,
) -> None:
    """Service IPs come from 198.19.0.0/16, and the apiserver's certificate carries the
    `kubernetes` Service's ClusterIP, the address pods use to reach it."""
    from cryptography import x509

    # The apiserver creates the Service itself, shortly after it reports ready.
    service = wait_until(
        lambda: cluster.request("GET", "/api/v1/namespaces/default/services/kubernetes"),
        timeout=60,
        what="the kubernetes Service",
    )
    assert service["spec"]["clusterIP"] == KUBERNETES_SERVICE_IP
    assert ipaddress.ip_address(KUBERNETES_SERVICE_IP) in ipaddress.ip_network("198.19.0.0/16")
    cert = x509.load_pem_x509_certificate(cluster.pki.serving_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    addresses = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", KUBERNETES_SERVICE_IP} <= addresses


@pytest.mark.cluster_full
async def test_deployment_becomes_available_then_is_garbage_collected(
    cluster_full: ControlPlane, namespace: str, kube_api: k8s.ApiClient
) -> None:
    apps = k8s.AppsV1Api(kube_api)
    core = k8s.CoreV1Api(kube_api)
    name = "chat-1a2b3c"
    await apps.create_namespaced_deployment(
        namespace, deployment(name, app="chat", color="1a2b3c", replicas=2)
    )

    async def available() -> k8s.V1Deployment | None:
        got = await apps.read_namespaced_deployment(name, namespace)
        conditions = {c.type: c.status for c in got.status.conditions or []}
        if got.status.ready_replicas == 2 and conditions.get("Available") == "True":
            return got
        return None

    await eventually(available, within=60, what="Available with 2 ready replicas")
    pods = (await core.list_namespaced_pod(namespace, label_selector="app=chat")).items
    assert len(pods) == 2
    assert {p.spec.node_name for p in pods} == {FAKE_NODE}
    assert all(p.status.phase == "Running" for p in pods)

    await apps.delete_namespaced_deployment(name, namespace)

    async def collected() -> bool | None:
        rs = (await apps.list_namespaced_replica_set(namespace, label_selector="app=chat")).items
        pods = (await core.list_namespaced_pod(namespace, label_selector="app=chat")).items
        return True if not rs and not pods else None

    await eventually(collected, within=60, what="ReplicaSet and Pods garbage-collected")


@pytest.mark.cluster
async def test_service_selector_switch_is_read_back_and_watched(
    namespace: str, kube_api: k8s.ApiClient
) -> None:
    core = k8s.CoreV1Api(kube_api)
    service = k8s.V1Service(
        metadata=k8s.V1ObjectMeta(name="chat"),
        spec=k8s.V1ServiceSpec(
            selector={"app": "chat", "color": "aaaaaa"},
            ports=[k8s.V1ServicePort(port=80, target_port=8080)],
        ),
    )
    created = await core.create_namespaced_service(namespace, service)
    seen: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    async def watch_services() -> None:
        async with k8s_watch.Watch() as watch:
            async for event in watch.stream(
                core.list_namespaced_service,
                namespace,
                resource_version=created.metadata.resource_version,
            ):
                if event["type"] == "MODIFIED":
                    await seen.put(event["object"].spec.selector)

    watcher = asyncio.create_task(watch_services())
    try:
        await core.patch_namespaced_service(
            "chat", namespace, {"spec": {"selector": {"app": "chat", "color": "bbbbbb"}}}
        )
        read = await core.read_namespaced_service("chat", namespace)
        assert read.spec.selector == {"app": "chat", "color": "bbbbbb"}
        selector = await asyncio.wait_for(seen.get(), timeout=20)
        assert selector == {"app": "chat", "color": "bbbbbb"}
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher


def _request_count(metrics: str, *, verb: str, resource: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if (
                sample.name == "apiserver_request_total"
                and sample.labels.get("verb") == verb
                and sample.labels.get("resource") == resource
            ):
                total += sample.value
    return total


@pytest.mark.cluster
def test_apiserver_request_total_counts_our_calls(cluster: ControlPlane, namespace: str) -> None:
    before = _request_count(cluster.apiserver_metrics(), verb="LIST", resource="configmaps")
    for _ in range(3):
        cluster.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
    after = _request_count(cluster.apiserver_metrics(), verb="LIST", resource="configmaps")
    # Controllers may list configmaps too, so at least our three calls, maybe more.
    assert after - before >= 3


@pytest.mark.cluster
async def test_rbac_forbids_an_unprivileged_service_account(
    cluster: ControlPlane, namespace: str, kube_api: k8s.ApiClient
) -> None:
    user = f"system:serviceaccount:{namespace}:nobody"
    nobody = k8s.ApiClient(
        kube_api.configuration, header_name="Impersonate-User", header_value=user
    )
    try:
        with pytest.raises(ApiException) as denied:
            await k8s.CoreV1Api(nobody).list_namespaced_pod(namespace)
        assert denied.value.status == 403

        # Granting the exact verb lets the same identity through, so the 403 above was RBAC.
        rbac = k8s.RbacAuthorizationV1Api(kube_api)
        await rbac.create_namespaced_role(
            namespace,
            k8s.V1Role(
                metadata=k8s.V1ObjectMeta(name="pod-reader"),
                rules=[k8s.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])],
            ),
        )
        await rbac.create_namespaced_role_binding(
            namespace,
            k8s.V1RoleBinding(
                metadata=k8s.V1ObjectMeta(name="pod-reader"),
                role_ref=k8s.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                ),
                subjects=[
                    k8s.RbacV1Subject(kind="ServiceAccount", name="nobody", namespace=namespace)
                ],
            ),
        )

        async def allowed() -> bool | None:
            try:
                await k8s.CoreV1Api(nobody).list_namespaced_pod(namespace)
            except ApiException as exc:
                if exc.status == 403:
                    return None
                raise
            return True

        await eventually(allowed, within=20, what="allowed after the RoleBinding")
        with pytest.raises(ApiException) as still_denied:
            await k8s.CoreV1Api(nobody).list_namespaced_service(namespace)
        assert still_denied.value.status == 403
    finally:
        await nobody.close()


@pytest.mark.cluster
def test_restart_apiserver_keeps_port_and_data(cluster: ControlPlane, namespace: str) -> None:
    server = cluster.server
    old_pid = cluster.process_ids()["kube-apiserver"]
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "kept"}, "data": {"color": "c0ffee"}},
    )
    cluster.restart_apiserver()
    assert cluster.server == server
    assert cluster.process_ids()["kube-apiserver"] != old_pid
    assert not pid_alive(old_pid)
    kept = cluster.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/kept")
    assert kept["data"] == {"color": "c0ffee"}


@pytest.mark.cluster
def test_restart_etcd_keeps_data(cluster: ControlPlane, namespace: str) -> None:
    cluster.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        {"metadata": {"name": "kept"}, "data": {"color": "0ddba1"}},
    )
    old_pid = cluster.process_ids()["etcd"]
    cluster.restart_etcd()
    assert cluster.process_ids()["etcd"] != old_pid

    # The apiserver reconnects to etcd by itself; until then reads fail.
    def read_back() -> dict[str, str] | None:
        got = cluster.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/kept")
        data: dict[str, str] = got["data"]
        return data

    assert wait_until(read_back, timeout=30, what="read back after etcd restart") == {
        "color": "0ddba1"
    }


@pytest.mark.cluster_full
async def test_controllers_keep_working_across_an_apiserver_restart(
    cluster_full: ControlPlane, namespace: str, kube_api: k8s.ApiClient
) -> None:
    cluster_full.restart_apiserver()
    assert set(cluster_full.process_ids()) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }
    apps = k8s.AppsV1Api(kube_api)
    core = k8s.CoreV1Api(kube_api)
    await apps.create_namespaced_deployment(
        namespace, deployment("chat-0f0f0f", app="chat", color="0f0f0f", replicas=1)
    )

    # Each hop of a rollout is a different informer (deployment controller, ReplicaSet
    # controller, scheduler, kwok), and each reconnects after the restart on its own client-go
    # backoff: 0.8 s doubling to a 30 s cap with up to 100% jitter, reset only after 2 min
    # without a failure, so restarts earlier in the session add up. One deadline for the whole
    # chain fails on a busy machine while the controllers work; a deadline per hop, past the
    # worst backoff, still fails if any of them stopped working.
    hop = 90.0

    async def replica_set() -> bool | None:
        sets = await apps.list_namespaced_replica_set(namespace, label_selector="color=0f0f0f")
        return True if sets.items else None

    async def pods() -> list[k8s.V1Pod] | None:
        found = await core.list_namespaced_pod(namespace, label_selector="color=0f0f0f")
        return found.items or None

    async def scheduled() -> bool | None:
        return True if any(p.spec.node_name for p in await pods() or []) else None

    async def ready() -> bool | None:
        for pod in await pods() or []:
            for cond in pod.status.conditions or []:
                if cond.type == "Ready" and cond.status == "True":
                    return True
        return None

    async def available() -> bool | None:
        got = await apps.read_namespaced_deployment("chat-0f0f0f", namespace)
        return True if got.status.available_replicas == 1 else None

    await eventually(replica_set, within=hop, what="a ReplicaSet (deployment controller)")
    await eventually(pods, within=hop, what="a pod (ReplicaSet controller)")
    await eventually(scheduled, within=hop, what="the pod scheduled (scheduler)")
    await eventually(ready, within=hop, what="the pod Ready (kwok)")
    await eventually(available, within=hop, what="Available after the restart")


@pytest.mark.cluster
def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    cp = ControlPlane(data_dir=tmp_path / "cp")
    cp.start()
    pids = set(cp.process_ids().values())
    assert len(pids) == 2  # etcd and kube-apiserver
    assert pids <= live_pids()
    cp.stop()
    assert not pids & live_pids()


@pytest.mark.cluster
def test_failing_body_still_stops_everything(tmp_path: Path) -> None:
    pids: set[int] = set()
    with (
        pytest.raises(RuntimeError, match="test body failed"),
        ControlPlane(data_dir=tmp_path / "cp") as cp,
    ):
        pids = set(cp.process_ids().values())
        raise RuntimeError("test body failed")
    assert len(pids) == 2
    assert not pids & live_pids()


_CHILD = """
import json, signal, sys
from pathlib import Path
from rainbowd_sandbox.controlplane import ControlPlane
cp = ControlPlane(data_dir=Path(sys.argv[1]))
cp.start()
print(json.dumps(sorted(cp.process_ids().values())), flush=True)
signal.pause()  # until the test kills this process
"""


@pytest.mark.cluster
def test_killed_python_takes_its_control_plane_along(tmp_path: Path) -> None:
    """SIGKILL gives Python no chance to clean up: PR_SET_PDEATHSIG must do it."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path / "cp")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line, f"child exited with {parent.wait()} before starting a control plane"
        pids = set(json.loads(line))
        assert len(pids) == 2
        assert pids <= live_pids()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        wait_until(
            lambda: True if not pids & live_pids() else None,
            timeout=15,
            what="all control-plane processes gone",
        )
    finally:
        parent.kill()
        parent.wait()


def test_a_child_started_from_a_worker_thread_outlives_the_thread(tmp_path: Path) -> None:
    """Tests start and restart servers from asyncio.to_thread; the thread ending must not kill
    them (PR_SET_PDEATHSIG follows the forking thread)."""
    proc = Process("sleeper", ["sleep", "600"], log_path=tmp_path / "sleeper.log")
    worker = threading.Thread(target=proc.start)
    worker.start()
    worker.join()
    try:
        assert proc.pid is not None
        pid = proc.pid
        # Give the kernel time to deliver a death signal, were one due.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert proc.running(), "the child died when the thread that started it ended"
            time.sleep(0.05)
    finally:
        proc.stop()
    assert not pid_alive(pid)


def test_missing_binaries_name_the_build_command(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    with pytest.raises(ControlPlaneError) as missing:
        ControlPlane(binaries=tmp_path).start()
    message = str(missing.value)
    assert "tests/cluster/build" in message
    assert "kube-apiserver" in message
    assert "etcd," not in message
