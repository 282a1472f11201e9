"""The live page in a real headless Chromium, against rainbowd running on the real control plane
and Prometheus: each color with its state, a Service switch and a scale-down shown without a
reload, a hand-edited annotation and an Event's message holding markup shown as text, and no
console errors; holds, protection and the next action with its reason; and the banners of a
standby, dry run, pause, a failing Prometheus and an unreachable daemon.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from playwright.async_api import ConsoleMessage, Page, expect

from rainbowd.core.model import HOLD_REASON, HOLD_UNTIL, PROTECT, RETIRED_AT
from rainbowd.kube.clients import request_json, resource_path
from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.browser import chromium
from tests.e2e.faultkit import Color, create_colors
from tests.e2e.harness import (
    APP,
    WITHIN,
    Fleet,
    create_color,
    daemon_settings,
    deployment_body,
    deployment_path,
    eventually,
    held_connection,
    our_events,
    point_service,
    policy_text,
    put_configmap,
    running_daemon,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD, NEW = "3c3fdc", "9d2cc9"
# Retired colors kept from scale-downs: one by `rainbowd hold` (its reason hand-edited), one
# protected, named by a CSS color name rather than hex digits (it has no demo_app: those are hex).
HELD, GUARDED = "e7f028", "teal"
POLICY = "rainbowd-policy"
# A hand-edited annotation that would run script if the page put it into HTML unescaped.
EVIL = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">'
# The same in a policy value, without the quotes an error message escapes.
EVIL_VALUE = "<script>window.pwned = 3</script><img src=x onerror=window.pwned=4>"
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
    return page.locator(f'article[data-app$="/{APP}"] tr[data-color="{color}"]')


def policy_source(namespace: str) -> PolicySource:
    return PolicySource(configmap_namespace=namespace, configmap_name=POLICY)


async def test_page_follows_a_burn_down_live(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
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

    # The scaled-down color is kept, so the page can show it scaled down.
    policy = policy_text(prometheus.url, namespace, keep_scaled_down=1)
    await put_configmap(kube_api, namespace, POLICY, policy)
    settings = daemon_settings(cluster_full, namespace, policy=policy_source(namespace))
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

        # A policy holding the markup: the Warning Event rainbowd writes carries it in its
        # message, and the page's banner shows that message as text.
        bad = policy_text(prometheus.url, namespace, min_retired_age=f"'{EVIL_VALUE}'")
        await put_configmap(kube_api, namespace, POLICY, bad)

        async def reported() -> list[dict[str, Any]]:
            return await our_events(kube_api, namespace, name=POLICY, reason="InvalidPolicy")

        events = await eventually(reported, what="a Warning Event InvalidPolicy on the policy")
        assert EVIL_VALUE in events[0]["note"], events[0]["note"]
        invalid = page.locator('#banners [data-banner="policy"]')
        await expect(invalid).to_contain_text(EVIL_VALUE, timeout=WAIT_MS)
        assert await page.locator("#banners script, #banners img").count() == 0
        assert await page.evaluate("window.pwned") is None
        assert await page.evaluate("window.loadedOnce") is True
        assert problems == [], problems


async def test_banners_say_standby_dry_run_paused_and_prometheus_failing(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    fleet: Fleet,
) -> None:
    # Created before the live color, so retired (not pending) from the start.
    await create_colors(
        kube_api,
        namespace,
        [Color(APP, color) for color in (NEW, HELD, GUARDED)],
        annotations={
            f"{APP}-{HELD}": {HOLD_UNTIL: "2999-01-01T00:00:00Z", HOLD_REASON: EVIL},
            f"{APP}-{GUARDED}": {PROTECT: "true"},
        },
    )
    await create_color(kube_api, namespace, OLD)
    await point_service(kube_api, namespace, OLD)
    for color in (OLD, NEW, HELD):
        fleet.start(color)
    for color in (OLD, NEW, HELD):
        await fleet.wait_scraped(color, 0)
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
    policy = policy_text(prometheus.url, namespace, keep_scaled_down=1)
    await put_configmap(kube_api, namespace, POLICY, "dryRun: true\npaused: true\n" + policy)
    settings = daemon_settings(
        cluster_full, namespace, policy=policy_source(namespace), leader_elect=True
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

        # Holds and protection: the drained color's scale-down held by the pause, the held one
        # with its hand-edited reason as text, the protected one marked so.
        drained, held, guarded = row(page, NEW), row(page, HELD), row(page, GUARDED)
        await expect(drained.locator('[data-field="state"]')).to_have_text(
            "drained", timeout=WAIT_MS
        )
        await expect(drained.locator('[data-field="action"]')).to_have_text(
            "held: drained", timeout=WAIT_MS
        )
        await expect(held.locator('[data-field="note"]')).to_contain_text(
            f"{HOLD_UNTIL}): {EVIL}", timeout=WAIT_MS
        )
        assert await held.locator("script, img").count() == 0
        assert await page.evaluate("window.pwned") is None
        await expect(guarded.locator('[data-field="state"]')).to_have_text("protected")
        await expect(guarded.locator('[data-field="guard"]')).to_contain_text(PROTECT)
        # Each named by the guard that holds it: the hold, with its reason, is not "protect".
        held_guard = held.locator('[data-field="guard"]')
        await expect(held_guard).to_contain_text(f"{HOLD_UNTIL}): {EVIL}")
        await expect(held_guard).not_to_contain_text(PROTECT)
        await expect(guarded.locator(".swatch")).to_have_css("background-color", "rgb(0, 128, 128)")
        await expect(guarded.locator(".colorname code")).to_have_text(GUARDED)

        # Unpaused (still a dry run): the banner goes, and the next action shows with its reason.
        await put_configmap(kube_api, namespace, POLICY, "dryRun: true\n" + policy)
        await expect(banners.locator('[data-banner="paused"]')).to_have_count(0, timeout=WAIT_MS)
        await expect(banners.locator('[data-banner="dry-run"]')).to_have_count(1)
        await expect(drained.locator('[data-field="action"]')).to_contain_text(
            "scale drained", timeout=WAIT_MS
        )
        for kept in (held, guarded):
            await expect(kept.locator('[data-field="action"]')).not_to_contain_text("scale")

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
