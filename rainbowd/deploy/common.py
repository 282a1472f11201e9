"""What every deploy command shares: the app and its colors read into core's `Deployment` and
`Service`, which colors are live (the planner's own definition, `Service.selects`), the Service
switch under a resourceVersion precondition, Events and annotation writes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import LIVE_AT, Deployment, Service
from rainbowd.core.objects import (
    ObjectError,
    deployment_from_k8s,
    format_time,
    service_from_k8s,
)
from rainbowd.kube.clients import (
    MERGE_PATCH,
    Conflict,
    KubeError,
    NotFound,
    request_json,
    resource_path,
)
from rainbowd.kube.events import EventRecorder

# Annotations on the app's Service: what to roll back to, and the color a canary is trying.
PREVIOUS_COLOR = "rainbowd.io/previous-color"
CANARY_COLOR = "rainbowd.io/canary-color"

SWITCH_ATTEMPTS = 5
"""Service writes retried when the Service changed in ways that do not matter to a deploy."""

_HEX_COLOR = re.compile(r"[0-9a-f]{6}")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_EVENT_COMPONENT = "rainbowd-deploy"


class DeployError(Exception):
    """A deploy, rollback or promote did not happen; the message says why, for a human."""


class UsageError(DeployError):
    """The input is wrong (a bad color, a template without a Deployment): nothing was done."""


Say = Callable[[str], None]


def quiet(_text: str) -> None:
    pass


def validate_color(color: str) -> str:
    """The color as given, if it is six hex digits or a DNS label; UsageError otherwise."""
    if _HEX_COLOR.fullmatch(color):
        return color
    if len(color) <= 63 and _DNS_LABEL.fullmatch(color):
        return color
    raise UsageError(
        f"color {color!r}: expected six hex digits (a git sha's first six) or a DNS label "
        "(lowercase letters, digits and '-', at most 63 characters)"
    )


@dataclass(frozen=True)
class AppRef:
    """One app in one namespace, and the Service that decides which of its colors is live."""

    namespace: str
    app: str
    service: str | None = None  # default: the template's Service, else one named like the app
    app_label: str = "app"
    color_label: str = "color"

    @property
    def service_name(self) -> str:
        return self.service or self.app


@dataclass(frozen=True)
class ServiceSwitch:
    """What a deploy, rollback or promote did to the app's Service, for its last line and for
    tests: the color it selects now, the one it selected before, whether it changed."""

    color: str
    previous: str | None
    changed: bool
    message: str
    deployment: str = ""


# --- reading ------------------------------------------------------------------------------------


def deployments_path(namespace: str, name: str | None = None) -> str:
    return resource_path("apps/v1", "deployments", namespace=namespace, name=name)


def service_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "services", namespace=namespace, name=name)


async def get(api: ApiClient, path: str) -> dict[str, Any] | None:
    try:
        return await request_json(api, "GET", path)
    except NotFound:
        return None


@dataclass(frozen=True)
class Color:
    """One color's Deployment: core's model, which every decision reads, and the object as the
    API returned it, which only a clone copies and a pod listing takes its selector from."""

    deployment: Deployment
    body: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.deployment.name


def read_color(obj: Mapping[str, Any]) -> Color:
    try:
        return Color(deployment_from_k8s(obj), obj)
    except ObjectError as exc:
        raise DeployError(str(exc)) from exc


async def namespace_colors(api: ApiClient, namespace: str) -> list[Color]:
    listing = await request_json(api, "GET", deployments_path(namespace))
    return [read_color(item) for item in listing.get("items") or []]


async def app_colors(api: ApiClient, ref: AppRef) -> dict[str, Color]:
    """The app's Deployments by color (the pod template's labels), oldest first."""
    found = []
    for item in await namespace_colors(api, ref.namespace):
        labels = item.deployment.template_labels
        color = labels.get(ref.color_label)
        if labels.get(ref.app_label) == ref.app and color:
            found.append((item.deployment.created_at, color, item))
    found.sort(key=lambda entry: (entry[0], entry[1]))
    return {color: item for _created, color, item in found}


@dataclass(frozen=True)
class AppService:
    """The app's Service: core's model (what it selects) and what a switch needs besides,
    rainbowd's annotations on it and the resourceVersion it was read at."""

    service: Service
    annotations: Mapping[str, str]
    resource_version: str

    @property
    def selector(self) -> Mapping[str, str]:
        return self.service.selector


def read_service(obj: Mapping[str, Any]) -> AppService:
    meta = obj.get("metadata") or {}
    try:
        service = service_from_k8s(obj)
    except ObjectError as exc:
        raise DeployError(str(exc)) from exc
    return AppService(
        service=service,
        annotations=dict(meta.get("annotations") or {}),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


async def app_service(api: ApiClient, ref: AppRef) -> AppService | None:
    obj = await get(api, service_path(ref.namespace, ref.service_name))
    return None if obj is None else read_service(obj)


def live_colors(service: Service, colors: Mapping[str, Deployment]) -> list[str]:
    """The colors `service` sends new connections to, as the planner decides it: its selector
    is not empty and is a subset of the color's pod-template labels (`Service.selects`)."""
    return [color for color, d in colors.items() if service.selects(d.template_labels)]


def canary_color(service: AppService, ref: AppRef) -> str | None:
    """The canary color when the Service selects the app only, as `deploy --canary` leaves it."""
    if ref.color_label in service.selector:
        return None
    return service.annotations.get(CANARY_COLOR)


def models(colors: Mapping[str, Color]) -> dict[str, Deployment]:
    return {color: item.deployment for color, item in colors.items()}


def rainbow_service(
    service: AppService, colors: Mapping[str, Color], ref: AppRef
) -> tuple[str | None, str | None]:
    """(live color, canary color) of the app's Service: the color of the app it selects (None
    when it selects none of them), or during a canary the canary, whose Service selects every
    color of the app. An error when the Service is neither a rainbow Service nor a canary."""
    canary = canary_color(service, ref)
    if canary is not None:
        return None, canary
    if ref.color_label not in service.selector:
        raise DeployError(
            f"Service {ref.namespace}/{ref.service_name} selects {dict(service.selector)}: no "
            f"{ref.color_label!r} label and no {CANARY_COLOR} annotation, so it is not a "
            "rainbow Service rainbowd can switch"
        )
    # A selector naming the color label selects at most that one color.
    live = live_colors(service.service, models(colors))
    return (live[0] if live else None), None


# --- writing ------------------------------------------------------------------------------------


def ours(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k in (PREVIOUS_COLOR, CANARY_COLOR)}


def show_selector(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "nothing"


def _deleted(ref: AppRef) -> DeployError:
    return DeployError(
        f"Service {ref.namespace}/{ref.service_name} was deleted meanwhile; not switched"
    )


async def switch_service(
    api: ApiClient,
    ref: AppRef,
    read: AppService,
    *,
    selector: Mapping[str, str | None],
    annotations: Mapping[str, str | None],
) -> AppService:
    """Writes the Service's selector and annotations, with the resourceVersion it was `read` at
    as a precondition. When it changed since, and its selector or rainbowd's annotations differ
    from what was read, another deploy or rollback won: DeployError, nothing written. Other
    changes (a label, a port) are not ours to judge: the write is retried on the new version."""
    path = service_path(ref.namespace, ref.service_name)
    expected = (dict(read.selector), ours(read.annotations))
    version = read.resource_version
    for _attempt in range(SWITCH_ATTEMPTS):
        body = {
            "metadata": {"resourceVersion": version, "annotations": dict(annotations)},
            "spec": {"selector": dict(selector)},
        }
        try:
            patched = await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)
            return read_service(patched)
        except NotFound:
            raise _deleted(ref) from None
        except Conflict:
            obj = await get(api, path)
            if obj is None:
                raise _deleted(ref) from None
            current = read_service(obj)
            if (dict(current.selector), ours(current.annotations)) != expected:
                raise DeployError(
                    f"Service {ref.namespace}/{ref.service_name} changed while this command "
                    f"ran: it selected {show_selector(expected[0])}, now "
                    f"{show_selector(current.selector)} (another deploy or rollback won); left "
                    "as it is, not switched"
                ) from None
            version = current.resource_version
    raise DeployError(
        f"Service {ref.namespace}/{ref.service_name} kept changing; not switched after "
        f"{SWITCH_ATTEMPTS} attempts"
    )


async def record(
    api: ApiClient, deployment: Deployment, *, reason: str, note: str, action: str
) -> None:
    """A Normal Event on the color's Deployment, as the deploy commands write them."""
    recorder = EventRecorder(api, component=_EVENT_COMPONENT, instance=_EVENT_COMPONENT)
    await recorder.emit(
        kind="Deployment",
        api_version="apps/v1",
        namespace=deployment.namespace,
        name=deployment.name,
        uid=deployment.uid,
        type="Normal",
        reason=reason,
        note=note,
        action=action,
    )


async def patch_annotations(
    api: ApiClient, namespace: str, name: str, annotations: Mapping[str, str | None]
) -> dict[str, Any]:
    return await request_json(
        api,
        "PATCH",
        deployments_path(namespace, name),
        body={"metadata": {"annotations": dict(annotations)}},
        content_type=MERGE_PATCH,
    )


async def stamp_was_live(
    api: ApiClient, ref: AppRef, color: str | None, *, now: datetime, say: Say
) -> None:
    """The color the Service stopped selecting was live: stamped so when rainbowd has not done it
    yet, it is retired and follows the policy; unstamped and newer than the live color, it would
    be planned as a rollout still pending, and kept forever."""
    if color is None:
        return
    try:
        found = (await app_colors(api, ref)).get(color)
        if found is None or LIVE_AT in found.deployment.annotations:
            return
        await patch_annotations(api, ref.namespace, found.name, {LIVE_AT: format_time(now)})
    except KubeError as exc:
        say(
            f"warning: #{color}: {LIVE_AT} not written ({exc}); until rainbowd sees it, a color "
            "newer than the live one is planned as pending and kept"
        )
