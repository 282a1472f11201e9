"""`Planner`: `plan()` for a controller's loop, reusing each app's plan of the previous cycle while
nothing it was computed from has changed and its `valid_until` has not passed. New connections
that cross nothing the plan was decided on (a color's plan only shows them, or a retired color's
figure stays known and on its side of the floor) are written into the reused plan."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from rainbowd.core.memos import RuleMemo
from rainbowd.core.model import (
    DRAINED_SINCE,
    NO_SERIES,
    AppPlan,
    ColorPlan,
    Connections,
    Deployment,
    Namespace,
    Plan,
    PodConnections,
    Service,
    Snapshot,
    State,
)
from rainbowd.core.notes import AboveFloor, Drained, DrainHold, Note
from rainbowd.core.planner.assess import Member, effective_connections, group
from rainbowd.core.planner.cycle import Cycle, aware
from rainbowd.core.planner.planning import plan_app, whole_plan
from rainbowd.core.policy import Policy


class _AppMemo:
    """One app's plan of the last cycle and everything it was computed from."""

    __slots__ = (
        "app",
        "keys",
        "members",
        "plan",
        "pods",
        "positions",
        "raw",
        "reusable",
        "taken",
        "valid_until",
        "warnings",
    )

    def __init__(
        self,
        app: str,
        members: tuple[Member, ...],
        keys: tuple[tuple[str, str], ...],
        raw: tuple[Connections | None, ...],
        pods: tuple[PodConnections | None, ...] | None,
        plan: AppPlan,
        warnings: tuple[str, ...],
        valid_until: datetime,
        *,
        reusable: bool,
    ) -> None:
        self.app = app
        self.members = members  # in the order the namespace lists the Deployments
        self.keys = keys  # each member's (app, color), the connections key
        self.raw = raw  # the connections each color read, None for no series
        # The per-pod figures each color read (None: none), which only consolidation decides
        # on; None when no rule of the app consolidates.
        self.pods = pods
        self.plan = plan
        self.warnings = warnings
        self.valid_until = valid_until
        # An app with actions changes once they are applied; one without stays as it is.
        self.reusable = reusable
        # Computed when first needed: each member's index in plan.colors, and how new
        # connections of it are taken into the plan without planning it again (`_Take`).
        self.positions: tuple[int, ...] | None = None
        self.taken: tuple[_Take, ...] = ()

    def reuse(
        self,
        now: datetime,
        connections: Mapping[tuple[str, str], Connections],
        pods: Mapping[tuple[str, str], PodConnections],
    ) -> _AppMemo | None:
        """This memo (or one with new connections written in) if the plan still holds, else
        None. Per-pod figures (of colors due a consolidation step, and of draining colors,
        for their pods' deletion costs) count only where a rule of the app consolidates."""
        if not self.reusable or now >= self.valid_until:
            return None
        if self.pods is not None and tuple(map(pods.get, self.keys)) != self.pods:
            return None
        raw = self.raw
        get = connections.get
        # The common case in one comparison: every color's connections equal to last cycle's.
        new_raw = tuple(map(get, self.keys))
        if new_raw == raw:
            return self
        if self.positions is None:
            self._learn_positions()
        assert self.positions is not None
        positions = self.positions
        taken = self.taken
        colors: list[ColorPlan] | None = None
        for i, after in enumerate(new_raw):
            before = raw[i]
            if after is before or _equal(after, before):
                continue
            take = taken[i]
            if take is _Take.REPLAN:
                return None  # before copying anything
            if colors is None:
                colors = list(self.plan.colors)
            ready = self.members[i][0].ready_replicas
            shown = NO_SERIES if after is None else effective_connections(after, ready)
            written = _written_in(take, colors[positions[i]], shown)
            if written is None:
                return None
            colors[positions[i]] = written
        if colors is None:
            return self  # equal, if not identical, to what was planned on
        patched = _AppMemo(
            self.app,
            self.members,
            self.keys,
            new_raw,
            self.pods,
            AppPlan._make(_fields(self.plan, (_COLORS, tuple(colors)))),
            self.warnings,
            self.valid_until,
            reusable=True,
        )
        patched.positions = positions
        patched.taken = taken
        return patched

    def _learn_positions(self) -> None:
        """Each member's index in plan.colors, and how new connections of it are taken in."""
        plan = self.plan
        index = {color.name: i for i, color in enumerate(plan.colors)}
        self.positions = tuple([index[member[0].name] for member in self.members])
        blocked = plan.blocked is not None
        self.taken = tuple(
            [
                _take(color, member, blocked=blocked)
                for color, member in zip(
                    [plan.colors[i] for i in self.positions], self.members, strict=True
                )
            ]
        )


class _Take(Enum):
    """How a color's new connections are taken into its app's reused plan."""

    SHOWN = "shown"  # the plan only shows them: written into the color's plan
    FIGURE = "figure"  # a retired color's figure against its floor: `_refigured`
    REPLAN = "replan"  # the app is planned again


_SHOWN_ONLY = frozenset({State.LIVE, State.PENDING})


def _take(color: ColorPlan, member: Member, *, blocked: bool) -> _Take:
    if color.rule is None:
        return _Take.SHOWN
    deployment = member[0]
    # Connections still reset a drain in progress, of a blocked app's colors too, live ones
    # included; and whether a Rollout color holds connections, live or blocked, decides its
    # deadline and the revision limit's warning (deadlines.py).
    if (
        DRAINED_SINCE not in deployment.annotations
        and deployment.rollout is None
        and (blocked or color.state in _SHOWN_ONLY)
    ):
        return _Take.SHOWN
    note = color.note
    if isinstance(note, Note) and isinstance(note.found, _FIGURES):
        return _Take.FIGURE
    return _Take.REPLAN


def _equal(after: Connections | None, before: Connections | None) -> bool:
    return (
        after is not None
        and before is not None
        and after.__class__ is before.__class__
        and after.value == before.value
        and after.series == before.series
        and after.cause == before.cause
    )


def _written_in(take: _Take, color: ColorPlan, shown: Connections) -> ColorPlan | None:
    """`color`'s plan with the connections `shown` written in, or None: plan the app again."""
    if take is _Take.SHOWN:
        return ColorPlan._make(_fields(color, (_CONNECTIONS, shown)))
    if take is _Take.FIGURE:
        return _refigured(color, shown)
    return None


# What assess finds on a known figure of a retired color with replicas, of an app not blocked:
# above the floor, or at or below it (drainHold running, or drained), each carrying the figure.
_FIGURES = (AboveFloor, DrainHold, Drained)


def _refigured(color: ColorPlan, shown: Connections) -> ColorPlan | None:
    """`color`'s plan with the figure `shown` instead of the one it was found on, or None when
    that could change the plan. A retired color's plan depends on its figure only through what
    side of the floor it is on (assess's state, whether a forced scale-down would disconnect
    users, whether consolidation looks at it) and the figure that what was found carries: a
    known figure on the same side changes that figure alone. Unknown, or across the floor
    (falling to zero from above it is across: floors are never negative), the app is planned
    again. A figure recorded in an action or a forced scale-down's note would also depend on
    it, but a plan with actions is never reused, and a forced scale-down held (paused, the
    budget spent) records none."""
    note = color.note
    assert isinstance(note, Note)
    found = note.found
    assert isinstance(found, _FIGURES)
    value = shown.value
    if value is None or (value > found.floor) != (found.connections > found.floor):
        return None
    refound = type(found)._make(_fields(found, (_FIGURE, value)))
    renoted = Note._make(_fields(note, (_FOUND, refound)))
    return ColorPlan._make(_fields(color, (_CONNECTIONS, shown), (_NOTE, renoted)))


# The indexes of the fields written into a reused plan.
_COLORS = AppPlan._fields.index("colors")
_CONNECTIONS = ColorPlan._fields.index("connections")
_NOTE = ColorPlan._fields.index("note")
_FOUND = Note._fields.index("found")
_FIGURE = 0  # each of _FIGURES leads with its `connections`
assert all(figure._fields[_FIGURE] == "connections" for figure in _FIGURES)


def _fields(record: tuple[Any, ...], *changes: tuple[int, object]) -> list[Any]:
    """The named tuple `record`'s fields with each (field index, value) of `changes` set, for
    its class's `_make`: its `_replace`, without the keyword handling that makes that cost
    several times a constructor's (the figures of thousands of colors are written into
    reused plans every cycle)."""
    fields = list(record)
    for index, value in changes:
        fields[index] = value
    return fields


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
    are equal, the app's connections are equal or cross nothing it was decided on (they are
    written into it), its per-pod figures are equal where a rule of the app consolidates, the
    plan had no actions, and `now` is still before the next instant at which time alone would
    change the plan. Not thread-safe: one Planner per loop.
    """

    def __init__(self) -> None:
        self._policy: Policy | None = None
        # Each Deployment's rule, kept while the policy is the same object; the pipeline
        # building the snapshot asks the same memo.
        self.rules = RuleMemo()
        self._now: datetime | None = None
        self._namespaces: dict[str, _NamespaceMemo] = {}

    def plan(self, snapshot: Snapshot, policy: Policy, now: datetime) -> Plan:
        """Decide this cycle's actions for every managed app of the snapshot, as `plan()`."""
        now = aware(now)
        if policy is not self._policy:
            self._policy = policy
            self._namespaces = {}
        elif self._now is not None and now < self._now:
            # Thresholds were computed looking forward: a clock stepping back voids them.
            self._namespaces = {}
        self._now = now
        matcher = self.rules.matcher(policy)
        cycle = Cycle(policy, now, snapshot, rules=matcher)
        apps: list[AppPlan] = []
        warnings: list[str] = []
        before = self._namespaces
        after: dict[str, _NamespaceMemo] = {}
        for key, namespace in snapshot.namespaces.items():
            after[key] = _replan_namespace(cycle, namespace, before.get(key), apps, warnings)
        if after.keys() != before.keys():
            matcher.keep(after.keys())
        self._namespaces = after
        return whole_plan(policy, now, apps, warnings)


def _replan_namespace(
    cycle: Cycle,
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
            entry = memo_entry.reuse(now, connections, namespace.pods)
            if entry is None:
                members = list(memo_entry.members)
                entry = _plan_entry(cycle, namespace, memo_entry.app, members)
            entries.append(entry)
    else:
        previous = {e.app: e for e in memo.apps} if memo is not None and same_services else {}
        for app, members in group(cycle, namespace):
            before = previous.get(app)
            entry = None
            if (
                before is not None
                and len(before.members) == len(members)
                and all(
                    [
                        m.deployment is c.deployment
                        for m, c in zip(before.members, members, strict=True)
                    ]
                )
            ):
                entry = before.reuse(now, connections, namespace.pods)
            if entry is None:
                entry = _plan_entry(cycle, namespace, app, members)
            entries.append(entry)
    for entry in entries:
        apps.append(entry.plan)
        if entry.warnings:
            warnings.extend(entry.warnings)
    return _NamespaceMemo(namespace.name, deployments, services, entries)


def _plan_entry(cycle: Cycle, namespace: Namespace, app: str, members: list[Member]) -> _AppMemo:
    keys = tuple([(app, m.color) for m in members])
    raw = tuple(map(namespace.connections.get, keys))
    # Only consolidation reads per-pod figures, and only with the app's rule's knobs, which
    # are one of its colors' rules'.
    consolidates = any([m.rule is not None and m.rule.knobs.consolidate for m in members])
    pods = tuple(map(namespace.pods.get, keys)) if consolidates else None
    planned = plan_app(cycle, namespace, app, members)
    # An app with actions changes once they are applied; one without stays as it is.
    reusable = not planned.on_others and not any(c.actions for c in planned.plan.colors)
    return _AppMemo(
        app,
        tuple(members),
        keys,
        raw,
        pods,
        planned.plan,
        planned.warnings,
        planned.valid_until,
        reusable=reusable,
    )
