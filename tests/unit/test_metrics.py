"""The metrics registry: per-color series follow the latest plan, counters count what happened."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rainbowd.core.forecast import ColorForecast, Forecast, Method, NoEstimate
from rainbowd.core.model import (
    Action,
    ActionKind,
    AppPlan,
    BlockReason,
    ColorPlan,
    Connections,
    Plan,
    PrometheusErrorCause,
    Reason,
    State,
)
from rainbowd.core.notes import AboveFloor, DrainHold, MinRetiredAge, Note
from rainbowd.kube.executing import ActionOutcome, ActionResult
from rainbowd.metrics import Metrics

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: Metrics) -> Samples:
    text = generate_latest(metrics.registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


def color(
    name: str,
    state: State,
    *,
    conns: float | None,
    retired_ago: timedelta | None = None,
    replicas: int = 2,
    app: str = "chat",
) -> ColorPlan:
    return ColorPlan(
        namespace="ns",
        app=app,
        color=name,
        name=f"{app}-{name}",
        state=state,
        rule="r",
        replicas=replicas,
        ready_replicas=replicas,
        connections=Connections(conns, series=replicas)
        if conns is not None
        else Connections.unknown("no series"),
        created_at=NOW - timedelta(days=1),
        retired_at=None if retired_ago is None else NOW - retired_ago,
        drained_since=None,
        note="",
    )


def make_plan(*colors: ColorPlan, blocked: BlockReason | None = None) -> Plan:
    return Plan(
        now=NOW,
        apps=(
            AppPlan(
                namespace="ns", app="chat", rule="r", blocked=blocked, message="", colors=colors
            ),
        ),
    )


def test_per_color_series_follow_the_latest_plan() -> None:
    metrics = Metrics()
    metrics.observe_plan(
        make_plan(
            color("aaaaaa", State.LIVE, conns=40),
            color("bbbbbb", State.DRAINING, conns=7, retired_ago=timedelta(minutes=5)),
            color("cccccc", State.UNKNOWN_CONNECTIONS, conns=None, retired_ago=timedelta(hours=1)),
        )
    )
    s = scrape(metrics)
    assert value(s, "rainbowd_color_connections", namespace="ns", app="chat", color="aaaaaa") == 40
    assert value(s, "rainbowd_color_connections", namespace="ns", app="chat", color="bbbbbb") == 7
    # Unknown connections have no series at all, never a 0 that would read as drained.
    unknown = value(s, "rainbowd_color_connections", namespace="ns", app="chat", color="cccccc")
    assert unknown is None
    assert (
        value(
            s, "rainbowd_color_state", namespace="ns", app="chat", color="bbbbbb", state="draining"
        )
        == 1
    )
    states = {
        (d["color"], d["state"]) for d in names(s, "rainbowd_color_state") if d["app"] == "chat"
    }
    assert states == {
        ("aaaaaa", "live"),
        ("bbbbbb", "draining"),
        ("cccccc", "unknown-connections"),
    }
    assert (
        value(s, "rainbowd_color_retired_seconds", namespace="ns", app="chat", color="bbbbbb")
        == 300
    )
    assert (
        value(s, "rainbowd_color_retired_seconds", namespace="ns", app="chat", color="aaaaaa")
        is None
    )
    assert value(s, "rainbowd_colors", namespace="ns", app="chat", state="live") == 1
    assert value(s, "rainbowd_colors", namespace="ns", app="chat", state="draining") == 1
    assert names(s, "rainbowd_app_blocked") == []

    # The next cycle: bbbbbb was deleted, the app is blocked. Its series vanish.
    metrics.observe_plan(
        make_plan(
            color("aaaaaa", State.LIVE, conns=41),
            blocked=BlockReason.LIVE_NOT_AVAILABLE,
        )
    )
    s = scrape(metrics)
    colors_left = {d["color"] for d in names(s, "rainbowd_color_state")}
    assert colors_left == {"aaaaaa"}
    assert names(s, "rainbowd_color_retired_seconds") == []
    assert (
        value(s, "rainbowd_app_blocked", namespace="ns", app="chat", reason="live-not-available")
        == 1
    )
    assert value(s, "rainbowd_colors", namespace="ns", app="chat", state="draining") is None


def test_the_floor_is_exported_where_connections_were_weighed_against_it() -> None:
    """A Grafana alert compares connections with it: a color above its floor has the series, a
    color at rest without a weighing (live, minRetiredAge, words from /status) has none."""
    ago = timedelta(hours=2)
    above = color("aaaaaa", State.DRAINING, conns=30, retired_ago=ago)
    held = color("bbbbbb", State.DRAINING, conns=3, retired_ago=ago)
    young = color("cccccc", State.DRAINING, conns=0, retired_ago=ago)
    metrics = Metrics()
    metrics.observe_plan(
        make_plan(
            color("dddddd", State.LIVE, conns=40)._replace(note=Note(None)),
            above._replace(note=Note(AboveFloor(30, 25))),
            held._replace(note=Note(DrainHold(3, 5, NOW - ago, timedelta(minutes=5)))),
            young._replace(note=Note(MinRetiredAge(NOW - ago, timedelta(days=2)))),
            color("eeeeee", State.DRAINING, conns=30, retired_ago=ago),  # note read back as words
        )
    )
    s = scrape(metrics)
    floors = {
        d["color"]: value(s, "rainbowd_color_connection_floor", **d)
        for d in names(s, "rainbowd_color_connection_floor")
    }
    assert floors == {"aaaaaa": 25, "bbbbbb": 5}


def test_no_plan_yet_exports_no_color_series() -> None:
    s = scrape(Metrics())
    assert names(s, "rainbowd_color_state") == []
    assert value(s, "rainbowd_prometheus_errors_total", cause="timeout") == 0


def test_counters_and_gauges() -> None:
    metrics = Metrics()
    action = Action(
        kind=ActionKind.SCALE,
        namespace="ns",
        name="chat-bbbbbb",
        app="chat",
        color="bbbbbb",
        uid="u",
        resource_version="1",
        reason=Reason.DRAINED,
        message="drained",
    )
    metrics.record_actions(
        [
            ActionResult(action, ActionOutcome.OK),
            ActionResult(action, ActionOutcome.CONFLICT, "changed"),
            ActionResult(action, ActionOutcome.OK),
        ]
    )
    metrics.record_prometheus_errors([PrometheusErrorCause.TIMEOUT, PrometheusErrorCause.TIMEOUT])
    metrics.policy_valid.set(0)
    metrics.leader.set(1)
    metrics.watch_informers(
        lambda: {"deployments": {"watch_events": 5, "relists": 1}, "services": {"relists": 2}}
    )
    s = scrape(metrics)
    key = {"action": "scale", "reason": "drained"}
    assert value(s, "rainbowd_actions_total", **key, outcome="ok") == 2
    assert value(s, "rainbowd_actions_total", **key, outcome="conflict") == 1
    assert value(s, "rainbowd_prometheus_errors_total", cause="timeout") == 2
    assert value(s, "rainbowd_prometheus_errors_total", cause="query") == 0
    assert value(s, "rainbowd_policy_valid") == 0
    assert value(s, "rainbowd_leader") == 1
    assert value(s, "rainbowd_informer_relists_total", resource="services") == 2
    assert value(s, "rainbowd_informer_watch_events_total", resource="deployments") == 5
    assert value(s, "rainbowd_informer_watch_events_total", resource="services") is None


def test_drain_eta_and_deadline_only_for_colors_that_have_them() -> None:
    metrics = Metrics()
    now = NOW.timestamp()
    plan = make_plan(
        color("aaaaaa", State.DRAINING, conns=40, retired_ago=timedelta(hours=1)),
        color("bbbbbb", State.DRAINING, conns=5, retired_ago=timedelta(minutes=1)),
    )
    estimate = Forecast(now=now, points=30, eta=now + 5400, method=Method.EXPONENTIAL)
    none = Forecast(now=now, points=2, reason=NoEstimate.TOO_FEW_POINTS)
    metrics.observe_plan(
        plan,
        {
            ("ns", "chat", "aaaaaa"): ColorForecast(estimate, floor=0, deadline=now + 3600),
            ("ns", "chat", "bbbbbb"): ColorForecast(none, floor=0, deadline=None),
        },
    )
    samples = scrape(metrics)
    eta = "rainbowd_color_drain_eta_seconds"
    deadline = "rainbowd_color_retired_deadline_timestamp_seconds"
    assert value(samples, eta, namespace="ns", app="chat", color="aaaaaa") == 5400
    assert value(samples, deadline, namespace="ns", app="chat", color="aaaaaa") == now + 3600
    assert len(names(samples, eta)) == 1 and len(names(samples, deadline)) == 1
    metrics.observe_plan(plan)
    assert names(scrape(metrics), eta) == []
