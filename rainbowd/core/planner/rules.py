"""The cleanup rules: one function each, in the order the planner applies them.

A rule marks the colors it scales down or deletes (`Color.cleanup`, the `Reason`; `Color.why`, the
words of the action). A forced rule (one that may scale down a color still holding users) asks
`force`, which spends the disruption budget or holds the color (rainbowd/core/planner/resolve.py).
The drained rule, which a color meets on its own, is decided with its state in assess.py.
docs/design.md "What the planner decides" is the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from rainbowd.core.model import DISRUPTED_AT, ActionKind, Reason
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.cycle import Cycle
from rainbowd.core.policy import Budget, Knobs
from rainbowd.core.reporting import compact_duration

# Scale `color` down for `Reason` (in the words `why`), spending the disruption budget when it
# still holds users; held instead when the budget is spent.
Force = Callable[[Color, Reason, str], None]


def max_retired_age(cycle: Cycle, retired: list[Color], knobs: Knobs, force: Force) -> None:
    """maxRetiredAge: a color retired for longer is scaled down, drained or not (forced)."""
    max_age = knobs.max_retired_age
    if max_age is None:
        return
    now = cycle.now
    overdue = [
        c
        for c in retired
        if c.cleanup is None
        and not c.protected
        and c.deployment.replicas > 0
        and c.retired_at is not None
        and now - c.retired_at > max_age
    ]
    overdue.sort(key=retired_order)
    for color in overdue:
        assert color.retired_at is not None
        cycle.shown(color.retired_at)
        force(
            color,
            Reason.MAX_RETIRED_AGE,
            f"retired for {compact_duration(now - color.retired_at)} > maxRetiredAge "
            f"{compact_duration(max_age)}",
        )


def max_colors(colors: list[Color], retired: list[Color], knobs: Knobs, force: Force) -> None:
    """maxColors: while more colors have replicas, the oldest retired ones are scaled down
    (forced)."""
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
        force(color, Reason.MAX_COLORS, f"{running} colors with replicas > maxColors {limit}")
        if color.cleanup is not None:
            running -= 1


def keep_scaled_down(retired: list[Color], keep: int) -> None:
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
        return
    scaled.sort(key=lambda c: (c.deployment.created_at, c.deployment.name), reverse=True)
    for color in scaled[keep:]:
        color.kind = ActionKind.DELETE
        if color.cleanup is None:
            color.cleanup = Reason.KEEP_SCALED_DOWN
            color.why = f"scaled down, beyond the newest keepScaledDown {keep}"
            color.note = f"{color.note}; beyond keepScaledDown {keep}"
        else:
            # Scaling it now would only make it the next cycle's delete.
            color.why = f"{color.why}; deleted directly, beyond keepScaledDown {keep}"


def delete_recorded(cycle: Cycle, retired: list[Color], budget: Budget) -> None:
    """With action delete: colors scaled down only to record a disruption are deleted once it
    no longer counts (resolve.keep_disruption_records holds them until then)."""
    for color in retired:
        deployment = color.deployment
        if (
            color.cleanup is None
            and not color.protected
            and deployment.replicas == 0
            and DISRUPTED_AT in deployment.annotations
        ):
            color.cleanup = Reason.DISRUPTION_RECORDED
            color.kind = ActionKind.DELETE
            color.why = (
                f"scaled down to record a disruption (maxDisruptions {budget}); action delete"
            )
            color.note = f"{color.note}; {color.why}"


def retired_order(color: Color) -> tuple[datetime, datetime, str]:
    assert color.retired_at is not None
    return (color.retired_at, color.deployment.created_at, color.deployment.name)
