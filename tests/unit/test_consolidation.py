"""Table tests of consolidation (rainbowd/core/consolidation.py): which pods a step removes and
the deletion costs that make the ReplicaSet controller remove exactly those; when a color is due
a step, when it is not yet (and when that changes), and why it cannot be (never a guess). The
per-pod answer from Prometheus (rainbowd/prom/pods.py) and its join with the pod watch too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rainbowd.core.consolidation import (
    KEEP_COST,
    NOT_ASKED,
    Consolidation,
    decide_consolidation,
    needs_pods,
    pod_step,
)
from rainbowd.core.model import (
    CONSOLIDATED_AT,
    CONSOLIDATED_FROM,
    RETIRED_AT,
    STEPPED_DOWN_AT,
    Connections,
    Deployment,
    PodConnections,
    Reason,
    Service,
)
from rainbowd.core.notes import IdlePods
from rainbowd.core.policy import ConnectionsQuery, Consolidate, Knobs, Policy, StepDown
from rainbowd.core.reporting import render_why
from rainbowd.core.snapshots import SnapshotError, snapshot_from_document, snapshot_to_document
from rainbowd.daemon.consolidating import (
    COST_RETRY,
    ByQuery,
    RetiredColors,
    Retries,
    candidates,
    costed,
    join,
    retired_colors,
)
from rainbowd.kube.caching import PodMark
from rainbowd.prom.pods import PodSeries, group_pods, pods_expr
from rainbowd.prom.querying import QueryResult, Sample, Vector
from tests.unit.strategies import APP, NOW, H, ago, deployment, rule, service, stamp

M = timedelta(minutes=1)
KNOBS = Knobs(consolidate=Consolidate(after=30 * M, every=5 * M, keep_pods=1))
STEPPING = Knobs(
    consolidate=Consolidate(after=30 * M, every=5 * M, keep_pods=1),
    step_down=StepDown(every=60 * M, max_pods=1),
)
NOW_STAMP = "2026-11-21T12:00:00Z"


# --- which pods go --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("figures", "keep", "beyond", "removed", "replicas"),
    [
        # The must-show case: 4 pods, 2 hold connections: the 2 idle ones go.
        ({"a": 5, "b": 3, "c": 0, "d": 0}, 1, 0, ("c", "d"), 2),
        # Never below keepPods: one idle pod stays.
        ({"a": 5, "b": 3, "c": 0, "d": 0}, 3, 0, ("c",), 3),
        ({"a": 5, "b": 0}, 2, 0, None, None),
        # Unknown counts as busy: never removed, and it keeps its place.
        ({"a": None, "b": 0, "c": 0}, 1, 0, ("b", "c"), 1),
        ({"a": None, "b": None}, 1, 0, None, None),
        # No idle pod: nothing without stepDown.
        ({"a": 5, "b": 3}, 1, 0, None, None),
        # stepDown: the least-connected pod, never an unknown one, never below keepPods.
        ({"a": 5, "b": 3}, 1, 1, ("b",), 1),
        ({"a": 5, "b": 3, "c": 9}, 1, 2, ("b", "a"), 1),
        ({"a": None, "b": 3}, 1, 1, ("b",), 1),
        ({"a": None, "b": None}, 1, 1, None, None),
        ({"a": 5, "b": 3}, 2, 1, None, None),
        # Every idle pod, then as many busy ones as stepDown allows.
        ({"a": 5, "b": 3, "c": 0}, 1, 1, ("c", "b"), 1),
    ],
)
def test_a_step_removes_idle_pods_then_the_least_connected(
    figures: dict[str, float | None],
    keep: int,
    beyond: int,
    removed: tuple[str, ...] | None,
    replicas: int | None,
) -> None:
    step = pod_step(figures, keep_pods=keep, beyond_idle=beyond)
    if removed is None:
        assert step is None
        return
    assert step is not None
    assert step.removed == removed
    assert step.replicas == replicas
    assert step.stepped == sum(1 for name in removed if figures[name] != 0)
    # The controller removes lowest cost first: every removed pod ranks below every kept one.
    kept = [name for name in figures if name not in removed]
    assert max(step.costs[n] for n in removed) < min(step.costs[n] for n in kept)
    for name, value in figures.items():
        if value is None:
            assert step.costs[name] == KEEP_COST
        elif name in removed:
            assert step.costs[name] == value


def test_costs_are_whole_connections_rounded_up_and_bounded() -> None:
    step = pod_step({"a": 2.2, "b": 0.0, "c": 1e12}, keep_pods=1)
    assert step is not None
    assert step.costs == {"a": 3, "b": 0, "c": KEEP_COST - 1}


# --- when a color is due --------------------------------------------------------------------


def decide(
    *,
    retired: timedelta = 40 * M,
    replicas: int = 4,
    connections: float | None = 5,
    pods: PodConnections | None = None,
    annotations: dict[str, str] | None = None,
    knobs: Knobs = KNOBS,
) -> Consolidation:
    d = deployment("c0c0c0", replicas=replicas, annotations=annotations)
    conns = Connections(value=connections, series=replicas) if connections is not None else None
    return decide_consolidation(
        NOW,
        d,
        knobs=knobs,
        retired_at=ago(retired),
        connections=conns or Connections.unknown("prometheus timed out after 10s"),
        pods=pods,
        stamp=NOW_STAMP,
    )


FOUR = PodConnections(pods={"p-a": 4, "p-b": 1, "p-c": 0, "p-d": 0})


def test_a_due_color_steps_with_its_record() -> None:
    decided = decide(pods=FOUR)
    assert decided.step is not None
    assert decided.step.removed == ("p-c", "p-d")
    assert decided.reason is Reason.IDLE_PODS
    assert decided.stamps == (
        (CONSOLIDATED_AT, NOW_STAMP),
        (CONSOLIDATED_FROM, "4"),
    )
    assert decided.why == IdlePods(
        pods=4, idle=2, to=2, keep=1, removed=(("p-c", 0.0), ("p-d", 0.0))
    )
    assert render_why([decided.why], NOW) == (
        "2 of 4 pods hold no connections: 4 -> 2 pods (keepPods 1), removing p-c (0), p-d (0)"
    )


@pytest.mark.parametrize(
    ("case", "kwargs", "changes_at", "unavailable"),
    [
        ("no consolidate", {"knobs": Knobs()}, None, None),
        ("at keepPods", {"replicas": 1, "pods": FOUR}, None, None),
        ("at the floor: the drain's business", {"connections": 0, "pods": FOUR}, None, None),
        ("retired too recently", {"retired": 10 * M, "pods": FOUR}, NOW + 20 * M, None),
        (
            "connections unknown",
            {"connections": None},
            None,
            "connections unknown (prometheus timed out after 10s)",
        ),
        (
            "stepped 2m ago",
            {"annotations": {CONSOLIDATED_AT: stamp(2 * M), CONSOLIDATED_FROM: "6"}},
            NOW + 3 * M,
            None,
        ),
        (
            "no per-pod figures asked",
            {},
            None,
            NOT_ASKED,
        ),
        (
            "series without the pod label",
            {"pods": PodConnections(unavailable='3 of its series have no "pod" label')},
            None,
            '3 of its series have no "pod" label',
        ),
        (
            "pods and replicas differ",
            {"pods": PodConnections(pods={"p-a": 4, "p-b": 0, "p-c": 0})},
            None,
            "3 ready pods for 4 replicas: waiting for them to match",
        ),
        (
            "a garbled record",
            {"annotations": {CONSOLIDATED_AT: "yesterday"}, "pods": FOUR},
            None,
            "rainbowd.io/consolidated-at 'yesterday' is not an RFC 3339 time (fix or remove it)",
        ),
    ],
)
def test_no_step(
    case: str, kwargs: dict[str, object], changes_at: object, unavailable: str | None
) -> None:
    decided = decide(**kwargs)  # type: ignore[arg-type]
    assert decided.step is None, case
    assert decided.recheck_at == changes_at, case
    assert decided.unavailable == unavailable, case


def test_the_next_step_comes_every_after_the_last_one() -> None:
    done = {CONSOLIDATED_AT: stamp(6 * M), CONSOLIDATED_FROM: "6"}
    decided = decide(annotations=done, pods=FOUR)
    assert decided.step is not None


def test_a_step_cut_short_is_taken_again_at_once_not_every_later() -> None:
    # The record was written, the /scale never made (replicas still the "from"): a restart
    # neither repeats a step nor skips one.
    cut_short = {CONSOLIDATED_AT: stamp(1 * M), CONSOLIDATED_FROM: "4"}
    decided = decide(annotations=cut_short, pods=FOUR)
    assert decided.step is not None
    assert decided.step.replicas == 2


def test_a_record_naming_the_replicas_never_retakes_a_step_down_early() -> None:
    # The record cannot tell a step cut short by a crash from a person scaling the color back
    # up to what it was: only a step of idle pods is retaken before `every` ends.
    busy = PodConnections(pods={"p-a": 4, "p-b": 1})
    record = {CONSOLIDATED_AT: stamp(1 * M), CONSOLIDATED_FROM: "2"}
    decided = decide(replicas=2, pods=busy, knobs=STEPPING, annotations=record)
    assert decided.step is None
    assert decided.recheck_at is not None and decided.recheck_at > NOW
    assert decide(replicas=2, pods=busy, knobs=STEPPING).reason is Reason.STEP_DOWN


def test_step_down_only_without_idle_pods_and_every_its_own_interval() -> None:
    busy = PodConnections(pods={"p-a": 4, "p-b": 1})
    decided = decide(replicas=2, pods=busy, knobs=STEPPING)
    assert decided.reason is Reason.STEP_DOWN
    assert decided.step is not None
    assert decided.step.removed == ("p-b",)
    assert (STEPPED_DOWN_AT, NOW_STAMP) in decided.stamps
    recent = {STEPPED_DOWN_AT: stamp(20 * M)}
    held = decide(replicas=2, pods=busy, knobs=STEPPING, annotations=recent)
    assert held.step is None
    assert held.recheck_at == NOW + 40 * M
    # Idle pods first, and without stepDown no busy pod ever.
    assert decide(pods=FOUR, knobs=STEPPING).reason is Reason.IDLE_PODS
    assert decide(replicas=2, pods=busy).step is None


@pytest.mark.parametrize("value", ["yesterday", "", "2026-11-21T11:00:00"])
def test_a_garbled_step_down_record_holds_step_downs_not_idle_steps(value: str) -> None:
    busy = PodConnections(pods={"p-a": 4, "p-b": 1})
    garbled = {STEPPED_DOWN_AT: value}
    held = decide(replicas=2, pods=busy, knobs=STEPPING, annotations=garbled)
    assert held.step is None
    assert held.unavailable == (
        f"rainbowd.io/stepped-down-at {value!r} is not an RFC 3339 time (fix or remove it)"
    )
    # Idle pods disconnect nobody: they still go.
    assert decide(pods=FOUR, knobs=STEPPING, annotations=garbled).reason is Reason.IDLE_PODS


def test_per_pod_figures_are_asked_for_only_when_a_step_is_due() -> None:
    d = deployment("c0c0c0", replicas=4)
    known = Connections(value=5, series=4)
    assert needs_pods(NOW, d, knobs=KNOBS, retired_at=ago(40 * M), connections=known)
    assert not needs_pods(NOW, d, knobs=KNOBS, retired_at=ago(10 * M), connections=known)
    assert not needs_pods(NOW, d, knobs=Knobs(), retired_at=ago(40 * M), connections=known)
    zero = Connections(value=0, series=4)
    assert not needs_pods(NOW, d, knobs=KNOBS, retired_at=ago(40 * M), connections=zero)


# --- the per-pod answer ---------------------------------------------------------------------


def sample(pod: str | None, value: float, color: str = "c0c0c0", **extra: str) -> Sample:
    labels = {"namespace": "ns", "app": "chat", "color": color, **extra}
    if pod is not None:
        labels["pod"] = pod
    return Sample(labels=labels, value=value)


KEY = ("ns", "chat", "c0c0c0")


def test_the_per_pod_query_narrows_the_rule_selector_to_the_colors() -> None:
    query = ConnectionsQuery(matchers='job="chat"')
    expr = pods_expr(query, [KEY, ("ns", "chat", "v1.2"), ("other", "ws", "c0c0c0")])
    assert expr == (
        'rainbow_open_connections{job="chat", namespace=~"ns|other", app=~"chat|ws", '
        'color=~"c0c0c0|v1\\\\.2"}'
    )


def test_per_pod_series_are_summed_per_pod_and_bad_values_are_unknown() -> None:
    vector = Vector(
        samples=(
            sample("p-a", 3, job="a"),
            sample("p-a", 2, job="b"),  # one pod scraped twice: summed
            sample("p-b", 0),
            sample("p-c", float("nan")),
            sample("p-d", -1),
            sample("p-x", 9, color="other"),  # not asked for
        )
    )
    assert group_pods(ConnectionsQuery(), vector, [KEY]) == {
        KEY: PodSeries(pods={"p-a": 5, "p-b": 0, "p-c": None, "p-d": None})
    }


def test_a_color_whose_series_lack_the_pod_label_is_unavailable() -> None:
    vector = Vector(samples=(sample("p-a", 3), sample(None, 0, instance="10.0.0.1:8080")))
    [(_, found)] = group_pods(ConnectionsQuery(), vector, [KEY]).items()
    assert (
        found.unavailable == '1 of its series have no "pod" label, so its pods cannot be told apart'
    )
    other = ConnectionsQuery(pod_label="kubernetes_pod_name")
    [(_, found)] = group_pods(other, Vector(samples=(sample("p-a", 3),)), [KEY]).items()
    assert found.unavailable is not None and '"kubernetes_pod_name"' in found.unavailable


def pod(name: str, *, ready: bool = True) -> PodMark:
    return PodMark(namespace="ns", name=name, app="chat", color="c0c0c0", phase=None, ready=ready)


def test_the_pods_kubernetes_lists_decide_and_a_pod_without_series_is_unknown() -> None:
    series = PodSeries(pods={"p-a": 3, "p-b": 0, "p-gone": 0})
    joined = join(series, [pod("p-a"), pod("p-b"), pod("p-new")])
    assert joined == PodConnections(pods={"p-a": 3, "p-b": 0, "p-new": None})
    assert join(series, None).unavailable == "the colors' pods are not listed yet"
    starting = join(series, [pod("p-a"), pod("p-b", ready=False)])
    assert (
        starting.unavailable is not None and "p-b is not running and ready" in starting.unavailable
    )
    assert join(PodSeries(unavailable="why"), [pod("p-a")]) == PodConnections(unavailable="why")


# --- snapshot files -------------------------------------------------------------------------


def test_a_snapshot_file_carries_each_colors_pods_and_reads_back_equal() -> None:
    entry = {"namespace": "ns", "app": "chat", "color": "c0c0c0", "value": 3, "series": 3}
    document = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [],
        "connections": [{**entry, "pods": {"p-a": 3, "p-b": 0, "p-c": None}}],
    }
    snap = snapshot_from_document(document, default_now=NOW)
    assert snap.pods_for("ns", "chat", "c0c0c0") == PodConnections(
        pods={"p-a": 3, "p-b": 0, "p-c": None}
    )
    assert snapshot_from_document(snapshot_to_document(snap), default_now=NOW) == snap
    bad = {**document, "connections": [{**entry, "pods": {"p-a": -1, "p-b": "many"}}]}
    with pytest.raises(SnapshotError) as caught:
        snapshot_from_document(bad, default_now=NOW)
    assert caught.value.errors == [
        "connections[0].pods.p-a: expected a non-negative number, got -1",
        "connections[0].pods.p-b: expected a number, null or NaN, got 'many'",
    ]


def test_a_far_future_stamp_holds_consolidation_without_overflowing() -> None:
    forever = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    d = deployment("c0c0c0", replicas=4, annotations={CONSOLIDATED_AT: "9999-12-31T23:59:00Z"})
    known = Connections(value=5, series=4)
    for retired_at in (forever, ago(H)):
        decided = decide_consolidation(
            NOW, d, knobs=KNOBS, retired_at=retired_at, connections=known, pods=FOUR, stamp=""
        )
        assert decided.step is None
        assert decided.recheck_at == datetime.max.replace(tzinfo=UTC)


def test_per_pod_figures_are_asked_for_the_retired_colors_due_a_step_only() -> None:
    query = ConnectionsQuery()
    due = {RETIRED_AT: stamp(40 * M)}
    deployments = {
        "ns": [
            # Live (some Service selects it) though stamped retired: never.
            deployment("0live0", namespace="ns", replicas=4, annotations=due),
            deployment("0due00", namespace="ns", replicas=4, annotations=due),
            deployment("0young", namespace="ns", replicas=4, annotations={RETIRED_AT: stamp(M)}),
            deployment("00zero", namespace="ns", replicas=4, annotations=due),
            deployment("0nostp", namespace="ns", replicas=4),
        ]
    }
    services = {"ns": [service({"app": APP, "color": "0live0"}, namespace="ns")]}
    counts = {(c, 0.0 if c == "00zero" else 5.0) for c in ("0live0", "0due00", "0young", "00zero")}
    result = QueryResult(
        query=query,
        at=NOW,
        by_color={("ns", APP, c): Connections(value=v, series=4) for c, v in counts},
    )
    r = rule(consolidate=KNOBS.consolidate)
    retired = retired_colors(Policy(rules=(r,)), deployments, services, rule_of=lambda ns, d: r)
    wanted = candidates(retired, {query: result}, now=NOW)
    assert wanted == {query: {("ns", APP, "0due00"): 5 * M}}


def test_per_pod_figures_are_asked_for_every_draining_color_for_its_deletion_costs() -> None:
    # Whatever the rule's consolidation (none here, or one not due yet): a retired color still
    # holding connections, with pods to choose from, not live.
    query = ConnectionsQuery()
    due = {RETIRED_AT: stamp(40 * M)}
    deployments = {
        "ns": [
            deployment("0live0", namespace="ns", replicas=4, annotations=due),
            deployment("0drain", namespace="ns", replicas=4, annotations=due),
            deployment("0young", namespace="ns", replicas=4, annotations={RETIRED_AT: stamp(M)}),
            deployment("00zero", namespace="ns", replicas=4, annotations=due),
            deployment("0onepd", namespace="ns", replicas=1, annotations=due),
            deployment("0nostp", namespace="ns", replicas=4),
        ]
    }
    services = {"ns": [service({"app": APP, "color": "0live0"}, namespace="ns")]}
    colors = ("0live0", "0drain", "0young", "00zero", "0onepd", "0nostp")
    result = QueryResult(
        query=query,
        at=NOW,
        by_color={
            ("ns", APP, c): Connections(value=0.0 if c == "00zero" else 5.0, series=4)
            for c in colors
        },
    )
    drained = {("ns", APP, "0drain"), ("ns", APP, "0young")}
    for r, retry in ((rule(), COST_RETRY), (rule(consolidate=KNOBS.consolidate), 5 * M)):
        retired = retired_colors(
            Policy(rules=(r,)),
            deployments,
            services,
            rule_of=lambda ns, d, r=r: r,  # type: ignore[misc]
        )
        wanted = costed(retired, {query: result}, now=NOW)
        assert wanted == {query: dict.fromkeys(drained, retry)}


def test_the_retired_colors_kept_across_cycles_are_those_a_fresh_scan_finds() -> None:
    # `RetiredColors` keeps a namespace's retired colors while its Deployments, its Services and
    # the policy are the same objects; whatever changed, it answers as a fresh scan does.
    due = {RETIRED_AT: stamp(40 * M)}
    deployments = {
        ns: [deployment(c, namespace=ns, replicas=4, annotations=due) for c in ("0drain", "0other")]
        + [deployment("00live", namespace=ns, replicas=4)]
        for ns in ("a", "b")
    }
    services = {ns: [service({"app": APP, "color": "00live"}, namespace=ns)] for ns in ("a", "b")}
    r = rule()
    policy = Policy(rules=(r,))
    memo = RetiredColors()

    def keys(found: list[ByQuery]) -> set[tuple[str, str, str]]:
        return {c.key for by_query in found for colors in by_query.values() for c in colors}

    def scan(
        policy: Policy, deployments: dict[str, list[Deployment]], services: dict[str, list[Service]]
    ) -> set[tuple[str, str, str]]:
        kept = memo.scan(policy, deployments, services, rule_of=lambda ns, d: r)
        fresh = retired_colors(policy, deployments, services, rule_of=lambda ns, d: r)
        assert kept == fresh
        return keys(kept)

    every = {(ns, APP, c) for ns in ("a", "b") for c in ("0drain", "0other")}
    assert scan(policy, deployments, services) == every
    first = memo.scan(policy, deployments, services, rule_of=lambda ns, d: r)
    again = memo.scan(policy, deployments, services, rule_of=lambda ns, d: r)
    assert all(a is b for a, b in zip(first, again, strict=True))  # kept, not scanned again
    # A Service of namespace a now selects 0drain: live there, never costed.
    services = {**services, "a": [*services["a"], service({"app": APP, "color": "0drain"})]}
    assert scan(policy, deployments, services) == every - {("a", APP, "0drain")}
    # 0other of namespace b scaled down to one pod (a new object, in a new list): no pods to
    # choose among.
    one = deployment("0other", namespace="b", replicas=1, annotations=due)
    deployments = {
        **deployments,
        "b": [one if d.name.endswith("0other") else d for d in deployments["b"]],
    }
    gone = every - {("a", APP, "0drain"), ("b", APP, "0other")}
    assert scan(policy, deployments, services) == gone
    # Another policy: scanned again (`scan` compares with a fresh scan).
    assert scan(Policy(rules=(r,)), deployments, services) == gone


def test_unavailable_figures_are_not_asked_for_again_before_every() -> None:
    retries = Retries()
    unlabelled = PodConnections(unavailable="no pod label")
    retries.record(KEY, unlabelled, NOW + 5 * M)
    retries.record(("ns", "chat", "other"), PodConnections(pods={"p": 1}), NOW + 5 * M)
    assert retries.pending(KEY, NOW + 4 * M) == unlabelled
    assert retries.pending(KEY, NOW + 5 * M) is None
    assert retries.pending(("ns", "chat", "other"), NOW) is None
    retries.keep(set())  # no longer due: forgotten
    assert retries.pending(KEY, NOW) is None
