"""The level-based reconcile loop: once the caches are synced and a policy is in force, a timer
drives cycles (watch and policy events wake it early, debounced). Each cycle decides (query,
snapshot, plan), acts when this replica leads, then tells: history, forecast, Events, metrics,
the page's data and /status, each under its own guard, so none of them can stop a decision.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from rainbowd.core.forecast import ColorForecast, ColorKey
from rainbowd.core.model import Plan, Snapshot
from rainbowd.core.policy import Policy
from rainbowd.daemon.consolidating import UNLISTED
from rainbowd.daemon.cycles import Pipeline, Planned, consolidates, snapshot_summary
from rainbowd.daemon.guarding import Component, SideGuard
from rainbowd.daemon.policies import PolicyState
from rainbowd.daemon.tasks import first_done
from rainbowd.kube.caching import ClusterCache
from rainbowd.kube.executing import ActionOutcome, ActionResult, Executor
from rainbowd.logs import get_logger
from rainbowd.metrics import Metrics
from rainbowd.status import (
    CacheStatus,
    CycleStatus,
    HistoryStatus,
    PolicyStatus,
    PrometheusFailure,
    SnapshotSummary,
    Sparkline,
    Status,
    status_to_document,
)
from rainbowd.timeline import Timeline

log = get_logger(__name__)

# At most this many AnnotationWarning Events a cycle: a cluster full of bad values (a bulk edit
# gone wrong) is reported over the next cycles, never as one burst of writes to the apiserver.
WARNING_EVENTS_PER_CYCLE = 20


def warnings_to_report(
    warnings: Sequence[str], reported: frozenset[str], *, cap: int = WARNING_EVENTS_PER_CYCLE
) -> tuple[list[str], frozenset[str]]:
    """The plan's warnings to report as Events this cycle (new ones, at most `cap`), and the
    warnings reported so far that still hold: one gone and back is reported again."""
    new = [w for w in warnings if w not in reported][:cap]
    return new, frozenset(w for w in warnings if w in reported) | frozenset(new)


@dataclass(frozen=True)
class CycleReport:
    """What the last cycle saw, decided and did; served on /status."""

    number: int
    started_at: datetime
    duration: float
    ok: bool
    error: str | None
    leader: bool
    acted: bool
    snapshot: SnapshotSummary | None
    plan: Plan | None
    results: tuple[ActionResult, ...]
    prometheus_errors: tuple[PrometheusFailure, ...]
    forecasts: Mapping[ColorKey, ColorForecast] = field(default_factory=dict)


class WarningReporter(Protocol):
    """What reports the plan's annotation warnings as Events (the executor)."""

    async def report_warnings(
        self, plan: Plan, snapshot: Snapshot, warnings: Iterable[str]
    ) -> int: ...


class Documents:
    """The cycle's sections of /status, written once per cycle (when first asked for), each by
    a side feature of its own: `status` the cycle, snapshot and history sections, `page` the
    plan (with forecasts and sparklines) and the recent actions the live page draws."""

    def status(self, report: CycleReport, history: HistoryStatus | None) -> dict[str, Any]:
        cycle = CycleStatus(
            number=report.number,
            started_at=report.started_at,
            duration=report.duration,
            ok=report.ok,
            error=report.error,
            leader=report.leader,
            acted=report.acted,
            actions=dict(Tally(r.outcome.value for r in report.results)),
            prometheus_errors=report.prometheus_errors,
        )
        doc = status_to_document(
            Status(**_NO_DAEMON, cycle=cycle, snapshot=report.snapshot, history=history)
        )
        return {key: doc[key] for key in ("cycle", "snapshot", "history")}

    def page(
        self,
        plan: Plan | None,
        forecasts: Mapping[ColorKey, ColorForecast],
        sparklines: Mapping[ColorKey, Sparkline],
        recent_actions: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        doc = status_to_document(
            Status(
                **_NO_DAEMON,
                plan=plan,
                forecasts=forecasts,
                sparklines=sparklines,
                recent_actions=tuple(recent_actions),
            )
        )
        return {key: doc[key] for key in ("plan", "recentActions")}


# The daemon's own parts of a Status, which `Documents` leaves to the supervisor.
_NO_DAEMON: dict[str, Any] = {
    "identity": "",
    "leader": False,
    "ready": False,
    "policy": PolicyStatus(source="", valid=False),
    "cache": CacheStatus(synced=False),
}


class Reconciler:
    """Runs cycles until `stopping` is set; `last_cycle` is what /status shows."""

    def __init__(
        self,
        *,
        policy: PolicyState,
        cache: ClusterCache,
        pipeline: Pipeline,
        executor: Executor,
        metrics: Metrics,
        leading: Callable[[], bool],
        stopping: asyncio.Event,
        interval: float,
        debounce: float,
        wake_on: Sequence[asyncio.Event] = (),
        reporter: WarningReporter | None = None,
        documents: Documents | None = None,
    ) -> None:
        """`reporter` writes the warnings' Events (default: the executor); `documents` writes
        the cycle's sections of /status."""
        self.policy = policy
        self.cache = cache
        self.pipeline = pipeline
        self.executor = executor
        self.metrics = metrics
        self.reporter: WarningReporter = executor if reporter is None else reporter
        self.documents = Documents() if documents is None else documents
        # The side features' failures: logged once per cause, counted, shown on /status.
        self.side = SideGuard(
            lambda component: metrics.side_failures.labels(component=component.value).inc()
        )
        # The last sections of /status each side feature wrote (kept while it fails), and the
        # cycle they were written for.
        self.published: dict[str, Any] = {}
        self._written: int | None = None
        self.leading = leading
        self.stopping = stopping
        self.interval = interval
        self.debounce = debounce
        self._wake = asyncio.Event()
        # Everything that means "look again": a nudge, a cache change, a new policy.
        self._wake_on = (self._wake, cache.changed, policy.changed, *wake_on)
        self.last_cycle: CycleReport | None = None
        self.timeline = Timeline()
        self.cycles = 0
        # Set once the caches are synced and a policy is in force, when cycles begin.
        self.running = asyncio.Event()
        # Set once the first cycle has ended (acted or not): work that may wait yields to it.
        self.first_cycle_done = asyncio.Event()
        self.acting = False  # the executor is applying a plan
        # The plan warnings of the last cycle, each logged when it first appeared; and those an
        # Event reported (by this replica, leading).
        self._warned: frozenset[str] = frozenset()
        self._reported: frozenset[str] = frozenset()
        # Loop-clock time of the last finished cycle (or of the start), for /healthz.
        self.alive_at = asyncio.get_running_loop().time()

    def wake(self) -> None:
        """Run a cycle now rather than at the next tick (after the debounce)."""
        self._wake.set()

    @property
    def ready(self) -> bool:
        return bool(self.cache.synced and self.policy.policy)

    async def run(self) -> None:
        """Level-based: the timer drives cycles; watch and policy events only wake it early."""
        loop = asyncio.get_running_loop()
        # The first cycle waits for the caches: a plan from a half-listed cache would see
        # colors without their Services and call live colors retired.
        while not self.stopping.is_set():
            attempt_until = loop.time() + self.interval
            if await self.wait_ready(self.interval):
                break
            if self.stopping.is_set():
                return
            self.alive_at = loop.time()  # waiting for the apiserver is not a hung loop
            log.warning(
                "not ready yet",
                cache_synced=self.cache.synced,
                policy_loaded=self.policy.policy is not None,
            )
            # An invalid policy fails the wait at once: look again on an edit or a tick.
            await self._until(self.policy.changed.wait(), attempt_until)
        self.running.set()
        next_at = loop.time()
        while not self.stopping.is_set():
            await self._sleep_until(next_at)
            if self.stopping.is_set():
                break
            next_at = loop.time() + self.interval
            await self.cycle()

    async def wait_ready(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Until the caches are synced and a policy is in force; False when `timeout` seconds
        pass, a stop is requested, or the policy source was read and holds no valid policy."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await self._until(self.cache.wait_synced(), deadline):
            return False
        self.metrics.cache_synced.set(1)
        while self.policy.policy is None:
            if self.policy.errors:
                return False  # the source was read and holds no valid policy
            if not await self._until(asyncio.sleep(0.05), deadline):
                return False
        return True

    async def _until(self, aw: Awaitable[Any], deadline: float) -> bool:
        """Await `aw` unless the deadline passes or a stop is requested first."""
        remaining = deadline - asyncio.get_running_loop().time()
        return await first_done(aw, self.stopping.wait(), timeout=remaining) == 0

    async def _sleep_until(self, next_at: float) -> None:
        """Until the timer, a stop, or a change (debounced) wakes the loop."""
        loop = asyncio.get_running_loop()
        await first_done(
            self.stopping.wait(),
            *(event.wait() for event in self._wake_on),
            timeout=next_at - loop.time(),
        )
        if self.stopping.is_set() or loop.time() >= next_at:
            return
        # Woken by a change: let the burst of events of a rollout settle, then look once.
        debounce_until = min(next_at, loop.time() + self.debounce)
        await first_done(self.stopping.wait(), timeout=debounce_until - loop.time())

    async def cycle(self) -> CycleReport:
        """One pass: read the cache, query Prometheus, plan, act (if leading), report."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = datetime.now(UTC)
        # Clear before reading: a change landing while the cycle runs wakes the next one.
        for event in self._wake_on:
            event.clear()
        self.cycles += 1
        report: CycleReport
        try:
            report = await self._reconcile(now, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("cycle failed", cycle=self.cycles)
            report = CycleReport(
                number=self.cycles,
                started_at=now,
                duration=loop.time() - started,
                ok=False,
                error=f"{type(exc).__name__}: {exc}",
                leader=self.leading(),
                acted=False,
                snapshot=None,
                plan=None if self.last_cycle is None else self.last_cycle.plan,
                results=(),
                prometheus_errors=(),
                forecasts={} if self.last_cycle is None else self.last_cycle.forecasts,
            )
        self.publish(report, now=now)
        return report

    def publish(self, report: CycleReport, *, now: datetime) -> None:
        """The cycle's end, acted or failed: its report in force, then its metrics, under their
        guard. The /status sections and the page's data are written from it when first asked
        for (`documents_now`), not every cycle: at 10,000 colors they cost more than a cycle."""
        self.last_cycle = report
        self.first_cycle_done.set()
        self.alive_at = asyncio.get_running_loop().time()
        self.side.run(Component.METRICS, lambda: self._count_cycle(report), now=now)
        self.side.end_cycle()

    def documents_now(self) -> dict[str, Any]:
        """The last cycle's /status sections and page data, written once per cycle, each
        under its own guard; a section whose writing fails keeps its last good version."""
        report = self.last_cycle
        if report is None or self._written == report.number:
            return self.published
        self._written = report.number
        side, history, now = self.side, self.pipeline.history, report.started_at
        page = side.run(
            Component.PAGE,
            lambda: self.documents.page(
                report.plan, report.forecasts, dict(history.sparklines()), self.timeline.document()
            ),
            now=now,
        )
        self.published.update(page or {})
        status = side.run(
            Component.STATUS,
            lambda: self.documents.status(report, self.pipeline.history_status()),
            now=now,
        )
        self.published.update(status or {})
        return self.published

    def _count_cycle(self, report: CycleReport) -> None:
        self.metrics.reconcile_duration.observe(report.duration)
        self.metrics.cycles.labels(result="ok" if report.ok else "error").inc()
        if report.ok:
            self.metrics.last_success.set(time.time())

    async def _reconcile(self, now: datetime, started: float) -> CycleReport:
        policy = self.policy.policy
        if policy is None:
            raise RuntimeError("no valid policy loaded")
        if consolidates(policy):
            # Consolidation plans from the colors' pods, leading or not.
            self.cache.watch_pods(policy.app_label, policy.color_label)
        # Decide.
        objects = self.cache.objects()
        planned = await self.pipeline.run(
            policy,
            self.cache.deployments(),
            self.cache.services(),
            now=now,
            pods=self.cache.pods(),
            objects=objects,
            unlisted=self.cache.objects_unlisted() if objects is None else UNLISTED,
        )
        return await self.settle(planned, policy, now=now, started=started)

    async def settle(
        self, planned: Planned, policy: Policy, *, now: datetime, started: float
    ) -> CycleReport:
        """The rest of a cycle once the pipeline has decided: act (when leading), then tell,
        each side feature under its own guard; the cycle's report."""
        loop = asyncio.get_running_loop()
        plan = planned.plan
        actions = plan.actions  # gathered from every color: once
        leader = self.leading()
        applied: list[ActionResult] = []
        self.executor.app_label = policy.app_label
        self.executor.color_label = policy.color_label
        self.executor.objects = self.cache.objects
        if actions and leader and not self.stopping.is_set():
            # Act.
            self.acting = True
            try:
                applied = await self.executor.apply(plan, stop=self.stopping)
            finally:
                self.acting = False
        marking = leader and not plan.dry_run and not self.stopping.is_set()
        if marking:
            # Every pod of a retired color carries the mark, pods created since included.
            self.cache.watch_pods(policy.app_label, policy.color_label)
            await self.executor.mark_pods(plan, self.cache.pods())
            # A draining color's pods carry their connections as their deletion cost.
            await self.executor.keep_costs(plan, planned.snapshot, self.cache.pods())

        # Tell: each side feature under its own guard, after the decision and the actions.
        side, history = self.side, self.pipeline.history
        side.run(Component.HISTORY, lambda: history.record_snapshot(planned.snapshot), now=now)
        forecasts = side.run(
            Component.FORECAST,
            lambda: self.pipeline.forecaster.update(plan, policy, history),
            now=now,
        )
        if marking:
            new, reported = warnings_to_report(plan.warnings, self._reported)

            async def report_warnings() -> None:
                await self.reporter.report_warnings(plan, planned.snapshot, new)
                self._reported = reported  # reported for real: not again

            await side.run_async(Component.EVENTS, report_warnings, now=now)
        side.run(
            Component.PAGE, lambda: self.timeline.record(now, applied) if applied else None, now=now
        )
        side.run(
            Component.METRICS,
            lambda: self._record(plan, applied, planned.prometheus_errors, forecasts or {}),
            now=now,
        )

        duration = loop.time() - started
        # Counted by the State, named once per state: 10,000 colors, a few states.
        counted = Tally(color.state for app in plan.apps for color in app.colors)
        states = Tally({state.value: count for state, count in counted.items()})
        outcomes = Tally(r.outcome.value for r in applied)
        log.info(
            "cycle finished",
            cycle=self.cycles,
            apps=len(plan.apps),
            colors=sum(states.values()),
            states=_counts(states),
            planned=len(actions),
            actions=_counts(outcomes),
            blocked=sum(1 for a in plan.apps if a.blocked is not None),
            prometheus_errors=len(planned.prometheus_errors),
            leader=leader,
            dry_run=plan.dry_run,
            paused=plan.paused,
            duration_ms=round(duration * 1000, 1),
        )
        # Once while it lasts, not every cycle: a bad annotation someone must fix is reported
        # when it appears (and after a restart), and the color's note keeps saying it.
        for warning in plan.warnings:
            if warning not in self._warned:
                log.warning("plan warning", warning=warning)
        self._warned = frozenset(plan.warnings)
        # A conflict (the object moved on since the snapshot) does not wake the loop: the
        # object's watch event does, once the cache has the new version. Waking on the
        # conflict itself would retry against the same stale copy, again and again, while a
        # watch lags (as it does after an apiserver restart).
        return CycleReport(
            number=self.cycles,
            started_at=now,
            duration=duration,
            ok=True,
            error=None,
            leader=leader,
            acted=any(r.outcome is not ActionOutcome.SKIPPED for r in applied),
            snapshot=snapshot_summary(planned.snapshot),
            plan=plan,
            results=tuple(applied),
            prometheus_errors=planned.prometheus_errors,
            forecasts=forecasts or {},
        )

    def _record(
        self,
        plan: Plan,
        applied: Sequence[ActionResult],
        prometheus_errors: Sequence[PrometheusFailure],
        forecasts: Mapping[ColorKey, ColorForecast],
    ) -> None:
        self.metrics.cache_synced.set(1 if self.cache.synced else 0)
        self.metrics.record_prometheus_errors([f.cause for f in prometheus_errors])
        if applied:
            self.metrics.record_actions(applied)
        self.metrics.observe_plan(plan, forecasts)


def _counts(tally: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tally.items())) or "none"
