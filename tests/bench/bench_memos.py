"""Benchmark: what each memo of the cache layer (rainbowd/core/memos.py) saves, at bench_planner's
2,000 apps x 5 colors (10,000 Deployments). Each line is the same work with the memo and
without it: a memo that saves nothing visible should go. Prints numbers, asserts nothing.

- rules: every Deployment's rule, as the snapshot and `plan()` ask for it each cycle: a kept
  `RuleMatcher` (RuleMemo) against `Policy.rule_for` on every Deployment.
- snapshot: the steady cycle's snapshot from the same objects: SnapshotMemo's second build
  against a fresh build.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

from rainbowd.core.memos import RuleMemo, SnapshotMemo, color_members
from rainbowd.core.model import Connections, Snapshot
from tests.bench.bench_planner import build_policy, build_snapshot

RUNS = 20


class _Answer:
    """A connections query's answer, as the Prometheus client gives it."""

    def __init__(self, by_color: Mapping[tuple[str, str, str], Connections]) -> None:
        self.by_color = by_color
        self.error: str | None = None

    def get(self, namespace: str, app: str, color: str) -> Connections:
        return self.by_color.get((namespace, app, color), Connections.unknown("no series"))


def _median_ms(work: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    snapshot = build_snapshot()
    policy = build_policy()
    deployments = {name: list(ns.deployments) for name, ns in snapshot.namespaces.items()}
    services = {name: list(ns.services) for name, ns in snapshot.namespaces.items()}
    by_color = {
        (name, app, color): conns
        for name, ns in snapshot.namespaces.items()
        for (app, color), conns in ns.connections.items()
    }
    count = sum(len(items) for items in deployments.values())

    def match(rule_for: Callable[[str, Mapping[str, str]], object]) -> None:
        for ns, items in deployments.items():
            for d in items:
                rule_for(ns, d.labels)

    memo = RuleMemo()
    memo.matcher(policy)  # the steady state: kept from the last cycle
    kept = _median_ms(lambda: match(memo.matcher(policy).rule_for))
    bare = _median_ms(lambda: match(policy.rule_for))
    print(
        f"memos: rules, {count:,} Deployments: kept RuleMatcher median {kept:.1f} ms, "
        f"Policy.rule_for each {bare:.1f} ms ({bare / kept:.1f}x)"
    )

    rules = RuleMemo()
    snapshots = SnapshotMemo()
    members = snapshots.members(policy, deployments, rules)
    queries = {rule.connections for rule in policy.rules}
    results = {query: _Answer(by_color) for query in queries}

    def build(memo: SnapshotMemo) -> Snapshot:
        return memo.build(snapshot.now, members, deployments, services, results)

    build(snapshots)
    steady = _median_ms(lambda: build(snapshots))
    fresh = _median_ms(
        lambda: SnapshotMemo().build(
            snapshot.now, color_members(policy, deployments), deployments, services, results
        )
    )
    print(
        f"memos: snapshot, {len(deployments)} namespaces: SnapshotMemo steady median "
        f"{steady:.2f} ms, built afresh {fresh:.1f} ms ({fresh / max(steady, 1e-6):.0f}x)"
    )


if __name__ == "__main__":
    main()
