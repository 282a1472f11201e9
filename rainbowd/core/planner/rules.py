"""The cleanup rules: one function each, in the order the planner applies them.

Each rule returns its decisions as a `Ruling` (cycle.py): the decisions and the first instant at
which time alone would change them, None when nothing it compares is a time. resolve.py reads
the decisions through `Thresholds.take`, which folds that instant into the app's `valid_until`,
and applies them; no rule changes a color. The drained rule gives a `Due` per color assess.py
found drained, taken as is. A forced rule (one that may scale down a color still holding users)
gives a `Due` per color it wants scaled down, in order; resolve.py grants each (spending the
disruption budget) or holds it before asking for the next, so a rule that counts (maxColors, a
generator) sees what was granted in the `decisions` it was given. What is done about a color is
a `Decision`, which resolve.py builds from these and combines; a rule reads the decisions taken
before it (by Deployment name), never writes them. consolidate gives a `Step` per draining
color that gives back pods (or `Unavailable`, why its figures cannot decide one). The
bookkeeping rules
(keepScaledDown, the delete of a disruption's record) give a `Delete` per color to delete. A
decision's words are data (`Why`, rainbowd/core/notes.py), rendered by the reporting module.
docs/design.md "What the planner decides" is the spec.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from rainbowd.core.consolidation import decide_consolidation
from rainbowd.core.instants import Beyond, later
from rainbowd.core.model import DISRUPTED_AT, ActionKind, PodConnections, PodStep, Reason, State
from rainbowd.core.notes import (
    BeyondKeepScaledDown,
    Drained,
    IdlePods,
    Outcome,
    OverMaxColors,
    OverMaxRetiredAge,
    RecordedDisruption,
    Said,
    SteppedDown,
    Why,
)
from rainbowd.core.planner.assess import Color
from rainbowd.core.planner.cycle import Ruling, earliest
from rainbowd.core.policy import Budget, Knobs


@dataclass(frozen=True, slots=True)
class Decision:
    """What is done about a color this cycle: the cleanup (its Reason) of this `kind`, `said`
    (the action's why: the rule's, then what resolve added), `decided` (what its note adds),
    `held` (the cleanup held), `disrupted` (the disrupted-at record a forced scale-down writes),
    a consolidation `step` with its `stamps`. resolve.py builds each from a rule's decision and
    what may hold it; a color with none has `NOTHING`."""

    cleanup: Reason | None = None
    kind: ActionKind | None = None
    said: tuple[Said, ...] = ()
    decided: tuple[Outcome, ...] = ()
    held: Reason | None = None
    disrupted: str = ""
    step: PodStep | None = None
    stamps: tuple[tuple[str, str], ...] = ()


NOTHING = Decision()

Decisions = Mapping[str, Decision]
"""The decisions taken so far about an app's colors, by Deployment name."""


def decision_of(decisions: Decisions, color: Color) -> Decision:
    """What is done about `color` so far."""
    return decisions.get(color.deployment.name, NOTHING)


@dataclass(frozen=True, slots=True)
class Due:
    """A rule's decision: `color` is due to be scaled down (or deleted) for `reason`, `why` says
    it with its figures. resolve.py grants a forced rule's or holds it (the disruption budget,
    paused)."""

    color: Color
    reason: Reason
    why: Why


@dataclass(frozen=True, slots=True)
class Delete:
    """A bookkeeping rule's decision: `color`, scaled down (or being scaled down this cycle), is
    deleted for `reason`, `why` saying it with its figures."""

    color: Color
    reason: Reason
    why: Why


def drained(retired: list[Color]) -> Ruling[list[Due]]:
    """The drained rule: a color assess.py found drained (at or below the floor for drainHold,
    retired for minRetiredAge, not protected) is scaled down, for what assess found. When it
    became drained was assess's threshold."""
    due = []
    for color in retired:
        if color.state is State.DRAINED:
            assert isinstance(color.found, Drained)
            due.append(Due(color, Reason.DRAINED, color.found))
    return Ruling(due, None)


def max_retired_age(
    now: datetime, retired: list[Color], knobs: Knobs, decisions: Decisions
) -> Ruling[list[Due]]:
    """maxRetiredAge: a color retired for longer is scaled down, drained or not; oldest first.
    Changes when the next color not yet overdue becomes overdue."""
    max_age = knobs.max_retired_age
    if max_age is None:
        return Ruling([], None)
    overdue: list[Color] = []
    changes_at: datetime | None = None
    for color in retired:
        if (
            color.protected
            or color.deployment.replicas == 0
            or decision_of(decisions, color).cleanup is not None
        ):
            continue
        assert color.retired_at is not None
        if now - color.retired_at > max_age:
            overdue.append(color)
        else:
            changes_at = earliest(changes_at, later(color.retired_at, max_age, beyond=Beyond.NEVER))
    overdue.sort(key=retired_order)
    due = []
    for color in overdue:
        assert color.retired_at is not None
        due.append(Due(color, Reason.MAX_RETIRED_AGE, OverMaxRetiredAge(color.retired_at, max_age)))
    return Ruling(due, changes_at)


def max_colors(
    colors: list[Color], retired: list[Color], knobs: Knobs, decisions: Decisions
) -> Ruling[Iterator[Due]]:
    """maxColors: while more colors have replicas, the oldest retired ones are scaled down. A
    color held (its scale-down not granted) keeps its replicas: the next oldest is asked for,
    once `decisions` (which resolve.py updates between two) says the last one's fate. Counts,
    compares no time."""
    return Ruling(_excess_colors(colors, retired, knobs, decisions), None)


def _excess_colors(
    colors: list[Color], retired: list[Color], knobs: Knobs, decisions: Decisions
) -> Iterator[Due]:
    limit = knobs.max_colors
    if limit is None:
        return
    running = 0
    for color in colors:
        if color.deployment.replicas > 0 and decision_of(decisions, color).cleanup is None:
            running += 1
    if running <= limit:
        return
    excess = [
        c
        for c in retired
        if not c.protected and c.deployment.replicas > 0 and _undecided(decision_of(decisions, c))
    ]
    excess.sort(key=retired_order)
    for color in excess:
        if running <= limit:
            break
        yield Due(color, Reason.MAX_COLORS, OverMaxColors(running, limit))
        if decision_of(decisions, color).cleanup is not None:  # granted
            running -= 1


def keep_scaled_down(retired: list[Color], keep: int, decisions: Decisions) -> Ruling[list[Delete]]:
    """Delete scaled-down colors beyond the newest `keep`, counting those scaled this cycle."""
    scaled = [c for c in retired if not c.protected and _scaled_down(c, decision_of(decisions, c))]
    if len(scaled) <= keep:
        return Ruling([], None)
    scaled.sort(key=lambda c: (c.deployment.created_at, c.deployment.name), reverse=True)
    why = BeyondKeepScaledDown(keep)
    return Ruling([Delete(color, Reason.KEEP_SCALED_DOWN, why) for color in scaled[keep:]], None)


def _undecided(decision: Decision) -> bool:
    """Neither taken nor held: a rule may still ask for it."""
    return decision.cleanup is None and decision.held is None


def _scaled_down(color: Color, decision: Decision) -> bool:
    """At 0 replicas with nothing decided, or being scaled down this cycle."""
    if decision.cleanup is None:
        return color.deployment.replicas == 0
    return decision.kind is ActionKind.SCALE


def delete_recorded(
    retired: list[Color], budget: Budget, decisions: Decisions
) -> Ruling[list[Delete]]:
    """With action delete: colors scaled down only to record a disruption are deleted once it
    no longer counts (resolve.disruption_records holds them until then, and says when)."""
    why = RecordedDisruption(budget)
    deletes = [
        Delete(color, Reason.DISRUPTION_RECORDED, why)
        for color in retired
        if decision_of(decisions, color).cleanup is None
        and not color.protected
        and color.deployment.replicas == 0
        and DISRUPTED_AT in color.deployment.annotations
    ]
    return Ruling(deletes, None)


@dataclass(frozen=True, slots=True)
class Step:
    """consolidate's decision: `color` gives back the pods of `step` for `reason` (IDLE_PODS;
    STEP_DOWN disconnects users, so resolve.py grants it through the disruption budget),
    writing `stamps` (its record) with its /scale."""

    color: Color
    reason: Reason
    why: IdlePods | SteppedDown
    step: PodStep
    stamps: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Unavailable:
    """consolidate would consider `color`, but its figures cannot decide a step: `why`."""

    color: Color
    why: str


_CONSOLIDATED_STATES = frozenset({State.DRAINING, State.UNKNOWN_CONNECTIONS})


def consolidation(
    now: datetime,
    stamp: str,
    retired: list[Color],
    knobs: Knobs,
    pods: Mapping[str, PodConnections],
    decisions: Decisions,
) -> Ruling[list[Step | Unavailable]]:
    """consolidate: a draining color retired for `after` gives back its idle pods every
    `every` (rainbowd/core/consolidation.py decides which, from `pods`, each color's per-pod
    figures). Skips colors already decided or held, protected, at 0 replicas or not draining.
    Changes when a color reaches `after`, or its last step `every` (or stepDown's)."""
    if knobs.consolidate is None:
        return Ruling([], None)
    steps: list[Step | Unavailable] = []
    changes_at: datetime | None = None
    for color in retired:
        if (
            color.protected
            or color.deployment.replicas == 0
            or color.state not in _CONSOLIDATED_STATES
            or not _undecided(decision_of(decisions, color))
        ):
            continue
        assert color.retired_at is not None
        decided = decide_consolidation(
            now,
            color.deployment,
            knobs=knobs,
            retired_at=color.retired_at,
            connections=color.connections,
            pods=pods.get(color.color),
            stamp=stamp,
        )
        changes_at = earliest(changes_at, decided.recheck_at)
        if decided.unavailable is not None:
            steps.append(Unavailable(color, decided.unavailable))
        elif decided.step is not None:
            assert decided.reason is not None and decided.why is not None
            steps.append(Step(color, decided.reason, decided.why, decided.step, decided.stamps))
    return Ruling(steps, changes_at)


def retired_order(color: Color) -> tuple[datetime, datetime, str]:
    assert color.retired_at is not None
    return (color.retired_at, color.deployment.created_at, color.deployment.name)
