"""The seed's story on a real node, through a real ClusterIP: TCP clients hold the old color across
the Service switch while new clients get the new one; rainbowd (the in-cluster pods) marks the old
color's pods retired, holds the color while connected, scales it down once drained (its pods get
SIGTERM and the demo app closes its streams gracefully) and deletes it; the live color untouched.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from rainbowd.sandbox.incluster import Kubectl, deploy_color

T = TypeVar("T")

APP = "rainbow-deploys"
TCP_PORT = 8081
POLICY_CONFIGMAP = "rainbowd/rainbowd-policy"
LINE_TIMEOUT = 30.0
"""Seconds to wait for a color line (one at once, then one every 5 s)."""
STEP_TIMEOUT = 240.0
"""Seconds any one step may take beyond the policy's own durations, on two busy shared cores."""


class StoryError(RuntimeError):
    """A step of the story did not happen as told."""


def new_color() -> str:
    return f"{random.randrange(16**6):06x}"


def poll(check: Callable[[], T | None], *, what: str, within: float = STEP_TIMEOUT) -> T:
    """Polls `check` until it returns something other than None (or False)."""
    deadline = time.monotonic() + within
    last: Exception | None = None
    while True:
        try:
            result = check()
        except StoryError:
            raise
        except (OSError, ValueError, KeyError, subprocess.SubprocessError, RuntimeError) as exc:
            last, result = exc, None
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise StoryError(f"not {what} after {within:g}s" + (f": {last}" if last else ""))
        time.sleep(0.5)


class Stream:
    """A TCP client of the color stream through the Service, like `telnet CLUSTER-IP 8081`."""

    def __init__(self, host: str, port: int = TCP_PORT) -> None:
        self.sock = socket.create_connection((host, port), timeout=LINE_TIMEOUT)
        self.local_port: int = self.sock.getsockname()[1]
        self.received = b""
        self._buffer = b""

    def line(self) -> bytes:
        """The next whole line, exactly as sent; b"" once the server closed the stream."""
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                return b""
            self._buffer += chunk
            self.received += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line + b"\n"

    def color(self) -> str:
        line = self.line()
        if not line:
            raise StoryError("the stream was closed")
        return line.decode().strip().rsplit("#", 1)[-1]

    def close(self) -> None:
        self.sock.close()


@dataclass
class StoryResult:
    """What the story saw, for the tests to check beyond the story's own checks."""

    namespace: str
    old: str
    new: str
    cluster_ip: str = ""
    held_before: bytes = b""
    held_after: bytes = b""
    old_pod_ips: list[str] = field(default_factory=list)
    podinfo: str = ""
    """The downward API's annotations file, read inside an old pod's container once retired."""
    conntrack: str = ""
    graceful_close: bool = False
    seconds: float = 0.0


def _pods(kubectl: Kubectl, namespace: str, color: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kubectl.json(
        "get", "pods", "-n", namespace, "-l", f"app={APP},color={color}"
    )["items"]
    return pods


def _deployment(kubectl: Kubectl, namespace: str, color: str) -> dict[str, Any] | None:
    found = kubectl(
        "get", "deployment", f"{APP}-{color}", "-n", namespace, "-o", "json", "--ignore-not-found"
    )
    return json.loads(found) if found.strip() else None


def leader_status(kubectl: Kubectl) -> dict[str, Any]:
    """The leading rainbowd pod's /status, read on its pod IP."""
    lease = kubectl.json("get", "lease", "rainbowd", "-n", "rainbowd")
    holder = lease["spec"]["holderIdentity"]
    pod = kubectl.json("get", "pod", holder, "-n", "rainbowd")
    url = f"http://{pod['status']['podIP']}:8080/status"
    with urllib.request.urlopen(url, timeout=5) as resp:
        status: dict[str, Any] = json.loads(resp.read())
    return status


def color_doc(status: dict[str, Any], namespace: str, color: str) -> dict[str, Any]:
    for app in (status.get("plan") or {}).get("apps") or []:
        if app.get("namespace") not in (None, namespace):
            continue
        for doc in app.get("colors") or []:
            if doc.get("color") == color:
                found: dict[str, Any] = doc
                return found
    return {}


def play(
    kubectl: Kubectl,
    *,
    namespace: str,
    image: str,
    min_retired_age: float,
    tell: Callable[[str], None] = lambda text: None,
    fixed_node_ports: bool = True,
) -> StoryResult:
    """Plays the story in `namespace` (made if missing); raises StoryError at a step that fails.

    The policy rainbowd runs must have connectionFloor 1: two connections hold the old color,
    one closed drains it, and the one left open sees the graceful close."""
    began = time.monotonic()
    old, new = new_color(), new_color()
    while new == old:
        new = new_color()
    result = StoryResult(namespace=namespace, old=old, new=new)
    kubectl("create", "namespace", namespace, check=False)
    streams: list[Stream] = []
    try:
        _play(kubectl, result, streams, image, min_retired_age, tell, fixed_node_ports)
    finally:
        for stream in streams:
            stream.close()
    result.seconds = time.monotonic() - began
    tell(f"the story is over in {result.seconds:.0f}s")
    return result


def _play(
    kubectl: Kubectl,
    result: StoryResult,
    streams: list[Stream],
    image: str,
    min_retired_age: float,
    tell: Callable[[str], None],
    fixed_node_ports: bool,
) -> None:
    ns, old, new = result.namespace, result.old, result.new
    tell(f"1. deploy color #{old} ({APP}-{old}, 2 pods) and point Service {APP} at it")
    deploy_color(kubectl, ns, old, image=image, fixed_node_ports=fixed_node_ports)
    service = kubectl.json("get", "service", APP, "-n", ns)
    result.cluster_ip = ip = service["spec"]["clusterIP"]
    result.old_pod_ips = [p["status"]["podIP"] for p in _pods(kubectl, ns, old)]
    tell(f"   pods of #{old}: {', '.join(result.old_pod_ips)}; ClusterIP {ip}")

    tell(f"2. open two TCP connections to the ClusterIP ({ip}:{TCP_PORT})")
    # kube-proxy programs the Service a moment after it is created: until then, refused.
    held = [
        poll(lambda: _new_stream_on(ip, old, streams), what=f"a connection reading #{old}")
        for _ in range(2)
    ]
    result.held_before = held[0].received

    tell(f"3. deploy color #{new} and switch the Service to it")
    deploy_color(kubectl, ns, new, image=image, fixed_node_ports=fixed_node_ports)
    fresh = poll(lambda: _new_stream_on(ip, new, streams), what=f"a new connection reading #{new}")
    for stream in held:
        if (got := stream.color()) != old:
            raise StoryError(f"a held connection now reads #{got}, expected #{old}")
    result.held_after = held[0].received[len(result.held_before) :]
    tell(f"   a new connection reads #{new}; the two held ones still read #{old}")
    result.conntrack = subprocess.run(
        ["conntrack", "-L", "-p", "tcp", "--orig-dst", ip, "--orig-port-dst", str(TCP_PORT)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    tell(f"4. rainbowd marks #{old} retired and keeps it while connected (past minRetiredAge)")
    old_ip = result.old_pod_ips[0]

    def page_says_retired() -> bool:
        with urllib.request.urlopen(f"http://{old_ip}:8080/", timeout=5) as resp:
            return 'data-phase="retired"' in resp.read().decode()

    poll(page_says_retired, what=f"the pod of #{old} seeing rainbowd.io/phase=retired")
    old_pod = next(p for p in _pods(kubectl, ns, old) if p["status"].get("podIP") == old_ip)
    result.podinfo = kubectl(
        "exec", "-n", ns, old_pod["metadata"]["name"], "--", "cat", "/etc/podinfo/annotations"
    )
    tell(f"   the pod at {old_ip} reads its phase through the downward API: retired")

    def held_past_min_age() -> dict[str, Any] | None:
        doc = color_doc(leader_status(kubectl), ns, old)
        value = (doc.get("connections") or {}).get("value")
        if (
            doc.get("state") == "draining"
            and (doc.get("retiredFor") or 0) >= min_retired_age
            and value is not None
            and value >= 2
            and doc.get("replicas", 0) > 0
        ):
            return doc
        return None

    doc = poll(held_past_min_age, what=f"#{old} held past minRetiredAge with its connections")
    tell(
        f"   #{old} {doc['state']}: {doc['connections']['value']:g} connections, "
        f"{doc['replicas']} replicas, retired for {doc['retiredFor']:.0f}s"
    )

    tell("5. close one held connection; the other stays open (at the floor: drained)")
    held[0].close()
    streams.remove(held[0])
    last = held[1]

    def scaled_to_zero() -> bool:
        found = _deployment(kubectl, ns, old)
        if found is None:
            raise StoryError(f"{APP}-{old} was deleted without being scaled down first")
        return int(found["spec"]["replicas"]) == 0

    poll(scaled_to_zero, what=f"{APP}-{old} scaled to 0")
    tell(f"   rainbowd scaled {APP}-{old} to 0; its pods get SIGTERM")
    # The demo app closes its streams on SIGTERM: the open connection ends with a clean EOF
    # (after any color lines still in flight), not a reset.
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        try:
            line = last.line()
        except ConnectionResetError as exc:
            raise StoryError(f"the held connection was reset, not closed: {exc}") from None
        if not line:
            result.graceful_close = True
            break
        if line.decode().strip().rsplit("#", 1)[-1] != old:
            raise StoryError(f"the held connection read {line!r} before closing")
        if time.monotonic() > deadline:
            raise StoryError("the held connection was never closed")
    tell("   the held connection was closed cleanly by the old pod")

    kept = set_default(kubectl, "keepScaledDown", 0)
    try:
        tell(
            f"6. {APP}-{old} is kept at 0 for a fast rollback (keepScaledDown {kept}); set it "
            f"to 0 in ConfigMap {POLICY_CONFIGMAP} and rainbowd deletes it"
        )
        poll(lambda: _deployment(kubectl, ns, old) is None, what=f"{APP}-{old} deleted")
        tell(f"   {APP}-{old} deleted")
    finally:
        set_default(kubectl, "keepScaledDown", kept)

    tell(f"7. the live color #{new} was never touched")
    found = _deployment(kubectl, ns, new)
    if found is None or int(found["spec"]["replicas"]) != 2:
        raise StoryError(f"{APP}-{new} changed: {found and found['spec']}")
    if (got := fresh.color()) != new:
        raise StoryError(f"the new connection reads #{got}, expected #{new}")


def set_default(kubectl: Kubectl, knob: str, value: Any) -> Any:
    """Edits one default of the in-cluster policy ConfigMap, as `kubectl edit` would; returns the
    value it had."""
    namespace, name = POLICY_CONFIGMAP.split("/")
    configmap = kubectl.json("get", "configmap", name, "-n", namespace)
    policy = yaml.safe_load(configmap["data"]["policy.yaml"])
    was = policy["defaults"].get(knob)
    policy["defaults"][knob] = value
    patch = {"data": {"policy.yaml": yaml.safe_dump(policy, sort_keys=False)}}
    kubectl("patch", "configmap", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    return was


def _new_stream_on(ip: str, color: str, streams: list[Stream]) -> Stream | None:
    """A new connection through the Service, kept when it reaches `color` (kube-proxy takes a
    moment to follow the selector switch)."""
    stream = Stream(ip)
    streams.append(stream)
    if stream.color() == color:
        return stream
    streams.remove(stream)
    stream.close()
    return None
