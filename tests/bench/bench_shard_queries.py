"""Prometheus' CPU for a shard's connections query against the whole cluster's, side by side: the
summary (the shape rainbowd asks) over every namespace, as one unsharded rainbowd asks it, then
narrowed to the namespaces of each of n shards (`Policy.narrowed`), for n = 2 and 5.

The series are bench_query_shapes' (3 pods per color, colors spread over 50 namespaces); each
query is asked REPS times in a row and Prometheus' CPU (/proc) divided by REPS. A shard's query
should cost about its share; all n together about what the whole did.

    python -m tests.bench shard_queries      (RAINBOWD_BENCH_SHARDS_SIZES=30000)
"""

from __future__ import annotations

import os
import time

from rainbowd.core.policy import ConnectionsQuery, Knobs, Policy, Rule
from rainbowd.prom.querying import summary_expr
from tests.bench.bench_query_shapes import cpu_per, query, scraping

SIZES = tuple(int(s) for s in os.environ.get("RAINBOWD_BENCH_SHARDS_SIZES", "30000").split(","))
NAMESPACES = tuple(f"ns{i}" for i in range(50))  # as bench_query_shapes lays the series out
SHARDS = (2, 5)


def shard_queries(shards: int) -> list[ConnectionsQuery]:
    """The connections query of each of `shards` shards splitting the namespaces evenly."""
    policy = Policy(rules=(Rule(name="all", knobs=Knobs(), connections=ConnectionsQuery()),))
    return [policy.narrowed(NAMESPACES[i::shards]).queries[0] for i in range(shards)]


def measure(series: int) -> dict[str, list[float]]:
    with scraping(series) as prom:

        def cost(expr: str) -> float:
            return cpu_per(prom, lambda: query(prom, expr))

        got = {"whole": [cost(summary_expr(ConnectionsQuery()))]}
        for n in SHARDS:
            got[f"{n} shards"] = [cost(summary_expr(q)) for q in shard_queries(n)]
        return got


def main() -> None:
    print(
        "Prometheus CPU, ms per connections query: the whole cluster's, then each shard's"
        " (median of the shards) and all shards' together"
    )
    print(f"{'series':>8} {'query':>10} {'per query':>10} {'together':>9} {'share':>6}")
    for size in SIZES:
        started = time.perf_counter()
        got = measure(size)
        whole = got["whole"][0]
        for name, costs in got.items():
            median = sorted(costs)[len(costs) // 2]
            together = sum(costs)
            print(
                f"{size:>8} {name:>10} {median * 1000:>10.1f} {together * 1000:>9.1f}"
                f" {median / whole if whole else float('inf'):>6.2f}",
                flush=True,
            )
        print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
