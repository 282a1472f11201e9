"""Dry run changes nothing: `--once --dry-run` and a live `rainbowd plan` as commands, and a
dry-run daemon whose in-memory overlay of would-be annotations lets retired ages advance.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import ANNOTATION_PREFIX
from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.harness import (
    ROOT,
    Fleet,
    color_doc,
    create_color,
    daemon_argv,
    daemon_settings,
    eventually,
    fetch_json,
    get_deployment,
    metric_sum,
    our_events,
    plan_command,
    point_service,
    policy_text,
    running_daemon,
    scrape_metrics,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD, NEW = "aaaaaa", "bbbbbb"


async def setup_colors(api: ApiClient, namespace: str, fleet: Fleet) -> dict[str, int]:
    """OLD retired and drained, NEW live; the generation of each Deployment (the controllers
    keep writing status, so the resourceVersion may move; the spec must not)."""
    await create_color(api, namespace, OLD)
    await create_color(api, namespace, NEW)
    await point_service(api, namespace, NEW)
    fleet.start(OLD)
    fleet.start(NEW)
    await fleet.wait_scraped(OLD, 0)
    await fleet.wait_scraped(NEW, 0)
    versions = {}
    for color in (OLD, NEW):
        obj = await get_deployment(api, namespace, f"chat-{color}")
        assert obj is not None
        versions[color] = obj["metadata"]["generation"]
    return versions


async def unchanged(api: ApiClient, namespace: str, versions: dict[str, int]) -> None:
    for color, version in versions.items():
        obj = await get_deployment(api, namespace, f"chat-{color}")
        assert obj is not None, f"chat-{color} was deleted"
        assert obj["metadata"]["generation"] == version, f"chat-{color} was changed"
        assert obj["spec"]["replicas"] == 1
        ours = [
            k for k in obj["metadata"].get("annotations") or {} if k.startswith(ANNOTATION_PREFIX)
        ]
        assert ours == []
    assert await our_events(api, namespace) == []


async def test_once_dry_run_changes_nothing(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    versions = await setup_colors(kube_api, namespace, fleet)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace, min_retired_age="0s"))
    argv = daemon_argv(
        cluster_full,
        namespace,
        policy_args=[f"--policy-file={policy}"],
        port=0,
        identity="rb-once",
    )
    proc = await asyncio.create_subprocess_exec(
        *argv,
        "--once",
        "--dry-run",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    log = err.decode()
    assert proc.returncode == 0, log
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    # It did plan something (the retired-at stamp at least) and skipped all of it.
    skipped = [e for e in entries if e["msg"] == "action skipped"]
    assert skipped and all(e["dry_run"] is True for e in skipped)
    assert not [e for e in entries if e["msg"] == "action applied"]
    assert [e["msg"] for e in entries].count("cycle finished") == 1
    await unchanged(kube_api, namespace, versions)

    # `rainbowd plan` without a snapshot file: one read-only cycle against the live cluster.
    out = await plan_command(cluster_full, namespace, policy)
    rows = [line.split()[:5] for line in out.splitlines()]
    assert [namespace, "chat", NEW, "live", "1/1"] in rows, out
    old_rows = [row for row in rows if row[:3] == [namespace, "chat", OLD]]
    assert len(old_rows) == 1 and old_rows[0][3] in ("draining", "drained"), out
    await unchanged(kube_api, namespace, versions)


async def test_dry_run_daemon_ages_colors_in_memory_only(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    versions = await setup_colors(kube_api, namespace, fleet)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(prometheus.url, namespace))
    settings = daemon_settings(
        cluster_full, namespace, policy=PolicySource(file=str(policy)), dry_run=True
    )
    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url

        # Without the overlay the color would be "first seen retired" every cycle, forever
        # young; with it, it ages, drains and reaches the (skipped) cleanup.
        async def would_scale() -> bool:
            doc = color_doc(await fetch_json(url + "/status"), OLD)
            return bool(
                doc
                and (doc["retiredFor"] or 0) >= 3
                and doc["drainedSince"] is not None
                and any(a["kind"] in ("scale", "delete") for a in doc["actions"])
            )

        await eventually(would_scale, what="a would-be scale-down or delete of the drained color")
        metrics = await scrape_metrics(url)
        assert metric_sum(metrics, "rainbowd_actions_total", outcome="ok") == 0
        skipped = metric_sum(metrics, "rainbowd_actions_total", reason="drained", outcome="skipped")
        assert skipped > 0
    await unchanged(kube_api, namespace, versions)
