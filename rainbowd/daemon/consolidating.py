"""Per-pod connections for the colors consolidation may step this cycle (the pure `needs_pods`)
and for the draining colors whose pods' deletion costs are kept (`costed`): one per-pod query per
distinct connections query among them, and each color's pods as the pod watch lists them joined
with the figures. A cycle with no such color asks Prometheus nothing more, and a color whose
figures were unavailable is not asked for again before its rule's `every` (or `COST_RETRY`) has
passed (`Retries`): a rule whose series lack the pod label costs one per-pod query per `every`,
not one per cycle. A color whose step could not be taken through
what scales it (`scalers.consolidation_problem`), or whose HPAs are not listed yet, is not asked
for: its consolidation is unavailable, with why.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from rainbowd.core.consolidation import needs_pods
from rainbowd.core.memos import ServiceIndex
from rainbowd.core.model import (
    RETIRED_AT,
    ColorObject,
    Connections,
    Deployment,
    PodConnections,
    Service,
    WorkloadKind,
)
from rainbowd.core.objects import parse_stamp
from rainbowd.core.policy import ConnectionsQuery, Policy, Rule
from rainbowd.core.scalers import ROLLOUT_CONSOLIDATION, consolidation_problem
from rainbowd.kube.caching import PodMark
from rainbowd.prom.pods import PodSeries, fetch_pods
from rainbowd.prom.querying import ColorKey, PrometheusClient, QueryResult

UNLISTED = "the HorizontalPodAutoscalers and ScaledObjects are not listed yet"
PODS_UNLISTED = PodConnections(unavailable="the colors' pods are not listed yet")
PodFigures = dict[str, dict[tuple[str, str], PodConnections]]
"""Per namespace, by (app, color)."""


Wants = Callable[[Rule, Deployment, datetime, Connections], bool]


class Retired(NamedTuple):
    """A retired color with more than one pod, a rule, and no Service making it live: what
    `candidates` and `costed` choose among."""

    rule: Rule
    key: ColorKey
    deployment: Deployment
    retired_at: datetime


ByQuery = dict[ConnectionsQuery, list[Retired]]
"""A namespace's retired colors, by the query asking for their connections."""


class _Scanned(NamedTuple):
    """A namespace's retired colors and what they were worked out from."""

    policy: Policy
    deployments: Sequence[Deployment]
    services: Sequence[Service]
    retired: ByQuery


class RetiredColors:
    """Each namespace's retired colors (`Retired`), worked out again only when the policy, the
    namespace's Deployments or its Services are not the same objects as last cycle (the watch
    cache hands out the same ones while nothing changed): with 10,000 Deployments, a cycle
    whose connections alone moved looks at the retired colors only. One per pipeline, for one
    `rule_of` per policy."""

    def __init__(self) -> None:
        self._namespaces: dict[str, _Scanned] = {}

    def scan(
        self,
        policy: Policy,
        deployments: Mapping[str, Sequence[Deployment]],
        services: Mapping[str, Sequence[Service]],
        *,
        rule_of: Callable[[str, Deployment], Rule | None],
    ) -> list[ByQuery]:
        """Each namespace's retired colors, by query."""
        before = self._namespaces
        after: dict[str, _Scanned] = {}
        for ns, items in deployments.items():
            listed = services.get(ns, ())
            kept = before.get(ns)
            if (
                kept is None
                or kept.policy is not policy
                or not _same_objects(kept.deployments, items)
                or not _same_objects(kept.services, listed)
            ):
                kept = _Scanned(
                    policy, items, listed, _retired_of(policy, ns, items, listed, rule_of)
                )
            after[ns] = kept
        self._namespaces = after
        return [kept.retired for kept in after.values()]


def _same_objects(before: Sequence[object], after: Sequence[object]) -> bool:
    return before is after or (len(before) == len(after) and all(map(operator.is_, before, after)))


def _retired_of(
    policy: Policy,
    ns: str,
    deployments: Sequence[Deployment],
    services: Sequence[Service],
    rule_of: Callable[[str, Deployment], Rule | None],
) -> ByQuery:
    """A namespace's retired colors: stamped retired (a malformed stamp is no retirement), with
    more than one pod, a rule and the app and color labels, and live through no Service."""
    found: ByQuery = {}
    index: ServiceIndex | None = None
    for d in deployments:
        if d.replicas <= 1:
            continue
        stamp = d.annotations.get(RETIRED_AT)
        retired_at = None if stamp is None else parse_stamp(stamp)
        if retired_at is None:
            continue
        rule = rule_of(ns, d)
        app = d.template_labels.get(policy.app_label)
        color = d.color_of(policy.color_label)
        if rule is None or not app or not color:
            continue
        if index is None:
            index = ServiceIndex(services, policy.app_label, policy.color_label)
        if index.live(app, color, d.template_labels) is not None:
            continue  # live: never consolidated, its pods' costs not kept
        found.setdefault(rule.connections, []).append(
            Retired(rule, (ns, app, color), d, retired_at)
        )
    return found


def retired_colors(
    policy: Policy,
    deployments: Mapping[str, Sequence[Deployment]],
    services: Mapping[str, Sequence[Service]],
    *,
    rule_of: Callable[[str, Deployment], Rule | None],
) -> list[ByQuery]:
    """Each namespace's retired colors, worked out afresh (`RetiredColors` keeps them)."""
    return RetiredColors().scan(policy, deployments, services, rule_of=rule_of)


Wanted = dict[ConnectionsQuery, dict[ColorKey, timedelta]]
"""Colors whose per-pod figures are wanted, by query, each with how long to wait before asking
again when they were unavailable."""


def _wanted(
    retired: Iterable[ByQuery],
    results: Mapping[ConnectionsQuery, QueryResult],
    *,
    now: datetime,
    ruled: Callable[[Rule], bool],
    wants: Wants,
    every: Callable[[Rule], timedelta],
) -> Wanted:
    """The `retired` colors, retired by `now`, whose rule is `ruled` and that the caller
    `wants` (given the rule, the Deployment, its retirement and its connections), each with
    its rule's `every`."""
    wanted: Wanted = {}
    for by_query in retired:
        for query, colors in by_query.items():
            result = results.get(query)
            if result is None:
                continue
            into = None
            for rule, key, d, retired_at in colors:
                if retired_at > now or not ruled(rule):
                    continue
                if not wants(rule, d, retired_at, result.get(*key)):
                    continue
                if into is None:
                    into = wanted.setdefault(query, {})
                into[key] = every(rule)
    return wanted


def candidates(
    retired: Iterable[ByQuery],
    results: Mapping[ConnectionsQuery, QueryResult],
    *,
    now: datetime,
) -> Wanted:
    """Of the `retired` colors (`RetiredColors.scan`), those due for a consolidation step if
    their per-pod figures allow, by query, each with its rule's `every`."""

    def due(rule: Rule, d: Deployment, retired_at: datetime, connections: Connections) -> bool:
        return needs_pods(now, d, knobs=rule.knobs, retired_at=retired_at, connections=connections)

    def every(rule: Rule) -> timedelta:
        consolidate = rule.knobs.consolidate
        assert consolidate is not None  # `ruled` let only these through
        return consolidate.every

    return _wanted(
        retired,
        results,
        now=now,
        ruled=lambda rule: rule.knobs.consolidate is not None,
        wants=due,
        every=every,
    )


COST_RETRY = timedelta(minutes=5)
"""How long a color kept only for its pods' deletion costs waits after its per-pod figures were
unavailable before they are asked for again (a consolidating rule waits its `every`)."""


def costed(
    retired: Iterable[ByQuery],
    results: Mapping[ConnectionsQuery, QueryResult],
    *,
    now: datetime,
) -> Wanted:
    """Of the `retired` colors (`RetiredColors.scan`), those still draining (connections above
    their floor), whatever their rule's consolidation: their per-pod figures keep the pods'
    pod-deletion-costs, so a scale-down made by anyone (an HPA, a person) takes idle pods first.
    By query, each with how long to wait before asking again when the figures were
    unavailable."""

    def draining(rule: Rule, d: Deployment, retired_at: datetime, connections: Connections) -> bool:
        value = connections.value
        return value is not None and value > rule.knobs.connection_floor

    def every(rule: Rule) -> timedelta:
        consolidate = rule.knobs.consolidate
        return COST_RETRY if consolidate is None else consolidate.every

    return _wanted(
        retired,
        results,
        now=now,
        ruled=lambda rule: rule.connections.per_pod_problem is None,
        wants=draining,
        every=every,
    )


def refused_by_scalers(
    policy: Policy,
    wanted: dict[ConnectionsQuery, dict[ColorKey, timedelta]],
    deployments: Mapping[str, list[Deployment]],
    objects: Mapping[str, list[ColorObject]] | None,
    *,
    unlisted: str = UNLISTED,
) -> PodFigures:
    """The wanted colors whose step cannot be taken through what scales them, each with why
    (`unlisted` when `objects` is None); they are taken out of `wanted`, so Prometheus is not
    asked for their pods."""
    keys = {key for colors in wanted.values() for key in colors}
    if not keys:
        return {}
    found: dict[ColorKey, str] = {}
    for ns in {key[0] for key in keys}:
        for d in deployments.get(ns, ()):
            key = (
                ns,
                d.template_labels.get(policy.app_label, ""),
                d.color_of(policy.color_label) or "",
            )
            if key not in keys:
                continue
            if d.kind is WorkloadKind.ROLLOUT:
                found[key] = ROLLOUT_CONSOLIDATION
                continue
            if objects is None:
                found[key] = unlisted
                continue
            problem = consolidation_problem(ns, d.name, objects.get(ns, ()))
            if problem is not None:
                found[key] = problem
    out: PodFigures = {}
    for key, why in found.items():
        out.setdefault(key[0], {})[(key[1], key[2])] = PodConnections(unavailable=why)
        for colors in wanted.values():
            colors.pop(key, None)
    for query in [q for q, colors in wanted.items() if not colors]:
        del wanted[query]
    return out


class Retries:
    """The colors whose per-pod figures were unavailable, with the reason, until when they are
    not asked for again. One per pipeline; colors not wanted any more are forgotten."""

    def __init__(self) -> None:
        self._until: dict[ColorKey, tuple[datetime, PodConnections]] = {}

    def pending(self, key: ColorKey, now: datetime) -> PodConnections | None:
        found = self._until.get(key)
        return found[1] if found is not None and now < found[0] else None

    def keep(self, wanted: set[ColorKey]) -> None:
        for key in [k for k in self._until if k not in wanted]:
            del self._until[key]

    def record(self, key: ColorKey, figures: PodConnections, until: datetime) -> None:
        if figures.unavailable is None:
            self._until.pop(key, None)
        else:
            self._until[key] = (until, figures)


async def pod_figures(
    client: PrometheusClient,
    wanted: Mapping[ConnectionsQuery, Mapping[ColorKey, timedelta]],
    pods: Iterable[PodMark] | None,
    *,
    at: datetime,
    retries: Retries | None = None,
) -> PodFigures:
    """Each wanted color's pods with their connections, or why consolidation is unavailable.
    Nothing is asked of Prometheus before the pods are listed, nor for a color `retries` holds."""
    out: PodFigures = {}
    retries = retries or Retries()
    retries.keep({key for colors in wanted.values() for key in colors})
    if pods is None:
        for colors in wanted.values():
            for key in colors:
                out.setdefault(key[0], {})[(key[1], key[2])] = PODS_UNLISTED
        return out
    by_color: dict[ColorKey, list[PodMark]] = {}
    for pod in pods:
        by_color.setdefault((pod.namespace, pod.app, pod.color), []).append(pod)
    for query, colors in wanted.items():
        asked = []
        for key in colors:
            held = retries.pending(key, at)
            if held is None:
                asked.append(key)
            else:
                out.setdefault(key[0], {})[(key[1], key[2])] = held
        if not asked:
            continue
        series = await fetch_pods(client, query, asked, at=at)
        for key in asked:
            figures = join(series[key], by_color.get(key, []))
            retries.record(key, figures, at + colors[key])
            out.setdefault(key[0], {})[(key[1], key[2])] = figures
    return out


def join(series: PodSeries, pods: list[PodMark] | None) -> PodConnections:
    """The color's pods as Kubernetes lists them, each with its figure from Prometheus (None:
    no series for it, so unknown). Series of pods that no longer exist are left out."""
    if series.unavailable is not None:
        return PodConnections(unavailable=series.unavailable)
    if pods is None:
        return PODS_UNLISTED
    waiting = sorted(pod.name for pod in pods if not pod.ready)
    if waiting:
        return PodConnections(
            unavailable=f"pod {waiting[0]} is not running and ready (the ReplicaSet controller "
            "would remove it first, whatever its cost)"
        )
    return PodConnections(pods={pod.name: series.pods.get(pod.name) for pod in pods})
