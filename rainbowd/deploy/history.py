"""`rainbowd history`: the app's colors, oldest first, with when each went live, was retired,
scaled down or deleted and why, from rainbowd's annotations and Events; deleted colors from
their Events alone. Live is the planner's: what the app's Service selects, or for the colors of
an Argo Rollout (its ReplicaSets, the kind shown) what the Rollout's active Service selects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    HOLD_REASON,
    HOLD_UNTIL,
    LIVE_AT,
    RETIRED_AT,
    ROLLOUT_HASH,
    Deployment,
    Rollout,
    WorkloadKind,
)
from rainbowd.core.objects import (
    format_time,
    parse_time,
    replicaset_from_k8s,
    rollout_colors,
    rollout_from_k8s,
    service_from_k8s,
)
from rainbowd.deploy.common import (
    AppRef,
    app_colors,
    app_service,
    canary_color,
    live_colors,
    models,
)
from rainbowd.kube.clients import NotFound, request_json, resource_path
from rainbowd.kube.events import REPORTING_CONTROLLER

# Events saying the Service selects the color from then on: rainbowd's first sight of it live, or
# the command that switched it, which may come before (history's LIVE-AT is the first of them).
_WENT_LIVE = frozenset({"MarkedLive", "Deployed", "CanaryStarted", "Promoted", "RolledBack"})


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
    kind: WorkloadKind = WorkloadKind.DEPLOYMENT


def _state(
    color: str,
    deployment: Deployment,
    row: ColorHistory,
    *,
    live: Sequence[str],
    canary: str | None,
    live_created: datetime | None,
) -> str:
    if color == canary:
        return "live (canary)"
    if color in live and canary is None:
        return "live"
    if deployment.replicas == 0:
        return "scaled-down"
    if color in live:
        return "live"  # the Service selects the app only: every color with pods
    older = live_created is not None and deployment.created_at < live_created
    if row.live_at or row.retired_at or older:
        return "retired"  # as the planner has it: seen live, or older than the live one
    return "pending"


def _rows(
    colors: Mapping[str, Deployment], *, live: Sequence[str], canary: str | None
) -> dict[str, ColorHistory]:
    """A row per color there is, by Deployment (or ReplicaSet) name, from its annotations and
    status."""
    rows: dict[str, ColorHistory] = {}
    # The one color a rainbow Service selects; during a canary, the canary's own creation time
    # is no cut-off (the Service selects every color of the app).
    selected = colors.get(live[0]) if len(live) == 1 and canary is None else None
    live_created = selected.created_at if selected is not None else None
    for color, deployment in colors.items():
        annotations = deployment.annotations
        row = ColorHistory(
            color=color,
            deployment=deployment.name,
            created=deployment.created_at,
            kind=deployment.kind,
        )
        row.live_at = annotations.get(LIVE_AT, "")
        row.retired_at = annotations.get(RETIRED_AT, "")
        row.replicas = f"{deployment.ready_replicas}/{deployment.replicas}"
        row.state = _state(
            color, deployment, row, live=live, canary=canary, live_created=live_created
        )
        if HOLD_UNTIL in annotations:
            row.hold = f"held until {annotations[HOLD_UNTIL]}" + (
                f": {annotations[HOLD_REASON]}" if annotations.get(HOLD_REASON) else ""
            )
        rows[deployment.name] = row
    return rows


def _add_event(rows: dict[str, ColorHistory], event: Mapping[str, Any], prefix: str) -> None:
    name = str((event.get("regarding") or {}).get("name") or "")
    known = rows.get(name)
    if known is None:
        if not name.startswith(prefix):
            return
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


async def history(api: ApiClient, ref: AppRef) -> list[ColorHistory]:
    """The app's colors, oldest first: when each went live, was retired, scaled down or deleted,
    and why, from rainbowd's annotations and Events; deleted colors from their Events alone."""
    colors = models(await app_colors(api, ref))
    service = await app_service(api, ref)
    live = [] if service is None else live_colors(service.service, colors)
    canary = None if service is None else canary_color(service, ref)
    rows = _rows(colors, live=live, canary=canary)
    rows.update(await _rollout_rows(api, ref))
    listing = await request_json(
        api, "GET", resource_path("events.k8s.io/v1", "events", namespace=ref.namespace)
    )
    events = sorted(
        (
            e
            for e in listing.get("items") or []
            if e.get("reportingController") == REPORTING_CONTROLLER
            and (e.get("regarding") or {}).get("kind") in ("Deployment", "ReplicaSet")
        ),
        key=lambda e: str(e.get("eventTime") or ""),
    )
    for event in events:
        _add_event(rows, event, f"{ref.app}-")
    return sorted(
        rows.values(),
        key=lambda r: (r.created or datetime.max.replace(tzinfo=UTC), r.deployment),
    )


async def _rollout_rows(api: ApiClient, ref: AppRef) -> dict[str, ColorHistory]:
    """The rows of the app's Argo Rollout colors: its ReplicaSets of a blueGreen Rollout, live
    by the Rollout's active Service (none where Argo Rollouts is not installed)."""
    ns = ref.namespace
    found = await request_json(
        api,
        "GET",
        resource_path("apps/v1", "replicasets", namespace=ns),
        query={"labelSelector": f"{ref.app_label}={ref.app},{ROLLOUT_HASH}"},
    )
    replicasets = [replicaset_from_k8s(item) for item in found.get("items") or []]
    if not replicasets:
        return {}
    try:
        listed = await request_json(
            api, "GET", resource_path("argoproj.io/v1alpha1", "rollouts", namespace=ns)
        )
    except NotFound:
        return {}
    rollouts: dict[tuple[str, str], Rollout] = {}
    for item in listed.get("items") or []:
        rollout = rollout_from_k8s(item)
        rollouts[(rollout.namespace, rollout.name)] = rollout
    services = await request_json(api, "GET", resource_path("v1", "services", namespace=ns))
    by_name = {s.name: s for s in map(service_from_k8s, services.get("items") or [])}
    rows: dict[str, ColorHistory] = {}
    for rollout_name in {key[1] for key in rollouts}:
        colors = {
            d.template_labels[ROLLOUT_HASH]: d
            for d in rollout_colors(replicasets, rollouts)
            if d.owner == rollout_name
        }
        rollout = rollouts[(ns, rollout_name)]
        live = [c for c, d in colors.items() if rollout.selecting(d.template_labels, by_name)[0]]
        previewed = {
            c for c, d in colors.items() if rollout.selecting(d.template_labels, by_name)[1]
        }
        for row in _rows(colors, live=live, canary=None).values():
            if row.color in previewed:
                row.state = "pending"
            rows[row.deployment] = row
    return rows


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
                row.color if row.kind is WorkloadKind.DEPLOYMENT else f"{row.color} ({row.kind})",
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
