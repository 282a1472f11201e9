"""The seed's story on a real node, through a real ClusterIP, each color shipped with `rainbowd
deploy`: TCP clients hold the old color across the Service switch while new clients get the new
one; rainbowd (the in-cluster pods) marks the old color's pods retired, holds the color while
connected and scales it down once drained (its pods get SIGTERM and the demo app closes its streams
gracefully); `rainbowd rollback` brings it back; a third color is deployed and rainbowd deletes the
two old ones once drained; the live color untouched.
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
from datetime import UTC, datetime
from typing import Any, TypeVar

import yaml

from rainbowd_sandbox.incluster import (
    DEMO_APP_NAME,
    InClusterError,
    Kubectl,
    rainbow_deploy,
    rainbow_rollback,
)

T = TypeVar("T")

APP = DEMO_APP_NAME
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


def _rollback(kubectl: Kubectl, ns: str) -> str:
    """`rainbowd rollback`, run again as its message tells a person to when rainbowd changed the
    color between the command's read and its write (nothing was switched then); any other
    failure is the story's."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        try:
            return rainbow_rollback(kubectl, ns)
        except InClusterError as exc:
            if "changed while the rollback read it" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise StoryError(f"the rollback kept meeting rainbowd's changes: {exc}") from None


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
    fix: str
    """The third color, deployed after the rollback; live at the end."""
    cluster_ip: str = ""
    held_before: bytes = b""
    held_after: bytes = b""
    old_pod_ips: list[str] = field(default_factory=list)
    podinfo: str = ""
    """The downward API's annotations file, read inside an old pod's container once retired."""
    conntrack: str = ""
    graceful_close: bool = False
    rollback_began: datetime | None = None
    rollback_done: datetime | None = None
    selector_after_rollback: dict[str, str] = field(default_factory=dict)
    replicas_after_rollback: int = 0
    after_rollback: bytes = b""
    """The first line a new connection read through the ClusterIP after the rollback."""
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
    colors: list[str] = []
    while len(colors) < 3:
        if (color := new_color()) not in colors:
            colors.append(color)
    old, new, fix = colors
    result = StoryResult(namespace=namespace, old=old, new=new, fix=fix)
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
    ns, old, new, fix = result.namespace, result.old, result.new, result.fix
    old_name, new_name, fix_name = (f"{APP}-{c}" for c in (old, new, fix))

    def deploy(color: str) -> None:
        rainbow_deploy(kubectl, ns, color, image=image, fixed_node_ports=fixed_node_ports)

    tell(f"1. deploy color #{old}: Deployment {old_name}, 2 replicas, Service {APP} to it")
    deploy(old)
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
    deploy(new)
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
            raise StoryError(f"{old_name} was deleted without being scaled down first")
        return int(found["spec"]["replicas"]) == 0

    poll(scaled_to_zero, what=f"{old_name} scaled to 0")
    tell(f"   rainbowd scaled {old_name} to 0; its pods get SIGTERM")
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
    streams.remove(last)
    last.close()
    tell(
        f"   the held connection was closed cleanly by the old pod; {old_name} is kept at 0 "
        "replicas for a fast rollback"
    )

    tell(
        f"6. #{new} turns out bad: rainbowd rollback scales {old_name} back to 2 replicas, "
        f"waits until it is Available, and switches the Service back to #{old}"
    )
    result.rollback_began = datetime.now(UTC)
    went_back = _rollback(kubectl, ns)
    result.rollback_done = datetime.now(UTC)
    if went_back != old:
        raise StoryError(f"the rollback went to #{went_back}, expected #{old}")
    result.selector_after_rollback = kubectl.json("get", "service", APP, "-n", ns)["spec"][
        "selector"
    ]
    if result.selector_after_rollback.get("color") != old:
        raise StoryError(f"the Service selects {result.selector_after_rollback}, not #{old}")
    found = _deployment(kubectl, ns, old)
    result.replicas_after_rollback = int(found["spec"]["replicas"]) if found else 0
    if result.replicas_after_rollback != 2:
        raise StoryError(f"{old_name} was not scaled back to 2: {found and found['spec']}")
    back = poll(
        lambda: _new_stream_on(ip, old, streams), what=f"a new connection reading #{old} again"
    )
    result.after_rollback = back.received
    if (got := fresh.color()) != new:
        raise StoryError(f"the connection to #{new} now reads #{got}")
    tell(
        f"   {old_name} is back at 2 replicas; a new connection reads #{old}; the one opened "
        f"on #{new} still reads #{new}, which is now retired"
    )

    tell(f"7. deploy again: color #{fix}, the fixed release, and switch the Service to it")
    deploy(fix)
    live = poll(lambda: _new_stream_on(ip, fix, streams), what=f"a new connection reading #{fix}")
    tell(f"   a new connection reads #{fix}")

    kept = set_default(kubectl, "keepScaledDown", 0)
    try:
        tell(
            f"8. close the connections to #{old} and #{new}, and set keepScaledDown to 0 "
            f"(was {kept}) in ConfigMap {POLICY_CONFIGMAP}: nothing is kept for a rollback any "
            f"more, so rainbowd deletes #{old} and #{new} once drained"
        )
        for stream in (fresh, back):
            streams.remove(stream)
            stream.close()
        for name, color in ((old_name, old), (new_name, new)):

            def deleted(color: str = color) -> bool:
                return _deployment(kubectl, ns, color) is None

            poll(deleted, what=f"{name} deleted", within=STEP_TIMEOUT + min_retired_age)
            tell(f"   {name} deleted by rainbowd")
    finally:
        set_default(kubectl, "keepScaledDown", kept)

    tell(f"9. the live color #{fix} was never touched")
    found = _deployment(kubectl, ns, fix)
    if found is None or int(found["spec"]["replicas"]) != 2:
        raise StoryError(f"{fix_name} changed: {found and found['spec']}")
    selector = kubectl.json("get", "service", APP, "-n", ns)["spec"]["selector"]
    if selector.get("color") != fix:
        raise StoryError(f"the Service selects {selector}, expected #{fix}")
    if (got := live.color()) != fix:
        raise StoryError(f"the connection to #{fix} reads #{got}")
    tell(f"   #{fix} untouched: 2 replicas, the Service on it, its connection still reads #{fix}")


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
