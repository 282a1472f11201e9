"""The seed's claim on a real node: after the Service switches, established connections stay on
the old color's pods (kube-proxy's conntrack entries) until rainbowd, running in-cluster with only
its ServiceAccount's permissions, burns the old color down once drained."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from rainbowd.sandbox.images import Images
from rainbowd.sandbox.incluster import SERVICE_ACCOUNT, Kubectl
from rainbowd.sandbox.node import Node
from rainbowd.sandbox.nodestory import APP, play
from tests.node.conftest import MIN_RETIRED_AGE, figures


def rainbowd_calls(node: Node, namespace: str, name: str) -> list[tuple[str, str]]:
    """(verb, subresource) of every successful write rainbowd's ServiceAccount made to the
    Deployment `name`, from the apiserver's audit log."""
    assert node.controlplane is not None
    calls = []
    for event in node.controlplane.audit_events():
        ref: dict[str, Any] = event.get("objectRef") or {}
        if (
            event.get("user", {}).get("username") == SERVICE_ACCOUNT
            and ref.get("resource") == "deployments"
            and ref.get("namespace") == namespace
            and ref.get("name") == name
            and event.get("verb") in ("patch", "update", "delete")
            and int((event.get("responseStatus") or {}).get("code", 500)) < 300
        ):
            calls.append((event["verb"], ref.get("subresource", "")))
    return calls


@pytest.mark.e2e
def test_held_connections_stay_on_the_old_color_until_rainbowd_burns_it_down(
    node: Node, node_images: Images, rainbowd_incluster: Kubectl
) -> None:
    namespace = f"story-{uuid.uuid4().hex[:6]}"
    result = play(
        rainbowd_incluster,
        namespace=namespace,
        image=node_images.rainbowd.ref,
        min_retired_age=MIN_RETIRED_AGE,
        tell=print,
    )
    figures["the story on the real node"] = f"{result.seconds:.0f}s"
    old_line = f"The color is #{result.old}\n".encode()
    # The bytes of the held connection, before and after the switch: only the old color.
    assert result.held_before == old_line
    assert result.held_after and set(result.held_after.splitlines(keepends=True)) == {old_line}
    # kube-proxy's DNAT of the held flow still points at an old pod, as conntrack records it.
    assert "ESTABLISHED" in result.conntrack
    assert any(f"src={ip} " in result.conntrack for ip in result.old_pod_ips), result.conntrack
    # Inside the old color's container, before the scale-down: the downward API's file.
    assert 'rainbowd.io/phase="retired"' in result.podinfo.splitlines(), result.podinfo
    assert result.graceful_close
    # One scale-down and one delete, by rainbowd's ServiceAccount and no one else.
    calls = rainbowd_calls(node, namespace, f"{APP}-{result.old}")
    assert calls.count(("delete", "")) == 1, calls
    assert len([c for c in calls if c[1] == "scale"]) == 1, calls
    live = rainbowd_calls(node, namespace, f"{APP}-{result.new}")
    assert not [c for c in live if c[1] == "scale" or c[0] == "delete"], live
