"""`rainbowd hold` and `release`: hold-until (and hold-reason) written on one color, which no
rule then scales or deletes; or taken off again."""

from __future__ import annotations

from datetime import datetime

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import HOLD_REASON, HOLD_UNTIL, Deployment
from rainbowd.core.objects import format_time
from rainbowd.deploy.common import (
    DeployError,
    UsageError,
    namespace_colors,
    patch_annotations,
    record,
)


async def find_color(
    api: ApiClient,
    namespace: str,
    color: str,
    *,
    app: str | None,
    color_label: str = "color",
    app_label: str = "app",
) -> Deployment:
    """The one Deployment of `color` (of `app` when given) in the namespace."""
    found: list[Deployment] = []
    everything = []
    for item in await namespace_colors(api, namespace):
        labels = item.deployment.template_labels
        if color_label not in labels:
            continue
        everything.append(f"{labels.get(app_label)} #{labels[color_label]}")
        if labels[color_label] == color and (app is None or labels.get(app_label) == app):
            found.append(item.deployment)
    if not found:
        known = ", ".join(sorted(everything)) or "none"
        raise DeployError(
            f"no color #{color}{' of ' + app if app else ''} in namespace {namespace} "
            f"(colors there: {known})"
        )
    if len(found) > 1:
        names = ", ".join(d.name for d in found)
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
    await patch_annotations(
        api,
        namespace,
        deployment.name,
        {HOLD_UNTIL: format_time(until), HOLD_REASON: reason or None},
    )
    note = f"held until {format_time(until)}" + (f": {reason}" if reason else "")
    await record(api, deployment, reason="Held", note=note, action="Hold")
    return deployment.name


async def release(api: ApiClient, namespace: str, color: str, *, app: str | None) -> str:
    deployment = await find_color(api, namespace, color, app=app)
    await patch_annotations(api, namespace, deployment.name, {HOLD_UNTIL: None, HOLD_REASON: None})
    await record(api, deployment, reason="Released", note="hold released", action="Release")
    return deployment.name
