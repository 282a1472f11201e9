"""Table tests of the planner's unsafe corners: each case was once a way to lose live users.

A color scaled back up, hand-edited annotations of every shape, a drain spanning blocked cycles,
stamps cut to whole seconds, and the hold annotation.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest

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
    Connections,
    Deployment,
    Plan,
    Reason,
    Snapshot,
    State,
)
from rainbowd.core.objects import format_time
from rainbowd.core.planner import Planner, plan
from rainbowd.core.policy import Budget, CleanupAction, Policy
from tests.unit.strategies import (
    APP,
    NOW,
    NS,
    H,
    M,
    ago,
    annotated,
    apply_plan,
    conns,
    deployment,
    policy,
    service,
    snapshot,
    stamp,
)
from tests.unit.test_planner import color, kinds, live_new, note

LIVE_SVC = service({"app": APP, "color": "9d2cc9"})
NOW_STAMP = format_time(NOW)


def disruptive(p: Plan) -> list[tuple[str, ActionKind, Reason]]:
    return [(a.color, a.kind, a.reason) for a in p.actions if a.disruptive]


def both(snap: Snapshot, pol: Policy, at: datetime = NOW) -> Plan:
    """plan() and a fresh Planner agree; the plan."""
    first = plan(snap, pol, at)
    assert Planner().plan(snap, pol, at) == first
    return first


# --- a color scaled back up ------------------------------


def scaled_back_up(**annotations: str) -> Deployment:
    """3c3fdc, scaled to 0 by rainbowd an hour ago after a long drain, now scaled back to 2 by a
    user (the first step of a manual rollback): its pods are not ready yet."""
    marks = {RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(2 * H), ORIGINAL_REPLICAS: "2"}
    marks.update(annotations)
    return deployment("3c3fdc", created=ago(20 * H), replicas=2, ready=0, annotations=marks)


def test_a_color_scaled_back_up_is_not_scaled_down_again_on_its_old_drain_stamp() -> None:
    # The metric reads 0 while the new pods start: the old stamp must not count as a drain.
    snap = snapshot([live_new(), scaled_back_up()], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)})
    p = both(snap, policy(drain_hold=5 * M))
    assert disruptive(p) == []
    c = color(p, "3c3fdc")
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.SCALED_UP)]
    # The drain starts over, with the replicas that exist now.
    assert c.actions[0].annotations == {
        DRAINED_SINCE: NOW_STAMP,
        ORIGINAL_REPLICAS: None,
        SCALED_UP_AT: NOW_STAMP,
    }
    assert c.state is State.PROTECTED and c.drained_since == NOW
    assert "scaled back up" in note(p, c)


def test_a_color_scaled_back_up_is_held_for_the_grace_period_by_every_rule() -> None:
    pol = policy(drain_hold=5 * M, max_retired_age=3 * H, max_colors=1, scale_up_grace=30 * M)
    snap = snapshot([live_new(), scaled_back_up()], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)})
    first = both(snap, pol)
    assert disruptive(first) == []
    applied = apply_plan(snap, first)
    # Drained for the whole drainHold since, retired past maxRetiredAge, over maxColors: held.
    for minutes in (6, 20, 29):
        p = both(applied, pol, NOW + minutes * M)
        assert disruptive(p) == [], minutes
        assert "scaled back up" in note(p, color(p, "3c3fdc"))
        applied = apply_plan(applied, p)
    after = both(applied, pol, NOW + 31 * M)
    assert [d[0] for d in disruptive(after)] == ["3c3fdc"]


def test_a_scaled_up_at_ahead_of_the_clock_is_kept_when_the_color_is_scaled_back_up() -> None:
    # Written by hand or by a clock ahead of ours: it guards the color until then. Moving it back
    # to now would end that guard on the next plan, with no grace to cover it (scaleUpGrace 0),
    # and maxColors would scale the color the user just scaled back up.
    pol = policy(max_colors=1, scale_up_grace=timedelta(0), min_retired_age=timedelta(0))
    ahead = stamp(-30 * M)
    d = scaled_back_up(**{SCALED_UP_AT: ahead})
    snap = snapshot([live_new(), d], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)})
    first = both(snap, pol)
    assert disruptive(first) == []
    (action,) = color(first, "3c3fdc").actions
    assert SCALED_UP_AT not in action.annotations
    again = both(apply_plan(snap, first), pol)
    assert again.actions == ()
    assert color(again, "3c3fdc").state is State.PROTECTED


def test_a_scale_down_cut_short_by_a_crash_is_not_taken_for_a_scale_up() -> None:
    d = deployment(
        "3c3fdc",
        created=ago(20 * H),
        annotations={RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(H)},
    )
    d = dataclasses.replace(d, generation=7)
    snap = snapshot([live_new(), d], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)})
    p = both(snap, policy())
    (action,) = color(p, "3c3fdc").actions
    assert action.kind is ActionKind.SCALE
    assert action.annotations == {ORIGINAL_REPLICAS: "2", SCALE_DOWN_GENERATION: "8"}
    # Killed after the bookkeeping, before /scale: the annotations landed (generation 8), the
    # replicas did not. The next cycle finishes the job instead of holding it as a scale-up.
    landed = dataclasses.replace(d, generation=8, annotations=annotated(d, action.annotations))
    again = both(
        snapshot([live_new(), landed], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)}), policy()
    )
    (retry,) = color(again, "3c3fdc").actions
    assert (retry.kind, retry.reason) == (ActionKind.SCALE, Reason.DRAINED)
    assert retry.annotations == {SCALE_DOWN_GENERATION: "9"}
    # Scaled down, then scaled back up by a user: a later generation, a scale-up.
    back_up = dataclasses.replace(landed, generation=10)
    p = both(snapshot([live_new(), back_up], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)}), policy())
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.ANNOTATE, Reason.SCALED_UP)]


def test_a_scaled_down_color_keeps_no_drain_stamp() -> None:
    # Scaled to 0 by hand with a drain stamp: scaled back up later, it must start a new drain.
    d = deployment(
        "3c3fdc",
        created=ago(20 * H),
        replicas=0,
        annotations={RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(H)},
    )
    p = both(snapshot([live_new(), d], [LIVE_SVC]), policy(keep_scaled_down=3))
    c = color(p, "3c3fdc")
    assert c.state is State.SCALED_DOWN
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.DRAIN_RESET)]
    assert c.actions[0].annotations == {DRAINED_SINCE: None}


def test_a_color_live_again_drops_every_retirement_annotation() -> None:
    back = deployment(
        "3c3fdc",
        created=ago(20 * H),
        annotations={
            LIVE_AT: stamp(20 * H),
            RETIRED_AT: stamp(5 * H),
            ORIGINAL_REPLICAS: "2",
            SCALED_UP_AT: stamp(10 * M),
        },
    )
    newer = deployment("9d2cc9", created=ago(10 * H), annotations={LIVE_AT: stamp(10 * H)})
    svc = service({"app": APP, "color": "3c3fdc"})
    p = both(snapshot([newer, back], [svc], {(NS, APP, "9d2cc9"): conns(9)}), policy())
    c = color(p, "3c3fdc")
    assert c.state is State.LIVE
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.LIVE_AGAIN)]
    assert c.actions[0].annotations == {
        RETIRED_AT: None,
        ORIGINAL_REPLICAS: None,
        SCALED_UP_AT: None,
    }


def test_original_replicas_alone_on_a_live_color_is_cleared() -> None:
    live = deployment("9d2cc9", annotations={LIVE_AT: stamp(10 * H), ORIGINAL_REPLICAS: "3"})
    p = both(snapshot([live], [LIVE_SVC], {(NS, APP, "9d2cc9"): conns(9)}), policy())
    assert color(p, "9d2cc9").actions[0].annotations == {ORIGINAL_REPLICAS: None}


# --- the live-Service match ------------------------------


def test_a_selector_equal_to_a_whole_pod_template_selects_it_on_the_slow_path() -> None:
    # A Service without the app label sends every color of the namespace down the slow path,
    # where each Service is compared with each color: a selector equal to a color's whole
    # pod-template labels selects it (a subset, not only a strict one).
    drained = {RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(H)}
    rolled_back = deployment("3c3fdc", created=ago(20 * H), annotations=drained)
    services = [
        LIVE_SVC,
        service({"tier": "web"}, name="by-tier"),
        service({"app": APP, "color": "3c3fdc"}, name="rollback"),
    ]
    assert rolled_back.template_labels == {"app": APP, "color": "3c3fdc"}
    snap = snapshot([live_new(), rolled_back], services, {(NS, APP, "3c3fdc"): conns(0)})
    p = both(snap, policy())
    assert color(p, "3c3fdc").state is State.LIVE
    assert color(p, "9d2cc9").state is State.LIVE
    assert disruptive(p) == []


# --- hand-edited annotations ------------------------------

EXTREME = (
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-05:00",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00-14:00",
)


@pytest.mark.parametrize("value", EXTREME)
@pytest.mark.parametrize("key", [RETIRED_AT, DRAINED_SINCE, LIVE_AT, SCALED_UP_AT, HOLD_UNTIL])
def test_an_extreme_date_affects_only_its_own_deployment(key: str, value: str) -> None:
    marks = {RETIRED_AT: stamp(5 * H), ORIGINAL_REPLICAS: "2"}
    marks[key] = value
    odd = deployment("3c3fdc", created=ago(20 * H), annotations=marks)
    other_app = "chat"
    chat_live = deployment("aaaaaa", app=other_app, created=ago(H), annotations={LIVE_AT: stamp(H)})
    chat_old = deployment(
        "bbbbbb",
        app=other_app,
        created=ago(30 * H),
        annotations={RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(H)},
    )
    pol = dataclasses.replace(
        policy(max_retired_age=72 * H),
        rules=(*policy(max_retired_age=72 * H).rules, *policy(app=other_app, name="chat").rules),
    )
    snap = snapshot(
        [live_new(), odd, chat_live, chat_old],
        [LIVE_SVC, service({"app": other_app, "color": "aaaaaa"}, name=other_app)],
        {(NS, APP, "3c3fdc"): conns(0), (NS, other_app, "bbbbbb"): conns(0)},
    )
    p = both(snap, pol)
    # The other app is planned as if nothing were odd.
    assert {d[0] for d in disruptive(p)} in ({"bbbbbb"}, {"3c3fdc", "bbbbbb"})
    if key in (RETIRED_AT, DRAINED_SINCE) and value.startswith("9999"):
        # "Hold forever": retired or drained only from the far future, never acted on.
        assert "3c3fdc" not in [d[0] for d in disruptive(p)]
    if key == HOLD_UNTIL and value.startswith("9999"):
        assert color(p, "3c3fdc").state is State.PROTECTED


def test_a_date_before_year_one_in_utc_is_malformed_and_restamped() -> None:
    d = deployment(
        "3c3fdc", created=ago(20 * H), annotations={RETIRED_AT: "0001-01-01T00:00:00+05:00"}
    )
    p = both(snapshot([live_new(), d], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)}), policy())
    c = color(p, "3c3fdc")
    assert c.retired_at == NOW
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.MALFORMED_ANNOTATION)]
    assert any(RETIRED_AT in w for w in p.warnings)


@pytest.mark.parametrize(
    ("value", "protected", "warned"),
    [
        ("true", True, False),
        ("True", True, False),
        ("TRUE", True, False),
        ("yes", True, False),
        ("on", True, False),
        ("1", True, False),
        (" true ", True, False),
        ("y", True, False),
        ("forever please", True, True),
        ("", True, True),
        ("false", False, False),
        ("False", False, False),
        ("NO", False, False),
        ("off", False, False),
        ("0", False, False),
    ],
)
def test_protect_accepts_every_spelling_and_protects_on_doubt(
    value: str, protected: bool, warned: bool
) -> None:
    d = deployment(
        "3c3fdc",
        created=ago(20 * H),
        annotations={RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(H), PROTECT: value},
    )
    p = both(snapshot([live_new(), d], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)}), policy())
    c = color(p, "3c3fdc")
    assert (c.state is State.PROTECTED) is protected
    assert bool(disruptive(p)) is not protected
    assert any(PROTECT in w for w in p.warnings) is warned


# --- the drain is continuous over every sample, blocked cycles included ----------------------


def test_a_sample_above_the_floor_in_a_blocked_cycle_resets_the_drain() -> None:
    pol = policy(drain_hold=30 * M, min_retired_age=0 * M)
    old = deployment("3c3fdc", created=ago(20 * H), annotations={RETIRED_AT: stamp(5 * H)})
    live = live_new()
    snap = snapshot([live, old], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)})
    first = both(snap, pol)
    assert kinds(color(first, "3c3fdc")) == [(ActionKind.ANNOTATE, Reason.DRAIN_STARTED)]
    state = apply_plan(snap, first)
    # The live color becomes unavailable for a while, and 40 users show up on the old one.
    unavailable = dataclasses.replace(
        state.namespaces[NS].deployments[0], available_replicas=0, ready_replicas=0
    )
    assert unavailable.name.endswith("9d2cc9")
    blocked_snap = snapshot(
        [dataclasses.replace(unavailable, conditions=()), state.namespaces[NS].deployments[1]],
        [LIVE_SVC],
        {(NS, APP, "3c3fdc"): conns(40)},
        now=NOW + 10 * M,
    )
    blocked = both(blocked_snap, pol, NOW + 10 * M)
    assert blocked.apps[0].blocked is not None
    assert disruptive(blocked) == []
    c = color(blocked, "3c3fdc")
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.DRAIN_RESET)]
    assert c.actions[0].annotations == {DRAINED_SINCE: None}
    after_block = apply_plan(blocked_snap, blocked)
    # Available again, and the users gone: 40 minutes after the first low sample, but the
    # drain only began now.
    healed = snapshot(
        [live, after_block.namespaces[NS].deployments[1]],
        [LIVE_SVC],
        {(NS, APP, "3c3fdc"): conns(0)},
        now=NOW + 40 * M,
    )
    p = both(healed, pol, NOW + 40 * M)
    assert disruptive(p) == []
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.ANNOTATE, Reason.DRAIN_STARTED)]


def test_an_unknown_sample_in_a_blocked_cycle_resets_the_drain() -> None:
    old = deployment(
        "3c3fdc",
        created=ago(20 * H),
        annotations={RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(M)},
    )
    p = both(snapshot([live_new(), old], [], {}), policy())  # no Service: blocked
    assert p.apps[0].blocked is not None
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.ANNOTATE, Reason.DRAIN_RESET)]


def test_a_color_rolled_back_to_in_a_blocked_cycle_keeps_no_broken_drain() -> None:
    # 3c3fdc is retired and drained since 10 minutes ago; a rollback makes it live again, but
    # the app is blocked (the color is not Available yet) and its connections are unknown: the
    # drain is broken. Switched back, it must not be found drained on its old stamp.
    pol = policy(drain_hold=5 * M, min_retired_age=0 * M)
    drained = {LIVE_AT: stamp(20 * H), RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(10 * M)}
    old = deployment("3c3fdc", created=ago(20 * H), annotations=drained)
    unavailable = dataclasses.replace(old, conditions=(), available_replicas=0)
    rolled_back = service({"app": APP, "color": "3c3fdc"})
    for connections in ({}, {(NS, APP, "3c3fdc"): conns(40)}):
        snap = snapshot([live_new(), unavailable], [rolled_back], connections)
        blocked = both(snap, pol)
        assert blocked.apps[0].blocked is not None
        c = color(blocked, "3c3fdc")
        assert c.state is State.LIVE
        assert kinds(c) == [(ActionKind.ANNOTATE, Reason.DRAIN_RESET)]
        assert c.actions[0].annotations == {DRAINED_SINCE: None}
        reset = apply_plan(snap, blocked).namespaces[NS].deployments[1]
        back = snapshot([live_new(), reset], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)})
        p = both(back, pol, NOW + M)
        assert disruptive(p) == []
        assert kinds(color(p, "3c3fdc")) == [(ActionKind.ANNOTATE, Reason.DRAIN_STARTED)]
    # Its connections at the floor, the drain holds: nothing to reset.
    snap = snapshot([live_new(), unavailable], [rolled_back], {(NS, APP, "3c3fdc"): conns(0)})
    assert both(snap, pol).actions == ()


def test_a_blocked_live_color_with_a_drain_is_planned_again_on_new_connections() -> None:
    # The reuse cache must not take a drained live color's connections for display only.
    pol = policy(drain_hold=5 * M, min_retired_age=0 * M)
    drained = {LIVE_AT: stamp(20 * H), RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(10 * M)}
    old = deployment("3c3fdc", created=ago(20 * H), annotations=drained)
    unavailable = dataclasses.replace(old, conditions=(), available_replicas=0)
    services = [service({"app": APP, "color": "3c3fdc"})]
    newer = deployment(
        "9d2cc9", created=ago(10 * H), annotations={LIVE_AT: stamp(10 * H), RETIRED_AT: stamp(M)}
    )
    planner = Planner()
    quiet = snapshot([newer, unavailable], services, {(NS, APP, "3c3fdc"): conns(0)})
    first = planner.plan(quiet, pol, NOW)
    assert first.actions == ()
    assert planner.plan(quiet, pol, NOW + M).apps[0] is first.apps[0]  # reused
    busy_ = snapshot([newer, unavailable], services, {(NS, APP, "3c3fdc"): conns(40)})
    assert planner.plan(busy_, pol, NOW + 2 * M) == plan(busy_, pol, NOW + 2 * M)
    assert [a.reason for a in plan(busy_, pol, NOW + 2 * M).actions] == [Reason.DRAIN_RESET]


# --- whole-second stamps ------------------------------


def test_the_drain_hold_is_never_short_by_the_fraction_cut_from_its_stamp() -> None:
    pol = policy(drain_hold=5 * M, min_retired_age=0 * M)
    old = deployment("3c3fdc", created=ago(20 * H), annotations={RETIRED_AT: stamp(5 * H)})
    start = NOW + timedelta(milliseconds=800)
    snap = snapshot([live_new(), old], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)}, now=start)
    first = both(snap, pol, start)
    assert kinds(color(first, "3c3fdc")) == [(ActionKind.ANNOTATE, Reason.DRAIN_STARTED)]
    applied = apply_plan(snap, first)
    # 4m59.5s after the first low sample: not yet.
    early = start + 5 * M - timedelta(milliseconds=500)
    assert disruptive(both(applied, pol, early)) == []
    late = start + 5 * M
    assert [d[0] for d in disruptive(both(applied, pol, late + timedelta(seconds=1)))] == ["3c3fdc"]


# --- the hold annotation ------------------------------


def held(value: str, **extra: str) -> Deployment:
    marks = {RETIRED_AT: stamp(80 * H), DRAINED_SINCE: stamp(H), HOLD_UNTIL: value, **extra}
    return deployment("3c3fdc", created=ago(90 * H), annotations=marks)


def test_a_color_held_until_a_future_time_is_never_scaled_or_deleted() -> None:
    d = held(format_time(NOW + 2 * H), **{HOLD_REASON: "incident 42: keep for forensics"})
    pol = policy(max_retired_age=72 * H, max_colors=1)
    p = both(snapshot([live_new(), d], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)}), pol)
    c = color(p, "3c3fdc")
    assert c.state is State.PROTECTED
    assert disruptive(p) == []
    assert "held until" in note(p, c) and "incident 42: keep for forensics" in note(p, c)


def test_a_hold_in_the_past_releases_the_color() -> None:
    d = held(format_time(NOW - M))
    p = both(snapshot([live_new(), d], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)}), policy())
    assert [x[0] for x in disruptive(p)] == ["3c3fdc"]


@pytest.mark.parametrize("value", ["tomorrow", "", "2026-13-01T00:00:00Z", "12:00"])
def test_a_malformed_hold_holds_and_is_reported(value: str) -> None:
    d = held(value)
    p = both(snapshot([live_new(), d], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)}), policy())
    assert color(p, "3c3fdc").state is State.PROTECTED
    assert disruptive(p) == []
    assert any(HOLD_UNTIL in w for w in p.warnings)


def test_a_scaled_down_color_on_hold_is_not_deleted() -> None:
    d = deployment(
        "3c3fdc",
        created=ago(90 * H),
        replicas=0,
        annotations={RETIRED_AT: stamp(80 * H), HOLD_UNTIL: format_time(NOW + H)},
    )
    p = both(snapshot([live_new(), d], [LIVE_SVC]), policy(keep_scaled_down=0))
    assert disruptive(p) == []
    assert color(p, "3c3fdc").state is State.PROTECTED


def test_a_hold_ending_is_a_planner_threshold() -> None:
    d = held(format_time(NOW + 10 * M))
    snap = snapshot([live_new(), d], [LIVE_SVC], {(NS, APP, "3c3fdc"): conns(0)})
    planner = Planner()
    pol = policy()
    assert disruptive(planner.plan(snap, pol, NOW)) == []
    later = NOW + 10 * M + timedelta(seconds=1)
    assert planner.plan(snap, pol, later) == plan(snap, pol, later)
    assert disruptive(planner.plan(snap, pol, later))


# --- the disruption budget is per time, and survives restarts ----------------------------------


def overdue(color_: str, app: str = APP, retired: timedelta = 80 * H) -> Deployment:
    """A color retired past maxRetiredAge 72h, still holding users."""
    return deployment(
        color_, app=app, created=ago(retired + H), annotations={RETIRED_AT: stamp(retired)}
    )


BUDGET = policy(max_retired_age=72 * H, max_disruptions=Budget(1, 10 * M))


def busy(*colors: str, app: str = APP) -> dict[tuple[str, str, str], Connections]:
    return {(NS, app, c): conns(40) for c in colors}


def test_the_disruption_budget_spans_cycles_not_one_cycle() -> None:
    snap = snapshot(
        [live_new(), overdue("aaaaaa", retired=90 * H), overdue("bbbbbb")],
        [LIVE_SVC],
        busy("aaaaaa", "bbbbbb"),
    )
    first = both(snap, BUDGET)
    assert [(c, r) for c, _, r in disruptive(first)] == [("aaaaaa", Reason.MAX_RETIRED_AGE)]
    (scale,) = [a for a in first.actions if a.color == "aaaaaa"]
    assert scale.annotations[DISRUPTED_AT] == NOW_STAMP
    applied = apply_plan(snap, first)
    # rainbowd's own write wakes the next cycle a second later: the budget is still spent.
    soon = both(applied, BUDGET, NOW + timedelta(seconds=1))
    assert disruptive(soon) == []
    assert color(soon, "bbbbbb").held is Reason.MAX_RETIRED_AGE
    assert "maxDisruptions (1 per 10m) is spent" in note(soon, color(soon, "bbbbbb"))
    # A restarted daemon (a fresh Planner) reads the same stamps: still spent.
    assert Planner().plan(applied, BUDGET, NOW + 9 * M) == plan(applied, BUDGET, NOW + 9 * M)
    assert disruptive(plan(applied, BUDGET, NOW + 9 * M)) == []
    later = both(applied, BUDGET, NOW + 10 * M + timedelta(seconds=1))
    assert [c for c, _, _ in disruptive(later)] == ["bbbbbb"]


def test_a_color_recording_a_disruption_is_not_deleted_until_its_window_passes() -> None:
    pol = policy(max_retired_age=72 * H, max_disruptions=Budget(1, 10 * M), keep_scaled_down=0)
    snap = snapshot(
        [live_new(), overdue("aaaaaa", retired=90 * H), overdue("bbbbbb")],
        [LIVE_SVC],
        busy("aaaaaa", "bbbbbb"),
    )
    first = both(snap, pol)
    # With keepScaledDown 0 the forced color would be deleted at once, and its record with it.
    assert [(c, k) for c, k, _ in disruptive(first)] == [("aaaaaa", ActionKind.SCALE)]
    applied = apply_plan(snap, first)
    p = both(applied, pol, NOW + M)
    assert disruptive(p) == []
    assert "records a disruption" in note(p, color(p, "aaaaaa"))
    after = both(applied, pol, NOW + 10 * M + timedelta(seconds=1))
    assert sorted((c, k) for c, k, _ in disruptive(after)) == [
        ("aaaaaa", ActionKind.DELETE),
        ("bbbbbb", ActionKind.SCALE),
    ]


def test_with_action_delete_a_forced_disruption_scales_first_and_deletes_later() -> None:
    pol = policy(
        max_retired_age=72 * H,
        max_disruptions=Budget(1, 10 * M),
        action=CleanupAction.DELETE,
    )
    snap = snapshot([live_new(), overdue("aaaaaa")], [LIVE_SVC], busy("aaaaaa"))
    first = both(snap, pol)
    assert [(c, k) for c, k, _ in disruptive(first)] == [("aaaaaa", ActionKind.SCALE)]
    applied = apply_plan(snap, first)
    assert disruptive(both(applied, pol, NOW + 5 * M)) == []
    after = both(applied, pol, NOW + 11 * M)
    assert disruptive(after) == [("aaaaaa", ActionKind.DELETE, Reason.DISRUPTION_RECORDED)]


def test_the_cluster_wide_budget_bounds_all_apps_together() -> None:
    chat = "chat"
    pol = Policy(
        rules=(
            *policy(max_retired_age=72 * H, max_disruptions=Budget(5, 10 * M)).rules,
            *policy(
                max_retired_age=72 * H, max_disruptions=Budget(5, 10 * M), app=chat, name=chat
            ).rules,
        ),
        max_disruptions=Budget(1, 10 * M),
    )
    chat_live = deployment("aaaaaa", app=chat, created=ago(H), annotations={LIVE_AT: stamp(H)})
    snap = snapshot(
        [live_new(), overdue("3c3fdc"), chat_live, overdue("bbbbbb", app=chat)],
        [LIVE_SVC, service({"app": chat, "color": "aaaaaa"}, name=chat)],
        {**busy("3c3fdc"), **busy("bbbbbb", app=chat)},
    )
    first = both(snap, pol)
    assert len(disruptive(first)) == 1
    applied = apply_plan(snap, first)
    planner = Planner()
    for minutes in (1, 5, 9):
        at = NOW + minutes * M
        p = planner.plan(applied, pol, at)
        assert p == plan(applied, pol, at)
        assert disruptive(p) == []
        assert any("cluster-wide maxDisruptions" in note(p, c) for a in p.apps for c in a.colors)
    after = planner.plan(applied, pol, NOW + 11 * M)
    assert after == plan(applied, pol, NOW + 11 * M)
    assert len(disruptive(after)) == 1


@pytest.mark.parametrize("value", ["garbage", "9999-12-31T23:59:59Z"])
def test_a_garbled_or_future_retired_at_leaves_a_pending_color_pending(value: str) -> None:
    newer = deployment("c0ffee", created=ago(M), annotations={RETIRED_AT: value})
    p = both(
        snapshot([live_new(), newer], [LIVE_SVC], {(NS, APP, "c0ffee"): conns(0)}),
        policy(min_retired_age=0 * M, drain_hold=0 * M),
    )
    assert color(p, "c0ffee").state is State.PENDING
    assert disruptive(p) == []
    assert any(RETIRED_AT in w for w in p.warnings) is (value == "garbage")
