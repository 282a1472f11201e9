"""The writes that keep a color's autoscalers in agreement with rainbowd: an HPA's bounds lowered
with a consolidation step (its old bounds recorded on it), a KEDA ScaledObject paused with a scale
to 0 (`autoscaling.keda.sh/paused-replicas: "0"`, marked as rainbowd's), and both undone by a
rollback before its Service switch. Used by the executor and by `rainbowd rollback`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio.client import ApiClient

from rainbowd.core.model import (
    HPA_BOUNDS,
    KEDA_PAUSED_REPLICAS,
    PAUSED_BY_RAINBOWD,
    ColorObject,
    ObjectKind,
)
from rainbowd.core.objects import color_object_from_k8s
from rainbowd.core.scalers import Bounds, lowered, parse_bounds
from rainbowd.kube.caching import HPAS, SCALED_OBJECTS
from rainbowd.kube.clients import (
    MERGE_PATCH,
    Conflict,
    Forbidden,
    NotFound,
    request_json,
    resource_path,
)

# Tries of the HPA patch: its controller writes the HPA's status at every sync, which moves the
# resourceVersion under the patch; the bounds themselves are checked again at each try.
PATCH_ATTEMPTS = 3


def _path(kind: ObjectKind, namespace: str, name: str | None = None) -> str:
    resource = HPAS if kind is ObjectKind.HPA else SCALED_OBJECTS
    return resource_path(resource.group_version, resource.plural, namespace=namespace, name=name)


async def _patch(api: ApiClient, obj: ColorObject, body: dict[str, Any]) -> None:
    path = _path(obj.kind, obj.namespace, obj.name)
    await request_json(api, "PATCH", path, body=body, content_type=MERGE_PATCH)


async def lower_hpa(
    api: ApiClient, hpa: ColorObject, *, before: int, replicas: int
) -> tuple[Bounds, Bounds] | None:
    """Lowers the HPA's bounds for a step from `before` to `replicas` pods, its bounds before
    rainbowd first lowered them recorded on it; read fresh, written with its resourceVersion.
    The bounds written and the record, or None when there was nothing to lower."""
    for attempt in range(PATCH_ATTEMPTS):
        raw = await request_json(api, "GET", _path(ObjectKind.HPA, hpa.namespace, hpa.name))
        fresh = color_object_from_k8s(ObjectKind.HPA, raw)
        if fresh.uid != hpa.uid or fresh.target != hpa.target:
            raise Conflict(f"HorizontalPodAutoscaler {hpa.name} changed since the plan")
        bounds, original = lowered(fresh, before=before, replicas=replicas)
        if (
            bounds == Bounds(fresh.min_replicas or 1, fresh.max_replicas or 1)
            and HPA_BOUNDS in fresh.annotations
        ):
            return None
        body = {
            "metadata": {
                "resourceVersion": fresh.resource_version,
                "annotations": {HPA_BOUNDS: original.record()},
            },
            "spec": {"minReplicas": bounds.min_replicas, "maxReplicas": bounds.max_replicas},
        }
        try:
            await _patch(api, fresh, body)
        except Conflict:
            if attempt == PATCH_ATTEMPTS - 1:
                raise
            continue
        return bounds, original
    return None  # pragma: no cover - the loop returns or raises


async def pause_scaled_objects(api: ApiClient, scaled: Iterable[ColorObject]) -> list[str]:
    """Pauses each ScaledObject at 0 replicas, as KEDA documents, marked as rainbowd's pause;
    the names of those paused."""
    done = []
    for obj in scaled:
        marks = {KEDA_PAUSED_REPLICAS: "0", PAUSED_BY_RAINBOWD: "true"}
        body = {"metadata": {"annotations": marks}}
        try:
            await _patch(api, obj, body)
        except NotFound:
            continue
        done.append(obj.name)
    return done


async def _listed(
    api: ApiClient, kind: ObjectKind, namespace: str, said: list[str]
) -> list[ColorObject]:
    try:
        answer = await request_json(api, "GET", _path(kind, namespace))
    except NotFound:  # KEDA's CRD is not installed
        return []
    except Forbidden:
        # A deployer allowed less than rainbowd: the rollback goes on, and says what it left.
        said.append(
            f"warning: the {kind.value}s of {namespace} may not be read with these "
            "credentials (forbidden): any change rainbowd made to them is left as it is"
        )
        return []
    return [color_object_from_k8s(kind, item) for item in answer.get("items") or []]


async def restore(api: ApiClient, namespace: str, deployment: str) -> list[str]:
    """Undoes what rainbowd did to the autoscalers of `deployment`: each HPA gets back the
    bounds recorded on it, each ScaledObject rainbowd paused is resumed. What was done, in
    words (one line each)."""
    said: list[str] = []
    for hpa in await _listed(api, ObjectKind.HPA, namespace, said):
        text = hpa.annotations.get(HPA_BOUNDS)
        if hpa.target != deployment or text is None:
            continue
        bounds = parse_bounds(text)
        body: dict[str, Any] = {"metadata": {"annotations": {HPA_BOUNDS: None}}}
        if bounds is not None:
            body["spec"] = {"minReplicas": bounds.min_replicas, "maxReplicas": bounds.max_replicas}
        await _patch(api, hpa, body)
        said.append(
            f"HorizontalPodAutoscaler {hpa.name}: bounds restored to "
            f"{bounds.min_replicas}..{bounds.max_replicas}"
            if bounds is not None
            else f"HorizontalPodAutoscaler {hpa.name}: {HPA_BOUNDS} {text!r} is not a record "
            "of bounds; removed, bounds left as they are"
        )
    for obj in await _listed(api, ObjectKind.SCALED_OBJECT, namespace, said):
        if obj.target != deployment or PAUSED_BY_RAINBOWD not in obj.annotations:
            continue
        body = {"metadata": {"annotations": {KEDA_PAUSED_REPLICAS: None, PAUSED_BY_RAINBOWD: None}}}
        await _patch(api, obj, body)
        said.append(f"ScaledObject {obj.name}: resumed (rainbowd's pause lifted)")
    return said
