"""What one planning cycle computes once and every app reads: the time and the stamps it writes,
the rules matched per label signature, the cluster-wide disruption budget. And `Ruling`, a
decision with the instant time alone would change it, which `Thresholds` folds into an app's
`valid_until`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Generic, NamedTuple, TypeVar

from rainbowd.core.model import DISRUPTED_AT, Deployment, Snapshot
from rainbowd.core.objects import format_time, parse_stamp, parse_time
from rainbowd.core.policy import Budget, Policy, Rule


def later(at: datetime, delta: timedelta) -> datetime:
    """`at + delta`, or the end of time when that is past year 9999 (a hand-written stamp like
    9999-12-31 means "hold forever", and must not overflow the cycle)."""
    try:
        return at + delta
    except OverflowError:
        return FOREVER


class RuleMatcher:
    """`policy.rule_for` memoized per namespace and per the label values the rules look at.

    Rules only read the keys their selectors name, so Deployments that agree on those keys share
    one answer however many other labels (a color, a version) they carry.
    """

    __slots__ = ("_cache", "_keys", "_policy")

    def __init__(self, policy: Policy) -> None:
        keys: dict[str, None] = {}
        for rule in policy.rules:
            for requirement in rule.selector.requirements:
                keys.setdefault(requirement.key, None)
        self._policy = policy
        self._keys = tuple(keys)
        self._cache: dict[tuple[str, object], Rule | None] = {}

    def signature(self, labels: Mapping[str, str]) -> object:
        """What the rules can see of `labels`: equal signatures, same rule."""
        keys = self._keys
        if not keys:
            return None
        if len(keys) == 1:
            return labels.get(keys[0])
        return tuple([labels.get(k) for k in keys])

    def keep(self, namespaces: Collection[str]) -> None:
        """Forget the answers for namespaces not in `namespaces`: under one policy, months of
        namespaces created and deleted would otherwise each leave their answers behind."""
        for key in [k for k in self._cache if k[0] not in namespaces]:
            del self._cache[key]

    def rule_for(self, namespace: str, labels: Mapping[str, str]) -> Rule | None:
        key = (namespace, self.signature(labels))
        try:
            return self._cache[key]
        except KeyError:
            rule = self._cache[key] = self._policy.rule_for(namespace, labels)
            return rule


FOREVER = datetime.max.replace(tzinfo=UTC)


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
            stamp_at += SECOND
        self.stamp = format_time(stamp_at)
        self.stamp_at = parse_time(self.stamp)
        # The first instant at which "now", as stamped, reads differently: the threshold of a
        # decision that takes now as a stamped time without writing it.
        self.restamped_at = self.stamp_at + MICROSECOND
        self.app_label = policy.app_label
        self.color_label = policy.color_label
        self.paused = policy.paused
        self.rules = RuleMatcher(policy)

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
            elif later(at, budget.per) > now:
                recent.append(at)
    return recent


def aware(now: datetime) -> datetime:
    """`now`, taken as UTC when it has no time zone."""
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
