"""Fault suite, Prometheus: while an app's connections cannot be known, none of its colors is
touched, however long it has been retired; once the fault clears it is burned down as usual.

All faults run at once, one app each, against one daemon: each app has its own rule and query,
and a proxy in front of the real Prometheus spoils one app's query per fault (the faults the real
server cannot produce on demand). The scrape faults are the real Prometheus' own: a pod left out
of the targets, a pod scraped by two jobs. Prometheus stopped outright is
`test_faults.py::test_no_action_while_prometheus_is_down_and_resume_after`; the adapter's reading
of each answer is `tests/integration/test_prom_faults.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.policy import ConnectionsQuery
from rainbowd.prom.querying import recording_rules
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.faultkit import (
    Color,
    Pods,
    create_colors,
    gone_or_zero,
    rules_policy,
    status_colors,
)
from tests.e2e.faultlog import FaultRecord, Witness
from tests.e2e.harness import DaemonProcess, eventually, point_service
from tests.fakeprom import FAULTS, FaultyProxy, running_proxy

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

UNSCRAPED, TWICE = "unscraped", "twice"
APPS = [*FAULTS, UNSCRAPED, TWICE]
# Retired for at least this long (minRetiredAge 2s + drainHold 1s, doubled) with the fault on,
# a color would have been burned down had its connections been known.
WOULD_HAVE_ACTED = 6.0


def old(i: int, app: str) -> Color:
    return Color(app, f"a{i:05x}", replicas=2 if app in (UNSCRAPED, TWICE) else 1)


def live(i: int, app: str) -> Color:
    return Color(app, f"b{i:05x}")


@pytest.fixture(params=["raw", "recorded"])
def source(
    request: pytest.FixtureRequest, shared_prometheus: PrometheusServer, tmp_path: Path
) -> Iterator[str]:
    """The connections source: the raw series, or the series the recording rules (evaluated
    every second by the real Prometheus) record."""
    if request.param == "recorded":
        rules = tmp_path / "recording-rules.yaml"
        query = ConnectionsQuery(rule_interval=timedelta(seconds=1))
        rules.write_text(yaml.safe_dump(recording_rules(query), sort_keys=False))
        shared_prometheus.set_rule_files([rules])
    try:
        yield str(request.param)
    finally:
        shared_prometheus.set_rule_files([])


@pytest.fixture
async def proxy(shared_prometheus: PrometheusServer) -> AsyncIterator[FaultyProxy]:
    async with running_proxy(shared_prometheus.url) as p:
        yield p


async def test_unknown_connections_never_act_and_recover(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    proxy: FaultyProxy,
    witness: Witness,
    tmp_path: Path,
    source: str,
) -> None:
    olds = {app: old(i, app) for i, app in enumerate(APPS)}
    lives = {app: live(i, app) for i, app in enumerate(APPS)}
    for fault in FAULTS:
        proxy.faults[f'app="{fault}"'] = fault
    await create_colors(kube_api, namespace, list(olds.values()))
    await create_colors(kube_api, namespace, list(lives.values()))
    for app in APPS:
        await point_service(kube_api, namespace, lives[app].color, app=app)

    pods = Pods(namespace, tmp_path, shared_prometheus)
    try:
        for app, color in olds.items():
            pods.start(f"{app}-0", color)
        # One of the unscraped color's two pods is no target at all.
        pods.start(f"{UNSCRAPED}-1", olds[UNSCRAPED], jobs=())
        # The twice color: its first pod is scraped by two jobs, its second by none, and the
        # second holds a client: two series for two ready pods, yet one pod unseen.
        pods.scrape(f"{TWICE}-0", "e2e-dup")
        hidden = pods.start(f"{TWICE}-1", olds[TWICE], jobs=())
        for color in olds.values():
            await pods.wait_scraped(color, " == 0", what=f"Prometheus to scrape {color.name}")

        policy = tmp_path / "policy.yaml"
        policy.write_text(rules_policy(proxy.url, namespace, APPS, source=source))
        daemon = DaemonProcess(
            cluster_full,
            namespace,
            tmp_path,
            policy_args=[f"--policy-file={policy}"],
            identity="rb-prom",
        )
        async with contextlib.AsyncExitStack() as client:
            await client.enter_async_context(witness.holding_connection(hidden, olds[TWICE].name))
            records: dict[str, FaultRecord] = {}
            hands_off: dict[str, int] = {}
            for app in APPS:
                label = f"prometheus {app}" if app in FAULTS else f"one pod {app}"
                records[app] = witness.injected(label, (olds[app].name,))
                hands_off[app] = witness.hands_off_from(
                    olds[app].name, f"acted while its connections were unknown ({app})"
                )
            daemon.start()
            try:
                await daemon.wait_ready()
                url = daemon.url

                async def held_while_unknown() -> bool:
                    docs = await status_colors(url)
                    for app, color in olds.items():
                        doc = docs.get((app, color.color))
                        if app == TWICE and (doc is None or doc["connections"]["known"]):
                            # Counted as drained or acted on already: the witness judges it.
                            continue
                        if doc is None or doc["connections"]["known"]:
                            return False
                        if (doc.get("retiredFor") or 0) < WOULD_HAVE_ACTED:
                            return False
                    return all(proxy.faulted.get(f, 0) >= 3 for f in FAULTS)

                await eventually(held_while_unknown, what="every faulted color held a while")
                # Any action on them so far is wrongful: the witness reports it at the end.
                # The faults clear: the proxy passes every query, every pod is scraped once.
                proxy.clear()
                pods.scrape(f"{UNSCRAPED}-1", "e2e")
                pods.unscrape(f"{TWICE}-0", "e2e-dup")
                pods.scrape(f"{TWICE}-1", "e2e")
                for app in APPS:
                    if app != TWICE:
                        witness.cleared(records[app])
                        witness.end_hands_off(hands_off[app])

                # The twice color now shows its client and is held for it; then it leaves.
                async def client_seen() -> bool:
                    doc = (await status_colors(url)).get((TWICE, olds[TWICE].color))
                    # Gone or scaled down already: the witness judges that below.
                    return bool(
                        doc is None or doc["replicas"] == 0 or doc["connections"]["value"] == 1
                    )

                await eventually(client_seen, what="the hidden client to show")
                witness.end_hands_off(hands_off[TWICE])
                await client.aclose()
                witness.cleared(records[TWICE])

                async def converge(app: str) -> None:
                    async def done() -> bool:
                        return await gone_or_zero(kube_api, namespace, olds[app].name)

                    await eventually(done, what=f"{olds[app].name} burned down after the fault")
                    witness.converged(records[app])

                await asyncio.gather(*(converge(app) for app in APPS))
                assert await daemon.terminate() == 0, daemon.process.log_tail()
            finally:
                daemon.close()
    finally:
        pods.close()
    witness.assert_no_wrongful()
