"""Test builders for planner inputs, Hypothesis strategies of snapshots and policies, and
`apply_plan`: what the cluster looks like after a plan's actions, for re-planning.

Test-only: production never applies a plan to a snapshot, the executor applies it to the API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

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
    ActionKind,
    Condition,
    Connections,
    Deployment,
    Namespace,
    Plan,
    Service,
    Snapshot,
)
from rainbowd.core.objects import format_time
from rainbowd.core.policy import (
    DEFAULT_KINDS,
    KNOBS,
    Budget,
    CleanupAction,
    ConnectionsQuery,
    Knobs,
    Operator,
    Policy,
    Requirement,
    Rule,
    Selector,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
APP = "rainbow-deploys"
NS = "default"
H = timedelta(hours=1)
M = timedelta(minutes=1)


def ago(delta: timedelta) -> datetime:
    return NOW - delta


def stamp(delta: timedelta) -> str:
    """An annotation value `delta` before NOW."""
    return format_time(NOW - delta)


def deployment(
    color: str,
    *,
    app: str = APP,
    namespace: str = NS,
    created: datetime | None = None,
    replicas: int = 2,
    ready: int | None = None,
    available: bool = True,
    progress_deadline_exceeded: bool = False,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    template_labels: Mapping[str, str] | None = None,
) -> Deployment:
    """A Deployment shaped like the seed's app.yaml: `color` only in the pod template."""
    ready_replicas = replicas if ready is None else ready
    conditions = [Condition("Available", "True" if available else "False")]
    if progress_deadline_exceeded:
        conditions.append(Condition("Progressing", "False", reason="ProgressDeadlineExceeded"))
    return Deployment(
        namespace=namespace,
        name=f"{app}-{color}",
        uid=f"uid-{namespace}-{app}-{color}",
        resource_version="1",
        created_at=created if created is not None else ago(10 * H),
        labels={"app": app} if labels is None else dict(labels),
        template_labels=(
            {"app": app, "color": color} if template_labels is None else dict(template_labels)
        ),
        annotations=dict(annotations or {}),
        replicas=replicas,
        ready_replicas=ready_replicas,
        available_replicas=ready_replicas if available else 0,
        conditions=tuple(conditions),
    )


def service(selector: Mapping[str, str], *, name: str = APP, namespace: str = NS) -> Service:
    return Service(namespace=namespace, name=name, selector=dict(selector))


def snapshot(
    deployments: Iterable[Deployment],
    services: Iterable[Service] = (),
    connections: Mapping[tuple[str, str, str], Connections] | None = None,
    *,
    now: datetime = NOW,
) -> Snapshot:
    """Connections keyed by (namespace, app, color)."""
    by_ns: dict[str, dict[str, Any]] = {}

    def ns(name: str) -> dict[str, Any]:
        return by_ns.setdefault(name, {"deployments": [], "services": [], "connections": {}})

    for d in deployments:
        ns(d.namespace)["deployments"].append(d)
    for s in services:
        ns(s.namespace)["services"].append(s)
    for (namespace, app, color), value in (connections or {}).items():
        ns(namespace)["connections"][(app, color)] = value
    return Snapshot(
        now=now,
        namespaces={
            name: Namespace(
                name=name,
                deployments=tuple(parts["deployments"]),
                services=tuple(parts["services"]),
                connections=parts["connections"],
            )
            for name, parts in by_ns.items()
        },
    )


def conns(value: float | None, *, series: int | None = None, cause: str = "") -> Connections:
    if value is None:
        return Connections.unknown(cause or "no series for this color")
    return Connections(value=value, series=series, cause=cause)


def rule(
    name: str = "rainbow",
    *,
    app: str | None = APP,
    namespaces: Iterable[str] | None = None,
    kinds: Iterable[str] = DEFAULT_KINDS,
    **knobs: Any,
) -> Rule:
    """A rule selecting Deployments labelled app=<app> (any Deployment when app is None), and
    Argo Rollouts' colors too when `kinds` names them."""
    requirements = () if app is None else (Requirement("app", Operator.IN, frozenset({app})),)
    return Rule(
        name=name,
        knobs=Knobs(**knobs),
        connections=ConnectionsQuery(),
        namespaces=None if namespaces is None else frozenset(namespaces),
        selector=Selector(requirements=requirements, text="" if app is None else f"app={app}"),
        kinds=frozenset(kinds),
    )


def policy(*rules: Rule, dry_run: bool = False, paused: bool = False, **knobs: Any) -> Policy:
    """One rule for the seed's app with the given knobs, unless rules are given."""
    return Policy(rules=rules or (rule(**knobs),), dry_run=dry_run, paused=paused)


# --- applying a plan, as the executor would ---------------------------------------------------


def _bump(version: str) -> str:
    return str(int(version) + 1) if version.isdigit() else version + "+"


def annotated(d: Deployment, changes: Mapping[str, str | None]) -> dict[str, str]:
    """`d`'s annotations once `changes` landed: None removes a key, as the executor does."""
    annotations = dict(d.annotations)
    for key, value in changes.items():
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
    return annotations


def apply_plan(snap: Snapshot, plan: Plan) -> Snapshot:
    """The snapshot after every action of `plan` succeeded (dry run and paused included: the
    plan's actions are what would be applied). Connections and Services are unchanged."""
    by_name: dict[tuple[str, str], list[Any]] = {}
    for action in plan.actions:
        by_name.setdefault((action.namespace, action.name), []).append(action)
    namespaces: dict[str, Namespace] = {}
    for name, ns in snap.namespaces.items():
        kept: list[Deployment] = []
        for d in ns.deployments:
            deleted = False
            for action in by_name.get((d.namespace, d.name), ()):
                assert action.uid == d.uid and action.resource_version == d.resource_version
                if action.kind is ActionKind.DELETE:
                    deleted = True
                    break
                # Annotations are part of a Deployment's generation, and so is spec.replicas.
                d = dataclasses.replace(
                    d,
                    annotations=annotated(d, action.annotations),
                    resource_version=_bump(d.resource_version),
                    generation=d.generation + (1 if action.annotations else 0),
                )
                if action.kind is ActionKind.SCALE:
                    d = dataclasses.replace(
                        d,
                        replicas=0,
                        ready_replicas=0,
                        available_replicas=0,
                        generation=d.generation + 1,
                    )
                elif action.kind is ActionKind.CONSOLIDATE and action.step is not None:
                    to = action.step.replicas
                    d = dataclasses.replace(
                        d,
                        replicas=to,
                        ready_replicas=min(d.ready_replicas, to),
                        available_replicas=min(d.available_replicas, to),
                        generation=d.generation + 1,
                    )
            if not deleted:
                kept.append(d)
        namespaces[name] = dataclasses.replace(ns, deployments=tuple(kept))
    return dataclasses.replace(snap, namespaces=namespaces)


# --- Hypothesis strategies --------------------------------------------------------------------
#
# Each color, each knob set, is decoded from one drawn integer: a few draws per example instead
# of a dozen per color keeps 2,000 examples per property quick, and an integer shrinking towards
# 0 still shrinks every choice towards its first (simplest) option.

COLORS = ("3c3fdc", "9d2cc9", "a1b2c3", "d4e5f6", "0f0f0f", "c0ffee")
APPS = ("rainbow-deploys", "chat")
# 128 bits, each byte equally likely: Hypothesis draws big integers mostly small, which would
# leave the later choices of a word at their first option.
_WORD = st.binary(min_size=16, max_size=16).map(lambda b: int.from_bytes(b, "big"))


class Choices:
    """Reads successive choices out of one integer, each an index into a tuple of options."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def pick(self, options: tuple[Any, ...]) -> Any:
        self.seed, index = divmod(self.seed, len(options))
        return options[index]

    def chance(self, one_in: int) -> bool:
        """True one time in `one_in`; False for seed 0."""
        return bool(self.pick((False,) * (one_in - 1) + (True,)))


_STAMP_OFFSETS = (0, 1, 20, 45, 90, 300, 4000, -30)  # minutes before NOW
_MALFORMED = ("yesterday", "", "2026-13-40T00:00:00Z", "12:00")
# Hand-written times at the edges: "hold forever", before year 1 once in UTC, offsets, fractions.
EXTREME_STAMPS = (
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-05:00",
    "2026-11-21T17:30:00+05:30",  # NOW, in India
    "2026-11-21T06:59:59.999-05:00",  # just before NOW, in New York
    "2026-11-21t11:00:00z",
)
# How people spell a flag: every casing of true and false, and things that are neither.
PROTECT_SPELLINGS = (
    "true", "True", "TRUE", "yes", "on", "1", " true ",
    "false", "False", "NO", "off", "0", "", "please", "ture",
)  # fmt: skip


def _stamp_value(c: Choices) -> str:
    if c.chance(10):
        return str(c.pick(_MALFORMED))
    if c.chance(8):
        return str(c.pick(EXTREME_STAMPS))
    return stamp(timedelta(minutes=c.pick(_STAMP_OFFSETS)))


def _minutes(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(minutes=value)


# Each knob's choices, by key, drawn in the knob table's order (KNOBS): the properties and the
# state machine exercise every knob listed here, and a knob missing here fails every one of them.
# consolidate and stepDown stay off: consolidation has properties of its own, on policies with
# consolidate on every rule (tests/unit/test_consolidation_properties.py).
KNOB_CHOICES: dict[str, Callable[[Choices], Any]] = {
    "minRetiredAge": lambda c: timedelta(minutes=c.pick((0, 5, 30, 60, 600))),
    "connectionFloor": lambda c: c.pick((0, 3, 0, 25)),
    "drainHold": lambda c: timedelta(minutes=c.pick((0, 5, 30))),
    "maxColors": lambda c: c.pick((None, 1, 2, 3, 4)),
    "maxRetiredAge": lambda c: _minutes(c.pick((None, 60, 1440, 0))),
    "action": lambda c: c.pick(tuple(CleanupAction)),
    "keepScaledDown": lambda c: c.pick((0, 1, 2, 3)),
    "maxDisruptions": lambda c: Budget(
        count=c.pick((1, 0, 2)), per=timedelta(minutes=c.pick((10, 1, 120)))
    ),
    "abandonedAfter": lambda c: _minutes(c.pick((None, 30, 600))),
    "scaleUpGrace": lambda c: timedelta(minutes=c.pick((30, 0, 5))),
    "consolidate": lambda c: None,
    "stepDown": lambda c: None,
    "deadlineAhead": lambda c: timedelta(minutes=c.pick((10, 1, 60))),
}


def knobs_from(c: Choices) -> Knobs:
    return Knobs(**{knob.field: KNOB_CHOICES[knob.key](c) for knob in KNOBS})


def knobs_strategy() -> st.SearchStrategy[Knobs]:
    return _WORD.map(lambda n: knobs_from(Choices(n)))


def _app_rule(app: str, knobs: Knobs) -> Rule:
    return Rule(
        name=f"rule-{app}",
        knobs=knobs,
        connections=ConnectionsQuery(),
        selector=Selector(
            requirements=(Requirement("app", Operator.IN, frozenset({app})),), text=f"app={app}"
        ),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    c = Choices(draw(_WORD))
    first = knobs_from(c)
    rules = (_app_rule(APPS[0], first), _app_rule(APPS[1], knobs_from(Choices(draw(_WORD)))))
    cluster = c.pick((None, None, Budget(1, timedelta(minutes=10)), Budget(0, timedelta(hours=1))))
    return Policy(rules=rules, dry_run=c.chance(2), paused=c.chance(6), max_disruptions=cluster)


def connections_from(c: Choices, ready: int) -> Connections | None:
    kind = c.pick(("value",) * 8 + ("missing", "failed"))
    if kind == "missing":
        return None  # no series at all
    if kind == "failed":
        return Connections.unknown("query failed")
    value = float(c.pick((0, 1, 0, 2, 3, 10, 25, 26, 400)))
    series = c.pick((None, ready, max(ready - 1, 0), ready + 1))
    return Connections(value=value, series=series)


def color_from(
    c: Choices, app: str, color: str, namespace: str = NS, *, live: bool = False
) -> Deployment:
    """One color; a live one is mostly healthy, or most apps would be blocked."""
    healthy = live and not c.chance(10)
    replicas = c.pick((2, 1, 3) if healthy else (2, 0, 1, 3, 2, 1))
    ready = replicas if healthy else c.pick((replicas,) * 3 + tuple(range(replicas - 1, -1, -1)))
    annotations: dict[str, str] = {}
    for key, one_in in (
        (LIVE_AT, 3),
        (RETIRED_AT, 2),
        (DRAINED_SINCE, 3),
        (HOLD_UNTIL, 12),
        (SCALED_UP_AT, 12),
        (DISRUPTED_AT, 8),
    ):
        if c.chance(one_in):
            annotations[key] = _stamp_value(c)
    if c.chance(7):
        annotations[PROTECT] = str(c.pick(PROTECT_SPELLINGS))
    if HOLD_UNTIL in annotations and c.chance(2):
        annotations[HOLD_REASON] = "incident: keep"
    generation = c.pick((3, 4, 0))
    if c.chance(5):
        # Scaled down by rainbowd once: at 0 still, back up by a user, or a scale-down cut
        # short after its bookkeeping (the marker equals the generation).
        annotations[ORIGINAL_REPLICAS] = str(c.pick((2, 3, 1)))
        if c.chance(2):
            annotations[SCALE_DOWN_GENERATION] = str(c.pick((3, 4, 2)))
    managed = not c.chance(8)
    template = {"app": app, "color": color}
    if c.chance(4):
        template["tier"] = "web"  # more pod-template labels than the Services' selectors name
    d = deployment(
        color,
        app=app,
        namespace=namespace,
        created=ago(timedelta(minutes=c.pick((600, 5, 60, 120, 3000, 6000)))),
        replicas=replicas,
        ready=ready,
        available=healthy or not c.chance(8),
        annotations=annotations,
        labels={"app": app} if managed else {"team": "x"},
        template_labels=template,
    )
    return dataclasses.replace(d, generation=generation)


def services_from(
    c: Choices, app: str, colors: tuple[str, ...], namespace: str = NS
) -> list[Service]:
    shape = c.pick(("color",) * 7 + ("none", "canary", "preview", "no-app", "full", "empty"))
    if shape == "none":
        return []  # blocked
    if shape == "canary":
        return [service({"app": app}, name=app, namespace=namespace)]
    live = [service({"app": app, "color": c.pick(colors)}, name=app, namespace=namespace)]
    if shape == "preview":
        preview = {"app": app, "color": c.pick(colors)}
        live.append(service(preview, name=f"{app}-preview", namespace=namespace))
    elif shape == "no-app":
        # Selects by color (or tier) alone: no app label, so every color of the namespace
        # must be compared with it, the slow path of the live-Service match.
        odd = c.pick(({"color": c.pick(colors)}, {"tier": "web"}))
        live.append(service(odd, name=f"{app}-by-color", namespace=namespace))
    elif shape == "full":
        # A selector equal to a color's whole pod-template labels (subset, not strict subset),
        # beside a Service without the app label (the slow path again).
        chosen = c.pick(colors)
        full = {"app": app, "color": chosen}
        live.append(service(full, name=f"{app}-full", namespace=namespace))
        live.append(service({"tier": "web", "color": chosen}, name=f"{app}-t", namespace=namespace))
    elif shape == "empty":
        live.append(service({}, name=f"{app}-external", namespace=namespace))  # selects nothing
    return live


@st.composite
def app_colors(
    draw: st.DrawFn, app: str, namespace: str = NS
) -> tuple[list[Deployment], list[Service], dict[tuple[str, str, str], Connections]]:
    colors = COLORS[: draw(st.integers(1, len(COLORS)))]
    services = services_from(Choices(draw(_WORD)), app, colors, namespace)
    deployments: list[Deployment] = []
    connections: dict[tuple[str, str, str], Connections] = {}
    for color in colors:
        c = Choices(draw(_WORD))
        live = any(s.selector.get("color", color) == color for s in services)
        d = color_from(c, app, color, namespace, live=live)
        deployments.append(d)
        value = connections_from(Choices(draw(_WORD)), d.ready_replicas)
        if value is not None:
            connections[(namespace, app, color)] = value
    return deployments, services, connections


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    deployments: list[Deployment] = []
    services: list[Service] = []
    connections: dict[tuple[str, str, str], Connections] = {}
    for app in APPS[: draw(st.integers(1, len(APPS)))]:
        d, s, c = draw(app_colors(app))
        deployments += d
        services += s
        connections.update(c)
    return snapshot(deployments, services, connections)


def with_annotations(
    snap: Snapshot, target: Deployment, annotations: Mapping[str, str], *, namespace: str = NS
) -> Snapshot:
    """`snap` with `target` (a Deployment of `namespace`) carrying `annotations` instead."""
    ns = snap.namespaces[namespace]
    d = dataclasses.replace(target, annotations=dict(annotations))
    deployments = tuple(d if x is target else x for x in ns.deployments)
    return dataclasses.replace(
        snap,
        namespaces={**snap.namespaces, namespace: dataclasses.replace(ns, deployments=deployments)},
    )
