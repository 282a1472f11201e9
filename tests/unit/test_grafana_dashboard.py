"""The Grafana dashboard read by Grafana's own typed models (grafana-foundation-sdk), since no
Grafana server runs here: every panel is a known panel type whose options and field config decode
into that type's model, every query decodes as a Prometheus query, and nothing is lost on the way
back to JSON. tests/integration/test_dashboard.py checks the queries against a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import panelcfg_config
from grafana_foundation_sdk.models import dashboard, prometheus

DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "monitoring" / "grafana-dashboard.json"


def load() -> tuple[dict[str, Any], dashboard.Dashboard]:
    register_default_plugins()
    model = json.loads(DASHBOARD.read_text())
    return model, dashboard.Dashboard.from_json(model)


def panels(items: list[Any]) -> list[Any]:
    out = []
    for item in items:
        out.append(item)
        if isinstance(item, dashboard.RowPanel):
            out.extend(item.panels or [])
    return out


def test_every_panel_is_a_known_type_with_typed_options_and_prometheus_queries() -> None:
    _, board = load()
    assert board.title and board.uid
    found = panels(board.panels or [])
    charts = [p for p in found if isinstance(p, dashboard.Panel)]
    assert len(charts) >= 10
    for panel in charts:
        where = f"panel {panel.title!r} ({panel.type_val})"
        config = panelcfg_config(panel.type_val)
        assert config is not None, f"{where}: not a panel type Grafana knows"
        if panel.options is not None and config.options_from_json_hook is not None:
            assert not isinstance(panel.options, dict), f"{where}: options did not decode"
        assert panel.targets, f"{where}: no query"
        for target in panel.targets:
            assert isinstance(target, prometheus.Dataquery), f"{where}: {target!r}"
            assert target.expr and target.ref_id, f"{where}: a query without expr or refId"
        assert panel.grid_pos is not None, f"{where}: no position"


def test_nothing_is_lost_on_the_way_back_to_json() -> None:
    model, board = load()
    again = json.loads(json.dumps(board, cls=JSONEncoder))

    def summary(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
        out = []
        for panel in doc.get("panels") or []:
            for p in [panel, *(panel.get("panels") or [])]:
                exprs = tuple(t.get("expr") for t in p.get("targets") or [])
                grid = p.get("gridPos") or {}
                out.append((p.get("type"), p.get("title"), exprs, grid.get("x"), grid.get("y")))
        return out

    assert summary(again) == summary(model)
    assert [v["name"] for v in again["templating"]["list"]] == [
        v["name"] for v in model["templating"]["list"]
    ]
