"""The Prometheus Operator monitors in k8s/monitoring point at what is really there: the
ServiceMonitor selects rainbowd's Service in its own namespace through a named port that reaches
the container's metrics port, and names the job the alert rules read; the PodMonitor example
selects the demo app's pods on a port they have and keeps the metric the policy reads. The CRD
schemas (tests/integration/test_install.py) accept a monitor that selects nothing; this does not."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict[str, Any]:
    found = [d for d in _docs(path) if d["kind"] == kind]
    assert len(found) == 1, f"{path.name}: {len(found)} {kind}"
    return found[0]


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        ok = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
        }[operator]
        if not ok:
            return False
    return True


def _container_ports(deployment: Mapping[str, Any]) -> set[str]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return {port["name"] for c in containers for port in c.get("ports", []) if "name" in port}


def service_monitor_problems(
    monitor: Mapping[str, Any], service: Mapping[str, Any], deployment: Mapping[str, Any]
) -> list[str]:
    """Why the ServiceMonitor would not scrape the Deployment's pods through the Service."""
    problems = []
    spec = monitor["spec"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames")
    own = monitor["metadata"]["namespace"]
    if service["metadata"]["namespace"] not in (namespaces or [own]):
        problems.append(f"the Service's namespace is not among {namespaces or [own]}")
    if not _selects(spec["selector"], service["metadata"].get("labels", {})):
        problems.append(f"selector {spec['selector']} does not select the Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    if not _selects({"matchLabels": service["spec"]["selector"]}, pod_labels):
        problems.append("the Service does not select rainbowd's pods")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        port = ports.get(endpoint.get("port", ""))
        if port is None:
            problems.append(f"endpoint port {endpoint.get('port')!r} is not a port of the Service")
        elif port["targetPort"] not in _container_ports(deployment):
            problems.append(f"the Service's port targets {port['targetPort']!r}, not a container's")
        if endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"endpoint path {endpoint['path']!r} is not /metrics")
        jobs = [
            r.get("replacement")
            for r in endpoint.get("relabelings", [])
            if r.get("targetLabel") == "job" and r.get("action", "replace") == "replace"
        ]
        if jobs != ["rainbowd"]:
            problems.append(f"the job label is {jobs}, not the rainbowd the alert rules read")
    return problems


def pod_monitor_problems(
    monitor: Mapping[str, Any], deployment: Mapping[str, Any], metric: str
) -> list[str]:
    """Why the PodMonitor would not scrape `metric` from the Deployment's pods."""
    problems = []
    spec = monitor["spec"]
    if not spec.get("namespaceSelector", {}).get("any"):
        problems.append("it scrapes only its own namespace, not the apps'")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    if not _selects(spec["selector"], pod_labels):
        problems.append(f"selector {spec['selector']} does not select the pods {pod_labels}")
    for endpoint in spec["podMetricsEndpoints"]:
        if endpoint.get("port") not in _container_ports(deployment):
            problems.append(f"port {endpoint.get('port')!r} is not a container port of the pods")
        if not endpoint.get("honorLabels"):
            problems.append("without honorLabels the app's own namespace/app/color labels are lost")
        kept = [
            relabel.get("regex")
            for relabel in endpoint.get("metricRelabelings", [])
            if relabel.get("action") == "keep" and relabel.get("sourceLabels") == ["__name__"]
        ]
        if kept and kept != [metric]:
            problems.append(f"it keeps {kept}, not {metric}")
    return problems


def _shipped() -> dict[str, dict[str, Any]]:
    demo = (K8S / "demo" / "app.yaml").read_text().replace("__COLOR__", "3c3fdc")
    policy = yaml.safe_load((K8S / "base" / "policy-configmap.yaml").read_text())
    return {
        "servicemonitor": _one(K8S / "monitoring" / "servicemonitor.yaml", "ServiceMonitor"),
        "podmonitor": _one(K8S / "monitoring" / "podmonitor.yaml", "PodMonitor"),
        "service": _one(K8S / "base" / "service.yaml", "Service"),
        "deployment": _one(K8S / "base" / "deployment.yaml", "Deployment"),
        "demo": next(d for d in yaml.safe_load_all(demo) if d and d["kind"] == "Deployment"),
        "policy": yaml.safe_load(policy["data"]["policy.yaml"]),
    }


def test_the_service_monitor_scrapes_rainbowd_as_the_rules_job() -> None:
    s = _shipped()
    assert service_monitor_problems(s["servicemonitor"], s["service"], s["deployment"]) == []
    assert 'job="rainbowd"' in (K8S / "monitoring" / "alerts.yaml").read_text()


def test_the_pod_monitor_scrapes_the_demo_apps_connections() -> None:
    s = _shipped()
    metric = s["policy"]["connections"]["metric"]
    assert metric == "rainbow_open_connections"
    assert pod_monitor_problems(s["podmonitor"], s["demo"], metric) == []


def test_a_monitor_that_would_select_nothing_is_reported() -> None:
    """The checks can fail: each broken copy names what is wrong."""
    s = _shipped()
    monitor = yaml.safe_load(yaml.safe_dump(s["servicemonitor"]))
    monitor["spec"]["endpoints"][0]["port"] = "metrics"
    monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "rainbow"
    assert service_monitor_problems(monitor, s["service"], s["deployment"]) == [
        "selector {'matchLabels': {'app.kubernetes.io/name': 'rainbow'}} does not select the "
        "Service",
        "endpoint port 'metrics' is not a port of the Service",
    ]
    pods = yaml.safe_load(yaml.safe_dump(s["podmonitor"]))
    pods["spec"]["podMetricsEndpoints"][0]["port"] = "tcp-metrics"
    pods["spec"]["selector"]["matchExpressions"].append(
        {"key": "tier", "operator": "In", "values": ["ws"]}
    )
    problems = pod_monitor_problems(pods, s["demo"], "rainbow_open_connections")
    assert len(problems) == 2, problems
    assert problems[0].startswith("selector ")
    assert problems[1] == "port 'tcp-metrics' is not a container port of the pods"


def test_the_rollouts_pod_monitor_labels_a_rollouts_pods_with_their_color() -> None:
    """Argo Rollouts' pods: the demo app's pods as a Rollout's ReplicaSet makes them (no color
    label, the hash instead) are selected, a Deployment color's pods are not (the other monitor
    scrapes them: never twice), and the series get app and color from the pod's labels."""
    s = _shipped()
    monitor = _one(K8S / "monitoring" / "podmonitor-rollouts.yaml", "PodMonitor")
    spec = monitor["spec"]
    demo_labels = s["demo"]["spec"]["template"]["metadata"]["labels"]
    rollout_labels = {k: v for k, v in demo_labels.items() if k != "color"}
    rollout_labels["rollouts-pod-template-hash"] = "6d4f8b9c7"
    assert spec["namespaceSelector"] == {"any": True}
    assert _selects(spec["selector"], rollout_labels)
    assert not _selects(spec["selector"], demo_labels)
    assert not _selects(s["podmonitor"]["spec"]["selector"], rollout_labels)
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["port"] in _container_ports(s["demo"])
    assert not endpoint["honorLabels"]  # the pod's labels win over an exported color
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets == {
        "app": ["__meta_kubernetes_pod_label_app"],
        "color": ["__meta_kubernetes_pod_label_rollouts_pod_template_hash"],
    }
    assert s["policy"]["connections"]["metric"] in str(endpoint["metricRelabelings"])
