"""Profiles the daemon's cycle at 10,000 Deployments laid out as the scale benchmark lays them out
(tests/bench/bench_scale.py: apps of 4 colors, the newest live behind its Service, 3 pods per
color in a real Prometheus), with pyinstrument. A cycle is the reconciler's: the pipeline (query,
snapshot, plan, history, forecast) and then the metrics, the status summary and the log line;
nothing to act on once stamped. Three modes:

- steady: every Deployment stamped, connections fixed (nothing changed since the last cycle);
- moving: the same, with every color's connections changed at every scrape;
- dry run: from unstamped Deployments, so the would-be stamps are laid over every cycle.

Prints each mode's median CPU per cycle, unprofiled, then the profile of the slowest:

    .venv/bin/python -m tests.bench.profile_cycle [cycles] [deployments] [steady|moving|dry run]
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import aiohttp
from pyinstrument import Profiler

from rainbowd.core.model import LIVE_AT, RETIRED_AT, Condition, Deployment, Service
from rainbowd.core.objects import format_time
from rainbowd.core.policy import Policy, parse_policy
from rainbowd.daemon.cycles import Pipeline
from rainbowd.daemon.heap import HeapKeeper
from rainbowd.daemon.policies import PolicyState
from rainbowd.daemon.reconciling import Reconciler
from rainbowd.logs import setup_logging
from rainbowd.metrics import Metrics
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.bench import bench_scale
from tests.cycleparts import MemoryCache, NoExecutor
from tests.exposition import Exposition

SCRAPE = 1.0
COLORS = bench_scale.COLORS_PER_APP
PODS = bench_scale.PODS_PER_COLOR
NAMESPACES = bench_scale.NAMESPACES
AVAILABLE = (Condition("Available", "True"),)


class Layout:
    """The Deployments and Services of the scale benchmark, as the watch cache holds them."""

    def __init__(self, size: int, *, stamped: bool) -> None:
        self.scale = bench_scale.Layout()
        self.deployments: dict[str, list[Deployment]] = {ns: [] for ns in NAMESPACES}
        self.services: dict[str, list[Service]] = {ns: [] for ns in NAMESPACES}
        # Deployed an hour ago, a second apart, the older colors retired a minute ago: well
        # inside every age threshold of the policy, as in the scale benchmark.
        start = datetime.now(UTC) - timedelta(hours=1)
        for i in range(size // COLORS):
            ns = NAMESPACES[i % len(NAMESPACES)]
            app = f"app-{i:05d}"
            colors = [bench_scale.color_of(i, g) for g in range(COLORS)]
            self.scale.apps.append((ns, app, colors))
            self.services[ns].append(Service(ns, app, {"app": app, "color": colors[-1]}))
            for g, color in enumerate(colors):
                created = start + timedelta(seconds=g)
                annotations = {}
                if stamped:
                    annotations[LIVE_AT] = format_time(created)
                    if g < COLORS - 1:
                        annotations[RETIRED_AT] = format_time(start + timedelta(minutes=59))
                self.deployments[ns].append(
                    Deployment(
                        namespace=ns,
                        name=f"{app}-{color}",
                        uid=f"{ns}-{app}-{color}",
                        resource_version="1",
                        created_at=created,
                        labels={"app": app},
                        template_labels={"app": app, "color": color},
                        annotations=annotations,
                        replicas=PODS,
                        ready_replicas=PODS,
                        available_replicas=PODS,
                        conditions=AVAILABLE if g == COLORS - 1 else (),
                    )
                )

    def series(self, shift: int) -> str:
        return self.scale.series(lambda i: 1 + (i + shift) % 7)


def make_policy(url: str) -> Policy:
    """The scale benchmark's policy, without its reaction rule."""
    return parse_policy(
        {
            "apiVersion": "rainbowd.io/v1alpha1",
            "kind": "DrainPolicy",
            "prometheus": {"url": url, "timeout": "20s"},
            "connections": {"metric": "rainbow_open_connections"},
            "rules": [{"name": "bulk", "maxColors": COLORS + 2}],
        }
    )


async def cycles(
    url: str, layout: Layout, n: int, *, dry_run: bool, move: Exposition | None
) -> tuple[list[float], Profiler]:
    metrics = Metrics()
    state = PolicyState(source="bench", metrics=metrics)
    state.accept(make_policy(url))
    profiler = Profiler(async_mode="enabled")
    times: list[float] = []
    async with aiohttp.ClientSession() as session:
        reconciler = Reconciler(
            policy=state,
            cache=MemoryCache(layout.deployments, layout.services),  # type: ignore[arg-type]
            pipeline=Pipeline(session, dry_run=dry_run, heap=HeapKeeper()),
            executor=NoExecutor(done=False),  # type: ignore[arg-type]
            metrics=metrics,
            leading=lambda: True,
            stopping=asyncio.Event(),
            interval=30.0,
            debounce=1.0,
        )
        for _ in range(2):  # the cold cycle, then the one taking in its stamps
            await reconciler.cycle()
        for i in range(2 * n):
            if move is not None:
                move.set(layout.series(1 + i % 2))
                await asyncio.sleep(SCRAPE * 1.5)  # a scrape with the new values
            profiling = i >= n
            if profiling:
                profiler.start()
            began = time.process_time()
            await reconciler.cycle()
            spent = time.process_time() - began
            if profiling:
                profiler.stop()
            else:
                times.append(spent)
    return times, profiler


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    # The daemon's logging, written where it costs what writing a log costs, unread.
    setup_logging("info", "json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    only = sys.argv[3] if len(sys.argv) > 3 else None
    stamped = Layout(size, stamped=True)
    fixed = stamped.series(0)
    with Exposition(fixed) as target:
        prom = PrometheusServer(scrape_interval=SCRAPE)
        prom.set_targets([(target.target, {})])
        with prom:
            series = fixed.count("\n") - 1
            prom.wait_for(
                "count(rainbow_open_connections)",
                lambda s: bool(s) and s[0].value == series,
                timeout=120.0,
            )
            worst: tuple[float, str, Profiler] | None = None
            for label, layout, dry_run, moving in (
                ("steady", stamped, False, False),
                ("moving", stamped, False, True),
                ("dry run", Layout(size, stamped=False), True, False),
            ):
                if only is not None and label != only:
                    continue
                times, profiler = asyncio.run(
                    cycles(prom.url, layout, n, dry_run=dry_run, move=target if moving else None)
                )
                target.set(fixed)
                median = statistics.median(times) * 1000
                print(
                    f"profile_cycle: {label}: median {median:.1f} ms CPU per cycle"
                    f" (min {min(times) * 1000:.1f}) over {n}, {size:,} Deployments"
                )
                if worst is None or median > worst[0]:
                    worst = (median, label, profiler)
            if worst is not None:
                print(f"profile of the slowest, {worst[1]}:")
                print(worst[2].output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
