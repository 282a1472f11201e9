"""Assess: each color's state, what it was found on (a `Found` of notes.py, its figures), the
annotation stamps it needs (live-at, retired-at, drained-since, a scale-up seen, a malformed
stamp), and the guards that keep it (protect, a hold, scaleUpGrace). Whether a color is drained
is its state here; the drained rule (rules.py) acts on it. Every comparison with a time returns a
`Ruling` read through `Thresholds.take`, so the app's `valid_until` knows each threshold.
docs/design.md "What the planner decides" is the spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from rainbowd.core.instants import Beyond, later
from rainbowd.core.memos import ServiceIndex
from rainbowd.core.model import (
    DISRUPTED_AT,
    DRAINED_SINCE,
    HOLD_REASON,
    HOLD_UNTIL,
    LIVE_AT,
    NO_SERIES,
    ORIGINAL_REPLICAS,
    PROTECT,
    REASONS,
    RETIRED_AT,
    RETIREMENT,
    ROLLOUT_REVISION,
    SCALE_DOWN_GENERATION,
    SCALED_UP_AT,
    BlockReason,
    Connections,
    Deployment,
    Namespace,
    Reason,
    Rollout,
    Service,
    State,
)
from rainbowd.core.notes import (
    AboveFloor,
    Drained,
    DrainHold,
    Found,
    Guard,
    HeldUntil,
    HoldMalformed,
    Live,
    MinRetiredAge,
    Note,
    NotEvaluated,
    Outcome,
    Plain,
    ScaledBackUp,
    ScaleUpGrace,
    UnknownConnections,
)
from rainbowd.core.objects import parse_stamp
from rainbowd.core.planner.cycle import Cycle, Ruling, Thresholds, earliest
from rainbowd.core.policy import Knobs, Rule

_DRAIN_RESET_UNKNOWN = "connections unknown: the drain must be continuous"


_DRAIN_RESET_ABOVE = "connections above the floor: the drain must be continuous"


_DRAIN_RESET_SCALED = "scaled down: a drain is only observed with replicas"


# How people spell yes and no in annotations (YAML 1.1 booleans, as kubectl users type them).
_TRUE_WORDS = frozenset({"true", "yes", "y", "on", "1"})


_FALSE_WORDS = frozenset({"false", "no", "n", "off", "0"})


class Member(NamedTuple):
    """A color as grouping found it: its Deployment, the rule it follows (None: unmanaged), the
    name of a Service selecting it (None: not live), its color label, and for a Rollout color
    not live whether it is pending (True: its preview Service selects it, or Argo Rollouts'
    revision is above the live one's; False: below it; None: as for a Deployment, by the
    stamps and creation times)."""

    deployment: Deployment
    rule: Rule | None
    live: str | None
    color: str
    pending: bool | None = None


class Color(NamedTuple):
    """One color assessed: what it is (state, what its state was found on, connections, its
    times, the guards that keep it) and the annotation stamps it needs (`changes`, each with its
    `reasons`). Built once, never written: what is done about it is the rules' `Decision`
    (rules.py), which resolve.py combines. A NamedTuple: immutable, and cheap enough to build
    10,000 of per cycle inside the planner's time budget.
    """

    deployment: Deployment
    rule: Rule | None
    live: str | None  # the name of a Service selecting it, or None
    color: str
    state: State
    found: Found | None  # None: a scaled-down protected color, its guards say it all
    connections: Connections
    retired_at: datetime | None = None
    drained_since: datetime | None = None
    protected: bool = False
    guards: tuple[Guard, ...] = ()  # why it is protected
    disruptive: bool = False  # a forced scale-down of it would disconnect users (or may)
    changes: Mapping[str, str | None] | None = None
    reasons: tuple[tuple[Reason, str], ...] | None = None

    def note(self, decided: tuple[Outcome, ...] = ()) -> Note:
        """What was found about it, and `decided` (its Decision's), as its ColorPlan says it."""
        return Note(self.found, self.guards, decided)


class Stamps:
    """The annotation changes a color's assessment asks for, gathered while it is assessed."""

    __slots__ = ("changes", "reasons")

    def __init__(self) -> None:
        self.changes: dict[str, str | None] = {}
        self.reasons: list[tuple[Reason, str]] = []

    def change(self, key: str, value: str | None, reason: Reason, why: str) -> None:
        self.changes[key] = value
        self.reasons.append((reason, why))

    def fields(
        self,
    ) -> tuple[Mapping[str, str | None] | None, tuple[tuple[Reason, str], ...] | None]:
        """The Color's `changes` and `reasons`: None when nothing changes."""
        if not self.changes:
            return None, None
        return self.changes, tuple(self.reasons)


def effective_connections(connections: Connections, ready: int) -> Connections:
    value = connections.value
    if value is None:
        return connections
    if not math.isfinite(value):
        return Connections.unknown(f"not a finite number: {value}")
    series = connections.series
    if series is not None and series < ready:
        # Pods whose scrape fails vanish from the sum: an undercount would look like a drain.
        return Connections(
            value=None, series=series, cause=f"coverage: {series} of {ready} ready pods report"
        )
    return connections


def group(cycle: Cycle, namespace: Namespace) -> list[tuple[str, list[Member]]]:
    """The namespace's managed apps, each with its colors, rule and live Service resolved."""
    app_label = cycle.app_label
    color_label = cycle.color_label
    services = ServiceIndex(namespace.services, app_label, color_label)
    rule_for = cycle.rules.rule_for
    ns = namespace.name
    groups: dict[str, list[Member]] = {}
    managed: set[str] = set()
    by_name: dict[str, Service] | None = None
    for deployment in namespace.deployments:
        labels = deployment.template_labels
        app = labels.get(app_label)
        if app is None:
            continue
        color_name = deployment.color_of(color_label)
        if color_name is None:
            continue
        rule = rule_for(ns, deployment.labels, deployment.kind.value)
        if rule is not None:
            managed.add(app)
        rollout = deployment.rollout
        if rollout is None:
            member = Member(deployment, rule, services.live(app, color_name, labels), color_name)
        else:
            if by_name is None:
                by_name = {s.name: s for s in namespace.services}
            member = _rollout_member(deployment, rule, color_name, rollout, by_name)
        group = groups.get(app)
        if group is None:
            groups[app] = [member]
        else:
            group.append(member)
    if by_name is not None:
        for members in groups.values():
            _order_by_revision(members)
    return [(app, members) for app, members in groups.items() if app in managed]


def _rollout_member(
    deployment: Deployment,
    rule: Rule | None,
    color: str,
    rollout: Rollout,
    services: Mapping[str, Service],
) -> Member:
    """A Rollout color: live when the Rollout's active Service selects it, pending when its
    preview Service does (the one definition of live, with the Rollout naming the Service)."""
    live, previewed = rollout.selecting(deployment.template_labels, services)
    return Member(deployment, rule, live, color, True if previewed else None)


def _revision(deployment: Deployment) -> int | None:
    text = deployment.annotations.get(ROLLOUT_REVISION, "")
    return int(text) if text.isdigit() else None


def _order_by_revision(members: list[Member]) -> None:
    """A Rollout's colors neither live nor previewed, pending or retired by Argo Rollouts'
    revision against the live one's: its revisions order its ReplicaSets (a new one gets the
    next, a rolled-back-to one too), where creation times to the second may tie."""
    live: dict[str, int] = {}
    for member in members:
        rollout = member.deployment.rollout
        revision = _revision(member.deployment)
        if rollout is not None and member.live is not None and revision is not None:
            live[rollout.name] = max(revision, live.get(rollout.name, revision))
    if not live:
        return
    for i, member in enumerate(members):
        rollout = member.deployment.rollout
        if rollout is None or member.live is not None or member.pending is not None:
            continue
        revision = _revision(member.deployment)
        newest = live.get(rollout.name)
        if revision is not None and newest is not None and revision != newest:
            members[i] = member._replace(pending=revision > newest)


@dataclass(frozen=True, slots=True)
class Assessment:
    """An app's colors assessed: the rule whose knobs it follows, why nothing is done for it (a
    blocked app), every color, and its retired colors the cleanup rules may act on (none when
    blocked)."""

    rule: Rule
    blocked: BlockReason | None
    message: str
    colors: list[Color]
    retired: list[Color]


def assess_app(
    cycle: Cycle,
    thresholds: Thresholds,
    namespace: Namespace,
    app: str,
    members: list[Member],
    warnings: list[str],
) -> Assessment:
    """Each color's state, what it was found on, and its stamps. By concern: the app's rule and
    whether it is blocked, then each color as live, pending or retired."""
    owner, newest_live, blocked, message = _app_rule(members)
    knobs = owner.knobs
    connections = namespace.connections
    evaluate = blocked is None
    colors: list[Color] = []
    retired: list[Color] = []
    for member in members:
        raw = connections.get((app, member.color))
        seen = (
            NO_SERIES
            if raw is None
            else effective_connections(raw, member.deployment.ready_replicas)
        )
        if member.live is not None:
            colors.append(_assess_live(cycle, member, seen, knobs, evaluate=evaluate))
            continue
        abandoned = _pending_or_abandoned(
            cycle, thresholds, member, knobs, newest_live, warnings, evaluate=evaluate
        )
        if abandoned is None:
            colors.append(Color(*member[:4], State.PENDING, Plain.PENDING, seen))
            continue
        if member.rule is None:
            colors.append(_assess_unmanaged(member, seen))
            continue
        color = _assess_retired(
            cycle, thresholds, member, seen, knobs, warnings, abandoned=abandoned, message=message
        )
        colors.append(color)
        if evaluate:
            retired.append(color)
    return Assessment(owner, blocked, message, colors, retired)


def _app_rule(members: list[Member]) -> tuple[Rule, datetime | None, BlockReason | None, str]:
    """The app's rule (the newest live color's, else the newest managed color's), its newest
    live color's creation, and why nothing is done for it (blocked), with its message."""
    newest_live: datetime | None = None
    blocked: BlockReason | None = None
    blocked_by = ""
    live_rule: Member | None = None
    any_rule: Member | None = None
    for member in members:
        deployment = member.deployment
        created = deployment.created_at
        if member.rule is not None and (
            any_rule is None or created > any_rule.deployment.created_at
        ):
            any_rule = member
        if member.live is not None:
            if newest_live is None or created > newest_live:
                newest_live = created
            if member.rule is not None and (
                live_rule is None or created > live_rule.deployment.created_at
            ):
                live_rule = member
            if blocked is None and not deployment.available:
                blocked = BlockReason.LIVE_NOT_AVAILABLE
                blocked_by = deployment.name
    owner = live_rule or any_rule
    assert owner is not None and owner.rule is not None
    if newest_live is None:
        blocked = BlockReason.NO_LIVE_COLOR
        message = "blocked: no Service selects any color; old colors may be needed for a rollback"
    elif blocked is not None:
        message = f"blocked: live color {blocked_by} is not Available"
    else:
        message = ""
    return owner.rule, newest_live, blocked, message


def _assess_live(
    cycle: Cycle, member: Member, seen: Connections, knobs: Knobs, *, evaluate: bool
) -> Color:
    """A live color: stamped live, what is left of a retirement cleared."""
    deployment = member.deployment
    annotations = deployment.annotations
    found = Live(member.live or "")
    if member.rule is None:
        return Color(*member[:4], State.LIVE, found, seen)
    stamps = None
    if evaluate:
        # Stamped live and nothing of a retirement left: the steady case, nothing to do.
        if LIVE_AT not in annotations or any(k in annotations for k in RETIREMENT):
            stamps = Stamps()
            _plan_live(cycle, stamps, annotations)
    elif deployment.replicas > 0 and DRAINED_SINCE in annotations:
        # Rolled back to while the app is blocked: its retirement is cleared only once the app
        # is evaluated again, and a drain it carries must not survive a sample that breaks
        # it, or a switch back would find it drained all along.
        stamps = Stamps()
        _reset_drain(stamps, seen, knobs)
    if stamps is None:
        return Color(*member[:4], State.LIVE, found, seen)
    changes, reasons = stamps.fields()
    return Color(*member[:4], State.LIVE, found, seen, changes=changes, reasons=reasons)


def _pending_or_abandoned(
    cycle: Cycle,
    thresholds: Thresholds,
    member: Member,
    knobs: Knobs,
    newest_live: datetime | None,
    warnings: list[str],
    *,
    evaluate: bool,
) -> bool | None:
    """None: a pending color (a rollout in progress). Else whether the retired color is one
    abandoned while pending (pending for longer than abandonedAfter)."""
    pending = member.pending
    if pending:
        return None
    deployment = member.deployment
    annotations = deployment.annotations
    if (
        pending is False
        or LIVE_AT in annotations
        or (newest_live is not None and deployment.created_at < newest_live)
        or (
            RETIRED_AT in annotations
            and thresholds.take(_retired_by_stamp(cycle.now, deployment, annotations, warnings))
        )
    ):
        return False
    abandoned_after = knobs.abandoned_after
    if (
        not evaluate
        or member.rule is None
        or abandoned_after is None
        or not thresholds.take(_abandoned(cycle.now, deployment, abandoned_after))
    ):
        return None
    return True


def _assess_unmanaged(member: Member, seen: Connections) -> Color:
    """A retired color no rule manages: shown, never acted on."""
    stamp = member.deployment.annotations.get(RETIRED_AT)
    retired_at = None if stamp is None else parse_stamp(stamp)
    return Color(*member[:4], State.RETIRED, Plain.UNMANAGED, seen, retired_at)


def _assess_retired(
    cycle: Cycle,
    thresholds: Thresholds,
    member: Member,
    seen: Connections,
    knobs: Knobs,
    warnings: list[str],
    *,
    abandoned: bool,
    message: str,
) -> Color:
    """A managed retired color: its retirement, guards and drain; `message` set when its app
    is blocked (not evaluated: its stamps wait, every sample still counts against a drain)."""
    deployment = member.deployment
    evaluate = not message
    stamps = Stamps()
    retired_at, guards, annotations = _retirement(
        cycle,
        thresholds,
        deployment,
        stamps,
        knobs,
        warnings,
        abandoned=abandoned,
        stamp_it=evaluate,
    )
    protected = bool(guards)
    found: Found | None = NotEvaluated(message)
    drained_since = None
    disruptive = False
    if not evaluate:
        if deployment.replicas > 0 and DRAINED_SINCE in annotations:
            # Blocked or not, every sample counts: a drain is continuous or it is not one.
            _reset_drain(stamps, seen, knobs)
        state = State.PROTECTED if protected else State.RETIRED
        guards = ()  # the app is blocked: that says it all
    elif deployment.replicas == 0:
        state, found = _assess_scaled_down(stamps, annotations, protected=protected)
    else:
        state, found, drained_since = thresholds.take(
            _evaluate_retired(
                cycle, deployment, stamps, seen, retired_at, knobs, annotations, warnings
            )
        )
        disruptive = seen.value is None or seen.value > knobs.connection_floor
        state = State.PROTECTED if protected else state
    changes, reasons = stamps.fields()
    return Color(
        *member[:4], state, found, seen, retired_at, drained_since, protected, guards, disruptive,
        changes, reasons,
    )  # fmt: skip


def _retirement(
    cycle: Cycle,
    thresholds: Thresholds,
    deployment: Deployment,
    stamps: Stamps,
    knobs: Knobs,
    warnings: list[str],
    *,
    abandoned: bool,
    stamp_it: bool,
) -> tuple[datetime, tuple[Guard, ...], Mapping[str, str]]:
    """A managed retired color's retirement (when it retired) and guards, and its annotations
    as they will read once this cycle's changes are written."""
    annotations = deployment.annotations
    stamp = annotations.get(RETIRED_AT)
    retired_at = None if stamp is None else parse_stamp(stamp)
    if retired_at is None:
        retired_at = thresholds.take(
            _retired_now(cycle, deployment, stamps, stamp, abandoned, warnings, stamp_it=stamp_it)
        )
    guards: tuple[Guard, ...] = ()
    if _GUARDS.intersection(annotations):
        guards = thresholds.take(
            _guard(cycle, deployment, stamps, annotations, knobs, warnings, stamp_it=stamp_it)
        )
    if stamp_it:
        _check_disrupted(cycle, deployment, stamps, warnings)
    if (
        deployment.replicas > 0
        and ORIGINAL_REPLICAS in annotations
        and annotations.get(SCALE_DOWN_GENERATION) != str(deployment.generation)
    ):
        annotations, back = thresholds.take(
            _scaled_back_up(cycle, deployment, stamps, annotations, knobs)
        )
        guards = guards if back is None else (*guards, back)
    return retired_at, guards, annotations


def _check_disrupted(
    cycle: Cycle, deployment: Deployment, stamps: Stamps, warnings: list[str]
) -> None:
    """A malformed disrupted-at record is counted as a disruption now (the budget's
    conservative side), and re-stamped so its window starts once, not again every cycle."""
    disrupted = deployment.annotations.get(DISRUPTED_AT)
    if disrupted is None or all(
        parse_stamp(t) is not None for t in disrupted.split() or [disrupted]
    ):
        return
    warnings.append(
        f"{deployment.namespace}/{deployment.name}: {DISRUPTED_AT} {disrupted!r} is not "
        "an RFC 3339 time; counted as a disruption now and re-stamped"
    )
    stamps.change(
        DISRUPTED_AT,
        cycle.stamp,
        Reason.MALFORMED_ANNOTATION,
        REASONS[Reason.MALFORMED_ANNOTATION].words,
    )


def _assess_scaled_down(
    stamps: Stamps, annotations: Mapping[str, str], *, protected: bool
) -> tuple[State, Found | None]:
    """A retired color at 0 replicas: nothing to evaluate."""
    if DRAINED_SINCE in annotations and ORIGINAL_REPLICAS not in annotations:
        # Scaled down by hand (rainbowd's own scale-downs are recognised by original-replicas
        # when scaled back up): a later scale-up starts a new drain.
        stamps.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_SCALED)
    if protected:
        return State.PROTECTED, None
    return State.SCALED_DOWN, Plain.SCALED_DOWN


def _abandoned(now: datetime, deployment: Deployment, abandoned_after: timedelta) -> Ruling[bool]:
    """Whether a pending color is abandoned: pending for longer than abandonedAfter."""
    abandoned_at = later(deployment.created_at, abandoned_after, beyond=Beyond.NEVER)
    if now < abandoned_at:
        return Ruling(False, abandoned_at)
    return Ruling(True, None)


def _retired_by_stamp(
    now: datetime, deployment: Deployment, annotations: Mapping[str, str], warnings: list[str]
) -> Ruling[bool]:
    """Whether the retired-at stamp of a color that would otherwise be pending retires it: only
    a time already past does. A pending color is a rollout in progress; a garbled or future
    stamp must not make it a candidate for scaling down (reported, never silent)."""
    stamp = annotations[RETIRED_AT]
    at = parse_stamp(stamp)
    if at is None:
        warnings.append(
            f"{deployment.namespace}/{deployment.name}: {RETIRED_AT} {stamp!r} is not an RFC "
            "3339 time; the color stays pending"
        )
        return Ruling(False, None)
    if at > now:
        return Ruling(False, at)
    return Ruling(True, None)


def _plan_live(cycle: Cycle, stamps: Stamps, annotations: Mapping[str, str]) -> None:
    again = any(key in annotations for key in RETIREMENT)
    if LIVE_AT not in annotations:
        reason = Reason.LIVE_AGAIN if again else Reason.OBSERVED_LIVE
        stamps.change(LIVE_AT, cycle.stamp, reason, REASONS[reason].words)
    if again:
        for key in RETIREMENT:
            if key in annotations:
                stamps.change(key, None, Reason.LIVE_AGAIN, REASONS[Reason.LIVE_AGAIN].words)


_GUARDS = frozenset({PROTECT, HOLD_UNTIL, SCALED_UP_AT})


def _guard(
    cycle: Cycle,
    deployment: Deployment,
    stamps: Stamps,
    annotations: Mapping[str, str],
    knobs: Knobs,
    warnings: list[str],
    *,
    stamp_it: bool,
) -> Ruling[tuple[Guard, ...]]:
    """Protection by annotation: protect, a hold, the grace after a scale-up. Any doubt about a
    value protects: a typo must never get a color scaled down that someone meant to keep."""
    where = f"{deployment.namespace}/{deployment.name}"
    guards: list[Guard] = []
    changes_at: datetime | None = None
    protect = annotations.get(PROTECT)
    if protect is not None:
        word = protect.strip().lower()
        if word not in _FALSE_WORDS:
            guards.append(Plain.PROTECTED)
            if word not in _TRUE_WORDS:
                warnings.append(
                    f"{where}: {PROTECT} {protect!r} is not a spelling of true or false; "
                    "treated as protected"
                )
    hold = annotations.get(HOLD_UNTIL)
    if hold is not None:
        until = parse_stamp(hold)
        reason = " ".join(annotations.get(HOLD_REASON, "").split())
        if until is None:
            guards.append(HoldMalformed(hold, reason))
            warnings.append(
                f"{where}: {HOLD_UNTIL} {hold!r} is not an RFC 3339 time; held until it is fixed"
            )
        elif cycle.now < until:
            changes_at = earliest(changes_at, until)
            guards.append(HeldUntil(until, reason))
    scaled_up = annotations.get(SCALED_UP_AT)
    if scaled_up is not None:
        at = parse_stamp(scaled_up)
        if at is None:
            warnings.append(
                f"{where}: {SCALED_UP_AT} {scaled_up!r} is not an RFC 3339 time; treated as now"
                f"{' and re-stamped' if stamp_it else ''}"
            )
            at = cycle.stamp_at
            if stamp_it:
                stamps.change(
                    SCALED_UP_AT,
                    cycle.stamp,
                    Reason.MALFORMED_ANNOTATION,
                    REASONS[Reason.MALFORMED_ANNOTATION].words,
                )
            else:
                changes_at = earliest(changes_at, cycle.restamped_at)  # "now" is shown
        grace_ends = later(at, knobs.scale_up_grace, beyond=Beyond.NEVER)
        if cycle.now < grace_ends:
            changes_at = earliest(changes_at, grace_ends)
            guards.append(ScaleUpGrace(at, knobs.scale_up_grace))
    return Ruling(tuple(guards), changes_at)


def _scaled_back_up(
    cycle: Cycle,
    deployment: Deployment,
    stamps: Stamps,
    annotations: Mapping[str, str],
    knobs: Knobs,
) -> Ruling[tuple[Mapping[str, str], ScaledBackUp | None]]:
    """A color rainbowd scaled to 0 (it wrote original-replicas) has replicas again: someone is
    rolling back to it. Whatever was observed at 0 replicas says nothing about the users the
    new pods will hold, so the drain starts over, and no rule acts during the grace period.
    The annotations as they will read once this cycle's changes are written, and the guard
    (None without a grace period)."""
    why = REASONS[Reason.SCALED_UP].words
    cleared = (DRAINED_SINCE, ORIGINAL_REPLICAS, SCALE_DOWN_GENERATION)
    for key in cleared:
        if key in annotations:
            stamps.change(key, None, Reason.SCALED_UP, why)
    after = {k: v for k, v in annotations.items() if k not in cleared}
    # A scaled-up-at already later than now (written by hand, or by a clock ahead of ours)
    # already guards the color, and longer: moving it back to now would shorten that guard,
    # and the next plan, reading now, would undo this one's protection.
    written = parse_stamp(annotations.get(SCALED_UP_AT, ""))
    if written is None or written <= cycle.stamp_at:
        stamps.change(SCALED_UP_AT, cycle.stamp, Reason.SCALED_UP, why)
        after[SCALED_UP_AT] = cycle.stamp
    if knobs.scale_up_grace <= timedelta(0):
        return Ruling((after, None), None)
    guard = ScaledBackUp(deployment.replicas, knobs.scale_up_grace)
    return Ruling((after, guard), later(cycle.stamp_at, knobs.scale_up_grace, beyond=Beyond.NEVER))


def _reset_drain(stamps: Stamps, seen: Connections, knobs: Knobs) -> None:
    """Clears drained-since on a sample above the floor or unknown (the app may be blocked)."""
    value = seen.value
    if value is None:
        stamps.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_UNKNOWN)
    elif value > knobs.connection_floor:
        stamps.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_ABOVE)


def _retired_now(
    cycle: Cycle,
    deployment: Deployment,
    stamps: Stamps,
    stamp: str | None,
    abandoned: bool,
    warnings: list[str],
    *,
    stamp_it: bool,
) -> Ruling[datetime]:
    """When a managed retired color whose retired-at `stamp` is missing or unparsable retired:
    now, to the second, as its stamp will read (a plan that shows it changes with it)."""
    if stamp is None:
        if stamp_it:
            reason = Reason.ABANDONED if abandoned else Reason.OBSERVED_RETIRED
            stamps.change(RETIRED_AT, cycle.stamp, reason, REASONS[reason].words)
            return Ruling(cycle.stamp_at, None)  # stamped: read back next cycle
        return Ruling(cycle.stamp_at, cycle.restamped_at)
    # Never "long ago": a typo must not get a color holding connections scaled down early.
    warnings.append(
        f"{deployment.namespace}/{deployment.name}: {RETIRED_AT} {stamp!r} is not an RFC 3339 "
        f"time; treated as now{' and re-stamped' if stamp_it else ''}"
    )
    if stamp_it:
        stamps.change(
            RETIRED_AT,
            cycle.stamp,
            Reason.MALFORMED_ANNOTATION,
            REASONS[Reason.MALFORMED_ANNOTATION].words,
        )
    return Ruling(cycle.stamp_at, cycle.restamped_at)


def _evaluate_retired(
    cycle: Cycle,
    deployment: Deployment,
    stamps: Stamps,
    seen: Connections,
    retired_at: datetime,
    knobs: Knobs,
    annotations: Mapping[str, str],
    warnings: list[str],
) -> Ruling[tuple[State, Found, datetime | None]]:
    """State (protection aside), what it was found on and since when it is drained, and the
    drain bookkeeping, of a retired color with replicas, of an app not blocked; it changes
    when drainHold or minRetiredAge is reached."""
    value = seen.value
    floor = knobs.connection_floor
    drained_stamp = annotations.get(DRAINED_SINCE)
    if value is None:
        if drained_stamp is not None:
            stamps.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_UNKNOWN)
        return Ruling((State.UNKNOWN_CONNECTIONS, UnknownConnections(seen.cause), None), None)
    if value > floor:
        if drained_stamp is not None:
            stamps.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_ABOVE)
        return Ruling((State.DRAINING, AboveFloor(value, floor), None), None)
    drained_since = None if drained_stamp is None else parse_stamp(drained_stamp)
    if drained_since is None:
        if drained_stamp is not None:
            warnings.append(
                f"{deployment.namespace}/{deployment.name}: {DRAINED_SINCE} "
                f"{drained_stamp!r} is not an RFC 3339 time; the drain starts now"
            )
        drained_since = cycle.stamp_at
        stamps.change(
            DRAINED_SINCE,
            cycle.stamp,
            Reason.DRAIN_STARTED,
            REASONS[Reason.DRAIN_STARTED].words,
        )
    now = cycle.now
    held_until = later(drained_since, knobs.drain_hold, beyond=Beyond.NEVER)
    if now < held_until:
        hold = DrainHold(value, floor, drained_since, knobs.drain_hold)
        return Ruling((State.DRAINING, hold, drained_since), held_until)
    old_enough = later(retired_at, knobs.min_retired_age, beyond=Beyond.NEVER)
    if now < old_enough:
        young = MinRetiredAge(retired_at, knobs.min_retired_age)
        return Ruling((State.DRAINING, young, drained_since), old_enough)
    return Ruling((State.DRAINED, Drained(value, floor, drained_since), drained_since), None)
