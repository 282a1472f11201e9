"""The planner: `plan(snapshot, policy, now) -> Plan`, the burn-down decisions of one cycle.

Purely computational: a snapshot and a policy in, a plan out, no I/O and no clock. The executor
applies the plan; the reporting module renders it. docs/design.md "What the planner decides" is
the spec.
`Planner` makes the same decisions in a loop, reusing an app's plan while its inputs hold.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from rainbowd.core.model import (
    DISRUPTED_AT,
    DRAINED_SINCE,
    HOLD_REASON,
    HOLD_UNTIL,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    PROTECT,
    RETIRED_AT,
    SCALE_DOWN_GENERATION,
    SCALED_UP_AT,
    Action,
    ActionKind,
    AppPlan,
    BlockReason,
    ColorPlan,
    Connections,
    Deployment,
    Namespace,
    Plan,
    Reason,
    Service,
    Snapshot,
    State,
)
from rainbowd.core.objects import format_time, parse_time
from rainbowd.core.policy import Budget, CleanupAction, Knobs, Policy, Rule
from rainbowd.core.reporting import compact_duration, format_count

# Why an annotation change is made, in the words of the action message.
_STAMP_WORDS: dict[Reason, str] = {
    Reason.OBSERVED_LIVE: "first seen live",
    Reason.LIVE_AGAIN: "live again (rolled back to)",
    Reason.OBSERVED_RETIRED: "first seen retired",
    Reason.MALFORMED_ANNOTATION: "unparsable annotation re-stamped as now",
    Reason.ABANDONED: "pending for longer than abandonedAfter, never promoted",
    Reason.DRAIN_STARTED: "connections at or below the floor",
    Reason.DRAIN_RESET: "the drain must be continuous",
    Reason.SCALED_UP: "scaled back up from 0: a new drain, with the replicas that now exist",
}
_DRAIN_RESET_UNKNOWN = "connections unknown: the drain must be continuous"
_DRAIN_RESET_ABOVE = "connections above the floor: the drain must be continuous"

_NOTE_LIVE = "live: selected by Service "
_NOTE_PENDING = "pending: created after the live color and not selected yet"
_NOTE_UNMANAGED = "no rule matches this Deployment: never touched"
_NOTE_SCALED_DOWN = "scaled down: kept for a fast rollback"
_NOTE_PROTECTED = f"protected ({PROTECT}): never scaled or deleted"
_DRAIN_RESET_SCALED = "scaled down: a drain is only observed with replicas"
# Annotations a live color keeps none of: what is left of a retirement.
_RETIREMENT = (RETIRED_AT, DRAINED_SINCE, ORIGINAL_REPLICAS, SCALED_UP_AT, SCALE_DOWN_GENERATION)
# How people spell yes and no in annotations (YAML 1.1 booleans, as kubectl users type them).
_TRUE_WORDS = frozenset({"true", "yes", "y", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "n", "off", "0"})


@functools.lru_cache(maxsize=1 << 16)
def _parse_stamp(value: str) -> datetime | None:
    """A rainbowd annotation's time, or None when it does not parse.

    Memoized: the same few thousand stamps are read again every cycle, and parsing dominates
    the per-color cost otherwise.
    """
    try:
        return parse_time(value)
    except ValueError:
        return None


def _later(at: datetime, delta: timedelta) -> datetime:
    """`at + delta`, or the end of time when that is past year 9999 (a hand-written stamp like
    9999-12-31 means "hold forever", and must not overflow the cycle)."""
    try:
        return at + delta
    except OverflowError:
        return _FOREVER


class _RuleMatcher:
    """`policy.rule_for` memoized per namespace and per the label values the rules look at.

    Rules only read the keys their selectors name, so Deployments that agree on those keys share
    one answer however many other labels (a color, a version) they carry.
    """

    __slots__ = ("_cache", "_keys", "_policy", "single_key")

    def __init__(self, policy: Policy) -> None:
        keys: dict[str, None] = {}
        for rule in policy.rules:
            for requirement in rule.selector.requirements:
                keys.setdefault(requirement.key, None)
        self._policy = policy
        self._keys = tuple(keys)
        # The common policy selects on one label (or none): the namespace loop reads it inline.
        self.single_key = self._keys[0] if len(self._keys) == 1 else None
        self._cache: dict[tuple[str, object], Rule | None] = {}

    def signature(self, labels: Mapping[str, str]) -> object:
        """What the rules can see of `labels`: equal signatures, same rule."""
        keys = self._keys
        if not keys:
            return None
        if len(keys) == 1:
            return labels.get(keys[0])
        return tuple([labels.get(k) for k in keys])

    def rule_for(self, namespace: str, labels: Mapping[str, str]) -> Rule | None:
        key = (namespace, self.signature(labels))
        try:
            return self._cache[key]
        except KeyError:
            rule = self._cache[key] = self._policy.rule_for(namespace, labels)
            return rule


_FOREVER = datetime.max.replace(tzinfo=UTC)
_SECOND = timedelta(seconds=1)


class _Cycle:
    """What one plan() call computes once and every app reads."""

    __slots__ = (
        "app_label",
        "cluster_budget",
        "cluster_held",
        "cluster_left",
        "color_label",
        "now",
        "paused",
        "rules",
        "snapshot",
        "stamp",
        "stamp_at",
        "until",
    )

    def __init__(self, policy: Policy, now: datetime, snapshot: Snapshot) -> None:
        self.now = now
        self.snapshot = snapshot
        self.cluster_budget = policy.max_disruptions
        # Counted from the whole snapshot the first time an app needs it, then spent.
        self.cluster_left: int | None = None
        # The app being planned had a forced scale-down held by the cluster-wide budget: its
        # plan depends on other apps, so `Planner` plans it again next cycle.
        self.cluster_held = False
        # Stamps are written with whole seconds; deciding with the value as it will read back
        # makes the next cycle see exactly what this one decided on. They round up, against
        # acting: a drain or a retirement stamped up to a second late holds up to a second
        # longer, never shorter.
        stamp_at = now.replace(microsecond=0)
        if stamp_at < now:
            stamp_at += _SECOND
        self.stamp = format_time(stamp_at)
        self.stamp_at = parse_time(self.stamp)
        self.app_label = policy.app_label
        self.color_label = policy.color_label
        self.paused = policy.paused
        self.rules = _RuleMatcher(policy)
        # The earliest instant after `now` at which the app being planned could be planned
        # differently with nothing else changed: a time threshold crossed, or a duration shown
        # in a note reading differently. `Planner` reuses an app's plan until then.
        self.until = _FOREVER

    def cluster_budget_left(self) -> int | None:
        """Forced disruptions the cluster-wide budget still allows; None: no such budget."""
        budget = self.cluster_budget
        if budget is None:
            return None
        if self.cluster_left is None:
            used = 0
            for namespace in self.snapshot.namespaces.values():
                used += len(_recent_disruptions(self.now, namespace.deployments, budget))
            self.cluster_left = budget.count - used
        return self.cluster_left

    def crossing(self, at: datetime) -> None:
        """A decision of the app being planned changes when `now` reaches `at`."""
        if at < self.until:
            self.until = at

    def shown(self, since: datetime) -> None:
        """A note of the app being planned shows `compact_duration(now - since)`."""
        elapsed = self.now - since
        if elapsed.days < 0:
            # A stamp in the future: not worth modelling, the plan holds for this instant only.
            self.until = self.now
            return
        seconds = elapsed.days * 86400 + elapsed.seconds
        # compact_duration shows the two largest units: hours once past a day, minutes past an
        # hour, else seconds; the text cannot change before the next multiple of that unit.
        unit = 3600 if seconds >= 86400 else 60 if seconds >= 3600 else 1
        self.crossing(_later(since, timedelta(seconds=(seconds // unit + 1) * unit)))


class _Color:
    """One color while its app is being planned; becomes a ColorPlan.

    No __slots__: class-level defaults let the constructor set only three fields, and building
    10,000 of these per cycle is a visible share of the planner's time budget.
    """

    state = State.RETIRED
    note = ""
    connections: Connections = Connections.unknown("no series for this color")
    retired_at: datetime | None = None
    drained_since: datetime | None = None
    protected = False
    guard = ""  # why it is protected: the note's first words
    changes: dict[str, str | None] | None = None
    reasons: list[tuple[Reason, str]] | None = None
    cleanup: Reason | None = None
    kind: ActionKind | None = None
    why = ""
    disruptive = False
    held: Reason | None = None
    disrupted = ""  # a forced scale-down of users spends the budget: the disrupted-at stamp

    def __init__(
        self, deployment: Deployment, rule: Rule | None, live: str | None, color: str
    ) -> None:
        self.deployment = deployment
        self.rule = rule
        self.live = live  # the name of a Service selecting it, or None
        self.color = color

    def change(self, key: str, value: str | None, reason: Reason, why: str) -> None:
        if self.changes is None:
            self.changes = {}
            self.reasons = []
        self.changes[key] = value
        assert self.reasons is not None
        self.reasons.append((reason, why))


def _service_index(
    services: Sequence[Service], app_label: str
) -> tuple[dict[str, list[Service]], list[Service]]:
    """Services by the app their selector names; the rest must be tried against every color.

    A selector naming app X can only match pod templates of app X, so each color is compared
    with its own app's Services, not with every Service of the namespace.
    """
    by_app: dict[str, list[Service]] = {}
    other: list[Service] = []
    for service in services:
        selector = service.selector
        if not selector:
            continue  # selects no pods (an ExternalName or a manually managed Endpoints)
        app = selector.get(app_label)
        if app is None:
            other.append(service)
        else:
            by_app.setdefault(app, []).append(service)
    return by_app, other


def _by_color(by_app: Mapping[str, list[Service]], color_label: str) -> dict[str, dict[str, str]]:
    """For apps whose Services all select exactly the app and a color (the rainbow deploy's own
    shape): the first Service selecting each color, by color. Such a selector matches a pod
    template of the app iff the colors are equal, so no label comparison is needed."""
    simple: dict[str, dict[str, str]] = {}
    for app, services in by_app.items():
        if all(len(s.selector) == 2 and color_label in s.selector for s in services):
            names: dict[str, str] = {}
            for service in services:
                names.setdefault(service.selector[color_label], service.name)
            simple[app] = names
    return simple


def _effective_connections(connections: Connections, ready: int) -> Connections:
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


def _cleanup_kind(action: CleanupAction) -> ActionKind:
    return ActionKind.DELETE if action is CleanupAction.DELETE else ActionKind.SCALE


def plan(snapshot: Snapshot, policy: Policy, now: datetime) -> Plan:
    """Decide this cycle's actions for every managed app of the snapshot."""
    now = _aware(now)
    cycle = _Cycle(policy, now, snapshot)
    apps: list[AppPlan] = []
    warnings: list[str] = []
    for namespace in snapshot.namespaces.values():
        _plan_namespace(cycle, namespace, apps, warnings)
    return _whole_plan(policy, now, apps, warnings)


def _aware(now: datetime) -> datetime:
    """`now`, taken as UTC when it has no time zone."""
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _whole_plan(policy: Policy, now: datetime, apps: list[AppPlan], warnings: list[str]) -> Plan:
    """The Plan of every app planned this cycle, for `plan()` and `Planner` alike."""
    apps.sort(key=_by_namespace_and_app)
    return Plan(
        now=now,
        apps=tuple(apps),
        dry_run=policy.dry_run,
        paused=policy.paused,
        warnings=tuple(warnings),
    )


def _plan_namespace(
    cycle: _Cycle, namespace: Namespace, apps: list[AppPlan], warnings: list[str]
) -> None:
    for app, colors in _group(cycle, namespace):
        apps.append(_plan_app(cycle, namespace, app, colors, warnings))


def _group(cycle: _Cycle, namespace: Namespace) -> list[tuple[str, list[_Color]]]:
    """The namespace's managed apps, each with its colors, rule and live Service resolved."""
    app_label = cycle.app_label
    color_label = cycle.color_label
    by_app, other = _service_index(namespace.services, app_label)
    simple = {} if other else _by_color(by_app, color_label)
    rules = cycle.rules
    single_key = rules.single_key
    rule_for = rules.rule_for
    ns = namespace.name
    # Rules per label signature in this namespace: most Deployments share a handful.
    seen: dict[object, Rule | None] = {}
    groups: dict[str, list[_Color]] = {}
    managed: set[str] = set()
    for deployment in namespace.deployments:
        labels = deployment.template_labels
        app = labels.get(app_label)
        if app is None:
            continue
        color_name = labels.get(color_label)
        if color_name is None:
            continue
        own = deployment.labels
        signature = own.get(single_key) if single_key is not None else rules.signature(own)
        try:
            rule = seen[signature]
        except KeyError:
            rule = seen[signature] = rule_for(ns, own)
        if rule is not None:
            managed.add(app)
        live = None
        names = simple.get(app)
        if names is not None:
            live = names.get(color_name)
        else:
            services = by_app.get(app)
            if other:
                services = services + other if services else other
            if services:
                items = labels.items()
                for service in services:
                    if service.selector.items() <= items:
                        live = service.name
                        break
        color = _Color(deployment, rule, live, color_name)
        group = groups.get(app)
        if group is None:
            groups[app] = [color]
        else:
            group.append(color)
    return [(app, colors) for app, colors in groups.items() if app in managed]


def _plan_app(
    cycle: _Cycle, namespace: Namespace, app: str, colors: list[_Color], warnings: list[str]
) -> AppPlan:
    now = cycle.now
    cycle.until = _FOREVER
    cycle.cluster_held = False
    newest_live: datetime | None = None
    blocked: BlockReason | None = None
    blocked_by = ""
    # The app's knobs: the newest live color's rule, else the newest managed color's.
    live_rule: _Color | None = None
    any_rule: _Color | None = None
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
    rule = owner.rule
    knobs = rule.knobs
    if newest_live is None:
        blocked = BlockReason.NO_LIVE_COLOR
        message = "blocked: no Service selects any color; old colors may be needed for a rollback"
    elif blocked is not None:
        message = f"blocked: live color {blocked_by} is not Available"
    else:
        message = ""

    connections = namespace.connections
    abandoned_after = knobs.abandoned_after
    evaluate = blocked is None
    retired: list[_Color] = []
    for color in colors:
        deployment = color.deployment
        annotations = deployment.annotations
        raw = connections.get((app, color.color))
        if raw is None:
            color.connections = _NO_SERIES
        else:
            value = raw.value
            series = raw.series
            # Fast path for the common case, a finite count with full coverage (inf - inf
            # and nan - nan are nan, which is not 0).
            if (
                value is not None
                and value - value == 0
                and (series is None or series >= deployment.ready_replicas)
            ):
                color.connections = raw
            else:
                color.connections = _effective_connections(raw, deployment.ready_replicas)
        if color.live is not None:
            color.state = State.LIVE
            color.note = _NOTE_LIVE + color.live
            if (
                evaluate
                and color.rule is not None
                # Stamped live and nothing of a retirement left: the steady case, nothing to do.
                and (LIVE_AT not in annotations or any(k in annotations for k in _RETIREMENT))
            ):
                _plan_live(cycle, color, annotations)
            continue
        abandoned = False
        if (
            LIVE_AT not in annotations
            and (newest_live is None or deployment.created_at >= newest_live)
            and (RETIRED_AT not in annotations or not _retired_by_stamp(cycle, annotations))
        ):
            if not evaluate or color.rule is None or abandoned_after is None:
                color.state = State.PENDING
                color.note = _NOTE_PENDING
                continue
            abandoned_at = _later(deployment.created_at, abandoned_after)
            if now < abandoned_at:
                cycle.crossing(abandoned_at)
                color.state = State.PENDING
                color.note = _NOTE_PENDING
                continue
            abandoned = True
        stamp = annotations.get(RETIRED_AT)
        retired_at = None if stamp is None else _parse_stamp(stamp)
        if color.rule is None:
            color.note = _NOTE_UNMANAGED
            color.retired_at = retired_at
            continue
        if retired_at is None:
            _retired_now(cycle, color, stamp, abandoned, warnings, stamp_it=evaluate)
        else:
            color.retired_at = retired_at
        if _GUARDS.intersection(annotations):
            _guard(cycle, color, annotations, knobs, warnings, stamp_it=evaluate)
        disrupted = annotations.get(DISRUPTED_AT)
        if (
            disrupted is not None
            and evaluate
            and not all(_parse_stamp(t) is not None for t in disrupted.split() or [disrupted])
        ):
            # Counted as a disruption now (the budget's conservative side), and re-stamped so
            # its window starts once, not again every cycle.
            warnings.append(
                f"{deployment.namespace}/{deployment.name}: {DISRUPTED_AT} {disrupted!r} is not "
                "an RFC 3339 time; counted as a disruption now and re-stamped"
            )
            color.change(
                DISRUPTED_AT,
                cycle.stamp,
                Reason.MALFORMED_ANNOTATION,
                _STAMP_WORDS[Reason.MALFORMED_ANNOTATION],
            )
        if (
            deployment.replicas > 0
            and ORIGINAL_REPLICAS in annotations
            and annotations.get(SCALE_DOWN_GENERATION) != str(deployment.generation)
        ):
            annotations = _scaled_back_up(cycle, color, annotations, knobs)
        if not evaluate:
            color.state = State.PROTECTED if color.protected else State.RETIRED
            color.note = f"{message}; not evaluated"
            if deployment.replicas > 0 and DRAINED_SINCE in annotations:
                # Blocked or not, every sample counts: a drain is continuous or it is not one.
                _reset_drain(color, knobs)
            continue
        if deployment.replicas == 0:
            # Scaled down: nothing to evaluate.
            if color.protected:
                color.state = State.PROTECTED
                color.note = color.guard
            else:
                color.state = State.SCALED_DOWN
                color.note = _NOTE_SCALED_DOWN
            if DRAINED_SINCE in annotations and ORIGINAL_REPLICAS not in annotations:
                # Scaled down by hand (rainbowd's own scale-downs are recognised by
                # original-replicas when scaled back up): a later scale-up starts a new drain.
                color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_SCALED)
        else:
            _evaluate_retired(cycle, color, knobs, annotations, warnings)
        retired.append(color)

    if evaluate:
        _decide_cleanups(cycle, colors, retired, knobs)
    name = namespace.name
    return _new_app_plan(
        AppPlan, (name, app, rule.name, blocked, message, _color_plans(cycle, name, app, colors))
    )


_NO_SERIES = Connections.unknown("no series for this color")


def _retired_by_stamp(cycle: _Cycle, annotations: Mapping[str, str]) -> bool:
    """Whether the retired-at stamp of a color that would otherwise be pending retires it: only
    a time already past does. A pending color is a rollout in progress; a garbled or future
    stamp must not make it a candidate for scaling down."""
    at = _parse_stamp(annotations[RETIRED_AT])
    if at is None:
        return False
    if at > cycle.now:
        cycle.crossing(at)
        return False
    return True


def _plan_live(cycle: _Cycle, color: _Color, annotations: Mapping[str, str]) -> None:
    again = any(key in annotations for key in _RETIREMENT)
    if LIVE_AT not in annotations:
        reason = Reason.LIVE_AGAIN if again else Reason.OBSERVED_LIVE
        color.change(LIVE_AT, cycle.stamp, reason, _STAMP_WORDS[reason])
    if again:
        for key in _RETIREMENT:
            if key in annotations:
                color.change(key, None, Reason.LIVE_AGAIN, _STAMP_WORDS[Reason.LIVE_AGAIN])


_GUARDS = frozenset({PROTECT, HOLD_UNTIL, SCALED_UP_AT})


def _guard(
    cycle: _Cycle,
    color: _Color,
    annotations: Mapping[str, str],
    knobs: Knobs,
    warnings: list[str],
    *,
    stamp_it: bool,
) -> None:
    """Protection by annotation: protect, a hold, the grace after a scale-up. Any doubt about a
    value protects: a typo must never get a color scaled down that someone meant to keep."""
    where = f"{color.deployment.namespace}/{color.deployment.name}"
    guards: list[str] = []
    protect = annotations.get(PROTECT)
    if protect is not None:
        word = protect.strip().lower()
        if word not in _FALSE_WORDS:
            guards.append(_NOTE_PROTECTED)
            if word not in _TRUE_WORDS:
                warnings.append(
                    f"{where}: {PROTECT} {protect!r} is not a spelling of true or false; "
                    "treated as protected"
                )
    hold = annotations.get(HOLD_UNTIL)
    if hold is not None:
        until = _parse_stamp(hold)
        reason = annotations.get(HOLD_REASON, "").strip()
        why = f": {' '.join(reason.split())}" if reason else ""
        if until is None:
            guards.append(f"held ({HOLD_UNTIL} {hold!r} is not an RFC 3339 time){why}")
            warnings.append(
                f"{where}: {HOLD_UNTIL} {hold!r} is not an RFC 3339 time; held until it is fixed"
            )
        elif cycle.now < until:
            cycle.crossing(until)
            guards.append(f"held until {format_time(until)} ({HOLD_UNTIL}){why}")
    scaled_up = annotations.get(SCALED_UP_AT)
    if scaled_up is not None:
        at = _parse_stamp(scaled_up)
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
                    _STAMP_WORDS[Reason.MALFORMED_ANNOTATION],
                )
            else:
                cycle.crossing(cycle.stamp_at + _SECOND)
        grace_ends = _later(at, knobs.scale_up_grace)
        if cycle.now < grace_ends:
            cycle.crossing(grace_ends)
            guards.append(
                f"scaled back up at {format_time(at)}: held for scaleUpGrace "
                f"{compact_duration(knobs.scale_up_grace)}"
            )
    if guards:
        color.protected = True
        color.guard = "; ".join(guards)


def _scaled_back_up(
    cycle: _Cycle, color: _Color, annotations: Mapping[str, str], knobs: Knobs
) -> Mapping[str, str]:
    """A color rainbowd scaled to 0 (it wrote original-replicas) has replicas again: someone is
    rolling back to it. Whatever was observed at 0 replicas says nothing about the users the
    new pods will hold, so the drain starts over, and no rule acts during the grace period.
    The annotations as they will read once this cycle's changes are written."""
    why = _STAMP_WORDS[Reason.SCALED_UP]
    cleared = (DRAINED_SINCE, ORIGINAL_REPLICAS, SCALE_DOWN_GENERATION)
    for key in cleared:
        if key in annotations:
            color.change(key, None, Reason.SCALED_UP, why)
    color.change(SCALED_UP_AT, cycle.stamp, Reason.SCALED_UP, why)
    guard = (
        f"scaled back up from 0 to {color.deployment.replicas}: a new drain starts; held for "
        f"scaleUpGrace {compact_duration(knobs.scale_up_grace)}"
    )
    if knobs.scale_up_grace > timedelta(0):
        cycle.crossing(_later(cycle.stamp_at, knobs.scale_up_grace))
        color.protected = True
        color.guard = f"{color.guard}; {guard}" if color.guard else guard
    after = {k: v for k, v in annotations.items() if k not in cleared}
    after[SCALED_UP_AT] = cycle.stamp
    return after


def _reset_drain(color: _Color, knobs: Knobs) -> None:
    """Clears drained-since on a sample above the floor or unknown (the app may be blocked)."""
    value = color.connections.value
    if value is None:
        color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_UNKNOWN)
    elif value > knobs.connection_floor:
        color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_ABOVE)


def _retired_now(
    cycle: _Cycle,
    color: _Color,
    stamp: str | None,
    abandoned: bool,
    warnings: list[str],
    *,
    stamp_it: bool,
) -> None:
    """A managed retired color whose retired-at `stamp` is missing or unparsable: retired now."""
    if stamp is None:
        color.retired_at = cycle.stamp_at
        if stamp_it:
            reason = Reason.ABANDONED if abandoned else Reason.OBSERVED_RETIRED
            color.change(RETIRED_AT, cycle.stamp, reason, _STAMP_WORDS[reason])
        else:
            cycle.crossing(cycle.stamp_at + _SECOND)  # "now", to the second, is shown
        return
    # Never "long ago": a typo must not get a color holding connections scaled down early.
    color.retired_at = cycle.stamp_at
    cycle.crossing(cycle.stamp_at + _SECOND)
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
            _STAMP_WORDS[Reason.MALFORMED_ANNOTATION],
        )


def _evaluate_retired(
    cycle: _Cycle,
    color: _Color,
    knobs: Knobs,
    annotations: Mapping[str, str],
    warnings: list[str],
) -> None:
    """State and drain bookkeeping of a retired color with replicas, of an app not blocked."""
    deployment = color.deployment
    max_age = knobs.max_retired_age
    if max_age is not None and not color.protected:
        assert color.retired_at is not None
        overdue_at = _later(color.retired_at, max_age)
        if overdue_at >= cycle.now:  # not overdue yet, but any later instant would be
            cycle.crossing(overdue_at)
    connections = color.connections
    assert connections is not None
    value = connections.value
    floor = knobs.connection_floor
    drained_stamp = annotations.get(DRAINED_SINCE)
    if value is None:
        color.state = State.UNKNOWN_CONNECTIONS
        color.disruptive = True
        note = f"connections unknown ({connections.cause}): not evaluated for drain"
        if drained_stamp is not None:
            color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_UNKNOWN)
    elif value > floor:
        color.state = State.DRAINING
        color.disruptive = True
        note = f"draining: {format_count(value)} connections > floor {floor}"
        if drained_stamp is not None:
            color.change(DRAINED_SINCE, None, Reason.DRAIN_RESET, _DRAIN_RESET_ABOVE)
    else:
        drained_since = None if drained_stamp is None else _parse_stamp(drained_stamp)
        if drained_since is None:
            if drained_stamp is not None:
                warnings.append(
                    f"{deployment.namespace}/{deployment.name}: {DRAINED_SINCE} "
                    f"{drained_stamp!r} is not an RFC 3339 time; the drain starts now"
                )
            drained_since = cycle.stamp_at
            color.change(
                DRAINED_SINCE, cycle.stamp, Reason.DRAIN_STARTED, _STAMP_WORDS[Reason.DRAIN_STARTED]
            )
        color.drained_since = drained_since
        assert color.retired_at is not None
        now = cycle.now
        held_for = now - drained_since
        retired_for = now - color.retired_at
        if held_for < knobs.drain_hold:
            cycle.crossing(_later(drained_since, knobs.drain_hold))
            cycle.shown(drained_since)
            color.state = State.DRAINING
            note = (
                f"draining: {format_count(value)} <= floor {floor} for "
                f"{compact_duration(held_for)} of drainHold {compact_duration(knobs.drain_hold)}"
            )
        elif retired_for < knobs.min_retired_age:
            cycle.crossing(_later(color.retired_at, knobs.min_retired_age))
            cycle.shown(color.retired_at)
            color.state = State.DRAINING
            note = (
                f"draining: drained, but retired for {compact_duration(retired_for)} of "
                f"minRetiredAge {compact_duration(knobs.min_retired_age)}"
            )
        else:
            cycle.shown(drained_since)
            color.state = State.DRAINED
            note = (
                f"drained: {format_count(value)} <= floor {floor} for {compact_duration(held_for)}"
            )
            if not color.protected:
                color.cleanup = Reason.DRAINED
                color.why = note
    if color.protected:
        color.state = State.PROTECTED
        note = f"{color.guard}; {note}"
    color.note = note


def _cleanup_due(now: datetime, colors: list[_Color], retired: list[_Color], knobs: Knobs) -> bool:
    """Whether any cleanup is due; most apps, most cycles, have none, and this says so cheaply."""
    max_age = knobs.max_retired_age
    scaled = 0
    for color in retired:
        if color.cleanup is not None:
            return True
        if color.protected:
            continue
        if color.deployment.replicas == 0:
            scaled += 1
            if (
                knobs.action is CleanupAction.DELETE
                and DISRUPTED_AT in color.deployment.annotations
            ):
                return True
        elif (
            max_age is not None
            and color.retired_at is not None
            and now - color.retired_at > max_age
        ):
            return True
    if knobs.action is CleanupAction.SCALE_THEN_DELETE and scaled > knobs.keep_scaled_down:
        return True
    max_colors = knobs.max_colors
    if max_colors is None:
        return False
    running = 0
    for color in colors:
        if color.deployment.replicas > 0:
            running += 1
    return running > max_colors


def _decide_cleanups(
    cycle: _Cycle, colors: list[_Color], retired: list[_Color], knobs: Knobs
) -> None:
    """Forced rules, the disruption budget, the cleanup kind, keepScaledDown, paused."""
    now = cycle.now
    if not _cleanup_due(now, colors, retired, knobs):
        return
    kind = _cleanup_kind(knobs.action)
    budget = knobs.max_disruptions
    app_left: int | None = None  # counted when first needed: most apps never force anything
    floor_words = f"floor {knobs.connection_floor}"
    for color in retired:
        if color.cleanup is not None:
            color.kind = kind

    def force(color: _Color, reason: Reason, why: str) -> None:
        nonlocal app_left
        # Paused, nothing is done: no budget is spent (the pass at the end holds it all).
        if color.disruptive and not cycle.paused:
            if app_left is None:
                recent = _recent_disruptions(now, [c.deployment for c in colors], budget)
                for at in recent:
                    cycle.crossing(_later(at, budget.per))
                app_left = budget.count - len(recent)
            cluster_left = cycle.cluster_budget_left()
            spent = None
            if app_left <= 0:
                spent = f"maxDisruptions ({budget}) is spent for this app"
            elif cluster_left is not None and cluster_left <= 0:
                spent = f"the cluster-wide maxDisruptions ({cycle.cluster_budget}) is spent"
                cycle.cluster_held = True
            if spent is not None:
                color.held = reason
                color.note = f"{color.note}; held: {why}, but {spent}"
                return
            app_left -= 1
            if cluster_left is not None:
                cycle.cluster_left = cluster_left - 1
            color.disrupted = _disruption_record(cycle, color.deployment, budget)
            value = color.connections.value if color.connections is not None else None
            if value is None:
                why = f"{why} (connections unknown)"
            else:
                why = f"{why} (still holds {format_count(value)} connections > {floor_words})"
        color.cleanup = reason
        color.kind = kind
        color.why = why
        color.note = f"{color.note}; forced: {why}"

    max_age = knobs.max_retired_age
    if max_age is not None:
        overdue = [
            c
            for c in retired
            if c.cleanup is None
            and not c.protected
            and c.deployment.replicas > 0
            and c.retired_at is not None
            and now - c.retired_at > max_age
        ]
        overdue.sort(key=_retired_order)
        for color in overdue:
            assert color.retired_at is not None
            cycle.shown(color.retired_at)
            force(
                color,
                Reason.MAX_RETIRED_AGE,
                f"retired for {compact_duration(now - color.retired_at)} > maxRetiredAge "
                f"{compact_duration(max_age)}",
            )

    max_colors = knobs.max_colors
    if max_colors is not None:
        running = 0
        for color in colors:
            if color.deployment.replicas > 0 and color.cleanup is None:
                running += 1
        if running > max_colors:
            excess = [
                c
                for c in retired
                if c.cleanup is None
                and c.held is None
                and not c.protected
                and c.deployment.replicas > 0
            ]
            excess.sort(key=_retired_order)
            for color in excess:
                if running <= max_colors:
                    break
                force(
                    color,
                    Reason.MAX_COLORS,
                    f"{running} colors with replicas > maxColors {max_colors}",
                )
                if color.cleanup is not None:
                    running -= 1

    if knobs.action is CleanupAction.SCALE_THEN_DELETE:
        _keep_scaled_down(retired, knobs.keep_scaled_down)
    elif knobs.action is CleanupAction.DELETE:
        _delete_recorded(cycle, retired, budget)
    _keep_disruption_records(cycle, retired, budget)

    if cycle.paused:
        for color in retired:
            if color.cleanup is not None and color.kind is not None:
                verb = "scale to 0" if color.kind is ActionKind.SCALE else "delete"
                color.held = color.cleanup
                color.note = f"paused: would {verb} ({color.cleanup}); {color.note}"
                color.cleanup = None
                color.kind = None


def _recent_disruptions(
    now: datetime, deployments: Sequence[Deployment], budget: Budget
) -> list[datetime]:
    """The disrupted-at stamps within the budget's window (a malformed one counts as now)."""
    recent: list[datetime] = []
    for deployment in deployments:
        record = deployment.annotations.get(DISRUPTED_AT)
        if record is None:
            continue
        # One time per disruption, space-separated: a color disrupted twice within the window
        # (scaled back up, then forced down again) counts twice.
        for stamp in record.split() or [record]:
            at = _parse_stamp(stamp)
            if at is None:
                recent.append(now)
            elif _later(at, budget.per) > now:
                recent.append(at)
    return recent


def _disruption_record(cycle: _Cycle, deployment: Deployment, budget: Budget) -> str:
    """The disrupted-at value after one more disruption now: the times still counting, then
    now."""
    kept = [format_time(at) for at in _recent_disruptions(cycle.now, (deployment,), budget)]
    return " ".join([*kept, cycle.stamp])


def _record_ends(now: datetime, deployment: Deployment, budget: Budget) -> datetime | None:
    """When `deployment`'s disrupted-at stamp stops counting, if it still counts now."""
    recent = _recent_disruptions(now, (deployment,), budget)
    return _later(max(recent), budget.per) if recent else None


def _keep_disruption_records(cycle: _Cycle, retired: list[_Color], budget: Budget) -> None:
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
            _later(cycle.now, budget.per)
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
            color.note = (
                f"{color.note}; kept until {format_time(ends)}: it records a disruption "
                "counted by maxDisruptions"
            )


def _delete_recorded(cycle: _Cycle, retired: list[_Color], budget: Budget) -> None:
    """With action delete: colors scaled down only to record a disruption are deleted once it
    no longer counts (_keep_disruption_records holds them until then)."""
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


def _retired_order(color: _Color) -> tuple[datetime, datetime, str]:
    assert color.retired_at is not None
    return (color.retired_at, color.deployment.created_at, color.deployment.name)


def _keep_scaled_down(retired: list[_Color], keep: int) -> None:
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


# ColorPlan(...) goes through a generated Python __new__ with fifteen parameters; building the
# tuple directly costs a third of that, for 10,000 colors a cycle.
_new_color_plan = cast(Callable[[type[ColorPlan], tuple[Any, ...]], ColorPlan], tuple.__new__)
_new_app_plan = cast(Callable[[type[AppPlan], tuple[Any, ...]], AppPlan], tuple.__new__)
_by_created = operator.attrgetter("deployment.created_at")
_by_namespace_and_app = operator.itemgetter(0, 1)  # AppPlan.namespace, AppPlan.app


def _color_plans(
    cycle: _Cycle, namespace: str, app: str, colors: list[_Color]
) -> tuple[ColorPlan, ...]:
    colors.sort(key=_by_created, reverse=True)
    new = _new_color_plan
    plans: list[ColorPlan] = []
    for color in colors:
        deployment = color.deployment
        rule = color.rule
        plans.append(
            new(
                ColorPlan,
                (
                    namespace,
                    app,
                    color.color,
                    deployment.name,
                    color.state,
                    None if rule is None else rule.name,
                    deployment.replicas,
                    deployment.ready_replicas,
                    color.connections,
                    deployment.created_at,
                    color.retired_at,
                    color.drained_since,
                    color.note,
                    # Most colors, most cycles, have nothing to do.
                    ()
                    if color.kind is None and color.changes is None
                    else _actions(namespace, app, color),
                    color.held,
                ),
            )
        )
    return tuple(plans)


def _actions(namespace: str, app: str, color: _Color) -> tuple[Action, ...]:
    deployment = color.deployment
    name = deployment.name
    color_name = color.color
    value = color.connections.value
    if color.kind is ActionKind.DELETE:
        return (
            Action(
                ActionKind.DELETE,
                namespace,
                name,
                app,
                color_name,
                deployment.uid,
                deployment.resource_version,
                color.cleanup or Reason.KEEP_SCALED_DOWN,
                f"delete {name}: {color.why}",
                {},
                value,
            ),
        )
    if color.kind is ActionKind.SCALE:
        # Bookkeeping rides on the scale-down: a separate annotate would bump the
        # resourceVersion and fail the scale's precondition.
        changes: dict[str, str | None] = dict(color.changes) if color.changes else {}
        if ORIGINAL_REPLICAS not in deployment.annotations or (
            ORIGINAL_REPLICAS in changes and changes[ORIGINAL_REPLICAS] is None
        ):
            # (Cleared this cycle by a scale-up seen with scaleUpGrace 0: written anew.)
            changes[ORIGINAL_REPLICAS] = str(deployment.replicas)
        # This write bumps the generation by one (annotations are part of a Deployment's
        # generation); the /scale that follows bumps it again.
        changes[SCALE_DOWN_GENERATION] = str(deployment.generation + 1)
        if color.disrupted:
            changes[DISRUPTED_AT] = color.disrupted
        return (
            Action(
                ActionKind.SCALE,
                namespace,
                name,
                app,
                color_name,
                deployment.uid,
                deployment.resource_version,
                color.cleanup or Reason.DRAINED,
                f"scale {name} from {deployment.replicas} to 0: {color.why}",
                changes,
                value,
            ),
        )
    if color.changes is not None and color.reasons is not None:
        changes = color.changes
        marker = deployment.annotations.get(SCALE_DOWN_GENERATION)
        if (
            marker == str(deployment.generation)
            and SCALE_DOWN_GENERATION not in changes
            and deployment.replicas > 0
        ):
            # A scale-down cut short: this write bumps the generation, and must carry the
            # marker along, or the next cycle would take the color for one scaled back up.
            changes = {**changes, SCALE_DOWN_GENERATION: str(deployment.generation + 1)}
        return (
            Action(
                ActionKind.ANNOTATE,
                namespace,
                name,
                app,
                color_name,
                deployment.uid,
                deployment.resource_version,
                color.reasons[0][0],
                _annotate_message(name, changes, color.reasons),
                changes,
                value,
            ),
        )
    return ()


def _annotate_message(
    name: str, changes: Mapping[str, str | None], reasons: list[tuple[Reason, str]]
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


# --- steady-state reuse ---------------------------------------------------------------------------


_Member = tuple[Deployment, Rule | None, str | None, str]  # deployment, rule, live Service, color


class _AppMemo:
    """One app's plan of the last cycle and everything it was computed from."""

    __slots__ = (
        "app",
        "keys",
        "members",
        "plan",
        "positions",
        "raw",
        "reusable",
        "shown_only",
        "until",
        "warnings",
    )

    def __init__(
        self,
        app: str,
        members: tuple[_Member, ...],
        keys: tuple[tuple[str, str], ...],
        raw: tuple[Connections | None, ...],
        plan: AppPlan,
        warnings: tuple[str, ...],
        until: datetime,
        *,
        reusable: bool,
    ) -> None:
        self.app = app
        self.members = members  # in the order the namespace lists the Deployments
        self.keys = keys  # each member's (app, color), the connections key
        self.raw = raw  # the connections each color read, None for no series
        self.plan = plan
        self.warnings = warnings
        self.until = until
        # An app with actions changes once they are applied; one without stays as it is.
        self.reusable = reusable
        # Computed when first needed: each member's index in plan.colors, and whether the plan
        # only shows its connections (live and pending colors, unmanaged ones, all colors of a
        # blocked app), so that new connections there patch the plan instead of replanning it.
        self.positions: tuple[int, ...] | None = None
        self.shown_only: tuple[bool, ...] = ()

    def reuse(
        self, now: datetime, connections: Mapping[tuple[str, str], Connections]
    ) -> _AppMemo | None:
        """This memo (or one with new connections shown) if the plan still holds, else None."""
        if not self.reusable or now >= self.until:
            return None
        raw = self.raw
        get = connections.get
        # The common case in one comparison: every color's connections equal to last cycle's.
        new_raw = tuple(map(get, self.keys))
        if new_raw == raw:
            return self
        if self.positions is None:
            plan = self.plan
            index = {color.name: i for i, color in enumerate(plan.colors)}
            self.positions = tuple([index[member[0].name] for member in self.members])
            blocked = plan.blocked is not None
            self.shown_only = tuple(
                [
                    # A blocked app's connections still reset a drain in progress.
                    (blocked and DRAINED_SINCE not in member[0].annotations)
                    or color.rule is None
                    or color.state in _SHOWN_ONLY
                    for color, member in zip(
                        [plan.colors[i] for i in self.positions], self.members, strict=True
                    )
                ]
            )
        positions = self.positions
        shown_only = self.shown_only
        colors: list[ColorPlan] | None = None
        for i, after in enumerate(new_raw):
            before = raw[i]
            if after is before or (
                after is not None
                and before is not None
                and after.__class__ is before.__class__
                and after.value == before.value
                and after.series == before.series
                and after.cause == before.cause
            ):
                continue
            if not shown_only[i]:
                return None
            if colors is None:
                colors = list(self.plan.colors)
            ready = self.members[i][0].ready_replicas
            shown = _NO_SERIES if after is None else _effective_connections(after, ready)
            old = colors[positions[i]]
            colors[positions[i]] = _new_color_plan(
                ColorPlan, (*old[:_AT_CONNECTIONS], shown, *old[_AT_CONNECTIONS + 1 :])
            )
        if colors is None:
            return self  # equal, if not identical, to what was planned on
        patched = _AppMemo(
            self.app,
            self.members,
            self.keys,
            new_raw,
            _new_app_plan(AppPlan, (*self.plan[:_AT_COLORS], tuple(colors))),
            self.warnings,
            self.until,
            reusable=True,
        )
        patched.positions = positions
        patched.shown_only = shown_only
        return patched


_SHOWN_ONLY = frozenset({State.LIVE, State.PENDING})
_AT_CONNECTIONS = ColorPlan._fields.index("connections")
_AT_COLORS = AppPlan._fields.index("colors")
assert AppPlan._fields[-1] == "colors"  # the patch rebuilds the tuple with colors last


class _NamespaceMemo:
    __slots__ = ("apps", "deployments", "name", "services")

    def __init__(
        self,
        name: str,
        deployments: tuple[Deployment, ...],
        services: tuple[Service, ...],
        apps: list[_AppMemo],
    ) -> None:
        self.name = name
        self.deployments = deployments
        self.services = services
        self.apps = apps  # the managed apps, in the order plan() visits them


def _same_objects(before: Sequence[object], after: Sequence[object]) -> bool:
    return before is after or (len(before) == len(after) and all(map(operator.is_, before, after)))


class Planner:
    """`plan()` for a controller's loop: reuses each app's plan of the previous cycle while
    nothing it was computed from has changed, and returns exactly what `plan()` would.

    An app's plan is reused when the policy is the same object, the app's Deployments are the
    same objects (the watch cache rebuilds one only when it changes), the namespace's Services
    are equal, the app's connections are equal, the plan had no actions, and `now` is still
    before the next instant at which time alone would change the plan. Not thread-safe: one
    Planner per loop.
    """

    def __init__(self) -> None:
        self._policy: Policy | None = None
        self._rules: _RuleMatcher | None = None
        self._now: datetime | None = None
        self._namespaces: dict[str, _NamespaceMemo] = {}

    def plan(self, snapshot: Snapshot, policy: Policy, now: datetime) -> Plan:
        """Decide this cycle's actions for every managed app of the snapshot, as `plan()`."""
        now = _aware(now)
        if policy is not self._policy or self._rules is None:
            self._policy = policy
            self._rules = _RuleMatcher(policy)
            self._namespaces = {}
        elif self._now is not None and now < self._now:
            # Thresholds were computed looking forward: a clock stepping back voids them.
            self._namespaces = {}
        self._now = now
        cycle = _Cycle(policy, now, snapshot)
        cycle.rules = self._rules
        apps: list[AppPlan] = []
        warnings: list[str] = []
        before = self._namespaces
        after: dict[str, _NamespaceMemo] = {}
        for key, namespace in snapshot.namespaces.items():
            after[key] = _replan_namespace(cycle, namespace, before.get(key), apps, warnings)
        self._namespaces = after
        return _whole_plan(policy, now, apps, warnings)


def _replan_namespace(
    cycle: _Cycle,
    namespace: Namespace,
    memo: _NamespaceMemo | None,
    apps: list[AppPlan],
    warnings: list[str],
) -> _NamespaceMemo:
    now = cycle.now
    connections = namespace.connections
    deployments = namespace.deployments
    services = namespace.services
    if memo is not None and memo.name != namespace.name:
        memo = None
    same_services = memo is not None and (
        _same_objects(memo.services, services) or tuple(memo.services) == tuple(services)
    )
    entries: list[_AppMemo] = []
    if memo is not None and same_services and _same_objects(memo.deployments, deployments):
        # Same Deployments, same Services: same apps, colors, rules and live colors.
        for memo_entry in memo.apps:
            entry = memo_entry.reuse(now, connections)
            if entry is None:
                colors = [_Color(*member) for member in memo_entry.members]
                entry = _plan_entry(cycle, namespace, memo_entry.app, colors)
            entries.append(entry)
    else:
        previous = {e.app: e for e in memo.apps} if memo is not None and same_services else {}
        for app, colors in _group(cycle, namespace):
            before = previous.get(app)
            entry = None
            if (
                before is not None
                and len(before.members) == len(colors)
                and all([m[0] is c.deployment for m, c in zip(before.members, colors, strict=True)])
            ):
                entry = before.reuse(now, connections)
            if entry is None:
                entry = _plan_entry(cycle, namespace, app, colors)
            entries.append(entry)
    for entry in entries:
        apps.append(entry.plan)
        if entry.warnings:
            warnings.extend(entry.warnings)
    return _NamespaceMemo(namespace.name, deployments, services, entries)


def _plan_entry(cycle: _Cycle, namespace: Namespace, app: str, colors: list[_Color]) -> _AppMemo:
    # Read before planning: _plan_app reorders the colors.
    members = tuple([(c.deployment, c.rule, c.live, c.color) for c in colors])
    keys = tuple([(app, c.color) for c in colors])
    raw = tuple(map(namespace.connections.get, keys))
    warnings: list[str] = []
    plan = _plan_app(cycle, namespace, app, colors, warnings)
    reusable = not cycle.cluster_held
    for color in plan.colors:
        if color.actions:
            reusable = False
            break
    return _AppMemo(app, members, keys, raw, plan, tuple(warnings), cycle.until, reusable=reusable)


__all__ = ["Planner", "plan"]
