"""The drain forecast: tables for its cases, Hypothesis properties for any input."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from rainbowd.core.forecast import (
    ColorForecast,
    Forecast,
    Forecaster,
    ForecastSettings,
    Method,
    NoEstimate,
    forecast,
    forecast_plan,
)
from rainbowd.core.model import AppPlan, ColorPlan, Connections, Plan, State
from rainbowd.core.policy import ConnectionsQuery, Knobs, Policy, Rule
from rainbowd.core.reporting import forecast_to_document, render_plan_table


def exponential(n0: float, tau: float, times: list[float]) -> list[tuple[float, float]]:
    return [(t, n0 * math.exp(-t / tau)) for t in times]


def truth(n0: float, tau: float, floor: float) -> float:
    """When n0 * exp(-t / tau) comes down to floor + 0.5."""
    return tau * math.log(n0 / (floor + 0.5))


MINUTES = [60.0 * i for i in range(60)]  # as many as a fit uses


def test_exact_exponential_gives_the_true_eta() -> None:
    points = exponential(1000, 3600, MINUTES)
    got = forecast(points, floor=0, now=3600)
    assert got.method is Method.EXPONENTIAL and got.points == 60
    assert got.eta == pytest.approx(truth(1000, 3600, 0), rel=1e-6)
    assert got.seconds == pytest.approx(truth(1000, 3600, 0) - 3600, rel=1e-6)


def test_a_straight_decline_is_fitted_as_a_line() -> None:
    points = [(t, 500 - t / 10) for t in MINUTES]  # 500 at 0, 140 at 3600, 0.5 at 4995
    got = forecast(points, floor=0, now=3600)
    assert got.method is Method.LINEAR
    assert got.eta == pytest.approx(4995, rel=1e-6)


def test_outliers_do_not_move_the_estimate_much() -> None:
    rng = random.Random(7)
    points = exponential(1000, 3600, MINUTES)
    noisy = [(t, v * 5 if rng.random() < 0.1 else v) for t, v in points]
    got = forecast(noisy, floor=0, now=3600)
    assert got.eta == pytest.approx(truth(1000, 3600, 0), rel=0.1)


def test_the_floor_is_the_target() -> None:
    points = exponential(1000, 3600, MINUTES)
    got = forecast(points, floor=10, now=3600)
    assert got.eta == pytest.approx(truth(1000, 3600, 10), rel=1e-6)


@pytest.mark.parametrize(
    ("points", "reason"),
    [
        ([], NoEstimate.TOO_FEW_POINTS),
        ([(0.0, 10.0), (60.0, 9.0), (120.0, 8.0)], NoEstimate.TOO_FEW_POINTS),
        ([(60.0 * i, 10.0) for i in range(10)], NoEstimate.NOT_DECREASING),
        ([(60.0 * i, 10.0 + i) for i in range(10)], NoEstimate.NOT_DECREASING),
        ([(60.0 * i, 10.0 - i) for i in range(11)], NoEstimate.AT_FLOOR),
        # 1000 -> 999 over ten minutes: the floor is weeks away, far beyond what ten minutes say.
        ([(60.0 * i, 1000.0 - 0.1 * i) for i in range(11)], NoEstimate.TOO_SHORT),
    ],
)
def test_no_estimate(points: list[tuple[float, float]], reason: NoEstimate) -> None:
    got = forecast(points, floor=0, now=600)
    assert got.eta is None and got.method is None and got.reason is reason


def test_points_before_the_retirement_are_not_used() -> None:
    # Rising while live, decaying once retired at t=3600.
    live = [(60.0 * i, 10.0 * i) for i in range(60)]
    retired = [(3600 + t, v) for t, v in exponential(600, 1800, MINUTES)]
    got = forecast(live + retired, floor=0, now=7200, since=3600)
    assert got.points == 60
    assert got.eta == pytest.approx(3600 + truth(600, 1800, 0), rel=1e-6)
    # Fed the live hour too, the fit would see no decline at all.
    wide = ForecastSettings(max_points=200)
    assert forecast(live + retired, floor=0, now=7200, settings=wide).eta is None


def test_the_eta_is_never_before_now() -> None:
    # The curve says the floor was reached at ~3995 s, but the newest sample (stale) is older.
    points = exponential(1000, 600, MINUTES[:30])
    got = forecast(points, floor=0, now=10_000)
    assert got.eta == 10_000 and got.seconds == 0


def test_settings_bound_the_points_used() -> None:
    points = exponential(1000, 3600, [10.0 * i for i in range(500)])
    got = forecast(points, floor=0, now=5000, settings=ForecastSettings(max_points=20))
    assert got.points == 20


# --- properties -------------------------------------------------------------------------------

finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf, 1e308, 5e-324]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(finite_or_not, finite_or_not), max_size=40),
    finite_or_not,
    finite_or_not,
    st.one_of(st.none(), finite_or_not),
)
@example([(0.0, 2.0), (1.0, 0.0), (2.0, 1.0), (0.5, 0.0), (0.25, 0.0)], -1.0, 2.0, None)
@example([(0.0, 9.0), (60.0, 8.0), (120.0, 7.0), (180.0, 6.0), (240.0, 5.0)], math.nan, 240, 0)
# A fit whose curve passes beyond any float at some sample's time (math.exp overflowed).
@example(
    [(2.0, 0.5), (1e3, 0.5), (0.0, 2.0), (3.0, 0.5), (4.0, 1e-300), (0.0, 4.6e16), (-1e3, 1.0)],
    0.0,
    4.0,
    None,
)
def test_any_input_gives_a_forecast_never_an_exception(
    points: list[tuple[float, float]], floor: float, now: float, since: float | None
) -> None:
    got = forecast(points, floor=floor, now=now, since=since)
    assert isinstance(got, Forecast)
    assert (got.eta is None) == (got.method is None) == (got.reason is not None)
    if got.eta is not None:
        assert math.isfinite(got.eta) and got.eta >= now


@settings(max_examples=200, deadline=None)
@given(
    n0=st.floats(min_value=20, max_value=1e5),
    tau=st.floats(min_value=60, max_value=86400 * 3),
    step=st.floats(min_value=5, max_value=600),
    count=st.integers(min_value=5, max_value=120),
    floor=st.integers(min_value=0, max_value=10),
)
def test_an_exact_exponential_decline_gives_an_eta_close_to_the_truth(
    n0: float, tau: float, step: float, count: int, floor: int
) -> None:
    times = [step * i for i in range(count)]
    points = exponential(n0, tau, times)
    now = times[-1]
    assume(points[-1][1] > floor + 1)
    got = forecast(points, floor=floor, now=now)
    expected = truth(n0, tau, floor)
    if got.eta is None:
        # Only when the floor is further off than the span can tell.
        assert got.reason is NoEstimate.TOO_SHORT
        used = times[-ForecastSettings().max_points :]
        span = used[-1] - used[0]
        assert expected - now > ForecastSettings().max_extrapolation * span * 0.99
    else:
        assert got.method is Method.EXPONENTIAL
        assert got.eta == pytest.approx(expected, rel=1e-3)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=60),
    st.floats(min_value=1, max_value=600),
)
def test_a_rising_or_flat_curve_gives_no_eta(increments: list[float], step: float) -> None:
    values = [10.0]
    for inc in increments:
        values.append(values[-1] + inc)
    points = [(step * i, v) for i, v in enumerate(values)]
    got = forecast(points, floor=0, now=points[-1][0])
    assert got.eta is None


# --- over a plan ------------------------------------------------------------------------------

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def color(name: str, state: State, value: float | None, retired: timedelta | None) -> ColorPlan:
    return ColorPlan(
        namespace="ns",
        app="chat",
        color=name,
        name=f"chat-{name}",
        state=state,
        rule="chat",
        replicas=2,
        ready_replicas=2,
        connections=Connections(value) if value is not None else Connections.unknown("x"),
        created_at=NOW - timedelta(days=1),
        retired_at=None if retired is None else NOW - retired,
        drained_since=None,
        note="",
    )


def test_forecast_plan_covers_draining_colors_above_the_floor() -> None:
    knobs = Knobs(connection_floor=2, max_retired_age=timedelta(hours=3))
    policy = Policy(rules=(Rule(name="chat", knobs=knobs, connections=ConnectionsQuery()),))
    hour = timedelta(hours=1)
    colors = (
        color("live01", State.LIVE, 300, None),
        color("drain1", State.DRAINING, 150, hour),
        color("drain2", State.DRAINING, 2, hour),  # at the floor: waiting for minRetiredAge
        color("unkno1", State.UNKNOWN_CONNECTIONS, None, hour),
    )
    plan = Plan(now=NOW, apps=(AppPlan("ns", "chat", "chat", None, "", colors),))
    start = (NOW - hour).timestamp()
    history = {
        ("ns", "chat", "drain1"): [(start + t, v) for t, v in exponential(600, 2597, MINUTES)],
        ("ns", "chat", "live01"): [(start + t, 300.0) for t in MINUTES],
    }
    got = forecast_plan(plan, policy, history)
    assert set(got) == {("ns", "chat", "drain1")}
    found = got[("ns", "chat", "drain1")]
    assert found.floor == 2
    assert found.deadline == (NOW + 2 * hour).timestamp()
    # 600 -> 2.5 connections takes 2597 * ln(240) s, about 3h57m: after the forced scale-down.
    assert found.forecast.eta == pytest.approx(start + 2597 * math.log(600 / 2.5), rel=1e-6)
    assert found.late
    doc = forecast_to_document(found)
    assert doc["method"] == "exponential" and doc["points"] == 60 and doc["late"] is True
    assert doc["etaSeconds"] == pytest.approx(found.forecast.seconds, abs=0.1)
    table = render_plan_table(plan, forecasts=got)
    rows = {line.split()[2]: line.split() for line in table.splitlines()[1:] if line.strip()}
    assert rows["drain1"][7] == "~2h57m"
    assert rows["drain2"][7] == "-" and rows["live01"][7] == "-"


def test_a_color_without_samples_has_a_forecast_saying_why() -> None:
    knobs = Knobs(max_retired_age=None)
    policy = Policy(rules=(Rule(name="chat", knobs=knobs, connections=ConnectionsQuery()),))
    colors = (color("drain1", State.DRAINING, 50, timedelta(minutes=5)),)
    plan = Plan(now=NOW, apps=(AppPlan("ns", "chat", "chat", None, "", colors),))
    got = forecast_plan(plan, policy, {})
    found = got[("ns", "chat", "drain1")]
    assert found == ColorForecast(
        forecast=Forecast(now=NOW.timestamp(), points=0, reason=NoEstimate.TOO_FEW_POINTS),
        floor=0,
        deadline=None,
    )
    assert not found.late


def test_the_forecaster_fits_a_bounded_number_of_colors_per_cycle() -> None:
    policy = Policy(rules=(Rule(name="chat", knobs=Knobs(), connections=ConnectionsQuery()),))
    hour = timedelta(hours=1)
    names = [f"d{i:05d}" for i in range(5)]
    start = (NOW - hour).timestamp()
    history = {
        ("ns", "chat", name): [(start + t, v) for t, v in exponential(600, 2597, MINUTES)]
        for name in names
    }
    forecaster = Forecaster(per_cycle=2)

    def cycle(at: datetime) -> dict[tuple[str, str, str], ColorForecast]:
        colors = tuple(color(n, State.DRAINING, 150, hour) for n in names)
        plan = Plan(now=at, apps=(AppPlan("ns", "chat", "chat", None, "", colors),))
        return forecaster.update(plan, policy, history)

    first = cycle(NOW)
    assert len(first) == 2
    second = cycle(NOW + timedelta(seconds=30))
    assert len(second) == 4
    third = cycle(NOW + timedelta(seconds=60))
    assert set(third) == {("ns", "chat", n) for n in names}
    expected = forecast_plan(
        Plan(
            now=NOW,
            apps=(
                AppPlan(
                    "ns",
                    "chat",
                    "chat",
                    None,
                    "",
                    tuple(color(n, State.DRAINING, 150, hour) for n in names),
                ),
            ),
        ),
        policy,
        history,
    )
    for key, found in third.items():
        # Carried or refitted, the same samples give the same ETA, seen from the cycle's now.
        assert found.forecast.eta == pytest.approx(expected[key].forecast.eta)
        assert found.forecast.now == (NOW + timedelta(seconds=60)).timestamp()
    # Colors that stop draining are dropped.
    plan = Plan(now=NOW, apps=(AppPlan("ns", "chat", "chat", None, "", ()),))
    assert forecaster.update(plan, policy, history) == {}


def test_a_color_whose_retirement_or_deadline_changed_is_fitted_again_first() -> None:
    hour = timedelta(hours=1)
    start = (NOW - 2 * hour).timestamp()
    history = {
        ("ns", "chat", name): [(start + t, v) for t, v in exponential(600, 2597, MINUTES)]
        for name in ("d00000", "d00001")
    }
    forecaster = Forecaster(per_cycle=1)

    def cycle(
        at: datetime, retired: timedelta, max_age: timedelta
    ) -> dict[tuple[str, str, str], ColorForecast]:
        knobs = Knobs(max_retired_age=max_age)
        policy = Policy(rules=(Rule(name="chat", knobs=knobs, connections=ConnectionsQuery()),))
        colors = (
            color("d00000", State.DRAINING, 150, retired),
            color("d00001", State.DRAINING, 150, hour),
        )
        plan = Plan(now=at, apps=(AppPlan("ns", "chat", "chat", None, "", colors),))
        return forecaster.update(plan, policy, history)

    a, b = ("ns", "chat", "d00000"), ("ns", "chat", "d00001")
    cycle(NOW, hour, 3 * hour)
    both = cycle(NOW + timedelta(seconds=30), hour, 3 * hour)
    assert both[a].deadline == (NOW + 2 * hour).timestamp()
    # d00000 retired an hour earlier than it read: its record changed, it is first in line
    # (d00001 is carried), fitted with its new deadline.
    moved = cycle(NOW + timedelta(seconds=60), 2 * hour, 3 * hour)
    assert moved[a].deadline == (NOW + hour).timestamp()
    assert moved[b].deadline == (NOW + 2 * hour).timestamp()
    # The rule's maxRetiredAge changed: every record changed; one fitted, the other waits.
    longer = cycle(NOW + timedelta(seconds=90), 2 * hour, 4 * hour)
    assert len(longer) == 1
    ((key, found),) = longer.items()
    assert found.deadline == (NOW - (2 * hour if key == a else hour) + 4 * hour).timestamp()
