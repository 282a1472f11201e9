"""Profiles the daemon's cycle pipeline (query, snapshot, plan) at 10,000 Deployments with
pyinstrument, in three modes: normal, dry run, and with every color's connections moving at each
scrape. Prints CPU ms per cycle for each and the profile of the slowest:

    .venv/bin/python -m tests.bench.profile_cycle [cycles]
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from datetime import UTC, datetime

import aiohttp
from pyinstrument import Profiler

from rainbowd.core.model import Deployment, Service, Snapshot
from rainbowd.core.policy import PrometheusSettings
from rainbowd.daemon.cycles import Pipeline
from rainbowd.sandbox.prometheus import PrometheusServer
from tests.bench.bench_cycle import exposition
from tests.bench.bench_planner import build_policy, build_snapshot
from tests.exposition import Exposition

SCRAPE = 1.0


async def cycles(
    url: str,
    snapshot: Snapshot,
    n: int,
    *,
    dry_run: bool,
    moving: Exposition | None,
    texts: list[str],
) -> tuple[list[float], Profiler]:
    policy = dataclasses.replace(build_policy(), prometheus=PrometheusSettings(url=url))
    deployments: dict[str, list[Deployment]] = {
        name: list(ns.deployments) for name, ns in snapshot.namespaces.items()
    }
    services: dict[str, list[Service]] = {
        name: list(ns.services) for name, ns in snapshot.namespaces.items()
    }
    profiler = Profiler(async_mode="enabled")
    times: list[float] = []
    async with aiohttp.ClientSession() as session:
        pipeline = Pipeline(session, dry_run=dry_run)
        await pipeline.run(policy, deployments, services, now=datetime.now(UTC))
        for i in range(n):
            if moving is not None:
                moving.set(texts[i % 2])
                await asyncio.sleep(SCRAPE * 1.5)  # a scrape with the new values
            profiler.start()
            began = time.process_time()
            await pipeline.run(policy, deployments, services, now=datetime.now(UTC))
            times.append(time.process_time() - began)
            profiler.stop()
    return times, profiler


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    snapshot = build_snapshot()
    fixed = exposition(snapshot).decode()
    # Every series moved by one connection: every color's figure changes.
    moved = fixed.replace("} ", "} 1")
    texts = [fixed, moved]
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
            worst: tuple[float, Profiler] | None = None
            for label, dry_run, moving in (
                ("normal", False, None),
                ("dry-run", True, None),
                ("moving", False, target),
            ):
                times, profiler = asyncio.run(
                    cycles(prom.url, snapshot, n, dry_run=dry_run, moving=moving, texts=texts)
                )
                target.set(fixed)
                median = sorted(times)[len(times) // 2] * 1000
                print(f"profile_cycle: {label}: median {median:.1f} ms CPU per cycle over {n}")
                if worst is None or median > worst[0]:
                    worst = (median, profiler)
            if worst is not None:
                print(worst[1].output_text(unicode=False, color=False, show_all=False))


if __name__ == "__main__":
    main()
