"""Fault suite, Kubernetes: the control plane failing under the daemon (etcd restarted, watches
expired by compaction, streams cut mid-event) and other writers racing it (conflicts, a
Deployment deleted or relabelled, a rollback, a user scaling a color back up).

The apiserver restarted mid-run is
`test_faults.py::test_apiserver_restart_mid_run_applies_each_action_once`; the informer's own
handling of cuts and 410s is `tests/integration/test_caching.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import DRAINED_SINCE, RETIRED_AT, State
from rainbowd.core.objects import parse_time
from rainbowd.daemon import Daemon
from rainbowd.kube.clients import MERGE_PATCH, request_json
from rainbowd.settings import PolicySource, Settings
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.faultkit import (
    Color,
    Pods,
    color_docs,
    create_colors,
    gone_or_zero,
    rules_policy,
    scale,
)
from tests.e2e.faultlog import FaultRecord, Witness
from tests.e2e.harness import (
    DaemonProcess,
    daemon_settings,
    deployment_path,
    eventually,
    fetch_json,
    get_deployment,
    metric_sum,
    our_events,
    point_service,
    running_daemon,
    scrape_metrics,
)
from tests.tcpproxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

APP = "chat"


def annotation(witness: Witness, name: str, key: str) -> str | None:
    obj = witness.deployment(name) or {}
    return (obj.get("metadata", {}).get("annotations") or {}).get(key)


async def colors_with_pods(
    api: ApiClient,
    namespace: str,
    pods: Pods,
    olds: list[Color],
    live: Color,
) -> None:
    """`olds` created first, then `live`, the Service on it; a scraped pod per old color."""
    await create_colors(api, namespace, olds)
    await create_colors(api, namespace, [live])
    await point_service(api, namespace, live.color)
    for color in olds:
        pods.start(color.name, color)
    for color in olds:
        await pods.wait_scraped(color, " == 0", what=f"{color.name} scraped")


async def converge(
    witness: Witness, record: FaultRecord, api: ApiClient, namespace: str, name: str
) -> None:
    async def done() -> bool:
        return await gone_or_zero(api, namespace, name)

    await eventually(done, what=f"{name} burned down after {record.name}")
    witness.converged(record)


def policy_file(tmp_path: Path, prometheus: PrometheusServer, namespace: str, **knobs: Any) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(rules_policy(prometheus.url, namespace, [APP], **knobs))
    return path


# --- the control plane failing ----------------------------------------------------------------


def etcd_revision(cluster: ControlPlane) -> int:
    request = urllib.request.Request(
        cluster.etcd_url + "/v3/kv/range",
        data=json.dumps({"key": base64.b64encode(b"/").decode()}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(json.loads(resp.read())["header"]["revision"])


def etcd_compact(cluster: ControlPlane, revision: int) -> None:
    request = urllib.request.Request(
        cluster.etcd_url + "/v3/kv/compaction",
        data=json.dumps({"revision": str(revision), "physical": True}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        resp.read()


@pytest.fixture
async def apiserver_proxy(cluster_full: ControlPlane) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(int(cluster_full.server.rsplit(":", 1)[1]))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


def proxied_kubeconfig(cluster: ControlPlane, proxy: TcpProxy, tmp_path: Path) -> Path:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path = tmp_path / "proxied.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_etcd_restart_compaction_and_cut_streams(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    apiserver_proxy: TcpProxy,
    witness: Witness,
    tmp_path: Path,
) -> None:
    """Each fault hits while a client holds a retired color and the Service is switched back
    to it behind the daemon's back; after each, the daemon must know before acting."""
    live = Color(APP, "f00000")
    olds = [Color(APP, f"a0000{i}") for i in range(3)]
    await colors_with_pods(kube_api, namespace, pods, olds, live)
    # The pause of the second fault must come before its scale-down is due: the drain starts,
    # the daemon sees its own stamp a cycle later, and the test pauses its watches at once.
    policy = policy_file(tmp_path, shared_prometheus, namespace, drain_hold="3s")
    settings = daemon_settings(
        cluster_full,
        namespace,
        policy=PolicySource(file=str(policy)),
        kubeconfig=str(proxied_kubeconfig(cluster_full, apiserver_proxy, tmp_path)),
    )
    # Every old color is held by a client until its fault begins.
    clients = {c.name: contextlib.AsyncExitStack() for c in olds}
    for color in olds:
        await clients[color.name].enter_async_context(
            witness.holding_connection(pods.pods[color.name], color.name)
        )
    for color in olds:
        await pods.wait_scraped(color, " == 1", what=f"{color.name} held")
    async with contextlib.AsyncExitStack() as held:
        for stack in clients.values():
            await held.enter_async_context(stack)
        await faults_under_a_daemon(
            cluster_full,
            namespace,
            kube_api,
            pods,
            apiserver_proxy,
            witness,
            settings,
            olds,
            live,
            clients,
        )
    witness.assert_no_wrongful()


async def faults_under_a_daemon(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    pods: Pods,
    apiserver_proxy: TcpProxy,
    witness: Witness,
    settings: Settings,
    olds: list[Color],
    live: Color,
    clients: dict[str, contextlib.AsyncExitStack],
) -> None:
    async with running_daemon(settings) as daemon:
        assert daemon.http_url is not None
        url = daemon.http_url
        for color in olds:

            async def retired(name: str = color.name) -> bool:
                return annotation(witness, name, RETIRED_AT) is not None

            await eventually(retired, what=f"{color.name} stamped retired")

        # etcd restarted while a client holds the first color; it leaves meanwhile.
        record = witness.injected("etcd restarted", (olds[0].name,))
        await asyncio.to_thread(cluster_full.restart_etcd)
        await clients[olds[0].name].aclose()
        witness.cleared(record)
        await converge(witness, record, kube_api, namespace, olds[0].name)

        # Watches expired behind a stale picture. The second color's client leaves and the
        # daemon plans on its drain stamp; then its watches are held (its requests still go
        # through) and the Service goes back to that color behind its back. Its next action
        # on the color is planned on the old picture, and would scale a live color down: the
        # executor's own read of the Services must refuse it. Nothing here races the clock:
        # the picture stays stale until the action was refused (or landed).
        await clients[olds[1].name].aclose()
        await eventually(
            lambda: planning_on_its_stamps(daemon, {olds[1].name}),
            what="the daemon to plan on its drain stamp",
        )
        before = await scrape_metrics(url)
        record = witness.injected("watch expired (410, compaction)", (olds[1].name,))
        apiserver_proxy.pause_downstream()
        try:
            early = [a for a in witness.applied() if a.name == olds[1].name]
            assert not early, f"the daemon acted before the pause (drainHold too short?): {early}"
            await point_service(kube_api, namespace, olds[1].color)

            async def refused_or_landed() -> bool:
                # The executor's refusal is an Event on the Deployment, in its own words.
                for event in await our_events(kube_api, namespace, name=olds[1].name):
                    if str(event.get("reason", "")).endswith("Conflict") and (
                        "selects this color now" in str(event.get("note"))
                    ):
                        return True
                return any(a.name == olds[1].name for a in witness.applied())

            await eventually(refused_or_landed, what="the action on the old picture")
            landed = [a for a in witness.applied() if a.name == olds[1].name]
            assert not landed, f"an action landed on the old picture: {landed}"
            # Then its watches expire unseen: etcd compacted past everything the daemon has
            # seen, and the apiserver restarted so its watch cache holds nothing older (the
            # held streams' end is held too); then every stream is cut.
            etcd_compact(cluster_full, await asyncio.to_thread(etcd_revision, cluster_full))
            await asyncio.to_thread(cluster_full.restart_apiserver)
            apiserver_proxy.cut()
        finally:
            apiserver_proxy.resume_downstream()
            apiserver_proxy.resume()
        witness.cleared(record)

        async def relisted() -> bool:
            now = await scrape_metrics(url)
            return metric_sum(now, "rainbowd_informer_relists_total") > metric_sum(
                before, "rainbowd_informer_relists_total"
            )

        await eventually(relisted, what="the daemon to list again after 410 Gone")
        await eventually(
            lambda: daemon_sees(url, namespace, olds[1].color, live=True),
            what="the daemon to see the switch made behind its back",
        )
        # The switched color is live now: the Service goes back, and it drains as usual.
        await point_service(kube_api, namespace, live.color)
        await converge(witness, record, kube_api, namespace, olds[1].name)

        # One stream cut in the middle of an event: the Service switch is the event, and the
        # Service watch the stream. The other streams stay up. (The proxy cuts whichever
        # stream speaks first; when that was another one, the switch is undone and retried.)
        record = witness.injected("stream cut mid-event", (olds[2].name,))
        for _ in range(5):
            errors = metric_sum(
                await scrape_metrics(url), "rainbowd_informer_errors_total", resource="services"
            )
            cuts = apiserver_proxy.cuts
            apiserver_proxy.cut_mid_chunk()
            await point_service(kube_api, namespace, olds[2].color)

            async def was_cut(cuts: int = cuts) -> bool:
                return apiserver_proxy.cuts > cuts

            await eventually(was_cut, what="the proxy to cut a stream mid-chunk")
            if await service_watch_dropped(url, errors):
                break
            await point_service(kube_api, namespace, live.color)
            await eventually(
                lambda: daemon_sees(url, namespace, olds[2].color, live=False),
                what="the switch undone",
            )
        else:
            pytest.fail("the Service stream was never the one cut")
        # The client leaves: acting on the old picture would now delete a live color.
        await clients[olds[2].name].aclose()
        witness.cleared(record)

        async def sees_it_live() -> bool:
            if await get_deployment(kube_api, namespace, olds[2].name) is None:
                return True  # deleted while live: the witness reports it
            return await daemon_sees(url, namespace, olds[2].color, live=True)

        await eventually(sees_it_live, what="the daemon to see the switch made during the cut")
        await point_service(kube_api, namespace, live.color)
        await converge(witness, record, kube_api, namespace, olds[2].name)


async def planning_on_its_stamps(daemon: Daemon, names: set[str]) -> bool:
    """Whether the daemon's cache holds the drain stamps it wrote on `names`: they are draining
    and nothing is left to stamp, so its next actions on them are the cleanups, planned on this
    picture."""
    report = daemon.last_cycle
    if report is None or report.plan is None:
        return False
    planned = {c.name: c for app in report.plan.apps for c in app.colors}
    return all(
        (c := planned.get(name)) is not None
        and c.state is State.DRAINING
        and c.drained_since is not None
        and not c.actions
        for name in names
    )


async def daemon_sees(url: str, namespace: str, color: str, *, live: bool) -> bool:
    """Whether the daemon's last plan has the color live (or, with live=False, not live)."""
    samples = await scrape_metrics(url)
    states = metric_sum(samples, "rainbowd_color_state", namespace=namespace, color=color)
    found = metric_sum(
        samples, "rainbowd_color_state", namespace=namespace, color=color, state="live"
    )
    return states >= 1 and found == (1 if live else 0)


async def service_watch_dropped(url: str, errors_before: float) -> bool:
    """Whether the daemon's Service watch reports a drop within a few seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while loop.time() < deadline:
        samples = await scrape_metrics(url)
        if metric_sum(samples, "rainbowd_informer_errors_total", resource="services") > (
            errors_before
        ):
            return True
        await asyncio.sleep(0.2)
    return False


# --- other writers ----------------------------------------------------------------------------


async def test_writers_racing_the_daemon_between_plan_and_action(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    apiserver_proxy: TcpProxy,
    witness: Witness,
    tmp_path: Path,
) -> None:
    """The daemon's picture goes stale (the apiserver's answers and events held back) while
    other writers change three drained colors; it plans on the old picture and acts: each
    action must meet a 409 or a 404, never land.

    Nothing here races the clock: the writers change the colors while the daemon's requests
    are held, and its picture stays stale until every one of its actions was refused."""
    live = Color(APP, "f00000")
    contested, deleted, relabelled = (Color(APP, f"a0000{i}") for i in range(3))
    olds = [contested, deleted, relabelled]
    names = {c.name for c in olds}
    await colors_with_pods(kube_api, namespace, pods, olds, live)
    # The pause must come before the cleanups are due: the drains start, the daemon sees its
    # own stamps a cycle later, and the test pauses; drainHold leaves a busy machine ample time.
    policy = policy_file(tmp_path, shared_prometheus, namespace, drain_hold="8s")
    settings = daemon_settings(
        cluster_full,
        namespace,
        policy=PolicySource(file=str(policy)),
        kubeconfig=str(proxied_kubeconfig(cluster_full, apiserver_proxy, tmp_path)),
    )
    async with running_daemon(settings) as daemon:
        await eventually(
            lambda: planning_on_its_stamps(daemon, names),
            what="the daemon to plan on its drain stamps",
        )
        # From here the daemon's watches hold still, and its requests wait for the writers.
        apiserver_proxy.pause_downstream()
        apiserver_proxy.hold_requests()
        early = [a for a in witness.applied() if a.name in names]
        assert not early, f"the daemon acted before the pause (drainHold too short?): {early}"
        conflicts = witness.injected("409: another writer", (contested.name,))
        gone = witness.injected("Deployment deleted mid-cycle", (deleted.name,))
        moved = witness.injected("Deployment relabelled mid-cycle", (relabelled.name,))
        try:
            try:
                await request_json(
                    kube_api,
                    "PATCH",
                    deployment_path(namespace, contested.name),
                    body={"metadata": {"annotations": {"example.com/touched": "yes"}}},
                    content_type=MERGE_PATCH,
                )
                await request_json(kube_api, "DELETE", deployment_path(namespace, deleted.name))
                # Relabelled out of the rule (selector app=chat): no longer rainbowd's to touch.
                await request_json(
                    kube_api,
                    "PATCH",
                    deployment_path(namespace, relabelled.name),
                    body={"metadata": {"labels": {"app": "archived"}}},
                    content_type=MERGE_PATCH,
                )
                witness.hands_off_from(relabelled.name, "relabelled out of every rule")
            finally:
                apiserver_proxy.release_requests()

            async def all_refused() -> bool:
                return names <= set(refused(cluster_full, namespace))

            await eventually(all_refused, what="each action on the old picture refused (409, 404)")
        finally:
            apiserver_proxy.resume_downstream()
        stale_until = time.time()
        for record in (conflicts, gone, moved):
            witness.cleared(record)
        landed = [a for a in witness.applied() if a.name in names and a.at < stale_until]
        assert not landed, f"actions landed on the old picture: {landed}"
        await converge(witness, conflicts, kube_api, namespace, contested.name)
        witness.converged(gone)
        # The relabelled Deployment stays as it is, a few cycles on.
        await cycles_later(daemon, 4)
        obj = await get_deployment(kube_api, namespace, relabelled.name)
        assert obj is not None and obj["spec"]["replicas"] == 1
        witness.converged(moved)
    witness.assert_no_wrongful()


def refused(cluster: ControlPlane, namespace: str) -> dict[str, int]:
    """Deployments on which one of rainbowd's writes met a 409 or 404, with the code."""
    out = {}
    for e in cluster.audit_events():
        ref = e.get("objectRef") or {}
        code = (e.get("responseStatus") or {}).get("code")
        if (
            str(e.get("userAgent", "")).startswith("rainbowd/")
            and ref.get("namespace") == namespace
            and ref.get("resource") == "deployments"
            and e.get("verb") in ("patch", "delete")
            and code in (404, 409)
        ):
            out[str(ref.get("name"))] = int(code)
    return out


async def test_rollback_while_a_scale_down_is_due(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    witness: Witness,
    tmp_path: Path,
) -> None:
    live, old = Color(APP, "f00000"), Color(APP, "a00000")
    await colors_with_pods(kube_api, namespace, pods, [old], live)
    # drainHold leaves a busy machine ample time between seeing the stamp and the rollback.
    hold = timedelta(seconds=8)
    policy = policy_file(tmp_path, shared_prometheus, namespace, drain_hold="8s")
    settings = daemon_settings(cluster_full, namespace, policy=PolicySource(file=str(policy)))
    async with running_daemon(settings) as daemon:

        async def drain_started() -> str | None:
            return annotation(witness, old.name, DRAINED_SINCE)

        due = parse_time(await eventually(drain_started, what="the drain stamp")) + hold
        # The scale-down is due at `due`; the rollback lands first.
        record = witness.injected("rollback while a scale-down is due", (old.name,))
        await point_service(kube_api, namespace, old.color)
        witness.cleared(record)
        early = [a for a in witness.applied() if a.name == old.name]
        assert not early, f"scaled down before the rollback (drainHold too short?): {early}"

        # Past the drain hold, the daemon planning with the rollback in view.
        async def past_due() -> bool:
            report = daemon.last_cycle
            return report is not None and report.started_at > due

        await eventually(past_due, what="a cycle past the drain hold")
        await cycles_later(daemon, 2)
        obj = await get_deployment(kube_api, namespace, old.name)
        assert obj is not None and obj["spec"]["replicas"] == 1
        witness.converged(record)
    witness.assert_no_wrongful()


async def cycles_later(daemon: Daemon, n: int) -> None:
    """Until `n` more cycles have finished."""
    start = daemon.cycles

    async def done() -> bool:
        return daemon.cycles >= start + n

    await eventually(done, what=f"{n} more cycles")


async def test_a_user_scales_a_scaled_down_color_back_up(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    pods: Pods,
    witness: Witness,
    tmp_path: Path,
) -> None:
    """The first step of a manual rollback: scale the old color up, then switch the Service
    once it is ready. Its pods' gauge reads 0 (no clients yet) the whole time."""
    live = Color(APP, "f00000")
    first, second = Color(APP, "a00000"), Color(APP, "b00000")
    await colors_with_pods(kube_api, namespace, pods, [first, second], live)
    policy = policy_file(tmp_path, shared_prometheus, namespace, keep_scaled_down=2)
    daemon = DaemonProcess(
        cluster_full,
        namespace,
        tmp_path,
        policy_args=[f"--policy-file={policy}"],
        identity="rb-rollback",
    ).start()
    try:
        for color in (first, second):

            async def scaled_down(name: str = color.name) -> bool:
                return await gone_or_zero(kube_api, namespace, name)

            await eventually(scaled_down, what=f"{color.name} scaled down")

        async def roll_back_to(color: Color, fault: str, *, restart: bool) -> None:
            record = witness.injected(fault, (color.name,))
            if restart:
                assert await daemon.terminate() == 0, daemon.process.log_tail()
            hands_off = witness.hands_off_from(
                color.name, "scaled down again right after a user scaled it up"
            )
            await scale(kube_api, namespace, color.name, 1)
            if restart:
                daemon.start()
                await daemon.wait_ready()
            await seen_scaled_up(daemon.url, color)
            await eventually(
                lambda: available_again(kube_api, namespace, color.name),
                what=f"{color.name} Available again",
            )
            await point_service(kube_api, namespace, color.color)
            witness.end_hands_off(hands_off)
            witness.cleared(record)

            async def serving() -> bool:
                # Live, with its pod, a few seconds on.
                await available_again(kube_api, namespace, color.name)
                return time.time() - (record.cleared_at or 0) > 5

            await eventually(serving, what=f"{color.name} to keep serving")
            witness.converged(record)

        await roll_back_to(first, "user scales a color back up", restart=False)
        await roll_back_to(second, "user scales a color back up, rainbowd restarted", restart=True)
        assert await daemon.terminate() == 0, daemon.process.log_tail()
    finally:
        daemon.close()
    witness.assert_no_wrongful()


async def seen_scaled_up(url: str, color: Color) -> None:
    """Until the daemon has planned two cycles with the color's replicas back. A cycle that took
    the old drain for a drain of these pods would scale it down at once; the Service switch
    (the test's next step, as soon as the color is Available) must not win that race."""

    async def cycle_seeing_it() -> int | None:
        doc = await fetch_json(url + "/status")
        seen = color_docs(doc).get((color.app, color.color))
        if seen is None or seen["replicas"] != 1 or not doc.get("cycle"):
            return None
        return int(doc["cycle"]["number"])

    first = await eventually(cycle_seeing_it, what=f"the daemon to plan with {color.name} up")

    async def two_cycles_on() -> bool:
        doc = await fetch_json(url + "/status")
        return bool(doc.get("cycle")) and int(doc["cycle"]["number"]) >= first + 2

    await eventually(two_cycles_on, what="two more cycles")


async def available_again(api: ApiClient, namespace: str, name: str) -> bool:
    obj = await get_deployment(api, namespace, name)
    if obj is None or obj["spec"]["replicas"] != 1:
        pytest.fail(f"{name} scaled down again right after a user scaled it up")
    status = obj.get("status", {})
    return bool(status.get("availableReplicas") == 1 and status.get("readyReplicas") == 1)
