"""Benchmark: rainbowd's cost at scale, side by side with a polling baseline in the same run.

For each size (RAINBOWD_BENCH_SCALE, default "1000,10000" Deployments; `make bench-50k` runs
50,000) it starts etcd + kube-apiserver only (no controllers: Deployments never get pods, the
live colors' status is written Available directly), creates apps of 4 colors (a Service selects
the newest) and a Prometheus holding a connections series for each of 3 pods of every color.
Then, with rainbowd as a real `rainbowd run` process and then the baseline (tests/bench/polling.py)
against the same control plane and Prometheus, each at a 5 s interval:

- first start on unstamped Deployments: time until the caches synced (/readyz), RSS then, time
  until every Deployment carries its stamp, and the Events written (audit log, by user agent);
- steady cycles, connections fixed, then moving at every scrape: CPU per cycle (/proc), apiserver
  requests by verb per cycle (audit log by user agent), apiserver CPU per minute (/proc),
  Prometheus queries, response bytes and CPU per cycle;
- reactions: a Service switch until the old color is stamped retired, and a color seen drained in
  Prometheus until it is scaled to 0;
- the connections answer's size in both shapes (summary and raw per-pod series).

Prints a table with both and their ratio, and writes the figures to docs/bench/scale-<N>.json
(the README's benchmark table is made from them: `python -m tests.bench.table`). Asserts nothing
on time.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient
from prometheus_client.parser import text_string_to_metric_families

from rainbowd.core.model import LIVE_AT, RETIRED_AT
from rainbowd.core.policy import ConnectionsQuery
from rainbowd.kube.clients import MERGE_PATCH, make_api_client, request_json, resource_path
from rainbowd.prom.querying import expression
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.procs import free_port
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.bench import polling
from tests.e2e.harness import deployment_body
from tests.exposition import Exposition

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "bench"
NAMESPACES = ("scale-a", "scale-b", "scale-c", "scale-d")
REACT = "scale-react"
COLORS_PER_APP = 4
PODS_PER_COLOR = 3
INTERVAL = 5.0
SCRAPE = 5.0
CONCURRENCY = 32
WITHIN = 900.0
TICKS = os.sysconf("SC_CLK_TCK")
RAINBOWD_AGENT = "rainbowd/"


# --- processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = WITHIN) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:g}s for {what}")
        await asyncio.sleep(0.1)


# --- the cluster's objects -------------------------------------------------------------------


def color_of(app: int, generation: int) -> str:
    return f"{app:05x}{generation:01x}"


def deployment(app: str, color: str) -> dict[str, Any]:
    return deployment_body(app, color, replicas=PODS_PER_COLOR)


def service(app: str, color: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app},
        # Headless: no cluster IP to allocate (the sandbox's Service range is a /24).
        "spec": {
            "clusterIP": "None",
            "selector": {"app": app, "color": color},
            "ports": [{"port": 80}],
        },
    }


AVAILABLE = {
    "status": {
        "observedGeneration": 1,
        "replicas": PODS_PER_COLOR,
        "readyReplicas": PODS_PER_COLOR,
        "availableReplicas": PODS_PER_COLOR,
        "updatedReplicas": PODS_PER_COLOR,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "bench",
                "lastUpdateTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
}


async def in_parallel(jobs: Sequence[Callable[[], Awaitable[object]]]) -> None:
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            await job()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


@dataclass
class Layout:
    """apps[i] = (namespace, app, colors oldest first); the last color is live."""

    apps: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def series(self, value: Callable[[int], int]) -> str:
        lines = ["# TYPE rainbow_open_connections gauge"]
        for i, (ns, app, colors) in enumerate(self.apps):
            for color in colors:
                for pod in range(PODS_PER_COLOR):
                    lines.append(
                        f'rainbow_open_connections{{namespace="{ns}",app="{app}",'
                        f'color="{color}",pod="{app}-{color}-{pod}"}} {value(i)}'
                    )
        return "\n".join(lines) + "\n"


async def create(api: ApiClient, ns: str, body: dict[str, Any]) -> None:
    plural = "deployments" if body["kind"] == "Deployment" else "services"
    await request_json(
        api, "POST", resource_path(body["apiVersion"], plural, namespace=ns), body=body
    )


async def make_available(api: ApiClient, ns: str, name: str) -> None:
    path = resource_path("apps/v1", "deployments", namespace=ns, name=name) + "/status"
    await request_json(api, "PATCH", path, body=AVAILABLE, content_type=MERGE_PATCH)


def connections_shifted(shift: int) -> Callable[[int], int]:
    """Connections per pod of the i-th color: 1 to 7, moved `shift` colors along."""
    return lambda i: 1 + (i + shift) % 7


async def populate(api: ApiClient, size: int) -> Layout:
    layout = Layout()
    for ns in (*NAMESPACES, REACT):
        await request_json(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": ns}})
    for i in range(max(1, size // COLORS_PER_APP)):
        ns = NAMESPACES[i % len(NAMESPACES)]
        layout.apps.append((ns, f"app-{i:05d}", [color_of(i, g) for g in range(COLORS_PER_APP)]))
    # Retired colors first; the live one (which the Service selects) a second later: the
    # planner orders colors by creationTimestamp, whole seconds.
    await in_parallel(
        [
            partial(create, api, ns, deployment(app, color))
            for ns, app, colors in layout.apps
            for color in colors[:-1]
        ]
    )
    await asyncio.sleep(1.05 - time.time() % 1.0)
    await in_parallel(
        [partial(create, api, ns, deployment(app, colors[-1])) for ns, app, colors in layout.apps]
        + [partial(create, api, ns, service(app, colors[-1])) for ns, app, colors in layout.apps]
    )
    await in_parallel(
        [partial(make_available, api, ns, f"{app}-{colors[-1]}") for ns, app, colors in layout.apps]
    )
    return layout


# --- counting ----------------------------------------------------------------------------------


@dataclass
class Reading:
    at: float
    cpu: float
    cycles: float
    apiserver_cpu: float
    prom_cpu: float
    prom_queries: float
    prom_bytes: float
    audit_lines: int


class Meter:
    def __init__(self, cluster: ControlPlane, prom: PrometheusServer) -> None:
        self.cluster = cluster
        self.prom = prom

    def read(self, pid: int, cycles: float) -> Reading:
        _, body = get(self.prom.url + "/metrics")
        text = body.decode()
        handler = {"handler": "/api/v1/query"}
        return Reading(
            at=time.monotonic(),
            cpu=cpu_seconds(pid),
            cycles=cycles,
            apiserver_cpu=cpu_seconds(self.cluster.process_ids()["kube-apiserver"]),
            prom_cpu=cpu_seconds(self.prom.pid or 0),
            prom_queries=metric(text, "prometheus_http_requests_total", **handler),
            prom_bytes=metric(text, "prometheus_http_response_size_bytes_sum", **handler),
            audit_lines=len(self.audit_text().splitlines()),
        )

    def audit_text(self) -> str:
        try:
            return self.cluster.audit_log.read_text()
        except FileNotFoundError:
            return ""

    def requests(self, agent: str, since: int) -> Counter[str]:
        """Audited requests after line `since` from a user agent starting with `agent`, by verb
        (and resource for writes)."""
        counts: Counter[str] = Counter()
        for line in self.audit_text().splitlines()[since:]:
            event = json.loads(line)
            if not str(event.get("userAgent", "")).startswith(agent):
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "") + (
                "/" + ref["subresource"] if ref.get("subresource") else ""
            )
            counts[f"{event['verb']} {resource}"] += 1
        return counts


def window_figures(meter: Meter, before: Reading, after: Reading, agent: str) -> dict[str, Any]:
    cycles = max(after.cycles - before.cycles, 1)
    minutes = (after.at - before.at) / 60
    requests = meter.requests(agent, before.audit_lines)
    verbs: Counter[str] = Counter()
    for key, n in requests.items():
        verbs[key.split()[0]] += n
    return {
        "cycles": after.cycles - before.cycles,
        "seconds": round(after.at - before.at, 1),
        "cpu_ms_per_cycle": round((after.cpu - before.cpu) / cycles * 1000, 1),
        "apiserver_requests_per_cycle": {v: round(n / cycles, 2) for v, n in sorted(verbs.items())},
        "apiserver_requests_by_resource": dict(sorted(requests.items())),
        "apiserver_cpu_s_per_minute": round(
            (after.apiserver_cpu - before.apiserver_cpu) / minutes, 2
        ),
        "prometheus_queries_per_cycle": round(
            (after.prom_queries - before.prom_queries) / cycles, 2
        ),
        "prometheus_kb_per_cycle": round((after.prom_bytes - before.prom_bytes) / cycles / 1024, 1),
        "prometheus_cpu_ms_per_cycle": round((after.prom_cpu - before.prom_cpu) / cycles * 1000, 1),
    }


# --- the two controllers -----------------------------------------------------------------------


class Controller:
    """A controller process under measurement: rainbowd or the baseline."""

    name: str
    agent: str
    proc: subprocess.Popen[bytes]

    def cycles(self) -> float:
        raise NotImplementedError

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Rainbowd(Controller):
    name = "rainbowd"
    agent = RAINBOWD_AGENT

    def __init__(self, cluster: ControlPlane, policy: Path, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = workdir / "rainbowd.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rainbowd",
                "run",
                f"--policy-file={policy}",
                f"--kubeconfig={cluster.kubeconfig}",
                f"--interval={INTERVAL:g}s",
                f"--listen=127.0.0.1:{self.port}",
                "--no-leader-elect",
                "--identity=rainbowd-bench",
                *extra,
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def cycles(self) -> float:
        # From its log, not its /metrics: polling /metrics renders every color's gauges and
        # would be counted as rainbowd's own CPU.
        return float(self.log.read_bytes().count(b'"msg": "cycle finished"'))

    def ready(self) -> bool:
        return get(self.url("/readyz"))[0] == 200


class Baseline(Controller):
    name = "baseline"
    agent = polling.USER_AGENT

    def __init__(self, cluster: ControlPlane, prom: PrometheusServer, workdir: Path) -> None:
        self.log = workdir / "baseline.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bench.polling",
                str(cluster.kubeconfig),
                prom.url,
                f"{INTERVAL:g}",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def cycles(self) -> float:
        return float(len(self.lines()))


def policy_file(workdir: Path, prom_url: str) -> Path:
    doc = {
        "apiVersion": "rainbowd.io/v1alpha1",
        "kind": "DrainPolicy",
        "prometheus": {"url": prom_url, "timeout": "20s"},
        "connections": {"metric": "rainbow_open_connections"},
        "rules": [
            {
                "name": "react",
                "namespaces": [REACT],
                "minRetiredAge": "0s",
                "drainHold": "0s",
                "action": "scale",
            },
            {"name": "bulk", "maxColors": COLORS_PER_APP + 2},
        ],
    }
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- phases -----------------------------------------------------------------------------------


async def annotated(api: ApiClient, ns: str, name: str, key: str) -> bool:
    path = resource_path("apps/v1", "deployments", namespace=ns, name=name)
    obj = await request_json(api, "GET", path)
    return key in (obj["metadata"].get("annotations") or {})


async def replicas(api: ApiClient, ns: str, name: str) -> int:
    path = resource_path("apps/v1", "deployments", namespace=ns, name=name)
    return int((await request_json(api, "GET", path))["spec"]["replicas"])


async def reactions(
    api: ApiClient,
    prom: PrometheusServer,
    react: Exposition,
    generation: str,
    retired_key: str,
) -> dict[str, float]:
    """A Service switch from color <gen>0 to <gen>1 of the react app, then <gen>0 drained."""
    old, new = f"{generation}0", f"{generation}1"
    app = "chat"
    for color in (old, new):
        await create(api, REACT, deployment(app, color))
        await make_available(api, REACT, f"{app}-{color}")
        await asyncio.sleep(1.05)  # creation order: the planner orders colors by second
    react.set(react_series(app, {old: 5, new: 5}))
    path = resource_path("v1", "services", namespace=REACT, name=app)
    if generation == "a":
        await create(api, REACT, service(app, old))
    else:
        body = {"spec": {"selector": {"app": app, "color": old}}}
        await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)
    await asyncio.sleep(2 * INTERVAL)
    began = time.monotonic()
    body = {"spec": {"selector": {"app": app, "color": new}}}
    await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)
    await until(lambda: annotated(api, REACT, f"{app}-{old}", retired_key), "retired-at")
    switch = time.monotonic() - began
    react.set(react_series(app, {old: 0, new: 5}))
    expr = f'rainbow_open_connections{{namespace="{REACT}",color="{old}"}}'

    async def seen_zero() -> bool:
        samples = await asyncio.to_thread(prom.query, expr)
        return bool(samples) and samples[0].value == 0

    await until(seen_zero, "Prometheus to see the drain")
    seen = time.monotonic()
    await until(lambda: _zero(api, f"{app}-{old}"), "the scale-down")
    return {
        "switch_to_retired_s": round(switch, 2),
        "drained_to_scaled_s": round(time.monotonic() - seen, 2),
    }


def react_series(app: str, values: dict[str, int]) -> str:
    """The react app's colors: `values[color]` connections on each of its pods."""
    return "".join(
        f'rainbow_open_connections{{namespace="{REACT}",app="{app}",color="{c}",'
        f'pod="{c}-{pod}"}} {v}\n'
        for c, v in values.items()
        for pod in range(PODS_PER_COLOR)
    )


async def _zero(api: ApiClient, name: str) -> bool:
    return await replicas(api, REACT, name) == 0


def cycles_reach(ctl: Controller, count: float) -> Callable[[], Awaitable[bool]]:
    """A check for `until`: the controller has run `count` cycles."""
    return lambda: asyncio.to_thread(lambda: ctl.cycles() >= count)


async def measure_controller(
    ctl: Controller,
    meter: Meter,
    moving: Callable[[bool], None],
    size: int,
    cycles: int,
    stamped: Callable[[], Awaitable[int]],
    started: float,
    out: dict[str, Any],
) -> None:
    """The controller's figures, written into `out` as they are measured: a phase that does
    not finish in time leaves the earlier ones."""
    pid = ctl.proc.pid
    if isinstance(ctl, Rainbowd):
        await until(lambda: asyncio.to_thread(ctl.ready), "rainbowd's caches to sync")
        out["sync_s"] = round(time.monotonic() - started, 2)
        out["rss_mb_after_sync"] = round(rss_mb(pid), 1)

    async def converged() -> bool:
        return await stamped() >= size

    await until(
        converged, f"{ctl.name} to stamp every Deployment", within=converge_within(ctl.name)
    )
    out["first_convergence_s"] = round(time.monotonic() - started, 1)
    writes = meter.requests(ctl.agent, 0)
    out["first_convergence_writes"] = sum(
        n for k, n in writes.items() if k.split()[0] in ("patch", "update", "create")
    )
    if isinstance(ctl, Baseline):
        out["rss_mb_after_sync"] = round(rss_mb(pid), 1)
    for label, move in (("steady", False), ("moving", True)):
        moving(move)
        # Two cycles to take the new mode in, then the window.
        start_cycle = ctl.cycles()
        await until(cycles_reach(ctl, start_cycle + 2), f"{ctl.name} cycles")
        before = await asyncio.to_thread(meter.read, pid, ctl.cycles())
        await until(cycles_reach(ctl, before.cycles + cycles), f"{ctl.name} cycles")
        after = await asyncio.to_thread(meter.read, pid, ctl.cycles())
        out[label] = window_figures(meter, before, after, ctl.agent)
        if label == "steady":
            # The first start's Events, summaries included (written after the cycle's stamps),
            # counted once its cycles are long over.
            first = meter.requests(ctl.agent, 0) - meter.requests(ctl.agent, before.audit_lines)
            out["first_convergence_events"] = first["create events"]
    moving(False)
    out["rss_mb_end"] = round(rss_mb(pid), 1)


def converge_within(name: str) -> float:
    """How long a first convergence may take (RAINBOWD_BENCH_WITHIN seconds; for the baseline,
    RAINBOWD_BENCH_BASELINE_WITHIN if set)."""
    default = os.environ.get("RAINBOWD_BENCH_WITHIN", 3 * WITHIN)
    if name == Baseline.name:
        return float(os.environ.get("RAINBOWD_BENCH_BASELINE_WITHIN", default))
    return float(default)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def answer_sizes(prom: PrometheusServer) -> dict[str, Any]:
    """The connections answer in both shapes, as rainbowd would ask it."""
    query = ConnectionsQuery()
    sizes: dict[str, Any] = {}
    for shape, per_pod in (("summary", False), ("per_pod", True)):
        data = urllib.parse.urlencode({"query": expression(query, per_pod=per_pod)}).encode()
        began = time.monotonic()
        with urllib.request.urlopen(prom.url + "/api/v1/query", data=data, timeout=60) as resp:
            body = resp.read()
        sizes[shape] = {
            "kb": round(len(body) / 1024, 1),
            "kb_gzipped": round(len(gzip.compress(body)) / 1024, 1),
            "series": len(json.loads(body)["data"]["result"]),
            "seconds": round(time.monotonic() - began, 3),
        }
    return sizes


async def run_size(size: int, cycles: int, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"deployments": size}
    with ControlPlane() as cluster, Exposition() as bulk, Exposition() as react:
        prom = PrometheusServer(scrape_interval=SCRAPE)
        prom.set_targets([(bulk.target, {}), (react.target, {})])
        api = await make_api_client(kubeconfig=str(cluster.kubeconfig))
        api.user_agent = "bench-setup"  # told apart from rainbowd's in the audit log
        try:
            began = time.monotonic()
            layout = await populate(api, size)
            result["populate_s"] = round(time.monotonic() - began, 1)
            size = sum(len(c) for _, _, c in layout.apps)
            result["deployments"] = size
            fixed = layout.series(connections_shifted(0))
            moved = [layout.series(connections_shifted(k)) for k in (1, 2)]
            bulk.set(fixed)
            series = size * PODS_PER_COLOR
            result["series"] = series
            with prom:
                await asyncio.to_thread(
                    prom.wait_for,
                    "count(rainbow_open_connections)",
                    lambda s: bool(s) and s[0].value >= series,
                    timeout=300.0,
                )
                result["answer"] = await asyncio.to_thread(answer_sizes, prom)
                meter = Meter(cluster, prom)
                mover: asyncio.Task[None] | None = None

                def moving(on: bool) -> None:
                    nonlocal mover
                    if mover is not None:
                        mover.cancel()
                        mover = None
                    bulk.set(fixed)
                    if on:
                        mover = asyncio.get_running_loop().create_task(alternate())

                async def alternate() -> None:
                    k = 0
                    while True:
                        bulk.set(moved[k % 2])
                        k += 1
                        await asyncio.sleep(SCRAPE)

                async def stamped_by(keys: tuple[str, str]) -> int:
                    count = 0
                    for ns in NAMESPACES:
                        listing = await request_json(
                            api, "GET", resource_path("apps/v1", "deployments", namespace=ns)
                        )
                        count += sum(
                            1
                            for d in listing["items"]
                            if set(keys) & set(d["metadata"].get("annotations") or {})
                        )
                    return count

                policy = policy_file(workdir, prom.url)
                for make, keys, generation in (
                    (lambda: Rainbowd(cluster, policy, workdir), (LIVE_AT, RETIRED_AT), "a"),
                    (
                        lambda: Baseline(cluster, prom, workdir),
                        (polling.LIVE_AT, polling.RETIRED_AT),
                        "b",
                    ),
                ):
                    started = time.monotonic()
                    ctl = make()
                    figures: dict[str, Any] = {"load_average_start": load_average()}
                    result[ctl.name] = figures
                    try:
                        await measure_controller(
                            ctl,
                            meter,
                            moving,
                            size,
                            cycles,
                            partial(stamped_by, keys),
                            started,
                            figures,
                        )
                        figures |= await reactions(api, prom, react, generation, keys[1])
                    except TimeoutError as exc:
                        # Recorded as far as it got, with why: the other figures still count.
                        figures["incomplete"] = str(exc)
                        print(f"  {ctl.name}: incomplete: {exc}", flush=True)
                    finally:
                        ctl.stop()
                        figures["load_average_end"] = load_average()
                if mover is not None:
                    mover.cancel()
        finally:
            await api.close()
    return result


# --- output --------------------------------------------------------------------------------------


def rows(result: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(figure, rainbowd, baseline) rows; None where a figure was not measured."""
    r, b = result.get("rainbowd", {}), result.get("baseline", {})

    def both(key: str) -> tuple[Any, Any]:
        return r.get(key), b.get(key)

    def lists(window: dict[str, Any]) -> Any:
        verbs = window.get("apiserver_requests_per_cycle")
        return None if verbs is None else verbs.get("list", 0) + verbs.get("get", 0)

    out: list[tuple[str, Any, Any]] = [
        ("caches synced (s)", r.get("sync_s"), None),
        ("RSS after sync (MB)", *both("rss_mb_after_sync")),
        ("first convergence, unstamped (s)", *both("first_convergence_s")),
        ("first convergence: Events", *both("first_convergence_events")),
    ]
    for label in ("steady", "moving"):
        rs, bs = r.get(label, {}), b.get(label, {})
        out.append(
            (f"{label}: CPU per cycle (ms)", rs.get("cpu_ms_per_cycle"), bs.get("cpu_ms_per_cycle"))
        )
        out.append((f"{label}: apiserver LIST+GET per cycle", lists(rs), lists(bs)))
        for name, key in (
            ("apiserver CPU (s per minute)", "apiserver_cpu_s_per_minute"),
            ("Prometheus queries per cycle", "prometheus_queries_per_cycle"),
            ("Prometheus KB per cycle", "prometheus_kb_per_cycle"),
            ("Prometheus CPU per cycle (ms)", "prometheus_cpu_ms_per_cycle"),
        ):
            out.append((f"{label}: {name}", rs.get(key), bs.get(key)))
    out += [
        ("Service switch to retired-at (s)", *both("switch_to_retired_s")),
        ("drained in Prometheus to scaled to 0 (s)", *both("drained_to_scaled_s")),
    ]
    return out


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float):
        return ""
    if a == 0:
        return "-" if b == 0 else "inf"
    return f"{b / a:.1f}x"


def shown(value: Any) -> str:
    return "-" if value is None else str(value)


def show(result: dict[str, Any]) -> None:
    print(f"  {result['deployments']:,} Deployments, {result['series']:,} series:")
    for name in ("rainbowd", "baseline"):
        figures = result.get(name, {})
        print(
            f"    {name}: load average {figures.get('load_average_start')} at its start,"
            f" {figures.get('load_average_end')} at its end"
        )
        if "incomplete" in figures:
            print(f"    {name}: incomplete: {figures['incomplete']}")
    print(f"    {'':44} {'rainbowd':>10} {'baseline':>10} {'baseline/rainbowd':>18}")
    for name, r, b in rows(result):
        print(f"    {name:44} {shown(r):>10} {shown(b):>10} {ratio(r, b):>18}")
    for shape, a in result["answer"].items():
        print(
            f"    connections answer, {shape}: {a['kb']} KB ({a['kb_gzipped']} KB gzipped),"
            f" {a['series']} series, {a['seconds']} s"
        )


def sizes() -> list[int]:
    text = os.environ.get("RAINBOWD_BENCH_SCALE", "1000,10000")
    return [int(n) for n in text.split(",") if n.strip()]


def run(
    size: int, cycles: int, *, interval: float = 5.0, scrape: float | None = None
) -> dict[str, Any]:
    """One size measured; `interval` is both controllers' cycle, and the scrape interval
    unless `scrape` says otherwise (the sandbox's Prometheus takes whole seconds)."""
    global INTERVAL, SCRAPE
    INTERVAL = interval
    SCRAPE = interval if scrape is None else scrape
    with tempfile.TemporaryDirectory(prefix="rainbowd-scale-") as tmp:
        result = asyncio.run(run_size(size, cycles, Path(tmp)))
    result["interval_s"] = interval
    result["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    result["machine"] = f"{os.cpu_count()} cores, {memory:.0f} GiB, {platform.machine()}, shared"
    return result


def main() -> None:
    cycles = int(os.environ.get("RAINBOWD_BENCH_CYCLES", "6"))
    for size in sizes():
        print(f"  {size:,} Deployments: load average {load_average()} at the start", flush=True)
        result = run(size, cycles)
        show(result)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"scale-{size}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"  wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
