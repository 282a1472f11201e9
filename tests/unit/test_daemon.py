"""The cycle's pure parts: snapshot building, the dry-run overlay, Prometheus error classes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from rainbowd.core.memos import RuleMemo, SnapshotMemo, color_members
from rainbowd.core.model import (
    NO_SERIES,
    RETIRED_AT,
    Connections,
    Deployment,
    PrometheusErrorCause,
    Service,
    Snapshot,
)
from rainbowd.core.policy import ConnectionsQuery, Policy
from rainbowd.daemon.cycles import (
    Pipeline,
    apply_overlay,
    queries_needed,
    query_failures,
)
from rainbowd.daemon.reconciling import warnings_to_report
from rainbowd.policyfile import load_policy_text
from rainbowd.prom.querying import (
    PrometheusError,
    PrometheusTimeout,
    PrometheusUnreachable,
    QueryResult,
    parse_response,
)

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)


def build_snapshot(
    *,
    now: datetime,
    policy: Policy,
    deployments: dict[str, list[Deployment]],
    services: dict[str, list[Service]],
    results: dict[ConnectionsQuery, QueryResult],
) -> Snapshot:
    """The snapshot the pipeline builds on its first cycle, from a fresh memo."""
    members = color_members(policy, deployments)
    return SnapshotMemo().build(now, members, deployments, services, results)


POLICY = load_policy_text(
    """\
apiVersion: rainbowd.io/v1alpha1
kind: DrainPolicy
rules:
  - name: chat
    namespaces: [chat]
    connections: {metric: chat_connections}
  - name: rest
    namespaces: [web]
""",
    source="test",
)


def deployment(namespace: str, color: str, *, uid: str = "", app: str = "app") -> Deployment:
    return Deployment(
        namespace=namespace,
        name=f"{app}-{color}",
        uid=uid or f"uid-{color}",
        resource_version="1",
        created_at=NOW - timedelta(days=1),
        labels={"app": app},
        template_labels={"app": app, "color": color},
        annotations={},
        replicas=1,
    )


def test_each_color_takes_connections_from_its_rules_query() -> None:
    chat_query = POLICY.rule_for("chat", {})
    web_query = POLICY.rule_for("web", {})
    assert chat_query is not None and web_query is not None
    deployments = {
        "chat": [deployment("chat", "aaaaaa")],
        "web": [deployment("web", "bbbbbb")],
        "other": [deployment("other", "cccccc")],
    }
    needed = queries_needed(POLICY, deployments)
    assert needed == [chat_query.connections, web_query.connections]
    results = {
        chat_query.connections: QueryResult(
            query=chat_query.connections,
            at=NOW,
            by_color={("chat", "app", "aaaaaa"): Connections(5, series=1)},
        ),
        web_query.connections: QueryResult(
            query=web_query.connections,
            at=NOW,
            error="prometheus timed out after 10s",
            error_cause=PrometheusErrorCause.TIMEOUT,
        ),
    }
    snapshot = build_snapshot(
        now=NOW,
        policy=POLICY,
        deployments=deployments,
        services={"web": [Service("web", "app", {"app": "app", "color": "bbbbbb"})]},
        results=results,
    )
    assert snapshot.connections_for("chat", "app", "aaaaaa") == Connections(5, series=1)
    web = snapshot.connections_for("web", "app", "bbbbbb")
    assert not web.known and "timed out" in web.cause
    # No rule matches `other`: no connections asked for, the color still in the snapshot.
    assert not snapshot.connections_for("other", "app", "cccccc").known
    assert [d.name for d in snapshot.namespaces["other"].deployments] == ["app-cccccc"]
    assert snapshot.namespaces["web"].services[0].name == "app"


def test_no_managed_deployment_means_no_query() -> None:
    assert queries_needed(POLICY, {"other": [deployment("other", "aaaaaa")]}) == []


def test_overlay_sets_and_removes_annotations_by_uid() -> None:
    stamped = deployment("chat", "aaaaaa", uid="u1")
    stamped = dataclasses.replace(stamped, annotations={"rainbowd.io/drained-since": "x"})
    other = deployment("chat", "bbbbbb", uid="u2")
    overlay = {"u1": {RETIRED_AT: "2026-05-06T07:00:00Z", "rainbowd.io/drained-since": None}}
    out = apply_overlay([stamped, other], overlay)
    assert dict(out[0].annotations) == {RETIRED_AT: "2026-05-06T07:00:00Z"}
    assert out[1] is other
    assert apply_overlay([other], {}) == [other]


@pytest.mark.parametrize(
    ("status", "body", "cause"),
    [
        (503, b"<html>busy</html>", PrometheusErrorCause.HTTP),
        (
            422,
            b'{"status":"error","errorType":"execution","error":"too many samples"}',
            PrometheusErrorCause.QUERY,
        ),
        (200, b"not json", PrometheusErrorCause.BAD_RESPONSE),
        (
            200,
            b'{"status":"success","data":{"resultType":"matrix","result":[]}}',
            PrometheusErrorCause.BAD_RESPONSE,
        ),
    ],
)
def test_error_classes_from_the_clients_own_messages(
    status: int, body: bytes, cause: PrometheusErrorCause
) -> None:
    with pytest.raises(PrometheusError) as caught:
        parse_response(status, body)
    assert caught.value.error_cause is cause


def test_error_classes_of_transport_failures() -> None:
    assert (
        PrometheusUnreachable("prometheus unreachable: connection refused").error_cause
        is PrometheusErrorCause.UNREACHABLE
    )
    assert (
        PrometheusTimeout("prometheus timed out after 10s").error_cause
        is PrometheusErrorCause.TIMEOUT
    )


def test_a_failed_query_reaches_the_cycle_with_its_class_and_message() -> None:
    query = POLICY.rules[0].connections
    failed = QueryResult(
        query=query,
        at=NOW,
        error="prometheus unreachable: connection refused",
        error_cause=PrometheusErrorCause.UNREACHABLE,
    )
    ok = QueryResult(query=POLICY.rules[1].connections, at=NOW)
    (failure,) = query_failures({query: failed, POLICY.rules[1].connections: ok})
    assert failure.cause is PrometheusErrorCause.UNREACHABLE
    assert failure.message == "prometheus unreachable: connection refused"
    assert failure.query == query.selector
    with pytest.raises(ValueError, match="error_cause"):
        QueryResult(query=query, at=NOW, error="a failure without its class")


def test_the_rule_memo_answers_as_the_policy_does_and_forgets_what_changed() -> None:
    chat, web = deployment("chat", "aaaaaa"), deployment("web", "bbbbbb")
    memo = RuleMemo()
    rule_of = memo.matcher(POLICY).rule_of
    assert rule_of("chat", chat) is POLICY.rule_for("chat", chat.labels)
    assert rule_of("web", web) is POLICY.rule_for("web", web.labels)
    # Next cycle: the same objects keep their rule; a changed object (new labels) is matched
    # again, and so is everything under another policy.
    relabelled = dataclasses.replace(chat, labels={"app": "app", "tier": "x"})
    rule_of = memo.matcher(POLICY).rule_of
    assert rule_of("chat", chat) is POLICY.rule_for("chat", chat.labels)
    assert rule_of("web", relabelled) is POLICY.rule_for("web", relabelled.labels)
    other = load_policy_text(
        "apiVersion: rainbowd.io/v1alpha1\nkind: DrainPolicy\nrules:\n  - name: all\n",
        source="test",
    )
    rule_of = memo.matcher(other).rule_of
    found = rule_of("chat", chat)
    assert found is not None and found.name == "all"


def test_the_snapshot_is_rebuilt_only_where_something_changed() -> None:
    rule = POLICY.rule_for("chat", {})
    assert rule is not None
    query = rule.connections
    deployments = {"chat": [deployment("chat", "aaaaaa")], "web": [deployment("web", "bbbbbb")]}
    services = {"chat": [Service("chat", "app", {"app": "app", "color": "aaaaaa"})]}

    def answer(value: float) -> dict[ConnectionsQuery, QueryResult]:
        by_color = {("chat", "app", "aaaaaa"): Connections(value, series=1)}
        return {query: QueryResult(query=query, at=NOW, by_color=by_color)}

    memo, rules = SnapshotMemo(), RuleMemo()
    members = memo.members(POLICY, deployments, rules)
    assert memo.members(POLICY, deployments, rules) is members
    results = answer(5)
    first = memo.build(NOW, members, deployments, services, results)
    same = memo.build(NOW + timedelta(seconds=30), members, deployments, services, results)
    assert same.now == NOW + timedelta(seconds=30)
    assert all(same.namespaces[ns] is first.namespaces[ns] for ns in ("chat", "web"))
    # New figures (a new mapping from the client) rebuild the namespaces that read them.
    moved = memo.build(NOW, members, deployments, services, answer(6))
    assert moved.connections_for("chat", "app", "aaaaaa") == Connections(6, series=1)
    # A changed Deployment list rebuilds its namespace, the rules with it; the others stay.
    changed = {**deployments, "chat": [deployment("chat", "aaaaaa"), deployment("chat", "cccccc")]}
    members = memo.members(POLICY, changed, rules)
    again = memo.build(NOW, members, changed, services, results)
    assert [d.name for d in again.namespaces["chat"].deployments] == ["app-aaaaaa", "app-cccccc"]
    assert again.connections_for("chat", "app", "cccccc") == NO_SERIES
    assert again == build_snapshot(
        now=NOW, policy=POLICY, deployments=changed, services=services, results=results
    )


def test_the_dry_run_overlay_hands_out_the_same_objects_until_it_changes() -> None:
    pipeline = Pipeline(None, dry_run=True)  # type: ignore[arg-type]
    a, b = deployment("chat", "aaaaaa", uid="u1"), deployment("chat", "bbbbbb", uid="u2")
    deployments = {"chat": [a, b]}
    pipeline.overlay["u1"] = {RETIRED_AT: "2026-05-06T07:00:00Z"}
    first = pipeline._overlaid(deployments)
    assert first["chat"][0].annotations == {RETIRED_AT: "2026-05-06T07:00:00Z"}
    assert first["chat"][1] is b
    assert pipeline._overlaid(deployments) is first
    # The cache's objects change (a new list, one new object): the unchanged overlay is kept.
    b2 = dataclasses.replace(b, resource_version="2")
    second = pipeline._overlaid({"chat": [a, b2]})
    assert second["chat"][0] is first["chat"][0]
    assert second["chat"][1] is b2
    # A Deployment gone from the cache leaves the overlay.
    assert pipeline._overlaid({"chat": [b2]}) == {"chat": [b2]}
    assert "u1" not in pipeline.overlay


def test_annotation_warnings_are_reported_once_while_they_last_and_in_bounded_batches() -> None:
    warnings = [f"ns/app-{i:06x}: hold-until 'tomorrow' is not an RFC 3339 time" for i in range(5)]
    new, reported = warnings_to_report(warnings, frozenset(), cap=2)
    assert new == warnings[:2]
    # The rest come over the next cycles, none twice.
    new, reported = warnings_to_report(warnings, reported, cap=2)
    assert new == warnings[2:4]
    new, reported = warnings_to_report(warnings, reported, cap=2)
    assert new == warnings[4:]
    new, reported = warnings_to_report(warnings, reported, cap=2)
    assert new == []
    # A warning that went away (fixed) and came back (broken again) is reported again.
    new, reported = warnings_to_report(warnings[1:], reported, cap=2)
    assert new == [] and warnings[0] not in reported
    new, reported = warnings_to_report(warnings, reported, cap=2)
    assert new == [warnings[0]]
