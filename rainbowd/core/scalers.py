"""What scales a color and what guards its pods (HPAs, KEDA ScaledObjects, PDBs), and how rainbowd
acts through them rather than against them: a consolidation step lowers the HPA's bounds with the
replicas (the old bounds recorded on the HPA, for a rollback), a scale to 0 pauses a ScaledObject
the way KEDA documents; where it cannot act safely, `consolidation_problem` says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rainbowd.core.model import (
    HPA_BOUNDS,
    KEDA_PAUSED,
    KEDA_PAUSED_REPLICAS,
    ColorObject,
    Deployment,
    ObjectKind,
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """An HPA's minReplicas and maxReplicas."""

    min_replicas: int
    max_replicas: int

    def record(self) -> str:
        """The HPA_BOUNDS annotation's value."""
        return json.dumps({"minReplicas": self.min_replicas, "maxReplicas": self.max_replicas})


def parse_bounds(text: str) -> Bounds | None:
    """An HPA_BOUNDS record, or None when it is not one (hand-edited)."""
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, Mapping):
        return None
    low, high = raw.get("minReplicas"), raw.get("maxReplicas")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        return None
    assert isinstance(low, int) and isinstance(high, int)
    if low < 1 or high < low:
        return None
    return Bounds(low, high)


def objects_of(deployment: Deployment, objects: Iterable[ColorObject]) -> list[ColorObject]:
    """The HPAs and ScaledObjects targeting `deployment`, and the PDBs selecting its pods."""
    return [o for o in objects if o.applies_to(deployment)]


def scaling(namespace: str, name: str, objects: Iterable[ColorObject]) -> list[ColorObject]:
    """The HPAs and ScaledObjects whose target is the Deployment `namespace/name`."""
    return [
        o
        for o in objects
        if o.kind is not ObjectKind.PDB and o.namespace == namespace and o.target == name
    ]


def _names(found: list[ColorObject]) -> str:
    return ", ".join(sorted(o.name for o in found))


def paused(scaled: ColorObject) -> bool:
    """Whether KEDA leaves this ScaledObject's target alone (paused, at a count or at all)."""
    return (
        KEDA_PAUSED_REPLICAS in scaled.annotations
        or scaled.annotations.get(KEDA_PAUSED, "").lower() == "true"
    )


AUTOSCALERS = (
    "with an HPA: each step lowers its minReplicas (bounds kept on it, restored by rollback)",
    "no step on a color with an unpaused KEDA ScaledObject or several HPAs (said in the note)",
)
"""What consolidation does about what scales a color, as `check-policy` says it beside a rule
that consolidates (`consolidation_problem` is the per-color answer)."""


# Why a Rollout color is never consolidated: Argo Rollouts puts a lowered old ReplicaSet's
# replicas back to the Rollout's while its deadline is ahead (tests/integration/
# test_argo_rollouts_controller.py), so a step would be undone at its next reconcile.
ROLLOUT_CONSOLIDATION = (
    "Argo Rollouts sets an old ReplicaSet's replicas back to the Rollout's while its "
    "scale-down-deadline is ahead, so a step would be undone: consolidation is unavailable for "
    "Rollout colors (rainbowd acts on them only through their scale-down-deadline)"
)


def consolidation_problem(namespace: str, name: str, objects: Iterable[ColorObject]) -> str | None:
    """Why a consolidation step on the Deployment `namespace/name` cannot be taken through what
    scales it, or None.

    A ScaledObject owns an HPA of KEDA's making that KEDA rewrites from the ScaledObject: a step
    would be undone, so it is not taken (a scale to 0 pauses the ScaledObject instead). Two HPAs
    on one target are refused by the HPA controller itself (AmbiguousSelector); which one's
    bounds to lower is a guess, and rainbowd does not guess."""
    found = scaling(namespace, name, objects)
    scaled = [o for o in found if o.kind is ObjectKind.SCALED_OBJECT and not paused(o)]
    if scaled:
        return (
            f"KEDA ScaledObject {_names(scaled)} scales it and would undo a step "
            "(a scale to 0 pauses it instead)"
        )
    hpas = [o for o in found if o.kind is ObjectKind.HPA]
    if len(hpas) > 1:
        return f"HorizontalPodAutoscalers {_names(hpas)} all target it: which to lower is a guess"
    for hpa in hpas:
        text = hpa.annotations.get(HPA_BOUNDS)
        if text is not None and parse_bounds(text) is None:
            return (
                f"HorizontalPodAutoscaler {hpa.name}: {HPA_BOUNDS} {text!r} is not a record "
                "of bounds (fix or remove it)"
            )
    return None


def hpa_of(namespace: str, name: str, objects: Iterable[ColorObject]) -> ColorObject | None:
    """The one HPA targeting the Deployment `namespace/name`, or None (none, or several: see
    `consolidation_problem`)."""
    hpas = [o for o in scaling(namespace, name, objects) if o.kind is ObjectKind.HPA]
    return hpas[0] if len(hpas) == 1 else None


def lowered(hpa: ColorObject, *, before: int, replicas: int) -> tuple[Bounds, Bounds]:
    """The HPA's bounds for a step from `before` to `replicas` pods, and the record of its
    bounds before rainbowd first lowered them (kept from an earlier step).

    minReplicas follows the replicas down, so the HPA does not scale the color back up; and
    maxReplicas comes down to what the color had before the step if it was above it: a
    retired color gets no new connections, so pods the HPA added would be idle pods for the
    next step to remove."""
    assert hpa.min_replicas is not None and hpa.max_replicas is not None
    current = Bounds(hpa.min_replicas, hpa.max_replicas)
    text = hpa.annotations.get(HPA_BOUNDS)
    original = (parse_bounds(text) if text is not None else None) or current
    high = max(replicas, min(current.max_replicas, before))
    return Bounds(min(current.min_replicas, replicas), high), original


def scaled_objects_to_pause(
    namespace: str, name: str, objects: Iterable[ColorObject]
) -> list[ColorObject]:
    """The ScaledObjects targeting the Deployment `namespace/name` that KEDA would scale back
    up from 0."""
    return [
        o
        for o in scaling(namespace, name, objects)
        if o.kind is ObjectKind.SCALED_OBJECT and not paused(o)
    ]
