"""Multi-cycle burn-down as a Hypothesis state machine.

Colors are deployed, Services switch (forward, back to an older color, to a canary), the live
color has outages (blocked cycles), users scale scaled-down colors back up, time moves,
connections fall, rise and go unknown, and each cycle's plan is applied as the executor would.
Every cycle checks the safety rules of docs/design.md: never live or protected, drains continuous
over every sample (blocked cycles included), the floor, the disruption budget per window, and
the grace after a scale-up.

Settings: enough examples and steps that the blocked-cycle drain bug (a drain stamp surviving
a sample above the floor taken while the app was blocked) is found on almost every run, seeded
randomly under CI (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from rainbowd.core.model import (
    PROTECT,
    ActionKind,
    Condition,
    Connections,
    Deployment,
    Reason,
    Service,
    Snapshot,
    State,
)
from rainbowd.core.planner import plan
from rainbowd.core.policy import Knobs, Policy
from tests.unit.strategies import (
    APP,
    NOW,
    NS,
    apply_plan,
    deployment,
    knobs_strategy,
    service,
    snapshot,
)
from tests.unit.strategies import rule as make_rule

PALETTE = tuple(f"{i * 0x2F1A3B % 0xFFFFFF:06x}" for i in range(1, 40))


class BurnDown(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.deployments: dict[str, Deployment] = {}
        self.connections: dict[str, Connections] = {}
        self.selector: dict[str, str] = {}
        self.deleted: set[str] = set()
        self.replicas_when_deployed: dict[str, int] = {}
        # Since when each color's connections have been known and at or below the floor,
        # as the world changed them (the planner only sees it at its next cycle, so later).
        self.low_since: dict[str, datetime | None] = {}
        self.next_color = 0
        self.policy = Policy(rules=(make_rule(),))
        # Forced scale-downs of colors holding users, when they were planned.
        self.disruptions: list[datetime] = []
        # Colors a user scaled back up: not yet seen by a cycle (None), or held until then.
        self.scaled_up: dict[str, datetime | None] = {}

    # --- the world --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        services: list[Service] = [service(self.selector)] if self.selector else []
        return snapshot(
            self.deployments.values(),
            services,
            {(NS, APP, color): c for color, c in self.connections.items()},
            now=self.now,
        )

    def live_colors(self) -> set[str]:
        return {
            color
            for color, d in self.deployments.items()
            if self.selector and self.selector.items() <= d.template_labels.items()
        }

    def set_connections(self, color: str, connections: Connections) -> None:
        self.connections[color] = connections

    def observe(self) -> None:
        """What a cycle samples: the planner sees connections only at cycles, so a drain is
        continuous when every sample since it began was known and at or below the floor (a
        spike between two cycles is invisible to it, as it would be to Prometheus' scrapes)."""
        floor = self.policy.rules[0].knobs.connection_floor
        for color, current in self.deployments.items():
            connections = self.connections.get(color)
            low = (
                connections is not None
                and connections.value is not None
                and connections.value <= floor
                and (connections.series is None or connections.series >= current.ready_replicas)
            )
            if not low:
                self.low_since[color] = None
            elif self.low_since.get(color) is None:
                self.low_since[color] = self.now

    @initialize(knobs=knobs_strategy(), paused=st.sampled_from([False] * 5 + [True]))
    def start(self, knobs: Knobs, paused: bool) -> None:
        rule_ = dataclasses.replace(make_rule(), knobs=knobs)
        self.policy = Policy(rules=(rule_,), paused=paused)
        # Two releases, the second live: most interesting sequences need a retired color.
        self.deploy(replicas=2)
        self.now += timedelta(minutes=5)
        self.deploy(replicas=2)
        self.switch_to_newest()

    # --- rules --------------------------------------------------------------------------------

    @precondition(lambda self: self.next_color < len(PALETTE))
    @rule(replicas=st.integers(1, 3), protect=st.integers(0, 9))
    def deploy(self, replicas: int, protect: int = 1) -> None:
        color = PALETTE[self.next_color]
        self.next_color += 1
        annotations = {PROTECT: "true"} if protect == 0 else {}
        self.deployments[color] = deployment(
            color, created=self.now, replicas=replicas, annotations=annotations
        )
        self.replicas_when_deployed[color] = replicas
        self.set_connections(color, Connections(value=0.0, series=replicas))

    @rule()
    def switch_to_newest(self) -> None:
        running = [c for c, d in self.deployments.items() if d.replicas > 0]
        if running:
            newest = max(running, key=lambda c: self.deployments[c].created_at)
            self.selector = {"app": APP, "color": newest}

    @rule(data=st.data())
    def roll_back(self, data: st.DataObject) -> None:
        running = sorted(c for c, d in self.deployments.items() if d.replicas > 0)
        if running:
            self.selector = {"app": APP, "color": data.draw(st.sampled_from(running))}

    @rule()
    def canary(self) -> None:
        self.selector = {"app": APP}

    @rule(minutes=st.sampled_from([1, 3, 10, 45, 120, 1500]))
    def advance(self, minutes: int) -> None:
        """Time passes, and the daemon's timer runs a cycle."""
        self.now += timedelta(minutes=minutes)
        self.cycle()

    @rule(data=st.data(), value=st.sampled_from([0, 1, 3, 25, 40, 300]))
    def connections_change(self, data: st.DataObject, value: int) -> None:
        if self.deployments:
            color = data.draw(st.sampled_from(sorted(self.deployments)))
            ready = self.deployments[color].ready_replicas
            self.set_connections(color, Connections(value=float(value), series=ready))

    @rule(data=st.data(), short=st.booleans())
    def prometheus_unknown(self, data: st.DataObject, short: bool) -> None:
        if self.deployments:
            color = data.draw(st.sampled_from(sorted(self.deployments)))
            ready = self.deployments[color].ready_replicas
            if short and ready > 0:
                self.set_connections(color, Connections(value=0.0, series=ready - 1))
            else:
                self.set_connections(color, Connections.unknown("query failed"))

    @rule(value=st.sampled_from([40, 3, 300]), data=st.data())
    def outage(self, value: int, data: st.DataObject) -> None:
        """The live color is unavailable for one cycle (the app is blocked) while a retired
        color briefly holds users again; then all is as before."""
        live = sorted(self.live_colors())
        others = sorted(c for c, d in self.deployments.items() if c not in live and d.replicas)
        if not live or not others:
            return
        color = data.draw(st.sampled_from(others))
        saved_deployments = {c: self.deployments[c] for c in live}
        saved = self.connections.get(color)
        for c in live:
            self.deployments[c] = dataclasses.replace(
                self.deployments[c],
                conditions=(Condition("Available", "False"),),
                available_replicas=0,
            )
        ready = self.deployments[color].ready_replicas
        self.set_connections(color, Connections(value=float(value), series=ready))
        self.cycle()
        for c, d in saved_deployments.items():
            if c in self.deployments:
                self.deployments[c] = dataclasses.replace(
                    self.deployments[c],
                    conditions=d.conditions,
                    available_replicas=d.available_replicas,
                )
        if saved is not None and color in self.deployments:
            self.set_connections(color, saved)

    @rule(data=st.data())
    def scale_back_up(self, data: st.DataObject) -> None:
        """A user scales a scaled-down color back up: a rollback's first step."""
        down = sorted(c for c, d in self.deployments.items() if d.replicas == 0)
        if not down:
            return
        color = data.draw(st.sampled_from(down))
        d = self.deployments[color]
        replicas = self.replicas_when_deployed[color]
        self.deployments[color] = dataclasses.replace(
            d,
            replicas=replicas,
            ready_replicas=replicas,
            available_replicas=replicas,
            generation=d.generation + 7,  # the scale and whatever else bumped it
            resource_version=d.resource_version + "u",
        )
        # The metric reads 0 while the new pods start.
        self.set_connections(color, Connections(value=0.0, series=replicas))
        if self.policy.rules[0].knobs.scale_up_grace:
            self.scaled_up[color] = None

    @rule()
    def cycle(self) -> None:
        self.observe()
        snap = self.snapshot()
        live = self.live_colors()
        result = plan(snap, self.policy, self.now)
        by_color = {c.color: c for a in result.apps for c in a.colors}
        knobs = self.policy.rules[0].knobs
        for action in result.actions:
            assert action.color not in self.deleted
            if action.kind is ActionKind.ANNOTATE:
                continue
            target = self.deployments[action.color]
            assert action.color not in live, "a live color was scaled or deleted"
            assert target.annotations.get(PROTECT) != "true", "a protected color was touched"
            assert by_color[action.color].state not in (State.LIVE, State.PENDING)
            grace_until = self.scaled_up.get(action.color, self.now)
            assert grace_until is not None and self.now >= grace_until, (
                "a color scaled back up was scaled or deleted within scaleUpGrace"
            )
            c = snap.connections_for(NS, APP, action.color)
            unknown = c.value is None or (c.series is not None and c.series < target.ready_replicas)
            if action.reason is Reason.DRAINED:
                assert not unknown, "drained on unknown connections"
                assert c.value is not None and c.value <= knobs.connection_floor, "above floor"
                since = self.low_since.get(action.color)
                assert since is not None and self.now - since >= knobs.drain_hold, (
                    "drained without a continuous drain of drainHold"
                )
            elif action.reason in (Reason.MAX_RETIRED_AGE, Reason.MAX_COLORS) and (
                target.replicas > 0 and (unknown or (c.value or 0) > knobs.connection_floor)
            ):
                self.disruptions.append(self.now)
        budget = knobs.max_disruptions
        window = [t for t in self.disruptions if t > self.now - budget.per]
        assert len(window) <= budget.count, "more forced disruptions than maxDisruptions allows"
        for color, until in list(self.scaled_up.items()):
            if color in live:
                del self.scaled_up[color]  # the rollback went through: live, not held
            elif until is None:
                self.scaled_up[color] = self.now + knobs.scale_up_grace
        applied = apply_plan(snap, result)
        remaining = {d.template_labels["color"]: d for d in applied.namespaces[NS].deployments}
        for color in live:
            assert remaining[color].replicas == self.deployments[color].replicas
        for color in self.deployments:
            if color not in remaining:
                self.deleted.add(color)
        self.deployments = remaining
        for color in list(self.connections):
            if color not in remaining:
                del self.connections[color]
            elif remaining[color].replicas == 0:
                # Scaled away: the pods' series go stale and vanish, as in Prometheus.
                del self.connections[color]

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def deleted_colors_never_come_back(self) -> None:
        assert not (self.deleted & set(self.deployments))

    @invariant()
    def protected_colors_are_never_scaled(self) -> None:
        for color, d in self.deployments.items():
            if d.annotations.get(PROTECT) == "true":
                assert d.replicas == self.replicas_when_deployed[color]


BurnDown.TestCase.settings = settings(max_examples=2500, stateful_step_count=40, deadline=None)
TestBurnDown = BurnDown.TestCase
