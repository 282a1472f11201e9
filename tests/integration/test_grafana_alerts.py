"""The Grafana-managed alerts in k8s/monitoring/grafana-alerts.yaml: the file parses with
grafana-foundation-sdk into typed rules and queries, holds the drain alerts, and every PromQL query
in it runs in a real Prometheus."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import expr, prometheus
from grafana_foundation_sdk.models.alerting import Rule
from prometheus_client import start_http_server

from rainbowd.commands.plan import load_snapshot_file
from rainbowd.core.durations import parse_duration
from rainbowd.core.forecast import ColorForecast, Forecast, Method
from rainbowd.core.model import ColorPlan, State
from rainbowd.core.notes import AboveFloor, MinRetiredAge, Note
from rainbowd.core.planner import plan
from rainbowd.metrics import Metrics
from rainbowd.policyfile import load_policy_text
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.installtools import kustomize
from tests.integration.test_dashboard import METRIC, _exported_names, _query

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "k8s" / "monitoring" / "grafana-alerts.yaml"
# The drain forecast's series the forecast alert compares.
FORECAST_METRICS = (
    "rainbowd_color_drain_eta_seconds",
    "rainbowd_color_retired_deadline_timestamp_seconds",
)
UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _file() -> dict[str, Any]:
    doc = yaml.safe_load(ALERTS.read_text())
    assert isinstance(doc, dict)
    return doc


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _file()["groups"] for rule in group["rules"]]


def _prom_exprs() -> list[tuple[str, str]]:
    return [
        (f"{rule['uid']} {query['refId']}", query["model"]["expr"])
        for rule in _rules()
        for query in rule["data"]
        if query["datasourceUid"] != "__expr__"
    ]


def _json(obj: object) -> Any:
    return json.loads(json.dumps(obj, cls=JSONEncoder))


def test_the_file_is_grafana_alert_provisioning() -> None:
    doc = _file()
    assert doc["apiVersion"] == 1
    assert set(doc) == {"apiVersion", "groups"}
    for group in doc["groups"]:
        assert {"orgId", "name", "folder", "interval", "rules"} <= set(group), group.keys()
        parse_duration(group["interval"])
    uids = [rule["uid"] for rule in _rules()]
    assert len(uids) == len(set(uids)), uids
    assert all(UID.match(uid) for uid in uids), uids


def test_the_file_is_shipped_as_a_configmap_for_the_alerts_sidecar() -> None:
    """`kubectl kustomize k8s/monitoring` holds it, as is, in a ConfigMap labelled as Grafana's
    alerts sidecar looks for (grafana_alert: "1")."""
    shipped = [
        d
        for d in kustomize("k8s/monitoring")
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "rainbowd-grafana-alerts"
    ]
    assert len(shipped) == 1
    assert shipped[0]["metadata"]["labels"]["grafana_alert"] == "1"
    assert shipped[0]["data"] == {"grafana-alerts.yaml": ALERTS.read_text()}


def test_every_rule_parses_with_the_foundation_sdk() -> None:
    register_default_plugins()
    for raw in _rules():
        rule = Rule.from_json(raw)
        assert rule.title and rule.uid == raw["uid"]
        refs = [query.ref_id for query in rule.data]
        assert rule.condition in refs, f"{rule.uid}: condition {rule.condition} not in {refs}"
        for query in rule.data:
            model = query.model
            if query.datasource_uid == "__expr__":
                assert isinstance(model, expr.TypeThreshold), (rule.uid, type(model))
                assert model.expression in refs
                assert model.ref_id == query.ref_id
            else:
                assert isinstance(model, prometheus.Dataquery), (rule.uid, type(model))
                assert model.instant is True and model.expr
                assert model.datasource == {"type": "prometheus", "uid": query.datasource_uid}
            assert query.relative_time_range is not None or query.datasource_uid == "__expr__"
        # Nothing in the file is a field the SDK does not know: its rule encodes back to it.
        encoded = _json(rule)
        for key, value in raw.items():
            assert encoded.get(key) == value, f"{rule.uid}: {key} does not survive the SDK"


def test_a_misspelt_field_is_caught() -> None:
    """The round trip can fail: a field the SDK does not know is lost, and the check says so."""
    register_default_plugins()
    raw = {**_rules()[0], "noDataStat": "OK"}
    assert "noDataStat" not in _json(Rule.from_json(raw))


def test_the_drain_alerts_are_there() -> None:
    rules = {rule["uid"]: rule for rule in _rules()}
    assert set(rules) == {
        "rainbowd-color-draining-long",
        "rainbowd-color-will-not-drain",
        "rainbowd-not-reconciling",
        "rainbowd-app-blocked",
    }
    exprs = dict(_prom_exprs())
    draining = exprs["rainbowd-color-draining-long A"]
    assert 'rainbowd_color_state{state="draining"}' in draining
    assert "rainbowd_color_connection_floor" in draining
    assert all(name in exprs["rainbowd-color-will-not-drain A"] for name in FORECAST_METRICS)
    assert "rainbowd_last_successful_reconcile" in exprs["rainbowd-not-reconciling A"]
    assert "rainbowd_app_blocked" in exprs["rainbowd-app-blocked A"]
    # No rainbowd reporting at all is itself "not reconciling".
    assert rules["rainbowd-not-reconciling"]["noDataState"] == "Alerting"


def test_the_forecast_alert_fires_when_the_drain_comes_after_the_deadline() -> None:
    rule = next(r for r in _rules() if r["uid"] == "rainbowd-color-will-not-drain")
    threshold = next(q for q in rule["data"] if q["refId"] == rule["condition"])
    assert threshold["model"]["conditions"][0]["evaluator"] == {"type": "gt", "params": [0]}


def test_every_metric_is_exported() -> None:
    used = {name for _, e in _prom_exprs() for name in METRIC.findall(e)}
    assert set(FORECAST_METRICS) <= used
    missing = used - _exported_names()
    assert not missing, f"not exported by rainbowd.metrics: {sorted(missing)}"


@pytest.mark.prometheus
def test_every_query_runs_in_prometheus(prometheus: PrometheusServer) -> None:
    exprs = _prom_exprs()
    assert len(exprs) == 4
    rejected = []
    for where, e in exprs:
        status, body = _query(prometheus, e)
        if status != 200 or body.get("status") != "success":
            rejected.append(f"{where}: {e} -> {status} {body.get('error')}")
    assert not rejected, "\n".join(rejected)


@pytest.mark.prometheus
def test_each_query_selects_what_its_alert_means(prometheus: PrometheusServer) -> None:
    """rainbowd's own metrics for the example snapshot's plan, scraped by the real Prometheus:
    the draining query finds the colors draining above their floor (not one at the floor that
    only waits out minRetiredAge), the forecast query a color forecast to drain an hour after
    its deadline, the reconcile query the time since the last cycle."""
    snapshot = load_snapshot_file(ROOT / "config" / "examples" / "snapshot.yaml", default_now=NOW)
    # A minRetiredAge longer than the drained color's 19 hours keeps it draining at its floor.
    text = (ROOT / "config" / "policy.yaml").read_text()
    assert "minRetiredAge: 10m" in text
    policy = load_policy_text(text.replace("minRetiredAge: 10m", "minRetiredAge: 20h"), source="")
    result = plan(snapshot, policy, snapshot.now)
    colors = [color for app in result.apps for color in app.colors]

    def finding(c: ColorPlan) -> object:
        return c.note.found if isinstance(c.note, Note) else None

    def retired_seconds(c: ColorPlan) -> float:
        retired = c.retired_for(result.now)
        assert retired is not None, c.color
        return retired.total_seconds()

    draining = {c.color: c for c in colors if c.state is State.DRAINING}
    above = {color: c for color, c in draining.items() if isinstance(finding(c), AboveFloor)}
    assert above, "the example snapshot has no color draining above its floor"
    assert any(isinstance(finding(c), MinRetiredAge) for c in draining.values()), draining
    late = next(iter(above.values()))
    started = time.time()
    forecasts = {
        (late.namespace, late.app, late.color): ColorForecast(
            forecast=Forecast(now=started, points=10, eta=started + 7200, method=Method.LINEAR),
            floor=0,
            deadline=started + 3600,
        )
    }
    metrics = Metrics()
    metrics.observe_plan(result, forecasts)
    metrics.last_success.set(started - 1800)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        prometheus.set_targets([(f"127.0.0.1:{server.server_port}", {})], job="rainbowd")
        prometheus.wait_for("rainbowd_color_state", timeout=60)
        exprs = dict(_prom_exprs())

        found = prometheus.query(exprs["rainbowd-color-draining-long A"])
        assert {s.labels["color"]: s.value for s in found} == {
            color: pytest.approx(retired_seconds(c)) for color, c in above.items()
        }

        found = prometheus.query(exprs["rainbowd-color-will-not-drain A"])
        assert [s.labels["color"] for s in found] == [late.color]
        # An hour late, measured at the query's time rather than the export's.
        assert found[0].value - (found[0].timestamp - started) == pytest.approx(3600, abs=1)

        found = prometheus.query(exprs["rainbowd-not-reconciling A"])
        assert found[0].value == pytest.approx(1800 + found[0].timestamp - started, abs=1)

        found = prometheus.query(exprs["rainbowd-app-blocked A"])
        blocked = {(a.namespace, a.app, a.blocked.value) for a in result.apps if a.blocked}
        assert {(s.labels["namespace"], s.labels["app"], s.labels["reason"]) for s in found} == (
            blocked
        )
    finally:
        server.shutdown()
        thread.join(timeout=10)
