"""One cycle's pipeline: ask Prometheus for the connections the rules need, build the Snapshot,
plan. The daemon runs `Pipeline.run` every cycle and `rainbowd plan` runs it once (`plan_once`),
so what `rainbowd plan` prints is what the daemon would do. Acting is the supervisor's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp

from rainbowd.core.forecast import ColorForecast, ColorKey, Forecaster, forecast_plan
from rainbowd.core.history import ConnectionHistory
from rainbowd.core.instants import Beyond, earlier
from rainbowd.core.memos import SnapshotMemo, color_members
from rainbowd.core.model import (
    RETIRED_AT,
    ActionKind,
    ColorObject,
    Deployment,
    Plan,
    Service,
    Snapshot,
)
from rainbowd.core.objects import parse_time
from rainbowd.core.planner import Planner
from rainbowd.core.policy import ConnectionsQuery, Policy, PrometheusSettings
from rainbowd.daemon.consolidating import (
    UNLISTED,
    RetiredColors,
    Retries,
    candidates,
    costed,
    pod_figures,
    refused_by_scalers,
)
from rainbowd.daemon.guarding import Component, SideGuard
from rainbowd.daemon.heap import HeapKeeper
from rainbowd.daemon.policies import read_policy
from rainbowd.kube.caching import ClusterCache, PodMark
from rainbowd.kube.clients import make_api_client
from rainbowd.logs import get_logger
from rainbowd.prom.querying import (
    PrometheusClient,
    PrometheusError,
    QueryResult,
    fetch_connections,
)
from rainbowd.prom.ranges import fetch_range, range_expression
from rainbowd.settings import Settings
from rainbowd.status import HistoryStatus, PrometheusFailure, SnapshotSummary, Sparkline

log = get_logger(__name__)

# How long a one-shot plan (and `--once`) waits for the caches before it gives up: a first LIST
# of 10,000 Deployments takes a few seconds, an unreachable apiserver never answers.
SYNC_TIMEOUT = 60.0

Objects = Mapping[str, list[Deployment]]
"""Deployments by namespace, as the cache hands them out."""


@dataclass(frozen=True)
class Planned:
    """What one pass of the pipeline saw and decided."""

    snapshot: Snapshot
    plan: Plan
    prometheus_errors: tuple[PrometheusFailure, ...]
    forecasts: Mapping[ColorKey, ColorForecast] = dataclasses.field(default_factory=dict)
    """Each draining color's drain forecast, from the connection history (filled in after the
    plan, never by `run`: a side feature must not stop a decision)."""


class Pipeline:
    """Query, snapshot, plan; one per process, reused across cycles. It decides only: the
    connection history and the forecast (`history`, `forecaster`) are recorded and updated by
    the caller after acting, each under its own guard.

    `dry_run` (the `--dry-run` flag) is decided here, once: it marks the plan dry-run, as the
    policy's `dryRun` does, and whoever acts on a plan reads `plan.dry_run` alone. In a dry run
    the bookkeeping annotations the plan would write are kept in memory and laid over the next
    snapshots, so retired ages and drain holds advance as they would if written.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        dry_run: bool = False,
        planner: Planner | None = None,
        heap: HeapKeeper | None = None,
        history: ConnectionHistory | None = None,
        forecaster: Forecaster | None = None,
    ) -> None:
        self.dry_run = dry_run
        # The daemon's process only: keeps the collector off the long-lived objects.
        self.heap = heap
        # Reuses each unchanged app's plan from the last cycle (same objects, same connections,
        # no threshold crossed): steady-state cycles cost little even with 10,000 Deployments.
        self.planner = planner or Planner()
        # Dry run: would-be annotations by Deployment uid.
        self.overlay: dict[str, dict[str, str | None]] = {}
        # Each color's recent connections, for the drain forecast and /status sparklines.
        self.history = ConnectionHistory() if history is None else history
        self.forecaster = Forecaster() if forecaster is None else forecaster
        self._session = session
        self._prometheus: PrometheusClient | None = None
        # Colors whose per-pod figures were unavailable: not asked for again before `every`.
        self._retries = Retries()
        # The retired colors per namespace, worked out again only where something changed.
        self._retired = RetiredColors()
        self._snapshots = SnapshotMemo()
        # Dry run: each overlaid Deployment by uid, with the object and changes it came from.
        self._overlaid_by_uid: dict[str, tuple[Deployment, dict[str, str | None], Deployment]] = {}
        self._overlaid_last: tuple[Objects, dict[str, list[Deployment]], int] | None = None
        self._overlay_version = 0  # bumped whenever a plan adds to the overlay

    async def run(
        self,
        policy: Policy,
        deployments: Objects,
        services: Mapping[str, list[Service]],
        *,
        now: datetime,
        pods: Iterable[PodMark] | None = None,
        objects: Mapping[str, list[ColorObject]] | None = None,
        unlisted: str = UNLISTED,
    ) -> Planned:
        """`pods`: the colors' pods from the pod watch (None: not listed), for consolidation;
        `objects`: what scales the colors (None: not listed, `unlisted` says why, so no
        consolidation step)."""
        if self.overlay:
            deployments = self._overlaid(deployments)
        members = self._snapshots.members(policy, deployments, self.planner.rules)
        results: dict[ConnectionsQuery, QueryResult] = {}
        if members.queries:
            results = await fetch_connections(
                self._client(policy.prometheus), members.queries, at=now
            )
        retired = self._retired.scan(policy, deployments, services, rule_of=members.rule_of)
        # Per-pod figures, for the colors due for a consolidation step,
        wanted = candidates(retired, results, now=now) if consolidates(policy) else {}
        refused = refused_by_scalers(policy, wanted, deployments, objects, unlisted=unlisted)
        # And for the draining colors' pod-deletion-costs, whoever scales them down.
        for query, costs in costed(retired, results, now=now).items():
            into = None
            for key, retry in costs.items():
                if refused and key[1:] in refused.get(key[0], ()):
                    continue
                if into is None:
                    into = wanted.setdefault(query, {})
                into.setdefault(key, retry)
        figures = (
            await pod_figures(
                self._client(policy.prometheus), wanted, pods, at=now, retries=self._retries
            )
            if wanted
            else {}
        )
        for ns, colors in refused.items():
            figures.setdefault(ns, {}).update(colors)
        snapshot = self._snapshots.build(now, members, deployments, services, results, figures)
        return self.decide(policy, snapshot, prometheus_errors=query_failures(results))

    def decide(
        self,
        policy: Policy,
        snapshot: Snapshot,
        *,
        prometheus_errors: tuple[PrometheusFailure, ...] = (),
    ) -> Planned:
        """The plan for a snapshot, marked dry-run when the run is, its would-be annotations
        kept for the next snapshots in a dry run."""
        plan = self.planner.plan(snapshot, policy, snapshot.now)
        if self.dry_run and not plan.dry_run:
            plan = dataclasses.replace(plan, dry_run=True)
        if plan.dry_run:
            for action in plan.actions:
                if action.kind is ActionKind.ANNOTATE and action.uid:
                    self.overlay.setdefault(action.uid, {}).update(action.annotations)
                    self._overlay_version += 1
        if self.heap is not None:
            self.heap.tend()
        return Planned(snapshot=snapshot, plan=plan, prometheus_errors=prometheus_errors)

    def history_status(self) -> HistoryStatus:
        return HistoryStatus(
            window_seconds=self.history.limits.window,
            colors=len(self.history),
            points=self.history.size,
        )

    def sparklines(self) -> dict[ColorKey, Sparkline]:
        return dict(self.history.sparklines())

    def _overlaid(self, deployments: Objects) -> Objects:
        """The Deployments with the overlay laid over them. An overlaid Deployment is made once
        and kept while its object and its changes stay the same, and so is the whole mapping:
        the planner and the snapshot see the same objects cycle after cycle, as from the cache."""
        last = self._overlaid_last
        if last is not None and last[0] is deployments and last[2] == self._overlay_version:
            return last[1]
        uids = {d.uid for items in deployments.values() for d in items}
        for uid in [uid for uid in self.overlay if uid not in uids]:
            del self.overlay[uid]
        made = self._overlaid_by_uid
        kept: dict[str, tuple[Deployment, dict[str, str | None], Deployment]] = {}
        out: dict[str, list[Deployment]] = {}
        for ns, items in deployments.items():
            listed = []
            for d in items:
                changes = self.overlay.get(d.uid)
                if changes:
                    before = made.get(d.uid)
                    if before is not None and before[0] is d and before[1] == changes:
                        overlaid = before[2]
                    else:
                        overlaid = apply_overlay([d], {d.uid: changes})[0]
                    kept[d.uid] = (d, dict(changes), overlaid)
                    d = overlaid
                listed.append(d)
            previous = None if last is None else last[1].get(ns)
            if previous is not None and _same_items(previous, listed):
                listed = previous
            out[ns] = listed
        self._overlaid_by_uid = kept
        self._overlaid_last = (deployments, out, self._overlay_version)
        return out

    def _client(self, settings: PrometheusSettings) -> PrometheusClient:
        if self._prometheus is None or self._prometheus.settings != settings:
            self._prometheus = PrometheusClient(self._session, settings)
        return self._prometheus


async def seed_history(
    history: ConnectionHistory,
    session: aiohttp.ClientSession,
    policy: Policy,
    queries: list[ConnectionsQuery],
    *,
    now: datetime,
    interval: float,
    since: datetime | None = None,
) -> None:
    """One range query per distinct connections query, merged under what the history holds: a
    restart keeps the forecast's samples. It covers the history's window, or only from `since`
    (the oldest retirement: what the forecast reads) when that is more recent. A failure is
    logged and costs only the older samples."""
    start = now - timedelta(seconds=history.limits.window)
    if since is not None and since > start:
        start = earlier(min(since, now), interval, beyond=Beyond.LONG_AGO)
    # A point per cycle, but no more than twice what the history keeps: a large cluster's
    # answer stays a few megabytes.
    span = (now - start).total_seconds()
    step = timedelta(seconds=max(interval, span / (2 * history.limits.per_color)))
    for query in queries:
        try:
            series = await fetch_range(
                session, policy.prometheus, query, start=start, end=now, step=step
            )
        except PrometheusError as exc:
            log.warning(
                "history seed failed",
                cause=exc.error_cause.value,
                error=exc.cause,
                query=range_expression(query),
            )
            continue
        kept = history.seed(series)
        log.info("history seeded", colors=len(series), points=kept, query=range_expression(query))


def oldest_retirement(deployments: Objects) -> datetime | None:
    """The earliest retired-at stamp of a color that still has replicas (malformed ones are
    the planner's business, skipped here)."""
    stamps = []
    for items in deployments.values():
        for d in items:
            text = d.annotations.get(RETIRED_AT)
            if text is None or d.replicas == 0:
                continue
            with contextlib.suppress(ValueError):
                stamps.append(parse_time(text))
    return min(stamps, default=None)


async def plan_once(settings: Settings, *, sync_timeout: float = SYNC_TIMEOUT) -> Planned:
    """One read-only pass against a live cluster and Prometheus: what `rainbowd plan` prints
    without a snapshot file. Never writes: no Executor, no Events, no Lease. Raises ConfigError,
    PolicyError, KubeError, or TimeoutError when the caches do not sync within `sync_timeout`."""
    api = await make_api_client(kubeconfig=settings.kubeconfig, context=settings.context)
    try:
        policy = (await read_policy(api, settings.policy)).narrowed(settings.namespaces)
        cache = ClusterCache(
            api,
            namespaces=settings.namespaces or None,
            label_selector=settings.selector or None,
        )
        runner = asyncio.create_task(cache.run(), name="cluster cache")
        try:
            synced = asyncio.create_task(cache.wait_synced(sync_timeout))
            await asyncio.wait([runner, synced], return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                synced.cancel()
                runner.result()  # an informer crashed: raise its error
            if not synced.result():
                raise TimeoutError(f"Deployments and Services not listed within {sync_timeout:g}s")
            # Argo Rollouts are never waited for by the daemon (their colors appear once
            # listed); one pass has no later cycle to show them in, so it waits for them too.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sync_timeout):
                    for informer in cache.rollout_informers:
                        await informer.synced.wait()
            deployments = cache.deployments()
            services = cache.services()
            pods = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sync_timeout):
                    pods = await listed_pods(cache, policy)
            objects = cache.objects()
            unlisted = cache.objects_unlisted() if objects is None else UNLISTED
        finally:
            await cache.stop()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        now = datetime.now(UTC)
        async with aiohttp.ClientSession() as session:
            pipeline = Pipeline(session, dry_run=settings.dry_run)
            planned = await pipeline.run(
                policy,
                deployments,
                services,
                now=now,
                pods=pods,
                objects=objects,
                unlisted=unlisted,
            )
            # As in the daemon's cycle: the forecast's failure costs the forecast, not the plan.
            guard = SideGuard(lambda component: None)
            history = pipeline.history
            guard.run(Component.HISTORY, lambda: history.record_snapshot(planned.snapshot), now=now)
            # The forecast's samples: this instant plus one range query over the past.
            await seed_history(
                pipeline.history,
                session,
                policy,
                queries_needed(policy, deployments),
                now=now,
                interval=settings.interval,
                since=oldest_retirement(deployments),
            )
        forecasts = guard.run(
            Component.FORECAST, lambda: forecast_plan(planned.plan, policy, history), now=now
        )
        return dataclasses.replace(planned, forecasts=forecasts or {})
    finally:
        await api.close()


def consolidates(policy: Policy) -> bool:
    """Whether some rule consolidates: only then are the colors' pods needed for planning."""
    return any(rule.knobs.consolidate is not None for rule in policy.rules)


async def listed_pods(cache: ClusterCache, policy: Policy) -> list[PodMark] | None:
    """The colors' pods for a one-shot plan, when some rule consolidates (else None): watched,
    then waited for until listed, with what scales the colors."""
    if not consolidates(policy):
        return None
    cache.watch_pods(policy.app_label, policy.color_label)
    for informer in cache.pod_informers:
        await informer.synced.wait()
    for listing in cache.object_informers:
        await listing.synced.wait()
    return cache.pods()


def apply_overlay(
    deployments: list[Deployment], overlay: Mapping[str, Mapping[str, str | None]]
) -> list[Deployment]:
    """Deployments with the dry-run overlay's would-be annotations applied (keyed by uid)."""
    if not overlay:
        return deployments
    out = []
    for d in deployments:
        changes = overlay.get(d.uid)
        if changes:
            annotations = dict(d.annotations)
            for key, value in changes.items():
                if value is None:
                    annotations.pop(key, None)
                else:
                    annotations[key] = value
            d = dataclasses.replace(d, annotations=annotations)
        out.append(d)
    return out


def _same_items(before: Sequence[object], after: Sequence[object]) -> bool:
    return len(before) == len(after) and all(map(operator.is_, before, after))


def queries_needed(policy: Policy, deployments: Objects) -> list[ConnectionsQuery]:
    """The distinct queries of the rules that match at least one Deployment: no managed colors,
    no Prometheus traffic (and no Prometheus errors for a cluster with nothing to do)."""
    return color_members(policy, deployments).queries


def query_failures(
    results: Mapping[ConnectionsQuery, QueryResult],
) -> tuple[PrometheusFailure, ...]:
    """The failed queries: the PromQL sent, the failure's class and its message."""
    return tuple(
        PrometheusFailure(
            query=q.selector if q.query is None else q.query,
            cause=r.error_cause,
            message=r.error,
        )
        for q, r in results.items()
        if r.error is not None and r.error_cause is not None
    )


def snapshot_summary(snapshot: Snapshot) -> SnapshotSummary:
    """How much a snapshot holds, for /status."""
    known = unknown = 0
    for ns in snapshot.namespaces.values():
        for c in ns.connections.values():
            if c.known:
                known += 1
            else:
                unknown += 1
    return SnapshotSummary(
        now=snapshot.now,
        namespaces=len(snapshot.namespaces),
        deployments=sum(len(ns.deployments) for ns in snapshot.namespaces.values()),
        services=sum(len(ns.services) for ns in snapshot.namespaces.values()),
        connections_known=known,
        connections_unknown=unknown,
    )
