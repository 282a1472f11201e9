"""The Helm chart renders what kustomize renders: for the default values the same objects as
`kubectl kustomize k8s/` (less the Namespace, which `helm install --create-namespace` makes), and
in namespaced mode the same as k8s/namespaced; `helm lint` finds nothing to say."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.installtools import ROOT, helm, helm_template, kustomize, normalised, run
from tests.unit.test_monitors import service_monitor_problems

CHART = ROOT / "charts" / "rainbowd"
NAMESPACED = (
    "--set",
    "namespaced.enabled=true",
    "--set",
    "namespaced.namespaces={team-a,team-b}",
    "--set",
    "monitoring.enabled=false",
)


def _diff(left: dict[Any, Any], right: dict[Any, Any]) -> str:
    lines = [
        "charts/rainbowd and k8s/ disagree: run `.venv/bin/python scripts/sync_manifests.py` for"
        " the generated pieces (rules, dashboard, alerts, policy, RBAC rules), else change"
        " charts/rainbowd/templates to match k8s/"
    ]
    lines += [f"only in helm: {k}" for k in left.keys() - right.keys()]
    lines += [f"only in kustomize: {k}" for k in right.keys() - left.keys()]
    for key in sorted(left.keys() & right.keys()):
        if left[key] != right[key]:
            lines.append(f"differs: {key}\n--- helm\n{yaml.safe_dump(left[key])}")
            lines.append(f"--- kustomize\n{yaml.safe_dump(right[key])}")
    return "\n".join(lines)


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("values", [(), NAMESPACED], ids=["defaults", "namespaced"])
def test_helm_lint_is_clean(values: tuple[str, ...]) -> None:
    result = run([helm(), "lint", "--strict", CHART, *values])
    out = result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    for level in ("[INFO]", "[WARNING]", "[ERROR]"):
        assert level not in out, out


def test_helm_template_equals_the_kustomize_render_for_defaults() -> None:
    rendered = kustomize("k8s")
    namespaces = [d for d in rendered if d["kind"] == "Namespace"]
    assert [d["metadata"]["name"] for d in namespaces] == ["rainbowd"]
    expected = normalised(d for d in rendered if d["kind"] != "Namespace")
    got = normalised(helm_template())
    assert got == expected, _diff(got, expected)
    kinds = {key[1] for key in got}
    assert {"Deployment", "ClusterRole", "PrometheusRule", "ServiceMonitor", "PodMonitor"} <= kinds
    assert len(got) == 17


def test_helm_template_in_namespaced_mode_equals_k8s_namespaced() -> None:
    expected = normalised(kustomize("k8s/namespaced"))
    got = normalised(helm_template(*NAMESPACED))
    assert got == expected, _diff(got, expected)
    assert not {key for key in got if key[1] in ("ClusterRole", "ClusterRoleBinding", "Namespace")}
    assert len(got) == 11


def test_namespaced_keda_grants_scaled_objects_in_the_roles() -> None:
    def groups(*values: str) -> set[str]:
        roles = [d for d in helm_template(*NAMESPACED, *values) if d["kind"] == "Role"]
        assert roles
        return {g for role in roles for rule in role["rules"] for g in rule["apiGroups"]}

    assert "keda.sh" not in groups()
    assert "keda.sh" in groups("--set", "namespaced.keda=true")
    assert "argoproj.io" not in groups()
    assert "argoproj.io" in groups("--set", "namespaced.argoRollouts=true")
    assert "keda.sh" not in groups("--set", "namespaced.argoRollouts=true")


def test_the_comparison_sees_a_changed_value() -> None:
    """The equality above can fail: a value that changes one field makes the renders differ."""
    expected = normalised(d for d in kustomize("k8s") if d["kind"] != "Namespace")
    got = normalised(helm_template("--set", "replicas=3"))
    assert got != expected
    assert _diff(got, expected).count("differs:") == 1


def test_the_usual_values_reach_the_objects() -> None:
    policy = (ROOT / "config" / "policy.yaml").read_text()
    docs = helm_template(
        "--set",
        "image.repository=registry.example/rainbowd",
        "--set",
        "image.tag=1.2.3",
        "--set",
        "image.pullPolicy=Always",
        "--set",
        "replicas=1",
        "--set",
        "resources.limits.memory=512Mi",
        "--set",
        "monitoring.enabled=false",
        "--set",
        "extraArgs={--interval=1m}",
        "--set-file",
        f"policy={ROOT / 'config' / 'policy.yaml'}",
    )
    deployment = _one(docs, "Deployment", "rainbowd")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 1
    assert container["image"] == "registry.example/rainbowd:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert container["args"][-1] == "--interval=1m"
    assert _one(docs, "ConfigMap", "rainbowd-policy")["data"]["policy.yaml"] == policy
    monitoring = {"PrometheusRule", "ServiceMonitor", "PodMonitor"}
    assert not [d for d in docs if d["kind"] in monitoring]
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"} == {"rainbowd-policy"}


def test_another_release_name_keeps_names_and_permissions_consistent() -> None:
    docs = helm_template(release="chat", namespace="platform")
    deployment = _one(docs, "Deployment", "rainbowd-chat")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--policy-configmap=platform/rainbowd-chat-policy" in args
    assert "--lease-name=rainbowd-chat" in args
    assert "--lease-namespace=platform" in args
    role = _one(docs, "Role", "rainbowd-chat")
    names = {name for rule in role["rules"] for name in rule.get("resourceNames", [])}
    assert names == {"rainbowd-chat-policy", "rainbowd-chat"}
    _one(docs, "ConfigMap", "rainbowd-chat-policy")
    binding = _one(docs, "ClusterRoleBinding", "rainbowd-chat")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rainbowd-chat", "namespace": "platform"}
    ]


def test_two_releases_in_one_namespace_share_no_object_and_select_only_their_own_pods() -> None:
    def selects(release: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
        docs = helm_template(release=release, namespace="platform")
        deployment = _one(docs, "Deployment", f"rainbowd-{release}")
        pods = deployment["spec"]["template"]["metadata"]["labels"]
        return (
            deployment["spec"]["selector"]["matchLabels"],
            pods,
            _one(docs, "Service", f"rainbowd-{release}")["spec"]["selector"],
        )

    def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    def names(release: str) -> set[tuple[str, str]]:
        docs = helm_template(release=release, namespace="platform")
        return {(d["kind"], d["metadata"]["name"]) for d in docs}

    # No object of one is the other's: helm would refuse to install the second.
    assert not names("chat") & names("xmpp"), names("chat") & names("xmpp")
    chat_deployment, chat_pods, chat_service = selects("chat")
    xmpp_deployment, xmpp_pods, xmpp_service = selects("xmpp")
    assert matches(chat_deployment, chat_pods) and matches(chat_service, chat_pods)
    assert matches(xmpp_deployment, xmpp_pods) and matches(xmpp_service, xmpp_pods)
    assert not matches(chat_deployment, xmpp_pods) and not matches(chat_service, xmpp_pods)
    assert not matches(xmpp_deployment, chat_pods) and not matches(xmpp_service, chat_pods)


def test_namespaced_mode_without_namespaces_is_refused() -> None:
    result = run(
        [helm(), "template", "rainbowd", CHART, "--set", "namespaced.enabled=true"], check=False
    )
    assert result.returncode != 0
    assert "namespaced.enabled needs namespaced.namespaces" in result.stderr


def test_the_grafana_alerts_query_the_data_source_named_in_the_values() -> None:
    docs = helm_template("--set", "monitoring.grafanaDatasourceUid=mimir-eu")
    text = _one(docs, "ConfigMap", "rainbowd-grafana-alerts")["data"]["grafana-alerts.yaml"]
    queries = [
        query
        for group in yaml.safe_load(text)["groups"]
        for rule in group["rules"]
        for query in rule["data"]
    ]
    prometheus = [q for q in queries if q["datasourceUid"] != "__expr__"]
    assert prometheus and all(q["datasourceUid"] == "mimir-eu" for q in prometheus)
    assert all(q["model"]["datasource"]["uid"] == "mimir-eu" for q in prometheus)


def test_a_data_source_uid_grafana_would_refuse_is_an_error_naming_the_value() -> None:
    chart = ROOT / "charts" / "rainbowd"
    value = "monitoring.grafanaDatasourceUid=my uid}"
    refused = run([helm(), "template", "rainbowd", chart, "--set", value], check=False)
    assert refused.returncode != 0
    assert 'monitoring.grafanaDatasourceUid: "my uid}" is not a Grafana uid' in refused.stderr


def test_another_release_s_service_monitor_scrapes_its_own_rainbowd() -> None:
    docs = helm_template(release="chat", namespace="platform")
    monitor = _one(docs, "ServiceMonitor", "rainbowd-chat")
    service = _one(docs, "Service", "rainbowd-chat")
    assert (
        service_monitor_problems(monitor, service, _one(docs, "Deployment", "rainbowd-chat")) == []
    )


def _network_policy_rules(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The rules of the render's NetworkPolicy in terms a reader checks: who may reach which port,
    and where rainbowd may go."""
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]

    def namespaces(peers: list[dict[str, Any]]) -> list[str]:
        return [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers]

    def ports(rule: dict[str, Any]) -> list[tuple[str, int]]:
        return [(p["protocol"], p["port"]) for p in rule["ports"]]

    return {
        "types": spec["policyTypes"],
        "ingress": [(namespaces(r["from"]), ports(r)) for r in spec["ingress"]],
        "egress": [(namespaces(r.get("to", [])), ports(r)) for r in spec["egress"]],
    }


def _expected_rules(docs: list[dict[str, Any]], policy_text: str) -> dict[str, Any]:
    """What the rules must say for this render: ingress on the container's `http` port from the
    namespace of the policy's Prometheus; egress to the apiserver, that Prometheus' port, DNS."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (http,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    url = urlsplit(yaml.safe_load(policy_text)["prometheus"]["url"])
    assert url.hostname is not None and url.port is not None
    monitoring = url.hostname.split(".")[1]
    return {
        "types": ["Ingress", "Egress"],
        "ingress": [([monitoring], [("TCP", http)])],
        "egress": [
            ([], [("TCP", 443), ("TCP", 6443)]),
            ([monitoring], [("TCP", url.port)]),
            ([], [("UDP", 53), ("TCP", 53)]),
        ],
    }


@pytest.mark.parametrize(
    "render",
    ["k8s", "k8s/base", "k8s/namespaced", "chart", "chart-namespaced"],
)
def test_the_network_policy_lets_in_only_monitoring_and_out_only_to_what_rainbowd_uses(
    render: str,
) -> None:
    if render.startswith("chart"):
        docs = helm_template(*(NAMESPACED if render == "chart-namespaced" else ()))
        policy_text = yaml.safe_load((CHART / "values.yaml").read_text())["policy"]
    else:
        docs = kustomize(render)
        policy_text = _one(docs, "ConfigMap", "rainbowd-policy")["data"]["policy.yaml"]
    assert _network_policy_rules(docs) == _expected_rules(docs, policy_text)
    assert _expected_rules(docs, policy_text)["ingress"] == [(["monitoring"], [("TCP", 8080)])]


def test_the_network_policy_follows_its_values_and_can_be_left_out() -> None:
    docs = helm_template(
        "--set",
        "networkPolicy.monitoringNamespace=observability",
        "--set",
        "networkPolicy.prometheusPort=9009",
        "--set",
        "networkPolicy.apiServerPorts={443}",
        release="chat",
        namespace="platform",
    )
    rules = _network_policy_rules(docs)
    assert rules["ingress"] == [(["observability"], [("TCP", 8080)])]
    assert rules["egress"] == [
        ([], [("TCP", 443)]),
        (["observability"], [("TCP", 9009)]),
        ([], [("UDP", 53), ("TCP", 53)]),
    ]
    assert _one(docs, "NetworkPolicy", "rainbowd-chat")["metadata"]["namespace"] == "platform"
    left_out = helm_template("--set", "networkPolicy.enabled=false")
    assert not [d for d in left_out if d["kind"] == "NetworkPolicy"]


# --- shards -----------------------------------------------------------------------------------

SHARDS = {
    "shards": [
        {"name": "eu", "namespaces": ["chat-eu", "xmpp-eu"]},
        {"name": "us", "namespaces": ["chat-us"], "selector": "tier in (chat,xmpp)"},
    ]
}


def _values(tmp_path: Path, values: dict[str, Any]) -> tuple[str, str]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return ("-f", str(path))


def _args(deployment: dict[str, Any]) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_default_is_one_unnamed_shard_rendering_as_before() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["shards"] == [{"name": "", "namespaces": [], "selector": ""}]
    (deployment,) = [d for d in helm_template() if d["kind"] == "Deployment"]
    assert deployment["metadata"]["name"] == "rainbowd"
    assert not [a for a in _args(deployment) if a.startswith(("--namespaces", "--selector"))]


def test_each_shard_is_a_deployment_with_its_own_namespaces_lease_and_service(
    tmp_path: Path,
) -> None:
    docs = helm_template(*_values(tmp_path, SHARDS), release="chat", namespace="platform")
    eu = _one(docs, "Deployment", "rainbowd-chat-eu")
    us = _one(docs, "Deployment", "rainbowd-chat-us")
    assert len([d for d in docs if d["kind"] == "Deployment"]) == 2
    assert {"--namespaces=chat-eu,xmpp-eu", "--lease-name=rainbowd-chat-eu"} <= set(_args(eu))
    assert {"--namespaces=chat-us", "--lease-name=rainbowd-chat-us"} <= set(_args(us))
    assert "--selector=tier in (chat,xmpp)" in _args(us)
    assert not [a for a in _args(eu) if a.startswith("--selector")]
    for deployment in (eu, us):
        assert "--lease-namespace=platform" in _args(deployment)
        assert "--policy-configmap=platform/rainbowd-chat-policy" in _args(deployment)
    # Each Deployment and Service selects its own shard's pods only; the NetworkPolicy all.
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in (eu, us)}
    for name, deployment in (("rainbowd-chat-eu", eu), ("rainbowd-chat-us", us)):
        service = _one(docs, "Service", name)
        for selector in (
            deployment["spec"]["selector"]["matchLabels"],
            service["spec"]["selector"],
        ):
            assert [n for n, labels in pods.items() if _labels_match(selector, labels)] == [name]
        monitor = _one(docs, "ServiceMonitor", "rainbowd-chat")
        assert service_monitor_problems(monitor, service, deployment) == []
    # The ServiceMonitor labels each target with its pod's shard, for the per-shard alerts
    # (Prometheus' Kubernetes discovery writes a pod label's key with _ for what is not a word).
    (shard,) = [key for key in pods["rainbowd-chat-eu"] if key.endswith("/shard")]
    relabelings = _one(docs, "ServiceMonitor", "rainbowd-chat")["spec"]["endpoints"][0][
        "relabelings"
    ]
    assert [r["sourceLabels"] for r in relabelings if r.get("targetLabel") == "shard"] == [
        ["__meta_kubernetes_pod_label_" + re.sub(r"\W", "_", shard)]
    ]
    policy = _one(docs, "NetworkPolicy", "rainbowd-chat")["spec"]["podSelector"]["matchLabels"]
    assert all(_labels_match(policy, labels) for labels in pods.values())
    # One ServiceAccount and its permissions for all; the Role holds both Leases, no more.
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"] == [
        "rainbowd-chat"
    ]
    assert {d["spec"]["template"]["spec"]["serviceAccountName"] for d in (eu, us)} == {
        "rainbowd-chat"
    }
    role = _one(docs, "Role", "rainbowd-chat")
    leases = [r for r in role["rules"] if r["resources"] == ["leases"] and "resourceNames" in r]
    assert [r["resourceNames"] for r in leases] == [["rainbowd-chat-eu", "rainbowd-chat-us"]]
    _one(docs, "ClusterRoleBinding", "rainbowd-chat")


def test_shards_in_namespaced_mode_get_roles_where_they_manage(tmp_path: Path) -> None:
    values = {
        "namespaced": {"enabled": True, "namespaces": ["team-a", "team-b"]},
        "monitoring": {"enabled": False},
        "shards": [
            {"name": "a", "namespaces": ["team-a"]},
            {"name": "b", "namespaces": ["team-b"]},
        ],
    }
    docs = helm_template(*_values(tmp_path, values))
    assert "--namespaces=team-a" in _args(_one(docs, "Deployment", "rainbowd-a"))
    assert "--namespaces=team-b" in _args(_one(docs, "Deployment", "rainbowd-b"))
    roles = {d["metadata"]["namespace"] for d in docs if d["kind"] == "Role"}
    assert roles == {"team-a", "team-b", "rainbowd"}
    assert not [d for d in docs if d["kind"].startswith("Cluster")]


def test_shards_with_selectors_naming_one_label_apart_may_share_namespaces(
    tmp_path: Path,
) -> None:
    values = {
        "shards": [
            {"name": "chat", "namespaces": ["apps"], "selector": "tier=chat,team=x"},
            {"name": "web", "selector": "tier==web"},
        ]
    }
    docs = helm_template(*_values(tmp_path, values))
    assert "--selector=tier=chat,team=x" in _args(_one(docs, "Deployment", "rainbowd-chat"))
    web = _args(_one(docs, "Deployment", "rainbowd-web"))
    assert "--selector=tier==web" in web
    assert not [a for a in web if a.startswith("--namespaces")]


@pytest.mark.parametrize("values", [SHARDS], ids=["shards"])
def test_helm_lint_is_clean_with_shards(tmp_path: Path, values: dict[str, Any]) -> None:
    result = run([helm(), "lint", "--strict", CHART, *_values(tmp_path, values)])
    out = result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    for level in ("[INFO]", "[WARNING]", "[ERROR]"):
        assert level not in out, out


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"shards": []}, "shards: the list is empty"),
        ({"shards": {"name": "a"}}, "shards: expected a list"),
        ({"shards": ["a"]}, "shards[0]: expected a mapping"),
        (
            {"shards": [{"name": "a", "namespace": ["x"]}]},
            "shards[0].namespace: unknown key",
        ),
        (
            {"shards": [{"name": "a", "namespaces": ["x"]}, {"namespaces": ["z"]}]},
            "shards[1].name: missing: with several shards each needs a name",
        ),
        ({"shards": [{"name": "EU"}]}, 'shards[0].name: "EU" is not a name'),
        (
            {"shards": [{"name": "a", "namespaces": ["x"]}, {"name": "a", "namespaces": ["z"]}]},
            'shards[1].name: "a" is also the name of shards[0]',
        ),
        ({"shards": [{"name": "a", "namespaces": ["Not_A_Name"]}]}, '"Not_A_Name" is not a'),
        # YAML 1.1, as Helm reads it: an unquoted y is a boolean.
        ({"shards": [{"name": "a", "namespaces": [True]}]}, "true is a bool, not a namespace"),
        (
            {
                "shards": [
                    {"name": "a", "namespaces": ["x", "z"]},
                    {"name": "b", "namespaces": ["z"]},
                ]
            },
            "shards[1] overlaps shards[0] in namespace z",
        ),
        (
            {"shards": [{"name": "a", "namespaces": ["x"]}, {"name": "b"}]},
            "shards[1] overlaps shards[0] in every namespace (it lists none)",
        ),
        (
            {"shards": [{"name": "a"}, {"name": "b", "namespaces": ["x"]}]},
            "shards[1] overlaps shards[0] in every namespace (shards[0] lists none)",
        ),
        (
            # Different labels: a Deployment labelled tier=chat and team=web matches both.
            {
                "shards": [
                    {"name": "a", "namespaces": ["x"], "selector": "tier=chat"},
                    {"name": "b", "namespaces": ["x"], "selector": "team=web"},
                ]
            },
            "shards[1] overlaps shards[0] in namespace x",
        ),
        (
            {
                "shards": [
                    {"name": "a", "namespaces": ["x"], "selector": "tier!=chat"},
                    {"name": "b", "namespaces": ["x"], "selector": "tier=chat"},
                ]
            },
            "shards[1] overlaps shards[0] in namespace x",
        ),
        (
            {
                "namespaced": {"enabled": True, "namespaces": ["team-a"]},
                "shards": [{"name": "a", "namespaces": ["team-b"]}],
            },
            'shards[0].namespaces: "team-b" is not in namespaced.namespaces',
        ),
    ],
    ids=[
        "empty",
        "not-a-list",
        "not-a-mapping",
        "unknown-key",
        "unnamed",
        "bad-name",
        "same-name",
        "bad-namespace",
        "boolean-namespace",
        "shared-namespace",
        "later-has-all",
        "earlier-has-all",
        "selectors-on-different-labels",
        "not-equal-is-no-proof",
        "outside-namespaced-roles",
    ],
)
def test_a_bad_shard_list_is_refused_naming_the_shard(
    tmp_path: Path, values: dict[str, Any], complaint: str
) -> None:
    argv: list[str | Path] = [helm(), "template", "rainbowd", CHART, *_values(tmp_path, values)]
    refused = run(argv, check=False)
    assert refused.returncode != 0
    assert complaint in refused.stderr, refused.stderr
