"""`rainbowd deploy`: a color's Deployment created and waited on until it has rolled out, an
optional smoke check, then the Service switched to it (or widened to the app, for a canary)
under a resourceVersion precondition. On failure the Service is left as it was."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.deploy.common import (
    CANARY_COLOR,
    PREVIOUS_COLOR,
    AppRef,
    AppService,
    Color,
    DeployError,
    Say,
    ServiceSwitch,
    UsageError,
    app_colors,
    app_service,
    canary_color,
    deployments_path,
    get,
    quiet,
    rainbow_service,
    read_color,
    record,
    service_path,
    show_selector,
    stamp_was_live,
    switch_service,
    validate_color,
)
from rainbowd.deploy.templates import (
    COLOR_KINDS,
    NO_PODS,
    clone_deployment,
    document_name,
    document_replicas,
    owned_documents,
    render_template,
)
from rainbowd.deploy.waiting import Check, ready_color, wait_available
from rainbowd.kube.clients import Conflict, KubeError, NotFound, request_json, resource_path


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
class _Plan:
    """What a deploy found before it touched anything: the app, its Service (None: created from
    the template once the color has rolled out), the color it replaces, the rendered template."""

    ref: AppRef
    service: AppService | None
    previous: str | None
    documents: list[dict[str, Any]]

    def template_service(self) -> dict[str, Any] | None:
        return next((d for d in self.documents if d.get("kind") == "Service"), None)


def _render(request: DeployRequest, color: str) -> tuple[AppRef, list[dict[str, Any]]]:
    """The rendered template, and the app with the template's Service when none was named."""
    ref = request.ref
    if request.template is None:
        if request.image is None:
            raise UsageError("a deploy needs a template (-f) or an image (--image)")
        return ref, []
    documents = render_template(request.template, color, ref, source=request.template_source)
    service = next((d for d in documents if d.get("kind") == "Service"), None)
    if ref.service is None and service is not None:
        ref = AppRef(
            namespace=ref.namespace,
            app=ref.app,
            service=document_name(service),
            app_label=ref.app_label,
            color_label=ref.color_label,
        )
    return ref, documents


def _check_canary(
    service: AppService, request: DeployRequest, ref: AppRef, live: str | None
) -> None:
    color = request.color
    if request.canary and live == color:
        raise UsageError(f"#{color} is the live color: a canary needs a new one")
    if request.canary and not {k for k in service.selector if k != ref.color_label}:
        raise DeployError(
            f"Service {ref.service_name} selects {show_selector(service.selector)}: without "
            f"{ref.color_label!r} it would select nothing, so a canary cannot widen it"
        )


async def _look(
    api: ApiClient, request: DeployRequest, color: str, say: Say
) -> _Plan | ServiceSwitch:
    """What the deploy starts from, or the answer when the color is live and rolled out."""
    ref, documents = _render(request, color)
    service = await app_service(api, ref)
    if service is None:
        if request.template is None or not any(d.get("kind") == "Service" for d in documents):
            raise DeployError(
                f"no Service {ref.namespace}/{ref.service_name}: the first deploy of an app "
                "needs its Service in the template (-f), created once the color is Available"
            )
        if request.canary:
            raise DeployError(
                f"no Service {ref.namespace}/{ref.service_name} yet: a canary needs a live "
                "color to run beside; deploy the first color without --canary"
            )
        return _Plan(ref, None, None, documents)
    colors = await app_colors(api, ref)
    live, canary = rainbow_service(service, colors, ref)
    if canary is not None:
        raise DeployError(
            f"a canary of #{canary} is in progress on Service {ref.service_name}: "
            f"`rainbowd promote --app {ref.app}` or `rainbowd rollback --app {ref.app}` first"
        )
    _check_canary(service, request, ref, live)
    current = colors.get(color)
    if (
        live == color
        and not request.canary
        and current is not None
        and current.deployment.rolled_out
    ):
        message = (
            f"#{color} is already live on Service {ref.service_name} and Available: nothing to do"
        )
        say(message)
        return ServiceSwitch(color, None, False, message, current.name)
    return _Plan(ref, service, live, documents)


async def _body(api: ApiClient, request: DeployRequest, plan: _Plan, color: str) -> dict[str, Any]:
    """The Deployment to create: the template's, or the live color's cloned with --image."""
    ref = plan.ref
    if request.template is not None:
        body = next(d for d in plan.documents if d.get("kind") == "Deployment")
    else:
        assert request.image is not None
        if plan.previous is None:
            raise DeployError("--image clones the live color, and there is none")
        live = (await app_colors(api, ref)).get(plan.previous)
        if live is None:
            raise DeployError(
                f"--image clones the live color #{plan.previous}, but no Deployment of app "
                f"{ref.app} has it in namespace {ref.namespace}"
            )
        body = clone_deployment(
            live.body,
            ref=ref,
            old_color=plan.previous,
            color=color,
            image=request.image,
            container=request.container,
        )
    body = copy.deepcopy(body)
    body.setdefault("metadata", {}).pop("namespace", None)
    if request.replicas is not None:
        body.setdefault("spec", {})["replicas"] = request.replicas
    if document_replicas(body) < 1:  # --image cloned a color at 0
        raise UsageError(f"{document_name(body)}: {NO_PODS}")
    return body


async def _switch(api: ApiClient, request: DeployRequest, plan: _Plan, color: str) -> str:
    """Points the Service at the new color (creating it on a first deploy); the message."""
    ref, service, previous = plan.ref, plan.service, plan.previous
    if service is None:
        template_service = plan.template_service()
        assert template_service is not None
        await _create_service(api, ref, template_service, color)
        return f"Service {ref.service_name} created, selecting #{color}"
    if request.canary:
        service = await switch_service(
            api,
            ref,
            service,
            selector={ref.color_label: None},
            annotations={CANARY_COLOR: color, PREVIOUS_COLOR: previous},
        )
        return (
            f"canary: Service {ref.service_name} now selects every color of {ref.app} "
            f"({show_selector(service.selector)}): #{previous} and #{color} both take new "
            f"connections; `rainbowd promote --app {ref.app}` narrows it to #{color}"
        )
    await switch_service(
        api,
        ref,
        service,
        selector={ref.color_label: color},
        # Re-deploying the live color (not Available yet) keeps what to roll back to.
        annotations={PREVIOUS_COLOR: previous} if previous != color else {},
    )
    return (
        f"Service {ref.service_name} now selects #{color} (was #{previous}); "
        f"`rainbowd rollback --app {ref.app}` switches it back"
    )


async def deploy(
    api: ApiClient, request: DeployRequest, *, check: Check | None = None, say: Say = quiet
) -> ServiceSwitch:
    """A rainbow deploy of `request.color`; DeployError (the Service untouched) on failure."""
    color = validate_color(request.color)
    plan = await _look(api, request, color, say)
    if isinstance(plan, ServiceSwitch):
        return plan
    ref, previous = plan.ref, plan.previous
    body = await _body(api, request, plan, color)
    name = document_name(body)
    created, deployment = await _create_or_reuse(api, ref, body, color, say=say)
    try:
        # Before it rolls out: the HPA and PDB guard the color from its first pod.
        await _create_owned(api, ref, plan.documents, deployment, say=say)
        deployment = await wait_available(api, ref.namespace, name, within=request.timeout, say=say)
        replicas = deployment.deployment.replicas
        say(f"{name} is Available ({replicas}/{replicas} ready)")
        if check is not None:
            await check(await ready_color(api, deployment, ref, previous))
        message = await _switch(api, request, plan, color)
    except (DeployError, KubeError) as exc:
        reason = str(exc) if isinstance(exc, DeployError) else f"{name}: {exc}"
        if request.cleanup_on_failure and created:
            reason += f"; {await _delete_color(api, ref, deployment)}"
        raise DeployError(reason) from exc
    say(message)
    if not request.canary and previous != color:
        await stamp_was_live(api, ref, previous, now=datetime.now(UTC), say=say)
    await record(
        api,
        deployment.deployment,
        reason="CanaryStarted" if request.canary else "Deployed",
        note=message,
        action="Deploy",
    )
    return ServiceSwitch(color, previous, True, message, name)


async def _create_or_reuse(
    api: ApiClient, ref: AppRef, body: dict[str, Any], color: str, *, say: Say
) -> tuple[bool, Color]:
    """Creates the Deployment; when it exists already (a re-run), checks it is this app's color
    and leaves it as it is. (created, the color)"""
    name = document_name(body)
    replicas = document_replicas(body)
    try:
        created = await request_json(api, "POST", deployments_path(ref.namespace), body=body)
    except Conflict:
        obj = await get(api, deployments_path(ref.namespace, name))
        if obj is None:
            raise DeployError(f"{name} exists and does not: try again") from None
        existing = read_color(obj).deployment
        labels = existing.template_labels
        if labels.get(ref.app_label) != ref.app or labels.get(ref.color_label) != color:
            raise DeployError(
                f"{name} exists but is not color #{color} of {ref.app} (its pod template "
                f"labels: {show_selector(labels)}); not touched"
            ) from None
        if existing.replicas == 0:
            raise DeployError(
                f"{name} exists, scaled to 0 (a retired color): `rainbowd rollback --app "
                f"{ref.app} --to {color}` brings it back"
            ) from None
        say(f"{name} exists already: not re-created, waiting for it")
        return False, read_color(obj)
    say(f"created {name} ({replicas} replica{'s' if replicas != 1 else ''})")
    return True, read_color(created)


async def _create_owned(
    api: ApiClient, ref: AppRef, documents: list[dict[str, Any]], color: Color, *, say: Say
) -> None:
    """The template's HPA, PDB and ScaledObject, each owned by the color's Deployment, so
    Kubernetes' garbage collector deletes them with it; one that exists already (a re-run) is
    left as it is."""
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": color.name,
        "uid": color.deployment.uid,
    }
    for doc in owned_documents(documents):
        kind = str(doc["kind"])
        group_version, plural, _ = COLOR_KINDS[kind]
        body = copy.deepcopy(doc)
        meta = body.setdefault("metadata", {})
        meta.pop("namespace", None)
        meta["ownerReferences"] = [*meta.get("ownerReferences", []), owner]
        path = resource_path(group_version, plural, namespace=ref.namespace)
        try:
            await request_json(api, "POST", path, body=body)
        except Conflict:
            say(f"{kind} {document_name(doc)} exists already: left as it is")
            continue
        say(f"created {kind} {document_name(doc)} (owned by {color.name})")


async def _create_service(
    api: ApiClient, ref: AppRef, body: Mapping[str, Any], color: str
) -> dict[str, Any]:
    service = copy.deepcopy(dict(body))
    meta = service.setdefault("metadata", {})
    meta["name"] = ref.service_name
    meta.pop("namespace", None)
    meta.setdefault("annotations", {}).pop(PREVIOUS_COLOR, None)
    try:
        return await request_json(api, "POST", service_path(ref.namespace), body=service)
    except Conflict:
        raise DeployError(
            f"Service {ref.namespace}/{ref.service_name} was created by someone else while "
            f"#{color} rolled out (another deploy won); left as it is, not switched"
        ) from None


async def _delete_color(api: ApiClient, ref: AppRef, color: Color) -> str:
    """Deletes a failed color, unless the Service selects it meanwhile (the planner's definition
    of live) or names it its canary; returns what was done."""
    name = color.name
    service = await app_service(api, ref)
    label = color.deployment.template_labels.get(ref.color_label)
    if service is not None and (
        service.service.selects(color.deployment.template_labels)
        or canary_color(service, ref) == label
    ):
        return f"{name} not deleted: Service {ref.service_name} selects it"
    try:
        await request_json(
            api,
            "DELETE",
            deployments_path(ref.namespace, name),
            body={
                "preconditions": {"uid": color.deployment.uid},
                "propagationPolicy": "Background",
            },
        )
    except NotFound:
        return f"{name} was already gone"
    return f"{name} deleted (--cleanup-on-failure)"
