"""What the planner found and decided about a color, as data: a `Note` of parts, each a small
record of the figures it was decided on (counts, knobs, instants). The reporting module renders
them in words, against the plan's `now`, only when a note is read (/status, a table, an action's
message), so a plan says nothing that goes stale as time passes."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import NamedTuple

from rainbowd.core.model import ActionKind, Reason
from rainbowd.core.policy import Budget


class Plain(enum.Enum):
    """A part with no figures."""

    PENDING = "pending"
    UNMANAGED = "unmanaged"
    SCALED_DOWN = "scaled-down"
    PROTECTED = "protected"  # rainbowd.io/protect
    SCALE_FIRST = "scale-first"  # a delete scaled down first, to keep a disruption's record


# --- what assess found: a color's state -------------------------------------------------------


class Live(NamedTuple):
    service: str  # the Service selecting it


class NotEvaluated(NamedTuple):
    """The app is blocked: `message` says why."""

    message: str


class UnknownConnections(NamedTuple):
    cause: str


class AboveFloor(NamedTuple):
    connections: float
    floor: int


class DrainHold(NamedTuple):
    """At or below the floor since `since`, not yet for drainHold."""

    connections: float
    floor: int
    since: datetime
    hold: timedelta


class MinRetiredAge(NamedTuple):
    """Drained, but retired since `retired_at`, not yet for minRetiredAge."""

    retired_at: datetime
    min_age: timedelta


class Drained(NamedTuple):
    """At or below the floor since `since`, for drainHold, and retired for minRetiredAge: also
    the drained rule's words."""

    connections: float
    floor: int
    since: datetime


# --- the guards that keep a color ----------------------------------------------------------------


class HoldMalformed(NamedTuple):
    value: str  # the hold-until annotation, not an RFC 3339 time
    reason: str  # the hold-reason annotation, "" without one


class HeldUntil(NamedTuple):
    until: datetime
    reason: str


class ScaleUpGrace(NamedTuple):
    """Scaled back up at `at`, within scaleUpGrace."""

    at: datetime
    grace: timedelta


class ScaledBackUp(NamedTuple):
    """Seen scaled back up from 0 this cycle."""

    replicas: int
    grace: timedelta


# --- why a rule decided to scale down or delete a color ---------------------------------------


class OverMaxRetiredAge(NamedTuple):
    retired_at: datetime
    max_age: timedelta


class OverMaxColors(NamedTuple):
    running: int  # colors with replicas
    limit: int


class BeyondKeepScaledDown(NamedTuple):
    keep: int


class RecordedDisruption(NamedTuple):
    """Scaled down only to record a disruption, deleted once it no longer counts."""

    budget: Budget


class IdlePods(NamedTuple):
    """consolidate: `idle` of the color's `pods` hold no connections; it goes to `to` pods
    (never below `keep`), the ReplicaSet controller removing `removed` (pod, connections)."""

    pods: int
    idle: int
    to: int
    keep: int
    removed: tuple[tuple[str, float], ...]


class SteppedDown(NamedTuple):
    """stepDown: no pod is idle; the least-connected `removed` go, `to` pods left."""

    pods: int
    to: int
    max_pods: int
    removed: tuple[tuple[str, float], ...]


# --- what resolve made of a decision -------------------------------------------------------------


class Disruption(NamedTuple):
    """A scale-down of users: the color still holds `connections` (None: unknown)."""

    connections: float | None
    floor: int


class Forced(NamedTuple):
    """A forced rule's scale-down (or delete) granted, disrupting users or not."""

    why: Why
    disruption: Disruption | None


class BudgetSpent(NamedTuple):
    budget: Budget
    cluster: bool  # the cluster-wide budget, else the app's


# What may hold a forced scale-down, each its record: the holding rules' (resolve.py
# HOLDING_RULES, in order), then the disruption budget's.
HeldBy = BudgetSpent


class Held(NamedTuple):
    """A forced scale-down held, `by` saying what holds it."""

    why: Why
    by: HeldBy


class Decided(NamedTuple):
    """A bookkeeping rule's delete, of a color nothing else was decided for."""

    why: Why


class Directly(NamedTuple):
    """A bookkeeping rule's delete of a color already being scaled down this cycle."""

    why: Why


class KeptForRecord(NamedTuple):
    """A delete held: the Deployment records a disruption that counts until `until`."""

    until: datetime


class Paused(NamedTuple):
    """Paused: what would have been done, and for which reason."""

    kind: ActionKind
    reason: Reason


class RevisionLimit(NamedTuple):
    """A Rollout color holding connections that the Rollout's scaleDownDelayRevisionLimit
    (`limit`) would scale down at once at the next promotion; a limit of `keeps` keeps it."""

    rollout: str
    limit: int
    keeps: int


class ConsolidationUnavailable(NamedTuple):
    """consolidate would be considered, but the per-pod figures cannot decide: `why`."""

    why: str


Found = (
    Live
    | NotEvaluated
    | UnknownConnections
    | AboveFloor
    | DrainHold
    | MinRetiredAge
    | Drained
    | Plain
)
Guard = HoldMalformed | HeldUntil | ScaleUpGrace | ScaledBackUp | Plain
# Why a color is scaled down or deleted: a rule's reason with its figures.
Why = (
    Drained
    | OverMaxRetiredAge
    | OverMaxColors
    | BeyondKeepScaledDown
    | RecordedDisruption
    | IdlePods
    | SteppedDown
)
# What resolve made of it (on the note), and what an action's words add.
Outcome = (
    Forced | Held | Decided | KeptForRecord | Paused | ConsolidationUnavailable | RevisionLimit
)
Said = Why | Forced | Directly | Plain


class Note(NamedTuple):
    """A color's note: its guards, what assess found (None: its guards say it all), and what
    resolve decided, in order."""

    found: Found | None
    guards: tuple[Guard, ...] = ()
    decided: tuple[Outcome, ...] = ()
