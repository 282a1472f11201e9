"""Benchmark: the daemon's steady-state cycle at 10,000 Deployments, as the daemon runs it: the
pipeline of rainbowd/daemon/cycles.py (query Prometheus, build the snapshot, plan with the reuse
cache on). Target (docs/design.md): at most 50 ms.

The Deployments and Services are bench_planner's 2,000 apps x 5 colors, held in memory as the
watch cache holds them; the connections come from a real Prometheus scraping one loopback
exporter with a series per pod of every color that has replicas. Prints numbers, asserts nothing
on time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp

from rainbowd.core.model import Deployment, Service, Snapshot
from rainbowd.core.policy import PrometheusSettings
from rainbowd.daemon.cycles import Pipeline
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.bench.bench_planner import _stats, build_policy, build_snapshot

CYCLES = 20
TARGET_MS = 50.0


def exposition(snapshot: Snapshot) -> bytes:
    """rainbow_open_connections per pod: each color's figure split over its ready pods."""
    lines = ["# TYPE rainbow_open_connections gauge"]
    for ns in snapshot.namespaces.values():
        for d in ns.deployments:
            app, color = d.template_labels["app"], d.template_labels["color"]
            conns = ns.connections.get((app, color))
            if conns is None or conns.value is None or d.replicas == 0:
                continue
            for pod in range(d.replicas):
                lines.append(
                    f'rainbow_open_connections{{namespace="{ns.name}",app="{app}",'
                    f'color="{color}",pod="{d.name}-{pod}"}} {conns.value / d.replicas:g}'
                )
    return ("\n".join(lines) + "\n").encode()


class Exporter:
    """A loopback /metrics serving a fixed exposition, in a thread."""

    def __init__(self, body: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Exporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def measure(
    prometheus_url: str, snapshot: Snapshot
) -> tuple[float, list[float], list[float], int]:
    policy = dataclasses.replace(build_policy(), prometheus=PrometheusSettings(url=prometheus_url))
    deployments: dict[str, list[Deployment]] = {
        name: list(ns.deployments) for name, ns in snapshot.namespaces.items()
    }
    services: dict[str, list[Service]] = {
        name: list(ns.services) for name, ns in snapshot.namespaces.items()
    }
    async with aiohttp.ClientSession() as session:
        pipeline = Pipeline(session)
        started = time.perf_counter()
        first = await pipeline.run(policy, deployments, services, now=datetime.now(UTC))
        cold = time.perf_counter() - started
        if first.prometheus_errors:
            raise RuntimeError(f"Prometheus failed: {first.prometheus_errors}")
        times, cpu = [], []
        for _ in range(CYCLES):
            started, started_cpu = time.perf_counter(), time.process_time()
            await pipeline.run(policy, deployments, services, now=datetime.now(UTC))
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        known = sum(
            1
            for ns in first.snapshot.namespaces.values()
            for c in ns.connections.values()
            if c.known
        )
    return cold, times, cpu, known


def main() -> None:
    # The apps' stamps are relative to now: the Prometheus query is evaluated at the real time.
    snapshot = build_snapshot(datetime.now(UTC))
    deployments = sum(len(ns.deployments) for ns in snapshot.namespaces.values())
    body = exposition(snapshot)
    series = body.count(b"\n") - 1
    prom = PrometheusServer(scrape_interval=5.0)
    with Exporter(body) as exporter:
        # The job exists before the start: no configuration reload needed.
        prom.set_targets([(exporter.address, {})])
        with prom:
            prom.wait_for(
                "count(rainbow_open_connections)",
                lambda s: bool(s) and s[0].value == series,
                timeout=120.0,
            )
            cold, times, cpu, known = asyncio.run(measure(prom.url, snapshot))
    print(
        f"cycle: {deployments:,} Deployments, {series:,} series in Prometheus, "
        f"{known:,} colors with known connections"
    )
    print(f"cycle: first (cold planner) {cold * 1000:.1f} ms")
    print(
        f"cycle: steady state, query + snapshot + plan (reuse cache on): {_stats(times)}; "
        f"target <= {TARGET_MS:g} ms"
    )
    print(f"cycle: steady state, rainbowd's CPU alone (Prometheus' work excluded): {_stats(cpu)}")


if __name__ == "__main__":
    main()
