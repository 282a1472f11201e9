"""Snapshot files: kubectl List output plus now: and connections:, and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rainbowd.core.model import Connections, Snapshot
from rainbowd.core.snapshots import SnapshotError, snapshot_from_document, snapshot_to_document
from tests.unit.strategies import NOW, snapshots

EXAMPLE = Path(__file__).parents[2] / "config" / "examples" / "snapshot.yaml"
DEFAULT_NOW = datetime(2030, 1, 1, tzinfo=UTC)


def deployment_item(**meta: Any) -> dict[str, Any]:
    metadata = {
        "name": "rainbow-deploys-3c3fdc",
        "namespace": "default",
        "creationTimestamp": "2026-11-21T10:00:00Z",
        "labels": {"app": "rainbow-deploys"},
    }
    metadata.update(meta)
    return {
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"labels": {"app": "rainbow-deploys", "color": "3c3fdc"}}},
        },
    }


def test_the_example_file_reads() -> None:
    snap = snapshot_from_document(yaml.safe_load(EXAMPLE.read_text()), default_now=DEFAULT_NOW)
    assert snap.now == datetime(2026, 11, 21, 12, tzinfo=UTC)
    ns = snap.namespaces["default"]
    assert len(ns.deployments) == 4 and len(ns.services) == 1
    assert all("color" not in d.labels for d in ns.deployments)
    assert ns.connections[("rainbow-deploys", "3c3fdc")] == Connections(value=4.0, series=2)


def test_now_defaults_and_unquoted_yaml_timestamps() -> None:
    doc = {"items": [deployment_item()]}
    assert snapshot_from_document(doc, default_now=DEFAULT_NOW).now == DEFAULT_NOW
    text = "now: 2026-11-21T12:00:00Z\nitems: []\n"  # YAML makes this a datetime
    assert snapshot_from_document(yaml.safe_load(text), default_now=DEFAULT_NOW).now == NOW
    unquoted = yaml.safe_load(
        "items:\n- kind: Deployment\n"
        "  metadata: {name: a, creationTimestamp: 2026-11-21T10:00:00Z}\n"
    )
    snap = snapshot_from_document(unquoted, default_now=DEFAULT_NOW)
    assert snap.namespaces["default"].deployments[0].created_at == NOW - timedelta(hours=2)


@pytest.mark.parametrize("value", [None, "NaN", "nan", "+Inf", float("nan"), float("inf")])
def test_unknown_connections(value: object) -> None:
    doc = {"connections": [{"namespace": "a", "app": "b", "color": "c", "value": value}]}
    snap = snapshot_from_document(doc, default_now=DEFAULT_NOW)
    got = snap.connections_for("a", "b", "c")
    assert got.value is None and got.cause


def test_connections_keep_series_and_cause() -> None:
    doc = {
        "connections": [
            {"namespace": "a", "app": "b", "color": "c", "value": None, "cause": "timeout"},
            {"namespace": "a", "app": "b", "color": "d", "value": 3, "series": 1},
        ]
    }
    snap = snapshot_from_document(doc, default_now=DEFAULT_NOW)
    assert snap.connections_for("a", "b", "c") == Connections(value=None, cause="timeout")
    assert snap.connections_for("a", "b", "d") == Connections(value=3.0, series=1)


def test_every_error_is_reported_with_its_path() -> None:
    doc = {
        "now": "noon",
        "extra": 1,
        "items": [
            deployment_item(),
            {"kind": "Pod", "metadata": {"name": "p"}},
            deployment_item(creationTimestamp=None),
            "nonsense",
        ],
        "connections": [
            {"namespace": "a", "app": "b", "color": "c", "value": "ten"},
            {"namespace": "a", "app": "", "color": "c", "value": 1, "serie": 2},
            {"namespace": "a", "app": "b", "color": "d", "value": -1, "series": True},
        ],
    }
    with pytest.raises(SnapshotError) as info:
        snapshot_from_document(doc, default_now=DEFAULT_NOW)
    errors = info.value.errors
    expected = [
        "now:",
        "extra: unknown key",
        "items[1].kind: expected Deployment, Service, Rollout or ReplicaSet",
        "items[2]: Deployment default/rainbow-deploys-3c3fdc: metadata.creationTimestamp",
        "items[3]: expected a Kubernetes object",
        "connections[0].value: expected a number",
        "connections[1].app: expected a non-empty string",
        "connections[1].serie: unknown key",
        "connections[2].value: expected a non-negative number",
        "connections[2].series: expected a non-negative integer",
    ]
    for prefix in expected:
        assert any(e.startswith(prefix) for e in errors), (prefix, errors)
    assert len(errors) == len(expected)
    assert isinstance(info.value, ValueError)


def test_duplicate_connections_are_an_error() -> None:
    entry = {"namespace": "a", "app": "b", "color": "c", "value": 1}
    with pytest.raises(SnapshotError, match=r"connections\[1\]: a/b/c is listed twice"):
        snapshot_from_document({"connections": [entry, entry]}, default_now=DEFAULT_NOW)


@pytest.mark.parametrize("doc", [None, [], "items"])
def test_not_a_mapping(doc: object) -> None:
    with pytest.raises(SnapshotError):
        snapshot_from_document(doc, default_now=DEFAULT_NOW)


@settings(max_examples=300, deadline=None)
@given(snapshots(), st.sampled_from(["json", "yaml"]))
def test_round_trip(snap: Snapshot, form: str) -> None:
    doc = snapshot_to_document(snap)
    if form == "yaml":
        doc = yaml.safe_load(yaml.safe_dump(doc))
    back = snapshot_from_document(doc, default_now=DEFAULT_NOW)
    assert back.now == snap.now
    assert set(back.namespaces) == set(snap.namespaces)
    for name, ns in snap.namespaces.items():
        assert back.namespaces[name] == ns
