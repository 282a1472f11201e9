"""The cycle's side features, each under a guard of its own: the drain forecast, the connection
history, the /status document, the metrics, the page's data and the Events. A failure of one is
logged once per distinct cause, counted per component, shown on /status, and changes no decision
(docs/design.md "Decide, act, then tell"); the component works again once its fault goes.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TypeVar

from rainbowd.logs import get_logger
from rainbowd.status import SideFailureStatus as SideFailure

log = get_logger(__name__)

T = TypeVar("T")


class Component(enum.Enum):
    """A side feature of the cycle: what the `component` label of
    `rainbowd_side_failures_total` and the keys of `sideFailures` on /status name."""

    HISTORY = "history"
    FORECAST = "forecast"
    EVENTS = "events"
    METRICS = "metrics"
    PAGE = "page"
    STATUS = "status"


class SideGuard:
    """Runs each side feature so that nothing it raises leaves the cycle.

    `count` is called on every failure (the metric); the log has one line per distinct cause,
    and one when the component works again: after a cycle (`end_cycle`) in which every run of
    it worked (a component may run more than once a cycle, as the metrics do).
    """

    def __init__(self, count: Callable[[Component], object]) -> None:
        self._count = count
        self._failing: dict[Component, SideFailure] = {}
        self._worked: set[Component] = set()
        self._failed: set[Component] = set()

    @property
    def failing(self) -> Mapping[Component, SideFailure]:
        """The components whose last run failed."""
        return dict(self._failing)

    def run(self, component: Component, step: Callable[[], T], *, now: datetime) -> T | None:
        """`step()`, or None when it raised."""
        try:
            result = step()
        except Exception as exc:
            self._failure(component, exc, now)
            return None
        self._worked.add(component)
        return result

    async def run_async(
        self, component: Component, step: Callable[[], Awaitable[T]], *, now: datetime
    ) -> T | None:
        """`await step()`, or None when it raised (cancellation passes through)."""
        try:
            result = await step()
        except Exception as exc:
            self._failure(component, exc, now)
            return None
        self._worked.add(component)
        return result

    def end_cycle(self) -> None:
        """The cycle is over: a failing component that only worked in it has recovered."""
        for component in self._worked - self._failed:
            before = self._failing.pop(component, None)
            if before is not None:
                log.info("side feature recovered", component=component.value, failures=before.count)
        self._worked = set()
        self._failed = set()

    def _failure(self, component: Component, exc: Exception, now: datetime) -> None:
        self._failed.add(component)
        cause = f"{type(exc).__name__}: {exc}"
        before = self._failing.get(component)
        if before is None or before.cause != cause:
            # The traceback once per cause, not every cycle: the fault is usually a value
            # someone wrote, and it stays until they fix it.
            log.exception("side feature failed", component=component.value, cause=cause)
        self._failing[component] = SideFailure(
            cause=cause,
            since=now if before is None else before.since,
            count=1 if before is None else before.count + 1,
        )
        try:
            self._count(component)
        except Exception:  # the metrics themselves may be what fails
            log.debug("side failure not counted", component=component.value)
