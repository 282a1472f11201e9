"""The live page in a real headless Chromium, against rainbowd running on the real control plane
and Prometheus: each color with its state, a Service switch and a scale-down shown without a
reload, a hand-edited annotation holding markup shown as text, and no console errors; and the
banners of a standby, dry run, pause, a failing Prometheus and an unreachable daemon.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from playwright.async_api import ConsoleMessage, Page, expect

from rainbowd.core.model import RETIRED_AT
from rainbowd.kube.clients import request_json, resource_path
from rainbowd.sandbox.controlplane import ControlPlane
from rainbowd.sandbox.prometheus import PrometheusServer
from rainbowd.settings import PolicySource
from tests.browser import chromium
from tests.e2e.harness import (
    WITHIN,
    Fleet,
    create_color,
    daemon_settings,
    deployment_body,
    deployment_path,
    held_connection,
    point_service,
    policy_text,
    running_daemon,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD, NEW = "3c3fdc", "9d2cc9"
# A hand-edited annotation that would run script if the page put it into HTML unescaped.
EVIL = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">'
WAIT_MS = WITHIN * 1000


def console_problems(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of the page, as they come."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    return problems


def row(page: Page, color: str) -> Any:
    return page.locator(f'article[data-app$="/chat"] tr[data-color="{color}"]')


async def test_page_follows_a_burn_down_live(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    for color in (OLD, NEW):
        await create_color(kube_api, namespace, color)
        fleet.start(color)
    await point_service(kube_api, namespace, OLD)
    for color in (OLD, NEW):
        await fleet.wait_scraped(color, 0)
    # Another app with no Service, so it stays blocked and its malformed stamp is reported on
    # every cycle rather than re-stamped.
    evil = deployment_body("evil", "abcdef")
    evil["metadata"]["annotations"] = {RETIRED_AT: EVIL}
    await request_json(kube_api, "POST", deployment_path(namespace), body=evil)

    policy = tmp_path / "policy.yaml"
    # The scaled-down color is kept, so the page can show it scaled down.
    policy.write_text(policy_text(prometheus.url, namespace, keep_scaled_down=1))
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))
    async with running_daemon(settings) as daemon, chromium() as browser:
        assert daemon.http_url is not None
        page = await browser.new_page()
        problems = console_problems(page)
        await page.goto(daemon.http_url + "/")
        # Set once: still there at the end means the page was never reloaded.
        await page.evaluate("window.loadedOnce = true")

        old_row, new_row = row(page, OLD), row(page, NEW)
        await expect(old_row.locator('[data-field="state"]')).to_have_text("live", timeout=WAIT_MS)
        await expect(new_row.locator('[data-field="state"]')).to_have_text(
            "pending", timeout=WAIT_MS
        )
        # Each swatch is painted in its own color, with the value beside it as text.
        swatch = old_row.locator(".swatch")
        await expect(swatch).to_have_css("background-color", "rgb(60, 63, 220)")
        await expect(old_row.locator(".colorname code")).to_have_text(OLD)

        async with held_connection(fleet.apps[OLD]):
            await fleet.wait_scraped(OLD, 1)
            await point_service(kube_api, namespace, NEW)
            await expect(new_row.locator('[data-field="state"]')).to_have_text(
                "live", timeout=WAIT_MS
            )
            await expect(old_row.locator('[data-field="state"]')).to_have_text(
                "draining", timeout=WAIT_MS
            )
            await expect(old_row.locator('[data-field="connections"]')).to_contain_text(
                "1", timeout=WAIT_MS
            )
            await expect(old_row.locator('[data-field="retired-for"]')).not_to_have_text("-")
            # The sparkline of its samples, and the forecast (an ETA, or why there is none).
            await expect(old_row.locator('[data-field="connections"] svg.spark')).to_have_count(
                1, timeout=WAIT_MS
            )
            await expect(old_row.locator('[data-field="forecast"]')).to_have_text(
                re.compile(r"^(~\d|too-few-points|not-decreasing)"), timeout=WAIT_MS
            )
        await expect(old_row.locator('[data-field="state"]')).to_have_text(
            "scaled-down", timeout=WAIT_MS
        )
        await expect(old_row.locator('[data-field="replicas"]')).to_have_text("0/0")
        timeline = page.locator('article[data-app$="/chat"] .timeline')
        await expect(timeline).to_contain_text(f"{OLD} scale drained ok", timeout=WAIT_MS)
        await expect(timeline).to_contain_text(f"{OLD} annotate observed-retired ok")

        # The markup is shown as the text it is: no element made of it, no script run.
        blocked = page.locator('article[data-app$="/evil"]')
        await expect(blocked.locator('[data-banner="blocked"]')).to_contain_text("no-live-color")
        warnings = page.locator("#warnings")
        await expect(warnings).to_contain_text(EVIL, timeout=WAIT_MS)
        assert await page.locator("#warnings script, #warnings img").count() == 0
        assert await page.evaluate("window.pwned") is None
        assert await page.evaluate("window.loadedOnce") is True
        assert problems == [], problems


async def test_banners_say_standby_dry_run_paused_and_prometheus_failing(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
    tmp_path: Path,
) -> None:
    await create_color(kube_api, namespace, OLD)
    fleet.start(OLD)
    await point_service(kube_api, namespace, OLD)
    await fleet.wait_scraped(OLD, 0)
    # Another replica holds the Lease for an hour: this daemon stays a standby.
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "rainbowd"},
        "spec": {
            "holderIdentity": "rainbowd-other",
            "leaseDurationSeconds": 3600,
            "acquireTime": now,
            "renewTime": now,
        },
    }
    leases = resource_path("coordination.k8s.io/v1", "leases", namespace=namespace)
    await request_json(kube_api, "POST", leases, body=lease)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "dryRun: true\npaused: true\n" + policy_text(prometheus.url, namespace, keep_scaled_down=1)
    )
    settings = daemon_settings(
        cluster_full, namespace, policy=PolicySource(file=str(policy)), leader_elect=True
    )
    async with running_daemon(settings) as daemon, chromium() as browser:
        assert daemon.http_url is not None
        page = await browser.new_page()
        problems = console_problems(page)
        await page.goto(daemon.http_url + "/")
        banners = page.locator("#banners")
        await expect(row(page, OLD).locator('[data-field="state"]')).to_have_text(
            "live", timeout=WAIT_MS
        )
        for kind, words in (
            ("not-leader", "Not the leader."),
            ("dry-run", "Dry run."),
            ("paused", "Paused."),
        ):
            await expect(banners.locator(f'[data-banner="{kind}"]')).to_contain_text(words)
        prometheus_banner = banners.locator('[data-banner="prometheus"]')
        await expect(prometheus_banner).to_have_count(0)

        prometheus.stop()
        failing = "Prometheus is failing."
        await expect(prometheus_banner).to_contain_text(failing, timeout=WAIT_MS)
        await expect(row(page, OLD).locator('[data-field="connections"]')).to_contain_text(
            "unknown"
        )
        prometheus.start()
        await expect(prometheus_banner).to_have_count(0, timeout=WAIT_MS)
        assert problems == [], problems

        # The daemon stops: the page says so and keeps the last picture.
        daemon.request_stop()
        unreachable = page.locator('[data-banner="unreachable"]')
        await expect(unreachable).to_contain_text("Cannot reach the daemon", timeout=WAIT_MS)
        await expect(row(page, OLD)).to_have_count(1)
