"""`plan(snapshot, policy, now) -> Plan`, and `plan_app`, the three steps for one app: assess each
color (assess.py), the cleanup rules (rules.py) and what overrides them (resolve.py), a Rollout
color's scale-down-deadline kept ahead while it is held (deadlines.py), then the colors' plans
and actions (actions.py)."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime

from rainbowd.core.model import AppPlan, Namespace, Plan, Snapshot
from rainbowd.core.planner.actions import color_plans
from rainbowd.core.planner.assess import Member, assess_app, group
from rainbowd.core.planner.cycle import Cycle, Thresholds, aware
from rainbowd.core.planner.deadlines import keep_deadlines, warn_revision_limit
from rainbowd.core.planner.resolve import decide_cleanups
from rainbowd.core.planner.rules import Decisions
from rainbowd.core.policy import Policy


def plan(snapshot: Snapshot, policy: Policy, now: datetime) -> Plan:
    """Decide this cycle's actions for every managed app of the snapshot."""
    now = aware(now)
    cycle = Cycle(policy, now, snapshot)
    apps: list[AppPlan] = []
    warnings: list[str] = []
    for namespace in snapshot.namespaces.values():
        for app, members in group(cycle, namespace):
            planned = plan_app(cycle, namespace, app, members)
            apps.append(planned.plan)
            warnings.extend(planned.warnings)
    return whole_plan(policy, now, apps, warnings)


@dataclass(frozen=True, slots=True)
class PlannedApp:
    """One app planned, and how long that holds (as controller-runtime returns RequeueAfter)."""

    plan: AppPlan
    warnings: tuple[str, ...]
    # With nothing else changed, the app is planned the same until then (its notes' words,
    # rendered against the plan's now when read, need not be).
    valid_until: datetime
    # It had a forced scale-down held by the cluster-wide budget: its plan depends on other
    # apps too.
    on_others: bool


def plan_app(cycle: Cycle, namespace: Namespace, app: str, members: list[Member]) -> PlannedApp:
    """Assess, apply the rules, resolve, and build the app's plan."""
    cycle.start_app()
    # Every decision that compares a time is read through it: when the plan next changes.
    thresholds = Thresholds()
    warnings: list[str] = []
    assessed = assess_app(cycle, thresholds, namespace, app, members, warnings)
    decisions: Decisions = {}
    if assessed.blocked is None:
        figures = namespace.pods
        pods = {m.color: figures[(app, m.color)] for m in members if (app, m.color) in figures}
        colors, knobs = assessed.colors, assessed.rule.knobs
        decisions = decide_cleanups(cycle, thresholds, colors, assessed.retired, knobs, pods)
    colors = keep_deadlines(
        cycle, thresholds, assessed.colors, decisions, assessed.rule.knobs, warnings
    )
    decisions = warn_revision_limit(colors, decisions, assessed.rule.knobs, warnings)
    name = namespace.name
    app_plan = AppPlan(
        namespace=name,
        app=app,
        rule=assessed.rule.name,
        blocked=assessed.blocked,
        message=assessed.message,
        colors=color_plans(name, app, colors, decisions, cycle.now),
    )
    return PlannedApp(app_plan, tuple(warnings), thresholds.valid_until, cycle.cluster_held)


_by_namespace_and_app = operator.attrgetter("namespace", "app")


def whole_plan(policy: Policy, now: datetime, apps: list[AppPlan], warnings: list[str]) -> Plan:
    """The Plan of every app planned this cycle, for `plan()` and `Planner` alike."""
    apps.sort(key=_by_namespace_and_app)
    return Plan(
        now=now,
        apps=tuple(apps),
        dry_run=policy.dry_run,
        paused=policy.paused,
        warnings=tuple(warnings),
    )
