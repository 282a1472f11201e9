"""The shipped demo manifests fit the shipped policy: the demo app's color Deployment and
Service are what the planner expects (the ConfigMap's validity is checked in test_policy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from rainbowd.core.model import Namespace, Snapshot, State
from rainbowd.core.objects import deployment_from_k8s, service_from_k8s
from rainbowd.core.planner import plan
from rainbowd.policyfile import load_policy_file

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _color(color: str, created: datetime) -> list[dict[str, Any]]:
    text = (ROOT / "k8s" / "demo" / "app.yaml").read_text().replace("__COLOR__", color)
    docs: list[dict[str, Any]] = list(yaml.safe_load_all(text))
    for doc in docs:
        doc["metadata"]["namespace"] = "default"
        doc["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
        doc["metadata"]["uid"] = f"uid-{color}"
        doc["metadata"]["resourceVersion"] = "1"
    return docs


def test_demo_manifest_colors_are_planned_as_in_the_seed() -> None:
    old = _color("3c3fdc", NOW - timedelta(hours=2))
    new = _color("9d2cc9", NOW - timedelta(hours=1))
    for doc in (old[1], new[1]):
        # What the deployment controller reports once both pods are up.
        doc["status"] = {
            "replicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True"}],
        }
    deployments = (deployment_from_k8s(old[1]), deployment_from_k8s(new[1]))
    # The Service of the newest `kubectl apply` selects the new color.
    service = service_from_k8s(new[0])
    snapshot = Snapshot(
        now=NOW,
        namespaces={
            "default": Namespace(name="default", deployments=deployments, services=(service,))
        },
    )
    policy = load_policy_file(ROOT / "config" / "policy.yaml")
    result = plan(snapshot, policy, NOW)
    states = {c.color: c.state for app in result.apps for c in app.colors}
    assert states == {"9d2cc9": State.LIVE, "3c3fdc": State.UNKNOWN_CONNECTIONS}
    assert all(c.rule == "rainbow-deploys" for app in result.apps for c in app.colors)
    # The color label lives only on the pod template, as in the seed's app.yaml.
    assert "color" not in deployments[0].labels
    assert deployments[0].template_labels["color"] == "3c3fdc"
