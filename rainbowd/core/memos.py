"""The cache layer: every memo the cycle keeps, each with what it is keyed on and the benchmark
that justifies it (tests/bench/bench_memos.py prints each one's cost with and without it). A
memo only ever saves recomputing what its key determines; none copies a decision (the plan's
own reuse, driven by `valid_until`, is `Planner`'s: rainbowd/core/planner/memo.py).

- `RuleMatcher`: each Deployment's rule, by namespace and the label values the rules look at.
- `RuleMemo`: one `RuleMatcher` kept across cycles while the policy is the same object.
- `SnapshotMemo`: the cycle's snapshot, a namespace rebuilt only when what it is built from
  changed, and each Deployment's rule and connections query (`Members`) only when the
  Deployments or the policy changed.

And `ServiceIndex`, the one index of a namespace's Services by the app they select, for the
question "which Service, if any, makes this color live".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from rainbowd.core import model
from rainbowd.core.model import Connections, Deployment, Namespace, Service, Snapshot
from rainbowd.core.policy import DEPLOYMENT, ConnectionsQuery, Policy, Rule

Objects = Mapping[str, Sequence[Deployment]]
"""Deployments by namespace, as the watch cache hands them out."""


_OTHER_KIND = object()  # marks a cache key of another kind than Deployment: no label value is it


class RuleMatcher:
    """`policy.rule_for` memoized per namespace and per the label values the rules look at.

    Rules only read the keys their selectors name, so Deployments that agree on those keys share
    one answer however many other labels (a color, a version) they carry: 10,000 Deployments
    are matched against the selectors a few dozen times, not 10,000 (bench_memos: "rules").
    """

    __slots__ = ("_cache", "_keys", "policy")

    def __init__(self, policy: Policy) -> None:
        keys: dict[str, None] = {}
        for rule in policy.rules:
            for requirement in rule.selector.requirements:
                keys.setdefault(requirement.key, None)
        self.policy = policy
        self._keys = tuple(keys)
        self._cache: dict[str, dict[object, Rule | None]] = {}

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
        for namespace in [n for n in self._cache if n not in namespaces]:
            del self._cache[namespace]

    def rule_for(
        self, namespace: str, labels: Mapping[str, str], kind: str = DEPLOYMENT
    ) -> Rule | None:
        """The rule deciding a workload of `kind` in `namespace` with `labels`; None: no rule
        matches."""
        cache = self._cache.get(namespace)
        if cache is None:
            cache = self._cache[namespace] = {}
        signature = self.signature(labels)
        key = signature if kind == DEPLOYMENT else (_OTHER_KIND, kind, signature)
        try:
            return cache[key]
        except KeyError:
            rule = cache[key] = self.policy.rule_for(namespace, labels, kind)
            return rule

    def rule_of(self, namespace: str, deployment: Deployment) -> Rule | None:
        """`rule_for` of a Deployment's (or Rollout color's) own labels and kind."""
        return self.rule_for(namespace, deployment.labels, deployment.kind.value)


class RuleMemo:
    """The `RuleMatcher` of the current policy, kept across cycles while the policy is the same
    object: a steady cycle matches no selector at all (bench_memos: "rules")."""

    __slots__ = ("_matcher",)

    def __init__(self) -> None:
        self._matcher: RuleMatcher | None = None

    def matcher(self, policy: Policy) -> RuleMatcher:
        """The matcher for `policy`: the last one while the policy is the same object."""
        matcher = self._matcher
        if matcher is None or matcher.policy is not policy:
            matcher = self._matcher = RuleMatcher(policy)
        return matcher


class ServiceIndex:
    """A namespace's Services by the app their selector names; the rest (no app named) must be
    tried against every color. A selector naming app X can only match pod templates of app X,
    so each color is compared with its own app's Services, not with every Service."""

    __slots__ = ("_by_app", "_by_color", "_other")

    def __init__(self, services: Sequence[Service], app_label: str, color_label: str) -> None:
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
        self._by_app = by_app
        self._other = other
        self._by_color = {} if other else _by_color(by_app, color_label)

    def live(self, app: str, color: str, labels: Mapping[str, str]) -> str | None:
        """The name of the first Service selecting the pod template `labels` (of `app` and
        `color`), None: the color is not live."""
        names = self._by_color.get(app)
        if names is not None:
            return names.get(color)
        services = self._by_app.get(app)
        other = self._other
        if other:
            services = services + other if services else other
        if services:
            for service in services:
                if service.selects(labels):
                    return service.name
        return None


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


class Answer(Protocol):
    """One connections query's answer, as the Prometheus client gives it: the same `by_color`
    object while no figure changed."""

    @property
    def by_color(self) -> object: ...

    @property
    def error(self) -> str | None: ...

    def get(self, namespace: str, app: str, color: str) -> Connections: ...


class Member(NamedTuple):
    """A managed color and the connections query of its rule."""

    app: str
    color: str
    query: ConnectionsQuery


@dataclass(frozen=True)
class Members:
    """What the cycle asks of each Deployment, worked out once per set of Deployment objects:
    per namespace, the managed colors with their query, and the distinct queries."""

    deployments: Objects
    matcher: RuleMatcher
    by_namespace: Mapping[str, list[Member]]
    queries: list[ConnectionsQuery]

    def rule_of(self, namespace: str, d: Deployment) -> Rule | None:
        return self.matcher.rule_of(namespace, d)


def color_members(
    policy: Policy, deployments: Objects, *, rules: RuleMemo | None = None
) -> Members:
    """Each namespace's managed colors with their rule's query (Deployments no rule matches, or
    without the app and color labels, are left out), and the distinct queries they need."""
    matcher = (rules or RuleMemo()).matcher(policy)
    by_namespace: dict[str, list[Member]] = {}
    needed: dict[ConnectionsQuery, None] = {}
    for ns, items in deployments.items():
        found = by_namespace[ns] = []
        for d in items:
            rule = matcher.rule_of(ns, d)
            if rule is None:
                continue
            needed.setdefault(rule.connections, None)
            app = d.template_labels.get(policy.app_label)
            color = d.color_of(policy.color_label)
            if app and color:
                found.append(Member(app, color, rule.connections))
    return Members(deployments, matcher, by_namespace, list(needed))


class _Answered(NamedTuple):
    query: ConnectionsQuery
    by_color: object
    error: str | None


@dataclass(frozen=True, slots=True)
class _Built:
    """A namespace of the last snapshot and the objects it was built from."""

    deployments: object
    services: object
    answers: tuple[_Answered, ...]
    members: Members
    figures: object
    namespace: Namespace

    def still(
        self,
        deployments: object,
        services: object,
        answers: tuple[_Answered, ...],
        members: Members,
        figures: object,
    ) -> bool:
        """Whether it is built from these same objects (and equal answers)."""
        return (
            self.deployments is deployments
            and self.services is services
            and self.members is members
            and self.figures is figures
            and _same_answers(self.answers, answers)
        )


class SnapshotMemo:
    """The cycle's snapshot, rebuilt only where something changed.

    The watch cache hands out the same objects while nothing changed, and the Prometheus client
    the same mapping while no figure did: a namespace whose Deployments, Services and answers
    are the same objects as last cycle keeps its Namespace, and the Deployments' rules and
    queries are worked out again only when the Deployments or the policy change. In a steady
    cycle building the snapshot costs next to nothing (bench_memos: "snapshot").
    """

    def __init__(self) -> None:
        self._members: Members | None = None
        self._namespaces: dict[str, _Built] = {}

    def members(self, policy: Policy, deployments: Objects, rules: RuleMemo) -> Members:
        last = self._members
        if (
            last is None
            or last.deployments is not deployments
            or last.matcher is not rules.matcher(policy)
        ):
            last = self._members = color_members(policy, deployments, rules=rules)
        return last

    def build(
        self,
        now: datetime,
        members: Members,
        deployments: Objects,
        services: Mapping[str, Sequence[Service]],
        results: Mapping[ConnectionsQuery, Answer],
        pods: Mapping[str, Mapping[tuple[str, str], model.PodConnections]] | None = None,
    ) -> Snapshot:
        answers = tuple([_Answered(q, r.by_color, r.error) for q, r in results.items()])
        pods = pods or {}
        before = self._namespaces
        after: dict[str, _Built] = {}
        namespaces: dict[str, Namespace] = {}
        for ns in sorted(deployments.keys() | services.keys()):
            items = deployments.get(ns, ())
            listed = services.get(ns, ())
            figures = pods.get(ns)
            kept = before.get(ns)
            if kept is not None and kept.still(items, listed, answers, members, figures):
                namespace = kept.namespace
            else:
                conns: dict[tuple[str, str], Connections] = {}
                # The colors of a rule share its query object: its answer is looked up (the
                # query hashed, all of its fields) once per run of them, not once per color.
                asked: ConnectionsQuery | None = None
                result: Answer | None = None
                for app, color, query in members.by_namespace.get(ns, ()):
                    if query is not asked:
                        asked, result = query, results.get(query)
                    if result is not None:
                        conns[(app, color)] = result.get(ns, app, color)
                namespace = Namespace(
                    name=ns,
                    deployments=tuple(items),
                    services=tuple(listed),
                    connections=conns,
                    pods=figures or {},
                )
            after[ns] = _Built(items, listed, answers, members, figures, namespace)
            namespaces[ns] = namespace
        self._namespaces = after
        return Snapshot(now=now, namespaces=namespaces)


def _same_answers(before: tuple[_Answered, ...], after: tuple[_Answered, ...]) -> bool:
    return len(before) == len(after) and all(
        a.query == b.query and a.by_color is b.by_color and a.error == b.error
        for a, b in zip(before, after, strict=True)
    )
