"""Prometheus' CPU for each shape of the connections query, side by side, at 30,000 and 150,000
series (3 pods per color): the summary as one series per color with `count_values` (the shape
rainbowd asked before, the baseline), the split shape of plain aggregations rainbowd asks now,
and the recorded shape (`connections.source: recorded`) with the recording rules' own evaluation
beside it, each as it was before (`BEFORE_*`, kept here) and as it is now.

A real Prometheus scrapes one exposition of every series; each query is asked REPS times in a
row and Prometheus' CPU (/proc) divided by REPS. The rules are measured as Prometheus evaluates
them: the group evaluated every EVAL_EVERY, Prometheus' CPU over EVALS whole evaluations less
what it spends meanwhile without them (scraping), per evaluation.

Per minute, with the rules evaluated every 30 s (two evaluations a minute), at the daemon's
default cycle of 30 s and at a 5 s cycle: the summary asked every cycle; the recorded series
read at most once a cycle, and only when a new evaluation is recorded (a probe of one series
asking, once one is due), the reads and probes a minute counted from the real client over
MINUTES minutes of 5 s cycles against the rules evaluated every 30 s, from their first
evaluation on (at a 30 s cycle, a probe and a read each cycle counted).

    python -m tests.bench query_shapes      (RAINBOWD_BENCH_SHAPES_SIZES=30000,150000)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from types import SimpleNamespace
from typing import Any

import aiohttp
import yaml

from rainbowd.core.policy import ConnectionsQuery, PrometheusSettings
from rainbowd.prom import PrometheusClient
from rainbowd.prom.querying import (
    RECORDED_NEGATIVE,
    RECORDED_PODS,
    RECORDED_SUM,
    RECORDED_WINDOW,
    RULE_GROUP,
    Vector,
    recording_rules,
    summary_expr,
)
from rainbowd_sandbox.prometheus import PrometheusServer, Sample
from tests.bench.bench_scale import cpu_seconds
from tests.exposition import Exposition

SIZES = tuple(
    int(s) for s in os.environ.get("RAINBOWD_BENCH_SHAPES_SIZES", "30000,150000").split(",")
)
REPS = int(os.environ.get("RAINBOWD_BENCH_SHAPES_REPS", "10"))
EVALS = int(os.environ.get("RAINBOWD_BENCH_SHAPES_EVALS", "4"))
EVAL_EVERY = timedelta(seconds=15)
MINUTES = int(os.environ.get("RAINBOWD_BENCH_SHAPES_MINUTES", "2"))
PODS = 3
RULES = timedelta(seconds=30)  # the rule interval of the comparison
CYCLES = (30.0, 5.0)  # the daemon's default cycle, and a short one
RAW = ConnectionsQuery()
RECORDED = ConnectionsQuery(recorded=True, rule_interval=RULES)
# The same rules evaluated every 2 hours, and read as such (nothing stale meanwhile).
IDLE = ConnectionsQuery(recorded=True, rule_interval=timedelta(hours=2))
# Scraped once a minute: the series stay fresh (5 min lookback) and few scrapes land among the
# queries being measured.
SCRAPE = 60.0
_BY = "namespace, app, color"
# What the client asks, once an evaluation is due, to learn whether it is recorded yet.
PROBE = f'timestamp({{__name__="{RECORDED_PODS}", namespace="ns0", app="app0", color="c000000"}})'


def count_values_expr(query: ConnectionsQuery) -> str:
    """The summary rainbowd asked before the split shape: one series per color, the pod count
    made a label by count_values and joined onto the sum (the baseline here)."""
    by = f"{query.namespace_label}, {query.app_label}, {query.color_label}"
    sel = query.selector
    pod = (
        f'label_replace(label_replace({sel}, "rainbowd_pod", "$1", "instance", "(.+)"),'
        f' "rainbowd_pod", "$1", "{query.pod_label}", "(.+)")'
    )
    pods = f"count by ({by}) (count by ({by}, rainbowd_pod) ({pod}))"
    return (
        f"sum by ({by}) ({sel})"
        f' * on ({by}) group_left (rainbowd_pods) count_values by ({by}) ("rainbowd_pods", {pods})'
        f' or label_replace(count by ({by}) ({sel} < 0), "rainbowd_part", "negative", "", "")'
    )


def before_rules(interval: timedelta) -> dict[str, Any]:
    """The recording rules as shipped before: the series with a pod label selected by a matcher
    on it (`pod=~".+"`), which costs Prometheus as much as the selection itself."""
    sel = RAW.selector
    named = f'count by ({_BY}, pod) (rainbow_open_connections{{pod=~".+"}})'
    unnamed = (
        f"count by ({_BY}, pod) (label_replace(count by ({_BY}, instance)"
        f' (rainbow_open_connections{{pod=~""}}), "pod", "$1", "instance", "(.+)"))'
    )
    exprs = {
        RECORDED_SUM: ("sum", f"sum by ({_BY}) ({sel})"),
        RECORDED_NEGATIVE: ("negative", f"count by ({_BY}) ({sel} < 0)"),
        RECORDED_PODS: ("pods", f"count by ({_BY}) ({named} or {unnamed})"),
    }
    rules = [
        {"record": name, "expr": expr, "labels": {"rainbowd_part": part}}
        for name, (part, expr) in exprs.items()
    ]
    seconds = f"{interval.total_seconds():g}s"
    return {"groups": [{"name": RULE_GROUP, "interval": seconds, "rules": rules}]}


def before_read() -> str:
    """The recorded series as read before: an instant selection of them as recorded, with the
    time of the oldest recorded sum or pod count (a second selection of them). Now one range
    selection answers both (`summary_expr` of a recorded query)."""
    every = f'{{__name__=~"{RECORDED_SUM}|{RECORDED_PODS}|{RECORDED_NEGATIVE}"}}'
    evaluated = f'min(timestamp({{__name__=~"{RECORDED_SUM}|{RECORDED_PODS}"}}))'
    return f'{every} or label_replace({evaluated}, "rainbowd_part", "evaluated", "", "")'


def exposition(series: int) -> str:
    lines = ["# TYPE rainbow_open_connections gauge"]
    for i in range(series):
        color, pod = divmod(i, PODS)
        lines.append(
            f'rainbow_open_connections{{namespace="ns{color % 50}",app="app{color}",'
            f'color="c{color:06x}",pod="app{color}-{pod}"}} {i % 7}'
        )
    return "\n".join(lines) + "\n"


def query(prom: PrometheusServer, expr: str, at: float | None = None) -> None:
    form = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(prom.url + "/api/v1/query", data=data, timeout=600) as resp:
        resp.read()


def cpu_per(prom: PrometheusServer, run: Callable[[], None]) -> float:
    """Prometheus' CPU seconds per `run()`, over REPS runs (after one to warm up)."""
    run()
    before = cpu_seconds(prom.pid or 0)
    for _ in range(REPS):
        run()
    return (cpu_seconds(prom.pid or 0) - before) / REPS


def _group_metric(prom: PrometheusServer, name: str) -> float:
    with urllib.request.urlopen(prom.url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    pattern = re.compile(rf'^{name}{{[^}}]*rule_group="[^"]*;{RULE_GROUP}"}} (\S+)$', re.M)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


def idle_rate(prom: PrometheusServer, seconds: float) -> float:
    """Prometheus' CPU seconds per second while it only scrapes."""
    before, started = cpu_seconds(prom.pid or 0), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(prom.pid or 0) - before) / (time.monotonic() - started)


def evaluation_cost(
    prom: PrometheusServer, rules_file: Path, rules: dict[str, Any], idle: float
) -> float:
    """Prometheus' CPU seconds per evaluation of `rules`: EVALS whole evaluations, from the end
    of one to the end of the EVALS-th after it, less the idle rate over that time."""
    group = rules["groups"][0] | {"interval": f"{EVAL_EVERY.total_seconds():g}s"}
    rules_file.write_text(yaml.safe_dump({"groups": [group]}))
    prom.reload()
    last = "prometheus_rule_group_last_evaluation_timestamp_seconds"

    def next_evaluation(after: float) -> float:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            at = _group_metric(prom, last)
            if at > after:
                return at
            time.sleep(0.1)
        raise RuntimeError(f"no evaluation of the group {RULE_GROUP} within 600 s")

    at = next_evaluation(0.0)
    at = next_evaluation(at)  # the reloaded group's own
    before, started = cpu_seconds(prom.pid or 0), time.monotonic()
    for _ in range(EVALS):
        at = next_evaluation(at)
    used = cpu_seconds(prom.pid or 0) - before
    return (used - idle * (time.monotonic() - started)) / EVALS


class _Counting(PrometheusClient):
    """The client, counting the single queries it sends (the probes for a new evaluation)."""

    probes = 0

    async def query(self, expr: str, *, at: datetime) -> Vector:
        self.probes += 1
        return await super().query(expr, at=at)


async def reads_in_a_minute(prom: PrometheusServer, cycle: float) -> tuple[float, float]:
    """The reads and the probes a minute the real client sends over MINUTES minutes of cycles
    `cycle` seconds apart, reading the recorded series while the rules are evaluated every
    RULES."""
    sent = 0

    async def count(*_: object) -> None:
        nonlocal sent
        sent += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(count)
    settings = PrometheusSettings(url=prom.url, timeout=timedelta(seconds=120))
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        client = _Counting(session, settings)
        # A running daemon's client has read before: the minute counted starts warm.
        await client.connections(RECORDED, at=datetime.now(UTC))
        sent = client.probes = 0
        started = time.monotonic()
        for n in range(round(MINUTES * 60 / cycle)):
            await asyncio.sleep(max(0.0, started + n * cycle - time.monotonic()))
            result = await client.connections(RECORDED, at=datetime.now(UTC))
            if not result.ok:
                raise RuntimeError(f"the recorded read failed: {result.error}")
    return (sent - client.probes) / MINUTES, client.probes / MINUTES


def measure(series: int, workdir: Path) -> dict[str, float]:
    rules = workdir / "rules.yaml"
    with scraping(series) as prom:
        got = {
            "count_values": cpu_per(prom, lambda: query(prom, count_values_expr(RAW))),
            "split": cpu_per(prom, lambda: query(prom, summary_expr(RAW))),
        }
        idle = idle_rate(prom, EVALS * EVAL_EVERY.total_seconds())
        rules.write_text("groups: []\n")
        prom.set_rule_files([rules])
        got["rules_before"] = evaluation_cost(prom, rules, before_rules(RULES), idle)
        got["rules"] = evaluation_cost(prom, rules, recording_rules(RECORDED), idle)
        # The rules recorded, their group is reloaded with a long interval (the same rules:
        # Prometheus keeps their series), so no evaluation lands among the reads measured.
        colors = series // PODS
        prom.wait_for(f"count({RECORDED_SUM})", timeout=600, predicate=all_of(colors))
        rules.write_text(yaml.safe_dump(recording_rules(IDLE)))
        prom.reload()
        # Both reads pinned to a second after the last evaluation, the range selection over
        # the last three evaluations (EVAL_EVERY apart, or more when one ran late): three
        # samples a series, as a read over three 30 s intervals holds while the rules are
        # evaluated every 30 s.
        (last,) = prom.query(f"max(timestamp({RECORDED_SUM}))")
        at = last.value + 1
        one = f'{RECORDED_SUM}{{namespace="ns0", app="app0", color="c000000"}}[10m]'
        times = prom.api("query", {"query": one, "time": f"{at:.3f}"})["result"][0]["values"]
        third = (at - times[-3][0] + 0.5) / RECORDED_WINDOW
        window = ConnectionsQuery(recorded=True, rule_interval=timedelta(seconds=third))
        held = f"avg(count_over_time({summary_expr(window)}))"
        got["samples"] = float(
            prom.api("query", {"query": held, "time": f"{at:.3f}"})["result"][0]["value"][1]
        )
        got["read_before"] = cpu_per(prom, lambda: query(prom, before_read(), at))
        got["read"] = cpu_per(prom, lambda: query(prom, summary_expr(window), at))
        got["probe"] = cpu_per(prom, lambda: query(prom, PROBE, at))
        prom.wait_for(f"count({RECORDED_SUM})", timeout=5, predicate=all_of(colors))
        # A minute of 5 s cycles against the rules evaluated every 30 s.
        rules.write_text(yaml.safe_dump(recording_rules(RECORDED)))
        switched = time.time()
        prom.reload()
        # Counted from the rules' first evaluation every 30 s on: until then the figures are
        # the idle group's, older than two intervals, and every cycle would read them again.
        prom.wait_for(
            f'min(timestamp({{__name__=~"{RECORDED_SUM}|{RECORDED_PODS}"}}))',
            timeout=600,
            predicate=lambda samples: bool(samples) and samples[0].value > switched,
        )
        got["reads_5s"], got["probes_5s"] = asyncio.run(reads_in_a_minute(prom, 5.0))
        return got


@contextlib.contextmanager
def scraping(series: int) -> Iterator[PrometheusServer]:
    """A real Prometheus that has scraped one exposition of `series` series (`exposition`)."""
    prom = PrometheusServer(scrape_interval=SCRAPE)
    with Exposition(exposition(series)) as target:
        prom.start()
        try:
            prom.set_targets([(target.target, {})])
            prom.wait_for("count(rainbow_open_connections)", timeout=600, predicate=all_of(series))
            yield prom
        finally:
            prom.close()


def all_of(series: int) -> Callable[[list[Sample]], bool]:
    def check(samples: list[Sample]) -> bool:
        return bool(samples) and samples[0].value == series

    return check


def per_minute(got: dict[str, float], cycle: float) -> SimpleNamespace:
    """Prometheus' CPU seconds a minute, rules evaluated every 30 s, rainbowd's cycle `cycle`."""
    cycles = 60 / cycle
    evaluations = 60 / RULES.total_seconds()
    reads, probes = (got["reads_5s"], got["probes_5s"]) if cycle == 5.0 else (cycles, cycles)
    # At least one read per evaluation: a count over whole minutes can miss the last one.
    reads = max(reads, evaluations)
    return SimpleNamespace(
        count_values=cycles * got["count_values"],
        split=cycles * got["split"],
        before=reads * got["read_before"]
        + probes * got["probe"]
        + evaluations * got["rules_before"],
        now=reads * got["read"] + probes * got["probe"] + evaluations * got["rules"],
        reads=f"{reads:g}+{probes:g}",
    )


def main() -> None:
    print(
        "Prometheus CPU, ms per query or per rule evaluation (before: as shipped before; the"
        " rules as Prometheus evaluates them)"
    )
    print(
        f"{'series':>8} {'count_values':>13} {'split':>8} {'read before':>12} {'read':>8}"
        f" {'rules before':>13} {'rules':>8} {'probe':>6}"
    )
    rows = []
    for size in SIZES:
        with TemporaryDirectory(prefix="rainbowd-bench-shapes-") as tmp:
            started = time.perf_counter()
            got = measure(size, Path(tmp))
        rows.append((size, got))
        print(
            f"{size:>8} {got['count_values'] * 1000:>13.1f} {got['split'] * 1000:>8.1f}"
            f" {got['read_before'] * 1000:>12.1f} {got['read'] * 1000:>8.1f}"
            f" {got['rules_before'] * 1000:>13.1f} {got['rules'] * 1000:>8.1f}"
            f" {got['probe'] * 1000:>6.1f}"
            f"   (read: {got['samples']:.1f} samples a series)"
            f"   ({time.perf_counter() - started:.0f} s, load average"
            f" {' '.join(f'{load:.1f}' for load in os.getloadavg())})",
            flush=True,
        )
    print(
        "Per minute, rules every 30 s: s of Prometheus CPU (count_values: asked every cycle;"
        " recorded: the reads and probes plus two evaluations, the same client before and now;"
        " ratio: count_values / recorded now)"
    )
    print(
        f"{'series':>8} {'cycle':>6} {'count_values':>13} {'split':>8} {'recorded before':>16}"
        f" {'reads+probes':>12} {'recorded now':>13} {'ratio':>6}"
    )
    for size, got in rows:
        for cycle in CYCLES:
            m = per_minute(got, cycle)
            print(
                f"{size:>8} {cycle:>5g}s {m.count_values:>13.1f} {m.split:>8.1f}"
                f" {m.before:>16.1f} {m.reads:>12} {m.now:>13.1f}"
                f" {m.count_values / m.now if m.now else float('inf'):>6.1f}"
            )


if __name__ == "__main__":
    main()
