"""Templates and clones: the documents a deploy sends, before any of them is a cluster object.
A template's `__COLOR__` replaced and checked (one Deployment of the app's color, at most one
Service, and the color's own HPA, PDB and KEDA ScaledObject, each aimed at that Deployment);
`--image` as the live color's Deployment cloned to a new color."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from rainbowd.core.model import ObjectKind
from rainbowd.core.objects import ObjectError, color_object_from_k8s
from rainbowd.deploy.common import AppRef, UsageError

COLOR_PLACEHOLDER = "__COLOR__"
# The objects that belong to one color, created with it, owned by its Deployment (so the garbage
# collector deletes them with it): kind to (apiVersion, API path plural).
COLOR_KINDS: Mapping[str, tuple[str, str, ObjectKind]] = {
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers", ObjectKind.HPA),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets", ObjectKind.PDB),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobjects", ObjectKind.SCALED_OBJECT),
}
NO_PODS = "0 replicas: the Service would send its connections to no pod"


def document_name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def document_replicas(deployment: Mapping[str, Any]) -> int:
    """spec.replicas of a Deployment document; the API defaults it to 1."""
    return int((deployment.get("spec") or {}).get("replicas", 1))


def _template_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    spec = deployment.get("spec") or {}
    return dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})


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
    deployments, services, owned = [], [], []
    for index, doc in enumerate(documents, start=1):
        where = f"{source}: document {index}"
        if not isinstance(doc, dict):
            raise UsageError(f"{where}: expected a Kubernetes object, got {type(doc).__name__}")
        kind = doc.get("kind")
        if kind == "Deployment":
            deployments.append(doc)
        elif kind == "Service":
            services.append(doc)
        elif kind in COLOR_KINDS:
            owned.append((where, doc))
        else:
            raise UsageError(
                f"{where}: kind {kind!r}: a rainbow deploy applies one Deployment, its "
                f"Service and the color's own {', '.join(COLOR_KINDS)}; create other objects "
                "once, outside the template"
            )
    if len(deployments) != 1:
        raise UsageError(f"{source}: expected one Deployment, found {len(deployments)}")
    if len(services) > 1:
        raise UsageError(f"{source}: expected at most one Service, found {len(services)}")
    deployment = deployments[0]
    if document_replicas(deployment) < 1:
        raise UsageError(f"{source}: Deployment {document_name(deployment)!r}: {NO_PODS}")
    labels = _template_labels(deployment)
    for key, want in ((ref.app_label, ref.app), (ref.color_label, color)):
        if labels.get(key) != want:
            raise UsageError(
                f"{source}: Deployment {document_name(deployment)!r}: "
                f"spec.template.metadata.labels.{key} is {labels.get(key)!r}, expected {want!r}"
            )
    for where, doc in owned:
        _check_owned(where, doc, deployment)
    return documents


def _check_owned(where: str, doc: Mapping[str, Any], deployment: Mapping[str, Any]) -> None:
    """A color's HPA or ScaledObject must target its Deployment, its PDB select its pods: one
    aimed elsewhere would be deleted with a color it does not belong to."""
    kind = str(doc["kind"])
    name = document_name(deployment)
    try:
        found = color_object_from_k8s(COLOR_KINDS[kind][2], {"metadata": {}, **doc})
    except ObjectError as exc:
        raise UsageError(f"{where}: {exc}") from exc
    if found.kind is ObjectKind.PDB:
        if not found.selects(_template_labels(deployment)):
            raise UsageError(
                f"{where}: PodDisruptionBudget {found.name!r}: its selector does not select "
                f"the pods of Deployment {name!r}"
            )
    elif found.target != name:
        raise UsageError(
            f"{where}: {kind} {found.name!r}: spec.scaleTargetRef names "
            f"{found.target or 'no Deployment'!r}, expected Deployment {name!r}"
        )


def owned_documents(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The template's HPA, PDB and ScaledObject documents."""
    return [d for d in documents if d.get("kind") in COLOR_KINDS]


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
