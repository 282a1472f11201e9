"""The story of a Rollout color end to end: rainbowd as a child process, Argo Rollouts' real
controller, the real Prometheus. A blueGreen Rollout with `scaleDownDelaySeconds: 30` is
promoted while its first version holds connections: that version is still up well past the
controller's 30 s (rainbowd keeps its deadline ahead), and once its connections are gone the
controller scales it down within a few of rainbowd's cycles (rainbowd set its deadline to
now). The live version is never touched.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import SCALE_DOWN_DEADLINE
from rainbowd.core.objects import parse_time
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.e2e.harness import eventually
from tests.e2e.test_consolidation import policy_daemon, policy_text
from tests.exposition import Exposition
from tests.integration.test_rollout_colors_controller import APP, DELAY, exposition, serve
from tests.rollouts import (
    WITHIN,
    create_rollout,
    healthy,
    reconciled,
    replica_sets,
    roll,
    rollouts_controller,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster_full,
    pytest.mark.prometheus,
    pytest.mark.usefixtures("rollouts_controller"),
]
__all__ = ["exposition", "rollouts_controller"]


async def replicas_of(api: ApiClient, namespace: str, color: str) -> int:
    found: int = (await replica_sets(api, namespace, APP))[color]["spec"]["replicas"]
    return found


async def test_a_held_first_version_outlives_the_delay_and_goes_once_drained(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    exposition: Exposition,
    tmp_path: Path,
) -> None:
    prometheus.set_targets([(exposition.target, {})])
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        policy_text(prometheus.url, namespace, consolidate="null", more="deadlineAhead: 5m")
    )
    daemon = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-promotion")
    daemon.start()
    try:
        await daemon.wait_ready()
        first = await create_rollout(kube_api, namespace, APP, scale_down_delay=DELAY)
        serve(exposition, namespace, {first: 2})
        second = await roll(kube_api, namespace, APP, 2)
        serve(exposition, namespace, {first: 2, second: 1})
        await healthy(kube_api, namespace, APP)
        promoted = datetime.now(UTC)

        async def past_the_delay() -> bool:
            return datetime.now(UTC) > promoted + timedelta(seconds=DELAY + 5)

        await eventually(past_the_delay, within=DELAY + WITHIN, what="the controller's delay")
        await reconciled(kube_api, namespace, APP)
        assert await replicas_of(kube_api, namespace, first) == 1, "cut while connected"

        serve(exposition, namespace, {first: 0, second: 1})

        async def scaled_down() -> bool:
            return await replicas_of(kube_api, namespace, first) == 0

        await eventually(scaled_down, within=WITHIN, what="the drained version scaled down")
        assert await replicas_of(kube_api, namespace, second) == 1
    finally:
        if daemon.process.running():
            await daemon.terminate()


async def test_with_rainbowd_stopped_the_controllers_own_timer_takes_over(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    exposition: Exposition,
    tmp_path: Path,
) -> None:
    """rainbowd never leaves a deadline further ahead than deadlineAhead (20 s here): stopped
    while the first version still holds connections, the controller scales it down by then."""
    prometheus.set_targets([(exposition.target, {})])
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        policy_text(prometheus.url, namespace, consolidate="null", more="deadlineAhead: 20s")
    )
    daemon = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-stopped")
    daemon.start()
    try:
        await daemon.wait_ready()
        first = await create_rollout(kube_api, namespace, APP, scale_down_delay=DELAY)
        serve(exposition, namespace, {first: 2})
        second = await roll(kube_api, namespace, APP, 2)
        serve(exposition, namespace, {first: 2, second: 1})
        await healthy(kube_api, namespace, APP)
        promoted = datetime.now(UTC)

        async def past_the_delay() -> bool:
            return datetime.now(UTC) > promoted + timedelta(seconds=DELAY + 5)

        await eventually(past_the_delay, within=DELAY + WITHIN, what="the controller's delay")
        assert await replicas_of(kube_api, namespace, first) == 1, "cut while connected"
    finally:
        if daemon.process.running():
            assert await daemon.terminate() == 0
    # The deadline rainbowd left is within deadlineAhead of now (stamped a second up).
    old = (await replica_sets(kube_api, namespace, APP))[first]
    left = parse_time(old["metadata"]["annotations"][SCALE_DOWN_DEADLINE])
    assert left <= datetime.now(UTC) + timedelta(seconds=21)

    async def scaled_down() -> bool:
        return await replicas_of(kube_api, namespace, first) == 0

    await eventually(scaled_down, within=WITHIN, what="the controller's own timer")
    assert await replicas_of(kube_api, namespace, second) == 1
