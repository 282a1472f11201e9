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
    SCALE_DOWN_GENERATION,
    SCALED_UP_AT,
    ActionKind,
    BlockReason,
    Connections,
    Deployment,
    Namespace,
    PodStep,
    Reason,
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
    Said,
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


class Color:
    """One color while its app is being planned; becomes a ColorPlan (actions.py).

    assess sets what the color is: state, found (what its state was found on), connections,
    retired_at, drained_since, protected (and guards), the stamps (`change`). resolve applies the
    rules' decisions, setting what is done about it: cleanup (the Reason), kind, said (the
    action's why), decided (what the note adds), held, and disrupted (the disrupted-at record a
    forced scale-down writes). Words are the reporting module's, from these.

    No __slots__: class-level defaults let the constructor set only three fields, and building
    10,000 of these per cycle is a visible share of the planner's time budget.
    """

    state = State.RETIRED
    found: Found | None = None  # None: a scaled-down protected color, its guards say it all
    connections: Connections = Connections.unknown("no series for this color")
    retired_at: datetime | None = None
    drained_since: datetime | None = None
    protected = False
    guards: tuple[Guard, ...] = ()  # why it is protected
    changes: dict[str, str | None] | None = None
    reasons: list[tuple[Reason, str]] | None = None
    cleanup: Reason | None = None
    kind: ActionKind | None = None
    said: tuple[Said, ...] = ()  # why the cleanup: the rule's, then what resolve added
    decided: tuple[Outcome, ...] = ()
    disruptive = False
    held: Reason | None = None
    disrupted = ""  # a forced scale-down of users spends the budget: the disrupted-at stamp
    step: PodStep | None = None  # a consolidation step (kind CONSOLIDATE) and its record
    stamps: tuple[tuple[str, str], ...] = ()

    def __init__(
        self, deployment: Deployment, rule: Rule | None, live: str | None, color: str
    ) -> None:
        self.deployment = deployment
        self.rule = rule
        self.live = live  # the name of a Service selecting it, or None
        self.color = color

    def note(self) -> Note:
        """What was found and decided about it, as its ColorPlan says it."""
        return Note(self.found, self.guards, self.decided)

    def change(self, key: str, value: str | None, reason: Reason, why: str) -> None:
        if self.changes is None:
            self.changes = {}
            self.reasons = []
        self.changes[key] = value
        assert self.reasons is not None
        self.reasons.append((reason, why))


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


def group(cycle: Cycle, namespace: Namespace) -> list[tuple[str, list[Color]]]:
    """The namespace's managed apps, each with its colors, rule and live Service resolved."""
    app_label = cycle.app_label
    color_label = cycle.color_label
    services = ServiceIndex(namespace.services, app_label, color_label)
    rule_for = cycle.rules.rule_for
    ns = namespace.name
    groups: dict[str, list[Color]] = {}
    managed: set[str] = set()
    for deployment in namespace.deployments:
        labels = deployment.template_labels
        app = labels.get(app_label)
        if app is None:
            continue
        color_name = labels.get(color_label)
        if color_name is None:
            continue
        rule = rule_for(ns, deployment.labels)
        if rule is not None:
            managed.add(app)
        color = Color(deployment, rule, services.live(app, color_name, labels), color_name)
        group = groups.get(app)
        if group is None:
            groups[app] = [color]
        else:
            group.append(color)
    return [(app, colors) for app, colors in groups.items() if app in managed]


@dataclass(frozen=True, slots=True)
class Assessment:
    """An app's colors assessed: the rule whose knobs it follows, why nothing is done for it (a
    blocked app), and its retired colors the cleanup rules may act on (none when blocked)."""

    rule: Rule
    blocked: BlockReason | None
    message: str
    retired: list[Color]


def assess_app(
    cycle: Cycle,
    thresholds: Thresholds,
    namespace: Namespace,
    app: str,
    colors: list[Color],
    warnings: list[str],
) -> Assessment:
    """Each color's state, what it was found on, and its stamps; `colors` are updated in
    place. By concern: the app's rule and whether it is blocked, then each color as live,
    pending or retired."""
    owner, newest_live, blocked, message = _app_rule(colors)
    knobs = owner.knobs
    connections = namespace.connections
    evaluate = blocked is None
    retired: list[Color] = []
    for color in colors:
        deployment = color.deployment
        raw = connections.get((app, color.color))
        color.connections = (
            NO_SERIES if raw is None else effective_connections(raw, deployment.ready_replicas)
        )
        if color.live is not None:
            _assess_live(cycle, color, knobs, evaluate=evaluate)
            continue
        abandoned = _pending_or_abandoned(
            cycle, thresholds, color, knobs, newest_live, warnings, evaluate=evaluate
        )
        if abandoned is None:
            color.state = State.PENDING
            color.found = Plain.PENDING
            continue
        if _assess_retired(
            cycle,
            thresholds,
            color,
            knobs,
            message,
            warnings,
            abandoned=abandoned,
            evaluate=evaluate,
        ):
            retired.append(color)
    return Assessment(owner, blocked, message, retired)


def _app_rule(colors: list[Color]) -> tuple[Rule, datetime | None, BlockReason | None, str]:
    """The app's rule (the newest live color's, else the newest managed color's), its newest
    live color's creation, and why nothing is done for it (blocked), with its message."""
    newest_live: datetime | None = None
    blocked: BlockReason | None = None
    blocked_by = ""
    live_rule: Color | None = None
    any_rule: Color | None = None
    for color in colors:
        deployment = color.deployment
        created = deployment.created_at
        if color.rule is not None and (
            any_rule is None or created > any_rule.deployment.created_at
        ):
            any_rule = color
        if color.live is not None:
            if newest_live is None or created > newest_live:
                newest_live = created
            if color.rule is not None and (
                live_rule is None or created > live_rule.deployment.created_at
            ):
                live_rule = color
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


def _assess_live(cycle: Cycle, color: Color, knobs: Knobs, *, evaluate: bool) -> None:
    """A live color: stamped live, what is left of a retirement cleared."""
    annotations = color.deployment.annotations
    color.state = State.LIVE
    color.found = Live(color.live or "")
    if color.rule is None:
        return
    if evaluate:
        # Stamped live and nothing of a retirement left: the steady case, nothing to do.
        if LIVE_AT not in annotations or any(k in annotations for k in RETIREMENT):
            _plan_live(cycle, color, annotations)
    elif color.deployment.replicas > 0 and DRAINED_SINCE in annotations:
        # Rolled back to while the app is blocked: its retirement is cleared only once the app
        # is evaluated again, and a drain it carries must not survive a sample that breaks
        # it, or a switch back would find it drained all along.
        _reset_drain(color, knobs)


def _pending_or_abandoned(
    cycle: Cycle,
    thresholds: Thresholds,
    color: Color,
    knobs: Knobs,
    newest_live: datetime | None,
    warnings: list[str],
    *,
    evaluate: bool,
) -> bool | None:
    """None: a pending color (a rollout in progress). Else whether the retired color is one
    abandoned while pending (pending for longer than abandonedAfter)."""
    deployment = color.deployment
    annotations = deployment.annotations
    if (
        LIVE_AT in annotations
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
        or color.rule is None
        or abandoned_after is None
        or not thresholds.take(_abandoned(cycle.now, deployment, abandoned_after))
    ):
        return None
    return True


def _assess_retired(
    cycle: Cycle,
    thresholds: Thresholds,
    color: Color,
    knobs: Knobs,
    message: str,
    warnings: list[str],
    *,
    abandoned: bool,
    evaluate: bool,
) -> bool:
    """A retired color: its retirement, guards and drain. Whether the cleanup rules may act on
    it (a managed color, of an app not blocked)."""
    deployment = color.deployment
    annotations = deployment.annotations
    stamp = annotations.get(RETIRED_AT)
    retired_at = None if stamp is None else parse_stamp(stamp)
    if color.rule is None:
        color.found = Plain.UNMANAGED
        color.retired_at = retired_at
        return False
    if retired_at is None:
        retired_at = thresholds.take(
            _retired_now(cycle, color, stamp, abandoned, warnings, stamp_it=evaluate)
        )
    color.retired_at = retired_at
    if _GUARDS.intersection(annotations):
        color.guards = thresholds.take(
            _guard(cycle, color, annotations, knobs, warnings, stamp_it=evaluate)
        )
        color.protected = bool(color.guards)
    if evaluate:
        _check_disrupted(cycle, color, warnings)
    if (
        deployment.replicas > 0
        and ORIGINAL_REPLICAS in annotations
        and annotations.get(SCALE_DOWN_GENERATION) != str(deployment.generation)
    ):
        annotations = thresholds.take(_scaled_back_up(cycle, color, annotations, knobs))
    if not evaluate:
        color.state = State.PROTECTED if color.protected else State.RETIRED
        color.found = NotEvaluated(message)
        color.guards = ()  # the app is blocked: that says it all
        if deployment.replicas > 0 and DRAINED_SINCE in annotations:
            # Blocked or not, every sample counts: a drain is continuous or it is not one.
            _reset_drain(color, knobs)
        return False
    if deployment.replicas == 0:
        _assess_scaled_down(color, annotations)
    else:
        state, color.found = thresholds.take(
            _evaluate_retired(cycle, color, knobs, annotations, warnings)
        )
        color.state = State.PROTECTED if color.protected else state
    return True


def _check_disrupted(cycle: Cycle, color: Color, warnings: list[str]) -> None:
    """A malformed disrupted-at record is counted as a disruption now (the budget's
    conservative side), and re-stamped so its window starts once, not again every cycle."""
    deployment = color.deployment
    disrupted = deployment.annotations.get(DISRUPTED_AT)
    if disrupted is None or all(
        parse_stamp(t) is not None for t in disrupted.split() or [disrupted]
    ):
        return
    warnings.append(
        f"{deployment.namespace}/{deployment.name}: {DISRUPTED_AT} {disrupted!r} is not "
        "an RFC 3339 time; counted as a disruption now and re-stamped"
    )
    color.change(
        DISRUPTED_AT,
        cycle.stamp,
        Reason.MALFORMED_ANNOTATION,
        REASONS[Reason.MALFORMED_ANNOTATION].words,
    )


def _assess_scaled_down(color: Color, annotations: Mapping[str, str]) -> None:
    """A retired color at 0 replicas: nothing to evaluate."""
    if color.protected:
        color.state = State.PROTECTED
    else:
        color.state = State.SCALED_DOWN
        color.found = Plain.SCALED_DOWN
    if DRAINED_SINCE in annotations and ORIGINAL_REPLICAS not in annotations:
        # Scaled down by hand (rainbowd's own scale-downs are recognised by original-replicas
        # when scaled back up): a later scale-up starts a new drain.
        color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_SCALED)


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


def _plan_live(cycle: Cycle, color: Color, annotations: Mapping[str, str]) -> None:
    again = any(key in annotations for key in RETIREMENT)
    if LIVE_AT not in annotations:
        reason = Reason.LIVE_AGAIN if again else Reason.OBSERVED_LIVE
        color.change(LIVE_AT, cycle.stamp, reason, REASONS[reason].words)
    if again:
        for key in RETIREMENT:
            if key in annotations:
                color.change(key, None, Reason.LIVE_AGAIN, REASONS[Reason.LIVE_AGAIN].words)


_GUARDS = frozenset({PROTECT, HOLD_UNTIL, SCALED_UP_AT})


def _guard(
    cycle: Cycle,
    color: Color,
    annotations: Mapping[str, str],
    knobs: Knobs,
    warnings: list[str],
    *,
    stamp_it: bool,
) -> Ruling[tuple[Guard, ...]]:
    """Protection by annotation: protect, a hold, the grace after a scale-up. Any doubt about a
    value protects: a typo must never get a color scaled down that someone meant to keep."""
    where = f"{color.deployment.namespace}/{color.deployment.name}"
    now = cycle.now
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
        elif now < until:
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
                color.change(
                    SCALED_UP_AT,
                    cycle.stamp,
                    Reason.MALFORMED_ANNOTATION,
                    REASONS[Reason.MALFORMED_ANNOTATION].words,
                )
            else:
                changes_at = earliest(changes_at, cycle.restamped_at)  # "now" is shown
        grace_ends = later(at, knobs.scale_up_grace, beyond=Beyond.NEVER)
        if now < grace_ends:
            changes_at = earliest(changes_at, grace_ends)
            guards.append(ScaleUpGrace(at, knobs.scale_up_grace))
    return Ruling(tuple(guards), changes_at)


def _scaled_back_up(
    cycle: Cycle, color: Color, annotations: Mapping[str, str], knobs: Knobs
) -> Ruling[Mapping[str, str]]:
    """A color rainbowd scaled to 0 (it wrote original-replicas) has replicas again: someone is
    rolling back to it. Whatever was observed at 0 replicas says nothing about the users the
    new pods will hold, so the drain starts over, and no rule acts during the grace period.
    The annotations as they will read once this cycle's changes are written."""
    why = REASONS[Reason.SCALED_UP].words
    cleared = (DRAINED_SINCE, ORIGINAL_REPLICAS, SCALE_DOWN_GENERATION)
    for key in cleared:
        if key in annotations:
            color.change(key, None, Reason.SCALED_UP, why)
    after = {k: v for k, v in annotations.items() if k not in cleared}
    # A scaled-up-at already later than now (written by hand, or by a clock ahead of ours)
    # already guards the color, and longer: moving it back to now would shorten that guard,
    # and the next plan, reading now, would undo this one's protection.
    written = parse_stamp(annotations.get(SCALED_UP_AT, ""))
    if written is None or written <= cycle.stamp_at:
        color.change(SCALED_UP_AT, cycle.stamp, Reason.SCALED_UP, why)
        after[SCALED_UP_AT] = cycle.stamp
    if knobs.scale_up_grace <= timedelta(0):
        return Ruling(after, None)
    color.protected = True
    color.guards = (*color.guards, ScaledBackUp(color.deployment.replicas, knobs.scale_up_grace))
    return Ruling(after, later(cycle.stamp_at, knobs.scale_up_grace, beyond=Beyond.NEVER))


def _reset_drain(color: Color, knobs: Knobs) -> None:
    """Clears drained-since on a sample above the floor or unknown (the app may be blocked)."""
    value = color.connections.value
    if value is None:
        color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_UNKNOWN)
    elif value > knobs.connection_floor:
        color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_ABOVE)


def _retired_now(
    cycle: Cycle,
    color: Color,
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
            color.change(RETIRED_AT, cycle.stamp, reason, REASONS[reason].words)
            return Ruling(cycle.stamp_at, None)  # stamped: read back next cycle
        return Ruling(cycle.stamp_at, cycle.restamped_at)
    # Never "long ago": a typo must not get a color holding connections scaled down early.
    deployment = color.deployment
    warnings.append(
        f"{deployment.namespace}/{deployment.name}: {RETIRED_AT} {stamp!r} is not an RFC 3339 "
        f"time; treated as now{' and re-stamped' if stamp_it else ''}"
    )
    if stamp_it:
        color.change(
            RETIRED_AT,
            cycle.stamp,
            Reason.MALFORMED_ANNOTATION,
            REASONS[Reason.MALFORMED_ANNOTATION].words,
        )
    return Ruling(cycle.stamp_at, cycle.restamped_at)


def _evaluate_retired(
    cycle: Cycle,
    color: Color,
    knobs: Knobs,
    annotations: Mapping[str, str],
    warnings: list[str],
) -> Ruling[tuple[State, Found]]:
    """State (protection aside) and drain bookkeeping of a retired color with replicas, of an
    app not blocked; it changes when drainHold or minRetiredAge is reached."""
    deployment = color.deployment
    connections = color.connections
    value = connections.value
    floor = knobs.connection_floor
    drained_stamp = annotations.get(DRAINED_SINCE)
    if value is None:
        color.disruptive = True
        if drained_stamp is not None:
            color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_UNKNOWN)
        return Ruling((State.UNKNOWN_CONNECTIONS, UnknownConnections(connections.cause)), None)
    if value > floor:
        color.disruptive = True
        if drained_stamp is not None:
            color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_ABOVE)
        return Ruling((State.DRAINING, AboveFloor(value, floor)), None)
    drained_since = None if drained_stamp is None else parse_stamp(drained_stamp)
    if drained_since is None:
        if drained_stamp is not None:
            warnings.append(
                f"{deployment.namespace}/{deployment.name}: {DRAINED_SINCE} "
                f"{drained_stamp!r} is not an RFC 3339 time; the drain starts now"
            )
        drained_since = cycle.stamp_at
        color.change(
            DRAINED_SINCE,
            cycle.stamp,
            Reason.DRAIN_STARTED,
            REASONS[Reason.DRAIN_STARTED].words,
        )
    color.drained_since = drained_since
    retired_at = color.retired_at
    assert retired_at is not None
    now = cycle.now
    held_until = later(drained_since, knobs.drain_hold, beyond=Beyond.NEVER)
    if now < held_until:
        return Ruling(
            (State.DRAINING, DrainHold(value, floor, drained_since, knobs.drain_hold)), held_until
        )
    old_enough = later(retired_at, knobs.min_retired_age, beyond=Beyond.NEVER)
    if now < old_enough:
        return Ruling(
            (State.DRAINING, MinRetiredAge(retired_at, knobs.min_retired_age)), old_enough
        )
    return Ruling((State.DRAINED, Drained(value, floor, drained_since)), None)
