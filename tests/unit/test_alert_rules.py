"""The alert rules shipped in k8s/monitoring/ parse and behave as their unit tests say, both as
the plain rule file and as the groups of the PrometheusRule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "k8s" / "monitoring" / "alerts.yaml"
RULE_TESTS = ROOT / "tests" / "promtool" / "alerts_test.yaml"
PROMETHEUS_RULE = ROOT / "k8s" / "monitoring" / "prometheusrule.yaml"


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make setup` (Debian package prometheus)"
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_alert_rules_are_valid() -> None:
    result = _promtool("check", "rules", str(RULES), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_alert_rules_unit_tests_pass() -> None:
    result = _promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The promtool harness can fail: flip one expectation and it must report a failure."""
    broken = RULE_TESTS.read_text().replace(
        "alertname: RainbowdNoLeader\n        exp_alerts: []",
        "alertname: RainbowdNoLeader\n        exp_alerts: [{exp_labels: {severity: warning}}]",
    )
    assert broken != RULE_TESTS.read_text()
    target = tmp_path / "alerts_test.yaml"
    target.write_text(broken.replace("../../k8s/monitoring/alerts.yaml", str(RULES)))
    result = _promtool("test", "rules", target.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def _prometheus_rule_groups(tmp_path: Path) -> Path:
    """The PrometheusRule's spec, as the rule file the Operator hands its Prometheus."""
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    path = tmp_path / "prometheusrule-groups.yaml"
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))
    return path


def test_prometheus_rule_groups_are_valid(tmp_path: Path) -> None:
    groups = _prometheus_rule_groups(tmp_path)
    result = _promtool("check", "rules", str(groups), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(
        len(group["rules"])
        for path in (RULES, RECORDING)
        for group in yaml.safe_load(path.read_text())["groups"]
    )
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_prometheus_rule_groups_pass_the_rule_unit_tests(tmp_path: Path) -> None:
    groups = _prometheus_rule_groups(tmp_path)
    text = RULE_TESTS.read_text()
    assert "../../k8s/monitoring/alerts.yaml" in text
    target = tmp_path / "alerts_test.yaml"
    target.write_text(text.replace("../../k8s/monitoring/alerts.yaml", groups.name))
    result = _promtool("test", "rules", target.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


RECORDING = ROOT / "k8s" / "monitoring" / "recording-rules.yaml"
RECORDING_TESTS = ROOT / "tests" / "promtool" / "recording_test.yaml"


def test_recording_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = _promtool("check", "rules", str(RECORDING), cwd=ROOT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 3 rules found" in checked.stdout
    tested = _promtool("test", "rules", RECORDING_TESTS.name, cwd=RECORDING_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_wrong_recorded_figure_fails(tmp_path: Path) -> None:
    broken = RECORDING_TESTS.read_text().replace("value: 8", "value: 11")
    assert broken != RECORDING_TESTS.read_text()
    target = tmp_path / "recording_test.yaml"
    target.write_text(broken.replace("../../k8s/monitoring/recording-rules.yaml", str(RECORDING)))
    result = _promtool("test", "rules", target.name, cwd=tmp_path)
    assert result.returncode != 0
