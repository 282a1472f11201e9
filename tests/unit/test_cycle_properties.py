"""A Hypothesis property over the daemon's whole cycle, not only `plan()`: the reconciler's
cycle as `rainbowd run` wires it (decide, act, then the history, forecast, Events, metrics, the
page's data and the /status sections), fed any value in any rainbowd.io/* annotation it reads and
the knobs' extreme durations. No exception escapes, no side feature fails, and no action is
harsher than with the annotation absent.

The cycle is driven from a generated snapshot (`Pipeline.decide`): the watch cache and the
Prometheus answer it is built from are tested against the real servers elsewhere.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta

import aiohttp
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from rainbowd.core.durations import parse_duration
from rainbowd.core.model import (
    CONSOLIDATED_AT,
    CONSOLIDATED_FROM,
    STEPPED_DOWN_AT,
    Plan,
    Snapshot,
)
from rainbowd.core.policy import Budget, Policy
from rainbowd.daemon.cycles import Pipeline
from rainbowd.daemon.policies import PolicyState
from rainbowd.daemon.reconciling import CycleReport, Reconciler
from rainbowd.metrics import Metrics
from tests.cycleparts import MemoryCache, NoExecutor
from tests.unit.strategies import NS, policies, snapshots, with_annotations
from tests.unit.test_planner_properties import EXAMPLES, READ, harshness, never_harsher, values

# The shortest and longest durations a policy accepts, a century, and none at all.
SHORTEST = parse_duration("1us")
LONGEST = parse_duration("2562047h47m16.854775s")  # about Go's longest: int64 nanoseconds
CENTURY = timedelta(days=36525)
EXTREME_DURATIONS = (SHORTEST, CENTURY, LONGEST, timedelta(0))

# Every annotation the cycle reads: the planner's, and consolidation's records.
CYCLE_READS = (*READ, CONSOLIDATED_AT, CONSOLIDATED_FROM, STEPPED_DOWN_AT)

FULLWIDTH_DIGITS = {ord(c): ord(c) + 0xFEE0 for c in "0123456789"}
odd_values = values | st.sampled_from(
    (
        "9" * 40,
        str(2**63),
        "-1",
        "1e308",
        "NaN",
        "∞",
        "2026-11-21T12:00:00Z".translate(FULLWIDTH_DIGITS),
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00+05:00",
        "0001-01-01T00:00:00-14:00",
        "2026-11-21T12:00:00+23:59",
        "🌈",
    )
)


@st.composite
def extreme_policies(draw: st.DrawFn) -> Policy:
    """A generated policy whose rules' durations are pushed to the edges: maxRetiredAge of a
    century or the longest accepted, the shortest ones, and so on."""
    pol = draw(policies())
    duration = st.sampled_from(EXTREME_DURATIONS)
    positive = st.sampled_from(EXTREME_DURATIONS[:3])
    rules = []
    for rule in pol.rules:
        knobs = rule.knobs
        if draw(st.booleans()):
            knobs = dataclasses.replace(
                knobs,
                max_retired_age=draw(st.sampled_from((CENTURY, LONGEST, SHORTEST))),
                min_retired_age=draw(duration),
                drain_hold=draw(duration),
                scale_up_grace=draw(duration),
                abandoned_after=draw(st.none() | positive),
                max_disruptions=Budget(count=knobs.max_disruptions.count, per=draw(positive)),
            )
        rules.append(dataclasses.replace(rule, knobs=knobs))
    return dataclasses.replace(pol, rules=tuple(rules))


async def _one_cycle(snap: Snapshot, pol: Policy) -> tuple[CycleReport, Reconciler]:
    metrics = Metrics()
    state = PolicyState(source="property", metrics=metrics)
    state.accept(pol)
    deployments = {name: list(ns.deployments) for name, ns in snap.namespaces.items()}
    services = {name: list(ns.services) for name, ns in snap.namespaces.items()}
    async with aiohttp.ClientSession() as session:
        reconciler = Reconciler(
            policy=state,
            cache=MemoryCache(deployments, services),  # type: ignore[arg-type]
            pipeline=Pipeline(session),
            executor=NoExecutor(),  # type: ignore[arg-type]
            metrics=metrics,
            leading=lambda: True,
            stopping=asyncio.Event(),
            interval=30.0,
            debounce=1.0,
        )
        started = asyncio.get_running_loop().time()
        planned = reconciler.pipeline.decide(pol, snap)
        report = await reconciler.settle(planned, pol, now=snap.now, started=started)
        reconciler.publish(report, now=snap.now)
        # What a scrape and a /status request read of the cycle.
        generate_latest(metrics.registry)
        json.dumps(reconciler.documents_now())
    return report, reconciler


def run_cycle(snap: Snapshot, pol: Policy) -> Plan:
    """One whole cycle over `snap`; its plan, after checking that nothing failed."""
    report, reconciler = asyncio.run(_one_cycle(snap, pol))
    assert report.ok, report.error
    assert not reconciler.side.failing, reconciler.side.failing
    assert report.plan is not None
    return report.plan


@EXAMPLES
@given(snapshots(), extreme_policies(), st.data(), st.sampled_from(CYCLE_READS), odd_values)
def test_no_annotation_value_or_extreme_knob_fails_the_cycle_or_harshens_it(
    snap: Snapshot, pol: Policy, data: st.DataObject, key: str, value: str
) -> None:
    namespace = snap.namespaces[NS]
    target = data.draw(st.sampled_from(namespace.deployments))
    without = {k: v for k, v in target.annotations.items() if k != key}
    base = run_cycle(with_annotations(snap, target, without), pol)
    odd = run_cycle(with_annotations(snap, target, {**without, key: value}), pol)
    if never_harsher(odd, target.name, key, value):
        assert harshness(odd, target.name) <= harshness(base, target.name)
