"""Benchmark: plan() over 2,000 apps x 5 colors (10,000 Deployments); target <= 25 ms median.

Prints numbers, asserts nothing: `python -m tests.bench` runs it with the other benchmarks.
"""

from __future__ import annotations

import gc
import statistics
import time
from datetime import UTC, datetime, timedelta

from rainbowd.core.model import (
    DRAINED_SINCE,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    RETIRED_AT,
    Condition,
    Connections,
    Deployment,
    Namespace,
    Service,
    Snapshot,
)
from rainbowd.core.objects import format_time
from rainbowd.core.planner import plan
from rainbowd.core.policy import (
    ConnectionsQuery,
    Knobs,
    Operator,
    Policy,
    Requirement,
    Rule,
    Selector,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
APPS = 2000
COLORS = 5
NAMESPACES = 20
RUNS = 30
AVAILABLE = (
    Condition("Available", "True"),
    Condition("Progressing", "True", "NewReplicaSetAvailable"),
)


def _deployment(ns: str, app: str, i: int, color: str, **kw: object) -> Deployment:
    fields: dict[str, object] = {
        "namespace": ns,
        "name": f"{app}-{color}",
        "uid": f"uid-{ns}-{app}-{color}",
        "resource_version": str(1000 + i),
        "labels": {"app": app, "tier": "ws", "team": "chat"},
        "template_labels": {"app": app, "color": color, "tier": "ws"},
        "replicas": 3,
        "ready_replicas": 3,
        "available_replicas": 3,
        "conditions": AVAILABLE,
    }
    fields.update(kw)
    return Deployment(**fields)  # type: ignore[arg-type]


def build_snapshot() -> Snapshot:
    """Most apps steady (live + draining + scaled-down), some holding connections, a few
    drained, a few with unknown connections, a few just switched (not stamped yet)."""
    per_ns: dict[str, tuple[list[Deployment], list[Service], dict[tuple[str, str], Connections]]]
    per_ns = {f"team-{n:02d}": ([], [], {}) for n in range(NAMESPACES)}
    names = list(per_ns)
    for a in range(APPS):
        ns = names[a % NAMESPACES]
        deployments, services, connections = per_ns[ns]
        app = f"chat-{a:04d}"
        colors = [f"{(a * COLORS + c) * 2654435761 % 0xFFFFFF:06x}" for c in range(COLORS)]
        services.append(Service(ns, app, {"app": app, "color": colors[0]}))
        base = NOW - (100 + a % 50) * H
        switched = a % 100 == 7  # just deployed: stamps to write this cycle
        for c, color in enumerate(colors):
            created = base + (COLORS - c) * 10 * H  # colors[0] newest
            live_at = format_time(created + H)
            retired_at = format_time(NOW - (2 + c * 10) * H)
            if c == 0:
                ann = {} if switched else {LIVE_AT: live_at}
                d = _deployment(ns, app, c, color, created_at=created, annotations=ann)
                connections[(app, color)] = Connections(value=120.0, series=3)
            elif c == 1:
                ann = {LIVE_AT: live_at} if switched else {LIVE_AT: live_at, RETIRED_AT: retired_at}
                d = _deployment(ns, app, c, color, created_at=created, annotations=ann)
                connections[(app, color)] = Connections(value=float(40 + a % 7), series=3)
            elif c == 2 and a % 10 == 3:
                # drained this cycle
                ann = {
                    LIVE_AT: live_at,
                    RETIRED_AT: retired_at,
                    DRAINED_SINCE: format_time(NOW - H),
                }
                d = _deployment(ns, app, c, color, created_at=created, annotations=ann)
                connections[(app, color)] = Connections(value=0.0, series=3)
            elif c == 2 and a % 10 == 5:
                # Prometheus lost this color's series
                ann = {LIVE_AT: live_at, RETIRED_AT: retired_at}
                d = _deployment(ns, app, c, color, created_at=created, annotations=ann)
            elif c == 2:
                ann = {LIVE_AT: live_at, RETIRED_AT: retired_at}
                d = _deployment(ns, app, c, color, created_at=created, annotations=ann)
                connections[(app, color)] = Connections(value=float(3 + a % 5), series=3)
            else:
                ann = {LIVE_AT: live_at, RETIRED_AT: retired_at, ORIGINAL_REPLICAS: "3"}
                d = _deployment(
                    ns,
                    app,
                    c,
                    color,
                    created_at=created,
                    annotations=ann,
                    replicas=0,
                    ready_replicas=0,
                    available_replicas=0,
                )
            deployments.append(d)
    return Snapshot(
        now=NOW,
        namespaces={ns: Namespace(ns, tuple(d), tuple(s), c) for ns, (d, s, c) in per_ns.items()},
    )


def build_policy() -> Policy:
    knobs = Knobs(connection_floor=2, max_colors=4, keep_scaled_down=2)
    ws = Selector((Requirement("tier", Operator.IN, frozenset({"ws"})),), "tier=ws")
    return Policy(
        rules=(
            Rule("legacy", Knobs(), ConnectionsQuery(), frozenset({"legacy"})),
            Rule("websockets", knobs, ConnectionsQuery(), None, ws),
        )
    )


def main() -> None:
    snapshot = build_snapshot()
    policy = build_policy()
    deployments = sum(len(ns.deployments) for ns in snapshot.namespaces.values())
    gc.collect()
    start = time.perf_counter()
    result = plan(snapshot, policy, NOW)
    cold = time.perf_counter() - start
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        plan(snapshot, policy, NOW)
        times.append(time.perf_counter() - start)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    kinds: dict[str, int] = {}
    for action in result.actions:
        kinds[f"{action.kind}/{action.reason}"] = kinds.get(f"{action.kind}/{action.reason}", 0) + 1
    print(
        f"planner: {len(result.apps)} apps, {deployments} Deployments, "
        f"{len(result.actions)} actions ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})"
    )
    print(
        f"planner: plan() median {statistics.median(times) * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms, min {times[0] * 1000:.1f} ms over {RUNS} runs "
        f"(first run {cold * 1000:.1f} ms; target: median <= 25 ms)"
    )


if __name__ == "__main__":
    main()
