"""`rainbowd status` renders a daemon's JSON plan exactly as `rainbowd plan` renders a Plan."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from rainbowd.commands.status import render_status
from rainbowd.core.forecast import ColorForecast, Forecast, Method
from rainbowd.core.model import (
    ORIGINAL_REPLICAS,
    Action,
    ActionKind,
    AppPlan,
    BlockReason,
    ColorPlan,
    Connections,
    Plan,
    Reason,
    State,
)
from rainbowd.core.reporting import plan_to_document, render_plan_table
from rainbowd.status import forecasts_from_document, plan_from_document

NOW = datetime(2026, 3, 4, 5, 6, 7, 250000, tzinfo=UTC)


def color(
    name: str,
    state: State,
    conns: Connections,
    *,
    retired: timedelta | None = None,
    actions: tuple[Action, ...] = (),
    held: Reason | None = None,
    app: str = "chat",
) -> ColorPlan:
    return ColorPlan(
        namespace="ns",
        app=app,
        color=name,
        name=f"{app}-{name}",
        state=state,
        rule="chat",
        replicas=3,
        ready_replicas=2,
        connections=conns,
        created_at=NOW - timedelta(days=2),
        retired_at=None if retired is None else NOW - retired,
        drained_since=None,
        note=f"note for {name}",
        actions=actions,
        held=held,
    )


def sample_plan() -> Plan:
    scale = Action(
        kind=ActionKind.SCALE,
        namespace="ns",
        name="chat-bbbbbb",
        app="chat",
        color="bbbbbb",
        uid="uid-b",
        resource_version="42",
        reason=Reason.DRAINED,
        message="drained for 5m",
        annotations={ORIGINAL_REPLICAS: "3"},
        connections=0.0,
    )
    return Plan(
        now=NOW,
        apps=(
            AppPlan(
                namespace="ns",
                app="chat",
                rule="chat",
                blocked=None,
                message="",
                colors=(
                    color("aaaaaa", State.LIVE, Connections(120, series=2)),
                    color(
                        "bbbbbb",
                        State.DRAINED,
                        Connections(0, series=2),
                        retired=timedelta(hours=1, minutes=3, seconds=7, milliseconds=600),
                        actions=(scale,),
                    ),
                    color(
                        "cccccc",
                        State.UNKNOWN_CONNECTIONS,
                        Connections.unknown("prometheus unreachable: connection refused"),
                        retired=timedelta(days=4),
                        held=Reason.MAX_RETIRED_AGE,
                    ),
                ),
            ),
            AppPlan(
                namespace="ns",
                app="mail",
                rule="chat",
                blocked=BlockReason.NO_LIVE_COLOR,
                message="no Service selects any color",
                colors=(color("dddddd", State.RETIRED, Connections(3, 1), app="mail"),),
            ),
        ),
        dry_run=True,
        warnings=("chat-eeeeee: malformed retired-at",),
    )


def test_the_table_survives_the_round_trip_through_json() -> None:
    plan = sample_plan()
    document = json.loads(json.dumps(plan_to_document(plan)))
    assert render_plan_table(plan_from_document(document)) == render_plan_table(plan)


def test_render_status_heads_the_table_with_the_daemon_state() -> None:
    plan = sample_plan()
    status = {
        "identity": "rainbowd-0",
        "leader": True,
        "ready": True,
        "policy": {"source": "configmap:ops/p", "valid": False, "errors": ["rules[0]: bad"]},
        "cycle": {
            "number": 7,
            "startedAt": NOW.isoformat(),
            "durationSeconds": 0.012,
            "ok": True,
            "error": None,
            "prometheusErrors": [
                {"query": "up{}", "cause": "timeout", "message": "prometheus timed out after 10s"}
            ],
        },
        "plan": json.loads(json.dumps(plan_to_document(plan))),
    }
    text = render_status(status)
    assert "rainbowd-0" in text and "leader=yes" in text
    assert "valid=no" in text and "rules[0]: bad" in text
    assert "prometheus timed out after 10s" in text
    assert text.endswith(render_plan_table(plan))
    assert render_status({**status, "plan": None}).endswith("no plan yet\n")


def test_the_eta_column_survives_the_round_trip_through_json() -> None:
    plan = sample_plan()
    forecasts = {
        ("ns", "chat", "aaaaaa"): ColorForecast(
            forecast=Forecast(
                now=NOW.timestamp(), points=12, eta=NOW.timestamp() + 7500, method=Method.LINEAR
            ),
            floor=0,
            deadline=None,
        )
    }
    document = json.loads(json.dumps(plan_to_document(plan, forecasts=forecasts)))
    assert document["apps"][0]["colors"][0]["forecast"]["etaSeconds"] == 7500
    text = render_plan_table(
        plan_from_document(document), forecasts=forecasts_from_document(document)
    )
    assert text == render_plan_table(plan, forecasts=forecasts)
    assert "~2h5m" in text
