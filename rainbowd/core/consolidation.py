"""Consolidation: which of a draining color's pods to give back, and when. Pure.

A color retired for `consolidate.after` and still above its floor is scaled down, every
`consolidate.every`, by the pods holding no connections: never below `keepPods`, never below the
pods that hold connections, and a pod whose connections are unknown counts as holding some.
`stepDown` goes further, removing the least-connected pods (never one whose figure is unknown).
The ReplicaSet controller removes the pods of lowest `pod-deletion-cost` first when all are
running and ready, so the step sets that cost on every pod before the /scale. Anything short of
complete per-pod figures makes consolidation unavailable, with why, never a guess.
docs/design.md "Consolidation" is the spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from rainbowd.core.instants import Beyond, later
from rainbowd.core.model import (
    CONSOLIDATED_AT,
    CONSOLIDATED_FROM,
    STEPPED_DOWN_AT,
    ActionKind,
    Connections,
    Deployment,
    Plan,
    PodConnections,
    PodStep,
    Reason,
    Snapshot,
    State,
)
from rainbowd.core.notes import IdlePods, SteppedDown
from rainbowd.core.objects import parse_stamp
from rainbowd.core.policy import Knobs

# The highest pod-deletion-cost Kubernetes accepts (an int32): the pods that must stay.
KEEP_COST = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Consolidation:
    """What consolidation decides for one color this cycle.

    `step` is due now, for `reason` (IDLE_PODS, or STEP_DOWN: it disconnects users, so it
    spends the disruption budget), on the figures `why`; `unavailable` says why a color that
    would be considered cannot be (shown as "consolidation unavailable: ..."); `recheck_at` is
    the first instant at which time alone changes the decision (None: never), which
    the rule returns as its Ruling's changes_at."""

    step: PodStep | None = None
    reason: Reason | None = None
    why: IdlePods | SteppedDown | None = None
    unavailable: str | None = None
    recheck_at: datetime | None = None
    stamps: tuple[tuple[str, str], ...] = ()
    """The annotations the step writes with its /scale (its record, for restarts)."""


NOTHING = Consolidation()


def _stamp(annotations: Mapping[str, str], key: str) -> datetime | str | None:
    """An annotation's time: None when absent, the raw text when it does not parse."""
    text = annotations.get(key)
    if text is None:
        return None
    at = parse_stamp(text)
    return text if at is None else at


def decide_consolidation(
    now: datetime,
    deployment: Deployment,
    *,
    knobs: Knobs,
    retired_at: datetime,
    connections: Connections,
    pods: PodConnections | None,
    stamp: str,
) -> Consolidation:
    """The decision for one retired color with replicas that no rule scales down this cycle
    and nothing protects: a step due now, why none can be, or when to look again.

    `stamp` is the cycle's time as written to annotations."""
    policy = knobs.consolidate
    replicas = deployment.replicas
    if policy is None or replicas <= policy.keep_pods:
        return NOTHING
    if connections.value is not None and connections.value <= knobs.connection_floor:
        return NOTHING  # the drain's business
    due_at = later(retired_at, policy.after, beyond=Beyond.NEVER)
    if now < due_at:
        return Consolidation(recheck_at=due_at)
    if connections.value is None:
        return Consolidation(unavailable=f"connections unknown ({connections.cause})")
    annotations = deployment.annotations
    last = _stamp(annotations, CONSOLIDATED_AT)
    if isinstance(last, str):
        return Consolidation(
            unavailable=f"{CONSOLIDATED_AT} {last!r} is not an RFC 3339 time (fix or remove it)"
        )
    cut_short = last is not None and annotations.get(CONSOLIDATED_FROM) == str(replicas)
    # A record stamped far ahead: the next step is never due.
    next_at = None if last is None else later(last, policy.every, beyond=Beyond.NEVER)
    if next_at is not None and not cut_short and now < next_at:
        return Consolidation(recheck_at=next_at)
    unavailable = pods_problem(replicas, pods)
    if unavailable is not None:
        return Consolidation(unavailable=unavailable)
    assert pods is not None
    return _step(now, deployment, knobs, pods.pods, next_at=next_at, stamp=stamp)


def _step(
    now: datetime,
    deployment: Deployment,
    knobs: Knobs,
    figures: Mapping[str, float | None],
    *,
    next_at: datetime | None,
    stamp: str,
) -> Consolidation:
    """The step of a color due one, on complete per-pod figures: its idle pods, or else, with
    stepDown, its least-connected ones once stepDown's `every` has passed."""
    policy = knobs.consolidate
    assert policy is not None
    replicas = deployment.replicas
    annotations = deployment.annotations
    record = [(CONSOLIDATED_AT, stamp), (CONSOLIDATED_FROM, str(replicas))]
    idle = pod_step(figures, keep_pods=policy.keep_pods)
    if idle is not None:
        return Consolidation(
            step=idle,
            reason=Reason.IDLE_PODS,
            why=IdlePods(
                pods=replicas,
                idle=sum(1 for v in figures.values() if v is not None and v <= 0),
                to=idle.replicas,
                keep=policy.keep_pods,
                removed=_removed(idle),
            ),
            stamps=tuple(record),
        )
    step_down = knobs.step_down
    if step_down is None:
        return NOTHING
    if next_at is not None and now < next_at:
        # A step cut short is retaken early only when it frees idle pods: the record cannot
        # tell a crash from a person scaling the color back up to what it was, and a step
        # that would disconnect someone waits its turn either way.
        return Consolidation(recheck_at=next_at)
    stepped = _stamp(annotations, STEPPED_DOWN_AT)
    if isinstance(stepped, str):
        # When the last step-down was is in doubt: no pod holding connections goes on a guess.
        return Consolidation(
            unavailable=f"{STEPPED_DOWN_AT} {stepped!r} is not an RFC 3339 time (fix or remove it)"
        )
    step_at = None if stepped is None else later(stepped, step_down.every, beyond=Beyond.NEVER)
    if step_at is not None and now < step_at:
        return Consolidation(recheck_at=step_at)
    step = pod_step(figures, keep_pods=policy.keep_pods, beyond_idle=step_down.max_pods)
    if step is None:
        return NOTHING
    return Consolidation(
        step=step,
        reason=Reason.STEP_DOWN,
        why=SteppedDown(
            pods=replicas, to=step.replicas, max_pods=step_down.max_pods, removed=_removed(step)
        ),
        stamps=(*record, (STEPPED_DOWN_AT, stamp)),
    )


NOT_ASKED = "per-pod connections not known this cycle"


def needs_pods(
    now: datetime,
    deployment: Deployment,
    *,
    knobs: Knobs,
    retired_at: datetime,
    connections: Connections,
) -> bool:
    """Whether `decide_consolidation` would step the color if it had its per-pod figures: the
    pipeline asks Prometheus for them only then."""
    decided = decide_consolidation(
        now,
        deployment,
        knobs=knobs,
        retired_at=retired_at,
        connections=connections,
        pods=None,
        stamp="",
    )
    return decided.unavailable == NOT_ASKED


def pods_problem(replicas: int, pods: PodConnections | None) -> str | None:
    """Why the per-pod figures cannot decide a step, or None."""
    if pods is None:
        return NOT_ASKED
    if pods.unavailable is not None:
        return pods.unavailable
    if len(pods.pods) != replicas:
        # Pods starting or terminating: the controller removes unready pods first, whatever
        # their cost, so no step is taken until the color has exactly its replicas, all ready.
        return f"{len(pods.pods)} ready pods for {replicas} replicas: waiting for them to match"
    return None


def pod_step(
    pods: Mapping[str, float | None], *, keep_pods: int, beyond_idle: int = 0
) -> PodStep | None:
    """The pods to remove: every idle one (no connections) down to `keep_pods` and to the pods
    holding connections, then up to `beyond_idle` of those, least-connected first. A pod whose
    figure is unknown is never removed. None: nothing to remove."""
    figures = dict(pods)
    known = sorted((value, name) for name, value in figures.items() if value is not None)
    idle = {name for value, name in known if value <= 0}
    busy = len(figures) - len(idle)
    removable = len(figures) - max(keep_pods, busy - beyond_idle)
    # Only pods with a known figure can go, lowest first; without stepDown only idle ones.
    removed = [name for _, name in known[: max(0, removable)]]
    if not beyond_idle:
        removed = [name for name in removed if name in idle]
    if not removed:
        return None
    top = max(deletion_cost(figures[name]) for name in removed)
    costs = {
        name: deletion_cost(value) if name in removed else max(deletion_cost(value), top + 1)
        for name, value in figures.items()
    }
    return PodStep(
        replicas=len(figures) - len(removed),
        pods=figures,
        removed=tuple(removed),
        costs=costs,
        stepped=sum(1 for name in removed if name not in idle),
    )


def deletion_cost(value: float | None) -> int:
    """A pod's deletion cost: its connections (rounded up), the highest for unknown. Kept
    current on the pods of draining colors (`costs_to_keep`), and set by each step."""
    if value is None or not math.isfinite(value):
        return KEEP_COST
    return min(max(math.ceil(value), 0), KEEP_COST - 1)


def _removed(step: PodStep) -> tuple[tuple[str, float], ...]:
    return tuple((name, step.pods[name] or 0.0) for name in step.removed)


def costs_to_keep(plan: Plan, snapshot: Snapshot) -> dict[tuple[str, str], int]:
    """The pod-deletion-cost each pod of a draining color should carry, by (namespace, pod):
    its connections, so that whoever scales the color down (its HPA, a person) removes the idle
    pods first, as a consolidation step would. Only for colors with per-pod figures this
    cycle; not for a color with a step planned now (the step's own costs decide which pods it
    removes, and must not be overwritten before the ReplicaSet controller has acted)."""
    out: dict[tuple[str, str], int] = {}
    for app in plan.apps:
        for color in app.colors:
            if color.rule is None or color.state is not State.DRAINING:
                continue
            if any(a.kind is ActionKind.CONSOLIDATE for a in color.actions):
                continue
            figures = snapshot.pods_for(app.namespace, app.app, color.color)
            if figures is None or figures.unavailable is not None:
                continue
            for pod, value in figures.pods.items():
                out[(app.namespace, pod)] = deletion_cost(value)
    return out
