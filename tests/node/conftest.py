"""A real node for the tests of this folder (containerd, kubelet, kube-proxy on a CNI bridge, its
own control plane), with a real Prometheus on the bridge discovering pods through the apiserver, and
rainbowd installed in-cluster from its image with `kubectl apply -k` of k8s/sandbox. Package
scope: the node stops, and frees the machine lock for another run, once the last of these tests has
run (they run together, first: tests/conftest.py), not when the worker's session ends.

The node needs root on Linux and the parts scripts/setup installs: a missing part fails, nothing is
skipped. Its teardown fails the session if the machine is not as the node found it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from rainbowd_sandbox.images import ImageError, Images, build_images
from rainbowd_sandbox.incluster import Kubectl, install, pod_scrape_config, sandbox_policy_text
from rainbowd_sandbox.node import BRIDGE_IP, Node, NodeError
from rainbowd_sandbox.procs import ProcessError
from rainbowd_sandbox.prometheus import PrometheusError, PrometheusServer
from tests import summary

MIN_RETIRED_AGE = 10.0
"""Seconds (the in-cluster policy's minRetiredAge): the story holds the old color past it."""

figures: dict[str, str] = {}
summary.parts["real node figures"] = figures
_began: list[float] = []
"""When the session's first real-node fixture started: the figure of what these tests add to CI."""


@pytest.fixture(scope="package")
def node_images() -> Images:
    began = time.monotonic()
    _began.append(began)
    try:
        images = build_images()
    except ImageError as exc:
        pytest.fail(str(exc), pytrace=False)
    built = {what: seconds for what, seconds in images.timings.items() if seconds > 0}
    took = time.monotonic() - began
    figures["images"] = (
        f"built in {took:.1f}s ({', '.join(built)})" if built else f"cached, {took:.1f}s"
    )
    return images


@pytest.fixture(scope="package")
def node(node_images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The session's real node; its components' logs are kept in pytest's temp folder."""
    logs = tmp_path_factory.mktemp("node-logs")
    the_node = Node(images=node_images, keep_logs=logs)
    try:
        the_node.start()
    except (NodeError, ProcessError) as exc:
        pytest.fail(f"{exc}\n(logs in {logs})", pytrace=False)
    parts = ", ".join(
        f"{k} {v:.1f}s" for k, v in the_node.timings.items() if k not in ("images", "start")
    )
    figures["node start"] = f"{the_node.timings['start']:.1f}s ({parts})"
    try:
        yield the_node
    finally:
        try:
            the_node.stop()
        except NodeError as exc:
            pytest.fail(f"{exc}\n(logs in {logs})", pytrace=False)
        figures["node stop (machine restored and checked)"] = f"{the_node.timings['stop']:.1f}s"
        figures["the real node's tests in all (images, node, tests, stop)"] = (
            f"{time.monotonic() - _began[0]:.0f}s"
        )


@pytest.fixture(scope="package")
def kubectl(node: Node) -> Kubectl:
    return Kubectl(node.kubeconfig)


@pytest.fixture(scope="package")
def node_prometheus(node: Node) -> Iterator[PrometheusServer]:
    """Prometheus on the bridge (pods query it), finding pods with kubernetes_sd_configs."""
    server = PrometheusServer(
        scrape_interval=1.0,
        host=BRIDGE_IP,
        scrape_configs=[pod_scrape_config(node.kubeconfig)],
        binary=node.binaries / "prometheus",
    )
    try:
        server.start()
    except PrometheusError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="package")
def rainbowd_incluster(kubectl: Kubectl, node_prometheus: PrometheusServer) -> Kubectl:
    """rainbowd's two replicas running from the image, as k8s/ installs them.

    connectionFloor 1: in the story, two held connections keep the old color, closing one
    drains it, and the other sees the pod's graceful close."""
    began = time.monotonic()
    policy = sandbox_policy_text(
        node_prometheus.url,
        minRetiredAge=f"{MIN_RETIRED_AGE:g}s",
        drainHold="5s",
        connectionFloor=1,
    )
    install(kubectl, policy=policy)
    figures["rainbowd installed (kubectl apply -k, rolled out)"] = (
        f"{time.monotonic() - began:.1f}s"
    )
    return kubectl
