"""The Grafana dashboard in k8s/monitoring/ is well formed, every query in it parses in a real
Prometheus, and it only uses metric names rainbowd exports."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rainbowd.metrics import Metrics
from rainbowd_sandbox.prometheus import PrometheusServer

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "k8s" / "monitoring" / "grafana-dashboard.json"
KUSTOMIZATION = ROOT / "k8s" / "monitoring" / "kustomization.yaml"

# Grafana variables and what stands in for them when Prometheus checks a query.
SUBSTITUTIONS = {
    "namespace": ".*",
    "app": ".*",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
METRIC = re.compile(r"\brainbowd_[A-Za-z0-9_:]+")
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")
# prometheus_client exposes these series names for a family of each type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def _dashboard() -> dict[str, Any]:
    model = json.loads(DASHBOARD.read_text())
    assert isinstance(model, dict)
    return model


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _exprs(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and every query variable's selector."""
    found = [
        (f"panel {panel['id']} {panel['title']!r} target {target.get('refId')}", target["expr"])
        for panel in _panels(model["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in model["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = LABEL_VALUES.match(query.strip())
        assert match, f"variable {variable['name']}: not label_values(...): {query}"
        assert match.group(1), f"variable {variable['name']}: label_values without a metric"
        found.append((f"variable {variable['name']}", match.group(1)))
    return found


def _substitute(expr: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in SUBSTITUTIONS, f"unknown template variable ${name} in {expr}"
        return SUBSTITUTIONS[name]

    return VARIABLE.sub(replace, expr)


def _exported_names() -> set[str]:
    """Series names rainbowd's registry exposes, including the plan collector's (empty) families."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def _used_names(model: dict[str, Any]) -> set[str]:
    return {name for _, expr in _exprs(model) for name in METRIC.findall(expr)}


def _query(prometheus: PrometheusServer, expr: str) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode({"query": expr}).encode()
    request = urllib.request.Request(
        prometheus.url + "/api/v1/query",
        data=data,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_dashboard_model_is_well_formed() -> None:
    model = _dashboard()
    assert model["title"]
    assert model["uid"]
    assert 36 <= model["schemaVersion"] <= 41
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "app"):
        query = variables[name]["query"]
        query = query["query"] if isinstance(query, dict) else query
        assert query.startswith("label_values(rainbowd_colors"), query
        assert query.endswith(f", {name})"), query

    panels = list(_panels(model["panels"]))
    ids = [panel.get("id") for panel in panels]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        assert panel.get("title"), f"panel {panel['id']} has no title"
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        ref_ids = [target["refId"] for target in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert METRIC.search(target["expr"]), f"{panel['title']!r}: no rainbowd metric"


def test_dashboard_is_shipped_as_a_grafana_configmap() -> None:
    text = KUSTOMIZATION.read_text()
    assert "name: rainbowd-dashboard" in text
    assert "grafana-dashboard.json" in text
    assert 'grafana_dashboard: "1"' in text


def test_every_query_is_accepted_by_prometheus(prometheus: PrometheusServer) -> None:
    exprs = _exprs(_dashboard())
    assert len(exprs) >= 15
    rejected = []
    for where, expr in exprs:
        status, body = _query(prometheus, _substitute(expr))
        if status != 200 or body.get("status") != "success":
            rejected.append(f"{where}: {expr} -> {status} {body.get('error')}")
    assert not rejected, "\n".join(rejected)


def test_prometheus_rejects_a_broken_query(prometheus: PrometheusServer) -> None:
    """The check above can fail: a syntax error comes back as 400 bad_data."""
    status, body = _query(prometheus, "sum by (le (rate(rainbowd_actions_total[1m]))")
    assert status == 400
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"


def test_every_metric_the_dashboard_uses_is_exported() -> None:
    exported = _exported_names()
    used = _used_names(_dashboard())
    assert used, "the dashboard queries no rainbowd metric"
    missing = sorted(used - exported)
    assert not missing, f"not exported by rainbowd.metrics: {missing}"
    # The panels the dashboard is for.
    for name in (
        "rainbowd_colors",
        "rainbowd_color_connections",
        "rainbowd_color_retired_seconds",
        "rainbowd_color_state",
        "rainbowd_color_replicas",
        "rainbowd_actions_total",
        "rainbowd_app_blocked",
        "rainbowd_prometheus_errors_total",
        "rainbowd_reconcile_duration_seconds_bucket",
        "rainbowd_last_successful_reconcile_timestamp_seconds",
        "rainbowd_leader",
        "rainbowd_policy_valid",
    ):
        assert name in used, name


def test_a_renamed_metric_is_caught() -> None:
    """The name check can fail: a dashboard querying a name rainbowd does not export."""
    model = _dashboard()
    text = json.dumps(model).replace("rainbowd_color_connections", "rainbowd_color_conns")
    assert _used_names(json.loads(text)) - _exported_names() == {"rainbowd_color_conns"}
    assert "rainbowd_actions" not in _exported_names()  # the counter is exposed with _total
