"""Turns Kubernetes objects, as decoded JSON, into the model's Deployment, Service and the
objects that scale a color or guard its pods (HPA, KEDA ScaledObject, PDB); and an Argo
Rollout's ReplicaSets, joined with their Rollout, into colors of the same model.

Shared by the watch cache (raw watch events) and snapshot files (`kubectl get -o yaml` output),
so both see exactly the same fields. Bad input raises ObjectError naming the object and field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from rainbowd.core.model import (
    ANNOTATION_PREFIX,
    ROLLOUT_REVISION,
    SCALE_DOWN_DEADLINE,
    ColorObject,
    Condition,
    Deployment,
    LabelRequirement,
    ObjectKind,
    Rollout,
    Service,
    WorkloadKind,
)


class ObjectError(ValueError):
    """A Kubernetes object lacks a field rainbowd needs, or has it in the wrong shape."""


# RFC 3339's date-time: Python's fromisoformat alone takes more (any character between date and
# time, no seconds, basic format), so `0001-01-01000-0000` would read as year 1, not as a typo.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_time(value: str) -> datetime:
    """RFC 3339 (`2026-11-21T10:00:00Z`, fractions and offsets allowed) to an aware UTC datetime;
    anything else is a ValueError."""
    text = value.strip()
    if _RFC3339.fullmatch(text) is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+05:00 is before year 1 in UTC: no datetime holds it.
        raise ValueError(f"timestamp out of range in UTC: {value!r}") from None


@functools.lru_cache(maxsize=1 << 16)
def parse_stamp(value: str) -> datetime | None:
    """A rainbowd annotation's time, or None when it does not parse.

    Memoized: the same few thousand stamps are read again every cycle, and parsing dominates
    the per-color cost otherwise.
    """
    try:
        return parse_time(value)
    except ValueError:
        return None


def format_time(value: datetime) -> str:
    """The form rainbowd writes into annotations: RFC 3339, UTC, whole seconds."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _where(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        return f"{obj.get('kind', 'object')} {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    return str(obj.get("kind", "object"))


def _mapping(obj: Mapping[str, Any], value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ObjectError(f"{_where(obj)}: {path}: expected a mapping, got {type(value).__name__}")
    return value


def _str_map(obj: Mapping[str, Any], value: Any, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in _mapping(obj, value, path).items():
        if not isinstance(v, str):
            raise ObjectError(f"{_where(obj)}: {path}.{k}: expected a string, got {v!r}")
        out[str(k)] = v
    return out


def _int(obj: Mapping[str, Any], value: Any, path: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ObjectError(f"{_where(obj)}: {path}: expected an integer, got {value!r}")
    return value


def _annotations(
    obj: Mapping[str, Any], meta: Mapping[str, Any], prefixes: tuple[str, ...]
) -> dict[str, str]:
    """The object's annotations under `prefixes`: the rest is never read and would cost memory."""
    raw = _str_map(obj, meta.get("annotations"), "metadata.annotations")
    return {k: v for k, v in raw.items() if k.startswith(prefixes)}


def _metadata(obj: Mapping[str, Any]) -> tuple[Mapping[str, Any], str, str]:
    if not isinstance(obj, Mapping):
        raise ObjectError(f"expected a Kubernetes object, got {type(obj).__name__}")
    meta = _mapping(obj, obj.get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError(f"{_where(obj)}: metadata.name: missing")
    namespace = meta.get("namespace") or "default"
    if not isinstance(namespace, str):
        raise ObjectError(f"{_where(obj)}: metadata.namespace: expected a string")
    return meta, namespace, name


def deployment_from_k8s(obj: Mapping[str, Any]) -> Deployment:
    """An apps/v1 Deployment (decoded JSON) to a model Deployment."""
    return _workload(obj, WorkloadKind.DEPLOYMENT)


def replicaset_from_k8s(obj: Mapping[str, Any]) -> Deployment:
    """An apps/v1 ReplicaSet of an Argo Rollout (decoded JSON) to a Rollout color, its Rollout
    named (`owner`) but not yet joined (`rollout_colors`). Its annotations kept are rainbowd's
    and Argo Rollouts' scale-down-deadline and revision."""
    color = _workload(obj, WorkloadKind.ROLLOUT)
    meta = _mapping(obj, obj.get("metadata"), "metadata")
    owners = meta.get("ownerReferences") or []
    if not isinstance(owners, list):
        raise ObjectError(f"{_where(obj)}: metadata.ownerReferences: expected a list")
    owner = ""
    for ref in owners:
        if isinstance(ref, Mapping) and ref.get("kind") == "Rollout" and ref.get("controller"):
            owner = str(ref.get("name") or "")
    return replace(color, owner=owner)


def _workload(obj: Mapping[str, Any], kind: WorkloadKind) -> Deployment:
    meta, namespace, name = _metadata(obj)
    spec = _mapping(obj, obj.get("spec"), "spec")
    status = _mapping(obj, obj.get("status"), "status")
    template = _mapping(obj, spec.get("template"), "spec.template")
    template_meta = _mapping(obj, template.get("metadata"), "spec.template.metadata")
    created = meta.get("creationTimestamp")
    if not isinstance(created, str):
        raise ObjectError(f"{_where(obj)}: metadata.creationTimestamp: missing")
    try:
        created_at = parse_time(created)
    except ValueError as exc:
        raise ObjectError(f"{_where(obj)}: metadata.creationTimestamp: {exc}") from exc
    annotations = _annotations(obj, meta, (ANNOTATION_PREFIX,))
    if kind is WorkloadKind.ROLLOUT:
        raw = _str_map(obj, meta.get("annotations"), "metadata.annotations")
        for key in (SCALE_DOWN_DEADLINE, ROLLOUT_REVISION):
            if key in raw:
                annotations[key] = raw[key]
    raw_conditions = status.get("conditions") or []
    if not isinstance(raw_conditions, list):
        raise ObjectError(f"{_where(obj)}: status.conditions: expected a list")
    conditions = tuple(
        Condition(
            type=str(c.get("type", "")),
            status=str(c.get("status", "")),
            reason=str(c.get("reason") or ""),
            message=str(c.get("message") or ""),
        )
        for c in raw_conditions
        if isinstance(c, Mapping)
    )
    return Deployment(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        created_at=created_at,
        labels=_str_map(obj, meta.get("labels"), "metadata.labels"),
        template_labels=_str_map(obj, template_meta.get("labels"), "spec.template.metadata.labels"),
        annotations=annotations,
        # The API defaults spec.replicas to 1; a document without it means the same.
        replicas=_int(obj, spec.get("replicas"), "spec.replicas", 1),
        ready_replicas=_int(obj, status.get("readyReplicas"), "status.readyReplicas", 0),
        available_replicas=_int(
            obj, status.get("availableReplicas"), "status.availableReplicas", 0
        ),
        conditions=conditions,
        generation=_int(obj, meta.get("generation"), "metadata.generation", 0),
        observed_generation=_int(
            obj, status.get("observedGeneration"), "status.observedGeneration", 0
        ),
        updated_replicas=_int(obj, status.get("updatedReplicas"), "status.updatedReplicas", 0),
        kind=kind,
    )


def rollout_from_k8s(obj: Mapping[str, Any]) -> Rollout:
    """An argoproj.io/v1alpha1 Rollout (decoded JSON) to a model Rollout. A Rollout of another
    strategy than blueGreen has no active Service: its colors are never managed."""
    meta, namespace, name = _metadata(obj)
    spec = _mapping(obj, obj.get("spec"), "spec")
    strategy = _mapping(obj, spec.get("strategy"), "spec.strategy")
    blue_green = _mapping(obj, strategy.get("blueGreen"), "spec.strategy.blueGreen")
    path = "spec.strategy.blueGreen"
    active = blue_green.get("activeService") or ""
    preview = blue_green.get("previewService") or ""
    if not isinstance(active, str) or not isinstance(preview, str):
        raise ObjectError(f"{_where(obj)}: {path}: activeService and previewService: strings")
    limit = blue_green.get("scaleDownDelayRevisionLimit")
    return Rollout(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        labels=_str_map(obj, meta.get("labels"), "metadata.labels"),
        active_service=active,
        preview_service=preview,
        scale_down_delay=_int(
            obj, blue_green.get("scaleDownDelaySeconds"), f"{path}.scaleDownDelaySeconds", 30
        ),
        revision_limit=None
        if limit is None
        else _int(obj, limit, f"{path}.scaleDownDelayRevisionLimit", 0),
    )


def rollout_colors(
    replicasets: Iterable[Deployment], rollouts: Mapping[tuple[str, str], Rollout]
) -> list[Deployment]:
    """Each ReplicaSet of a blueGreen Rollout joined with it (`rollouts` by namespace and name):
    the Rollout's labels, what rules select. ReplicaSets of no such Rollout are left out."""
    colors = []
    for rs in replicasets:
        rollout = rollouts.get((rs.namespace, rs.owner))
        if rollout is None or not rollout.blue_green:
            continue
        colors.append(joined(rs, rollout))
    return colors


def joined(replicaset: Deployment, rollout: Rollout) -> Deployment:
    """A ReplicaSet as a color of its Rollout."""
    return replace(replicaset, labels=rollout.labels, rollout=rollout)


def service_from_k8s(obj: Mapping[str, Any]) -> Service:
    """A v1 Service (decoded JSON) to a model Service."""
    _, namespace, name = _metadata(obj)
    spec = _mapping(obj, obj.get("spec"), "spec")
    return Service(
        namespace=namespace,
        name=name,
        selector=_str_map(obj, spec.get("selector"), "spec.selector"),
    )


# The annotations kept on an HPA or ScaledObject: rainbowd's records and KEDA's pause.
_KEPT_PREFIXES = (ANNOTATION_PREFIX, "autoscaling.keda.sh/")


def _target(obj: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """The Deployment a scaleTargetRef names ("" for any other kind)."""
    ref = _mapping(obj, spec.get("scaleTargetRef"), "spec.scaleTargetRef")
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError(f"{_where(obj)}: spec.scaleTargetRef.name: missing")
    # KEDA defaults the kind to Deployment and apiVersion to apps/v1; an HPA names both.
    kind = ref.get("kind") or "Deployment"
    api_version = str(ref.get("apiVersion") or "apps/v1")
    if kind != "Deployment" or api_version.split("/")[0] not in ("apps", "extensions"):
        return ""
    return name


def _selector(
    obj: Mapping[str, Any], spec: Mapping[str, Any]
) -> tuple[Mapping[str, str] | None, tuple[LabelRequirement, ...]]:
    raw = spec.get("selector")
    if raw is None:
        return None, ()
    selector = _mapping(obj, raw, "spec.selector")
    labels = _str_map(obj, selector.get("matchLabels"), "spec.selector.matchLabels")
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise ObjectError(f"{_where(obj)}: spec.selector.matchExpressions: expected a list")
    requirements = []
    for i, expr in enumerate(expressions):
        path = f"spec.selector.matchExpressions[{i}]"
        expr = _mapping(obj, expr, path)
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if not isinstance(key, str) or operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ObjectError(f"{_where(obj)}: {path}: expected a key and a known operator")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ObjectError(f"{_where(obj)}: {path}.values: expected a list of strings")
        requirements.append(LabelRequirement(key, operator, tuple(values)))
    return labels, tuple(requirements)


def color_object_from_k8s(kind: ObjectKind, obj: Mapping[str, Any]) -> ColorObject:
    """An HPA (autoscaling/v2), KEDA ScaledObject or PDB (policy/v1), as decoded JSON, to a
    model ColorObject (listed items carry no kind, so the caller names it)."""
    meta, namespace, name = _metadata(obj)
    spec = _mapping(obj, obj.get("spec"), "spec")
    annotations = _annotations(obj, meta, _KEPT_PREFIXES)
    owners = meta.get("ownerReferences") or []
    if not isinstance(owners, list):
        raise ObjectError(f"{_where(obj)}: metadata.ownerReferences: expected a list")
    common: dict[str, Any] = {
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "uid": str(meta.get("uid") or ""),
        "resource_version": str(meta.get("resourceVersion") or ""),
        "annotations": annotations,
        "owner_uids": tuple(str(o.get("uid") or "") for o in owners if isinstance(o, Mapping)),
    }
    if kind is ObjectKind.PDB:
        labels, expressions = _selector(obj, spec)
        return ColorObject(**common, match_labels=labels, match_expressions=expressions)
    if kind is ObjectKind.HPA:
        low, high = spec.get("minReplicas"), spec.get("maxReplicas")
        return ColorObject(
            **common,
            target=_target(obj, spec),
            # The API defaults minReplicas to 1.
            min_replicas=_int(obj, low, "spec.minReplicas", 1),
            max_replicas=_int(obj, high, "spec.maxReplicas", 1),
        )
    low, high = spec.get("minReplicaCount"), spec.get("maxReplicaCount")
    return ColorObject(
        **common,
        target=_target(obj, spec),
        # KEDA's defaults: 0 and 100.
        min_replicas=_int(obj, low, "spec.minReplicaCount", 0),
        max_replicas=_int(obj, high, "spec.maxReplicaCount", 100),
    )
