"""The install files generated from others agree with their sources: the PrometheusRule with the
plain rule file, the Helm chart's copies and default policy with k8s/ (scripts/sync_manifests.py
writes them; its --check mode is what runs here)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "sync_manifests.py"


def _sync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_manifests", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _copy_tree(sync: ModuleType, root: Path) -> None:
    """The script's sources and outputs, copied under `root`."""
    for name in (*sync.SOURCES, *sync.expected()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, root / name)


def test_generated_files_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_prometheus_rule_holds_exactly_the_rule_file_groups() -> None:
    rules = yaml.safe_load((ROOT / "k8s/monitoring/alerts.yaml").read_text())
    recording = yaml.safe_load((ROOT / "k8s/monitoring/recording-rules.yaml").read_text())
    rule = yaml.safe_load((ROOT / "k8s/monitoring/prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == {"groups": rules["groups"] + recording["groups"]}
    assert rule["spec"]["groups"][0]["rules"]


def test_the_chart_default_policy_is_the_shipped_policy() -> None:
    configmap = yaml.safe_load((ROOT / "k8s/base/policy-configmap.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts/rainbowd/values.yaml").read_text())
    assert values["policy"] == configmap["data"]["policy.yaml"]


def test_an_edited_source_is_reported(tmp_path: Path) -> None:
    """The check can fail: edit each kind of source in a copy and it names the stale output."""
    sync = _sync()
    _copy_tree(sync, tmp_path)
    assert sync.stale(tmp_path) == []

    alerts = tmp_path / "k8s/monitoring/alerts.yaml"
    alerts.write_text(alerts.read_text().replace("for: 5m", "for: 7m", 1))
    policy = tmp_path / "k8s/base/policy-configmap.yaml"
    policy.write_text(policy.read_text().replace("maxColors: 4", "maxColors: 5"))
    assert sync.stale(tmp_path) == [
        "k8s/monitoring/prometheusrule.yaml",
        "charts/rainbowd/files/alerts.yaml",
        "charts/rainbowd/values.yaml",
    ]
    # Rewriting from the edited sources brings them back in line.
    for name, text in sync.expected(tmp_path).items():
        (tmp_path / name).write_text(text)
    assert sync.stale(tmp_path) == []
    values = yaml.safe_load((tmp_path / "charts/rainbowd/values.yaml").read_text())
    assert "maxColors: 5" in values["policy"]
    assert "nodeSelector" in values  # the rest of values.yaml is untouched


def test_the_namespaced_roles_follow_the_flag_and_the_cluster_role(tmp_path: Path) -> None:
    sync = _sync()
    _copy_tree(sync, tmp_path)
    kustomization = tmp_path / "k8s/namespaced/kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text().replace("--namespaces=team-a,team-b", "--namespaces=chat")
    )
    rbac = tmp_path / "k8s/base/rbac.yaml"
    rbac.write_text(rbac.read_text().replace('verbs: ["create"]', 'verbs: ["create", "patch"]', 1))
    assert sync.stale(tmp_path) == [
        "charts/rainbowd/files/app-rules.yaml",
        "k8s/namespaced/apps-role.yaml",
        "k8s/namespaced/keda-role.yaml",
        "k8s/namespaced/argo-rollouts-role.yaml",
    ]
    roles = list(yaml.safe_load_all(sync.expected(tmp_path)["k8s/namespaced/apps-role.yaml"]))
    assert [(d["kind"], d["metadata"]["namespace"]) for d in roles] == [
        ("Role", "chat"),
        ("RoleBinding", "chat"),
    ]
    assert roles[0]["rules"][-1]["verbs"] == ["create", "patch"]
