"""The sandbox's pure parts: its policy, the pods' downward-API annotations, the quiet log."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from demo_app.serving import read_annotations
from rainbowd.core.policy import PolicyError
from rainbowd.policyfile import load_policy_text
from rainbowd_sandbox.controlplane import audit_events
from rainbowd_sandbox.pods import downward_annotations
from rainbowd_sandbox.runner import QuietCycles, sandbox_policy


def test_sandbox_policy_points_at_the_local_prometheus_with_overrides() -> None:
    text = sandbox_policy("http://127.0.0.1:41234", min_retired_age="12s", drain_hold="2s")
    policy = load_policy_text(text, source="test")
    assert policy.prometheus.url == "http://127.0.0.1:41234"
    assert policy.defaults.min_retired_age == timedelta(seconds=12)
    assert policy.defaults.drain_hold == timedelta(seconds=2)
    assert [rule.name for rule in policy.rules] == ["rainbow-deploys"]


def test_sandbox_policy_defaults_are_short_enough_for_a_demo() -> None:
    policy = load_policy_text(sandbox_policy("http://127.0.0.1:9090"), source="test")
    assert policy.defaults.min_retired_age == timedelta(seconds=30)
    assert policy.defaults.drain_hold == timedelta(seconds=10)
    assert policy.defaults.keep_scaled_down == 1


def test_a_bad_override_names_the_knob() -> None:
    with pytest.raises(PolicyError) as caught:
        sandbox_policy("http://127.0.0.1:9090", drain_hold="10 minutes")
    assert any("drainHold" in error for error in caught.value.errors), caught.value.errors


def test_downward_annotations_read_back_by_the_demo_app(tmp_path: Path) -> None:
    annotations = {"rainbowd.io/phase": "retired", "note": 'a "quoted" value\\ here'}
    path = tmp_path / "annotations"
    path.write_text(downward_annotations(annotations))
    assert read_annotations(path) == annotations


def _cycle(states: str, planned: int = 0) -> logging.LogRecord:
    record = logging.LogRecord("rainbowd.daemon", logging.INFO, "", 0, "cycle finished", (), None)
    record.rainbowd_fields = {"states": states, "planned": planned, "actions": "none"}
    return record


def test_quiet_cycles_shows_changes_and_actions_only() -> None:
    quiet = QuietCycles()
    shown = [
        quiet.filter(record)
        for record in (
            _cycle("live=1"),
            _cycle("live=1"),
            _cycle("live=1,pending=1"),
            _cycle("live=1,pending=1", planned=1),
            _cycle("live=1,pending=1", planned=1),
            _cycle("live=1,pending=1"),
            _cycle("live=1,pending=1"),
        )
    ]
    assert shown == [True, False, True, True, True, True, False]
    other = logging.LogRecord("rainbowd", logging.INFO, "", 0, "action applied", (), None)
    assert quiet.filter(other) and quiet.filter(other)


def test_an_audit_log_read_while_the_apiserver_writes_it_counts_only_whole_lines() -> None:
    whole = (
        '{"verb":"patch","objectRef":{"name":"a"}}\n{"verb":"delete","objectRef":{"name":"b"}}\n'
    )
    half = '{"verb":"patch","objectRef":{"na'
    assert [e["verb"] for e in audit_events(whole)] == ["patch", "delete"]
    assert [e["verb"] for e in audit_events(whole + half)] == ["patch", "delete"]
    assert audit_events(half) == []
    assert audit_events("") == []
