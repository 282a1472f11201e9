"""`rainbowd check-policy` as a user runs it: a subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from rainbowd.core.policy import (
    KNOB_KEYS,
    KNOBS,
    PRESET_NAMES,
    PRESETS,
    ConnectionsQuery,
    Knobs,
    parse_policy,
    series_expr,
)
from rainbowd.core.scalers import AUTOSCALERS
from rainbowd.policyfile import load_policy_file

POLICIES = Path(__file__).parent / "policies"
REPO = Path(__file__).parents[2]


def check_policy(
    *args: str, cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rainbowd", "check-policy", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        timeout=60,
        # The tests run from a temporary directory: make sure this checkout is the one imported.
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def write(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


HEADER = "apiVersion: rainbowd.io/v1alpha1\nkind: DrainPolicy\n"


def test_errors_go_to_stderr_prefixed_with_the_file_name_and_exit_1(tmp_path: Path) -> None:
    write(
        tmp_path,
        HEADER + "rules:\n  - name: chat\n    maxColors: 0\n    connectionFloor: ten\n",
    )
    proc = check_policy("policy.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        'policy.yaml: rules[0].connectionFloor: expected a non-negative integer, got "ten"',
        "policy.yaml: rules[0].maxColors: must be >= 1, got 0",
    ]


def test_the_multi_error_corpus_document_prints_every_error(tmp_path: Path) -> None:
    source = POLICIES / "invalid" / "multiple-errors.yaml"
    write(tmp_path, source.read_text(encoding="utf-8"))
    proc = check_policy("policy.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    expected = source.with_suffix(".expected").read_text(encoding="utf-8")
    assert proc.stderr == expected


def test_not_yaml_names_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, HEADER + "dryRun: true: false\n", name="bad.yaml")
    proc = check_policy("bad.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == (
        "bad.yaml: line 3, column 13: not valid YAML: mapping values are not allowed here\n"
    )


def test_missing_file_exits_1(tmp_path: Path) -> None:
    proc = check_policy("absent.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "absent.yaml: cannot read: No such file or directory\n"


def test_valid_policy_lists_every_rule_with_effective_knobs(tmp_path: Path) -> None:
    write(
        tmp_path,
        HEADER
        + "defaults: {connectionFloor: 5, abandonedAfter: 2h}\n"
        + "rules:\n"
        + "  - name: chat\n    namespaces: [chat, chat-eu]\n    selector: app=chat\n"
        + "    maxColors: null\n    maxRetiredAge: null\n    connectionFloor: 25\n"
        + "  - name: rest\n",
    )
    proc = check_policy("policy.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    assert out.startswith("policy.yaml: valid, 2 rules (first match wins)\n")
    chat, rest = out.split("\nrule ")[1:]
    assert chat.splitlines()[:5] == [
        "chat",
        "  namespaces:      chat, chat-eu",
        "  selector:        app=chat",
        "  kinds:           Deployment",
        "  connections:     rainbow_open_connections{}  (by namespace, app, color; source raw)",
    ]
    # A row for every knob of the table, in its order: those set here say so, with the default
    # they override; the rest read as the built-in defaults do (a few spelled out).
    overridden = {
        "connectionFloor": "25  (defaults: 5)",
        "maxColors": "no cap  (defaults: 4)",
        "maxRetiredAge": "never  (defaults: 72h)",
        "abandonedAfter": "2h",
    }
    built_in = {
        "drainHold": "5m",
        "action": "scale-then-delete",
        "maxDisruptions": "1 per 10m",
        "consolidate": "never",
    }
    assert chat.splitlines()[5:] == [
        f"  {key + ':':<17}{overridden.get(key) or built_in.get(key) or knob.text(Knobs())}"
        for key, knob in zip(KNOB_KEYS, KNOBS, strict=True)
    ]
    assert "  namespaces:      all" in rest.splitlines()
    assert "  selector:        (any labels)" in rest.splitlines()
    assert "  connectionFloor: 5" in rest.splitlines()


def test_consolidation_shows_its_knobs_and_says_when_it_is_unavailable(tmp_path: Path) -> None:
    write(
        tmp_path,
        HEADER
        + "defaults: {consolidate: {after: 1h}, stepDown: {maxPods: 2}}\n"
        + "rules:\n"
        + "  - name: chat\n    namespaces: [chat]\n"
        + "  - name: free\n    connections: {query: 'sum by (namespace, app, color) (x)'}\n",
    )
    proc = check_policy("policy.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    chat, free = proc.stdout.split("\nrule ")[1:]
    lines = chat.splitlines()
    assert "  consolidate:     after 1h, every 5m, keepPods 1" in lines
    assert "  stepDown:        every 1h, maxPods 2" in lines
    # Under the last knob's row, whichever knob that is.
    assert lines[-3:] == [
        '                   per-pod series by the "pod" label, which each series must carry',
        *(f"                   {line}" for line in AUTOSCALERS),
    ]
    assert any("unpaused KEDA ScaledObject" in line for line in AUTOSCALERS)
    unavailable = (
        "consolidation unavailable: the connections are a free query, so the per-pod series "
        "cannot be asked for (use metric and matchers, with the pod label on the series)"
    )
    assert free.splitlines()[-1] == f"                   {unavailable}"
    assert proc.stderr == f"policy.yaml: warning: rules[1]: {unavailable}\n"


def test_no_rules_warns_but_exits_0(tmp_path: Path) -> None:
    write(tmp_path, HEADER)
    proc = check_policy("policy.yaml", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stderr == (
        "policy.yaml: warning: rules: no rules, so no Deployment will be managed\n"
    )
    assert proc.stdout.startswith("policy.yaml: valid, 0 rules")


def test_json_output_is_the_effective_document(tmp_path: Path) -> None:
    path = POLICIES / "valid" / "overrides.yaml"
    proc = check_policy("--output", "json", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["rules"][0]["maxColors"] is None
    assert document["rules"][1]["abandonedAfter"] == "12h"
    assert parse_policy(document) == load_policy_file(path)


def test_reads_standard_input(tmp_path: Path) -> None:
    proc = check_policy("-", cwd=tmp_path, stdin=HEADER + "paused: 1\n")
    assert proc.returncode == 1
    assert proc.stderr == "<stdin>: paused: expected true or false, got 1\n"


def test_the_example_policy_checks_clean() -> None:
    proc = check_policy("config/policy.yaml", cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "\nrule rainbow-deploys\n" in proc.stdout


def test_a_configmap_file_is_read_through_its_policy_key(tmp_path: Path) -> None:
    proc = check_policy(str(POLICIES / "valid" / "configmap.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "  drainHold:       2m  (defaults: 5m)" in proc.stdout.splitlines()


def test_no_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = check_policy(cwd=tmp_path)
    assert proc.returncode == 2
    assert "FILE" in proc.stderr


def test_the_source_in_force_and_the_rules_it_reads(tmp_path: Path) -> None:
    write(
        tmp_path,
        HEADER
        + "connections: {metric: chat_sessions, source: recorded, ruleInterval: 30s}\n"
        + "rules:\n  - name: chat\n",
    )
    proc = check_policy("policy.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("  connections:")]
    assert "source recorded: the series of the rule group rainbowd-connections" in line
    assert "evaluated every 30s" in line
    assert "history seeded from rainbowd:connections:sum" in line
    assert "per-pod figures (consolidation, deletion costs) from the raw series" in line
    rules = check_policy("-o", "rules", "policy.yaml", cwd=tmp_path)
    assert rules.returncode == 0, rules.stderr
    (group,) = yaml.safe_load(rules.stdout)["groups"]
    assert group["interval"] == "30s"
    assert group["rules"][0] == {
        "record": "rainbowd:connections:sum",
        "expr": "sum by (namespace, app, color) (chat_sessions{})",
        "labels": {"rainbowd_part": "sum"},
    }


def test_rules_recording_two_queries_cannot_be_printed_as_one(tmp_path: Path) -> None:
    write(
        tmp_path,
        HEADER
        + "rules:\n"
        + "  - name: a\n    connections: {metric: a_sessions, source: recorded}\n"
        + "  - name: b\n    connections: {metric: b_sessions, source: recorded}\n",
    )
    proc = check_policy("-o", "rules", "policy.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert "rules a, b read recorded series of different queries" in proc.stderr


def test_namespaces_show_the_queries_a_shard_sends(tmp_path: Path) -> None:
    write(
        tmp_path,
        HEADER
        + "connections: {metric: conns, matchers: 'job=\"chat\"'}\n"
        + "rules:\n  - name: chat\n    selector: app=chat\n"
        + "  - name: free\n    connections: {query: 'sum by (namespace, app, color) (x)'}\n",
    )
    whole = check_policy("policy.yaml", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert 'conns{job="chat"}  (by namespace, app, color; source raw)' in whole.stdout
    assert whole.stderr == ""
    shard = check_policy("--namespaces=team-b,team-a", "policy.yaml", cwd=tmp_path)
    assert shard.returncode == 0, shard.stderr
    assert (
        'conns{job="chat", namespace=~"team-a|team-b"}  (by namespace, app, color; source raw)'
        in shard.stdout
    )
    assert shard.stderr.splitlines() == [
        'policy.yaml: warning: rules[1] ("free"): its connections query is free PromQL, sent as'
        " written, not narrowed to the namespaces managed (team-a, team-b): Prometheus"
        " evaluates it over every namespace"
    ]
    refused = check_policy("--namespaces=Team_A", "policy.yaml", cwd=tmp_path)
    assert refused.returncode == 2
    assert "not a namespace name: 'Team_A'" in refused.stderr


def test_each_preset_prints_its_expansion_and_its_caveats(tmp_path: Path) -> None:
    rules = "".join(
        f"  - name: {name}\n    namespaces: [{name}]\n    connections: {{preset: {name}}}\n"
        for name in PRESET_NAMES
    )
    write(tmp_path, HEADER + "rules:\n" + rules)
    proc = check_policy("policy.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    shown = {rule.split("\n", 1)[0]: rule for rule in proc.stdout.split("\nrule ")[1:]}
    # What each preset's text must say, the caveats the cookbook gives (README, Connections).
    says = {
        "linkerd": ['tcp_open_connections{direction="inbound", peer="src"}', "skip-inbound-ports"],
        "istio": [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
            "every 15s",
            "ports Istio treats as HTTP",
            "ambient",
        ],
        "haproxy": ["haproxy_server_current_sessions", "server name", "namespace label"],
        "envoy": ["envoy_cluster_endpoint_cx_active", "off by default", "does not guess"],
    }
    for name in PRESET_NAMES:
        lines = shown[name].splitlines()
        (connections,) = [line for line in lines if line.startswith("  connections:")]
        assert series_expr(ConnectionsQuery(preset=name)) in connections
        text = " ".join(lines)
        assert all(phrase in text for phrase in says.get(name, [])), (name, text)
        caveats = [line.strip() for line in lines if line.strip().startswith("caveat: ")]
        assert caveats == [f"caveat: {c}" for c in PRESETS[name].caveats]
        # The default preset's listing is as it was: no preset lines.
        assert (f"preset {name}:" in text) == (name != "default")


def test_the_recording_rules_of_a_preset(tmp_path: Path) -> None:
    write(tmp_path, HEADER + "connections: {preset: istio, source: recorded}\nrules: []\n")
    rules = check_policy("-o", "rules", "policy.yaml", cwd=tmp_path)
    assert rules.returncode == 0, rules.stderr
    (group,) = yaml.safe_load(rules.stdout)["groups"]
    series = series_expr(ConnectionsQuery(preset="istio"))
    assert group["rules"][0]["expr"] == f"sum by (namespace, app, color) ({series})"
