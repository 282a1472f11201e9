"""Rollout colors with Argo Rollouts' real controller (tests/rollouts.py) on the test control
plane: a blueGreen Rollout promoted once with `scaleDownDelaySeconds: 30`, planned by the
daemon's pipeline (the watch cache, the real Prometheus scraping each color's connections), the
plan applied by the executor. A drained old ReplicaSet gets its deadline set to now and the
controller scales it down; one holding connections has its deadline kept ahead and is still up
past the controller's 30 s and a reconcile after them; the live one is never touched.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import SCALE_DOWN_DEADLINE, Action, Plan, Reason
from rainbowd.core.objects import parse_time
from rainbowd.core.policy import WORKLOAD_KINDS, Policy, PrometheusSettings, policy_to_document
from rainbowd.daemon.cycles import Pipeline
from rainbowd.kube.caching import ClusterCache
from rainbowd.kube.events import EventRecorder
from rainbowd.kube.executing import Executor
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.exposition import Exposition, gauge
from tests.integration.test_executing import eventually
from tests.integration.test_rollout_colors import cache
from tests.rollouts import (
    WITHIN,
    create_rollout,
    healthy,
    reconciled,
    replica_sets,
    roll,
    rollouts_controller,
)
from tests.unit.strategies import rule

pytestmark = [
    pytest.mark.cluster_full,
    pytest.mark.prometheus,
    pytest.mark.usefixtures("cluster_full", "rollouts_controller"),
]
__all__ = ["cache", "rollouts_controller"]

APP = "chat"
DELAY = 30  # the controller's scaleDownDelaySeconds


@pytest.fixture
def exposition() -> Iterator[Exposition]:
    """The colors' connections as a scrape target: Argo Rollouts' hashes are not the six hex
    digits a demo_app process takes as its color, so the series are served as the shipped
    PodMonitor labels a Rollout's pods' (color: the hash)."""
    with Exposition() as served:
        yield served


@pytest.fixture
async def pipeline(
    prometheus: PrometheusServer, exposition: Exposition
) -> AsyncIterator[tuple[Pipeline, Policy]]:
    prometheus.set_targets([(exposition.target, {})])
    policy = Policy(
        rules=(
            rule(
                app=None,
                kinds=WORKLOAD_KINDS,
                min_retired_age=timedelta(0),
                drain_hold=timedelta(seconds=2),
            ),
        ),
        prometheus=PrometheusSettings(url=prometheus.url, timeout=timedelta(seconds=5)),
    )
    async with aiohttp.ClientSession() as session:
        yield Pipeline(session), policy


def serve(exposition: Exposition, namespace: str, connections: dict[str, int]) -> None:
    series = [
        ({"namespace": namespace, "app": APP, "color": color, "pod": f"{APP}-{color}"}, str(n))
        for color, n in connections.items()
    ]
    exposition.set(gauge("rainbow_open_connections", series))


async def promoted(api: ApiClient, namespace: str, delay: int) -> tuple[str, str]:
    """The Rollout promoted once, `delay` its scaleDownDelaySeconds: (its first color, its
    second, now live)."""
    first = await create_rollout(api, namespace, APP, scale_down_delay=delay)
    second = await roll(api, namespace, APP, 2)
    await healthy(api, namespace, APP)
    return first, second


async def cycles_until(
    api: ApiClient,
    cache: ClusterCache,
    pipeline: tuple[Pipeline, Policy],
    name: str,
    wanted: Callable[[Action], bool],
    what: str,
) -> Plan:
    """Cycles as the daemon's (plan, then apply it) until one plans an action for the
    ReplicaSet `name` that is `wanted`: that plan, applied."""
    runner, policy = pipeline
    executor = Executor(api, EventRecorder(api, instance="test"))
    found: list[Plan] = []

    async def planned() -> bool:
        plan = (
            await runner.run(policy, cache.deployments(), cache.services(), now=datetime.now(UTC))
        ).plan
        await executor.apply(plan)
        if any(a.name == name and wanted(a) for a in plan.actions):
            found.append(plan)
            return True
        return False

    await eventually(planned, within=WITHIN, what=f"{what} planned for {name}")
    return found[0]


async def test_a_drained_old_replicaset_is_scaled_down_by_the_controller_on_its_deadline(
    kube_api: ApiClient,
    namespace: str,
    cache: ClusterCache,
    exposition: Exposition,
    pipeline: tuple[Pipeline, Policy],
) -> None:
    # The controller's own delay far longer than the test: only rainbowd's deadline scales it.
    first, second = await promoted(kube_api, namespace, 3600)
    serve(exposition, namespace, {first: 0, second: 3})

    def drained(action: Action) -> bool:
        return action.reason is Reason.DRAINED

    await cycles_until(kube_api, cache, pipeline, f"{APP}-{first}", drained, "the drained rule")

    async def scaled_down() -> bool:
        sets = await replica_sets(kube_api, namespace, APP)
        return bool(sets[first]["spec"]["replicas"] == 0)

    await eventually(scaled_down, within=WITHIN, what="the controller to scale it down")
    live = (await replica_sets(kube_api, namespace, APP))[second]
    assert live["spec"]["replicas"] == 1


async def test_an_old_replicaset_holding_connections_outlives_the_controllers_delay(
    kube_api: ApiClient,
    namespace: str,
    cache: ClusterCache,
    exposition: Exposition,
    pipeline: tuple[Pipeline, Policy],
) -> None:
    first, second = await promoted(kube_api, namespace, DELAY)
    argo = parse_time(
        (await replica_sets(kube_api, namespace, APP))[first]["metadata"]["annotations"][
            SCALE_DOWN_DEADLINE
        ]
    )
    serve(exposition, namespace, {first: 2, second: 3})

    def keeps(action: Action) -> bool:
        return SCALE_DOWN_DEADLINE in action.annotations and not action.disruptive

    await cycles_until(kube_api, cache, pipeline, f"{APP}-{first}", keeps, "the deadline kept")
    kept = (await replica_sets(kube_api, namespace, APP))[first]
    assert parse_time(kept["metadata"]["annotations"][SCALE_DOWN_DEADLINE]) > argo + timedelta(
        minutes=5
    )

    async def past_argos_deadline() -> bool:
        return datetime.now(UTC) > argo + timedelta(seconds=1)

    await eventually(past_argos_deadline, within=DELAY + WITHIN, what="Argo's deadline to pass")
    await reconciled(kube_api, namespace, APP)
    sets = await replica_sets(kube_api, namespace, APP)
    assert sets[first]["spec"]["replicas"] == 1
    assert sets[second]["spec"]["replicas"] == 1


async def test_a_revision_limit_that_would_cut_a_held_color_is_warned_about_before_it_does(
    kube_api: ApiClient,
    namespace: str,
    cache: ClusterCache,
    exposition: Exposition,
    pipeline: tuple[Pipeline, Policy],
    cluster_full: ControlPlane,
    tmp_path: Path,
) -> None:
    """scaleDownDelayRevisionLimit 1: after one promotion the first version, holding
    connections, is warned about (the next promotion would cut it, a limit of 2 keeps it);
    the next promotion does cut it, at once."""
    first = await create_rollout(kube_api, namespace, APP, scale_down_delay=3600, revision_limit=1)
    second = await roll(kube_api, namespace, APP, 2)
    await healthy(kube_api, namespace, APP)
    serve(exposition, namespace, {first: 2, second: 3})
    runner, policy = pipeline
    warned: list[str] = []

    async def warning() -> bool:
        plan = (
            await runner.run(policy, cache.deployments(), cache.services(), now=datetime.now(UTC))
        ).plan
        warned[:] = [w for w in plan.warnings if f"{APP}-{first}" in w]
        return bool(warned)

    await eventually(warning, within=WITHIN, what="the revision limit's warning")
    assert "scaleDownDelayRevisionLimit 1 scales it down" in warned[0]
    assert "scaleDownDelayRevisionLimit 2 keeps it" in warned[0]
    # check-policy's live mode, as a user runs it, says so too.
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy_to_document(policy)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rainbowd",
        "check-policy",
        str(policy_file),
        "--live",
        f"--kubeconfig={cluster_full.kubeconfig}",
        f"--namespaces={namespace}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stderr
    lines = [line for line in stderr.splitlines() if f"{APP}-{first}" in line]
    assert len(lines) == 1, stderr + stdout
    [live] = lines
    assert live.startswith(f"{policy_file}: live: warning: ")
    assert "scaleDownDelayRevisionLimit 2 keeps it" in live
    assert "1 warning(s)" in stdout.splitlines()[-1]
    await roll(kube_api, namespace, APP, 3)
    await healthy(kube_api, namespace, APP)

    async def cut() -> bool:
        return bool((await replica_sets(kube_api, namespace, APP))[first]["spec"]["replicas"] == 0)

    await eventually(cut, within=WITHIN, what="the controller to cut it at the promotion")
