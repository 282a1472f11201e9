"""The side features' guard: a failure is logged once per distinct cause however many cycles it
lasts, counted every time, and a component that fails in one of its runs in a cycle has not
recovered in that cycle."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from rainbowd.daemon.guarding import Component, SideGuard

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def boom(message: str) -> None:
    raise RuntimeError(message)


def test_logged_once_per_cause_counted_every_time_recovered_after_a_whole_good_cycle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    counted: list[Component] = []
    guard = SideGuard(counted.append)
    for _ in range(3):  # a metrics part failing, another part of it working, each cycle
        assert guard.run(Component.METRICS, lambda: boom("one"), now=NOW) is None
        assert guard.run(Component.METRICS, lambda: 1, now=NOW) == 1
        guard.end_cycle()
    guard.run(Component.METRICS, lambda: boom("two"), now=NOW)
    guard.end_cycle()
    assert guard.failing[Component.METRICS].count == 4
    assert guard.failing[Component.METRICS].cause == "RuntimeError: two"
    assert counted == [Component.METRICS] * 4
    guard.run(Component.METRICS, lambda: None, now=NOW)
    guard.end_cycle()
    assert not guard.failing
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("side feature failed") == 2  # "one", then "two"
    assert messages.count("side feature recovered") == 1


def test_a_failing_counter_does_not_escape() -> None:
    guard = SideGuard(lambda component: boom("the metrics are down"))
    assert guard.run(Component.FORECAST, lambda: boom("x"), now=NOW) is None
    assert Component.FORECAST in guard.failing
