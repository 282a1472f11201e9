"""What one planning cycle computes once and every app reads: the time and the stamps it writes,
the rules matched per label signature, the cluster-wide disruption budget, and `valid_until`, the
instant the app being planned could be planned differently with nothing else changed."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from rainbowd.core.model import DISRUPTED_AT, Deployment, Snapshot
from rainbowd.core.objects import format_time, parse_time
from rainbowd.core.policy import Budget, Policy, Rule
from rainbowd.core.reporting import compact_duration_changes_at


@functools.lru_cache(maxsize=1 << 16)
def parse_stamp(value: str) -> datetime | None:
    """A rainbowd annotation's time, or None when it does not parse.

    Memoized: the same few thousand stamps are read again every cycle, and parsing dominates
    the per-color cost otherwise.
    """
    try:
        return parse_time(value)
    except ValueError:
        return None


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

    def rule_for(self, namespace: str, labels: Mapping[str, str]) -> Rule | None:
        key = (namespace, self.signature(labels))
        try:
            return self._cache[key]
        except KeyError:
            rule = self._cache[key] = self._policy.rule_for(namespace, labels)
            return rule


FOREVER = datetime.max.replace(tzinfo=UTC)


SECOND = timedelta(seconds=1)


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
        "rules",
        "snapshot",
        "stamp",
        "stamp_at",
        "valid_until",
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
        self.app_label = policy.app_label
        self.color_label = policy.color_label
        self.paused = policy.paused
        self.rules = RuleMatcher(policy)
        # The earliest instant after `now` at which the app being planned could be planned
        # differently with nothing else changed: a time threshold crossed, or a duration shown
        # in a note reading differently (what controller-runtime calls RequeueAfter). Planning
        # an app returns it; `Planner` reuses the app's plan until then.
        self.valid_until = FOREVER

    def start_app(self) -> None:
        """Before planning an app: nothing it depends on is known yet."""
        self.valid_until = FOREVER
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

    def crossing(self, at: datetime) -> None:
        """A decision of the app being planned changes when `now` reaches `at`."""
        if at < self.valid_until:
            self.valid_until = at

    def shown(self, since: datetime) -> None:
        """A note of the app being planned shows `compact_duration(now - since)`."""
        self.crossing(shown_until(self.now, since))


def shown_until(now: datetime, since: datetime) -> datetime:
    """When `compact_duration(now - since)` next reads differently (`now` itself for a `since`
    in the future: not worth modelling, what shows it holds for this instant only)."""
    elapsed = now - since
    if elapsed.days < 0:
        return now
    return later(since, compact_duration_changes_at(elapsed))


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
