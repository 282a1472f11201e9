"""A color's decisions as a ColorPlan and its actions: the stamps, the scale-down with its
bookkeeping (original-replicas, scale-down-generation, disrupted-at), or the delete; for a
Rollout color a scale-down or delete is its scale-down-deadline set to now (deadlines.py). The note
stays data (rendered when read); an action's message is rendered here, actions being few."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from datetime import datetime

from rainbowd.core.model import (
    DISRUPTED_AT,
    ORIGINAL_REPLICAS,
    SCALE_DOWN_DEADLINE,
    SCALE_DOWN_GENERATION,
    Action,
    ActionKind,
    ColorPlan,
    Deployment,
    PodStep,
    Reason,
)
from rainbowd.core.objects import format_time, parse_stamp
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.rules import NOTHING, Decision, Decisions
from rainbowd.core.reporting import render_why

_by_created = operator.attrgetter("deployment.created_at")


def color_plans(
    namespace: str, app: str, colors: list[Color], decisions: Decisions, now: datetime
) -> tuple[ColorPlan, ...]:
    """The colors' plans, newest first, with what `decisions` (by Deployment name) does."""
    plans: list[ColorPlan] = []
    for color in sorted(colors, key=_by_created, reverse=True):
        deployment = color.deployment
        decision = decisions.get(deployment.name, NOTHING) if decisions else NOTHING
        rule = color.rule
        plans.append(
            ColorPlan(
                namespace=namespace,
                app=app,
                color=color.color,
                name=deployment.name,
                state=color.state,
                rule=None if rule is None else rule.name,
                replicas=deployment.replicas,
                ready_replicas=deployment.ready_replicas,
                connections=color.connections,
                created_at=deployment.created_at,
                retired_at=color.retired_at,
                drained_since=color.drained_since,
                note=color.note(decision.decided),
                # Most colors, most cycles, have nothing to do.
                actions=()
                if decision.kind is None and color.changes is None
                else _actions(namespace, app, color, decision, now),
                held=decision.held,
                kind=deployment.kind,
            )
        )
    return tuple(plans)


def _actions(
    namespace: str, app: str, color: Color, decision: Decision, now: datetime
) -> tuple[Action, ...]:
    deployment = color.deployment
    name = deployment.name
    kind = decision.kind
    if deployment.rollout is not None and kind in (ActionKind.DELETE, ActionKind.SCALE):
        kind = _through_deadline(deployment, now)
    if kind is ActionKind.DELETE:
        why = render_why(decision.said, now)
        reason = decision.cleanup or Reason.KEEP_SCALED_DOWN
        return _action(
            namespace, app, color, ActionKind.DELETE, reason, f"delete {name}: {why}", {}
        )
    if kind is ActionKind.CONSOLIDATE:
        step = decision.step
        assert step is not None
        message = (
            f"scale {name} from {deployment.replicas} to {step.replicas} pods: "
            f"{render_why(decision.said, now)}"
        )
        reason = decision.cleanup or Reason.IDLE_PODS
        record = _step_record(color, decision)
        return _action(namespace, app, color, ActionKind.CONSOLIDATE, reason, message, record, step)
    if kind is ActionKind.SCALE:
        said = render_why(decision.said, now)
        message = f"scale {name} from {deployment.replicas} to 0: {said}"
        reason = decision.cleanup or Reason.DRAINED
        scaled = _scaled(color, decision)
        if deployment.rollout is not None:
            # Argo Rollouts scales its ReplicaSet down once the deadline has passed.
            scaled[SCALE_DOWN_DEADLINE] = format_time(now)
            message = (
                f"scale {name} from {deployment.replicas} to 0 through its "
                f"{SCALE_DOWN_DEADLINE} (now; Argo Rollouts scales it): {said}"
            )
        return _action(namespace, app, color, ActionKind.SCALE, reason, message, scaled)
    if color.changes is not None and color.reasons is not None:
        changes = _annotated(color, color.changes)
        message = _annotate_message(name, changes, color.reasons)
        reason = color.reasons[0][0]
        return _action(namespace, app, color, ActionKind.ANNOTATE, reason, message, changes)
    return ()


def _action(
    namespace: str,
    app: str,
    color: Color,
    kind: ActionKind,
    reason: Reason,
    message: str,
    annotations: Mapping[str, str | None],
    step: PodStep | None = None,
) -> tuple[Action, ...]:
    """The color's one action: who it is about comes from the color, the rest is given."""
    deployment = color.deployment
    rollout = deployment.rollout
    return (
        Action(
            kind,
            namespace,
            deployment.name,
            app,
            color.color,
            deployment.uid,
            deployment.resource_version,
            reason,
            message,
            annotations,
            color.connections.value,
            step,
            deployment.kind,
            "" if rollout is None else rollout.name,
            "" if rollout is None else rollout.uid,
        ),
    )


def _step_record(color: Color, decision: Decision) -> dict[str, str | None]:
    """A consolidation step's record (and any bookkeeping stamp): it rides on the step, written
    before its /scale."""
    record: dict[str, str | None] = dict(color.changes) if color.changes else {}
    record.update(decision.stamps)
    if decision.disrupted:
        record[DISRUPTED_AT] = decision.disrupted
    return record


def _scaled(color: Color, decision: Decision) -> dict[str, str | None]:
    """A scale-down's annotations. Bookkeeping rides on the scale-down: a separate annotate
    would bump the resourceVersion and fail the scale's precondition."""
    deployment = color.deployment
    changes: dict[str, str | None] = dict(color.changes) if color.changes else {}
    if ORIGINAL_REPLICAS not in deployment.annotations or (
        ORIGINAL_REPLICAS in changes and changes[ORIGINAL_REPLICAS] is None
    ):
        # (Cleared this cycle by a scale-up seen with scaleUpGrace 0: written anew.)
        changes[ORIGINAL_REPLICAS] = str(deployment.replicas)
    # This write bumps a Deployment's generation by one (annotations are part of it); the
    # /scale that follows bumps it again. A ReplicaSet's stays (Argo Rollouts' scale bumps it).
    changes[SCALE_DOWN_GENERATION] = str(_after_annotating(deployment))
    if decision.disrupted:
        changes[DISRUPTED_AT] = decision.disrupted
    return changes


def _annotated(color: Color, changes: Mapping[str, str | None]) -> Mapping[str, str | None]:
    deployment = color.deployment
    marker = deployment.annotations.get(SCALE_DOWN_GENERATION)
    if (
        marker == str(deployment.generation)
        and SCALE_DOWN_GENERATION not in changes
        and deployment.replicas > 0
        and deployment.annotating_bumps_generation
    ):
        # A scale-down cut short: this write bumps the generation, and must carry the
        # marker along, or the next cycle would take the color for one scaled back up.
        return {**changes, SCALE_DOWN_GENERATION: str(deployment.generation + 1)}
    return changes


def _after_annotating(deployment: Deployment) -> int:
    """The generation once an annotation is written."""
    return deployment.generation + (1 if deployment.annotating_bumps_generation else 0)


def _through_deadline(deployment: Deployment, now: datetime) -> ActionKind | None:
    """What a scale-down or delete of a Rollout color is: its deadline set to now (SCALE);
    None when nothing is left to do. Argo Rollouts deletes old ReplicaSets itself (its
    revisionHistoryLimit), and one whose deadline rainbowd already set is Argo Rollouts' to
    scale down."""
    if deployment.replicas == 0:
        return None
    annotations = deployment.annotations
    deadline = parse_stamp(annotations.get(SCALE_DOWN_DEADLINE, ""))
    if (
        deadline is not None
        and deadline <= now
        and ORIGINAL_REPLICAS in annotations
        and annotations.get(SCALE_DOWN_GENERATION) == str(deployment.generation)
    ):
        return None
    return ActionKind.SCALE


def _annotate_message(
    name: str, changes: Mapping[str, str | None], reasons: tuple[tuple[Reason, str], ...]
) -> str:
    parts = []
    for key, value in changes.items():
        short = key.rpartition("/")[2]
        parts.append(f"clear {short}" if value is None else f"set {short}={value}")
    whys: list[str] = []
    for _, why in reasons:
        if why not in whys:
            whys.append(why)
    return f"annotate {name}: {', '.join(parts)} ({'; '.join(whys)})"
