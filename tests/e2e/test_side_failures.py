"""No side feature of the cycle can stop a decision (docs/design.md "Decide, act, then tell").

For each side feature (connection history, forecast, Events, metrics, the page's data, /status),
a stand-in passed through the daemon's own seam (`SideParts`) raises while a switch is on: the
drained color of the app next door is still scaled down, the failure is logged once however many
cycles it lasts, counted in `rainbowd_side_failures_total{component}` and shown under
`sideFailures` on /status; once the switch is off, the component works again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.forecast import ColorForecast, ColorKey, Forecaster, Point
from rainbowd.core.history import ConnectionHistory
from rainbowd.core.model import HOLD_UNTIL, LIVE_AT, Plan, Snapshot
from rainbowd.core.policy import Policy
from rainbowd.daemon import SideParts
from rainbowd.daemon.guarding import Component
from rainbowd.daemon.reconciling import CycleReport, Documents
from rainbowd.metrics import Metrics
from rainbowd.status import HistoryStatus, Sparkline
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.faultkit import (
    Color,
    Pods,
    gone_or_zero,
    old_colors_beside_live_ones,
    policy_file_settings,
    rules_policy,
)
from tests.e2e.harness import (
    eventually,
    fetch_json,
    metric_sum,
    running_daemon,
    scrape_metrics,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]


class Fault:
    """The switch every stand-in reads: while `on`, it raises."""

    def __init__(self, component: Component) -> None:
        self.on = True
        self.component = component

    def check(self) -> None:
        if self.on:
            raise RuntimeError(f"injected {self.component.value} fault")


class FailingHistory(ConnectionHistory):
    def __init__(self, fault: Fault) -> None:
        super().__init__()
        self.fault = fault

    def record_snapshot(self, snapshot: Snapshot) -> None:
        self.fault.check()
        super().record_snapshot(snapshot)


class FailingForecaster(Forecaster):
    def __init__(self, fault: Fault) -> None:
        super().__init__()
        self.fault = fault

    def update(
        self, plan: Plan, policy: Policy, history: Mapping[ColorKey, Sequence[Point]]
    ) -> dict[ColorKey, ColorForecast]:
        self.fault.check()
        return super().update(plan, policy, history)


class FailingMetrics(Metrics):
    def __init__(self, fault: Fault) -> None:
        super().__init__()
        self.fault = fault

    def observe_plan(
        self, plan: Plan, forecasts: Mapping[ColorKey, ColorForecast] | None = None
    ) -> None:
        self.fault.check()
        super().observe_plan(plan, forecasts)


class FailingDocuments(Documents):
    """The /status sections (`status`) or the page's data (`page`) failing."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault

    def status(self, report: CycleReport, history: HistoryStatus | None) -> dict[str, Any]:
        if self.fault.component is Component.STATUS:
            self.fault.check()
        return super().status(report, history)

    def page(
        self,
        plan: Plan | None,
        forecasts: Mapping[ColorKey, ColorForecast],
        sparklines: Mapping[ColorKey, Sparkline],
        recent_actions: Sequence[Mapping[str, Any]],
    ) -> dict[str, Any]:
        if self.fault.component is Component.PAGE:
            self.fault.check()
        return super().page(plan, forecasts, sparklines, recent_actions)


class FailingReporter:
    """The warnings' Events failing; once the fault goes, the warnings it was given are kept
    (the Events' writing itself is tested against the apiserver in test_events.py)."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.reported: list[str] = []

    async def report_warnings(self, plan: Plan, snapshot: Snapshot, warnings: Iterable[str]) -> int:
        self.fault.check()
        listed = list(warnings)
        self.reported.extend(listed)
        return len(listed)


def side_parts(fault: Fault) -> tuple[SideParts, FailingReporter | None]:
    match fault.component:
        case Component.HISTORY:
            return SideParts(history=FailingHistory(fault)), None
        case Component.FORECAST:
            return SideParts(forecaster=FailingForecaster(fault)), None
        case Component.METRICS:
            return SideParts(metrics=FailingMetrics(fault)), None
        case Component.STATUS | Component.PAGE:
            return SideParts(documents=FailingDocuments(fault)), None
        case Component.EVENTS:
            reporter = FailingReporter(fault)
            return SideParts(reporter=reporter), reporter


@pytest.mark.parametrize("component", list(Component), ids=lambda c: c.value)
async def test_a_failing_side_feature_stops_no_decision_and_recovers(
    component: Component,
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # The app next door: a drained old color, to be scaled down whatever fails.
    drained, live = Color("clean", "a00000"), Color("clean", "f00000")
    # An app whose old color carries a hold no one can read: a plan warning every cycle, for
    # the Events to report.
    held, held_live = Color("held", "a00000"), Color("held", "f00000")
    await old_colors_beside_live_ones(
        kube_api,
        namespace,
        pods,
        [drained, held],
        [live, held_live],
        annotations={held.name: {HOLD_UNTIL: "tomorrow", LIVE_AT: "2026-01-01T00:00:00Z"}},
    )
    policy = rules_policy(shared_prometheus.url, namespace, ["clean", "held"])
    settings = policy_file_settings(cluster_full, namespace, pods.workdir, policy)
    fault = Fault(component)
    sides, reporter = side_parts(fault)

    async with running_daemon(settings, sides=sides) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url

        async def scaled_down() -> bool:
            return await gone_or_zero(kube_api, namespace, drained.name)

        await eventually(scaled_down, what=f"{drained.name} scaled down, {component.value} failing")

        async def failed_for_three_cycles() -> dict[str, Any]:
            failing = (await fetch_json(url + "/status"))["sideFailures"]
            found: dict[str, Any] = failing.get(component.value) or {}
            return found if found.get("count", 0) >= 3 else {}

        failure = await eventually(failed_for_three_cycles, what=f"{component.value} failing")
        assert f"injected {component.value} fault" in failure["cause"]
        samples = await scrape_metrics(url)
        counted = metric_sum(samples, "rainbowd_side_failures_total", component=component.value)
        assert counted >= 3
        assert metric_sum(samples, "rainbowd_reconciles_total", result="error") == 0
        fault.on = False

        async def recovered() -> bool:
            status = await fetch_json(url + "/status")
            report = daemon.last_cycle
            return (
                component.value not in status["sideFailures"]
                and report is not None
                and status["cycle"]["number"] == report.number
                and status["plan"] is not None
            )

        await eventually(recovered, what=f"{component.value} recovered")
        # And it does its work again.
        status = await fetch_json(url + "/status")
        samples = await scrape_metrics(url)
        if reporter is not None:
            assert any(HOLD_UNTIL in w and "tomorrow" in w for w in reporter.reported)
        if component is Component.METRICS:
            assert metric_sum(samples, "rainbowd_color_state", app=held.app) >= 1
        if component is Component.HISTORY:
            assert status["history"]["colors"] >= 1

    def logged(message: str) -> list[Any]:
        return [
            r
            for r in caplog.records
            if r.getMessage() == message and r.rainbowd_fields.get("component") == component.value  # type: ignore[attr-defined]
        ]

    # Once per distinct cause, not once per cycle; and once when it works again.
    assert len(logged("side feature failed")) == 1
    assert len(logged("side feature recovered")) == 1
