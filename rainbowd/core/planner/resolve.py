"""Resolve: the cleanup rules in order, applying each one's decisions, then what overrides
them. Precedence: a protected or held color is never a candidate (the rules skip it); a forced
scale-down of users is allowed only while the disruption budget (`Disruptions`, per app and
cluster-wide) lasts; a Deployment recording a disruption is kept while it counts; paused holds
every cleanup. docs/design.md "What the planner decides" is the spec.
"""

from __future__ import annotations

from datetime import datetime

from rainbowd.core.model import ActionKind, Deployment
from rainbowd.core.objects import format_time
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.cycle import Cycle, later, recent_disruptions
from rainbowd.core.planner.rules import (
    Delete,
    Due,
    Ruling,
    delete_recorded,
    drained,
    keep_scaled_down,
    max_colors,
    max_retired_age,
)
from rainbowd.core.policy import Budget, CleanupAction, Knobs
from rainbowd.core.reporting import (
    decided_note,
    forced_note,
    format_count,
    held_note,
    kept_note,
    paused_note,
)


def decide_cleanups(cycle: Cycle, colors: list[Color], retired: list[Color], knobs: Knobs) -> None:
    """The cleanup rules of an app not blocked, in order, then the budget's records and paused."""
    kind = ActionKind.DELETE if knobs.action is CleanupAction.DELETE else ActionKind.SCALE
    for due in drained(retired):
        take(due, kind)
    disruptions = Disruptions(cycle, colors, knobs, kind)
    # The forced rules in order: each runs once the one before it is resolved, and sees what
    # was granted (maxColors, a generator, even its own grants).
    force(cycle, disruptions, max_retired_age(cycle.now, retired, knobs))
    for due in max_colors(colors, retired, knobs):
        disruptions.grant(due)
    budget = knobs.max_disruptions
    if knobs.action is CleanupAction.SCALE_THEN_DELETE:
        for deletion in keep_scaled_down(retired, knobs.keep_scaled_down):
            delete(deletion)
    elif knobs.action is CleanupAction.DELETE:
        for deletion in delete_recorded(retired, budget):
            delete(deletion)
    keep_disruption_records(cycle, retired, budget)
    if cycle.paused:
        hold_paused(retired)


def force(cycle: Cycle, disruptions: Disruptions, ruling: Ruling) -> None:
    """A forced rule's decisions granted or held, and when they next change told the cycle."""
    if ruling.changes_at is not None:
        cycle.crossing(ruling.changes_at)
    for due in ruling.due:
        disruptions.grant(due)


def take(due: Due, kind: ActionKind) -> None:
    """A rule's decision taken: the color is scaled down (or deleted) for its reason."""
    color = due.color
    color.cleanup = due.reason
    color.kind = kind
    color.why = due.why


def delete(deletion: Delete) -> None:
    """A bookkeeping rule's decision taken: the color is deleted."""
    color = deletion.color
    color.kind = ActionKind.DELETE
    if color.cleanup is None:
        color.cleanup = deletion.reason
        color.why = deletion.why
        color.note = decided_note(color.note, deletion.noted)
    else:
        color.why = f"{color.why}; {deletion.directly}"


class Disruptions:
    """maxDisruptions for one app this cycle: a forced scale-down of a color still holding users
    (or whose connections are unknown) spends one from the app's budget and the cluster-wide one,
    or is held when either is spent. The app's is counted when first needed: most apps never
    force anything."""

    __slots__ = ("_app_left", "_budget", "_colors", "_cycle", "_floor_words", "_kind")

    def __init__(self, cycle: Cycle, colors: list[Color], knobs: Knobs, kind: ActionKind) -> None:
        self._cycle = cycle
        self._colors = colors
        self._budget = knobs.max_disruptions
        self._kind = kind
        self._floor_words = f"floor {knobs.connection_floor}"
        self._app_left: int | None = None

    def grant(self, due: Due) -> None:
        """Scale the color down (or delete it), if the budget allows; else hold it."""
        color, reason, why = due.color, due.reason, due.why
        cycle = self._cycle
        budget = self._budget
        # Paused, nothing is done: no budget is spent (hold_paused holds it all).
        if color.disruptive and not cycle.paused:
            app_left = self._app_left
            if app_left is None:
                recent = recent_disruptions(cycle.now, [c.deployment for c in self._colors], budget)
                for at in recent:
                    cycle.crossing(later(at, budget.per))
                app_left = budget.count - len(recent)
            cluster_left = cycle.cluster_budget_left()
            spent = None
            if app_left <= 0:
                spent = f"maxDisruptions ({budget}) is spent for this app"
            elif cluster_left is not None and cluster_left <= 0:
                spent = f"the cluster-wide maxDisruptions ({cycle.cluster_budget}) is spent"
                cycle.cluster_held = True
            if spent is not None:
                self._app_left = app_left
                color.held = reason
                color.note = held_note(color.note, why, spent)
                return
            self._app_left = app_left - 1
            if cluster_left is not None:
                cycle.cluster_left = cluster_left - 1
            color.disrupted = _disruption_record(cycle, color.deployment, budget)
            value = color.connections.value if color.connections is not None else None
            if value is None:
                why = f"{why} (connections unknown)"
            else:
                why = f"{why} (still holds {format_count(value)} connections > {self._floor_words})"
        take(Due(color, reason, why), self._kind)
        color.note = forced_note(color.note, why)


def _record_ends(now: datetime, deployment: Deployment, budget: Budget) -> datetime | None:
    """When `deployment`'s disrupted-at stamp stops counting, if it still counts now."""
    recent = recent_disruptions(now, (deployment,), budget)
    return later(max(recent), budget.per) if recent else None


def _disruption_record(cycle: Cycle, deployment: Deployment, budget: Budget) -> str:
    """The disrupted-at value after one more disruption now: the times still counting, then
    now."""
    kept = [format_time(at) for at in recent_disruptions(cycle.now, (deployment,), budget)]
    return " ".join([*kept, cycle.stamp])


def keep_disruption_records(cycle: Cycle, retired: list[Color], budget: Budget) -> None:
    """A Deployment is the record of its disruption: never deleted while that still counts.

    A forced scale-down records itself on the color it scales (atomically, in the same write),
    so the budget survives restarts; deleting the color would forget it. A color due for
    deletion with replicas is scaled down instead, one at 0 waits for the window to pass.
    """
    for color in retired:
        if color.kind is not ActionKind.DELETE:
            continue
        deployment = color.deployment
        ends = (
            later(cycle.now, budget.per)
            if color.disrupted
            else _record_ends(cycle.now, deployment, budget)
        )
        if ends is None:
            continue
        cycle.crossing(ends)
        if deployment.replicas > 0:
            color.kind = ActionKind.SCALE
            color.why = (
                f"{color.why}; scaled down first, deleted once maxDisruptions.per has passed"
            )
        else:
            color.cleanup = None
            color.kind = None
            color.note = kept_note(color.note, ends)


def hold_paused(retired: list[Color]) -> None:
    """Paused: every cleanup decided is held, and the note says what would have been done."""
    for color in retired:
        if color.cleanup is not None and color.kind is not None:
            color.held = color.cleanup
            color.note = paused_note(color.note, color.kind, color.cleanup)
            color.cleanup = None
            color.kind = None
