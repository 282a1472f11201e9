"""Benchmark: the daemon-level targets of docs/design.md, with rainbowd running in this process
against its own control plane (kwok fake Nodes) and a real Prometheus scraping demo_app processes.

Measures steady-state LIST/GET calls and Prometheus queries per cycle, Service switch latency and
drain-to-action latency; prints each next to its target and asserts nothing on time.
RAINBOWD_BENCH_APPS (default 200 apps x 3 colors) and RAINBOWD_BENCH_CYCLES (default 15) size it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import random
import statistics
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, fields
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from kubernetes_asyncio.client import ApiClient
from prometheus_client.parser import text_string_to_metric_families

from rainbowd.core.model import LIVE_AT, RETIRED_AT
from rainbowd.daemon import Daemon
from rainbowd.kube.caching import InformerStats
from rainbowd.kube.clients import (
    MERGE_PATCH,
    make_api_client,
    request_json,
    resource_path,
)
from rainbowd.settings import PolicySource, Settings
from rainbowd_sandbox.controlplane import FAKE_NODE_ANNOTATION, ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.demoapps import DemoApp

BULK_NAMESPACES = ("bench-a", "bench-b")
SWITCH_NAMESPACE = "bench-switch"
DRAIN_NAMESPACE = "bench-drain"
APP = "chat"
CONCURRENCY = 16
# Each extra fake Node takes 110 pods (a kubelet's default) and is given this many live colors'
# pods, with room left for the switch and drain colors.
PODS_PER_NODE = 100

STEADY_INTERVAL = 1.0
SWITCH_INTERVAL = 30.0  # long, so the Service's watch event is what wakes the loop
SWITCHES = 5
# Longer than the 1 s scrape, so "within one cycle" is told apart from scrape jitter.
DRAIN_INTERVAL = 5.0
DRAINS = 5
POLL = 0.05
WITHIN = 180.0  # deadline of every wait: two shared cores, a control plane and Prometheus


class Row(NamedTuple):
    measure: str
    value: str
    target: str
    met: bool | None  # None: not a pass/fail number


# --- waiting ------------------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[Any]], *, what: str, within: float = WITHIN) -> Any:
    """Poll `check` every POLL seconds until it returns something truthy; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"waited {within:g}s for {what}")
        await asyncio.sleep(POLL)


async def next_second() -> None:
    """creationTimestamp has whole seconds and the planner orders colors by it: a color meant
    to be newer than another must be created in a later second."""
    await asyncio.sleep(1.0 - time.time() % 1.0 + 0.05)


# --- Kubernetes objects -------------------------------------------------------------------------


def deployment_body(app: str, color: str, *, paused: bool = False) -> dict[str, Any]:
    labels = {"app": app, "color": color}
    spec: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "app", "image": "registry.invalid/chat:1"}]},
        },
    }
    if paused:
        spec["paused"] = True
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{app}-{color}", "labels": {"app": app}},
        "spec": spec,
    }


def service_body(app: str, color: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app},
        "spec": {
            "selector": {"app": app, "color": color},
            "ports": [{"port": 80, "targetPort": 8080}],
        },
    }


async def create(api: ApiClient, namespace: str, body: dict[str, Any]) -> None:
    plural = "deployments" if body["kind"] == "Deployment" else "services"
    path = resource_path(body["apiVersion"], plural, namespace=namespace)
    await request_json(api, "POST", path, body=body)


async def switch_service(api: ApiClient, namespace: str, app: str, color: str) -> None:
    """What a rainbow deploy does once the new color is ready."""
    path = resource_path("v1", "services", namespace=namespace, name=app)
    body = {"spec": {"selector": {"app": app, "color": color}}}
    await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)


async def get_deployment(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    path = resource_path("apps/v1", "deployments", namespace=namespace, name=name)
    return await request_json(api, "GET", path)


def is_available(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    conditions = {c["type"]: c.get("status") for c in status.get("conditions") or []}
    return conditions.get("Available") == "True" and (status.get("availableReplicas") or 0) > 0


async def create_available_color(api: ApiClient, namespace: str, color: str) -> None:
    await next_second()
    await create(api, namespace, deployment_body(APP, color))

    async def available() -> bool:
        return is_available(await get_deployment(api, namespace, f"{APP}-{color}"))

    await until(available, what=f"{APP}-{color} to become Available")


async def has_annotation(api: ApiClient, namespace: str, name: str, key: str) -> bool:
    obj = await get_deployment(api, namespace, name)
    return key in (obj["metadata"].get("annotations") or {})


def add_fake_nodes(cluster: ControlPlane, count: int) -> None:
    """More kwok Nodes like the control plane's own, so every live color gets a ready pod."""
    key, value = FAKE_NODE_ANNOTATION
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    names = [f"kwok-node-bench-{i}" for i in range(count)]
    for name in names:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {key: value, "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": name, "type": "kwok"},
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        cluster.request("POST", "/api/v1/nodes", node)
    deadline = time.monotonic() + WITHIN
    for name in names:
        while True:
            conditions = cluster.request("GET", f"/api/v1/nodes/{name}").get("status", {})
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in conditions.get("conditions", [])
            )
            if ready:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {name} not Ready within {WITHIN:g}s")
            time.sleep(0.2)


def bulk_color(app_index: int, generation: int) -> str:
    return f"{app_index:04x}{generation:02x}"


async def populate(api: ApiClient, apps: int) -> float:
    """`apps` apps of 3 colors each, spread over BULK_NAMESPACES: two retired colors created a
    second before the live one, which a Service selects. Retired colors are paused, so the
    Deployment controller makes no pods for them (rainbowd reads spec.replicas: 1, draining);
    live colors get one kwok pod each and become Available."""
    began = time.monotonic()
    for ns in BULK_NAMESPACES:
        await request_json(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})

    async def in_parallel(bodies: list[tuple[str, dict[str, Any]]]) -> None:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        for item in bodies:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                namespace, body = queue.get_nowait()
                await create(api, namespace, body)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    def namespace(i: int) -> str:
        return BULK_NAMESPACES[i % len(BULK_NAMESPACES)]

    await in_parallel(
        [
            (namespace(i), deployment_body(f"app-{i:04d}", bulk_color(i, g), paused=True))
            for i in range(apps)
            for g in (0, 1)
        ]
    )
    await next_second()
    live = [(namespace(i), deployment_body(f"app-{i:04d}", bulk_color(i, 2))) for i in range(apps)]
    services = [(namespace(i), service_body(f"app-{i:04d}", bulk_color(i, 2))) for i in range(apps)]
    await in_parallel(live + services)

    async def all_live_available() -> bool:
        count = 0
        for ns in BULK_NAMESPACES:
            listing = await request_json(
                api, "GET", resource_path("apps/v1", "deployments", namespace=ns)
            )
            count += sum(1 for d in listing.get("items") or [] if is_available(d))
        return count >= apps

    await until(all_live_available, what=f"{apps} live colors to become Available", within=600)
    return time.monotonic() - began


# --- counting requests --------------------------------------------------------------------------


def apiserver_requests(cluster: ControlPlane) -> Counter[tuple[str, str]]:
    """apiserver_request_total summed by (verb, resource), from the apiserver's own /metrics."""
    lines = [
        line
        for line in cluster.apiserver_metrics().splitlines()
        if line.startswith(("apiserver_request_total{", "# TYPE apiserver_request_total "))
    ]
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                key = (sample.labels.get("verb", ""), sample.labels.get("resource", ""))
                counts[key] += int(sample.value)
    return counts


def prometheus_queries(prom: PrometheusServer) -> int:
    """Instant queries Prometheus has answered, from its own /metrics."""
    with urllib.request.urlopen(prom.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "prometheus_http_requests_total"
                and sample.labels.get("handler") == "/api/v1/query"
            ):
                total += sample.value
    return int(total)


@dataclass(frozen=True)
class Counts:
    api: Counter[tuple[str, str]]
    queries: int
    at: float


async def read_counts(cluster: ControlPlane, prom: PrometheusServer) -> Counts:
    # Off the event loop: the daemon shares it, and a blocking read would delay its cycles.
    api, queries = await asyncio.gather(
        asyncio.to_thread(apiserver_requests, cluster), asyncio.to_thread(prometheus_queries, prom)
    )
    return Counts(api=api, queries=queries, at=time.monotonic())


def delta(before: Counts, after: Counts, verbs: tuple[str, ...], resources: tuple[str, ...]) -> int:
    return sum(
        after.api[key] - before.api.get(key, 0)
        for key in after.api
        if key[0] in verbs and (not resources or key[1] in resources)
    )


# --- the daemon ---------------------------------------------------------------------------------


def policy_file(workdir: Path, name: str, prom_url: str, rules: list[dict[str, Any]]) -> Path:
    doc = {
        "apiVersion": "rainbowd.io/v1alpha1",
        "kind": "DrainPolicy",
        "prometheus": {"url": prom_url, "timeout": "2s"},
        "connections": {"metric": "rainbow_open_connections"},
        "rules": rules,
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def daemon_settings(
    cluster: ControlPlane, policy: Path, *, interval: float, debounce: float = 1.0
) -> Settings:
    return Settings(
        policy=PolicySource(file=str(policy)),
        kubeconfig=str(cluster.kubeconfig),
        interval=interval,
        debounce=debounce,
        listen_host="127.0.0.1",
        listen_port=0,
        leader_elect=False,
        identity="rainbowd-bench",
    )


@contextlib.asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Daemon]:
    """rainbowd as a task of this event loop, from its first finished cycle until stopped."""
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run(), name="rainbowd")

    async def first_cycle() -> bool:
        if task.done():
            raise RuntimeError(f"the daemon exited early with {task.result()}")
        return daemon.last_cycle is not None

    try:
        await until(first_cycle, what="the daemon's first cycle")
        yield daemon
    finally:
        daemon.request_stop()
        code = await asyncio.wait_for(task, settings.shutdown_timeout + 5)
        if code != 0:
            raise RuntimeError(f"the daemon exited with {code}")


def cycle_number(daemon: Daemon) -> int:
    return 0 if daemon.last_cycle is None else daemon.last_cycle.number


async def cycle_after(daemon: Daemon, number: int, *, within: float = WITHIN) -> int:
    """Until a cycle numbered above `number` has finished; its number."""

    async def finished() -> int:
        return cycle_number(daemon) if cycle_number(daemon) > number else 0

    result: int = await until(finished, what=f"cycle {number + 1} to finish", within=within)
    return result


async def settled(daemon: Daemon, quiet: int = 3) -> None:
    """Until `quiet` cycles in a row planned nothing: the first cycles stamp live-at and
    retired-at on every color, and the watch events of those writes wake a few more."""
    streak, seen = 0, cycle_number(daemon)
    while streak < quiet:
        seen = await cycle_after(daemon, seen)
        report = daemon.last_cycle
        idle = report is not None and report.plan is not None and not report.plan.actions
        streak = streak + 1 if idle else 0


def informer_totals(daemon: Daemon) -> dict[str, InformerStats]:
    """rainbowd's own count of its LIST pages, watches and events, by resource."""
    assert daemon.cache is not None
    totals: dict[str, InformerStats] = {}
    for resource, informers in (
        ("deployments", daemon.cache.deployment_informers),
        ("services", daemon.cache.service_informers),
    ):
        total = totals.setdefault(resource, InformerStats())
        for informer in informers:
            total.add(informer.stats)
    return totals


@dataclass(frozen=True)
class Window:
    before: Counts
    after: Counts
    cycles: int
    informers: dict[str, InformerStats]  # growth during the window


async def measure_window(
    daemon: Daemon, cluster: ControlPlane, prom: PrometheusServer, cycles: int
) -> Window:
    """Counts right after one cycle finished and right after `cycles` more did."""
    start = await cycle_after(daemon, cycle_number(daemon))
    informers_before = informer_totals(daemon)
    before = await read_counts(cluster, prom)
    end = await cycle_after(daemon, start + cycles - 1)
    after = await read_counts(cluster, prom)
    grown: dict[str, InformerStats] = {}
    for resource, total in informer_totals(daemon).items():
        old = informers_before[resource]
        grown[resource] = InformerStats(
            **{f.name: getattr(total, f.name) - getattr(old, f.name) for f in fields(total)}
        )
    return Window(before=before, after=after, cycles=end - start, informers=grown)


# --- the measurements ---------------------------------------------------------------------------

READS = ("LIST", "GET")
WATCHED = ("deployments", "services")


async def steady_state(
    api: ApiClient, cluster: ControlPlane, prom: PrometheusServer, workdir: Path, *, cycles: int
) -> list[Row]:
    rows: list[Row] = []
    # Baseline: the same stretch of time with no daemon, so the controller-manager's, the
    # scheduler's and kwok's own reads (they share the admin identity) can be subtracted.
    base_before = await read_counts(cluster, prom)
    await asyncio.sleep(cycles * STEADY_INTERVAL)
    base_after = await read_counts(cluster, prom)
    base_seconds = base_after.at - base_before.at

    one_rule = policy_file(workdir, "one-rule", prom.url, [{"name": "all"}])
    async with running_daemon(daemon_settings(cluster, one_rule, interval=STEADY_INTERVAL)) as d:
        await settled(d)
        window = await measure_window(d, cluster, prom, cycles)
    before, after, n = window.before, window.after, window.cycles
    seconds = after.at - before.at
    scale = seconds / base_seconds

    print(f"  steady state over {n} cycles of {STEADY_INTERVAL:g}s ({seconds:.1f}s),")
    print(f"  baseline without the daemon over {base_seconds:.1f}s (scaled to the same length):")
    print(f"    {'requests (apiserver_request_total)':44} {'daemon':>8} {'baseline':>9}")
    for verb in (*READS, "WATCH"):
        for resources, label in ((WATCHED, "deployments+services"), ((), "all resources")):
            with_daemon = delta(before, after, (verb,), resources)
            without = delta(base_before, base_after, (verb,), resources) * scale
            print(f"    {verb + ' ' + label:44} {with_daemon:8d} {without:9.1f}")
    for verb, resource in sorted(set(after.api) | set(base_after.api)):
        if verb not in READS:
            continue
        with_daemon = delta(before, after, (verb,), (resource,))
        without = delta(base_before, base_after, (verb,), (resource,)) * scale
        if with_daemon or without:
            name = f"{verb} {resource or '(non-resource URLs)'}"
            print(f"      of which {name:35} {with_daemon:8d} {without:9.1f}")
    for resource, grown in window.informers.items():
        print(
            f"  rainbowd's {resource} informers in the window: LIST pages +{grown.list_pages},"
            f" relists +{grown.relists}, watches started +{grown.watches},"
            f" events +{grown.events}, errors +{grown.errors}"
        )
    # apiserver_request_total has no client label and the control plane's components share the
    # admin identity, so rainbowd's own informer counters say whose a LIST beyond the baseline
    # is (rainbowd sets no user agent of its own to filter by).
    own_lists = sum(grown.list_pages for grown in window.informers.values())
    for verb in READS:
        with_daemon = delta(before, after, (verb,), WATCHED)
        without = delta(base_before, base_after, (verb,), WATCHED) * scale
        excess = max(0.0, with_daemon - without)
        value = f"{excess / n:.2f} ({with_daemon} in {n} cycles, baseline {without:.1f}"
        met = excess < 0.5
        if verb == "LIST":
            value += f"; rainbowd's: {own_lists}"
            if not met and own_lists == 0:
                print(
                    "  note: the LISTs beyond the baseline are not rainbowd's (its informers made"
                    " none); an idle control plane lists Services every ~3 min on its own"
                )
                met = True
        rows.append(Row(f"{verb} deployments+services per cycle", value + ")", "0", met))
    queries = (after.queries - before.queries) / n
    rows.append(Row("Prometheus queries per cycle, 1 query", f"{queries:.2f}", "1", queries == 1))

    rules: list[dict[str, Any]] = [
        {
            "name": "a",
            "namespaces": [BULK_NAMESPACES[0]],
            "connections": {"metric": "rainbow_open_connections", "matchers": 'job="a"'},
        },
        {"name": "b", "namespaces": [BULK_NAMESPACES[1]]},
    ]
    two_rules = policy_file(workdir, "two-rules", prom.url, rules)
    async with running_daemon(daemon_settings(cluster, two_rules, interval=STEADY_INTERVAL)) as d:
        await settled(d)
        window = await measure_window(d, cluster, prom, cycles)
    queries = (window.after.queries - window.before.queries) / window.cycles
    rows.append(Row("Prometheus queries per cycle, 2 queries", f"{queries:.2f}", "2", queries == 2))
    return rows


async def switch_latency(
    api: ApiClient, cluster: ControlPlane, prom: PrometheusServer, workdir: Path
) -> list[Row]:
    ns = SWITCH_NAMESPACE
    await request_json(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    colors = [f"5e{i:04x}" for i in range(SWITCHES + 1)]
    await create_available_color(api, ns, colors[0])
    await create(api, ns, service_body(APP, colors[0]))
    rules: list[dict[str, Any]] = [
        {"name": "switch", "namespaces": [ns], "maxColors": SWITCHES + 2},
        {"name": "all"},
    ]
    policy = policy_file(workdir, "switch", prom.url, rules)
    latencies: list[float] = []
    async with running_daemon(daemon_settings(cluster, policy, interval=SWITCH_INTERVAL)) as d:
        await until(
            functools.partial(has_annotation, api, ns, f"{APP}-{colors[0]}", LIVE_AT),
            what="the first color to be stamped live-at",
        )
        for old, new in pairwise(colors):
            await create_available_color(api, ns, new)
            # The new color's own watch events wake a debounced cycle: let it pass.
            await asyncio.sleep(d.settings.debounce + 1.5)
            cycles_before = d.cycles
            began = time.monotonic()
            await switch_service(api, ns, APP, new)
            await until(
                functools.partial(has_annotation, api, ns, f"{APP}-{old}", RETIRED_AT),
                what=f"{APP}-{old} to be stamped retired-at",
            )
            latencies.append(time.monotonic() - began)
            print(
                f"  switch {old} -> {new}: retired-at after {latencies[-1]:.2f}s"
                f" ({d.cycles - cycles_before} cycle(s) ran)"
            )
    median, worst = statistics.median(latencies), max(latencies)
    return [
        Row("Service switch to retired-at, median", f"{median:.2f} s", "<= 2 s", median <= 2),
        Row("Service switch to retired-at, max", f"{worst:.2f} s", "<= 2 s", worst <= 2),
    ]


async def connections_are(prom: PrometheusServer, color: str, value: float) -> bool:
    """Whether Prometheus now reports `value` connections for the drain color."""
    expr = f'rainbow_open_connections{{namespace="{DRAIN_NAMESPACE}",color="{color}"}}'
    samples = await asyncio.to_thread(prom.query, expr)
    return bool(samples) and samples[0].value == value


async def drain_latency(
    api: ApiClient, cluster: ControlPlane, prom: PrometheusServer, workdir: Path
) -> list[Row]:
    ns = DRAIN_NAMESPACE
    await request_json(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    colors = [f"d0{i:04x}" for i in range(DRAINS + 1)]
    await create_available_color(api, ns, colors[0])
    await create(api, ns, service_body(APP, colors[0]))
    rules: list[dict[str, Any]] = [
        {
            "name": "drain",
            "namespaces": [ns],
            "minRetiredAge": "0s",
            "drainHold": "0s",
            "action": "scale",
        },
        {"name": "all"},
    ]
    policy = policy_file(workdir, "drain", prom.url, rules)
    to_prom: list[float] = []
    to_action: list[float] = []
    lags: list[float] = []
    async with running_daemon(daemon_settings(cluster, policy, interval=DRAIN_INTERVAL)) as d:
        await until(
            functools.partial(has_annotation, api, ns, f"{APP}-{colors[0]}", LIVE_AT),
            what="the first color to be stamped live-at",
        )
        for old, new in pairwise(colors):
            # Started off the event loop: it waits for the app's first log line.
            demo = DemoApp(old, workdir=workdir, app=APP, namespace=ns)
            await asyncio.to_thread(demo.start)
            try:
                prom.set_targets([(demo.target, {})])
                reader, writer = await asyncio.open_connection("127.0.0.1", demo.tcp_port)
                reading = asyncio.create_task(_read_all(reader))
                try:
                    await until(
                        functools.partial(connections_are, prom, old, 1.0),
                        what=f"Prometheus to see 1 connection on {old}",
                    )
                    await create_available_color(api, ns, new)
                    await switch_service(api, ns, APP, new)
                    await until(
                        functools.partial(has_annotation, api, ns, f"{APP}-{old}", RETIRED_AT),
                        what=f"{APP}-{old} to be stamped retired-at",
                    )
                    # The stamp's own watch event wakes a cycle or two; the drain is measured
                    # from a quiet loop, where only the timer (or Prometheus) can lead to it.
                    await settled(d, quiet=2)
                    # ...at a random point of the timer's period, to sample its phase.
                    await asyncio.sleep(random.uniform(0, DRAIN_INTERVAL))
                    obj = await get_deployment(api, ns, f"{APP}-{old}")
                    if obj["spec"]["replicas"] != 1:
                        raise RuntimeError(f"{APP}-{old} was scaled while it held a connection")
                finally:
                    reading.cancel()
                    await asyncio.gather(reading, return_exceptions=True)
                    closed, cycles_at_close = time.monotonic(), d.cycles
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

                async def seen_drained(old: str = old) -> float:
                    await until(
                        functools.partial(connections_are, prom, old, 0.0),
                        what=f"Prometheus to see 0 connections on {old}",
                    )
                    return time.monotonic()

                async def scaled_down(old: str = old) -> float:
                    async def zero() -> bool:
                        obj = await get_deployment(api, ns, f"{APP}-{old}")
                        return bool(obj["spec"]["replicas"] == 0)

                    await until(zero, what=f"{APP}-{old} to be scaled to 0")
                    return time.monotonic()

                seen, acted = await asyncio.gather(seen_drained(), scaled_down())
                cycles_between = d.cycles - cycles_at_close
            finally:
                demo.close()
            to_prom.append(seen - closed)
            to_action.append(acted - closed)
            lags.append(acted - seen)
            print(
                f"  drain {old}: Prometheus saw 0 after {seen - closed:.2f}s, scaled to 0 after"
                f" {acted - closed:.2f}s: {lags[-1]:.2f}s = {lags[-1] / DRAIN_INTERVAL:.2f} cycles"
                f" later ({cycles_between} cycle(s) started after the close)"
            )
    worst = max(lags)
    return [
        Row(
            "close to Prometheus seeing 0, median", f"{statistics.median(to_prom):.2f} s", "", None
        ),
        Row("close to scaled to 0, median", f"{statistics.median(to_action):.2f} s", "", None),
        Row(
            f"Prometheus 0 to scaled to 0, max of {len(lags)}",
            f"{worst:.2f} s = {worst / DRAIN_INTERVAL:.2f} cycles of {DRAIN_INTERVAL:g}s",
            "<= 1 cycle (drainHold 0s)",
            worst <= DRAIN_INTERVAL,
        ),
    ]


async def _read_all(reader: asyncio.StreamReader) -> None:
    while await reader.read(4096):
        pass


# --- main ---------------------------------------------------------------------------------------


async def measure(
    cluster: ControlPlane, prom: PrometheusServer, workdir: Path, *, apps: int, cycles: int
) -> list[Row]:
    api = await make_api_client(kubeconfig=str(cluster.kubeconfig))
    try:
        extra_nodes = math.ceil(max(0, apps - PODS_PER_NODE) / PODS_PER_NODE)
        await asyncio.to_thread(add_fake_nodes, cluster, extra_nodes)
        seconds = await populate(api, apps)
        print(f"  created {apps} apps x 3 colors, live colors Available, in {seconds:.1f}s")
        rows = await steady_state(api, cluster, prom, workdir, cycles=cycles)
        rows += await switch_latency(api, cluster, prom, workdir)
        rows += await drain_latency(api, cluster, prom, workdir)
        return rows
    finally:
        await api.close()


def main() -> None:
    apps = int(os.environ.get("RAINBOWD_BENCH_APPS", "200"))
    cycles = max(10, int(os.environ.get("RAINBOWD_BENCH_CYCLES", "15")))
    print(
        f"bench_daemon: {apps} apps x 3 colors, rainbowd in-process; {os.cpu_count()} cores,"
        " shared with whatever else runs: latencies include that load"
    )
    with (
        tempfile.TemporaryDirectory(prefix="rainbowd-bench-") as tmp,
        ControlPlane(full=True) as cluster,
        PrometheusServer(scrape_interval=1.0) as prom,
    ):
        rows = asyncio.run(measure(cluster, prom, Path(tmp), apps=apps, cycles=cycles))
    print("  results:")
    widths = [
        max(len(text) for text in column) for column in zip(*(r[:3] for r in rows), strict=True)
    ]
    for r in rows:
        met = "" if r.met is None else ("met" if r.met else "MISSED")
        cells = "  ".join(f"{text:{width}}" for text, width in zip(r[:3], widths, strict=True))
        print(f"    {cells}  {met}".rstrip())


if __name__ == "__main__":
    main()
