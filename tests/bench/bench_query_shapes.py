"""Prometheus' CPU per rainbowd cycle for each shape of the connections query, side by side, at
30,000 and 150,000 series (3 pods per color): the summary as one series per color with
`count_values` (the shape rainbowd asked before, the baseline), the split shape of plain
aggregations rainbowd asks now, and the recorded shape (`connections.source: recorded`) with the
recording rules' own evaluation beside it.

A real Prometheus scrapes one exposition of every series; each shape is then asked REPS times in
a row and Prometheus' CPU (/proc) divided by REPS. The rules' cost is their three expressions
evaluated the same way (a rule evaluation is that query). Per minute: rainbowd asking every 30 s
(two cycles) and the rules evaluated every 30 s (two evaluations), the issue's comparison.

    python -m tests.bench query_shapes      (RAINBOWD_BENCH_SHAPES_SIZES=30000,150000)
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import yaml

from rainbowd.core.policy import ConnectionsQuery
from rainbowd.prom.querying import recording_rules, summary_expr
from rainbowd_sandbox.prometheus import PrometheusServer, Sample
from tests.bench.bench_scale import cpu_seconds
from tests.exposition import Exposition

SIZES = tuple(
    int(s) for s in os.environ.get("RAINBOWD_BENCH_SHAPES_SIZES", "30000,150000").split(",")
)
REPS = int(os.environ.get("RAINBOWD_BENCH_SHAPES_REPS", "10"))
PODS = 3
RAW = ConnectionsQuery()
RECORDED = ConnectionsQuery(recorded=True, rule_interval=timedelta(seconds=30))
# The same rules evaluated every 2 hours, and read as such (nothing stale meanwhile).
IDLE = ConnectionsQuery(recorded=True, rule_interval=timedelta(hours=2))
# Scraped once a minute: the series stay fresh (5 min lookback) and few scrapes land among the
# queries being measured.
SCRAPE = 60.0


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


def exposition(series: int) -> str:
    lines = ["# TYPE rainbow_open_connections gauge"]
    for i in range(series):
        color, pod = divmod(i, PODS)
        lines.append(
            f'rainbow_open_connections{{namespace="ns{color % 50}",app="app{color}",'
            f'color="c{color:06x}",pod="app{color}-{pod}"}} {i % 7}'
        )
    return "\n".join(lines) + "\n"


def query(prom: PrometheusServer, expr: str) -> None:
    data = urllib.parse.urlencode({"query": expr}).encode()
    with urllib.request.urlopen(prom.url + "/api/v1/query", data=data, timeout=600) as resp:
        resp.read()


def cpu_per(prom: PrometheusServer, run: Callable[[], None]) -> float:
    """Prometheus' CPU seconds per `run()`, over REPS runs (after one to warm up)."""
    run()
    before = cpu_seconds(prom.pid or 0)
    for _ in range(REPS):
        run()
    return (cpu_seconds(prom.pid or 0) - before) / REPS


def measure(series: int, workdir: Path) -> dict[str, float]:
    rules = workdir / "rules.yaml"
    rules.write_text(yaml.safe_dump(recording_rules(RECORDED)))
    rule_exprs = [r["expr"] for r in recording_rules(RAW)["groups"][0]["rules"]]
    with scraping(series) as prom:
        got = {
            "count_values": cpu_per(prom, lambda: query(prom, count_values_expr(RAW))),
            "split": cpu_per(prom, lambda: query(prom, summary_expr(RAW))),
            "rules": cpu_per(prom, lambda: _each(prom, rule_exprs)),
        }
        # Then the rules, evaluated every 30 s, and the recorded shape reading them. Once
        # they have recorded, their group is reloaded with a long interval (the same rules:
        # Prometheus keeps their series), so no evaluation lands among the reads measured.
        prom.set_rule_files([rules])
        colors = series // PODS
        prom.wait_for("count(rainbowd:connections:sum)", timeout=600, predicate=all_of(colors))
        rules.write_text(yaml.safe_dump(recording_rules(IDLE)))
        prom.reload()
        got["recorded"] = cpu_per(prom, lambda: query(prom, summary_expr(IDLE)))
        # ...and the recorded series were all there to be read.
        prom.wait_for("count(rainbowd:connections:sum)", timeout=5, predicate=all_of(colors))
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


def _each(prom: PrometheusServer, exprs: list[str]) -> None:
    for expr in exprs:
        query(prom, expr)


def all_of(series: int) -> Callable[[list[Sample]], bool]:
    def check(samples: list[Sample]) -> bool:
        return bool(samples) and samples[0].value == series

    return check


def main() -> None:
    print(
        "Prometheus CPU, ms per query; per minute at a 30 s cycle and a 30 s rule interval"
        " (count_values: the shape asked before; recorded per minute includes the rules)"
    )
    print(
        f"{'series':>8} {'count_values':>13} {'split':>8} {'recorded':>9} {'rules':>8}"
        f" {'cv/min':>8} {'rec+rules/min':>14} {'ratio':>6}"
    )
    for size in SIZES:
        with TemporaryDirectory(prefix="rainbowd-bench-shapes-") as tmp:
            started = time.perf_counter()
            got = measure(size, Path(tmp))
        per_minute_cv = 2 * got["count_values"]
        per_minute_rec = 2 * got["recorded"] + 2 * got["rules"]
        print(
            f"{size:>8} {got['count_values'] * 1000:>13.1f} {got['split'] * 1000:>8.1f}"
            f" {got['recorded'] * 1000:>9.1f} {got['rules'] * 1000:>8.1f}"
            f" {per_minute_cv * 1000:>8.1f} {per_minute_rec * 1000:>14.1f}"
            f" {per_minute_cv / per_minute_rec if per_minute_rec else float('inf'):>6.1f}"
            f"   ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
