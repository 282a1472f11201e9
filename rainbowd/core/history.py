"""Each color's recent connection samples, kept in memory by the daemon, bounded per color and in
total: what the drain forecast fits and what /status draws as sparklines.

Pure: the daemon records each cycle's snapshot (and, once at start, a range query's points);
nothing here reads a clock or performs I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from rainbowd.core.model import Snapshot

ColorKey = tuple[str, str, str]
"""(namespace, app, color)"""

Point = tuple[float, float]
"""(Unix time in seconds, connections)"""


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """How much history is kept. Memory is about 100 bytes per point."""

    window: float = 6 * 3600.0
    """Seconds of history kept per color: long enough to see a drain's curve, which takes hours;
    points older than this (before the color's newest point) are dropped."""
    per_color: int = 360
    """Points per color at most: every sample of the last three hours at the default 30 s
    interval; over six hours, one a minute."""
    total: int = 200_000
    """Points over all colors at most (about 20 MB): with many colors each keeps fewer, more
    widely spaced points, down to `min_per_color`."""
    min_per_color: int = 8
    """The fewest points a color is thinned to, however many colors there are."""

    def capacity(self, colors: int) -> int:
        """Points each of `colors` colors may keep."""
        share = self.total // max(colors, 1)
        return max(self.min_per_color, min(self.per_color, share))


class ConnectionHistory(Mapping[ColorKey, Sequence[Point]]):
    """Samples per color, oldest first, within `window` of the newest, at most `capacity` of
    them (thinned evenly when full). Reads as a mapping from color to its points."""

    def __init__(self, limits: HistoryLimits | None = None) -> None:
        self.limits = limits or HistoryLimits()
        self._points: dict[ColorKey, list[Point]] = {}

    def __len__(self) -> int:
        return len(self._points)

    def __iter__(self) -> Iterator[ColorKey]:
        return iter(self._points)

    def __getitem__(self, key: ColorKey) -> Sequence[Point]:
        return self._points[key]

    @property
    def size(self) -> int:
        """Points held over all colors."""
        return sum(len(p) for p in self._points.values())

    def points(self, key: ColorKey) -> tuple[Point, ...]:
        return tuple(self._points.get(key, ()))

    def record_snapshot(self, snapshot: Snapshot) -> None:
        """One cycle's samples: every color with a known figure gets a point; colors no longer
        in the snapshot are forgotten (an unknown figure keeps the color, adds no point)."""
        at = snapshot.now.timestamp()
        if not math.isfinite(at):
            return
        held = self._points
        colors = sum([len(ns.connections) for ns in snapshot.namespaces.values()])
        # What `capacity` reads once the colors gone are forgotten: as many as the snapshot's.
        capacity = self.limits.capacity(colors)
        horizon = at - self.limits.window
        # One pass, the common case inline (one point appended, nothing to drop): with 10,000
        # colors this runs every cycle.
        for ns in snapshot.namespaces.values():
            name = ns.name
            for (app, color), connections in ns.connections.items():
                key = (name, app, color)
                points = held.get(key)
                if points is None:
                    points = held[key] = []
                value = connections.value
                if value is None or not 0 <= value < math.inf:
                    continue
                if points and at <= points[-1][0]:
                    continue
                points.append((at, value))
                if len(points) > capacity or points[0][0] < horizon:
                    self._fit(key, capacity)
        if len(held) > colors:  # every color of the snapshot is held: some are gone
            current = {
                (ns.name, app, color)
                for ns in snapshot.namespaces.values()
                for app, color in ns.connections
            }
            for key in held.keys() - current:
                del held[key]

    def seed(self, series: Mapping[ColorKey, Iterable[Point]]) -> int:
        """Older points (from a range query at start-up) merged under what is already held;
        the number of points kept. Non-finite or negative values are skipped."""
        kept = 0
        for key, raw in series.items():
            clean = sorted((t, v) for t, v in raw if _usable(t, v))
            if not clean:
                continue
            mine = self._points.get(key, [])
            first = mine[0][0] if mine else math.inf
            merged = [p for p in clean if p[0] < first] + mine
            self._points[key] = merged
            self._fit(key)
            kept += len(self._points[key]) - len(mine)
        return max(kept, 0)

    def add(self, key: ColorKey, at: float, value: float) -> None:
        """One sample; ignored when it is not newer than the color's last point or unusable."""
        if not _usable(at, value):
            return
        points = self._points.get(key)
        if points is None:
            before = self.capacity
            points = self._points[key] = []
            if self.capacity < before:  # a color more: every other one's share is smaller
                for other, held in self._points.items():
                    if len(held) > self.capacity:
                        self._fit(other)
        if points and at <= points[-1][0]:
            return
        points.append((at, value))
        self._fit(key)

    @property
    def capacity(self) -> int:
        return self.limits.capacity(len(self._points))

    def _fit(self, key: ColorKey, capacity: int | None = None) -> None:
        """Drop what is older than the window; once over capacity, thin the whole line to about
        half of it, evenly in time: every sample is kept until then, so a short history has
        every cycle's figure and a long one its whole span, more coarsely."""
        points = self._points[key]
        horizon = points[-1][0] - self.limits.window
        if points[0][0] < horizon:
            points[:] = [p for p in points if p[0] >= horizon]
        if capacity is None:
            capacity = self.capacity
        if len(points) > capacity:
            span = points[-1][0] - points[0][0]
            points[:] = thin(points, 2 * span / capacity)
            del points[: max(0, len(points) - capacity)]

    def sparklines(
        self, *, per_color: int = 60, total: int = 20_000
    ) -> dict[ColorKey, list[list[float]]]:
        """Every color's sparkline, at most `per_color` points each and about `total` in all
        (never fewer than 8 a color): /status stays a few hundred kilobytes with thousands of
        colors."""
        share = max(8, min(per_color, total // max(len(self._points), 1)))
        return {key: self.sparkline(key, share) for key in self._points}

    def sparkline(self, key: ColorKey, max_points: int = 60) -> list[list[float]]:
        """The color's points as `[[t, value], ...]`, at most `max_points`, evenly thinned:
        what /status serves, small enough for a page to draw every color."""
        points = self._points.get(key)
        if not points:
            return []
        span = points[-1][0] - points[0][0]
        shown = points if len(points) <= max_points else thin(points, span / (max_points - 1))
        shown = shown[-max_points:]
        return [[round(t, 3), v] for t, v in shown]


def thin(points: list[Point], spacing: float) -> list[Point]:
    """Points at least `spacing` apart, keeping the first and the newest."""
    if len(points) <= 2:
        return list(points)
    out = [points[0]]
    for point in points[1:-1]:
        if point[0] - out[-1][0] >= spacing:
            out.append(point)
    if len(out) >= 2 and points[-1][0] - out[-1][0] < spacing:
        out[-1] = points[-1]
    else:
        out.append(points[-1])
    return out


def _usable(at: float, value: float) -> bool:
    return math.isfinite(at) and math.isfinite(value) and value >= 0
