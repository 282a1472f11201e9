"""Helpers of the fault suite on top of the e2e harness: many colors of many apps at once, pods
as demo_app processes with per-pod scrape targets, and a daemon's /status read per app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.objects import parse_time
from rainbowd.kube.clients import MERGE_PATCH, request_json
from rainbowd.settings import PolicySource, Settings
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.demoapps import DemoApp
from tests.e2e.faultlog import Witness
from tests.e2e.harness import (
    daemon_settings,
    deployment_body,
    deployment_path,
    eventually,
    fetch_json,
    get_deployment,
    point_service,
    prom_query,
)


@dataclass(frozen=True)
class Color:
    app: str
    color: str
    replicas: int = 1

    @property
    def name(self) -> str:
        return f"{self.app}-{self.color}"


async def available(api: ApiClient, namespace: str, color: Color) -> bool:
    obj = await get_deployment(api, namespace, color.name)
    assert obj is not None, f"{color.name} is gone"
    status = obj.get("status", {})
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    return bool(
        status.get("readyReplicas") == color.replicas
        and status.get("availableReplicas") == color.replicas
        and status.get("observedGeneration") == obj["metadata"]["generation"]
        and conditions.get("Available", {}).get("status") == "True"
    )


async def create_colors(
    api: ApiClient,
    namespace: str,
    colors: Sequence[Color],
    *,
    annotations: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Deployments for all `colors` at once, waited on until each is Available; returns once
    the clock is past their creation second (colors created later are newer)."""
    newest = datetime.min.replace(tzinfo=UTC)
    for color in colors:
        body = deployment_body(color.app, color.color, replicas=color.replicas)
        extra = (annotations or {}).get(color.name)
        if extra:
            body["metadata"]["annotations"] = dict(extra)
        created = await request_json(api, "POST", deployment_path(namespace), body=body)
        newest = max(newest, parse_time(created["metadata"]["creationTimestamp"]))

    async def all_available() -> bool:
        done = await asyncio.gather(*(available(api, namespace, c) for c in colors))
        return all(done)

    await eventually(all_available, what=f"{len(colors)} Deployments to become Available")

    async def next_second() -> bool:
        return datetime.now(UTC) >= newest + timedelta(seconds=1)

    await eventually(next_second, what="the clock to pass the creation second")


async def scale(api: ApiClient, namespace: str, name: str, replicas: int) -> None:
    """A user's `kubectl scale`."""
    await request_json(
        api,
        "PATCH",
        deployment_path(namespace, name) + "/scale",
        body={"spec": {"replicas": replicas}},
        content_type=MERGE_PATCH,
    )


async def gone_or_zero(api: ApiClient, namespace: str, name: str) -> bool:
    obj = await get_deployment(api, namespace, name)
    return obj is None or obj["spec"]["replicas"] == 0


@dataclass
class Pods:
    """demo_app processes standing in for pods, each scraped under the jobs it is given."""

    namespace: str
    workdir: Path
    prometheus: PrometheusServer
    pods: dict[str, DemoApp] = field(default_factory=dict)
    jobs: dict[str, list[str]] = field(default_factory=dict)

    def start(self, key: str, color: Color, *, jobs: Sequence[str] = ("e2e",)) -> DemoApp:
        demo = DemoApp(
            color.color, workdir=self.workdir, app=color.app, namespace=self.namespace
        ).start()
        self.pods[key] = demo
        for job in jobs:
            self.jobs.setdefault(job, []).append(key)
        self.sync()
        return demo

    def scrape(self, key: str, job: str) -> None:
        self.jobs.setdefault(job, []).append(key)
        self.sync()

    def unscrape(self, key: str, job: str) -> None:
        self.jobs[job].remove(key)
        self.sync()

    def sync(self) -> None:
        for job, keys in self.jobs.items():
            self.prometheus.set_targets([(self.pods[k].target, {}) for k in keys], job=job)

    async def wait_scraped(self, color: Color, expr_suffix: str, *, what: str) -> None:
        expr = (
            f'rainbow_open_connections{{namespace="{self.namespace}",app="{color.app}",'
            f'color="{color.color}"}}'
        )

        async def seen() -> bool:
            return bool(await prom_query(self.prometheus.url, expr + expr_suffix))

        await eventually(seen, what=what)

    def close(self) -> None:
        for job in self.jobs:
            self.prometheus.set_targets([], job=job)
        for demo in self.pods.values():
            demo.close()


def color_docs(status: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """A daemon's /status colors by (app, color)."""
    out = {}
    for app in (status.get("plan") or {}).get("apps") or []:
        for c in app.get("colors") or []:
            out[(app["app"], c["color"])] = c
    return out


async def status_colors(url: str) -> dict[tuple[str, str], dict[str, Any]]:
    return color_docs(await fetch_json(url + "/status"))


def rules_policy(
    prometheus_url: str,
    namespace: str,
    apps: Sequence[str],
    *,
    min_retired_age: str = "2s",
    drain_hold: str = "1s",
    keep_scaled_down: int = 0,
    timeout: str = "2s",
    source: str = "raw",
) -> str:
    """A policy with one rule per app, each counting its app's connections with its own query
    (so a proxy can spoil one app's query and leave the others alone), from the raw series or
    from those the recording rules record every second (`source`)."""
    recorded = ", source: recorded, ruleInterval: 1s" if source == "recorded" else ""
    lines = [
        "apiVersion: rainbowd.io/v1alpha1",
        "kind: DrainPolicy",
        f'prometheus: {{url: "{prometheus_url}", timeout: {timeout}}}',
        "connections: {metric: rainbow_open_connections}",
        "defaults:",
        f"  minRetiredAge: {min_retired_age}",
        f"  drainHold: {drain_hold}",
        "  connectionFloor: 0",
        "  maxRetiredAge: null",
        "  maxColors: null",
        "  action: scale-then-delete",
        f"  keepScaledDown: {keep_scaled_down}",
        "rules:",
    ]
    for app in apps:
        lines += [
            f"  - name: {app}",
            f"    namespaces: [{namespace}]",
            f"    selector: app={app}",
            "    connections: {metric: rainbow_open_connections, "
            f"matchers: 'app=\"{app}\"'{recorded}}}",
        ]
    return "\n".join(lines) + "\n"


def policy_file_settings(
    cluster: ControlPlane, namespace: str, workdir: Path, policy: str, **overrides: Any
) -> Settings:
    """The in-process daemon's settings, reading `policy` from a file in `workdir`."""
    path = workdir / "policy.yaml"
    path.write_text(policy)
    return daemon_settings(cluster, namespace, policy=PolicySource(file=str(path)), **overrides)


async def hold_clients(
    stack: contextlib.AsyncExitStack, witness: Witness, pods: Pods, colors: Sequence[Color]
) -> None:
    """A client on each color until `stack` closes (any action on one meanwhile is wrongful),
    each seen by Prometheus before this returns."""
    for color in colors:
        await stack.enter_async_context(
            witness.holding_connection(pods.pods[color.name], color.name)
        )
    for color in colors:
        await pods.wait_scraped(color, " == 1", what=f"{color.name} held")


async def old_colors_beside_live_ones(
    api: ApiClient,
    namespace: str,
    pods: Pods,
    olds: Sequence[Color],
    lives: Sequence[Color],
    *,
    annotations: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """The old colors created first, then the live ones, each selected by its app's Service;
    each old color with a pod Prometheus has seen at 0 connections."""
    await create_colors(api, namespace, olds, annotations=annotations)
    await create_colors(api, namespace, lives)
    for live in lives:
        await point_service(api, namespace, live.color, app=live.app)
    for color in olds:
        pods.start(color.name, color)
    for color in olds:
        await pods.wait_scraped(color, " == 0", what=f"{color.name} scraped")
