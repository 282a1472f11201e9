"""A rainbowd managing some namespaces (a shard, `--namespaces`) asks Prometheus for their series
only: every selection its queries make carries a matcher naming them, whatever the query's
shape (summary, per-pod, recorded, the start-up range query); the recording rules still record
every namespace, and a free query, which rainbowd cannot narrow, is warned about."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from rainbowd.core.policy import (
    API_VERSION,
    KIND,
    PRESET_NAMES,
    ConnectionsQuery,
    Policy,
    narrowing_warnings,
    parse_policy,
)
from rainbowd.daemon.policies import PolicyState
from rainbowd.metrics import Metrics
from rainbowd.prom.querying import expression, recording_rules, summary_expr
from rainbowd.prom.ranges import range_expression

# Every selection of the raw or the recorded series in a PromQL text: `name{...}` or `{...}`.
SELECTIONS = re.compile(r"(?:[a-zA-Z_:][a-zA-Z0-9_:]*)?\{[^{}]*\}")


def policy(**connections: Any) -> Policy:
    return parse_policy(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "connections": connections or {"metric": "rainbow_open_connections"},
            "rules": [
                {"name": "chat", "namespaces": ["chat"]},
                {"name": "web", "connections": {"matchers": 'job="web"'}},
            ],
        }
    )


def selections(expr: str) -> list[str]:
    found = SELECTIONS.findall(expr)
    assert found, expr
    return found


def test_an_unnarrowed_policy_is_the_policy_as_written() -> None:
    whole = policy()
    assert whole.narrowed([]) is whole
    assert all(
        "namespace" not in s
        for query in whole.queries
        for s in selections(expression(query)) + selections(expression(query, per_pod=True))
    )


@pytest.mark.parametrize("names", [["team-a"], ["team-b", "team-a", "team-a"]])
def test_every_selection_of_a_narrowed_query_names_the_namespaces(names: list[str]) -> None:
    narrowed = policy().narrowed(names)
    matcher = 'namespace=~"team-a"' if len(set(names)) == 1 else 'namespace=~"team-a|team-b"'
    assert len(narrowed.queries) == 2  # the two rules' queries stay two, not more
    for query in narrowed.queries:
        for shape in (
            expression(query),
            expression(query, per_pod=True),
            range_expression(query),
        ):
            for selection in selections(shape):
                assert matcher in selection, (selection, shape)
    web = narrowed.rules[1].connections
    assert web.selector == f'rainbow_open_connections{{job="web", {matcher}}}'


def test_the_narrowing_uses_the_query_s_namespace_label() -> None:
    (query,) = (
        policy(
            metric="conns",
            labels={"namespace": "exported_namespace", "app": "app", "color": "color"},
        )
        .narrowed(["chat"])
        .queries[:1]
    )
    assert query.selector == 'conns{exported_namespace=~"chat"}'


def test_recorded_reads_are_narrowed_but_the_rules_record_every_namespace() -> None:
    recorded = policy(metric="rainbow_open_connections", source="recorded")
    narrowed = recorded.narrowed(["team-a"])
    (query,) = [q for q in narrowed.queries if q.recorded]  # the rule not overriding it
    for selection in selections(summary_expr(query)):
        assert 'namespace=~"team-a"' in selection, selection
    for query in recorded.queries:
        narrowed_query = next(q for q in narrowed.queries if q.matchers == query.matchers)
        assert recording_rules(narrowed_query) == recording_rules(query)


def test_a_free_query_is_sent_as_written_and_warned_about() -> None:
    free = policy(query="sum by (namespace, app, color) (my_connections)")
    narrowed = free.narrowed(["team-a"])
    assert narrowed.rules[0].connections == free.rules[0].connections
    assert expression(narrowed.rules[0].connections) == free.rules[0].connections.query
    warnings = narrowing_warnings(free, ["team-a"])
    assert warnings == [
        'rules[0] ("chat"): its connections query is free PromQL, sent as written, not narrowed'
        " to the namespaces managed (team-a): Prometheus evaluates it over every namespace"
    ]
    assert narrowing_warnings(free, []) == []
    assert narrowing_warnings(policy(), ["team-a"]) == []


def test_the_daemon_s_policy_in_force_is_narrowed_to_its_namespaces() -> None:
    state = PolicyState(source="test", metrics=Metrics(), namespaces=("team-a",))
    state.accept(policy())
    assert state.policy is not None
    assert {q.namespaces for q in state.policy.queries} == {("team-a",)}
    free = PolicyState(source="test", metrics=Metrics(), namespaces=("team-a",))
    free.accept(policy(query="sum by (namespace, app, color) (my_connections)"))
    assert any("not narrowed" in w for w in free.warnings)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_preset_narrows_every_selection_to_the_namespaces(preset: str) -> None:
    query = dataclasses.replace(ConnectionsQuery(preset=preset), namespaces=("team-a",))
    for shape in (expression(query), expression(query, per_pod=True)):
        for selection in selections(shape):
            assert 'namespace=~"team-a"' in selection, (preset, selection)
    unnarrowed = ConnectionsQuery(preset=preset)
    assert "team-a" not in expression(unnarrowed)
