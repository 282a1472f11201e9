"""An Argo Rollout's colors end to end, with rainbowd as a child process: Argo Rollouts' CRDs on
the real apiserver, a blueGreen Rollout with two ReplicaSets as Argo Rollouts leaves them after a
promotion (the old one stamped `scale-down-deadline` 30 s ahead), real demo_app processes
exporting each color's connections to the real Prometheus. While a client holds a connection to
the old color, rainbowd keeps its deadline ahead; once the client leaves and the color drains,
rainbowd sets the deadline to now. It never writes the ReplicaSets' replicas, never touches the
live one, and says so on the Rollout and the ReplicaSet.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import SCALE_DOWN_DEADLINE
from rainbowd.core.objects import parse_time
from rainbowd_sandbox.controlplane import ControlPlane
from rainbowd_sandbox.prometheus import PrometheusServer
from tests.demoapps import DemoApp
from tests.e2e.harness import eventually, fetch_json
from tests.e2e.test_consolidation import policy_daemon, policy_text
from tests.integration.test_events import list_events
from tests.integration.test_rollout_colors import (
    APP,
    NEW,
    OLD,
    get_rs,
    make_rollout,
    retired_held,
    rollout_crds,
)

pytestmark = [pytest.mark.e2e, pytest.mark.cluster_full, pytest.mark.prometheus]
__all__ = ["rollout_crds"]


def deadline_of(rs: dict[str, Any]) -> datetime | None:
    text = (rs["metadata"].get("annotations") or {}).get(SCALE_DOWN_DEADLINE)
    return None if text is None else parse_time(text)


@pytest.mark.usefixtures("rollout_crds")
async def test_rainbowd_keeps_a_held_colors_deadline_and_brings_it_to_now_once_drained(
    cluster_full: ControlPlane,
    namespace: str,
    kube_api: ApiClient,
    prometheus: PrometheusServer,
    tmp_path: Path,
) -> None:
    await make_rollout(kube_api, namespace, old_annotations=retired_held())
    argo_deadline = deadline_of(await get_rs(kube_api, namespace, f"{APP}-{OLD}"))
    assert argo_deadline is not None
    apps = [
        DemoApp(color, workdir=tmp_path, namespace=namespace, app=APP, interval=0.2).start()
        for color in (NEW, OLD)
    ]
    policy = tmp_path / "policy.yaml"
    text = policy_text(
        prometheus.url,
        namespace,
        consolidate="null",
        kinds="[Deployment, Rollout]",
        more="deadlineAhead: 5m",
    )
    policy.write_text(text)
    daemon = policy_daemon(cluster_full, namespace, tmp_path, policy, "rainbowd-rollouts")
    try:
        prometheus.set_targets([(app.target, {}) for app in apps])
        reader, writer = await asyncio.open_connection("127.0.0.1", apps[1].tcp_port)
        await asyncio.wait_for(reader.readline(), 30)

        async def seen_held() -> bool:
            doc = await fetch_json(daemon.url + "/status")
            apps_planned = (doc.get("plan") or {}).get("apps") or []
            colors = {c["color"]: c for a in apps_planned for c in a["colors"]}
            old = colors.get(OLD)
            return old is not None and old["connections"]["value"] == 1

        daemon.start()
        await daemon.wait_ready()
        await eventually(seen_held, what="rainbowd to see the old color holding its client")

        async def kept() -> bool:
            deadline = deadline_of(await get_rs(kube_api, namespace, f"{APP}-{OLD}"))
            return deadline is not None and deadline > argo_deadline + timedelta(minutes=2)

        await eventually(kept, what="the old color's deadline kept ahead")
        doc = await fetch_json(daemon.url + "/status")
        kinds = {c["color"]: c["kind"] for a in doc["plan"]["apps"] for c in a["colors"]}
        assert kinds == {NEW: "Rollout", OLD: "Rollout"}

        writer.close()
        await writer.wait_closed()

        async def brought_to_now() -> bool:
            deadline = deadline_of(await get_rs(kube_api, namespace, f"{APP}-{OLD}"))
            return deadline is not None and deadline <= datetime.now(UTC)

        await eventually(brought_to_now, what="the drained color's deadline set to now")
        old = await get_rs(kube_api, namespace, f"{APP}-{OLD}")
        live = await get_rs(kube_api, namespace, f"{APP}-{NEW}")
        assert old["spec"]["replicas"] == 1  # Argo Rollouts' to scale, not rainbowd's
        assert live["spec"]["replicas"] == 1
        assert deadline_of(live) is None
        assert "rainbowd.io/original-replicas" not in (live["metadata"].get("annotations") or {})

        async def told() -> bool:
            events = await list_events(kube_api, namespace)
            on_rollout = {e["reason"] for e in events if e["regarding"]["kind"] == "Rollout"}
            return {"DeadlineKept", "ScaledDown"} <= on_rollout

        await eventually(told, what="DeadlineKept and ScaledDown Events on the Rollout")
    finally:
        if daemon.process.running():
            await daemon.terminate()
        for app in apps:
            app.close()
