"""Rainbow deploys, performed: a color's Deployment created and waited on until Available, an
optional smoke check, then the Service switched under a resourceVersion precondition; rollback,
canary promotion, holds, and the history of an app's colors. The CLI and the sandbox share it.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    CONSOLIDATED_FROM,
    DRAINED_SINCE,
    HOLD_REASON,
    HOLD_UNTIL,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    RETIRED_AT,
    RETIREMENT,
)
from rainbowd.core.objects import format_time, parse_time
from rainbowd.core.reporting import compact_duration
from rainbowd.kube.clients import (
    MERGE_PATCH,
    Conflict,
    KubeError,
    NotFound,
    request_json,
    resource_path,
)
from rainbowd.kube.events import REPORTING_CONTROLLER, EventRecorder

# Annotations on the app's Service: what to roll back to, and the color a canary is trying.
PREVIOUS_COLOR = "rainbowd.io/previous-color"
CANARY_COLOR = "rainbowd.io/canary-color"

COLOR_PLACEHOLDER = "__COLOR__"
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
ROLLBACK_HOLD_MARGIN = timedelta(minutes=5)
"""A rollback holds its target for its timeout plus this: if the command dies, it lapses."""
SWITCH_ATTEMPTS = 5
"""Service writes retried when the Service changed in ways that do not matter to a deploy."""

_HEX_COLOR = re.compile(r"[0-9a-f]{6}")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_EVENT_COMPONENT = "rainbowd-deploy"
# Events saying the Service selects the color from then on: rainbowd's first sight of it live, or
# the command that switched it, which may come before (history's LIVE-AT is the first of them).
_WENT_LIVE = frozenset({"MarkedLive", "Deployed", "CanaryStarted", "Promoted", "RolledBack"})
_NO_PODS = "0 replicas: the Service would send its connections to no pod"


class DeployError(Exception):
    """A deploy, rollback or promote did not happen; the message says why, for a human."""


class UsageError(DeployError):
    """The input is wrong (a bad color, a template without a Deployment): nothing was done."""


Say = Callable[[str], None]


def _quiet(_text: str) -> None:
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


async def git_color(cwd: str | None = None) -> str:
    """The first six hex digits of `git rev-parse HEAD`: the color of the checked-out release."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "rev-parse",
            "HEAD",
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise UsageError(f"no --color given and git is not available: {exc}") from exc
    out, err = await proc.communicate()
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip() or f"exit {proc.returncode}"
        raise UsageError(f"no --color given and `git rev-parse HEAD` failed: {detail}")
    return out.decode().strip()[:6].lower()


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


def command_check(command: str, *, say: Say = _quiet) -> Check:
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


@dataclass(frozen=True)
class DeployRequest:
    ref: AppRef
    color: str
    template: str | None = None  # text with __COLOR__; or None with image
    template_source: str = "template"
    image: str | None = None
    container: str | None = None
    replicas: int | None = None
    timeout: float = 600.0
    canary: bool = False
    cleanup_on_failure: bool = False


@dataclass(frozen=True)
class Outcome:
    """What a command did, for its last line and for tests."""

    color: str
    previous: str | None
    changed: bool
    message: str
    deployment: str = ""


# --- reading ------------------------------------------------------------------------------------


def _deployments_path(namespace: str, name: str | None = None) -> str:
    return resource_path("apps/v1", "deployments", namespace=namespace, name=name)


def _service_path(namespace: str, name: str | None = None) -> str:
    return resource_path("v1", "services", namespace=namespace, name=name)


async def _get(api: ApiClient, path: str) -> dict[str, Any] | None:
    try:
        return await request_json(api, "GET", path)
    except NotFound:
        return None


def _annotations(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _selector(service: Mapping[str, Any]) -> dict[str, str]:
    return dict((service.get("spec") or {}).get("selector") or {})


def _template_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    spec = deployment.get("spec") or {}
    return dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _replicas(deployment: Mapping[str, Any]) -> int:
    return int((deployment.get("spec") or {}).get("replicas", 1))


async def app_colors(api: ApiClient, ref: AppRef) -> dict[str, dict[str, Any]]:
    """The app's Deployments by color (the pod template's labels), oldest first."""
    listing = await request_json(api, "GET", _deployments_path(ref.namespace))
    found = []
    for item in listing.get("items") or []:
        labels = _template_labels(item)
        color = labels.get(ref.color_label)
        if labels.get(ref.app_label) == ref.app and color:
            found.append((str(item["metadata"].get("creationTimestamp", "")), color, item))
    found.sort(key=lambda entry: (entry[0], entry[1]))
    return {color: item for _created, color, item in found}


def is_available(deployment: Mapping[str, Any]) -> bool:
    """Rolled out: the controller saw the latest spec, every wanted replica is updated, ready
    and available, and the Available condition is true."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    wanted = int(spec.get("replicas", 1))
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return (
        int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
        and int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("readyReplicas") or 0) >= wanted
        and int(status.get("availableReplicas") or 0) >= wanted
        and conditions.get("Available") == "True"
    )


def _live_color(service: Mapping[str, Any], ref: AppRef) -> str | None:
    return _selector(service).get(ref.color_label)


def _canary_state(service: Mapping[str, Any], ref: AppRef) -> str | None:
    """The canary color when the Service selects the app only, as `deploy --canary` leaves it."""
    if ref.color_label in _selector(service):
        return None
    return _annotations(service).get(CANARY_COLOR)


def _rainbow_service(service: Mapping[str, Any], ref: AppRef) -> tuple[str | None, str | None]:
    """(live color, canary color) of the Service; an error when it is neither kind of Service."""
    live = _live_color(service, ref)
    canary = _canary_state(service, ref)
    if live is None and canary is None:
        raise DeployError(
            f"Service {ref.namespace}/{ref.service_name} selects {_selector(service)}: no "
            f"{ref.color_label!r} label and no {CANARY_COLOR} annotation, so it is not a "
            "rainbow Service rainbowd can switch"
        )
    return live, canary


# --- rendering ------------------------------------------------------------------------------------


def substitute_color(node: Any, color: str) -> Any:
    """`node` with `__COLOR__` replaced in every string, keys included; types kept."""
    if isinstance(node, str):
        return node.replace(COLOR_PLACEHOLDER, color)
    if isinstance(node, dict):
        return {substitute_color(k, color): substitute_color(v, color) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_color(v, color) for v in node]
    return node


def render_template(text: str, color: str, ref: AppRef, *, source: str) -> list[dict[str, Any]]:
    """The template's documents with `__COLOR__` replaced: one Deployment of the app's color,
    and at most one Service. Anything else is a UsageError naming the document."""
    if COLOR_PLACEHOLDER not in text:
        raise UsageError(
            f"{source}: no {COLOR_PLACEHOLDER} in the template, so every color "
            "would be the same Deployment"
        )
    try:
        # Parsed first, replaced after: a color of digits only (235549) put into the text would
        # be read back as a number, and a label value must be a string.
        documents = [substitute_color(d, color) for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: not YAML: {exc}") from exc
    deployments, services = [], []
    for index, doc in enumerate(documents, start=1):
        where = f"{source}: document {index}"
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: expected a Kubernetes object, got {type(doc).__name__}")
        kind = doc.get("kind")
        if kind == "Deployment":
            deployments.append(doc)
        elif kind == "Service":
            services.append(doc)
        else:
            raise UsageError(
                f"{where}: kind {kind!r}: a rainbow deploy applies one Deployment and its "
                "Service; create other objects once, outside the template"
            )
    if len(deployments) != 1:
        raise UsageError(f"{source}: expected one Deployment, found {len(deployments)}")
    if len(services) > 1:
        raise UsageError(f"{source}: expected at most one Service, found {len(services)}")
    deployment = deployments[0]
    if _replicas(deployment) < 1:
        raise UsageError(f"{source}: Deployment {_name(deployment)!r}: {_NO_PODS}")
    labels = _template_labels(deployment)
    for key, want in ((ref.app_label, ref.app), (ref.color_label, color)):
        if labels.get(key) != want:
            raise UsageError(
                f"{source}: Deployment {_name(deployment)!r}: spec.template.metadata.labels."
                f"{key} is {labels.get(key)!r}, expected {want!r}"
            )
    return documents


def clone_deployment(
    live: Mapping[str, Any],
    *,
    ref: AppRef,
    old_color: str,
    color: str,
    image: str,
    container: str | None,
) -> dict[str, Any]:
    """The live color's Deployment as a new color running `image`: name, selector and pod
    template labels moved to the new color; status, identity and rainbowd's bookkeeping left."""
    body = copy.deepcopy(dict(live))
    body.pop("status", None)
    meta = body.setdefault("metadata", {})
    old_name = str(meta.get("name", ""))
    suffix = f"-{old_color}"
    name = old_name[: -len(suffix)] + f"-{color}" if old_name.endswith(suffix) else None
    meta_keep = {
        "name": name or f"{ref.app}-{color}",
        "namespace": meta.get("namespace", ref.namespace),
    }
    if meta.get("labels"):
        meta_keep["labels"] = {
            k: (color if k == ref.color_label else v) for k, v in meta["labels"].items()
        }
    kept = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith("rainbowd.io/")
        and not k.startswith("deployment.kubernetes.io/")
        and k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if kept:
        meta_keep["annotations"] = kept
    body["metadata"] = meta_keep
    spec = body.setdefault("spec", {})
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    if ref.color_label in match:
        match[ref.color_label] = color
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("labels", {})[ref.color_label] = color
    containers = (template.get("spec") or {}).get("containers") or []
    if container is None:
        if len(containers) != 1:
            names = ", ".join(str(c.get("name")) for c in containers)
            raise UsageError(
                f"{old_name} has {len(containers)} containers ({names}): name the one that "
                "gets the new image with --container"
            )
        containers[0]["image"] = image
    else:
        for item in containers:
            if item.get("name") == container:
                item["image"] = image
                break
        else:
            names = ", ".join(str(c.get("name")) for c in containers)
            raise UsageError(f"{old_name} has no container {container!r} (it has: {names})")
    return body


# --- waiting ------------------------------------------------------------------------------------


async def _color_pods(api: ApiClient, deployment: Mapping[str, Any]) -> list[dict[str, Any]]:
    match = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
    namespace = deployment["metadata"]["namespace"]
    listing = await request_json(
        api,
        "GET",
        resource_path("v1", "pods", namespace=namespace),
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
                return f"{reason}: pod {_name(pod)} container {cs.get('name')}" + (
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


def _progress_deadline(deployment: Mapping[str, Any]) -> str | None:
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return f"ProgressDeadlineExceeded: {cond.get('message') or ''}".rstrip(": ")
    return None


async def wait_available(
    api: ApiClient, namespace: str, name: str, *, within: float, say: Say = _quiet
) -> dict[str, Any]:
    """Polls the Deployment until it is Available; DeployError at once on a progress deadline
    exceeded or a pod whose container cannot start, or when `within` seconds pass."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    last_line = shown = ""
    last_shown = start
    last_change = start
    while True:
        deployment = await _get(api, _deployments_path(namespace, name))
        if deployment is None:
            raise DeployError(f"{name} was deleted while waiting for it to become Available")
        if is_available(deployment):
            return deployment
        deadline = _progress_deadline(deployment)
        pods = await _color_pods(api, deployment)
        fatal = deadline or _fatal_reason(pods)
        status = deployment.get("status") or {}
        wanted = _replicas(deployment)
        ready = int(status.get("readyReplicas") or 0)
        now = loop.time()
        elapsed = timedelta(seconds=round(now - start))
        line = f"{name}: {ready}/{wanted} ready, {int(status.get('updatedReplicas') or 0)} updated"
        if line != last_line:
            last_line, last_change = line, now
        if fatal is not None:
            event = await _last_pod_event(api, namespace, [_name(p) for p in pods])
            raise DeployError(
                f"{name} will not become Available: {fatal}"
                + (f" (last pod event: {event})" if event else "")
            )
        if now - start > within:
            event = await _last_pod_event(
                api, namespace, [_name(p) for p in pods if not _pod_ready(p)]
            )
            raise DeployError(
                f"{name} not Available after {compact_duration(timedelta(seconds=within))}: "
                f"{ready}/{wanted} ready" + (f"; last pod event: {event}" if event else "")
            )
        if line != shown or now - last_shown >= PROGRESS_EVERY:
            extra = ""
            if now - last_change >= STUCK_AFTER:
                event = await _last_pod_event(
                    api, namespace, [_name(p) for p in pods if not _pod_ready(p)]
                )
                extra = f"; last pod event: {event}" if event else ""
            say(f"waiting: {line}, {compact_duration(elapsed)} elapsed{extra}")
            shown, last_shown = line, now
        await asyncio.sleep(POLL_INTERVAL)


async def ready_color(
    api: ApiClient, deployment: Mapping[str, Any], ref: AppRef, previous: str | None
) -> ReadyColor:
    pods = await _color_pods(api, deployment)
    return ReadyColor(
        namespace=ref.namespace,
        app=ref.app,
        color=_template_labels(deployment).get(ref.color_label, ""),
        deployment=_name(deployment),
        previous_color=previous,
        pods=tuple(
            sorted(
                (_name(p), str((p.get("status") or {}).get("podIP") or ""))
                for p in pods
                if _pod_ready(p)
            )
        ),
    )


# --- writing ------------------------------------------------------------------------------------


async def _record(
    api: ApiClient, obj: Mapping[str, Any], *, kind: str, reason: str, note: str, action: str
) -> None:
    meta = obj.get("metadata") or {}
    recorder = EventRecorder(api, component=_EVENT_COMPONENT, instance=_EVENT_COMPONENT)
    await recorder.emit(
        kind=kind,
        api_version="apps/v1" if kind == "Deployment" else "v1",
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        type="Normal",
        reason=reason,
        note=note,
        action=action,
    )


async def switch_service(
    api: ApiClient,
    ref: AppRef,
    read: Mapping[str, Any],
    *,
    selector: Mapping[str, str | None],
    annotations: Mapping[str, str | None],
) -> dict[str, Any]:
    """Writes the Service's selector and annotations, with the resourceVersion it was `read` at
    as a precondition. When it changed since, and its selector or rainbowd's annotations differ
    from what was read, another deploy or rollback won: DeployError, nothing written. Other
    changes (a label, a port) are not ours to judge: the write is retried on the new version."""
    path = _service_path(ref.namespace, ref.service_name)
    expected = (_selector(read), _ours(_annotations(read)))
    version = str(read["metadata"]["resourceVersion"])
    for _attempt in range(SWITCH_ATTEMPTS):
        body = {
            "metadata": {"resourceVersion": version, "annotations": dict(annotations)},
            "spec": {"selector": dict(selector)},
        }
        try:
            return await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)
        except NotFound:
            raise DeployError(
                f"Service {ref.namespace}/{ref.service_name} was deleted meanwhile; not switched"
            ) from None
        except Conflict:
            current = await _get(api, path)
            if current is None:
                raise DeployError(
                    f"Service {ref.namespace}/{ref.service_name} was deleted meanwhile; "
                    "not switched"
                ) from None
            if (_selector(current), _ours(_annotations(current))) != expected:
                raise DeployError(
                    f"Service {ref.namespace}/{ref.service_name} changed while this command "
                    f"ran: it selected {_show(expected[0])}, now {_show(_selector(current))} "
                    "(another deploy or rollback won); left as it is, not switched"
                ) from None
            version = str(current["metadata"]["resourceVersion"])
    raise DeployError(
        f"Service {ref.namespace}/{ref.service_name} kept changing; not switched after "
        f"{SWITCH_ATTEMPTS} attempts"
    )


def _ours(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k in (PREVIOUS_COLOR, CANARY_COLOR)}


def _show(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "nothing"


async def _create_service(
    api: ApiClient, ref: AppRef, body: Mapping[str, Any], color: str
) -> dict[str, Any]:
    service = copy.deepcopy(dict(body))
    meta = service.setdefault("metadata", {})
    meta["name"] = ref.service_name
    meta.pop("namespace", None)
    meta.setdefault("annotations", {}).pop(PREVIOUS_COLOR, None)
    try:
        return await request_json(api, "POST", _service_path(ref.namespace), body=service)
    except Conflict:
        raise DeployError(
            f"Service {ref.namespace}/{ref.service_name} was created by someone else while "
            f"#{color} rolled out (another deploy won); left as it is, not switched"
        ) from None


async def _delete_color(api: ApiClient, ref: AppRef, deployment: Mapping[str, Any]) -> str:
    """Deletes a failed color, unless a Service selects it meanwhile; returns what was done."""
    name = _name(deployment)
    service = await _get(api, _service_path(ref.namespace, ref.service_name))
    color = _template_labels(deployment).get(ref.color_label)
    if service is not None and (
        _live_color(service, ref) == color or _canary_state(service, ref) == color
    ):
        return f"{name} not deleted: Service {ref.service_name} selects it"
    meta = deployment["metadata"]
    try:
        await request_json(
            api,
            "DELETE",
            _deployments_path(ref.namespace, name),
            body={"preconditions": {"uid": meta["uid"]}, "propagationPolicy": "Background"},
        )
    except NotFound:
        return f"{name} was already gone"
    return f"{name} deleted (--cleanup-on-failure)"


# --- deploy -------------------------------------------------------------------------------------


async def deploy(
    api: ApiClient, request: DeployRequest, *, check: Check | None = None, say: Say = _quiet
) -> Outcome:
    """A rainbow deploy of `request.color`; DeployError (the Service untouched) on failure."""
    ref = request.ref
    color = validate_color(request.color)
    documents: list[dict[str, Any]] = []
    if request.template is not None:
        documents = render_template(request.template, color, ref, source=request.template_source)
        template_service = next((d for d in documents if d.get("kind") == "Service"), None)
        if ref.service is None and template_service is not None:
            ref = AppRef(
                namespace=ref.namespace,
                app=ref.app,
                service=_name(template_service),
                app_label=ref.app_label,
                color_label=ref.color_label,
            )
    elif request.image is None:
        raise UsageError("a deploy needs a template (-f) or an image (--image)")
    service_path = _service_path(ref.namespace, ref.service_name)
    service = await _get(api, service_path)
    previous: str | None = None
    if service is not None:
        live, canary = _rainbow_service(service, ref)
        if canary is not None:
            raise DeployError(
                f"a canary of #{canary} is in progress on Service {ref.service_name}: "
                f"`rainbowd promote --app {ref.app}` or `rainbowd rollback --app {ref.app}` first"
            )
        previous = live
        if request.canary and live == color:
            raise UsageError(f"#{color} is the live color: a canary needs a new one")
        if request.canary and not {k for k in _selector(service) if k != ref.color_label}:
            raise DeployError(
                f"Service {ref.service_name} selects {_show(_selector(service))}: without "
                f"{ref.color_label!r} it would select nothing, so a canary cannot widen it"
            )
        if live == color and not request.canary:
            current = (await app_colors(api, ref)).get(color)
            if current is not None and is_available(current):
                message = (
                    f"#{color} is already live on Service {ref.service_name} and Available: "
                    "nothing to do"
                )
                say(message)
                return Outcome(color, None, False, message, _name(current))
    elif request.template is None or not any(d.get("kind") == "Service" for d in documents):
        raise DeployError(
            f"no Service {ref.namespace}/{ref.service_name}: the first deploy of an app needs "
            "its Service in the template (-f), created once the color is Available"
        )
    elif request.canary:
        raise DeployError(
            f"no Service {ref.namespace}/{ref.service_name} yet: a canary needs a live color to "
            "run beside; deploy the first color without --canary"
        )

    if request.template is not None:
        body = next(d for d in documents if d.get("kind") == "Deployment")
    else:
        assert request.image is not None
        if previous is None:
            raise DeployError("--image clones the live color, and there is none")
        live_deployment = (await app_colors(api, ref)).get(previous)
        if live_deployment is None:
            raise DeployError(
                f"--image clones the live color #{previous}, but no Deployment of app "
                f"{ref.app} has it in namespace {ref.namespace}"
            )
        body = clone_deployment(
            live_deployment,
            ref=ref,
            old_color=previous,
            color=color,
            image=request.image,
            container=request.container,
        )
    body = copy.deepcopy(body)
    body.setdefault("metadata", {}).pop("namespace", None)
    if request.replicas is not None:
        body.setdefault("spec", {})["replicas"] = request.replicas
    name = _name(body)
    if _replicas(body) < 1:  # --image cloned a color at 0
        raise UsageError(f"{name}: {_NO_PODS}")

    created, deployment = await _create_or_reuse(api, ref, body, color, say=say)
    try:
        deployment = await wait_available(api, ref.namespace, name, within=request.timeout, say=say)
        say(f"{name} is Available ({_replicas(deployment)}/{_replicas(deployment)} ready)")
        if check is not None:
            await check(await ready_color(api, deployment, ref, previous))
        if service is None:
            template_service = next(d for d in documents if d.get("kind") == "Service")
            service = await _create_service(api, ref, template_service, color)
            message = f"Service {ref.service_name} created, selecting #{color}"
        elif request.canary:
            service = await switch_service(
                api,
                ref,
                service,
                selector={ref.color_label: None},
                annotations={CANARY_COLOR: color, PREVIOUS_COLOR: previous},
            )
            message = (
                f"canary: Service {ref.service_name} now selects every color of {ref.app} "
                f"({_show(_selector(service))}): #{previous} and #{color} both take new "
                f"connections; `rainbowd promote --app {ref.app}` narrows it to #{color}"
            )
        else:
            service = await switch_service(
                api,
                ref,
                service,
                selector={ref.color_label: color},
                # Re-deploying the live color (not Available yet) keeps what to roll back to.
                annotations={PREVIOUS_COLOR: previous} if previous != color else {},
            )
            message = (
                f"Service {ref.service_name} now selects #{color} (was #{previous}); "
                f"`rainbowd rollback --app {ref.app}` switches it back"
            )
    except (DeployError, KubeError) as exc:
        reason = str(exc) if isinstance(exc, DeployError) else f"{name}: {exc}"
        if request.cleanup_on_failure and created:
            reason += f"; {await _delete_color(api, ref, deployment)}"
        raise DeployError(reason) from exc
    say(message)
    if not request.canary and previous != color:
        await _stamp_was_live(api, ref, previous, now=datetime.now(UTC), say=say)
    await _record(
        api,
        deployment,
        kind="Deployment",
        reason="CanaryStarted" if request.canary else "Deployed",
        note=message,
        action="Deploy",
    )
    return Outcome(color, previous, True, message, name)


async def _create_or_reuse(
    api: ApiClient, ref: AppRef, body: dict[str, Any], color: str, *, say: Say
) -> tuple[bool, dict[str, Any]]:
    """Creates the Deployment; when it exists already (a re-run), checks it is this app's color
    and leaves it as it is. (created, the object)"""
    name = _name(body)
    replicas = _replicas(body)
    try:
        created = await request_json(api, "POST", _deployments_path(ref.namespace), body=body)
    except Conflict:
        existing = await _get(api, _deployments_path(ref.namespace, name))
        if existing is None:
            raise DeployError(f"{name} exists and does not: try again") from None
        labels = _template_labels(existing)
        if labels.get(ref.app_label) != ref.app or labels.get(ref.color_label) != color:
            raise DeployError(
                f"{name} exists but is not color #{color} of {ref.app} (its pod template "
                f"labels: {_show(labels)}); not touched"
            ) from None
        if _replicas(existing) == 0:
            raise DeployError(
                f"{name} exists, scaled to 0 (a retired color): `rainbowd rollback --app "
                f"{ref.app} --to {color}` brings it back"
            ) from None
        say(f"{name} exists already: not re-created, waiting for it")
        return False, existing
    say(f"created {name} ({replicas} replica{'s' if replicas != 1 else ''})")
    return True, created


# --- rollback and promote -----------------------------------------------------------------------


def _describe(color: str, deployment: Mapping[str, Any]) -> str:
    annotations = _annotations(deployment)
    status = deployment.get("status") or {}
    replicas = _replicas(deployment)
    if replicas == 0:
        restore = annotations.get(ORIGINAL_REPLICAS)
        state = "scaled to 0" + (f", restores {restore}" if restore else "")
    else:
        state = f"{int(status.get('readyReplicas') or 0)}/{replicas} ready"
    return f"#{color} ({state})"


async def rollback(
    api: ApiClient,
    ref: AppRef,
    *,
    to: str | None = None,
    within: float = 600.0,
    check: Check | None = None,
    say: Say = _quiet,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Outcome:
    """Switches the Service back to `to` (default: the previous color recorded on it), scaling
    it up first to its original replicas when rainbowd scaled it to 0; during a canary, narrows
    the Service to the old color. The color rolled away from is left to the policy."""
    service_path = _service_path(ref.namespace, ref.service_name)
    service = await _get(api, service_path)
    if service is None:
        raise DeployError(f"no Service {ref.namespace}/{ref.service_name}: nothing to roll back")
    live, canary = _rainbow_service(service, ref)
    recorded = _annotations(service).get(PREVIOUS_COLOR)
    target = validate_color(to) if to is not None else recorded
    colors = await app_colors(api, ref)
    away = live or canary
    assert away is not None

    def others() -> str:
        rest = [_describe(c, d) for c, d in colors.items() if c != away]
        return ", ".join(rest) or "none"

    if target is None:
        raise DeployError(
            f"Service {ref.service_name} records no previous color ({PREVIOUS_COLOR}): pass "
            f"--to COLOR; colors that can be rolled back to: {others()}"
        )
    if target == live:
        raise DeployError(f"#{target} is already live on Service {ref.service_name}")
    deployment = colors.get(target)
    if deployment is None:
        raise DeployError(
            f"cannot roll back to #{target}: no Deployment of {ref.app} has that color in "
            f"namespace {ref.namespace} (deleted?); colors that can be rolled back to: {others()}"
        )
    name = _name(deployment)
    held = await _hold_for_rollback(api, ref, deployment, within=within, say=say, now=now)
    try:
        deployment = await wait_available(api, ref.namespace, name, within=within, say=say)
        if check is not None:
            await check(await ready_color(api, deployment, ref, away))
        service = await switch_service(
            api,
            ref,
            service,
            selector={ref.color_label: target},
            annotations={PREVIOUS_COLOR: away, CANARY_COLOR: None},
        )
    except (DeployError, KubeError) as exc:
        if held:
            await _patch_annotations(
                api, ref.namespace, name, {HOLD_UNTIL: None, HOLD_REASON: None}
            )
        raise DeployError(str(exc) if isinstance(exc, DeployError) else f"{name}: {exc}") from exc
    # Live again: its retired bookkeeping goes (the daemon would clear it at its next cycle too).
    clear: dict[str, str | None] = dict.fromkeys(RETIREMENT)
    if held:
        clear.update({HOLD_UNTIL: None, HOLD_REASON: None})
    try:
        await _patch_annotations(api, ref.namespace, name, clear)
    except KubeError as exc:
        # The switch is done, so the rollback happened; what is left is rainbowd's or lapses.
        say(
            f"warning: {name}: its retired bookkeeping"
            + (" and this rollback's hold" if held else "")
            + f" not removed ({exc}); rainbowd clears a live color's bookkeeping at its next "
            "cycle" + (", and the hold lapses by itself" if held else "")
        )
    await _stamp_was_live(api, ref, away, now=now(), say=say)
    message = (
        f"Service {ref.service_name} now selects #{target} again (was "
        f"{'the canary of #' + canary if canary else '#' + str(live)}); #{away} is retired "
        "and follows the policy"
    )
    say(message)
    await _record(
        api, deployment, kind="Deployment", reason="RolledBack", note=message, action="Rollback"
    )
    return Outcome(target, away, True, message, name)


async def _stamp_was_live(
    api: ApiClient, ref: AppRef, color: str | None, *, now: datetime, say: Say
) -> None:
    """The color the Service stopped selecting was live: stamped so when rainbowd has not done it
    yet, it is retired and follows the policy; unstamped and newer than the live color, it would
    be planned as a rollout still pending, and kept forever."""
    if color is None:
        return
    try:
        deployment = (await app_colors(api, ref)).get(color)
        if deployment is None or LIVE_AT in _annotations(deployment):
            return
        await _patch_annotations(api, ref.namespace, _name(deployment), {LIVE_AT: format_time(now)})
    except KubeError as exc:
        say(
            f"warning: #{color}: {LIVE_AT} not written ({exc}); until rainbowd sees it, a color "
            "newer than the live one is planned as pending and kept"
        )


async def _hold_for_rollback(
    api: ApiClient,
    ref: AppRef,
    deployment: Mapping[str, Any],
    *,
    within: float,
    say: Say,
    now: Callable[[], datetime],
) -> bool:
    """Holds the rollback's target (and scales it back up if it is at 0) in one write, so the
    daemon cannot scale it down between now and the switch. True when the hold is ours."""
    name = _name(deployment)
    annotations = _annotations(deployment)
    patch: dict[str, Any] = {"metadata": {"annotations": {}}}
    ours = HOLD_UNTIL not in annotations
    if ours:
        until = now() + timedelta(seconds=within) + ROLLBACK_HOLD_MARGIN
        patch["metadata"]["annotations"] = {
            HOLD_UNTIL: format_time(until),
            HOLD_REASON: "rollback in progress",
        }
    current = _replicas(deployment)
    restore, record = _replicas_before_rainbowd(annotations)
    if current == 0 and restore < 1:
        raise DeployError(
            f"{name} is scaled to 0 and its {ORIGINAL_REPLICAS} annotation is "
            f"{annotations.get(ORIGINAL_REPLICAS)!r}: scale it up by hand (kubectl scale "
            f"deployment/{name} --replicas=N), then roll back"
        )
    if restore > current:
        # Scaled to 0, or consolidated to fewer pods while it drained: the live color gets
        # back the replicas it had before rainbowd touched it.
        patch["spec"] = {"replicas": restore}
        # A scale-up starts a new drain: an old drained-since must not count.
        patch["metadata"]["annotations"][DRAINED_SINCE] = None
        say(f"scaling {name} from {current} back to {restore} replicas ({record})")
    if not patch["metadata"]["annotations"] and "spec" not in patch:
        return False
    patch["metadata"]["resourceVersion"] = deployment["metadata"]["resourceVersion"]
    try:
        await request_json(
            api,
            "PATCH",
            _deployments_path(ref.namespace, name),
            body=patch,
            content_type=MERGE_PATCH,
        )
    except Conflict:
        raise DeployError(
            f"{name} changed while the rollback read it (rainbowd acting on it?); nothing was "
            "switched: run the rollback again"
        ) from None
    return ours


def _replicas_before_rainbowd(annotations: Mapping[str, str]) -> tuple[int, str]:
    """The most replicas rainbowd's records say the color had before it scaled the color to 0
    (original-replicas) or consolidated it (consolidated-from), and the record saying so; 0 when
    neither record is a count."""
    best, record = 0, ORIGINAL_REPLICAS
    for key in (ORIGINAL_REPLICAS, CONSOLIDATED_FROM):
        try:
            count = int(annotations.get(key) or 0)
        except ValueError:  # a hand-edited record: not a count
            count = 0
        if count > best:
            best, record = count, key
    return best, record


async def _patch_annotations(
    api: ApiClient, namespace: str, name: str, annotations: Mapping[str, str | None]
) -> dict[str, Any]:
    return await request_json(
        api,
        "PATCH",
        _deployments_path(namespace, name),
        body={"metadata": {"annotations": dict(annotations)}},
        content_type=MERGE_PATCH,
    )


async def promote(api: ApiClient, ref: AppRef, *, say: Say = _quiet) -> Outcome:
    """Ends a canary: the Service narrowed to the canary color; the old color becomes retired."""
    service = await _get(api, _service_path(ref.namespace, ref.service_name))
    if service is None:
        raise DeployError(f"no Service {ref.namespace}/{ref.service_name}")
    live, canary = _rainbow_service(service, ref)
    if canary is None:
        raise DeployError(
            f"no canary in progress on Service {ref.service_name}: it selects #{live} only"
        )
    deployment = (await app_colors(api, ref)).get(canary)
    if deployment is None or not is_available(deployment):
        raise DeployError(
            f"the canary #{canary} is not Available (or was deleted): not promoted; "
            f"`rainbowd rollback --app {ref.app}` ends the canary on the old color"
        )
    previous = _annotations(service).get(PREVIOUS_COLOR)
    await switch_service(
        api,
        ref,
        service,
        selector={ref.color_label: canary},
        annotations={CANARY_COLOR: None},
    )
    await _stamp_was_live(api, ref, previous, now=datetime.now(UTC), say=say)
    message = f"promoted: Service {ref.service_name} now selects #{canary} only" + (
        f"; #{previous} is retired and follows the policy" if previous else ""
    )
    say(message)
    await _record(
        api, deployment, kind="Deployment", reason="Promoted", note=message, action="Promote"
    )
    return Outcome(canary, previous, True, message, _name(deployment))


# --- hold ---------------------------------------------------------------------------------------


async def find_color(
    api: ApiClient,
    namespace: str,
    color: str,
    *,
    app: str | None,
    color_label: str = "color",
    app_label: str = "app",
) -> dict[str, Any]:
    """The one Deployment of `color` (of `app` when given) in the namespace."""
    listing = await request_json(api, "GET", _deployments_path(namespace))
    found: list[dict[str, Any]] = []
    everything = []
    for item in listing.get("items") or []:
        labels = _template_labels(item)
        if color_label not in labels:
            continue
        everything.append(f"{labels.get(app_label)} #{labels[color_label]}")
        if labels[color_label] == color and (app is None or labels.get(app_label) == app):
            found.append(item)
    if not found:
        known = ", ".join(sorted(everything)) or "none"
        raise DeployError(
            f"no color #{color}{' of ' + app if app else ''} in namespace {namespace} "
            f"(colors there: {known})"
        )
    if len(found) > 1:
        names = ", ".join(_name(d) for d in found)
        raise UsageError(f"several Deployments have color #{color} ({names}): pass --app")
    return found[0]


async def hold(
    api: ApiClient,
    namespace: str,
    color: str,
    *,
    app: str | None,
    until: datetime,
    reason: str | None,
) -> str:
    """Writes hold-until (and hold-reason) on the color; returns the Deployment's name."""
    deployment = await find_color(api, namespace, color, app=app)
    name = _name(deployment)
    await _patch_annotations(
        api, namespace, name, {HOLD_UNTIL: format_time(until), HOLD_REASON: reason or None}
    )
    note = f"held until {format_time(until)}" + (f": {reason}" if reason else "")
    await _record(api, deployment, kind="Deployment", reason="Held", note=note, action="Hold")
    return name


async def release(api: ApiClient, namespace: str, color: str, *, app: str | None) -> str:
    deployment = await find_color(api, namespace, color, app=app)
    name = _name(deployment)
    await _patch_annotations(api, namespace, name, {HOLD_UNTIL: None, HOLD_REASON: None})
    await _record(
        api,
        deployment,
        kind="Deployment",
        reason="Released",
        note="hold released",
        action="Release",
    )
    return name


# --- history ------------------------------------------------------------------------------------


@dataclass
class ColorHistory:
    color: str
    deployment: str
    created: datetime | None = None
    live_at: str = ""
    retired_at: str = ""
    scaled_down_at: str = ""
    deleted_at: str = ""
    replicas: str = ""
    state: str = ""
    why: str = ""  # rainbowd's last Event on it
    hold: str = ""  # its hold, while it has one
    events: list[str] = field(default_factory=list)


async def history(api: ApiClient, ref: AppRef) -> list[ColorHistory]:
    """The app's colors, oldest first: when each went live, was retired, scaled down or deleted,
    and why, from rainbowd's annotations and Events; deleted colors from their Events alone."""
    colors = await app_colors(api, ref)
    service = await _get(api, _service_path(ref.namespace, ref.service_name))
    live = _live_color(service, ref) if service is not None else None
    canary = _canary_state(service, ref) if service is not None else None
    rows: dict[str, ColorHistory] = {}
    live_deployment = colors.get(live) if live is not None else None
    stamp = (live_deployment or {}).get("metadata", {}).get("creationTimestamp")
    live_created = parse_time(stamp) if stamp else None
    for color, deployment in colors.items():
        annotations = _annotations(deployment)
        row = ColorHistory(color=color, deployment=_name(deployment))
        created = (deployment.get("metadata") or {}).get("creationTimestamp")
        row.created = parse_time(created) if created else None
        row.live_at = annotations.get(LIVE_AT, "")
        row.retired_at = annotations.get(RETIRED_AT, "")
        status = deployment.get("status") or {}
        row.replicas = f"{int(status.get('readyReplicas') or 0)}/{_replicas(deployment)}"
        if color == live:
            row.state = "live"
        elif color == canary:
            row.state = "live (canary)"
        elif _replicas(deployment) == 0:
            row.state = "scaled-down"
        elif canary is not None:
            row.state = "live"  # the Service selects the app only: every color with pods
        elif (
            row.live_at
            or row.retired_at
            or (live_created is not None and row.created is not None and row.created < live_created)
        ):
            row.state = "retired"  # as the planner has it: seen live, or older than the live one
        else:
            row.state = "pending"
        if HOLD_UNTIL in annotations:
            row.hold = f"held until {annotations[HOLD_UNTIL]}" + (
                f": {annotations[HOLD_REASON]}" if annotations.get(HOLD_REASON) else ""
            )
        rows[_name(deployment)] = row
    listing = await request_json(
        api, "GET", resource_path("events.k8s.io/v1", "events", namespace=ref.namespace)
    )
    prefix = f"{ref.app}-"
    events = sorted(
        (
            e
            for e in listing.get("items") or []
            if e.get("reportingController") == REPORTING_CONTROLLER
            and (e.get("regarding") or {}).get("kind") == "Deployment"
        ),
        key=lambda e: str(e.get("eventTime") or ""),
    )
    for event in events:
        name = str((event.get("regarding") or {}).get("name") or "")
        known = rows.get(name)
        if known is None:
            if not name.startswith(prefix):
                continue
            known = rows[name] = ColorHistory(
                color=name[len(prefix) :], deployment=name, state="deleted", replicas="-"
            )
        when = str(event.get("eventTime") or "")[:19] + "Z"
        reason = str(event.get("reason") or "")
        if reason in _WENT_LIVE and (not known.live_at or when < known.live_at):
            known.live_at = when
        elif reason == "MarkedRetired" and not known.retired_at:
            known.retired_at = when
        elif reason.startswith("ScaledDown"):
            known.scaled_down_at = when
        elif reason.startswith("Deleted"):
            known.deleted_at = when
        if known.created is None and known.state == "deleted":
            known.created = parse_time(when)
        note = str(event.get("note") or "")
        known.why = note if note.lower().startswith(reason.lower()) else f"{reason}: {note}"
        known.events.append(f"{when} {reason}")
    return sorted(
        rows.values(),
        key=lambda r: (r.created or datetime.max.replace(tzinfo=UTC), r.deployment),
    )


def render_history(rows: Sequence[ColorHistory]) -> str:
    header = (
        "COLOR",
        "STATE",
        "REPLICAS",
        "CREATED",
        "LIVE-AT",
        "RETIRED-AT",
        "SCALED-DOWN",
        "DELETED",
        "LAST",
    )
    table = [header]
    for row in rows:
        table.append(
            (
                row.color,
                row.state,
                row.replicas,
                format_time(row.created) if row.created else "-",
                row.live_at or "-",
                row.retired_at or "-",
                row.scaled_down_at or "-",
                row.deleted_at or "-",
                row.hold or row.why or "-",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(r[:-1], widths, strict=True))
        + "  "
        + r[-1]
        for r in table
    ]
    return "\n".join(lines) + "\n"
