"""The supervisor of `rainbowd run`: wires the parts (policy source, caches, pipeline, executor,
leader elector, HTTP server, reconcile loop), runs them as tasks, and stops them in order on
SIGTERM so nothing acts after the lease is released.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.forecast import Forecaster
from rainbowd.core.history import ConnectionHistory
from rainbowd.daemon.cycles import (
    SYNC_TIMEOUT,
    Pipeline,
    oldest_retirement,
    queries_needed,
    seed_history,
)
from rainbowd.daemon.heap import HeapKeeper
from rainbowd.daemon.policies import PolicyState, PolicyWatcher
from rainbowd.daemon.reconciling import CycleReport, Documents, Reconciler, WarningReporter
from rainbowd.daemon.sizes import StructureCollector
from rainbowd.daemon.tasks import first_done
from rainbowd.http import HttpServer
from rainbowd.kube.caching import ClusterCache
from rainbowd.kube.clients import ConfigError, RateLimiter, make_api_client
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import ActionOutcome, Executor
from rainbowd.kube.leasing import LeaderElector
from rainbowd.logs import get_logger, setup_logging
from rainbowd.metrics import Metrics
from rainbowd.settings import Settings
from rainbowd.status import CacheStatus, Status, status_to_document

log = get_logger(__name__)


@dataclass(frozen=True)
class Parts:
    """Everything a running daemon is made of, built together once the API client exists."""

    api: ApiClient
    session: aiohttp.ClientSession
    cache: ClusterCache
    reconciler: Reconciler
    http: HttpServer
    elector: LeaderElector | None
    """None without leader election: this process always acts."""


@dataclass(frozen=True)
class SideParts:
    """The side features of the cycle the daemon is built with (docs/design.md "Decide, act,
    then tell"); each is an object of its own, so another can stand in for it."""

    history: ConnectionHistory = field(default_factory=ConnectionHistory)
    forecaster: Forecaster = field(default_factory=Forecaster)
    documents: Documents = field(default_factory=Documents)
    metrics: Metrics = field(default_factory=Metrics)
    reporter: WarningReporter | None = None
    """What writes the warnings' Events; None: the executor."""


class Daemon:
    """One `rainbowd run` process. `run()` returns the exit code; `request_stop()` ends it."""

    def __init__(
        self, settings: Settings, *, tend_heap: bool = False, sides: SideParts | None = None
    ) -> None:
        self.settings = settings
        self.tend_heap = tend_heap  # the process is the daemon's own (see daemon/heap.py)
        self.sides = sides = SideParts() if sides is None else sides
        self.metrics = sides.metrics
        self.metrics.registry.register(StructureCollector(lambda: self))
        self.policy = PolicyState(
            source=settings.policy.describe(), metrics=self.metrics, namespaces=settings.namespaces
        )
        self.stopping = asyncio.Event()
        self.lease_lost = False
        self.parts: Parts | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._failed = False  # a component task died

    # --- what tests, /status, /readyz and /healthz read ---

    @property
    def cache(self) -> ClusterCache | None:
        return None if self.parts is None else self.parts.cache

    @property
    def last_cycle(self) -> CycleReport | None:
        return None if self.parts is None else self.parts.reconciler.last_cycle

    @property
    def cycles(self) -> int:
        return 0 if self.parts is None else self.parts.reconciler.cycles

    @property
    def is_leader(self) -> bool:
        elector = None if self.parts is None else self.parts.elector
        if not self.settings.leader_elect:
            return True
        return elector is not None and elector.is_leader

    @property
    def ready(self) -> bool:
        return self.parts is not None and self.parts.reconciler.ready

    def healthy(self) -> bool:
        if self.parts is None:
            return not self.lease_lost
        age = asyncio.get_running_loop().time() - self.parts.reconciler.alive_at
        return age <= self.settings.health_max_age and not self.lease_lost

    @property
    def http_url(self) -> str | None:
        """The HTTP server's base URL once it listens (the real port when given port 0)."""
        return None if self.parts is None or not self.parts.http.listening else self.parts.http.url

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping", identity=self.settings.identity)
        self.stopping.set()

    def status(self) -> dict[str, Any]:
        """The daemon's own parts, read now, with the sections of the last cycle its side
        features wrote (`Reconciler.documents_now`), and the side features failing."""
        reconciler = None if self.parts is None else self.parts.reconciler
        pipeline = None if reconciler is None else reconciler.pipeline
        # Written first: a failure writing them shows in this very answer.
        sections = {} if reconciler is None else reconciler.documents_now()
        cache = CacheStatus(synced=False)
        if self.parts is not None:
            stats = self.parts.cache.stats()
            cache = CacheStatus(
                synced=self.parts.cache.synced,
                deployments=sum(len(v) for v in self.parts.cache.deployments().values()),
                services=sum(len(v) for v in self.parts.cache.services().values()),
                relists=stats.relists,
                watch_events=stats.events,
            )
        doc = status_to_document(
            Status(
                identity=self.settings.identity,
                leader=self.is_leader,
                ready=self.ready,
                settings=self.settings.summary(),
                dry_run_overlay=0 if pipeline is None else len(pipeline.overlay),
                policy=self.policy.status(),
                cache=cache,
                side_failures={}
                if reconciler is None
                else {c.value: f for c, f in reconciler.side.failing.items()},
            )
        )
        doc.update(sections)
        return doc

    # --- lifecycle ---

    async def run(self) -> int:
        """Start everything, loop until stopped, shut down; the process exit code.

        The whole stop, from `request_stop()` to return, fits in `shutdown_timeout`: a cycle
        that is applying an action gets half of it to finish that action (the executor skips
        the rest); a cycle that is only reading or querying is cancelled at once.
        """
        loop = asyncio.get_running_loop()
        log.info("starting", **self.settings.summary())
        main = asyncio.create_task(self._start_and_loop(), name="rainbowd main")
        await first_done(asyncio.shield(main), self.stopping.wait())
        deadline = loop.time() + self.settings.shutdown_timeout
        if not main.done() and self.parts is not None and self.parts.reconciler.acting:
            await first_done(asyncio.shield(main), timeout=self.settings.shutdown_timeout / 2)
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
        if s.policy.file is not None and not self.policy.load_file(s.policy.file):
            return 1
        try:
            api = await make_api_client(kubeconfig=s.kubeconfig, context=s.context)
        except ConfigError as exc:
            log.error("no cluster configuration", error=str(exc))
            return 1
        self.parts = parts = self._wire(api)
        self.metrics.leader.set(1 if self.is_leader else 0)
        try:
            await parts.http.start()
        except OSError as exc:
            log.error("cannot listen", listen=s.listen, error=str(exc))
            return 1
        if s.once:
            return await self._run_once(parts)
        await parts.reconciler.run()
        return 0

    def _wire(self, api: ApiClient) -> Parts:
        """Build every part and start its task; the HTTP server is started by the caller."""
        s = self.settings
        recorder = EventRecorder(api, instance=s.identity)
        if s.policy.configmap_name is not None:
            assert s.policy.configmap_namespace is not None
            watcher = PolicyWatcher(
                api,
                s.policy.configmap_namespace,
                s.policy.configmap_name,
                state=self.policy,
                recorder=recorder,
                leading=lambda: self.is_leader,
            )
            self._spawn(watcher.run(), "policy watcher")
        cache = ClusterCache(
            api, namespaces=s.namespaces or None, label_selector=s.selector or None
        )
        self.metrics.watch_informers(lambda: _informer_counters(cache))
        self._spawn(cache.run(), "cluster cache")
        session = aiohttp.ClientSession()
        reconciler = Reconciler(
            policy=self.policy,
            cache=cache,
            pipeline=Pipeline(
                session,
                dry_run=s.dry_run,
                heap=HeapKeeper() if self.tend_heap else None,
                history=self.sides.history,
                forecaster=self.sides.forecaster,
            ),
            executor=Executor(api, recorder, limiter=RateLimiter(s.kube_qps, s.kube_burst)),
            metrics=self.metrics,
            leading=lambda: self.is_leader,
            stopping=self.stopping,
            interval=s.interval,
            debounce=s.debounce,
            reporter=self.sides.reporter,
            documents=self.sides.documents,
        )
        elector = None
        if s.leader_elect:
            elector = LeaderElector(
                api,
                s.lease_namespace,
                s.lease_name,
                s.identity,
                lease_duration=s.lease_duration,
                renew_deadline=s.renew_deadline,
                retry_period=s.retry_period,
                on_lost=self._on_lease_lost,
            )
            self._spawn(elector.run(), "leader elector")
            self._spawn(self._announce_leadership(elector, reconciler), "leadership")
        self._spawn(self._seed_history(reconciler, session), "history seed")
        http = HttpServer(self, host=s.listen_host, port=s.listen_port)
        return Parts(
            api=api,
            session=session,
            cache=cache,
            reconciler=reconciler,
            http=http,
            elector=elector,
        )

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

    async def _seed_history(self, reconciler: Reconciler, session: aiohttp.ClientSession) -> None:
        """After the first cycle, not before or beside it: on a busy Prometheus the range query
        would compete with the first cycle's query, and a slow one must not delay acting."""
        await reconciler.first_cycle_done.wait()
        policy = self.policy.policy
        if policy is None:
            return
        deployments = reconciler.cache.deployments()
        try:
            await seed_history(
                reconciler.pipeline.history,
                session,
                policy,
                queries_needed(policy, deployments),
                now=datetime.now(UTC),
                interval=self.settings.interval,
                since=oldest_retirement(deployments),
            )
        except Exception:  # informative only: never take the daemon down for it
            log.exception("history seed failed")

    async def _announce_leadership(self, elector: LeaderElector, reconciler: Reconciler) -> None:
        await elector.leading.wait()
        self.metrics.leader.set(1)
        reconciler.wake()  # act at once rather than at the next tick

    def _on_lease_lost(self) -> None:
        self.metrics.leader.set(0)
        if self.stopping.is_set():
            return
        # Another replica may be acting already: stop at once (the executor skips whatever
        # remains of the cycle) and exit non-zero so Kubernetes restarts us as a standby.
        self.lease_lost = True
        log.error("lease lost, exiting", identity=self.settings.identity)
        self.request_stop()

    async def _run_once(self, parts: Parts) -> int:
        reconciler = parts.reconciler
        if not await reconciler.wait_ready(SYNC_TIMEOUT):
            log.error(
                "not ready",
                cache_synced=parts.cache.synced,
                policy_loaded=self.policy.policy is not None,
                timeout=SYNC_TIMEOUT,
            )
            return 1
        if parts.elector is not None and not parts.elector.is_leader:
            # Give the campaign one lease duration: a healthy Lease is either free or expires.
            await first_done(
                parts.elector.leading.wait(),
                self.stopping.wait(),
                timeout=self.settings.lease_duration * 2,
            )
        report = await reconciler.cycle()
        failed = not report.ok or any(r.outcome is ActionOutcome.ERROR for r in report.results)
        return 1 if failed else 0

    async def _shutdown(self, budget: float) -> bool:
        """Cancel and await every task, release the lease, close the clients; in this order so
        nothing acts after the lease is gone. False when the deadline cut it short."""
        self.stopping.set()
        parts = self.parts
        try:
            async with asyncio.timeout(budget):
                if parts is not None:
                    await parts.cache.stop()
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._tasks = []
                if parts is None:
                    return not self._failed
                if (
                    parts.elector is not None
                    and not self.lease_lost
                    and await parts.elector.release()
                ):
                    log.info(
                        "lease released",
                        lease=f"{self.settings.lease_namespace}/{self.settings.lease_name}",
                    )
                self.metrics.leader.set(0)
                await parts.http.stop()
                await parts.session.close()
                await parts.api.close()
        except TimeoutError:
            log.error("shutdown timed out", timeout=self.settings.shutdown_timeout)
            return False
        return not self._failed


def _informer_counters(cache: ClusterCache) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for informer in [*cache.informers, *cache.rollout_informers]:
        values = out.setdefault(informer.resource.plural, {})
        stats = informer.stats
        for name in ("lists", "relists", "watches", "events", "errors", "bad_objects"):
            values[name] = values.get(name, 0) + int(getattr(stats, name))
    return out


def main(settings: Settings) -> int:
    """Run the daemon until SIGTERM/SIGINT (or one cycle with --once); the exit code."""
    setup_logging(settings.log_level, settings.log_format)

    async def run() -> int:
        daemon = Daemon(settings, tend_heap=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop)
        return await daemon.run()

    return asyncio.run(run())
