"""The story of a Rollout color end to end: rainbowd as a child process, Argo Rollouts' real
controller, the real Prometheus. A blueGreen Rollout with `scaleDownDelaySeconds: 30` is
promoted while its first version holds connections: that version is still up well past the
controller's 30 s (rainbowd keeps its deadline ahead), and once its connections are gone the
controller scales it down within a few of rainbowd's cycles (rainbowd set its deadline to
now). The live version is never touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
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


@dataclass
class Story:
    """What the tests share: the parts, and the first version held through a promotion."""

    cluster: ControlPlane
    namespace: str
    api: ApiClient
    prometheus: PrometheusServer
    exposition: Exposition
    workdir: Path

    async def held_through_promotion(self, ahead: str, identity: str) -> tuple[str, str]:
        """rainbowd started (`ahead` its deadlineAhead), the Rollout created and promoted while
        its first version holds 2 connections, the controller's delay and a reconcile passed
        with that version still up: (the first color, the second)."""
        self.prometheus.set_targets([(self.exposition.target, {})])
        policy = self.workdir / "policy.yaml"
        more = f"deadlineAhead: {ahead}"
        policy.write_text(
            policy_text(
                self.prometheus.url,
                self.namespace,
                consolidate="null",
                kinds="[Deployment, Rollout]",
                more=more,
            )
        )
        self.daemon = policy_daemon(self.cluster, self.namespace, self.workdir, policy, identity)
        self.daemon.start()
        await self.daemon.wait_ready()
        api, namespace = self.api, self.namespace
        first = await create_rollout(api, namespace, APP, scale_down_delay=DELAY)
        serve(self.exposition, namespace, {first: 2})
        second = await roll(api, namespace, APP, 2)
        serve(self.exposition, namespace, {first: 2, second: 1})
        await healthy(api, namespace, APP)
        promoted = datetime.now(UTC)

        async def past_the_delay() -> bool:
            return datetime.now(UTC) > promoted + timedelta(seconds=DELAY + 5)

        await eventually(past_the_delay, within=DELAY + WITHIN, what="the controller's delay")
        await reconciled(api, namespace, APP)
        assert await replicas_of(api, namespace, first) == 1, "cut while connected"
        return first, second

    async def stop(self) -> None:
        daemon = getattr(self, "daemon", None)
        if daemon is not None and daemon.process.running():
            assert await daemon.terminate() == 0


@pytest.fixture
async def story(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    exposition: Exposition,
    tmp_path: Path,
) -> AsyncIterator[Story]:
    told = Story(cluster_full, namespace, kube_api, prometheus, exposition, tmp_path)
    try:
        yield told
    finally:
        await told.stop()


async def test_a_held_first_version_outlives_the_delay_and_goes_once_drained(
    story: Story,
) -> None:
    first, second = await story.held_through_promotion("5m", "rainbowd-promotion")
    serve(story.exposition, story.namespace, {first: 0, second: 1})

    async def scaled_down() -> bool:
        return await replicas_of(story.api, story.namespace, first) == 0

    await eventually(scaled_down, within=WITHIN, what="the drained version scaled down")
    assert await replicas_of(story.api, story.namespace, second) == 1


async def test_with_rainbowd_stopped_the_controllers_own_timer_takes_over(story: Story) -> None:
    """rainbowd never leaves a deadline further ahead than deadlineAhead (20 s here): stopped
    while the first version still holds connections, the controller scales it down by then."""
    first, second = await story.held_through_promotion("20s", "rainbowd-stopped")
    await story.stop()
    # The deadline rainbowd left is within deadlineAhead of now (stamped a second up).
    old = (await replica_sets(story.api, story.namespace, APP))[first]
    left = parse_time(old["metadata"]["annotations"][SCALE_DOWN_DEADLINE])
    assert left <= datetime.now(UTC) + timedelta(seconds=21)

    async def scaled_down() -> bool:
        return await replicas_of(story.api, story.namespace, first) == 0

    await eventually(scaled_down, within=WITHIN, what="the controller's own timer")
    assert await replicas_of(story.api, story.namespace, second) == 1
