"""`rainbowd sandbox --node`: the sandbox on a real node. The node (containerd, kubelet, kube-proxy
and its control plane), Prometheus discovering pods through the apiserver, rainbowd installed from
its image with `kubectl apply -k` of k8s/sandbox, and the seed's app as real pods behind a real
ClusterIP; with `--story`, the seed's story played through it. Ctrl-C restores the machine.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from dataclasses import dataclass

from rainbowd.forwarding import ForwardError
from rainbowd.logs import setup_logging
from rainbowd_sandbox.images import ImageError, build_images
from rainbowd_sandbox.incluster import (
    InClusterError,
    Kubectl,
    install,
    live_page,
    pod_scrape_config,
    rainbow_deploy,
    sandbox_policy_text,
)
from rainbowd_sandbox.node import BRIDGE_IP, Node, NodeError, missing_parts
from rainbowd_sandbox.nodestory import APP, StoryError, new_color, play
from rainbowd_sandbox.procs import ProcessError
from rainbowd_sandbox.prometheus import PrometheusError, PrometheusServer

MIN_RETIRED_AGE = 30.0
"""Seconds: config/sandbox-policy.yaml's minRetiredAge, which the story holds the old color past."""


@dataclass(frozen=True, slots=True)
class NodeSandboxOptions:
    namespace: str = "default"
    story: bool = False
    exit_after_story: bool = False
    log_level: str = "info"


def say(text: str = "") -> None:
    print(text, flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_node_sandbox(options: NodeSandboxOptions) -> int:
    setup_logging(options.log_level.upper(), "text")
    missing = missing_parts()
    if missing:
        say(f"error: a real node cannot run here, missing: {', '.join(missing)}")
        say("run scripts/setup as root on Linux, or use the kwok sandbox (without --node)")
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    node: Node | None = None
    prometheus: PrometheusServer | None = None
    code = 0
    stack = contextlib.ExitStack()
    try:
        say("building the images (cached when nothing changed)")
        began = time.monotonic()
        images = build_images()
        say(f"images ready in {time.monotonic() - began:.1f}s: {images.rainbowd.ref}")
        say("starting the node: bridge, control plane, containerd, kubelet, kube-proxy")
        node = Node(images=images)
        node.start()
        say(f"node Ready in {node.timings['start']:.1f}s")
        prometheus = PrometheusServer(
            host=BRIDGE_IP,
            scrape_configs=[pod_scrape_config(node.kubeconfig)],
            binary=node.binaries / "prometheus",
        )
        prometheus.start()
        kubectl = Kubectl(node.kubeconfig)
        # The story needs connectionFloor 1: two held connections, one closed, and the other
        # sees the old pod's graceful close.
        knobs = {"connectionFloor": 1} if options.story else {}
        say("installing rainbowd: kubectl apply -k of k8s/sandbox (two replicas, from the image)")
        install(kubectl, policy=sandbox_policy_text(prometheus.url, **knobs))
        # Where the live page is, before the story starts (the kwok sandbox says so first too).
        page = stack.enter_context(live_page(kubectl))
        if not options.story:
            color = new_color()
            say(f"deploying the first color #{color} with rainbowd deploy -f k8s/demo/app.yaml")
            rainbow_deploy(kubectl, options.namespace, color, image=images.rainbowd.ref)
        _banner(node, prometheus, kubectl, options.namespace, page_url=page.url)
        if options.story:
            play(
                kubectl,
                namespace=options.namespace
                if options.namespace != "default"
                else f"story-{uuid.uuid4().hex[:6]}",
                image=images.rainbowd.ref,
                min_retired_age=MIN_RETIRED_AGE,
                tell=lambda text: say(f"story: {text}"),
            )
        if not options.exit_after_story:
            say("the sandbox keeps running; Ctrl-C stops it and restores the machine")
            while True:
                signal.pause()
    except KeyboardInterrupt:
        say("stopping")
    except (
        ImageError,
        NodeError,
        ProcessError,
        PrometheusError,
        InClusterError,
        StoryError,
        ForwardError,
    ) as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        stack.close()  # the page's port-forward
        if prometheus is not None:
            prometheus.close()
        if node is not None:
            try:
                node.stop()
                say("node stopped; the machine is as it was")
            except NodeError as exc:
                say(f"error: {exc}")
                code = 1
    return code


def _banner(
    node: Node, prometheus: PrometheusServer, kubectl: Kubectl, namespace: str, *, page_url: str
) -> None:
    say()
    say("the sandbox runs on a real node:")
    say(f"  rainbowd's live page: {page_url}  (kubectl port-forward, kept while the sandbox runs)")
    say(f"  export KUBECONFIG={node.kubeconfig}")
    say(f"  kubectl: {kubectl.binary}")
    say(f"  Prometheus: {prometheus.url} (finds pods with kubernetes_sd_configs)")
    say("  rainbowd: kubectl -n rainbowd get pods (its /status on each pod IP, port 8080)")
    service = kubectl("get", "service", APP, "-n", namespace, "-o", "name", check=False).strip()
    if service:
        ip = kubectl.json("get", "service", APP, "-n", namespace)["spec"]["clusterIP"]
        say(f"  Service {APP}: http://{ip}:8080 in a browser, telnet {ip} 8081 for the stream")
    say()
