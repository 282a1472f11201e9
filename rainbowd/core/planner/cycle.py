"""What one planning cycle computes once and every app reads: the time and the stamps it writes,
the rules matched per label signature (a `RuleMatcher` of rainbowd/core/memos.py), the
cluster-wide disruption budget. And `Ruling`, a decision with the instant time alone would
change it, which `Thresholds` folds into an app's `valid_until`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Generic, NamedTuple, TypeVar

from rainbowd.core.instants import END, Beyond, later
from rainbowd.core.memos import RuleMatcher
from rainbowd.core.model import DISRUPTED_AT, Deployment, Snapshot
from rainbowd.core.objects import format_time, parse_stamp, parse_time
from rainbowd.core.policy import Budget, Policy

FOREVER = END


SECOND = timedelta(seconds=1)
MICROSECOND = timedelta(microseconds=1)


class Cycle:
    """What one plan() call computes once and every app reads."""

    __slots__ = (
        "app_label",
        "cluster_budget",
        "cluster_held",
        "cluster_left",
        "color_label",
        "now",
        "paused",
        "restamped_at",
        "rules",
        "snapshot",
        "stamp",
        "stamp_at",
    )

    def __init__(
        self,
        policy: Policy,
        now: datetime,
        snapshot: Snapshot,
        *,
        rules: RuleMatcher | None = None,
    ) -> None:
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
            stamp_at += SECOND
        self.stamp = format_time(stamp_at)
        self.stamp_at = parse_time(self.stamp)
        # The first instant at which "now", as stamped, reads differently: the threshold of a
        # decision that takes now as a stamped time without writing it.
        self.restamped_at = self.stamp_at + MICROSECOND
        self.app_label = policy.app_label
        self.color_label = policy.color_label
        self.paused = policy.paused
        # The policy's matcher: kept across cycles by `Planner`, fresh for one plan() call.
        self.rules = RuleMatcher(policy) if rules is None else rules

    def start_app(self) -> None:
        """Before planning an app: nothing it depends on is known yet."""
        self.cluster_held = False

    def cluster_budget_left(self) -> int | None:
        """Forced disruptions the cluster-wide budget still allows; None: no such budget."""
        budget = self.cluster_budget
        if budget is None:
            return None
        if self.cluster_left is None:
            used = 0
            for namespace in self.snapshot.namespaces.values():
                used += len(recent_disruptions(self.now, namespace.deployments, budget))
            self.cluster_left = budget.count - used
        return self.cluster_left


T = TypeVar("T")


class Ruling(NamedTuple, Generic[T]):
    """A decision, and the first instant after `now` at which time alone would change it (a
    threshold reached) or None: never. Every decision that compares a time returns one, and
    its decision is read through `Thresholds.take`, so its threshold cannot be forgotten."""

    decision: T
    changes_at: datetime | None


class Thresholds:
    """The app being planned's `valid_until`: the earliest `changes_at` of the rulings its plan
    was made of, the instant it could be planned differently with nothing else changed (what
    controller-runtime calls RequeueAfter). `Planner` reuses the app's plan until then."""

    __slots__ = ("valid_until",)

    def __init__(self) -> None:
        self.valid_until = FOREVER

    def take(self, ruling: Ruling[T]) -> T:
        """The ruling's decision; its threshold folded into `valid_until`."""
        at = ruling.changes_at
        if at is not None and at < self.valid_until:
            self.valid_until = at
        return ruling.decision


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The earlier of two thresholds, None standing for never."""
    if a is None or (b is not None and b < a):
        return b
    return a


def recent_disruptions(
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
            at = parse_stamp(stamp)
            if at is None:
                recent.append(now)
            elif later(at, budget.per, beyond=Beyond.NEVER) > now:
                recent.append(at)
    return recent


def aware(now: datetime) -> datetime:
    """`now`, taken as UTC when it has no time zone."""
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
