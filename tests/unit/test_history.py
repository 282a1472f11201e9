"""The in-memory connection history: one point per known sample, bounded per color and in total,
colors that leave the snapshot forgotten, start-up seeds merged under what is held."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from rainbowd.core.history import ConnectionHistory, HistoryLimits, thin
from rainbowd.core.model import Connections, Namespace, Snapshot

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def snapshot(at: datetime, values: dict[tuple[str, str, str], float | None]) -> Snapshot:
    namespaces: dict[str, dict[tuple[str, str], Connections]] = {}
    for (ns, app, color), value in values.items():
        namespaces.setdefault(ns, {})[(app, color)] = (
            Connections(value) if value is not None else Connections.unknown("query timed out")
        )
    return Snapshot(
        now=at,
        namespaces={ns: Namespace(name=ns, connections=c) for ns, c in namespaces.items()},
    )


A = ("ns", "chat", "aaaaaa")
B = ("ns", "chat", "bbbbbb")


def test_each_known_sample_becomes_a_point_and_unknown_adds_none() -> None:
    history = ConnectionHistory(HistoryLimits(window=3600, per_color=60))
    history.record_snapshot(snapshot(T0, {A: 10, B: 3}))
    history.record_snapshot(snapshot(T0 + timedelta(minutes=1), {A: 8, B: None}))
    history.record_snapshot(snapshot(T0 + timedelta(minutes=2), {A: 7, B: 2}))
    t0 = T0.timestamp()
    assert history[A] == [(t0, 10), (t0 + 60, 8), (t0 + 120, 7)]
    # The unknown sample kept the color but added no point.
    assert history[B] == [(t0, 3), (t0 + 120, 2)]
    assert history.size == 5


def test_colors_that_leave_the_snapshot_are_forgotten() -> None:
    history = ConnectionHistory()
    history.record_snapshot(snapshot(T0, {A: 10, B: 3}))
    history.record_snapshot(snapshot(T0 + timedelta(minutes=1), {A: 9}))
    assert set(history) == {A}


def test_a_color_gone_as_another_comes_is_forgotten() -> None:
    # As many colors as before, not the same ones: the one gone is forgotten, the one come kept,
    # each within its share of the total.
    C = ("other", "chat", "cccccc")
    limits = HistoryLimits(window=36000, per_color=100, total=20, min_per_color=2)
    history = ConnectionHistory(limits)
    for minute in range(9):
        history.record_snapshot(snapshot(T0 + timedelta(minutes=minute), {A: 10, B: 3}))
    for minute in range(9, 30):
        history.record_snapshot(snapshot(T0 + timedelta(minutes=minute), {A: 10, C: 3}))
    assert set(history) == {A, C}
    assert history[C][0][0] == (T0 + timedelta(minutes=9)).timestamp()
    assert all(len(history[key]) <= limits.capacity(2) for key in (A, C))


def test_every_sample_is_kept_until_full_then_the_line_is_thinned_evenly() -> None:
    history = ConnectionHistory(HistoryLimits(window=3600, per_color=20))
    for second in range(0, 200, 10):
        history.add(A, float(second), float(1000 - second))
    assert [t for t, _ in history[A]] == [float(s) for s in range(0, 200, 10)]
    history.add(A, 200.0, 800.0)
    times = [t for t, _ in history[A]]
    assert 8 <= len(times) <= 12
    assert times[0] == 0.0 and times[-1] == 200.0
    assert all(b - a >= 19 for a, b in itertools.pairwise(times[:-1]))


def test_points_older_than_the_window_are_dropped() -> None:
    history = ConnectionHistory(HistoryLimits(window=300, per_color=100))
    for minute in range(20):
        history.add(A, minute * 60.0, 5.0)
    assert history[A][0][0] >= 19 * 60 - 300


def test_the_total_is_bounded_by_thinning_every_color() -> None:
    limits = HistoryLimits(window=3600, per_color=100, total=1000, min_per_color=4)
    history = ConnectionHistory(limits)
    colors = [("ns", "chat", f"{i:06x}") for i in range(50)]
    for step in range(200):
        history.record_snapshot(
            snapshot(T0 + timedelta(seconds=30 * step), dict.fromkeys(colors, 1.0))
        )
    assert history.size <= limits.total
    assert all(len(history[c]) <= limits.capacity(50) for c in colors)
    # Still a useful span: the points cover most of the window, not just the last minutes.
    span = history[colors[0]][-1][0] - history[colors[0]][0][0]
    assert span >= 3000


def test_bad_samples_and_old_samples_are_ignored() -> None:
    history = ConnectionHistory()
    history.add(A, 100.0, 5.0)
    history.add(A, 90.0, 4.0)  # older than the newest point
    history.add(A, 200.0, float("nan"))
    history.add(A, 300.0, -1.0)
    history.add(A, float("inf"), 1.0)
    assert history[A] == [(100.0, 5.0)]


def test_a_seed_goes_under_what_is_held_and_is_bounded() -> None:
    history = ConnectionHistory(HistoryLimits(window=3600, per_color=30))
    history.add(A, 7200.0, 3.0)
    kept = history.seed({A: [(3600.0 + 10 * i, 1000.0 - i) for i in range(360)], B: [(0.0, 1.0)]})
    points = history[A]
    assert points[-1] == (7200.0, 3.0)
    assert len(points) <= 30 and kept == len(points) - 1 + 1  # B's point too
    assert 7200 - 3600 <= points[0][0] <= 3700
    assert [t for t, _ in points] == sorted(t for t, _ in points)
    assert history[B] == [(0.0, 1.0)]


def test_the_sparkline_is_bounded_and_keeps_both_ends() -> None:
    history = ConnectionHistory(HistoryLimits(window=36000, per_color=1000))
    for i in range(500):
        history.add(A, float(i * 60), float(500 - i))
    line = history.sparkline(A, max_points=40)
    assert len(line) <= 40
    assert line[-1] == [499 * 60, 1.0]
    assert line[0][0] <= 60 * 20
    assert history.sparkline(B) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=80),
    st.floats(min_value=0.1, max_value=1e5),
)
def test_thin_keeps_order_ends_and_spacing(times: list[float], spacing: float) -> None:
    points = [(t, 1.0) for t in sorted(set(times))]
    out = thin(points, spacing)
    assert out[0] == points[0] and out[-1] == points[-1]
    assert [t for t, _ in out] == sorted(t for t, _ in out)
    inner = [t for t, _ in out]
    assert all(b - a >= spacing for a, b in itertools.pairwise(inner[:-1]))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5),
            st.floats(min_value=0, max_value=1e4, allow_nan=False),
        ),
        max_size=300,
    )
)
def test_any_sample_sequence_stays_within_bounds(samples: list[tuple[int, float]]) -> None:
    limits = HistoryLimits(window=1000, per_color=20, total=60, min_per_color=4)
    history = ConnectionHistory(limits)
    for step, (color, value) in enumerate(samples):
        history.add(("ns", "app", str(color)), step * 7.0, value)
    for key in history:
        points = history[key]
        assert len(points) <= limits.capacity(len(history)) + 1
        assert points[-1][0] - points[0][0] <= limits.window


def test_a_new_color_shrinks_every_others_share_at_once() -> None:
    """Found by the property above: a color filled while it was one of few kept its points when
    more colors came, until its own next sample."""
    limits = HistoryLimits(window=1000, per_color=20, total=60, min_per_color=4)
    history = ConnectionHistory(limits)
    keys = [("ns", "app", str(color)) for color in range(6)]
    for step in range(12):
        history.add(keys[3], step * 7.0, 0.0)
    for step, key in enumerate((keys[0], keys[1], keys[2], keys[4], keys[5]), start=12):
        history.add(key, step * 7.0, 0.0)
    assert limits.capacity(6) == 10
    assert len(history[keys[3]]) <= 10


def test_sparklines_are_bounded_in_total() -> None:
    history = ConnectionHistory(HistoryLimits(window=36000, per_color=100, total=100_000))
    colors = [("ns", "chat", f"{i:06x}") for i in range(1000)]
    for step in range(100):
        for key in colors:
            history.add(key, step * 60.0, 100.0 - step)
    lines = history.sparklines(per_color=60, total=20_000)
    assert set(lines) == set(colors)
    assert all(len(line) <= 20 for line in lines.values())
    assert sum(len(line) for line in lines.values()) <= 20_000
    few = ConnectionHistory()
    few.add(colors[0], 0.0, 1.0)
    few.add(colors[0], 60.0, 2.0)
    assert few.sparklines() == {colors[0]: [[0.0, 1.0], [60.0, 2.0]]}
