"""The supervisor of `rainbowd run`: starts the caches, the policy source, the Prometheus client,
the leader elector and the HTTP server, runs the level-based reconcile loop, and shuts it all
down in order on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.forecast import ColorForecast, ColorKey, Forecaster, forecast_plan
from rainbowd.core.history import ConnectionHistory
from rainbowd.core.model import (
    RETIRED_AT,
    ActionKind,
    Connections,
    Deployment,
    Namespace,
    Plan,
    Service,
    Snapshot,
)
from rainbowd.core.objects import parse_time
from rainbowd.core.planner import Planner
from rainbowd.core.planner import plan as make_plan
from rainbowd.core.policy import (
    ConnectionsQuery,
    Policy,
    PolicyError,
    PrometheusSettings,
    policy_to_document,
    policy_warnings,
)
from rainbowd.core.reporting import plan_to_document
from rainbowd.http import HttpServer
from rainbowd.kube.caching import CONFIGMAPS, ClusterCache, Informer, configmap_from_k8s
from rainbowd.kube.clients import (
    ConfigError,
    NotFound,
    make_api_client,
    request_json,
    resource_path,
)
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import ActionResult, Executor, Outcome
from rainbowd.kube.leasing import LeaderElector
from rainbowd.logs import get_logger, setup_logging
from rainbowd.metrics import Metrics, PrometheusErrorCause
from rainbowd.policyfile import load_policy_file, load_policy_text
from rainbowd.prom.querying import (
    PrometheusClient,
    PrometheusError,
    QueryResult,
    fetch_connections,
)
from rainbowd.prom.ranges import fetch_range, range_expression
from rainbowd.settings import PolicySource, Settings
from rainbowd.timeline import Timeline

log = get_logger(__name__)

CONFIGMAP_KEY = "policy.yaml"
# How long `--once` waits for the caches and the policy before it gives up: a first LIST of
# 10,000 Deployments takes a few seconds, an unreachable apiserver never answers.
ONCE_SYNC_TIMEOUT = 60.0


def classify_prometheus_error(error: str) -> PrometheusErrorCause:
    """The cause class of a QueryResult.error, from the fixed prefixes the client writes."""
    if error.startswith("prometheus timed out"):
        return PrometheusErrorCause.TIMEOUT
    if error.startswith("prometheus unreachable"):
        return PrometheusErrorCause.UNREACHABLE
    if error.startswith("prometheus HTTP"):
        return PrometheusErrorCause.HTTP
    if error.startswith(("prometheus error", "partial data")):
        return PrometheusErrorCause.QUERY
    if error.startswith(("prometheus answered", "prometheus returned", "prometheus vector")):
        return PrometheusErrorCause.BAD_RESPONSE
    return PrometheusErrorCause.OTHER


# --- the policy ---------------------------------------------------------------------------------


@dataclass
class PolicyState:
    """The policy in force and what the latest read of the source said about it."""

    source: str
    policy: Policy | None = None
    valid: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loaded_at: datetime | None = None
    generation: int = 0  # bumped on each applied policy

    def document(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "valid": self.valid,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "loaded_at": None if self.loaded_at is None else self.loaded_at.isoformat(),
            "policy": None if self.policy is None else policy_to_document(self.policy),
        }


class PolicyWatcher:
    """Keeps `state.policy` current from a ConfigMap's `policy.yaml`.

    An invalid edit keeps the last good policy: every error is logged with its path,
    rainbowd_policy_valid drops to 0 and a Warning Event lands on the ConfigMap. A valid edit
    replaces the policy and sets `changed`, so the loop runs a cycle with it straight away.
    """

    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        name: str,
        *,
        state: PolicyState,
        metrics: Metrics,
        recorder: EventRecorder,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.namespace = namespace
        # Every replica reloads the policy, but only the leader writes the Warning Event, so
        # one bad edit gives one Event, not one per replica.
        self.leading = leading
        self.name = name
        self.state = state
        self.metrics = metrics
        self.recorder = recorder
        self.changed = asyncio.Event()
        self._dirty = asyncio.Event()
        self._last_text: str | None = None
        self._missing_reported = False
        self.informer: Informer[dict[str, Any]] = Informer(
            api,
            CONFIGMAPS,
            configmap_from_k8s,
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            on_change=lambda _event, _key: self._dirty.set(),
        )

    @property
    def synced(self) -> bool:
        return self.informer.synced.is_set()

    async def run(self) -> None:
        informer = asyncio.create_task(self.informer.run(), name="policy informer")
        try:
            await self.informer.synced.wait()
            self._dirty.set()  # the first list may have found nothing: report that too
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                await self.reload()
        finally:
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    async def reload(self) -> None:
        where = f"configmap {self.namespace}/{self.name}"
        configmap = self.informer.get(self.namespace, self.name)
        if configmap is None:
            self._last_text = None
            if not self._missing_reported:
                self._missing_reported = True
                self._invalid([f"{where}: not found"])
            return
        self._missing_reported = False
        text = configmap.get("data", {}).get(CONFIGMAP_KEY)
        if text == self._last_text:
            return  # another key or the metadata changed, not the policy
        self._last_text = text
        if not isinstance(text, str):
            await self._report_invalid(
                [f'{where}: no data["{CONFIGMAP_KEY}"]: nothing to read'], configmap
            )
            return
        try:
            policy = load_policy_text(text, source=where)
        except PolicyError as exc:
            await self._report_invalid(exc.errors, configmap)
            return
        self.state.policy = policy
        self.state.valid = True
        self.state.errors = []
        self.state.warnings = policy_warnings(policy)
        self.state.loaded_at = datetime.now(UTC)
        self.state.generation += 1
        self.metrics.policy_valid.set(1)
        self.metrics.policy_reloads.labels(result="applied").inc()
        version = configmap.get("metadata", {}).get("resourceVersion", "")
        log.info("policy applied", source=where, resource_version=version, rules=len(policy.rules))
        for warning in self.state.warnings:
            log.warning("policy warning", source=where, warning=warning)
        self.changed.set()

    def _invalid(self, errors: list[str]) -> None:
        self.state.valid = False
        self.state.errors = errors
        self.metrics.policy_valid.set(0)
        self.metrics.policy_reloads.labels(result="invalid").inc()
        kept = "none" if self.state.policy is None else "last good"
        for error in errors:
            log.error("policy invalid", source=self.state.source, error=error, kept=kept)

    async def _report_invalid(self, errors: list[str], configmap: Mapping[str, Any]) -> None:
        self._invalid(errors)
        if not self.leading():
            return
        meta = configmap.get("metadata", {})
        kept = (
            "the last good policy stays in force"
            if self.state.policy is not None
            else "no policy is in force"
        )
        await self.recorder.emit(
            kind="ConfigMap",
            api_version="v1",
            namespace=self.namespace,
            name=self.name,
            uid=str(meta.get("uid") or ""),
            type="Warning",
            reason="InvalidPolicy",
            note=f"{'; '.join(errors)} ({kept})",
            action="LoadPolicy",
        )


def load_file_policy(path: str, state: PolicyState, metrics: Metrics) -> bool:
    """Read the policy file once at start; False (errors logged) when it is invalid."""
    try:
        policy = load_policy_file(path)
    except PolicyError as exc:
        state.errors = exc.errors
        metrics.policy_valid.set(0)
        for error in exc.errors:
            log.error("policy invalid", source=state.source, error=error)
        return False
    state.policy = policy
    state.valid = True
    state.warnings = policy_warnings(policy)
    state.loaded_at = datetime.now(UTC)
    state.generation += 1
    metrics.policy_valid.set(1)
    log.info("policy applied", source=state.source, rules=len(policy.rules))
    for warning in state.warnings:
        log.warning("policy warning", source=state.source, warning=warning)
    return True


# --- one cycle ----------------------------------------------------------------------------------


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
    snapshot: Mapping[str, Any]
    plan: Plan | None
    results: tuple[ActionResult, ...]
    prometheus_errors: Mapping[str, str]


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


def build_snapshot(
    *,
    now: datetime,
    policy: Policy,
    deployments: Mapping[str, list[Deployment]],
    services: Mapping[str, list[Service]],
    results: Mapping[ConnectionsQuery, QueryResult],
) -> Snapshot:
    """A Snapshot from the cache's objects and the connections each color's rule asked for."""
    namespaces: dict[str, Namespace] = {}
    for ns in sorted(set(deployments) | set(services)):
        conns: dict[tuple[str, str], Connections] = {}
        for d in deployments.get(ns, ()):
            rule = policy.rule_for(ns, d.labels)
            app = d.template_labels.get(policy.app_label)
            color = d.template_labels.get(policy.color_label)
            if rule is None or not app or not color:
                continue
            result = results.get(rule.connections)
            if result is not None:
                conns[(app, color)] = result.get(ns, app, color)
        namespaces[ns] = Namespace(
            name=ns,
            deployments=tuple(deployments.get(ns, ())),
            services=tuple(services.get(ns, ())),
            connections=conns,
        )
    return Snapshot(now=now, namespaces=namespaces)


def queries_needed(
    policy: Policy, deployments: Mapping[str, list[Deployment]]
) -> list[ConnectionsQuery]:
    """The distinct queries of the rules that match at least one Deployment: no managed colors,
    no Prometheus traffic (and no Prometheus errors for a cluster with nothing to do)."""
    needed: dict[ConnectionsQuery, None] = {}
    for ns, items in deployments.items():
        for d in items:
            rule = policy.rule_for(ns, d.labels)
            if rule is not None:
                needed.setdefault(rule.connections, None)
    return list(needed)


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
        start = min(since, now) - timedelta(seconds=interval)
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
            log.warning("history seed failed", cause=exc.cause, query=range_expression(query))
            continue
        kept = history.seed(series)
        log.info("history seeded", colors=len(series), points=kept, query=range_expression(query))


def oldest_retirement(deployments: Mapping[str, list[Deployment]]) -> datetime | None:
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


def query_errors(results: Mapping[ConnectionsQuery, QueryResult]) -> dict[str, str]:
    """The failed queries' causes, keyed by the PromQL sent."""
    return {
        q.selector if q.query is None else q.query: r.error
        for q, r in results.items()
        if r.error is not None
    }


def snapshot_summary(snapshot: Snapshot) -> dict[str, Any]:
    deployments = sum(len(ns.deployments) for ns in snapshot.namespaces.values())
    services = sum(len(ns.services) for ns in snapshot.namespaces.values())
    known = unknown = 0
    for ns in snapshot.namespaces.values():
        for c in ns.connections.values():
            if c.known:
                known += 1
            else:
                unknown += 1
    return {
        "now": snapshot.now.isoformat(),
        "namespaces": len(snapshot.namespaces),
        "deployments": deployments,
        "services": services,
        "connections_known": known,
        "connections_unknown": unknown,
    }


# --- the daemon ---------------------------------------------------------------------------------


class Daemon:
    """One `rainbowd run` process. `run()` returns the exit code; `request_stop()` ends it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.policy = PolicyState(source=settings.policy.describe())
        self.cache: ClusterCache | None = None
        self.policy_watcher: PolicyWatcher | None = None
        self.elector: LeaderElector | None = None
        self.last_cycle: CycleReport | None = None
        self.timeline = Timeline()
        self.cycles = 0
        self.stopping = asyncio.Event()
        self.lease_lost = False
        # Loop-clock time of the last finished cycle (or of the start), for /healthz.
        self.alive_at = 0.0
        # Dry run: would-be annotations by Deployment uid, replayed onto the next snapshots so
        # retired ages and drain holds advance as they would if the stamps had been written.
        self.overlay: dict[str, dict[str, str | None]] = {}
        # Reuses each unchanged app's plan from the last cycle (same objects, same connections,
        # no threshold crossed): steady-state cycles cost little even with 10,000 Deployments.
        self.planner = Planner()
        # Each color's recent connections, for the drain forecast and /status sparklines.
        self.history = ConnectionHistory()
        self.forecaster = Forecaster()
        self.forecasts: dict[ColorKey, ColorForecast] = {}
        self._wake = asyncio.Event()
        self._api: ApiClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._prometheus: PrometheusClient | None = None
        self._executor: Executor | None = None
        self._recorder: EventRecorder | None = None
        self._http: HttpServer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._failed = False  # a component task died
        self.acting = False  # the executor is applying a plan

    # --- what /status, /readyz and /healthz read ---

    @property
    def is_leader(self) -> bool:
        if not self.settings.leader_elect:
            return True
        return self.elector is not None and self.elector.is_leader

    @property
    def ready(self) -> bool:
        return bool(self.cache is not None and self.cache.synced and self.policy.policy)

    def healthy(self) -> bool:
        age = asyncio.get_running_loop().time() - self.alive_at
        return age <= self.settings.health_max_age and not self.lease_lost

    @property
    def http_url(self) -> str | None:
        """The HTTP server's base URL once it listens (the real port when given port 0)."""
        return None if self._http is None else self._http.url

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping", identity=self.settings.identity)
        self.stopping.set()

    def status(self) -> dict[str, Any]:
        report = self.last_cycle
        cycle: dict[str, Any] | None = None
        if report is not None:
            outcomes = Tally(r.outcome.value for r in report.results)
            cycle = {
                "number": report.number,
                "started_at": report.started_at.isoformat(),
                "duration_seconds": round(report.duration, 6),
                "ok": report.ok,
                "error": report.error,
                "leader": report.leader,
                "acted": report.acted,
                "actions": dict(outcomes),
                "prometheus_errors": dict(report.prometheus_errors),
            }
        cache: dict[str, Any] = {"synced": False}
        if self.cache is not None:
            stats = self.cache.stats()
            cache = {
                "synced": self.cache.synced,
                "deployments": sum(len(v) for v in self.cache.deployments().values()),
                "services": sum(len(v) for v in self.cache.services().values()),
                "relists": stats.relists,
                "watch_events": stats.events,
            }
        return {
            "identity": self.settings.identity,
            "settings": self.settings.summary(),
            "leader": self.is_leader,
            "ready": self.ready,
            "dry_run_overlay": len(self.overlay),
            "policy": self.policy.document(),
            "cache": cache,
            "cycle": cycle,
            "snapshot": None if report is None else dict(report.snapshot),
            "history": {
                "window_seconds": self.history.limits.window,
                "colors": len(self.history),
                "points": self.history.size,
            },
            "plan": None
            if report is None or report.plan is None
            else plan_to_document(
                report.plan,
                forecasts=self.forecasts,
                history=self.history.sparklines(),
            ),
            "recentActions": self.timeline.document(),
        }

    # --- lifecycle ---

    async def run(self) -> int:
        """Start everything, loop until stopped, shut down; the process exit code.

        The whole stop, from `request_stop()` to return, fits in `shutdown_timeout`: a cycle
        that is applying an action gets half of it to finish that action (the executor skips
        the rest); a cycle that is only reading or querying is cancelled at once.
        """
        loop = asyncio.get_running_loop()
        self.alive_at = loop.time()
        log.info("starting", **self.settings.summary())
        main = asyncio.create_task(self._start_and_loop(), name="rainbowd main")
        stop = asyncio.create_task(self.stopping.wait(), name="rainbowd stop")
        await asyncio.wait([main, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        deadline = loop.time() + self.settings.shutdown_timeout
        if not main.done():
            if self.acting:
                await asyncio.wait([main], timeout=self.settings.shutdown_timeout / 2)
            if not main.done():
                main.cancel()
        code = 1
        try:
            code = await main
        except asyncio.CancelledError:
            code = 0  # stopped on request in the middle of a cycle
        except Exception:
            log.exception("daemon failed")
            code = 1
        shutdown_ok = await self._shutdown(max(0.0, deadline - loop.time()))
        if not shutdown_ok and code == 0:
            code = 1
        if self.lease_lost:
            code = 1
        log.info("stopped", exit_code=code, cycles=self.cycles)
        return code

    async def _start_and_loop(self) -> int:
        s = self.settings
        try:
            self._api = await make_api_client(kubeconfig=s.kubeconfig, context=s.context)
        except ConfigError as exc:
            log.error("no cluster configuration", error=str(exc))
            return 1
        self._recorder = EventRecorder(self._api, instance=s.identity)
        self._session = aiohttp.ClientSession()
        self.metrics.leader.set(1 if self.is_leader else 0)

        if s.policy.file is not None:
            if not load_file_policy(s.policy.file, self.policy, self.metrics):
                return 1
        else:
            assert s.policy.configmap_namespace and s.policy.configmap_name
            self.policy_watcher = PolicyWatcher(
                self._api,
                s.policy.configmap_namespace,
                s.policy.configmap_name,
                state=self.policy,
                metrics=self.metrics,
                recorder=self._recorder,
                leading=lambda: self.is_leader,
            )
            self._spawn(self.policy_watcher.run(), "policy watcher")

        self.cache = ClusterCache(
            self._api, namespaces=s.namespaces or None, label_selector=s.selector or None
        )
        cache = self.cache
        self.metrics.watch_informers(lambda: _informer_counters(cache))
        self._spawn(self.cache.run(), "cluster cache")

        if s.leader_elect:
            self.elector = LeaderElector(
                self._api,
                s.lease_namespace,
                s.lease_name,
                s.identity,
                lease_duration=s.lease_duration,
                renew_deadline=s.renew_deadline,
                retry_period=s.retry_period,
                on_lost=self._on_lease_lost,
            )
            self._spawn(self._lead(self.elector), "leader elector")

        http = HttpServer(self, host=s.listen_host, port=s.listen_port)
        try:
            await http.start()
        except OSError as exc:
            log.error("cannot listen", listen=s.listen, error=str(exc))
            await http.stop()
            return 1
        self._http = http

        if s.once:
            return await self._run_once()
        await self._loop()
        return 0

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                # A component died: the daemon cannot do its job without it. Exit non-zero
                # and let Kubernetes restart the pod from a clean state.
                log.exception("task failed", task=name)
                self._failed = True
                self.request_stop()

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def _lead(self, elector: LeaderElector) -> None:
        runner = asyncio.create_task(elector.run(), name="lease")
        leading = asyncio.create_task(elector.leading.wait(), name="lease leading")
        try:
            await asyncio.wait([runner, leading], return_when=asyncio.FIRST_COMPLETED)
            if elector.is_leader:
                self.metrics.leader.set(1)
                self._wake.set()  # act at once rather than at the next tick
            await runner
        finally:
            leading.cancel()
            runner.cancel()
            await asyncio.gather(runner, leading, return_exceptions=True)
            self.metrics.leader.set(0)

    def _on_lease_lost(self) -> None:
        if self.stopping.is_set():
            return
        # Another replica may be acting already: stop at once (the executor skips whatever
        # remains of the cycle) and exit non-zero so Kubernetes restarts us as a standby.
        self.lease_lost = True
        self.metrics.leader.set(0)
        log.error("lease lost, exiting", identity=self.settings.identity)
        self.request_stop()

    async def _wait_ready(self, timeout: float) -> bool:  # noqa: ASYNC109
        assert self.cache is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not await self._until(self.cache.wait_synced(), deadline):
            return False
        self.metrics.cache_synced.set(1)
        while self.policy.policy is None:
            if (
                self.policy_watcher is not None
                and self.policy_watcher.synced
                and (self.policy.errors)
            ):
                return False  # the ConfigMap was read and holds no valid policy
            if not await self._until(asyncio.sleep(0.05), deadline):
                return False
        return True

    async def _until(self, aw: Awaitable[Any], deadline: float) -> bool:
        """Await `aw` unless the deadline passes or a stop is requested first."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(aw)
        stop = asyncio.create_task(self.stopping.wait())
        try:
            done, _ = await asyncio.wait(
                [task, stop],
                timeout=max(0.0, deadline - loop.time()),
                return_when="FIRST_COMPLETED",
            )
            return (
                task in done
                and not task.cancelled()
                and task.exception() is None
                and (task.result() is not False)
            )
        finally:
            for t in (task, stop):
                t.cancel()
            await asyncio.gather(task, stop, return_exceptions=True)

    async def _run_once(self) -> int:
        loop = asyncio.get_running_loop()
        if not await self._wait_ready(ONCE_SYNC_TIMEOUT):
            log.error(
                "not ready",
                cache_synced=bool(self.cache and self.cache.synced),
                policy_loaded=self.policy.policy is not None,
                timeout=ONCE_SYNC_TIMEOUT,
            )
            return 1
        if self.elector is not None and not self.elector.is_leader:
            # Give the campaign one lease duration: a healthy Lease is either free or expires.
            await self._until(
                self.elector.leading.wait(), loop.time() + self.settings.lease_duration * 2
            )
        report = await self._cycle()
        failed = not report.ok or any(r.outcome is Outcome.ERROR for r in report.results)
        return 1 if failed else 0

    async def _loop(self) -> None:
        """Level-based: the timer drives cycles; watch and policy events only wake it early."""
        assert self.cache is not None
        loop = asyncio.get_running_loop()
        s = self.settings
        # The first cycle waits for the caches: a plan from a half-listed cache would see
        # colors without their Services and call live colors retired.
        while not self.stopping.is_set():
            attempt_until = loop.time() + s.interval
            if await self._wait_ready(s.interval):
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
            if self.policy_watcher is not None:
                changed = self.policy_watcher.changed.wait()
                await self._until(changed, attempt_until)
            else:
                await self._until(asyncio.sleep(s.interval), attempt_until)
        self._spawn(self._seed_history(), "history seed")
        next_at = loop.time()
        while not self.stopping.is_set():
            await self._sleep_until(next_at)
            if self.stopping.is_set():
                break
            next_at = loop.time() + s.interval
            await self._cycle()

    async def _seed_history(self) -> None:
        """Beside the first cycles, not before them: a slow Prometheus must not delay acting."""
        assert self.cache is not None and self._session is not None
        policy = self.policy.policy
        if policy is None:
            return
        deployments = self.cache.deployments()
        queries = queries_needed(policy, deployments)
        try:
            await seed_history(
                self.history,
                self._session,
                policy,
                queries,
                now=datetime.now(UTC),
                interval=self.settings.interval,
                since=oldest_retirement(deployments),
            )
        except Exception:  # informative only: never take the daemon down for it
            log.exception("history seed failed")

    async def _sleep_until(self, next_at: float) -> None:
        """Until the timer, a stop, or a change (debounced) wakes the loop."""
        assert self.cache is not None
        loop = asyncio.get_running_loop()
        sources = [self.stopping, self._wake, self.cache.changed]
        if self.policy_watcher is not None:
            sources.append(self.policy_watcher.changed)
        waiters = [asyncio.create_task(e.wait()) for e in sources]
        try:
            await asyncio.wait(
                waiters, timeout=max(0.0, next_at - loop.time()), return_when="FIRST_COMPLETED"
            )
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if self.stopping.is_set() or loop.time() >= next_at:
            return
        # Woken by a change: let the burst of events of a rollout settle, then look once.
        debounce_until = min(next_at, loop.time() + self.settings.debounce)
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait([stop], timeout=max(0.0, debounce_until - loop.time()))
        finally:
            stop.cancel()
            await asyncio.gather(stop, return_exceptions=True)

    async def _cycle(self) -> CycleReport:
        """One pass: read the cache, query Prometheus, plan, act (if leading), report."""
        assert self.cache is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        now = datetime.now(UTC)
        # Clear before reading: a change landing while the cycle runs wakes the next one.
        self._wake.clear()
        self.cache.changed.clear()
        if self.policy_watcher is not None:
            self.policy_watcher.changed.clear()
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
                leader=self.is_leader,
                acted=False,
                snapshot={},
                plan=None if self.last_cycle is None else self.last_cycle.plan,
                results=(),
                prometheus_errors={},
            )
        self.last_cycle = report
        self.alive_at = loop.time()
        self.metrics.reconcile_duration.observe(report.duration)
        self.metrics.cycles.labels(result="ok" if report.ok else "error").inc()
        if report.ok:
            self.metrics.last_success.set(time.time())
        return report

    async def _reconcile(self, now: datetime, started: float) -> CycleReport:
        assert self.cache is not None and self._api is not None and self._session is not None
        assert self._recorder is not None
        loop = asyncio.get_running_loop()
        policy = self.policy.policy
        if policy is None:
            raise RuntimeError("no valid policy loaded")
        self.metrics.cache_synced.set(1 if self.cache.synced else 0)
        deployments = self.cache.deployments()
        services = self.cache.services()
        if self.overlay:
            uids = {d.uid for items in deployments.values() for d in items}
            for uid in list(self.overlay):
                if uid not in uids:
                    del self.overlay[uid]
            deployments = {
                ns: apply_overlay(items, self.overlay) for ns, items in deployments.items()
            }

        queries = queries_needed(policy, deployments)
        results: dict[ConnectionsQuery, QueryResult] = {}
        if queries:
            prometheus = self._prometheus_for(policy.prometheus)
            results = await fetch_connections(prometheus, queries, at=now)
        prom_errors = query_errors(results)
        self.metrics.record_prometheus_errors(
            [classify_prometheus_error(e) for e in prom_errors.values()]
        )

        snapshot = build_snapshot(
            now=now, policy=policy, deployments=deployments, services=services, results=results
        )
        plan = self.planner.plan(snapshot, policy, now)
        self.history.record_snapshot(snapshot)
        self.forecasts = self.forecaster.update(plan, policy, self.history)
        dry_run = self.settings.dry_run or plan.dry_run
        leader = self.is_leader
        applied: list[ActionResult] = []
        acted = False
        if plan.actions and leader and not self.stopping.is_set():
            executor = self._executor_for(policy)
            self.acting = True
            try:
                applied = await executor.apply(plan, stop=self.stopping)
            finally:
                self.acting = False
            acted = not dry_run and not plan.paused
            self.metrics.record_actions(applied)
            self.timeline.record(now, applied)
            if dry_run:
                self._remember_would_be(plan)
        elif plan.actions and dry_run and not leader:
            self._remember_would_be(plan)
        if leader and not dry_run and not self.stopping.is_set():
            # Every pod of a retired color carries the mark, pods created since included.
            self.cache.watch_pods(policy.app_label, policy.color_label)
            await self._executor_for(policy).mark_pods(plan, self.cache.pods())
        self.metrics.observe_plan(plan, self.forecasts)

        duration = loop.time() - started
        states: Tally[str] = Tally()
        for app in plan.apps:
            for color in app.colors:
                states[color.state.value] += 1
        outcomes = Tally(r.outcome.value for r in applied)
        log.info(
            "cycle finished",
            cycle=self.cycles,
            apps=len(plan.apps),
            colors=sum(states.values()),
            states=_counts(states),
            planned=len(plan.actions),
            actions=_counts(outcomes),
            blocked=sum(1 for a in plan.apps if a.blocked is not None),
            prometheus_errors=len(prom_errors),
            leader=leader,
            dry_run=dry_run,
            paused=plan.paused,
            duration_ms=round(duration * 1000, 1),
        )
        for warning in plan.warnings:
            log.warning("plan warning", warning=warning)
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
            acted=acted,
            snapshot=snapshot_summary(snapshot),
            plan=plan,
            results=tuple(applied),
            prometheus_errors=prom_errors,
        )

    def _remember_would_be(self, plan: Plan) -> None:
        for action in plan.actions:
            if action.kind is ActionKind.ANNOTATE and action.uid:
                self.overlay.setdefault(action.uid, {}).update(action.annotations)

    def _prometheus_for(self, settings: PrometheusSettings) -> PrometheusClient:
        assert self._session is not None
        if self._prometheus is None or self._prometheus.settings != settings:
            self._prometheus = PrometheusClient(self._session, settings)
        return self._prometheus

    def _executor_for(self, policy: Policy) -> Executor:
        assert self._api is not None and self._recorder is not None
        if self._executor is None:
            self._executor = Executor(
                self._api,
                self._recorder,
                app_label=policy.app_label,
                color_label=policy.color_label,
                dry_run=self.settings.dry_run,
            )
        self._executor.app_label = policy.app_label
        self._executor.color_label = policy.color_label
        return self._executor

    async def _shutdown(self, budget: float) -> bool:
        """Cancel and await every task, release the lease, close the clients; in this order so
        nothing acts after the lease is gone. False when the deadline cut it short."""
        self.stopping.set()
        try:
            async with asyncio.timeout(budget):
                if self.cache is not None:
                    await self.cache.stop()
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._tasks = []
                if (
                    self.elector is not None
                    and not self.lease_lost
                    and await self.elector.release()
                ):
                    log.info(
                        "lease released",
                        lease=f"{self.settings.lease_namespace}/{self.settings.lease_name}",
                    )
                self.metrics.leader.set(0)
                if self._http is not None:
                    await self._http.stop()
                if self._session is not None:
                    await self._session.close()
                if self._api is not None:
                    await self._api.close()
        except TimeoutError:
            log.error("shutdown timed out", timeout=self.settings.shutdown_timeout)
            return False
        return not self._failed


async def read_policy(api: ApiClient, source: PolicySource) -> Policy:
    """The policy from its source, read once; PolicyError (path-prefixed) when invalid."""
    if source.file is not None:
        return load_policy_file(source.file)
    assert source.configmap_namespace and source.configmap_name
    where = f"configmap {source.configmap_namespace}/{source.configmap_name}"
    path = resource_path(
        "v1", "configmaps", namespace=source.configmap_namespace, name=source.configmap_name
    )
    try:
        configmap = await request_json(api, "GET", path)
    except NotFound:
        raise PolicyError([f"{where}: not found"]) from None
    text = (configmap.get("data") or {}).get(CONFIGMAP_KEY)
    if not isinstance(text, str):
        raise PolicyError([f'{where}: no data["{CONFIGMAP_KEY}"]: nothing to read'])
    return load_policy_text(text, source=where)


@dataclass(frozen=True)
class LivePlan:
    """One read-only cycle against a live cluster: what `rainbowd plan` prints without a file."""

    snapshot: Snapshot
    plan: Plan
    prometheus_errors: Mapping[str, str]
    forecasts: Mapping[ColorKey, ColorForecast] = field(default_factory=dict)


async def plan_live(settings: Settings, *, sync_timeout: float = ONCE_SYNC_TIMEOUT) -> LivePlan:
    """List Deployments and Services, query Prometheus once per distinct query, plan. Never
    writes: no Executor, no Events, no Lease. Raises ConfigError, PolicyError, KubeError, or
    TimeoutError when the caches do not sync within `sync_timeout` seconds."""
    api = await make_api_client(kubeconfig=settings.kubeconfig, context=settings.context)
    try:
        policy = await read_policy(api, settings.policy)
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
            deployments = cache.deployments()
            services = cache.services()
        finally:
            await cache.stop()
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        now = datetime.now(UTC)
        results: dict[ConnectionsQuery, QueryResult] = {}
        queries = queries_needed(policy, deployments)
        # The forecast's samples: this instant plus one range query over the past.
        history = ConnectionHistory()
        async with aiohttp.ClientSession() as session:
            if queries:
                client = PrometheusClient(session, policy.prometheus)
                results = await fetch_connections(client, queries, at=now)
            snapshot = build_snapshot(
                now=now, policy=policy, deployments=deployments, services=services, results=results
            )
            history.record_snapshot(snapshot)
            await seed_history(
                history,
                session,
                policy,
                queries,
                now=now,
                interval=settings.interval,
                since=oldest_retirement(deployments),
            )
        plan = make_plan(snapshot, policy, now)
        if settings.dry_run:
            plan = dataclasses.replace(plan, dry_run=True)
        errors = query_errors(results)
        return LivePlan(
            snapshot=snapshot,
            plan=plan,
            prometheus_errors=errors,
            forecasts=forecast_plan(plan, policy, history),
        )
    finally:
        await api.close()


def _counts(tally: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tally.items())) or "none"


def _informer_counters(cache: ClusterCache) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for informer in cache.informers:
        values = out.setdefault(informer.resource.plural, {})
        stats = informer.stats
        for name in ("lists", "relists", "watches", "events", "errors", "bad_objects"):
            values[name] = values.get(name, 0) + int(getattr(stats, name))
    return out


def main(settings: Settings) -> int:
    """Run the daemon until SIGTERM/SIGINT (or one cycle with --once); the exit code."""
    setup_logging(settings.log_level, settings.log_format)

    async def run() -> int:
        daemon = Daemon(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
        return await daemon.run()

    return asyncio.run(run())
