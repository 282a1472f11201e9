"""The seed's claim on a real node: after the Service switches, established connections stay on
the old color's pods (kube-proxy's conntrack entries) until rainbowd, running in-cluster with only
its ServiceAccount's permissions, scales the old color down once drained; `rainbowd rollback`
brings it back, and after the next deploy rainbowd deletes both old colors, never the live one."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from rainbowd_sandbox.images import Images
from rainbowd_sandbox.incluster import SERVICE_ACCOUNT, Kubectl
from rainbowd_sandbox.node import Node
from rainbowd_sandbox.nodestory import APP, play
from tests.node.conftest import MIN_RETIRED_AGE, figures


def rainbowd_calls(node: Node, namespace: str, name: str) -> list[tuple[str, str, datetime]]:
    """(verb, subresource, when received) of every successful write rainbowd's ServiceAccount
    made to the Deployment `name`, from the apiserver's audit log."""
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
            when = datetime.fromisoformat(event["requestReceivedTimestamp"])
            calls.append((event["verb"], ref.get("subresource", ""), when))
    return calls


def disruptive(calls: list[tuple[str, str, datetime]]) -> list[tuple[str, str, datetime]]:
    """The scale-downs and deletes among `calls`."""
    return [c for c in calls if c[1] == "scale" or c[0] == "delete"]


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
    # The rollback: the Service back on the old color, its replicas restored, and a new
    # connection through the ClusterIP reaching it.
    assert result.selector_after_rollback.get("color") == result.old, result
    assert result.replicas_after_rollback == 2
    assert result.after_rollback == old_line
    began, done = result.rollback_began, result.rollback_done
    assert began is not None and done is not None
    # rainbowd's ServiceAccount, by the audit log: the old color scaled down once before the
    # rollback, nothing disruptive to it during the rollback, deleted once at the end.
    calls = disruptive(rainbowd_calls(node, namespace, f"{APP}-{result.old}"))
    assert [c[1] for c in calls if c[2] < began] == ["scale"], calls
    assert not [c for c in calls if began <= c[2] <= done], calls
    assert [c[:2] for c in calls if c[0] == "delete"] == [("delete", "")], calls
    # The bad color: untouched while it was live, deleted once when drained after the fix.
    bad = disruptive(rainbowd_calls(node, namespace, f"{APP}-{result.new}"))
    assert not [c for c in bad if c[2] <= done], bad
    assert [c[:2] for c in bad if c[0] == "delete"] == [("delete", "")], bad
    # The live color at the end: never scaled nor deleted.
    live = disruptive(rainbowd_calls(node, namespace, f"{APP}-{result.fix}"))
    assert not live, live
