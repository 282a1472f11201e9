"""The /status document: one casing, written by one function and read back by one function."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rainbowd.core.forecast import ColorForecast, Forecast, Method
from rainbowd.core.model import AppPlan, ColorPlan, Connections, Plan, PrometheusErrorCause, State
from rainbowd.core.policy import policy_to_document
from rainbowd.core.reporting import render_plan_table
from rainbowd.policyfile import load_policy_file
from rainbowd.settings import Settings
from rainbowd.status import (
    CacheStatus,
    CycleStatus,
    HistoryStatus,
    PolicyStatus,
    PrometheusFailure,
    SnapshotSummary,
    Status,
    find_color,
    status_from_document,
    status_to_document,
)

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def sample_status() -> Status:
    policy = load_policy_file("config/policy.yaml")
    color = ColorPlan(
        namespace="chat",
        app="chat",
        color="3c3fdc",
        name="chat-3c3fdc",
        state=State.DRAINING,
        rule="chat",
        replicas=2,
        ready_replicas=2,
        connections=Connections(4, series=2),
        created_at=NOW - timedelta(days=1),
        retired_at=NOW - timedelta(hours=1, seconds=5),
        drained_since=None,
        note="draining: 4 connections > floor 0",
    )
    plan = Plan(
        now=NOW,
        apps=(AppPlan("chat", "chat", "chat", None, "", (color,)),),
    )
    return Status(
        identity="rainbowd-0",
        leader=True,
        ready=True,
        settings=Settings(identity="rainbowd-0", dry_run=True).summary(),
        dry_run_overlay=3,
        policy=PolicyStatus(
            source="configmap:ops/rainbowd-policy",
            valid=False,
            errors=("rules[0].maxColors: must be >= 1, got 0",),
            warnings=("a warning",),
            loaded_at=NOW - timedelta(minutes=5),
            policy=policy_to_document(policy),
        ),
        cache=CacheStatus(synced=True, deployments=4, services=1, relists=2, watch_events=17),
        cycle=CycleStatus(
            number=12,
            started_at=NOW,
            duration=0.0125,
            ok=True,
            leader=True,
            acted=False,
            actions={"skipped": 1},
            prometheus_errors=(
                PrometheusFailure(
                    query="rainbow_open_connections",
                    cause=PrometheusErrorCause.TIMEOUT,
                    message="prometheus timed out after 10s",
                ),
            ),
        ),
        snapshot=SnapshotSummary(
            now=NOW,
            namespaces=1,
            deployments=4,
            services=1,
            connections_known=3,
            connections_unknown=1,
        ),
        plan=plan,
        history=HistoryStatus(window_seconds=21600.0, colors=1, points=2),
        forecasts={
            ("chat", "chat", "3c3fdc"): ColorForecast(
                forecast=Forecast(
                    now=NOW.timestamp(), points=9, eta=NOW.timestamp() + 600, method=Method.LINEAR
                ),
                floor=0,
                deadline=None,
            )
        },
        sparklines={
            ("chat", "chat", "3c3fdc"): ((NOW.timestamp() - 60, 5.0), (NOW.timestamp(), 4.0))
        },
    )


def keys(value: Any, path: str = "") -> Iterator[str]:
    """Every key of every mapping in a JSON document, with its path."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}"
            yield from keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from keys(item, f"{path}[{i}]")


def test_every_key_is_camel_case() -> None:
    document = status_to_document(sample_status())
    snake = [k for k in keys(document) if "_" in k.rsplit(".", 1)[-1]]
    assert snake == []
    assert document["settings"]["dryRun"] is True
    assert document["cycle"]["prometheusErrors"][0]["cause"] == "timeout"


def test_the_reader_gives_back_what_the_writer_wrote() -> None:
    status = sample_status()
    read = status_from_document(json.loads(json.dumps(status_to_document(status))))
    assert read.identity == status.identity and read.leader and read.ready
    assert read.policy.source == status.policy.source and not read.policy.valid
    assert read.policy.errors == status.policy.errors
    assert read.policy.loaded_at == status.policy.loaded_at
    assert read.policy.policy == status.policy.policy
    assert read.cache == status.cache
    assert read.cycle == status.cycle
    assert read.snapshot == status.snapshot
    assert read.dry_run_overlay == 3
    assert read.history == status.history
    assert read.sparklines == status.sparklines
    assert read.plan is not None and status.plan is not None
    assert render_plan_table(read.plan, forecasts=read.forecasts) == (
        render_plan_table(status.plan, forecasts=status.forecasts)
    )
    assert render_plan_table(read.plan) == render_plan_table(status.plan)
    found = find_color(read, "3c3fdc")
    assert found is not None and found.state is State.DRAINING
    assert found.retired_for(read.plan.now) == timedelta(hours=1, seconds=5)
    assert find_color(read, "ffffff") is None


def test_a_daemon_without_a_cycle_yet_reads_as_such() -> None:
    status = Status(
        identity="r",
        leader=False,
        ready=False,
        policy=PolicyStatus(source="file:p.yaml", valid=False),
        cache=CacheStatus(synced=False),
    )
    read = status_from_document(json.loads(json.dumps(status_to_document(status))))
    assert read.cycle is None and read.snapshot is None and read.plan is None
    assert read.policy.policy is None and read.policy.loaded_at is None


def test_a_malformed_document_is_an_error_not_a_guess() -> None:
    document = status_to_document(sample_status())
    document["cycle"]["startedAt"] = "yesterday"
    with pytest.raises(ValueError):
        status_from_document(document)
