"""An Argo Rollout's colors: what the planner's decisions mean for them. Argo Rollouts scales an
old ReplicaSet to 0 once its `scale-down-deadline` has passed, so rainbowd acts only through
that annotation: a scale-down or delete sets it to now (actions.py), and a retired color still
held (connections above the floor or unknown, protect, a hold) has it kept ahead of now, by no
more than deadlineAhead and not past maxRetiredAge while that is more than half of it away: Argo
Rollouts' timer never cuts what rainbowd keeps, and still works when rainbowd stops. The rules
are those of every color; this is the one place that knows the deadline, and the warning before
a Rollout's scaleDownDelayRevisionLimit would cut a held color at the next promotion.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from rainbowd.core.instants import Beyond, earlier, later
from rainbowd.core.model import REASONS, ROLLOUT_REVISION, SCALE_DOWN_DEADLINE, Reason, State
from rainbowd.core.notes import RevisionLimit
from rainbowd.core.objects import format_time, parse_stamp
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.cycle import Cycle, Ruling, Thresholds
from rainbowd.core.planner.rules import NOTHING, Decision, Decisions
from rainbowd.core.policy import Knobs
from rainbowd.core.reporting import revision_limit_words

_KEPT = (Reason.DEADLINE_KEPT, REASONS[Reason.DEADLINE_KEPT].words)


def keep_deadlines(
    cycle: Cycle,
    thresholds: Thresholds,
    colors: list[Color],
    decisions: Decisions,
    knobs: Knobs,
    warnings: list[str],
) -> list[Color]:
    """The app's colors, each held Rollout color whose scale-down-deadline is due to be moved
    carrying that change; the moment the next one falls due folded into `thresholds`."""
    out = colors
    for i, color in enumerate(colors):
        deployment = color.deployment
        if deployment.rollout is None or color.rule is None or deployment.replicas == 0:
            continue
        decision = decisions.get(deployment.name) if decisions else None
        if decision is not None and decision.kind is not None:
            continue  # scaled down or deleted: its deadline goes to now instead
        if color.state in (State.LIVE, State.PENDING) or not _held(color, knobs):
            continue
        value = thresholds.take(_kept_deadline(cycle, color, knobs, warnings))
        if value is None:
            continue
        if out is colors:
            out = list(colors)
        out[i] = color._replace(
            changes={**(color.changes or {}), SCALE_DOWN_DEADLINE: value},
            reasons=(*(color.reasons or ()), _KEPT),
        )
    return out


def _held(color: Color, knobs: Knobs) -> bool:
    """Whether a retired color must not be scaled down by a timer: protected or held, or
    holding connections above the floor (or unknown ones), whether its app is evaluated or
    blocked."""
    value = color.connections.value
    return color.protected or value is None or value > knobs.connection_floor


def _kept_deadline(
    cycle: Cycle, color: Color, knobs: Knobs, warnings: list[str]
) -> Ruling[str | None]:
    """The deadline to write (None: it is far enough ahead already, or there is none: Argo
    Rollouts' timer is not running), and when that changes."""
    deployment = color.deployment
    text = deployment.annotations.get(SCALE_DOWN_DEADLINE)
    if text is None:
        return Ruling(None, None)
    ahead = knobs.deadline_ahead
    deadline = parse_stamp(text)
    if deadline is None:
        warnings.append(
            f"{deployment.namespace}/{deployment.name}: {SCALE_DOWN_DEADLINE} {text!r} is not "
            "an RFC 3339 time; it is written anew, ahead of now"
        )
    else:
        due = earlier(deadline, ahead / 2, beyond=Beyond.LONG_AGO)
        if cycle.now < due:
            return Ruling(None, due)
    target = later(cycle.stamp_at, ahead, beyond=Beyond.NEVER)
    cap = _cap(color, knobs)
    # Up to maxRetiredAge while that leaves half the lead; nearer to it (or past it, the
    # forced scale-down held by the budget or paused) the lead again: the planner's own rule
    # decides at maxRetiredAge, never Argo Rollouts' timer racing it.
    if cap is not None and later(cycle.stamp_at, ahead / 2, beyond=Beyond.NEVER) < cap < target:
        target = cap
    if deadline is not None and target <= deadline:
        return Ruling(None, None)  # never moved earlier: only a scale-down does that
    return Ruling(format_time(target), None)


def _cap(color: Color, knobs: Knobs) -> datetime | None:
    """The latest deadline rainbowd writes: maxRetiredAge after retirement, unless protected or
    held (those are kept whatever their age)."""
    if color.protected or knobs.max_retired_age is None or color.retired_at is None:
        return None
    return later(color.retired_at, knobs.max_retired_age, beyond=Beyond.NEVER)


def warn_revision_limit(
    colors: list[Color], decisions: Decisions, knobs: Knobs, warnings: list[str]
) -> Decisions:
    """The decisions, each held Rollout color that its Rollout's scaleDownDelayRevisionLimit
    would scale down at once at the next promotion carrying that warning in its note (and in
    the plan's warnings), with the limit that would keep it.

    At a promotion Argo Rollouts keeps the newest `limit` old ReplicaSets with replicas (the
    live one becoming old first) on their deadline, and scales the others down at once."""
    out = decisions
    by_rollout: dict[str, list[Color]] = {}
    for color in colors:
        deployment = color.deployment
        rollout = deployment.rollout
        if rollout is None or rollout.revision_limit is None or color.rule is None:
            continue
        if deployment.replicas == 0 or color.state is State.PENDING:
            continue
        by_rollout.setdefault(rollout.name, []).append(color)
    for name, members in by_rollout.items():
        members.sort(key=_newest_live_first)
        for index, color in enumerate(members):
            deployment = color.deployment
            limit = deployment.rollout.revision_limit if deployment.rollout else None
            if limit is None or index < limit or not _held(color, knobs):
                continue
            decision = out.get(deployment.name, NOTHING) if out else NOTHING
            if decision.kind is not None:
                continue  # scaled down this cycle anyway
            outcome = RevisionLimit(name, limit, index + 1)
            warnings.append(
                f"{deployment.namespace}/{deployment.name}: {revision_limit_words(outcome)}"
            )
            if out is decisions:
                out = dict(decisions)
            assert isinstance(out, dict)
            out[deployment.name] = _with(decision, outcome)
    return out


def _newest_live_first(color: Color) -> tuple[bool, int, float]:
    """The live color first, then by Argo Rollouts' revision (the newest first), then age."""
    deployment = color.deployment
    revision = deployment.annotations.get(ROLLOUT_REVISION, "")
    number = int(revision) if revision.isdigit() else 0
    return (color.state is not State.LIVE, -number, -deployment.created_at.timestamp())


def _with(decision: Decision, outcome: RevisionLimit) -> Decision:
    return replace(decision, decided=(*decision.decided, outcome))
