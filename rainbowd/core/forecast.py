"""When will a draining color reach its floor? An estimate from its own recent connection samples.

Sessions of long-lived connections end at a roughly constant rate each, so a color's connections
decay roughly exponentially: a robust (Theil-Sen) line through log(connections) over time, with a
robust straight line as the fallback, whichever follows the samples more closely. No estimate
when there are too few points, too short a span for the distance to the floor, or the curve is
flat or rising. Pure: points in, estimate out; it never decides anything, it only informs.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from typing import NamedTuple

from rainbowd.core.history import thin
from rainbowd.core.instants import END, Beyond, later
from rainbowd.core.model import AppPlan, ColorPlan, Plan, State
from rainbowd.core.policy import Policy, Rule

Point = tuple[float, float]
"""(Unix time in seconds, connections)"""
ColorKey = tuple[str, str, str]
"""(namespace, app, color)"""


class Method(enum.StrEnum):
    EXPONENTIAL = "exponential"
    LINEAR = "linear"


class NoEstimate(enum.StrEnum):
    """Why a draining color has no ETA."""

    TOO_FEW_POINTS = "too-few-points"
    TOO_SHORT = "too-short-span"  # the floor is further away than the samples can tell
    NOT_DECREASING = "not-decreasing"
    AT_FLOOR = "at-floor"


@dataclass(frozen=True, slots=True)
class ForecastSettings:
    """How much evidence an estimate needs."""

    min_points: int = 5
    """Samples since the color was retired: fewer and any line fits."""
    max_points: int = 60
    """The fit uses at most this many samples, spread evenly in time (Theil-Sen is quadratic)."""
    max_extrapolation: float = 10.0
    """No ETA further ahead than this many times the span the samples cover."""


DEFAULT_SETTINGS = ForecastSettings()


@dataclass(frozen=True, slots=True)
class Forecast:
    """An ETA (Unix seconds, never before `now`), or why there is none."""

    now: float
    points: int
    eta: float | None = None
    method: Method | None = None
    reason: NoEstimate | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.eta is None else self.eta - self.now


@dataclass(frozen=True, slots=True)
class _Fit:
    method: Method
    slope: float  # per second: of log(connections) or of connections
    level: float  # the fitted connections at `at`
    at: float
    error: float  # median absolute residual, in connections


def forecast(
    points: Sequence[Point],
    *,
    floor: float,
    now: float,
    since: float | None = None,
    settings: ForecastSettings = DEFAULT_SETTINGS,
) -> Forecast:
    """When the connections in `points` ((t, value), any order) reach `floor`, judging only the
    points at or after `since` (the retirement: before it the color was live) and up to `now`.
    Never raises: unusable points (NaN, infinite, negative) are ignored."""
    lower = -math.inf if since is None or not math.isfinite(since) else since
    # A connection count is never below 0: neither is a floor (the policy ensures it; this
    # function stays total anyway).
    floor = 0.0 if math.isnan(floor) else max(floor, 0.0)
    if not math.isfinite(now):
        return Forecast(now=now, points=0, reason=NoEstimate.TOO_FEW_POINTS)
    usable = sorted(
        (t, v)
        for t, v in points
        if math.isfinite(t) and math.isfinite(v) and v >= 0 and lower <= t <= now
    )
    deduped: list[Point] = []
    for t, v in usable:
        if deduped and deduped[-1][0] == t:
            deduped[-1] = (t, v)
        else:
            deduped.append((t, v))
    recent = deduped
    if len(deduped) > settings.max_points:
        # Evenly over the whole span since retirement, not only the latest samples: the long
        # view tells the decay rate of an hours-long drain best.
        span = deduped[-1][0] - deduped[0][0]
        recent = thin(deduped, span / settings.max_points)[-settings.max_points :]
    n = len(recent)
    if n and recent[-1][1] <= floor:
        return Forecast(now=now, points=n, reason=NoEstimate.AT_FLOOR)
    if n < max(settings.min_points, 2):
        return Forecast(now=now, points=n, reason=NoEstimate.TOO_FEW_POINTS)
    # Below floor + 0.5 the count, a whole number, is at the floor; an exponential never
    # reaches 0 itself.
    target = floor + 0.5
    fits = [f for f in (_exponential(recent), _linear(recent)) if f is not None and f.slope < 0]
    if not fits:
        return Forecast(now=now, points=n, reason=NoEstimate.NOT_DECREASING)
    best = min(fits, key=lambda f: f.error)
    eta = _crossing(best, target)
    span = recent[-1][0] - recent[0][0]
    if not math.isfinite(eta) or eta - recent[-1][0] > settings.max_extrapolation * span:
        return Forecast(now=now, points=n, reason=NoEstimate.TOO_SHORT)
    return Forecast(now=now, points=n, eta=max(eta, now), method=best.method)


def _theil_sen(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """(slope, intercept) of the median pairwise slope, robust to outliers; None when all x
    are equal."""
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i in range(len(xs))
        for j in range(i + 1, len(xs))
        if xs[j] != xs[i]
    ]
    if not slopes:
        return None
    slope = median(slopes)
    intercept = median(y - slope * x for x, y in zip(xs, ys, strict=True))
    return slope, intercept


def _exponential(points: Sequence[Point]) -> _Fit | None:
    positive = [(t, v) for t, v in points if v > 0]
    if len(positive) < 2:
        return None
    origin = points[-1][0]  # times relative to the newest point keep the numbers small
    xs = [t - origin for t, _ in positive]
    fit = _theil_sen(xs, [math.log(v) for _, v in positive])
    if fit is None:
        return None
    slope, intercept = fit
    if intercept > _MAX_EXPONENT:
        return None  # a level beyond any float: no curve worth comparing
    residuals = [abs(v - _exp(intercept + slope * (t - origin))) for t, v in points]
    return _Fit(Method.EXPONENTIAL, slope, math.exp(intercept), origin, median(residuals))


# math.exp overflows a float just above 709.
_MAX_EXPONENT = 700.0


def _exp(x: float) -> float:
    """math.exp, with infinity where the result is beyond a float instead of OverflowError."""
    return math.inf if x > _MAX_EXPONENT else math.exp(x)


def _linear(points: Sequence[Point]) -> _Fit | None:
    origin = points[-1][0]
    xs = [t - origin for t, _ in points]
    fit = _theil_sen(xs, [v for _, v in points])
    if fit is None:
        return None
    slope, intercept = fit
    residuals = [abs(v - (intercept + slope * x)) for x, (_, v) in zip(xs, points, strict=True)]
    return _Fit(Method.LINEAR, slope, intercept, origin, median(residuals))


def _crossing(fit: _Fit, target: float) -> float:
    """When the fitted curve (decreasing) comes down to `target`."""
    if fit.level <= target:
        return fit.at
    if fit.method is Method.EXPONENTIAL:
        return fit.at + math.log(target / fit.level) / fit.slope
    return fit.at + (target - fit.level) / fit.slope


# --- over a plan ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColorForecast:
    """A draining color's forecast with the figures the alert compares it with."""

    forecast: Forecast
    floor: int
    deadline: float | None
    """When maxRetiredAge forces the color down (Unix seconds); None when never."""

    @property
    def late(self) -> bool:
        """The estimate falls after the forced scale-down: connections will be cut."""
        eta = self.forecast.eta
        return eta is not None and self.deadline is not None and eta > self.deadline


class _Draining(NamedTuple):
    """A draining color a forecast is for, as its rule and retirement make it: compared cycle
    after cycle to tell whether its last fit still stands, its times worked out when fitted."""

    key: ColorKey
    floor: int
    retired_at: datetime
    max_age: timedelta | None  # the rule's maxRetiredAge

    @property
    def since(self) -> float:
        return self.retired_at.timestamp()

    @property
    def deadline(self) -> float | None:
        return _deadline(self.retired_at, self.max_age)


def _draining_colors(plan: Plan, policy: Policy) -> list[_Draining]:
    """The plan's draining colors above their rule's floor: the ones a forecast is for."""
    rules = {rule.name: rule for rule in policy.rules}
    out = []
    for app in plan.apps:
        out.extend(_draining_of(app, rules))
    return out


def _draining_of(app: AppPlan, rules: Mapping[str, Rule]) -> list[_Draining]:
    out = []
    for color in app.colors:
        rule = rules.get(color.rule) if color.rule is not None else None
        if rule is None or color.retired_at is None:
            continue
        if not _draining(color, rule.knobs.connection_floor):
            continue
        out.append(
            _Draining(
                key=(color.namespace, color.app, color.color),
                floor=rule.knobs.connection_floor,
                retired_at=color.retired_at,
                max_age=rule.knobs.max_retired_age,
            )
        )
    return out


def forecast_plan(
    plan: Plan,
    policy: Policy,
    history: Mapping[ColorKey, Sequence[Point]],
    *,
    settings: ForecastSettings = DEFAULT_SETTINGS,
) -> dict[ColorKey, ColorForecast]:
    """A forecast for every draining color above its floor, from its samples in `history`."""
    now = plan.now.timestamp()
    return {
        d.key: ColorForecast(
            forecast=forecast(
                history.get(d.key, ()), floor=d.floor, now=now, since=d.since, settings=settings
            ),
            floor=d.floor,
            deadline=d.deadline,
        )
        for d in _draining_colors(plan, policy)
    }


class Forecaster:
    """The daemon's forecasts, cycle after cycle, at a bounded cost: each call fits at most
    `per_cycle` colors (those never fitted first, then the longest unrefreshed) and carries the
    others' last estimates forward; a color not fitted yet has none until its turn. A fit takes
    about 2 ms: 2,000 draining colors must not stall a cycle.
    """

    def __init__(
        self, *, per_cycle: int = 50, settings: ForecastSettings = DEFAULT_SETTINGS
    ) -> None:
        self.per_cycle = per_cycle
        self.settings = settings
        # Per color: what it was fitted for, the estimate, and when it was fitted.
        self._last: dict[ColorKey, tuple[_Draining, ColorForecast, float]] = {}
        # Each app plan's draining colors, by the plan object: the daemon's planner hands out
        # the same AppPlan while nothing about the app changed.
        self._apps: dict[int, tuple[AppPlan, Policy, list[_Draining]]] = {}

    def _draining_colors(self, plan: Plan, policy: Policy) -> list[_Draining]:
        rules = {rule.name: rule for rule in policy.rules}
        before = self._apps
        after: dict[int, tuple[AppPlan, Policy, list[_Draining]]] = {}
        out: list[_Draining] = []
        for app in plan.apps:
            hit = before.get(id(app))
            if hit is not None and hit[0] is app and hit[1] is policy:
                found = hit[2]
            else:
                found = _draining_of(app, rules)
            after[id(app)] = (app, policy, found)
            out.extend(found)
        self._apps = after
        return out

    def update(
        self, plan: Plan, policy: Policy, history: Mapping[ColorKey, Sequence[Point]]
    ) -> dict[ColorKey, ColorForecast]:
        now = plan.now.timestamp()
        last = self._last

        def fitted_at(d: _Draining) -> float:
            kept = last.get(d.key)
            # Never fitted, or its floor or retirement changed since: first in line.
            return -math.inf if kept is None or kept[0] != d else kept[2]

        colors = sorted(self._draining_colors(plan, policy), key=fitted_at)
        fresh: dict[ColorKey, tuple[_Draining, ColorForecast, float]] = {}
        for i, d in enumerate(colors):
            if i < self.per_cycle:
                found = forecast(
                    history.get(d.key, ()),
                    floor=d.floor,
                    now=now,
                    since=d.since,
                    settings=self.settings,
                )
                fresh[d.key] = (d, ColorForecast(found, floor=d.floor, deadline=d.deadline), now)
            elif (kept := last.get(d.key)) is not None and kept[0] == d:
                fresh[d.key] = (d, _carried(kept[1], now), kept[2])
        self._last = fresh
        return {key: found for key, (_, found, _) in fresh.items()}


def _carried(previous: ColorForecast, now: float) -> ColorForecast:
    """An earlier estimate seen from `now`: the same ETA, never in the past."""
    f = previous.forecast
    eta = None if f.eta is None else max(f.eta, now)
    # The constructors, not dataclasses.replace: thousands of colors are carried every cycle.
    carried = Forecast(now=now, points=f.points, eta=eta, method=f.method, reason=f.reason)
    return ColorForecast(carried, floor=previous.floor, deadline=previous.deadline)


def _draining(color: ColorPlan, floor: int) -> bool:
    value = color.connections.value
    return (
        color.state is State.DRAINING
        and color.retired_at is not None
        and value is not None
        and value > floor
    )


def _deadline(retired_at: datetime, max_age: timedelta | None) -> float | None:
    if max_age is None:
        return None
    # A retirement stamped far ahead (9999-12-31: "keep it"): no deadline the clock reaches.
    at = later(retired_at, max_age, beyond=Beyond.NEVER)
    return None if at == END else at.timestamp()
