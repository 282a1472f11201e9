"""The cleanup rules: one function each, in the order the planner applies them.

Each rule returns its decisions and resolve.py applies them; no rule changes a color. The drained
rule yields a `Due` per color assess.py found drained, taken as is. A forced rule (one that may
scale down a color still holding users) gives a `Due` per color it wants scaled down, in order;
resolve.py grants each (spending the disruption budget) or holds it before asking for the next,
so a rule that counts (maxColors, a generator) sees what was granted. A rule whose decisions
change with time alone returns them as a `Ruling`, with when they next change; no rule calls the
cycle. The bookkeeping rules (keepScaledDown, the delete of a disruption's record) return a
`Delete` per color to delete.
docs/design.md "What the planner decides" is the spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from rainbowd.core.model import DISRUPTED_AT, ActionKind, Reason, State
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.cycle import later, shown_until
from rainbowd.core.policy import Budget, Knobs
from rainbowd.core.reporting import compact_duration


@dataclass(frozen=True, slots=True)
class Due:
    """A rule's decision: `color` is due to be scaled down (or deleted) for `reason`, in the words
    `why`. resolve.py grants a forced rule's or holds it (the disruption budget, paused)."""

    color: Color
    reason: Reason
    why: str


@dataclass(frozen=True, slots=True)
class Delete:
    """A bookkeeping rule's decision: `color`, scaled down (or being scaled down this cycle), is
    deleted for `reason`. A color nothing was decided for yet takes `why` as its action's words
    and `noted` onto its note; one already being scaled down this cycle keeps its reason and its
    words say `directly` too (scaling it now would only make it the next cycle's delete)."""

    color: Color
    reason: Reason
    why: str
    noted: str
    directly: str = ""


def drained(retired: list[Color]) -> Iterator[Due]:
    """The drained rule: a color assess.py found drained (at or below the floor for drainHold,
    retired for minRetiredAge, not protected) is scaled down, in the words of its note."""
    for color in retired:
        if color.state is State.DRAINED:
            yield Due(color, Reason.DRAINED, color.note)


@dataclass(frozen=True, slots=True)
class Ruling:
    """A rule's decisions, all at once, and when time alone would next change them (a threshold
    crossed, or a duration their words show reading differently); None: never."""

    due: list[Due]
    changes_at: datetime | None


def max_retired_age(now: datetime, retired: list[Color], knobs: Knobs) -> Ruling:
    """maxRetiredAge: a color retired for longer is scaled down, drained or not; oldest first."""
    max_age = knobs.max_retired_age
    if max_age is None:
        return Ruling([], None)
    overdue: list[Color] = []
    changes_at: datetime | None = None
    for color in retired:
        if color.cleanup is not None or color.protected or color.deployment.replicas == 0:
            continue
        assert color.retired_at is not None
        if now - color.retired_at > max_age:
            overdue.append(color)
            at = shown_until(now, color.retired_at)  # its words show how long
        else:
            at = later(color.retired_at, max_age)  # any later instant, it is overdue
        if changes_at is None or at < changes_at:
            changes_at = at
    overdue.sort(key=retired_order)
    due = []
    for color in overdue:
        assert color.retired_at is not None
        due.append(
            Due(
                color,
                Reason.MAX_RETIRED_AGE,
                f"retired for {compact_duration(now - color.retired_at)} > maxRetiredAge "
                f"{compact_duration(max_age)}",
            )
        )
    return Ruling(due, changes_at)


def max_colors(colors: list[Color], retired: list[Color], knobs: Knobs) -> Iterator[Due]:
    """maxColors: while more colors have replicas, the oldest retired ones are scaled down. A
    color held (its scale-down not granted) keeps its replicas: the next oldest is asked for."""
    limit = knobs.max_colors
    if limit is None:
        return
    running = 0
    for color in colors:
        if color.deployment.replicas > 0 and color.cleanup is None:
            running += 1
    if running <= limit:
        return
    excess = [
        c
        for c in retired
        if c.cleanup is None and c.held is None and not c.protected and c.deployment.replicas > 0
    ]
    excess.sort(key=retired_order)
    for color in excess:
        if running <= limit:
            break
        yield Due(color, Reason.MAX_COLORS, f"{running} colors with replicas > maxColors {limit}")
        if color.cleanup is not None:  # granted
            running -= 1


def keep_scaled_down(retired: list[Color], keep: int) -> list[Delete]:
    """Delete scaled-down colors beyond the newest `keep`, counting those scaled this cycle."""
    scaled = [
        c
        for c in retired
        if not c.protected
        and (
            (c.deployment.replicas == 0 and c.cleanup is None)
            or (c.cleanup is not None and c.kind is ActionKind.SCALE)
        )
    ]
    if len(scaled) <= keep:
        return []
    scaled.sort(key=lambda c: (c.deployment.created_at, c.deployment.name), reverse=True)
    return [
        Delete(
            color,
            Reason.KEEP_SCALED_DOWN,
            f"scaled down, beyond the newest keepScaledDown {keep}",
            f"beyond keepScaledDown {keep}",
            f"deleted directly, beyond keepScaledDown {keep}",
        )
        for color in scaled[keep:]
    ]


def delete_recorded(retired: list[Color], budget: Budget) -> list[Delete]:
    """With action delete: colors scaled down only to record a disruption are deleted once it
    no longer counts (resolve.keep_disruption_records holds them until then)."""
    why = f"scaled down to record a disruption (maxDisruptions {budget}); action delete"
    return [
        Delete(color, Reason.DISRUPTION_RECORDED, why, why)
        for color in retired
        if color.cleanup is None
        and not color.protected
        and color.deployment.replicas == 0
        and DISRUPTED_AT in color.deployment.annotations
    ]


def retired_order(color: Color) -> tuple[datetime, datetime, str]:
    assert color.retired_at is not None
    return (color.retired_at, color.deployment.created_at, color.deployment.name)
