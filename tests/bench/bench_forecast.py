"""Benchmark: how far off the drain forecast is, on 200 simulated burn-downs.

Each simulated color holds N connections when it is retired; each connection's remaining session
length is drawn from an exponential, a lognormal or a Pareto distribution (the last two heavy-
tailed). The color is sampled every 30 s, as the daemon does, into the daemon's own bounded
history, and forecast at 25 %, 50 % and 75 % of its true drain time (the end of its last
session: the floor is 0). Printed: the median absolute error of the ETA (and relative to the
drain time) and how many colors got an estimate, for the forecast and for a naive baseline, a
straight line through the last two samples, in the same run. Seeded: the figures repeat.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rainbowd.core.forecast import Forecaster, forecast
from rainbowd.core.history import ConnectionHistory
from rainbowd.core.model import AppPlan, ColorPlan, Connections, Namespace, Plan, Snapshot, State
from rainbowd.core.policy import ConnectionsQuery, Knobs, Policy, Rule

COLORS = 200
INTERVAL = 30.0  # the daemon's default cycle
FRACTIONS = (0.25, 0.50, 0.75)
SEED = 20261121
HOUR = 3600.0
RUNS = 20

Draw = Callable[[random.Random], float]


def _exponential(rng: random.Random) -> float:
    return rng.expovariate(1 / (2 * HOUR))


def _lognormal(rng: random.Random) -> float:
    return rng.lognormvariate(math.log(HOUR), 1.0)


def _pareto(rng: random.Random) -> float:
    return 10 * 60 * rng.paretovariate(2.0)


DISTRIBUTIONS: dict[str, Draw] = {
    "exponential (mean 2h)": _exponential,
    "lognormal (median 1h, sigma 1)": _lognormal,
    "pareto (10m, alpha 2)": _pareto,
}


@dataclass
class Color:
    lifetimes: list[float]  # sorted remaining session lengths, seconds after retirement

    @property
    def drain_time(self) -> float:
        return self.lifetimes[-1]

    def count(self, t: float) -> float:
        return float(len(self.lifetimes) - bisect.bisect_right(self.lifetimes, t))


def simulate(rng: random.Random, draw: Draw) -> Color:
    n = rng.randint(20, 2000)
    return Color(sorted(draw(rng) for _ in range(n)))


def naive(points: Sequence[tuple[float, float]], now: float) -> float | None:
    """The last two samples' straight line down to 0.5 connections."""
    if len(points) < 2:
        return None
    (t0, v0), (t1, v1) = points[-2], points[-1]
    if v1 >= v0 or t1 <= t0:
        return None
    return max(now, t1 + (v1 - 0.5) * (t1 - t0) / (v0 - v1))


@dataclass
class Errors:
    absolute: list[float]
    relative: list[float]
    missing: int = 0

    def add(self, eta: float | None, truth: float) -> None:
        if eta is None:
            self.missing += 1
            return
        self.absolute.append(abs(eta - truth))
        self.relative.append(abs(eta - truth) / truth)

    def cell(self) -> str:
        if not self.absolute:
            return "no estimate"
        abs_h = statistics.median(self.absolute) / HOUR
        rel = statistics.median(self.relative) * 100
        shown = len(self.absolute)
        return f"{abs_h:6.1f} h ({rel:4.0f} %) n={shown:3d}"


def evaluate(colors: list[Color]) -> dict[float, tuple[Errors, Errors]]:
    out = {f: (Errors([], []), Errors([], [])) for f in FRACTIONS}
    for color in colors:
        history = ConnectionHistory()
        key = ("bench", "app", "c")
        marks = sorted(f * color.drain_time for f in FRACTIONS)
        t = 0.0
        for fraction, mark in zip(FRACTIONS, marks, strict=True):
            while t <= mark:
                history.add(key, t, color.count(t))
                t += INTERVAL
            points = history[key]
            now = points[-1][0]
            ours, theirs = out[fraction]
            ours.add(forecast(points, floor=0, now=now, since=0.0).eta, color.drain_time)
            theirs.add(naive(points, now), color.drain_time)
    return out


def main() -> None:
    rng = random.Random(SEED)
    all_colors: list[Color] = []
    print(
        f"{COLORS} simulated colors (a third per session-length distribution), 20-2000 "
        f"connections each, sampled every {INTERVAL:g} s into the daemon's bounded history; "
        "floor 0; median absolute ETA error (relative to the drain time), colors with an estimate"
    )
    rows: list[tuple[str, dict[float, tuple[Errors, Errors]]]] = []
    for i, (name, draw) in enumerate(DISTRIBUTIONS.items()):
        count = COLORS // len(DISTRIBUTIONS) + (i < COLORS % len(DISTRIBUTIONS))
        colors = [simulate(rng, draw) for _ in range(count)]
        all_colors.extend(colors)
        drains = [c.drain_time / HOUR for c in colors]
        print(f"  {name}: {count} colors, drain time median {statistics.median(drains):.1f} h")
        rows.append((name, evaluate(colors)))
    rows.append(("all", evaluate(all_colors)))
    cycle_cost()
    header = f"{'':34}{'at':>4}  {'forecast':28}  {'naive (last two samples)':28}"
    print(header)
    for name, result in rows:
        for fraction in FRACTIONS:
            ours, theirs = result[fraction]
            print(f"{name:34}{fraction * 100:3.0f}%  {ours.cell():28}  {theirs.cell():28}")


def cycle_cost() -> None:
    """What the history and the forecaster add to a daemon cycle with 10,000 colors, 2,000 of
    them draining, each with a full history."""
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    knobs = Knobs()
    policy = Policy(rules=(Rule(name="r", knobs=knobs, connections=ConnectionsQuery()),))
    keys = [("ns", f"app{i // 5}", f"c{i:05d}") for i in range(10_000)]
    history = ConnectionHistory()
    for step in range(history.limits.per_color):
        at = now.timestamp() - (history.limits.per_color - step) * INTERVAL
        for key in keys:
            history.add(key, at, 1000.0 * math.exp(-step / 200))
    colors = [
        ColorPlan(
            namespace=ns,
            app=app,
            color=c,
            name=f"{app}-{c}",
            state=State.DRAINING,
            rule="r",
            replicas=1,
            ready_replicas=1,
            connections=Connections(50.0),
            created_at=now - timedelta(days=1),
            retired_at=now - timedelta(hours=4),
            drained_since=None,
            note="",
        )
        for ns, app, c in keys[:2000]
    ]
    plan = Plan(now=now, apps=(AppPlan("ns", "app", "r", None, "", tuple(colors)),))
    snapshot = Snapshot(
        now=now,
        namespaces={
            "ns": Namespace(
                name="ns", connections={(app, c): Connections(50.0) for _, app, c in keys}
            )
        },
    )
    forecaster = Forecaster()
    record, update = [], []
    for i in range(RUNS):
        snapshot = dataclasses.replace(snapshot, now=now + timedelta(seconds=INTERVAL * (i + 1)))
        start = time.perf_counter()
        history.record_snapshot(snapshot)
        record.append(time.perf_counter() - start)
        start = time.perf_counter()
        forecaster.update(plan, policy, history)
        update.append(time.perf_counter() - start)
    print(
        f"per cycle, 10,000 colors with full histories ({history.size:,} points), 2,000 draining: "
        f"recording the samples median {statistics.median(record) * 1000:.1f} ms, "
        f"forecasting ({forecaster.per_cycle} fits, the rest carried) "
        f"median {statistics.median(update) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
