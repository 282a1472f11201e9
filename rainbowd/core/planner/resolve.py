"""Resolve: the cleanup rules in order, applying each one's decisions, then what overrides
them. Precedence: a protected or held color is never a candidate (the rules skip it); a forced
scale-down of users is allowed only while the disruption budget (`Disruptions`, per app and
cluster-wide) lasts; a Deployment recording a disruption is kept while it counts; paused holds
every cleanup. Every `Ruling` is read through `Thresholds.take`: the budget's windows and the
records' ends are thresholds like the rules'. docs/design.md "What the planner decides" is the
spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from rainbowd.core.instants import Beyond, later
from rainbowd.core.model import ActionKind, Deployment, PodConnections, Reason
from rainbowd.core.notes import (
    BudgetSpent,
    ConsolidationUnavailable,
    Decided,
    Directly,
    Disruption,
    Forced,
    Held,
    HeldBy,
    KeptForRecord,
    Paused,
    Plain,
    Said,
)
from rainbowd.core.objects import format_time
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.cycle import (
    Cycle,
    Ruling,
    Thresholds,
    earliest,
    recent_disruptions,
)
from rainbowd.core.planner.rules import (
    Decision,
    Decisions,
    Delete,
    Due,
    Step,
    Unavailable,
    consolidation,
    decision_of,
    delete_recorded,
    drained,
    keep_scaled_down,
    max_colors,
    max_retired_age,
)
from rainbowd.core.policy import Budget, CleanupAction, Knobs


def decide_cleanups(
    cycle: Cycle,
    thresholds: Thresholds,
    colors: list[Color],
    retired: list[Color],
    knobs: Knobs,
    pods: Mapping[str, PodConnections] | None = None,
) -> Decisions:
    """The decisions about an app not blocked, by Deployment name: the cleanup rules in order,
    then the budget's records and paused. `pods`: the per-pod figures of the app's colors (by
    color) that consolidation reads.

    The one order: the drained rule's decisions are taken; each forced rule's are settled
    (`settle`: the holding rules, then the disruption budget); consolidation's steps come
    next, for colors nothing else decided or held; then the bookkeeping deletes, the
    disruption records that keep a Deployment, and paused, which holds every cleanup. Each
    step is a pure function of a color's decision so far and a rule's record."""
    kind = ActionKind.DELETE if knobs.action is CleanupAction.DELETE else ActionKind.SCALE
    now = cycle.now
    decisions: dict[str, Decision] = {}
    for due in thresholds.take(drained(retired)):
        decisions[due.color.deployment.name] = take(due, kind)
    disruptions = Disruptions(cycle, colors, knobs)
    # The forced rules in order: each runs once the one before it is resolved, and sees what
    # was granted (maxColors, a generator, even its own grants).
    for due in thresholds.take(max_retired_age(now, retired, knobs, decisions)):
        settled = settle(thresholds, disruptions, due)
        decisions[due.color.deployment.name] = force(
            decision_of(decisions, due.color), settled, kind
        )
    for due in thresholds.take(max_colors(colors, retired, knobs, decisions)):
        settled = settle(thresholds, disruptions, due)
        decisions[due.color.deployment.name] = force(
            decision_of(decisions, due.color), settled, kind
        )
    # Colors no forced rule scales down give back idle pods (a step-down spends the budget).
    steps = consolidation(now, cycle.stamp, retired, knobs, pods or {}, decisions)
    for step in thresholds.take(steps):
        settled_step = settle_step(thresholds, disruptions, step)
        decisions[step.color.deployment.name] = take_step(
            decision_of(decisions, step.color), step, settled_step
        )
    budget = knobs.max_disruptions
    deletions: Ruling[list[Delete]] = Ruling([], None)
    if knobs.action is CleanupAction.SCALE_THEN_DELETE:
        deletions = keep_scaled_down(retired, knobs.keep_scaled_down, decisions)
    elif knobs.action is CleanupAction.DELETE:
        deletions = delete_recorded(retired, budget, decisions)
    for deletion in thresholds.take(deletions):
        color = deletion.color
        decisions[color.deployment.name] = delete(decision_of(decisions, color), deletion)
    for kept in thresholds.take(disruption_records(cycle, retired, budget, decisions)):
        decisions[kept.color.deployment.name] = keep(decision_of(decisions, kept.color), kept)
    return hold_paused(decisions) if cycle.paused else decisions


def take(due: Due, kind: ActionKind) -> Decision:
    """A rule's decision taken: the color is scaled down (or deleted) for its reason."""
    return Decision(cleanup=due.reason, kind=kind, said=(due.why,))


def delete(before: Decision, deletion: Delete) -> Decision:
    """A bookkeeping rule's decision taken: the color is deleted."""
    if before.cleanup is None:
        return replace(
            before,
            kind=ActionKind.DELETE,
            cleanup=deletion.reason,
            said=(deletion.why,),
            decided=(*before.decided, Decided(deletion.why)),
        )
    return replace(before, kind=ActionKind.DELETE, said=(*before.said, Directly(deletion.why)))


@dataclass(frozen=True, slots=True)
class Granted:
    """A forced rule's `due` granted: a scale-down of users (`disruption`) writes `disrupted`,
    the color's disrupted-at record after it."""

    due: Due
    disruption: Disruption | None = None
    disrupted: str = ""


@dataclass(frozen=True, slots=True)
class Withheld:
    """A forced rule's `due` held, `by` saying what holds it (a holding rule, the budget)."""

    due: Due
    by: HeldBy


HoldingRule = Callable[[datetime, Knobs, Due], Ruling[HeldBy | None]]
"""A rule that holds other rules' forced scale-downs: given one, its record if it holds it."""

# The one order a forced scale-down is settled in: each holding rule in turn (the first that
# holds it says why), then the disruption budget. A holding rule is one entry here.
HOLDING_RULES: tuple[HoldingRule, ...] = ()


def settle(thresholds: Thresholds, disruptions: Disruptions, due: Due) -> Granted | Withheld:
    """A forced rule's decision combined with what may hold it, in `HOLDING_RULES`' order and
    then the budget's (spent only when nothing held it first)."""
    for holding in HOLDING_RULES:
        by = thresholds.take(holding(disruptions.cycle.now, disruptions.knobs, due))
        if by is not None:
            return Withheld(due, by)
    return thresholds.take(disruptions.grant(due))


def force(before: Decision, settled: Granted | Withheld, kind: ActionKind) -> Decision:
    """A forced rule's decision, settled: granted (taken, and said on the note) or held."""
    if isinstance(settled, Withheld):
        return _held(before, settled)
    due = settled.due
    forced = Forced(due.why, settled.disruption)
    return replace(
        before,
        cleanup=due.reason,
        kind=kind,
        said=(forced,),
        decided=(*before.decided, forced),
        disrupted=settled.disrupted,
    )


def _held(before: Decision, withheld: Withheld) -> Decision:
    """A forced decision held: the color keeps its replicas, the note says what holds it."""
    due = withheld.due
    return replace(before, held=due.reason, decided=(*before.decided, Held(due.why, withheld.by)))


def settle_step(
    thresholds: Thresholds, disruptions: Disruptions, step: Step | Unavailable
) -> Granted | Withheld | None:
    """A step-down (it disconnects users) settled as a forced rule's decision is; None for an
    idle-pods step or one that cannot be taken."""
    if isinstance(step, Step) and step.reason is Reason.STEP_DOWN:
        return settle(thresholds, disruptions, Due(step.color, step.reason, step.why))
    return None


def take_step(
    before: Decision, step: Step | Unavailable, settled: Granted | Withheld | None
) -> Decision:
    """The consolidate knob's decision taken: the step (a step-down as `settle_step` settled
    it), or why none can be taken, on the note."""
    if isinstance(step, Unavailable):
        return replace(before, decided=(*before.decided, ConsolidationUnavailable(step.why)))
    if isinstance(settled, Withheld):
        return _held(before, settled)
    outcome: Decided | Forced = Decided(step.why)
    said: tuple[Said, ...] = (step.why,)
    disrupted = ""
    if settled is not None:
        outcome = Forced(step.why, settled.disruption)
        said = (outcome,)
        disrupted = settled.disrupted
    return replace(
        before,
        cleanup=step.reason,
        kind=ActionKind.CONSOLIDATE,
        said=said,
        decided=(*before.decided, outcome),
        disrupted=disrupted,
        step=step.step,
        stamps=step.stamps,
    )


class Disruptions:
    """maxDisruptions for one app this cycle: a forced scale-down of a color still holding users
    (or whose connections are unknown) spends one from the app's budget and the cluster-wide one,
    or is held when either is spent. The app's is counted when first needed: most apps never
    force anything."""

    __slots__ = ("_app_left", "_budget", "_changes_at", "_colors", "_floor", "cycle", "knobs")

    def __init__(self, cycle: Cycle, colors: list[Color], knobs: Knobs) -> None:
        self.cycle = cycle
        self.knobs = knobs
        self._colors = colors
        self._budget = knobs.max_disruptions
        self._floor = knobs.connection_floor
        self._app_left: int | None = None
        self._changes_at: datetime | None = None  # when the app's next recent one stops counting

    def grant(self, due: Due) -> Ruling[Granted | Withheld]:
        """The color scaled down (or deleted), if the budget allows, else held; changes when a
        disruption counted stops counting. Spends the budget; changes no color."""
        color = due.color
        cycle = self.cycle
        budget = self._budget
        # Paused, nothing is done: no budget is spent (hold_paused holds it all).
        if not color.disruptive or cycle.paused:
            return Ruling(Granted(due), None)
        app_left = self._app_left
        if app_left is None:
            recent = recent_disruptions(cycle.now, [c.deployment for c in self._colors], budget)
            for at in recent:
                self._changes_at = earliest(
                    self._changes_at, later(at, budget.per, beyond=Beyond.NEVER)
                )
            app_left = budget.count - len(recent)
        cluster_left = cycle.cluster_budget_left()
        spent = None
        if app_left <= 0:
            spent = BudgetSpent(budget, cluster=False)
        elif cluster_left is not None and cluster_left <= 0:
            assert cycle.cluster_budget is not None
            spent = BudgetSpent(cycle.cluster_budget, cluster=True)
            cycle.cluster_held = True
        if spent is not None:
            self._app_left = app_left
            return Ruling(Withheld(due, spent), self._changes_at)
        self._app_left = app_left - 1
        if cluster_left is not None:
            cycle.cluster_left = cluster_left - 1
        disruption = Disruption(color.connections.value, self._floor)
        record = _disruption_record(cycle, color.deployment, budget)
        return Ruling(Granted(due, disruption, record), self._changes_at)


def _record_ends(now: datetime, deployment: Deployment, budget: Budget) -> datetime | None:
    """When `deployment`'s disrupted-at stamp stops counting, if it still counts now."""
    recent = recent_disruptions(now, (deployment,), budget)
    return later(max(recent), budget.per, beyond=Beyond.NEVER) if recent else None


def _disruption_record(cycle: Cycle, deployment: Deployment, budget: Budget) -> str:
    """The disrupted-at value after one more disruption now: the times still counting, then
    now."""
    kept = [format_time(at) for at in recent_disruptions(cycle.now, (deployment,), budget)]
    return " ".join([*kept, cycle.stamp])


@dataclass(frozen=True, slots=True)
class Kept:
    """A color due for deletion that records a disruption counting until `until`."""

    color: Color
    until: datetime


def disruption_records(
    cycle: Cycle, retired: list[Color], budget: Budget, decisions: Decisions
) -> Ruling[list[Kept]]:
    """The colors due for deletion whose Deployment records a disruption that still counts;
    changes when the first record stops counting."""
    kept: list[Kept] = []
    changes_at: datetime | None = None
    for color in retired:
        decision = decision_of(decisions, color)
        if decision.kind is not ActionKind.DELETE:
            continue
        until = (
            later(cycle.now, budget.per, beyond=Beyond.NEVER)
            if decision.disrupted
            else _record_ends(cycle.now, color.deployment, budget)
        )
        if until is not None:
            kept.append(Kept(color, until))
            changes_at = earliest(changes_at, until)
    return Ruling(kept, changes_at)


def keep(before: Decision, kept: Kept) -> Decision:
    """A Deployment is the record of its disruption: never deleted while that still counts.

    A forced scale-down records itself on the color it scales (atomically, in the same write),
    so the budget survives restarts; deleting the color would forget it. A color due for
    deletion with replicas is scaled down instead, one at 0 waits for the window to pass.
    """
    if kept.color.deployment.replicas > 0:
        return replace(before, kind=ActionKind.SCALE, said=(*before.said, Plain.SCALE_FIRST))
    return replace(
        before, cleanup=None, kind=None, decided=(*before.decided, KeptForRecord(kept.until))
    )


def hold_paused(decisions: Decisions) -> dict[str, Decision]:
    """Paused: every cleanup decided is held, and the note says what would have been done."""
    return {name: _paused(decision) for name, decision in decisions.items()}


def _paused(decision: Decision) -> Decision:
    if decision.cleanup is None or decision.kind is None:
        return decision
    return replace(
        decision,
        held=decision.cleanup,
        decided=(*decision.decided, Paused(decision.kind, decision.cleanup)),
        cleanup=None,
        kind=None,
    )
