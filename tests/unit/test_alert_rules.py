"""The alert rules shipped in k8s/monitoring/ parse and behave as their unit tests say."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "k8s" / "monitoring" / "alerts.yaml"
RULE_TESTS = ROOT / "tests" / "promtool" / "alerts_test.yaml"


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
