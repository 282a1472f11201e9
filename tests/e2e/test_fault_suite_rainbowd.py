"""Fault suite, rainbowd itself: killed (-9) at random points of a scale-then-delete sequence,
SIGTERM while an action is under way, and a leader frozen (SIGSTOP) past its lease.

The daemon runs as a child process here: signals need a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import DRAINED_SINCE, LIVE_AT, ORIGINAL_REPLICAS, PHASE, RETIRED_AT
from rainbowd.core.objects import parse_time
from rainbowd.kube.clients import request_json, resource_path
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.faultkit import Color, Pods, create_colors, gone_or_zero, rules_policy
from tests.e2e.faultlog import Witness
from tests.e2e.harness import (
    DaemonProcess,
    eventually,
    get_deployment,
    lease_holder,
    our_events,
    point_service,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]

APP = "chat"
KILL_POINTS = 22
LEASE = ["--leader-elect", "--lease-duration=6s", "--renew-deadline=4s", "--retry-period=1s"]


def seed() -> int:
    """RAINBOWD_FAULT_SEED replays a run; otherwise a fresh seed, printed."""
    value = int(os.environ.get("RAINBOWD_FAULT_SEED") or random.randrange(2**32))
    print(f"fault seed: RAINBOWD_FAULT_SEED={value}")
    return value


def stamps(witness: Witness, name: str, key: str) -> list[str]:
    """Every distinct value of one annotation the witness saw on a Deployment, in order."""
    out: list[str] = []
    for _, obj in witness.history.get(("deployments", name), []):
        value = None if obj is None else (obj["metadata"].get("annotations") or {}).get(key)
        if value is not None and value not in out:
            out.append(value)
    return out


async def test_kill_9_at_random_points_of_a_scale_then_delete(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    witness: Witness,
    tmp_path: Path,
) -> None:
    rng = random.Random(seed())
    drained = [Color(APP, f"a0000{i}") for i in range(5)]
    held = Color(APP, "c00000")
    live = Color(APP, "f00000")
    await create_colors(kube_api, namespace, [*drained, held])
    await create_colors(kube_api, namespace, [live])
    await point_service(kube_api, namespace, live.color)
    pods = Pods(namespace, tmp_path, shared_prometheus)
    try:
        for color in [*drained, held]:
            pods.start(color.name, color)
        for color in [*drained, held]:
            await pods.wait_scraped(color, " == 0", what=f"{color.name} scraped")
        policy = tmp_path / "policy.yaml"
        # One scaled-down color is kept: every drained color is scaled, all but one deleted.
        policy.write_text(rules_policy(shared_prometheus.url, namespace, [APP], keep_scaled_down=1))
        daemon = DaemonProcess(
            cluster_full,
            namespace,
            tmp_path,
            policy_args=[f"--policy-file={policy}"],
            identity="rb-killed",
        )
        # Every old color starts with a client; they leave one by one during the kills, so
        # the stamps, scale-downs and deletes spread over the whole sequence.
        clients = {c.name: contextlib.AsyncExitStack() for c in [*drained, held]}
        async with contextlib.AsyncExitStack() as all_clients:
            for color in [*drained, held]:
                stack = await all_clients.enter_async_context(clients[color.name])
                await stack.enter_async_context(
                    witness.holding_connection(pods.pods[color.name], color.name)
                )
            for color in [*drained, held]:
                await pods.wait_scraped(color, " == 1", what=f"{color.name} held")
            leaving = {2 + 4 * i: clients[c.name] for i, c in enumerate(drained)}
            fault = witness.injected(f"kill -9 x{KILL_POINTS}")
            try:
                points = [round(rng.uniform(0.3, 3.0), 2) for _ in range(KILL_POINTS)]
                print(f"kill points (seconds after start): {points}")
                for n, delay in enumerate(points):
                    if n in leaving:
                        await leaving[n].aclose()
                    daemon.start()
                    await asyncio.sleep(delay)  # the random kill point itself, not a wait
                    daemon.process.kill()
                witness.cleared(fault)
                daemon.start()
                await daemon.wait_ready()

                async def converged() -> bool:
                    left = [await get_deployment(kube_api, namespace, c.name) for c in drained]
                    kept = [d for d in left if d is not None]
                    return len(kept) == 1 and kept[0]["spec"]["replicas"] == 0

                await eventually(converged, within=180, what="the sequence to converge")
                witness.converged(fault)
                assert await daemon.terminate() == 0, daemon.process.log_tail()
            finally:
                daemon.close()
    finally:
        pods.close()

    # The held color and the live color were never touched.
    for color in (held, live):
        obj = await get_deployment(kube_api, namespace, color.name)
        assert obj is not None and obj["spec"]["replicas"] == 1, color.name
    # Stamps preserved: each annotation rainbowd wrote kept its first value through every kill.
    for color in [*drained, held, live]:
        for key in (RETIRED_AT, LIVE_AT, ORIGINAL_REPLICAS):
            values = stamps(witness, color.name, key)
            assert len(values) <= 1, f"{color.name} {key} rewritten: {values}"
        assert len(stamps(witness, color.name, DRAINED_SINCE)) <= 1
    # No double action: each Deployment scaled at most once and deleted at most once.
    applied = Counter((a.kind, a.name) for a in witness.applied())
    assert all(n == 1 for n in applied.values()), applied
    assert sum(1 for kind, _ in applied if kind == "delete") == len(drained) - 1
    # And none without its Event, whatever point the kill hit.
    events = {
        (e["reason"], e["regarding"]["name"])
        for e in await our_events(kube_api, namespace)
        if e["type"] == "Normal"
    }
    reasons = {"scale": "ScaledDown", "delete": "Deleted"}
    missing = [(kind, name) for kind, name in applied if (reasons[kind], name) not in events]
    assert not missing, f"actions without their Event: {missing}"
    witness.assert_no_wrongful()


async def test_sigterm_during_an_action_finishes_it_and_exits_0(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    witness: Witness,
    tmp_path: Path,
) -> None:
    old, live = Color(APP, "a00000"), Color(APP, "b00000")
    await create_colors(kube_api, namespace, [old])
    await create_colors(kube_api, namespace, [live])
    await point_service(kube_api, namespace, live.color)
    pods = Pods(namespace, tmp_path, shared_prometheus)
    apiserver = cluster_full.process_ids()["kube-apiserver"]
    frozen = False
    try:
        pods.start(old.name, old)
        await pods.wait_scraped(old, " == 0", what=f"{old.name} scraped")
        policy = tmp_path / "policy.yaml"
        # keepScaledDown 1: the drained color's action is a scale-down (stamp, then /scale),
        # due drainHold after the drain stamp: 8s leaves a busy machine ample time to see the
        # stamp and the pods' marks and freeze the apiserver first.
        policy.write_text(
            rules_policy(
                shared_prometheus.url, namespace, [APP], keep_scaled_down=1, drain_hold="8s"
            )
        )
        daemon = DaemonProcess(
            cluster_full,
            namespace,
            tmp_path,
            policy_args=[f"--policy-file={policy}"],
            identity="rb-term",
            extra=["--shutdown-timeout=60s"],
        ).start()
        try:

            async def drain_started() -> bool:
                obj = witness.deployment(old.name) or {}
                return DRAINED_SINCE in (obj.get("metadata", {}).get("annotations") or {})

            await eventually(drain_started, what="the drain stamp")

            async def pods_marked() -> bool:
                listing = await request_json(
                    kube_api,
                    "GET",
                    resource_path("v1", "pods", namespace=namespace),
                    query={"labelSelector": f"color={old.color}"},
                )
                return all(
                    (p["metadata"].get("annotations") or {}).get(PHASE) == "retired"
                    for p in listing["items"]
                ) and bool(listing["items"])

            await eventually(pods_marked, what="the old color's pods marked retired")

            # Not while a mark's answer is on its way: frozen then, the daemon's cycle waits for
            # it to time out (30 s), long enough for the controller-manager to lose its lease
            # and rewrite the Deployment's status on resuming, which then conflicts with the
            # scale-down. A cycle finished after the marks were seen has its answers; the
            # cycles after it ask nothing until the scale-down is due.
            def finished() -> int:
                return sum(1 for e in daemon.log_entries() if e.get("msg") == "cycle finished")

            marked_by = finished()

            async def a_cycle_past_the_marks() -> bool:
                return finished() > marked_by

            await eventually(a_cycle_past_the_marks, what="a cycle finished after the marks")
            # The apiserver freezes before the scale-down is due: the daemon's next cycles
            # plan it, start it, and wait on it.
            fault = witness.injected("SIGTERM during an action", (old.name,))
            os.kill(apiserver, signal.SIGSTOP)
            frozen = True
            early = [a for a in witness.applied() if a.name == old.name]
            assert not early, f"scaled down before the freeze (drainHold too short?): {early}"

            async def in_the_action() -> bool:
                return any(
                    e.get("msg") == "action starting"
                    and e.get("action") == "scale"
                    and e.get("deployment") == old.name
                    for e in daemon.log_entries()
                )

            await eventually(in_the_action, what="the daemon to start its scale-down")
            os.kill(daemon.process.pid or 0, signal.SIGTERM)
            terminated_at = time.monotonic()

            async def still_finishing() -> bool:
                return time.monotonic() - terminated_at > 1.0

            await eventually(still_finishing, what="a second after SIGTERM")
            assert daemon.process.running(), "the daemon left before finishing its action"
            os.kill(apiserver, signal.SIGCONT)
            frozen = False
            witness.cleared(fault)

            async def exited() -> bool:
                return daemon.process.returncode() is not None

            await eventually(exited, what="the daemon to exit after SIGTERM")
            code = daemon.process.returncode()
            assert code == 0, daemon.process.log_tail()
            assert await gone_or_zero(kube_api, namespace, old.name)
            witness.converged(fault)
        finally:
            if frozen:
                os.kill(apiserver, signal.SIGCONT)
            daemon.close()
    finally:
        pods.close()
    obj = await get_deployment(kube_api, namespace, old.name)
    assert obj is not None, "deleted: the daemon went on past the action under way"
    assert obj["spec"]["replicas"] == 0
    assert obj["metadata"]["annotations"][ORIGINAL_REPLICAS] == "1"
    scaled = [a for a in witness.applied() if a.kind == "scale"]
    assert len(scaled) == 1, scaled
    assert len(await our_events(kube_api, namespace, name=old.name, reason="ScaledDown")) == 1
    witness.assert_no_wrongful()


async def test_a_leader_frozen_past_its_lease_does_not_act_when_resumed(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    shared_prometheus: PrometheusServer,
    witness: Witness,
    tmp_path: Path,
) -> None:
    old, live = Color(APP, "a00000"), Color(APP, "b00000")
    await create_colors(kube_api, namespace, [old])
    await create_colors(kube_api, namespace, [live])
    await point_service(kube_api, namespace, live.color)
    pods = Pods(namespace, tmp_path, shared_prometheus)
    stopped: list[DaemonProcess] = []
    daemons: list[DaemonProcess] = []
    try:
        pods.start(old.name, old)
        await pods.wait_scraped(old, " == 0", what=f"{old.name} scraped")
        policy = tmp_path / "policy.yaml"
        # drainHold 8s: the leader is frozen after the drain stamp, well before the scale-down.
        policy.write_text(rules_policy(shared_prometheus.url, namespace, [APP], drain_hold="8s"))
        args = [f"--policy-file={policy}"]
        a = DaemonProcess(
            cluster_full, namespace, tmp_path, policy_args=args, identity="rb-a", extra=LEASE
        ).start()
        daemons.append(a)

        async def holds(identity: str) -> bool:
            return await lease_holder(kube_api, namespace) == identity

        await eventually(lambda: holds("rb-a"), what="rb-a to lead")
        b = DaemonProcess(
            cluster_full, namespace, tmp_path, policy_args=args, identity="rb-b", extra=LEASE
        ).start()
        daemons.append(b)
        await b.wait_ready()

        async def drain_started() -> bool:
            obj = witness.deployment(old.name) or {}
            return DRAINED_SINCE in (obj.get("metadata", {}).get("annotations") or {})

        await eventually(drain_started, what="the leader's drain stamp")
        fault = witness.injected("leader SIGSTOPped past its lease")
        os.kill(a.process.pid or 0, signal.SIGSTOP)
        stopped.append(a)
        early = [x for x in witness.applied() if x.name == old.name]
        assert not early, f"scaled down before the leader froze (drainHold too short?): {early}"
        # A rollback while the old leader sleeps with its scale-down of the drained color
        # planned: that color is live again.
        await point_service(kube_api, namespace, old.color)
        await eventually(lambda: holds("rb-b"), what="rb-b to take the Lease over")

        async def marked_live() -> bool:
            obj = witness.deployment(old.name) or {}
            return LIVE_AT in (obj.get("metadata", {}).get("annotations") or {})

        await eventually(marked_live, what="rb-b to stamp the rolled-back color live")

        async def marked_live_by() -> set[str]:
            events = await our_events(kube_api, namespace, name=old.name)
            return {
                e["reportingInstance"] for e in events if e["reason"] in ("MarkedLive", "LiveAgain")
            }

        assert await eventually(marked_live_by, what="the live stamp's Event") == {"rb-b"}

        # Now only the old leader runs: whatever it writes, the audit log shows.
        os.kill(b.process.pid or 0, signal.SIGSTOP)
        stopped.append(b)
        resumed_at = time.time()
        os.kill(a.process.pid or 0, signal.SIGCONT)
        stopped.remove(a)

        async def a_exited() -> bool:
            return a.process.returncode() is not None

        await eventually(a_exited, what="the resumed old leader to give up and exit")
        exited_at = time.time()
        writes = [
            e
            for e in cluster_full.audit_events()
            if str(e.get("userAgent", "")).startswith("rainbowd/")
            and (e.get("objectRef") or {}).get("namespace") == namespace
            and e.get("verb") in ("patch", "update", "delete", "create")
            and (e.get("objectRef") or {}).get("resource") in ("deployments", "pods")
            and 200 <= int((e.get("responseStatus") or {}).get("code", 0)) <= 299
            and resumed_at <= audit_time(e) <= exited_at
        ]
        assert not writes, f"the resumed old leader wrote: {writes}"
        assert a.process.returncode() != 0, a.process.log_tail()
        os.kill(b.process.pid or 0, signal.SIGCONT)
        stopped.remove(b)
        witness.cleared(fault)
        await eventually(lambda: holds("rb-b"), what="rb-b to keep leading")
        witness.converged(fault)
        assert await b.terminate() == 0, b.process.log_tail()
        obj = await get_deployment(kube_api, namespace, old.name)
        assert obj is not None and obj["spec"]["replicas"] == 1
    finally:
        for d in stopped:
            os.kill(d.process.pid or 0, signal.SIGCONT)
        for d in daemons:
            d.close()
        pods.close()
    witness.assert_no_wrongful()


def audit_time(event: dict[str, object]) -> float:
    return parse_time(str(event["requestReceivedTimestamp"])).timestamp()
