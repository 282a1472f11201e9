"""Snapshot files: a Kubernetes List of Deployments and Services (`kubectl get
deployments,services -A -o yaml`; with Argo Rollouts, `kubectl get
deployments,services,rollouts,replicasets -A -o yaml`), plus optional `now:` and `connections:`,
to and from a Snapshot. A Rollout's ReplicaSets are its colors; other ReplicaSets are left out.
A `connections:` entry may list its color's `pods:` with each pod's connections (null: unknown),
the per-pod figures consolidation plans from.

Works on decoded documents; reading the file (YAML or JSON) is the caller's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rainbowd.core.model import (
    ROLLOUT_HASH,
    Connections,
    Deployment,
    Namespace,
    PodConnections,
    Rollout,
    Service,
    Snapshot,
    WorkloadKind,
)
from rainbowd.core.objects import (
    ObjectError,
    deployment_from_k8s,
    format_time,
    parse_time,
    replicaset_from_k8s,
    rollout_colors,
    rollout_from_k8s,
    service_from_k8s,
)

_TOP_KEYS = frozenset({"apiVersion", "kind", "metadata", "items", "now", "connections"})
_CONNECTION_KEYS = frozenset({"namespace", "app", "color", "value", "series", "cause", "pods"})
_UNKNOWN_WORDS = frozenset({"nan", "+inf", "-inf", "inf"})
_UNKNOWN_CAUSE = "unknown in the snapshot file"


class SnapshotError(ValueError):
    """A snapshot document is invalid; `errors` lists every problem, each with its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _plain(value: Any) -> Any:
    """Datetimes (a YAML loader turns unquoted timestamps into them) back to RFC 3339 text."""
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _time(value: Any, path: str, errors: list[str]) -> datetime | None:
    if not isinstance(value, str):
        errors.append(f"{path}: expected an RFC 3339 time, got {value!r}")
        return None
    try:
        return parse_time(value)
    except ValueError:
        errors.append(f"{path}: expected an RFC 3339 time like 2026-11-21T10:00:00Z, got {value!r}")
        return None


def _figure(raw: Any, path: str, errors: list[str]) -> float | None:
    """A connections figure: a non-negative number, or null, NaN or Inf for unknown."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in _UNKNOWN_WORDS):
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        errors.append(f"{path}: expected a number, null or NaN, got {raw!r}")
        return None
    if not math.isfinite(raw):
        return None
    if raw < 0:
        errors.append(f"{path}: expected a non-negative number, got {raw!r}")
        return None
    return float(raw)


def _pods(raw: Any, path: str, errors: list[str]) -> PodConnections | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        errors.append(f"{path}: expected a mapping of pod names to connections")
        return None
    pods: dict[str, float | None] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name:
            errors.append(f"{path}: expected pod names, got {name!r}")
            continue
        pods[name] = _figure(value, f"{path}.{name}", errors)
    return PodConnections(pods=pods)


def _connections(
    entry: Any, path: str, errors: list[str]
) -> tuple[str, str, str, Connections, PodConnections | None] | None:
    if not isinstance(entry, Mapping):
        errors.append(f"{path}: expected a mapping with namespace, app, color and value")
        return None
    before = len(errors)
    for key in entry:
        if key not in _CONNECTION_KEYS:
            errors.append(
                f"{path}.{key}: unknown key (expected {', '.join(sorted(_CONNECTION_KEYS))})"
            )
    names: list[str] = []
    for key in ("namespace", "app", "color"):
        name = entry.get(key)
        if not isinstance(name, str) or not name:
            errors.append(f"{path}.{key}: expected a non-empty string, got {name!r}")
        else:
            names.append(name)
    if "value" not in entry:
        errors.append(f"{path}.value: missing (a number, or null or NaN for unknown)")
    value = _figure(entry.get("value"), f"{path}.value", errors)
    pods = _pods(entry.get("pods"), f"{path}.pods", errors)
    series = entry.get("series")
    if series is not None and (
        isinstance(series, bool) or not isinstance(series, int) or series < 0
    ):
        errors.append(f"{path}.series: expected a non-negative integer, got {series!r}")
    cause = entry.get("cause", "")
    if cause is None:
        cause = ""
    if not isinstance(cause, str):
        errors.append(f"{path}.cause: expected a string, got {cause!r}")
    if len(errors) > before:
        return None
    namespace, app, color = names
    if value is None:
        connections = Connections(value=None, series=series, cause=cause or _UNKNOWN_CAUSE)
    else:
        connections = Connections(value=value, series=series, cause=cause)
    return namespace, app, color, connections, pods


def snapshot_from_document(document: Any, *, default_now: datetime) -> Snapshot:
    """A decoded snapshot file to a Snapshot; raise SnapshotError listing every problem."""
    errors: list[str] = []
    if not isinstance(document, Mapping):
        raise SnapshotError(
            [f"expected a Kubernetes List with items:, got {type(document).__name__}"]
        )
    document = _plain(document)
    for key in document:
        if key not in _TOP_KEYS:
            errors.append(f"{key}: unknown key (expected items, now, connections)")
    now = default_now
    if document.get("now") is not None:
        now = _time(document["now"], "now", errors) or default_now
    deployments, services = _objects(document.get("items"), errors)
    connections, pods = _all_connections(document.get("connections"), errors)
    if errors:
        raise SnapshotError(errors)
    names = sorted(set(deployments) | set(services) | set(connections))
    return Snapshot(
        now=now,
        namespaces={
            name: Namespace(
                name=name,
                deployments=tuple(deployments.get(name, ())),
                services=tuple(services.get(name, ())),
                connections=connections.get(name, {}),
                pods=pods.get(name, {}),
            )
            for name in names
        },
    )


def _objects(
    items: Any, errors: list[str]
) -> tuple[dict[str, list[Deployment]], dict[str, list[Service]]]:
    """The snapshot file's Deployments and Services by namespace; problems go to `errors`."""
    deployments: dict[str, list[Deployment]] = {}
    services: dict[str, list[Service]] = {}
    replicasets: list[Deployment] = []
    rollouts: dict[tuple[str, str], Rollout] = {}
    if items is None:
        items = []
    if not isinstance(items, list):
        errors.append("items: expected a list of Deployments and Services")
        items = []
    for index, item in enumerate(items):
        path = f"items[{index}]"
        if not isinstance(item, Mapping):
            errors.append(f"{path}: expected a Kubernetes object, got {type(item).__name__}")
            continue
        kind = item.get("kind")
        try:
            if kind == "Deployment":
                d = deployment_from_k8s(item)
                deployments.setdefault(d.namespace, []).append(d)
            elif kind == "Service":
                s = service_from_k8s(item)
                services.setdefault(s.namespace, []).append(s)
            elif kind == "Rollout":
                r = rollout_from_k8s(item)
                rollouts[(r.namespace, r.name)] = r
            elif kind == "ReplicaSet":
                rs = replicaset_from_k8s(item)
                if ROLLOUT_HASH in rs.template_labels:
                    replicasets.append(rs)
            else:
                errors.append(
                    f"{path}.kind: expected Deployment, Service, Rollout or ReplicaSet, got "
                    f"{kind!r} (kubectl get deployments,services -A -o yaml gives exactly these)"
                )
        except ObjectError as exc:
            errors.append(f"{path}: {exc}")
    for color in rollout_colors(replicasets, rollouts):
        deployments.setdefault(color.namespace, []).append(color)
    return deployments, services


def _all_connections(
    raw_connections: Any, errors: list[str]
) -> tuple[
    dict[str, dict[tuple[str, str], Connections]], dict[str, dict[tuple[str, str], PodConnections]]
]:
    """The snapshot file's connections (and per-pod figures) by namespace, by (app, color)."""
    connections: dict[str, dict[tuple[str, str], Connections]] = {}
    pods: dict[str, dict[tuple[str, str], PodConnections]] = {}
    if raw_connections is None:
        raw_connections = []
    if not isinstance(raw_connections, list):
        errors.append("connections: expected a list of {namespace, app, color, value}")
        raw_connections = []
    for index, entry in enumerate(raw_connections):
        parsed = _connections(entry, f"connections[{index}]", errors)
        if parsed is None:
            continue
        namespace, app, color, value, figures = parsed
        per_ns = connections.setdefault(namespace, {})
        if (app, color) in per_ns:
            errors.append(f"connections[{index}]: {namespace}/{app}/{color} is listed twice")
        per_ns[(app, color)] = value
        if figures is not None:
            pods.setdefault(namespace, {})[(app, color)] = figures
    return connections, pods


def _deployment_document(d: Deployment) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": d.name,
        "namespace": d.namespace,
        "uid": d.uid,
        "resourceVersion": d.resource_version,
        "creationTimestamp": format_time(d.created_at),
        "generation": d.generation,
    }
    if d.labels:
        metadata["labels"] = dict(d.labels)
    if d.annotations:
        metadata["annotations"] = dict(d.annotations)
    status: dict[str, Any] = {
        "observedGeneration": d.observed_generation,
        "readyReplicas": d.ready_replicas,
        "availableReplicas": d.available_replicas,
        "updatedReplicas": d.updated_replicas,
    }
    if d.conditions:
        status["conditions"] = [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
            for c in d.conditions
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": d.replicas,
            "template": {"metadata": {"labels": dict(d.template_labels)}},
        },
        "status": status,
    }


def _workload_document(d: Deployment) -> dict[str, Any]:
    """A Deployment, or a Rollout color as its ReplicaSet owned by its Rollout."""
    document = _deployment_document(d)
    if d.kind is WorkloadKind.DEPLOYMENT or d.rollout is None:
        return document
    document["kind"] = "ReplicaSet"
    owner = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "controller": True}
    owner |= {"name": d.rollout.name, "uid": d.rollout.uid}
    document["metadata"]["ownerReferences"] = [owner]
    document["metadata"].pop("labels", None)
    return document


def _rollout_document(r: Rollout) -> dict[str, Any]:
    blue_green: dict[str, Any] = {
        "activeService": r.active_service,
        "scaleDownDelaySeconds": r.scale_down_delay,
    }
    if r.preview_service:
        blue_green["previewService"] = r.preview_service
    if r.revision_limit is not None:
        blue_green["scaleDownDelayRevisionLimit"] = r.revision_limit
    metadata: dict[str, Any] = {"name": r.name, "namespace": r.namespace, "uid": r.uid}
    if r.labels:
        metadata["labels"] = dict(r.labels)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": metadata,
        "spec": {"strategy": {"blueGreen": blue_green}},
    }


def _service_document(s: Service) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": s.name, "namespace": s.namespace},
        "spec": {"selector": dict(s.selector)},
    }


def snapshot_to_document(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot file form of `snapshot`; `snapshot_from_document` reads it back equal
    (times at whole seconds, as Kubernetes writes them)."""
    items: list[dict[str, Any]] = []
    connections: list[dict[str, Any]] = []
    for namespace in snapshot.namespaces.values():
        items.extend(_workload_document(d) for d in namespace.deployments)
        rollouts = {d.rollout.name: d.rollout for d in namespace.deployments if d.rollout}
        items.extend(_rollout_document(r) for r in rollouts.values())
        items.extend(_service_document(s) for s in namespace.services)
        for (app, color), value in namespace.connections.items():
            entry: dict[str, Any] = {
                "namespace": namespace.name,
                "app": app,
                "color": color,
                "value": value.value,
            }
            if value.series is not None:
                entry["series"] = value.series
            if value.cause:
                entry["cause"] = value.cause
            figures = namespace.pods.get((app, color))
            if figures is not None and figures.unavailable is None:
                entry["pods"] = dict(figures.pods)
            connections.append(entry)
    return {
        "apiVersion": "v1",
        "kind": "List",
        "now": format_time(snapshot.now),
        "items": items,
        "connections": connections,
    }
