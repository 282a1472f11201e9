"""In-memory stand-ins for the two parts of the daemon's cycle that talk to the apiserver (the
watch cache and the executor), for driving `Reconciler` where the cluster is not what is tested:
the cycle's own CPU (tests/bench) and its properties over generated snapshots (tests/unit)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from rainbowd.core.model import ColorObject, Deployment, Plan, Service, Snapshot
from rainbowd.kube.caching import PodMark
from rainbowd.kube.executing import ActionOutcome, ActionResult


class MemoryCache:
    """What the reconciler reads of the watch cache, held in memory."""

    def __init__(
        self,
        deployments: Mapping[str, list[Deployment]],
        services: Mapping[str, list[Service]],
    ) -> None:
        self._deployments = dict(deployments)
        self._services = dict(services)
        self.changed = asyncio.Event()
        self.synced = True

    def deployments(self) -> dict[str, list[Deployment]]:
        return self._deployments

    def services(self) -> dict[str, list[Service]]:
        return self._services

    def watch_pods(self, app_label: str, color_label: str) -> None:
        pass

    def pods(self) -> list[PodMark] | None:
        return None

    def objects(self) -> dict[str, list[ColorObject]] | None:
        return {}


class NoExecutor:
    """Acts on nothing, keeping what it was asked: every action reads as done (`done`), or none
    is reported at all."""

    app_label = "app"
    color_label = "color"

    def __init__(self, *, done: bool = True) -> None:
        self.done = done
        self.applied: list[Plan] = []
        self.warned: list[str] = []

    async def apply(self, plan: Plan, *, stop: asyncio.Event) -> list[ActionResult]:
        self.applied.append(plan)
        return [ActionResult(action, ActionOutcome.OK) for action in plan.actions if self.done]

    async def mark_pods(self, plan: Plan, pods: Iterable[PodMark] | None) -> int:
        return 0

    async def keep_costs(
        self, plan: Plan, snapshot: Snapshot, pods: Iterable[PodMark] | None
    ) -> int:
        return 0

    async def report_warnings(self, plan: Plan, snapshot: Snapshot, warnings: Iterable[str]) -> int:
        listed = list(warnings)
        self.warned.extend(listed)
        return len(listed)
