"""Waiting for a color to roll out (`Deployment.rolled_out`, built on the planner's
`Deployment.available`), with progress lines and an early stop on what will not fix itself;
then what a smoke check gets to see of it, and the check itself."""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import Deployment
from rainbowd.core.reporting import compact_duration
from rainbowd.deploy.common import (
    AppRef,
    Color,
    DeployError,
    Say,
    deployments_path,
    get,
    quiet,
    read_color,
)
from rainbowd.kube.clients import request_json, resource_path

# Container waiting reasons that will not fix themselves while a deploy waits.
FATAL_WAITING = frozenset(
    {"ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CrashLoopBackOff"}
)
POLL_INTERVAL = 1.0
"""Seconds between two looks at a rolling-out color: a GET and a pod LIST, cheap."""
PROGRESS_EVERY = 10.0
"""Seconds between two progress lines when nothing changes, so CI logs show the wait is alive."""
STUCK_AFTER = 10.0
"""Seconds without progress before the progress line adds the last Pod event."""


@dataclass(frozen=True)
class ReadyColor:
    """A color that became Available: what a smoke check gets to look at."""

    namespace: str
    app: str
    color: str
    deployment: str
    previous_color: str | None
    pods: tuple[tuple[str, str], ...]  # (name, IP) of each ready pod

    def environment(self) -> dict[str, str]:
        """The variables a --check command sees."""
        return {
            "RAINBOWD_NAMESPACE": self.namespace,
            "RAINBOWD_APP": self.app,
            "RAINBOWD_COLOR": self.color,
            "RAINBOWD_DEPLOYMENT": self.deployment,
            "RAINBOWD_PREVIOUS_COLOR": self.previous_color or "",
            "RAINBOWD_POD_NAMES": " ".join(name for name, _ip in self.pods),
            "RAINBOWD_POD_IPS": " ".join(ip for _name, ip in self.pods if ip),
        }


Check = Callable[[ReadyColor], Awaitable[None]]


def command_check(command: str, *, say: Say = quiet) -> Check:
    """A check that runs `command` in a shell with the color's pods in its environment."""

    async def run(ready: ReadyColor) -> None:
        say(f"check: {command}")
        env = {**os.environ, **ready.environment()}
        try:
            proc = await asyncio.create_subprocess_shell(command, env=env)
        except OSError as exc:
            raise DeployError(f"check {shlex.quote(command)} could not start: {exc}") from exc
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        if code != 0:
            raise DeployError(f"check {shlex.quote(command)} failed with exit code {code}")
        say("check passed")

    return run


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


async def _color_pods(api: ApiClient, color: Color) -> list[dict[str, Any]]:
    # The Deployment's own selector: the model keeps its pod template's labels, not it.
    match = ((color.body.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    listing = await request_json(
        api,
        "GET",
        resource_path("v1", "pods", namespace=color.deployment.namespace),
        query={"labelSelector": selector},
    )
    return [p for p in listing.get("items") or [] if not p["metadata"].get("deletionTimestamp")]


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _fatal_reason(pods: Sequence[Mapping[str, Any]]) -> str | None:
    for pod in pods:
        status = pod.get("status") or {}
        for cs in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in FATAL_WAITING:
                message = waiting.get("message") or ""
                return f"{reason}: pod {_pod_name(pod)} container {cs.get('name')}" + (
                    f": {message}" if message else ""
                )
    return None


async def _last_pod_event(api: ApiClient, namespace: str, pods: Sequence[str]) -> str | None:
    if not pods:
        return None
    listing = await request_json(
        api,
        "GET",
        resource_path("v1", "events", namespace=namespace),
        query={"fieldSelector": "involvedObject.kind=Pod"},
    )
    wanted = set(pods)
    found = [
        e
        for e in listing.get("items") or []
        if (e.get("involvedObject") or {}).get("name") in wanted
    ]
    if not found:
        return None

    def when(event: Mapping[str, Any]) -> str:
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("firstTimestamp")
            or ""
        )

    latest = max(found, key=when)
    return (
        f"{latest.get('reason')} on pod {(latest.get('involvedObject') or {}).get('name')}: "
        f"{' '.join(str(latest.get('message') or '').split())}"
    )


def _progress_deadline(deployment: Deployment) -> str | None:
    cond = deployment.condition("Progressing")
    if cond is not None and cond.reason == "ProgressDeadlineExceeded":
        return f"ProgressDeadlineExceeded: {cond.message}".rstrip(": ")
    return None


def _unready(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    return [_pod_name(p) for p in pods if not _pod_ready(p)]


async def wait_available(
    api: ApiClient, namespace: str, name: str, *, within: float, say: Say = quiet
) -> Color:
    """Polls the Deployment until it has rolled out; DeployError at once on a progress deadline
    exceeded or a pod whose container cannot start, or when `within` seconds pass."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    last_line = shown = ""
    last_shown = start
    last_change = start
    while True:
        obj = await get(api, deployments_path(namespace, name))
        if obj is None:
            raise DeployError(f"{name} was deleted while waiting for it to become Available")
        color = read_color(obj)
        deployment = color.deployment
        if deployment.rolled_out:
            return color
        pods = await _color_pods(api, color)
        fatal = _progress_deadline(deployment) or _fatal_reason(pods)
        wanted, ready = deployment.replicas, deployment.ready_replicas
        now = loop.time()
        elapsed = timedelta(seconds=round(now - start))
        line = f"{name}: {ready}/{wanted} ready, {deployment.updated_replicas} updated"
        if line != last_line:
            last_line, last_change = line, now
        if fatal is not None:
            event = await _last_pod_event(api, namespace, [_pod_name(p) for p in pods])
            raise DeployError(
                f"{name} will not become Available: {fatal}"
                + (f" (last pod event: {event})" if event else "")
            )
        if now - start > within:
            event = await _last_pod_event(api, namespace, _unready(pods))
            raise DeployError(
                f"{name} not Available after {compact_duration(timedelta(seconds=within))}: "
                f"{ready}/{wanted} ready" + (f"; last pod event: {event}" if event else "")
            )
        if line != shown or now - last_shown >= PROGRESS_EVERY:
            extra = ""
            if now - last_change >= STUCK_AFTER:
                event = await _last_pod_event(api, namespace, _unready(pods))
                extra = f"; last pod event: {event}" if event else ""
            say(f"waiting: {line}, {compact_duration(elapsed)} elapsed{extra}")
            shown, last_shown = line, now
        await asyncio.sleep(POLL_INTERVAL)


async def ready_color(
    api: ApiClient, color: Color, ref: AppRef, previous: str | None
) -> ReadyColor:
    pods = await _color_pods(api, color)
    return ReadyColor(
        namespace=ref.namespace,
        app=ref.app,
        color=color.deployment.template_labels.get(ref.color_label, ""),
        deployment=color.name,
        previous_color=previous,
        pods=tuple(
            sorted(
                (_pod_name(p), str((p.get("status") or {}).get("podIP") or ""))
                for p in pods
                if _pod_ready(p)
            )
        ),
    )


def is_available(obj: Mapping[str, Any]) -> bool:
    """Whether a Deployment object, as the API returns it, has rolled out
    (`Deployment.rolled_out`): what a deploy waits for."""
    return read_color(obj).deployment.rolled_out
