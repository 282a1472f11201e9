"""The drain forecast end to end: a retired color whose connections close over time gets an ETA
in /status and in `rainbowd status`; after a restart its history comes back from Prometheus.

Real apiserver with kwok, real Prometheus scraping real demo_app processes holding real TCP
connections, rainbowd in this process. The drain is paced by what the daemon has seen (one
connection closed every few of its cycles), not by the wall clock, so a slow machine only makes
the test slower.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from playwright.async_api import expect

from rainbowd.settings import PolicySource
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.browser import chromium
from tests.e2e.harness import (
    WITHIN,
    Fleet,
    color_doc,
    create_color,
    daemon_settings,
    eventually,
    fetch_json,
    point_service,
    policy_text,
    running_daemon,
    status_command,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

OLD, NEW = "f00001", "f00002"
CONNECTIONS = 10
KEEP = 2  # never closed: the color stays draining, above its floor, to the end
CYCLES_PER_STEP = 3


async def old_doc(url: str) -> dict[str, Any] | None:
    return color_doc(await fetch_json(url + "/status"), OLD)


async def seen_long_enough(url: str, level: float) -> bool:
    """The daemon's last few samples of the old color are all `level`."""
    doc = await old_doc(url)
    history = [] if doc is None else doc["history"]
    return [v for _, v in history[-CYCLES_PER_STEP:]] == [level] * CYCLES_PER_STEP


async def test_a_draining_color_gets_an_eta_that_survives_a_restart(
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
    policy = tmp_path / "policy.yaml"
    # minRetiredAge 1h: the old color stays draining however fast its connections go.
    policy.write_text(policy_text(prometheus.url, namespace, min_retired_age="1h"))
    # Cycles twice a second: the drain's pace is counted in them.
    settings = daemon_settings(
        cluster_full, namespace, policy=PolicySource(file=str(policy)), interval=0.5
    )

    # Plain sockets, not reading tasks: the clients outlive the first daemon, whose stop checks
    # that no task is left. The app writes a short line every 0.2 s; the buffers hold minutes.
    with contextlib.ExitStack() as held:
        port = fleet.apps[OLD].tcp_port
        closers = [
            held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            for _ in range(CONNECTIONS)
        ]
        await fleet.wait_scraped(OLD, CONNECTIONS)

        async with running_daemon(settings) as daemon:
            assert daemon.http_url is not None
            url = daemon.http_url
            await point_service(kube_api, namespace, NEW)

            async def retired_and_seen() -> bool:
                doc = await old_doc(url)
                return bool(
                    doc is not None
                    and doc["state"] == "draining"
                    and doc["connections"]["value"] == CONNECTIONS
                )

            await eventually(retired_and_seen, what="the old color draining with all its clients")

            async def drain() -> None:
                """Close a connection once the daemon has seen the current level for a few
                cycles, down to KEEP."""
                while len(closers) > KEEP:
                    level = float(len(closers))
                    await eventually(
                        functools.partial(seen_long_enough, url, level),
                        what=f"{level:g} connections sampled",
                    )
                    closers.pop().close()

            drainer = asyncio.create_task(drain())
            try:

                async def estimated() -> dict[str, Any] | None:
                    doc = await old_doc(url)
                    forecast = None if doc is None else doc.get("forecast")
                    if forecast and forecast["etaSeconds"] is not None:
                        return dict(forecast)
                    return None

                forecast = await eventually(estimated, what="an ETA for the draining color")
                assert forecast["method"] in ("exponential", "linear")
                assert forecast["points"] >= 5
                assert forecast["etaSeconds"] >= 0 and forecast["etaAt"] is not None
                assert forecast["reason"] is None and forecast["floor"] == 0

                async def shown_in_status() -> bool:
                    for line in (await status_command(url)).splitlines():
                        cells = line.split()
                        if cells[2:4] == [OLD, "draining"]:
                            # NAMESPACE APP COLOR STATE REPLICAS CONNECTIONS RETIRED-FOR ETA
                            return cells[7].startswith("~")
                    return False

                await eventually(shown_in_status, what="the ETA in `rainbowd status`")

                # And on the live page: the ETA, and the drain's curve as its sparkline.
                async with chromium() as browser:
                    page = await browser.new_page()
                    await page.goto(url + "/")
                    row = page.locator(f'tr[data-color="{OLD}"]')
                    await expect(row.locator('[data-field="forecast"]')).to_have_text(
                        re.compile(r"^~\d"), timeout=WITHIN * 1000
                    )
                    line = row.locator('[data-field="connections"] svg.spark polyline')
                    points = (await line.get_attribute("points") or "").split()
                    heights = {float(p.split(",")[1]) for p in points}
                    assert len(points) >= 5 and len(heights) >= 2, points
                await drainer
            finally:
                drainer.cancel()
                await asyncio.gather(drainer, return_exceptions=True)
            before = await old_doc(url)
            assert before is not None

        # A restart: the new process's history starts with what Prometheus recorded before it.
        async with running_daemon(settings) as daemon:
            assert daemon.http_url is not None
            url = daemon.http_url
            restarted = before["history"][-1][0]

            async def seeded() -> bool:
                doc = await old_doc(url)
                history = [] if doc is None else doc["history"]
                older = [v for t, v in history if t < restarted - 5]
                return len(older) >= 5 and max(older) > KEEP

            await eventually(seeded, what="the history seeded from Prometheus after a restart")
