"""Where the policy comes from: a file or a ConfigMap, read once (`read_policy`, for `rainbowd plan`
and the daemon's start) or watched (`PolicyWatcher`). Every source ends in rainbowd.policyfile's
decoders, so a ConfigMap becomes a Policy in one place; `PolicyState` is the policy in force.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.policy import (
    Policy,
    PolicyError,
    narrowing_warnings,
    policy_to_document,
    policy_warnings,
)
from rainbowd.kube.caching import CONFIGMAPS, Informer, configmap_from_k8s
from rainbowd.kube.clients import NotFound, request_json, resource_path
from rainbowd.kube.events import EventRecorder
from rainbowd.logs import get_logger
from rainbowd.metrics import Metrics
from rainbowd.policyfile import configmap_policy_text, load_policy_file, policy_from_configmap
from rainbowd.settings import PolicySource
from rainbowd.status import PolicyStatus

log = get_logger(__name__)


def configmap_source(namespace: str, name: str) -> str:
    """How errors about the policy ConfigMap name it."""
    return f"configmap {namespace}/{name}"


async def read_policy(api: ApiClient, source: PolicySource) -> Policy:
    """The policy from its source, read once; PolicyError (path-prefixed) when invalid."""
    if source.file is not None:
        return load_policy_file(source.file)
    assert source.configmap_namespace and source.configmap_name
    where = configmap_source(source.configmap_namespace, source.configmap_name)
    path = resource_path(
        "v1", "configmaps", namespace=source.configmap_namespace, name=source.configmap_name
    )
    try:
        configmap = await request_json(api, "GET", path)
    except NotFound:
        raise PolicyError([f"{where}: not found"]) from None
    return policy_from_configmap(configmap, source=where)


@dataclass
class PolicyState:
    """The policy in force and what the latest read of the source said about it."""

    source: str
    metrics: Metrics
    policy: Policy | None = None
    valid: bool = False
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    loaded_at: datetime | None = None
    generation: int = 0  # bumped on each applied policy
    namespaces: tuple[str, ...] = ()
    """The namespaces managed (`--namespaces`; empty: all): every policy applied is narrowed
    to them, so its queries ask Prometheus for this rainbowd's share of the series only."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a policy is applied, so the loop runs a cycle with it straight away."""

    def accept(self, policy: Policy, **fields: Any) -> None:
        """A valid read: `policy`, narrowed to the namespaces managed, is in force from now on."""
        self.policy = policy.narrowed(self.namespaces)
        self.valid = True
        self.errors = []
        self.warnings = policy_warnings(policy) + narrowing_warnings(policy, self.namespaces)
        self.loaded_at = datetime.now(UTC)
        self.generation += 1
        self.metrics.policy_valid.set(1)
        self.metrics.policy_reloads.labels(result="applied").inc()
        log.info("policy applied", source=self.source, rules=len(policy.rules), **fields)
        for warning in self.warnings:
            log.warning("policy warning", source=self.source, warning=warning)
        self.changed.set()

    def reject(self, errors: list[str]) -> None:
        """An invalid read: the last good policy, if any, stays in force."""
        self.valid = False
        self.errors = errors
        self.metrics.policy_valid.set(0)
        self.metrics.policy_reloads.labels(result="invalid").inc()
        kept = "none" if self.policy is None else "last good"
        for error in errors:
            log.error("policy invalid", source=self.source, error=error, kept=kept)

    def load_file(self, path: str) -> bool:
        """Read the policy file once; False (errors logged) when it is invalid."""
        try:
            policy = load_policy_file(path)
        except PolicyError as exc:
            self.reject(exc.errors)
            return False
        self.accept(policy)
        return True

    def status(self) -> PolicyStatus:
        return PolicyStatus(
            source=self.source,
            valid=self.valid,
            errors=tuple(self.errors),
            warnings=tuple(self.warnings),
            loaded_at=self.loaded_at,
            policy=None if self.policy is None else policy_to_document(self.policy),
        )


class PolicyWatcher:
    """Keeps `state.policy` current from a ConfigMap's `policy.yaml`.

    An invalid edit keeps the last good policy: every error is logged with its path,
    rainbowd_policy_valid drops to 0 and a Warning Event lands on the ConfigMap. A valid edit
    replaces the policy in `state`.
    """

    def __init__(
        self,
        api: ApiClient,
        namespace: str,
        name: str,
        *,
        state: PolicyState,
        recorder: EventRecorder,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.namespace = namespace
        self.name = name
        # Every replica reloads the policy, but only the leader writes the Warning Event, so
        # one bad edit gives one Event, not one per replica.
        self.leading = leading
        self.state = state
        self.recorder = recorder
        self._dirty = asyncio.Event()
        # The policy text of the last read, boxed so "no text" differs from "not read yet".
        self._last_text: tuple[str | None] | None = None
        self._missing_reported = False
        self.informer: Informer[dict[str, Any]] = Informer(
            api,
            CONFIGMAPS,
            configmap_from_k8s,
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            on_change=lambda _event, _key: self._dirty.set(),
        )

    @property
    def synced(self) -> bool:
        return self.informer.synced.is_set()

    async def run(self) -> None:
        informer = asyncio.create_task(self.informer.run(), name="policy informer")
        try:
            await self.informer.synced.wait()
            self._dirty.set()  # the first list may have found nothing: report that too
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                await self.reload()
        finally:
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    async def reload(self) -> None:
        where = configmap_source(self.namespace, self.name)
        configmap = self.informer.get(self.namespace, self.name)
        if configmap is None:
            self._last_text = None
            if not self._missing_reported:
                self._missing_reported = True
                self.state.reject([f"{where}: not found"])
            return
        self._missing_reported = False
        text = (configmap_policy_text(configmap),)
        if text == self._last_text:
            return  # another key or the metadata changed, not the policy
        self._last_text = text
        try:
            policy = policy_from_configmap(configmap, source=where)
        except PolicyError as exc:
            self.state.reject(exc.errors)
            await self._report_invalid(exc.errors, configmap)
            return
        version = configmap.get("metadata", {}).get("resourceVersion", "")
        self.state.accept(policy, resource_version=version)

    async def _report_invalid(self, errors: list[str], configmap: Mapping[str, Any]) -> None:
        if not self.leading():
            return
        meta = configmap.get("metadata", {})
        kept = (
            "the last good policy stays in force"
            if self.state.policy is not None
            else "no policy is in force"
        )
        await self.recorder.emit(
            kind="ConfigMap",
            api_version="v1",
            namespace=self.namespace,
            name=self.name,
            uid=str(meta.get("uid") or ""),
            type="Warning",
            reason="InvalidPolicy",
            note=f"{'; '.join(errors)} ({kept})",
            action="LoadPolicy",
        )
