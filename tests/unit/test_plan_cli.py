"""`rainbowd plan`: files in, table or JSON out; bad input names the file and the path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rainbowd.cli import main

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "config" / "examples" / "snapshot.yaml"
POLICY = """\
apiVersion: rainbowd.io/v1alpha1
kind: DrainPolicy
rules:
  - name: rainbow-deploys
    selector: app=rainbow-deploys
    minRetiredAge: 10m
    drainHold: 2m
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_the_example_tells_the_seed_story(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--policy", str(policy_file), "--snapshot", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    states = {
        line.split()[2]: line.split()[3]
        for line in out.splitlines()[1:]
        if line.strip() and line.startswith("default")
    }
    assert states == {
        "9d2cc9": "live",
        "3c3fdc": "draining",
        "5e1f0a": "drained",
        "b7a9e2": "scaled-down",
    }
    assert "1 action: 1 scale" in out


def test_the_example_with_the_example_policy(capsys: pytest.CaptureFixture[str]) -> None:
    policy = ROOT / "config" / "policy.yaml"
    assert main(["plan", "--policy", str(policy), "--snapshot", str(EXAMPLE), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    colors = {c["color"]: c for a in doc["apps"] for c in a["colors"]}
    assert colors["5e1f0a"]["actions"][0]["reason"] == "drained"
    assert colors["9d2cc9"]["actions"] == [] and colors["9d2cc9"]["state"] == "live"


def test_now_flag_and_json_snapshot(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(json.dumps(yaml.safe_load(EXAMPLE.read_text())))
    # At 11:51 the drained color has been at 0 for only 1 of drainHold's 2 minutes.
    argv = ["plan", "--policy", str(policy_file), "--snapshot", str(snapshot)]
    assert main([*argv, "--now", "2026-11-21T11:51:00Z", "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["now"] == "2026-11-21T11:51:00Z"
    colors = {c["color"]: c for a in doc["apps"] for c in a["colors"]}
    assert colors["5e1f0a"]["state"] == "draining" and colors["5e1f0a"]["actions"] == []


def test_bad_snapshot_names_file_and_paths(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    del doc["items"][1]["metadata"]["creationTimestamp"]
    doc["connections"][0]["value"] = "lots"
    snapshot = tmp_path / "broken.yaml"
    snapshot.write_text(yaml.safe_dump(doc))
    assert main(["plan", "--policy", str(policy_file), "--snapshot", str(snapshot)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = captured.err.splitlines()
    assert len(errors) == 2
    assert all(line.startswith(f"rainbowd plan: {snapshot}: ") for line in errors)
    assert "items[1]:" in errors[0] and "creationTimestamp" in errors[0]
    assert "connections[0].value:" in errors[1]


def test_bad_yaml_names_the_line(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snapshot = tmp_path / "bad.yaml"
    snapshot.write_text("items:\n  - kind: Service\n   metadata: {\n")
    assert main(["plan", "--policy", str(policy_file), "--snapshot", str(snapshot)]) == 1
    err = capsys.readouterr().err
    assert f"{snapshot}: line " in err and "not valid YAML" in err


def test_bad_policy_and_missing_snapshot_are_both_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("drainHold: 2m", "drainHold: soon"))
    missing = tmp_path / "nope.yaml"
    assert main(["plan", "--policy", str(policy), "--snapshot", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"{policy}: rules[0].drainHold" in err
    assert f"{missing}: cannot read" in err


def test_bad_now_is_a_usage_error(policy_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plan", "--policy", str(policy_file), "--snapshot", str(EXAMPLE), "--now", "noon"])
    assert info.value.code == 2
    assert "RFC 3339" in capsys.readouterr().err
