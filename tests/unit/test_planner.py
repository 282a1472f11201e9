"""Table tests of the planner: one case per rule of docs/design.md "What the planner decides"."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from rainbowd.core.model import (
    CONSOLIDATED_AT,
    CONSOLIDATED_FROM,
    DISRUPTED_AT,
    DRAINED_SINCE,
    HOLD_UNTIL,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    PROTECT,
    RETIRED_AT,
    SCALE_DOWN_GENERATION,
    STEPPED_DOWN_AT,
    ActionKind,
    AppPlan,
    BlockReason,
    ColorPlan,
    Connections,
    Deployment,
    Plan,
    PodConnections,
    Reason,
    Service,
    Snapshot,
    State,
)
from rainbowd.core.objects import format_time
from rainbowd.core.planner import plan
from rainbowd.core.policy import Budget, CleanupAction, Consolidate, Policy, StepDown
from rainbowd.core.reporting import plan_to_document, render_note
from tests.unit.strategies import (
    APP,
    NOW,
    NS,
    H,
    M,
    ago,
    apply_plan,
    conns,
    deployment,
    policy,
    rule,
    service,
    snapshot,
    stamp,
)

LIVE_SVC = service({"app": APP, "color": "9d2cc9"})
NOW_STAMP = format_time(NOW)


def app_plan(p: Plan, app: str = APP, namespace: str = NS) -> AppPlan:
    (found,) = [a for a in p.apps if a.app == app and a.namespace == namespace]
    return found


def color(p: Plan, color_: str, app: str = APP) -> ColorPlan:
    (found,) = [c for c in app_plan(p, app).colors if c.color == color_]
    return found


def note(p: Plan, c: ColorPlan) -> str:
    """The color's note in words, as /status and the plan table show it."""
    return render_note(c.note, p.now)


def kinds(c: ColorPlan) -> list[tuple[ActionKind, Reason]]:
    return [(a.kind, a.reason) for a in c.actions]


def live_new() -> Deployment:
    """The live color of most cases: 9d2cc9, created 10h ago, already stamped live."""
    return deployment("9d2cc9", created=ago(10 * H), annotations={LIVE_AT: stamp(10 * H)})


def old(
    color_: str = "3c3fdc",
    *,
    created: timedelta = 20 * H,
    replicas: int = 2,
    ready: int | None = None,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Deployment:
    return deployment(
        color_,
        created=ago(created),
        replicas=replicas,
        ready=ready,
        annotations=annotations,
        labels=labels,
    )


def run(
    deployments: list[Deployment],
    connections: Mapping[str, Connections] | None = None,
    services: list[Service] | None = None,
    pol: Policy | None = None,
) -> Plan:
    snap = snapshot(
        deployments,
        [LIVE_SVC] if services is None else services,
        {(NS, APP, c): v for c, v in (connections or {}).items()},
    )
    return plan(snap, pol or policy(), NOW)


# --- colors, live, pending, retired ------------------------------------------------------------


def test_seed_app_yaml_color_only_in_pod_template() -> None:
    # app.yaml: the Deployment's own labels carry no color; the template does.
    new = deployment("9d2cc9", created=ago(1 * H), labels={"app": APP})
    older = deployment("3c3fdc", created=ago(5 * H), labels={"app": APP})
    assert "color" not in new.labels
    p = run([new, older], {"3c3fdc": conns(4), "9d2cc9": conns(10)})
    assert app_plan(p).blocked is None
    assert color(p, "9d2cc9").state is State.LIVE
    assert kinds(color(p, "9d2cc9")) == [(ActionKind.ANNOTATE, Reason.OBSERVED_LIVE)]
    assert color(p, "9d2cc9").actions[0].annotations == {LIVE_AT: NOW_STAMP}
    retired = color(p, "3c3fdc")
    assert retired.state is State.DRAINING
    assert kinds(retired) == [(ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED)]
    assert retired.actions[0].annotations == {RETIRED_AT: NOW_STAMP}
    assert retired.retired_at == NOW


def test_deployments_without_app_or_color_template_label_are_ignored() -> None:
    no_color = deployment("abc123", template_labels={"app": APP})
    no_app = deployment("def456", template_labels={"color": "def456"})
    p = run([live_new(), no_color, no_app])
    assert [c.name for c in app_plan(p).colors] == [f"{APP}-9d2cc9"]


def test_canary_service_selecting_only_app_makes_every_color_live() -> None:
    a = deployment("9d2cc9", created=ago(1 * H), annotations={LIVE_AT: stamp(1 * H)})
    b = deployment("3c3fdc", created=ago(9 * H), annotations={LIVE_AT: stamp(9 * H)})
    p = run(
        [a, b],
        {"9d2cc9": conns(0), "3c3fdc": conns(0)},
        services=[service({"app": APP})],
        pol=policy(min_retired_age=timedelta(0)),
    )
    assert [c.state for c in app_plan(p).colors] == [State.LIVE, State.LIVE]
    assert p.actions == ()


def test_preview_service_makes_the_previewed_color_live_too() -> None:
    preview = deployment("c0ffee", created=ago(10 * M))
    p = run(
        [live_new(), preview, old(annotations={RETIRED_AT: stamp(5 * H)}, replicas=0)],
        services=[LIVE_SVC, service({"app": APP, "color": "c0ffee"}, name=f"{APP}-preview")],
    )
    assert color(p, "c0ffee").state is State.LIVE
    assert f"{APP}-preview" in note(p, color(p, "c0ffee"))
    assert kinds(color(p, "c0ffee")) == [(ActionKind.ANNOTATE, Reason.OBSERVED_LIVE)]
    assert color(p, "9d2cc9").state is State.LIVE


def test_rollback_newer_color_with_live_at_is_retired_and_old_one_live_again() -> None:
    back = deployment(
        "3c3fdc",
        created=ago(20 * H),
        annotations={LIVE_AT: stamp(20 * H), RETIRED_AT: stamp(2 * H), DRAINED_SINCE: stamp(H)},
    )
    newer = deployment("9d2cc9", created=ago(2 * H), annotations={LIVE_AT: stamp(2 * H)})
    p = run(
        [back, newer],
        {"9d2cc9": conns(30), "3c3fdc": conns(3)},
        services=[service({"app": APP, "color": "3c3fdc"})],
    )
    assert color(p, "3c3fdc").state is State.LIVE
    (again,) = color(p, "3c3fdc").actions
    assert (again.kind, again.reason) == (ActionKind.ANNOTATE, Reason.LIVE_AGAIN)
    assert again.annotations == {RETIRED_AT: None, DRAINED_SINCE: None}
    rolled_back_from = color(p, "9d2cc9")
    assert rolled_back_from.state is State.DRAINING  # retired, not pending: it has live-at
    assert kinds(rolled_back_from) == [(ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED)]


def test_live_again_without_live_at_sets_it_and_clears_retirement_in_one_action() -> None:
    back = deployment("3c3fdc", created=ago(20 * H), annotations={RETIRED_AT: stamp(2 * H)})
    p = run([back], services=[service({"app": APP, "color": "3c3fdc"})])
    (action,) = color(p, "3c3fdc").actions
    assert action.reason is Reason.LIVE_AGAIN
    assert action.annotations == {LIVE_AT: NOW_STAMP, RETIRED_AT: None}


def test_new_color_not_yet_switched_to_is_pending_and_untouched() -> None:
    new = deployment("c0ffee", created=ago(5 * M))
    p = run([live_new(), new], {"c0ffee": conns(0)}, pol=policy(max_colors=1))
    assert color(p, "c0ffee").state is State.PENDING
    assert color(p, "c0ffee").actions == ()
    assert color(p, "c0ffee").retired_at is None


def test_created_at_the_same_instant_as_the_live_color_counts_as_pending() -> None:
    twin = deployment("c0ffee", created=ago(10 * H))
    p = run([live_new(), twin])
    assert color(p, "c0ffee").state is State.PENDING


def test_no_service_blocks_the_app_but_colors_still_get_states() -> None:
    p = run(
        [live_new(), old(annotations={RETIRED_AT: stamp(100 * H)}), deployment("c0ffee")],
        {"3c3fdc": conns(0)},
        services=[],
    )
    a = app_plan(p)
    assert a.blocked is BlockReason.NO_LIVE_COLOR
    assert p.actions == ()
    assert color(p, "3c3fdc").state is State.RETIRED
    assert color(p, "9d2cc9").state is State.RETIRED  # it was live (live-at), nothing selects it
    assert color(p, "c0ffee").state is State.PENDING
    assert all(note(p, c) for c in a.colors)


def test_service_with_empty_selector_makes_nothing_live() -> None:
    p = run([live_new()], services=[service({})])
    assert app_plan(p).blocked is BlockReason.NO_LIVE_COLOR


@pytest.mark.parametrize(
    ("available", "progress_deadline_exceeded", "replicas"),
    [(False, False, 2), (True, True, 2), (True, False, 0)],
    ids=["not-available", "progress-deadline-exceeded", "zero-replicas"],
)
def test_live_color_not_available_blocks_the_app(
    available: bool, progress_deadline_exceeded: bool, replicas: int
) -> None:
    live = deployment(
        "9d2cc9",
        created=ago(H),
        available=available,
        progress_deadline_exceeded=progress_deadline_exceeded,
        replicas=replicas,
    )
    p = run([live, old(annotations={RETIRED_AT: stamp(200 * H)})], {"3c3fdc": conns(0)})
    assert app_plan(p).blocked is BlockReason.LIVE_NOT_AVAILABLE
    assert p.actions == ()
    assert color(p, "9d2cc9").state is State.LIVE
    assert color(p, "3c3fdc").state is State.RETIRED


def test_protected_color_in_blocked_app_is_reported_protected() -> None:
    p = run([old(annotations={PROTECT: "true", RETIRED_AT: stamp(H)})], services=[])
    assert color(p, "3c3fdc").state is State.PROTECTED


# --- drain --------------------------------------------------------------------------------------


def drained_old(
    *,
    created: timedelta = 20 * H,
    replicas: int = 2,
    ready: int | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Deployment:
    marks = {RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(H), **(annotations or {})}
    return old(created=created, replicas=replicas, ready=ready, annotations=marks)


def test_drained_color_is_scaled_down_with_original_replicas() -> None:
    p = run([live_new(), drained_old(replicas=3)], {"3c3fdc": conns(0)})
    c = color(p, "3c3fdc")
    assert c.state is State.DRAINED
    (action,) = c.actions
    assert (action.kind, action.reason) == (ActionKind.SCALE, Reason.DRAINED)
    assert action.annotations == {ORIGINAL_REPLICAS: "3", SCALE_DOWN_GENERATION: "1"}
    assert action.connections == 0
    assert c.drained_since == ago(H) and c.retired_at == ago(5 * H)


def test_existing_original_replicas_is_kept() -> None:
    # A scale-down cut short after its bookkeeping (the generation it wrote is current).
    d = drained_old(annotations={ORIGINAL_REPLICAS: "7", SCALE_DOWN_GENERATION: "0"})
    p = run([live_new(), d], {"3c3fdc": conns(0)})
    assert color(p, "3c3fdc").actions[0].annotations == {SCALE_DOWN_GENERATION: "1"}


def test_connections_at_or_below_floor_start_the_drain_hold() -> None:
    d = old(annotations={RETIRED_AT: stamp(5 * H)})
    p = run([live_new(), d], {"3c3fdc": conns(25)}, pol=policy(connection_floor=25))
    c = color(p, "3c3fdc")
    assert c.state is State.DRAINING
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.DRAIN_STARTED)]
    assert c.actions[0].annotations == {DRAINED_SINCE: NOW_STAMP}
    assert "drainHold" in note(p, c)


def test_drain_hold_not_yet_met_is_draining() -> None:
    d = old(annotations={RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(4 * M)})
    p = run([live_new(), d], {"3c3fdc": conns(0)}, pol=policy(drain_hold=5 * M))
    assert color(p, "3c3fdc").state is State.DRAINING
    assert color(p, "3c3fdc").actions == ()


def test_min_retired_age_not_yet_met_is_draining() -> None:
    d = old(annotations={RETIRED_AT: stamp(20 * M), DRAINED_SINCE: stamp(10 * M)})
    p = run([live_new(), d], {"3c3fdc": conns(0)}, pol=policy(min_retired_age=30 * M))
    c = color(p, "3c3fdc")
    assert c.state is State.DRAINING and c.actions == ()
    assert "minRetiredAge" in note(p, c)


def test_drain_hold_resets_when_connections_rise() -> None:
    p = run([live_new(), drained_old()], {"3c3fdc": conns(1)})
    c = color(p, "3c3fdc")
    assert c.state is State.DRAINING
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.DRAIN_RESET)]
    assert c.actions[0].annotations == {DRAINED_SINCE: None}


def test_unknown_connections_hold_the_color_and_reset_the_drain() -> None:
    p = run([live_new(), drained_old()], {"3c3fdc": conns(None, cause="query failed")})
    c = color(p, "3c3fdc")
    assert c.state is State.UNKNOWN_CONNECTIONS
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.DRAIN_RESET)]
    assert "query failed" in note(p, c)


def test_missing_series_is_unknown_never_zero() -> None:
    p = run([live_new(), drained_old()], {})
    assert color(p, "3c3fdc").state is State.UNKNOWN_CONNECTIONS
    assert not any(a.kind is ActionKind.SCALE for a in p.actions)


def test_non_finite_connections_are_unknown() -> None:
    p = run([live_new(), drained_old()], {"3c3fdc": conns(float("nan"))})
    assert color(p, "3c3fdc").state is State.UNKNOWN_CONNECTIONS


def test_coverage_short_is_unknown() -> None:
    d = drained_old(replicas=2, ready=2)
    p = run([live_new(), d], {"3c3fdc": conns(0, series=1)})
    c = color(p, "3c3fdc")
    assert c.state is State.UNKNOWN_CONNECTIONS
    assert c.connections.cause == "coverage: 1 of 2 ready pods report"
    assert not any(a.reason is Reason.DRAINED for a in c.actions)


def test_full_coverage_is_known() -> None:
    d = drained_old(replicas=2, ready=2)
    p = run([live_new(), d], {"3c3fdc": conns(0, series=2)})
    assert color(p, "3c3fdc").state is State.DRAINED


def test_unknown_color_still_gets_forced_max_retired_age() -> None:
    d = old(annotations={RETIRED_AT: stamp(80 * H)})
    p = run([live_new(), d], {"3c3fdc": conns(None)}, pol=policy(max_retired_age=72 * H))
    c = color(p, "3c3fdc")
    assert c.state is State.UNKNOWN_CONNECTIONS
    assert kinds(c) == [(ActionKind.SCALE, Reason.MAX_RETIRED_AGE)]
    assert "connections unknown" in c.actions[0].message


# --- retired-at ----------------------------------------------------------------------------------


def test_malformed_retired_at_is_treated_as_now_restamped_and_warned() -> None:
    d = old(annotations={RETIRED_AT: "last tuesday", DRAINED_SINCE: stamp(10 * H)})
    p = run([live_new(), d], {"3c3fdc": conns(0)}, pol=policy(max_retired_age=H))
    c = color(p, "3c3fdc")
    assert c.retired_at == NOW
    assert c.state is State.DRAINING  # not "retired long ago": minRetiredAge not met
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.MALFORMED_ANNOTATION)]
    assert c.actions[0].annotations == {RETIRED_AT: NOW_STAMP}
    (warning,) = p.warnings
    assert f"{APP}-3c3fdc" in warning and "last tuesday" in warning


def test_future_retired_at_holds_the_color() -> None:
    d = old(annotations={RETIRED_AT: format_time(NOW + 48 * H), DRAINED_SINCE: stamp(10 * H)})
    p = run([live_new(), d], {"3c3fdc": conns(0)})
    c = color(p, "3c3fdc")
    assert c.state is State.DRAINING and c.actions == ()
    assert p.warnings == ()


# --- forced rules --------------------------------------------------------------------------------


def test_max_retired_age_forces_cleanup_with_connections() -> None:
    d = old(annotations={RETIRED_AT: stamp(73 * H)})
    p = run([live_new(), d], {"3c3fdc": conns(40)}, pol=policy(max_retired_age=72 * H))
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.SCALE, Reason.MAX_RETIRED_AGE)]


def test_max_retired_age_null_never_forces() -> None:
    d = old(annotations={RETIRED_AT: stamp(7000 * H)})
    p = run([live_new(), d], {"3c3fdc": conns(40)}, pol=policy(max_retired_age=None))
    assert color(p, "3c3fdc").actions == ()


def four_retired() -> list[Deployment]:
    return [
        live_new(),
        old("aaaaaa", created=40 * H, annotations={RETIRED_AT: stamp(30 * H)}),
        old("bbbbbb", created=30 * H, annotations={RETIRED_AT: stamp(20 * H)}),
        old("cccccc", created=20 * H, annotations={RETIRED_AT: stamp(15 * H)}),
        old("dddddd", created=15 * H, annotations={RETIRED_AT: stamp(12 * H)}),
    ]


def test_max_colors_cleans_oldest_retired_first_within_disruption_budget() -> None:
    p = run(
        four_retired(),
        {c: conns(50) for c in ("aaaaaa", "bbbbbb", "cccccc", "dddddd")},
        pol=policy(max_colors=2, max_disruptions=Budget(1, 10 * M)),
    )
    assert kinds(color(p, "aaaaaa")) == [(ActionKind.SCALE, Reason.MAX_COLORS)]
    # 4 colors keep replicas after aaaaaa: all three others are due, and held.
    for held in ("bbbbbb", "cccccc", "dddddd"):
        assert color(p, held).actions == ()
        assert color(p, held).held is Reason.MAX_COLORS
        assert "maxDisruptions (1 per 10m) is spent" in note(p, color(p, held))
    assert color(p, "9d2cc9").held is None


def test_max_colors_stops_once_within_the_cap() -> None:
    p = run(
        four_retired(),
        {c: conns(50) for c in ("aaaaaa", "bbbbbb", "cccccc", "dddddd")},
        pol=policy(max_colors=4, max_disruptions=Budget(3, 10 * M)),
    )
    assert kinds(color(p, "aaaaaa")) == [(ActionKind.SCALE, Reason.MAX_COLORS)]
    assert [color(p, c).actions for c in ("bbbbbb", "cccccc", "dddddd")] == [(), (), ()]
    assert all(color(p, c).held is None for c in ("bbbbbb", "cccccc", "dddddd"))


def test_max_colors_cleanups_without_connections_are_not_disruptions() -> None:
    p = run(
        four_retired(),
        {c: conns(0) for c in ("aaaaaa", "bbbbbb", "cccccc", "dddddd")},
        pol=policy(
            max_colors=2, max_disruptions=Budget(0, 10 * M), drain_hold=10 * H, keep_scaled_down=5
        ),
    )
    assert [
        c for c in ("aaaaaa", "bbbbbb", "cccccc") if color(p, c).actions[0].kind is ActionKind.SCALE
    ] == ["aaaaaa", "bbbbbb", "cccccc"]
    assert all(
        color(p, c).actions[0].reason is Reason.MAX_COLORS for c in ("aaaaaa", "bbbbbb", "cccccc")
    )
    assert not any(a.kind is ActionKind.SCALE for a in color(p, "dddddd").actions)


def test_max_colors_counts_pending_and_unmanaged_and_drained_cleanups() -> None:
    colors = [
        *four_retired(),
        deployment("c0ffee", created=ago(M)),  # pending
        old("eeeeee", created=50 * H, labels={"team": "x"}),  # unmanaged
    ]
    known = {"aaaaaa": conns(9), "bbbbbb": conns(9), "cccccc": conns(9), "dddddd": conns(9)}
    # aaaaaa drained (reason DRAINED); 7 running - 1 = 6 > 4: two more, oldest retired first.
    colors[1] = old(
        "aaaaaa", created=40 * H, annotations={RETIRED_AT: stamp(30 * H), DRAINED_SINCE: stamp(H)}
    )
    known["aaaaaa"] = conns(0)
    p = run(
        colors,
        known,
        pol=policy(max_colors=4, max_disruptions=Budget(5, 10 * M), keep_scaled_down=5),
    )
    assert kinds(color(p, "aaaaaa")) == [(ActionKind.SCALE, Reason.DRAINED)]
    assert kinds(color(p, "bbbbbb")) == [(ActionKind.SCALE, Reason.MAX_COLORS)]
    assert kinds(color(p, "cccccc")) == [(ActionKind.SCALE, Reason.MAX_COLORS)]
    assert color(p, "dddddd").actions == ()
    assert color(p, "eeeeee").rule is None and color(p, "eeeeee").actions == ()
    assert color(p, "c0ffee").actions == ()


def test_max_colors_tie_on_retired_at_takes_oldest_created() -> None:
    same = {RETIRED_AT: stamp(5 * H)}
    colors = [
        live_new(),
        old("aaaaaa", created=20 * H, annotations=same),
        old("bbbbbb", created=30 * H, annotations=same),
    ]
    p = run(colors, {"aaaaaa": conns(5), "bbbbbb": conns(5)}, pol=policy(max_colors=2))
    assert color(p, "bbbbbb").actions[0].reason is Reason.MAX_COLORS
    assert color(p, "aaaaaa").actions == ()


# --- cleanup kinds and keepScaledDown --------------------------------------------------------


def scaled(color_: str, created: timedelta) -> Deployment:
    return old(color_, created=created, replicas=0, annotations={RETIRED_AT: stamp(created)})


def test_keep_scaled_down_deletes_beyond_the_newest() -> None:
    colors = [
        live_new(),
        scaled("aaaaaa", 40 * H),
        scaled("bbbbbb", 30 * H),
        scaled("cccccc", 20 * H),
    ]
    p = run(colors, pol=policy(keep_scaled_down=2))
    assert kinds(color(p, "aaaaaa")) == [(ActionKind.DELETE, Reason.KEEP_SCALED_DOWN)]
    assert color(p, "bbbbbb").state is State.SCALED_DOWN and color(p, "bbbbbb").actions == ()
    assert color(p, "cccccc").actions == ()


def test_scale_then_delete_deletes_directly_when_the_scale_would_fall_beyond_keep() -> None:
    colors = [
        live_new(),
        drained_old(created=50 * H),
        scaled("bbbbbb", 30 * H),
        scaled("cccccc", 20 * H),
    ]
    p = run(colors, {"3c3fdc": conns(0)}, pol=policy(keep_scaled_down=2))
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.DELETE, Reason.DRAINED)]
    assert p.actions == color(p, "3c3fdc").actions


def test_scale_then_delete_scaling_a_newer_color_pushes_the_oldest_out() -> None:
    colors = [
        live_new(),
        drained_old(created=15 * H),
        scaled("bbbbbb", 30 * H),
        scaled("cccccc", 20 * H),
    ]
    p = run(colors, {"3c3fdc": conns(0)}, pol=policy(keep_scaled_down=2))
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.SCALE, Reason.DRAINED)]
    assert kinds(color(p, "bbbbbb")) == [(ActionKind.DELETE, Reason.KEEP_SCALED_DOWN)]
    assert color(p, "cccccc").actions == ()


def test_action_scale_never_deletes() -> None:
    colors = [
        live_new(),
        drained_old(created=50 * H),
        scaled("bbbbbb", 30 * H),
        scaled("cccccc", 20 * H),
    ]
    p = run(
        colors, {"3c3fdc": conns(0)}, pol=policy(action=CleanupAction.SCALE, keep_scaled_down=0)
    )
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.SCALE, Reason.DRAINED)]
    assert not any(a.kind is ActionKind.DELETE for a in p.actions)


def test_action_delete_never_scales() -> None:
    colors = [live_new(), drained_old(created=50 * H), scaled("bbbbbb", 30 * H)]
    p = run(colors, {"3c3fdc": conns(0)}, pol=policy(action=CleanupAction.DELETE))
    (action,) = color(p, "3c3fdc").actions
    assert (action.kind, action.reason) == (ActionKind.DELETE, Reason.DRAINED)
    assert action.uid == f"uid-{NS}-{APP}-3c3fdc" and action.resource_version == "1"
    assert color(p, "bbbbbb").actions == ()
    assert not any(a.kind is ActionKind.SCALE for a in p.actions)


def test_delete_drops_bookkeeping_of_the_same_color() -> None:
    d = old(annotations={RETIRED_AT: "garbage"})
    p = run(
        [live_new(), d], {"3c3fdc": conns(0)}, pol=policy(action=CleanupAction.DELETE, max_colors=1)
    )
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.DELETE, Reason.MAX_COLORS)]


def test_scale_carries_the_bookkeeping_of_the_same_color() -> None:
    d = old(annotations={RETIRED_AT: stamp(80 * H), DRAINED_SINCE: stamp(H)})
    p = run([live_new(), d], {"3c3fdc": conns(5)}, pol=policy(max_retired_age=72 * H))
    (action,) = color(p, "3c3fdc").actions
    assert (action.kind, action.reason) == (ActionKind.SCALE, Reason.MAX_RETIRED_AGE)
    assert action.annotations == {
        DRAINED_SINCE: None,
        ORIGINAL_REPLICAS: "2",
        SCALE_DOWN_GENERATION: "1",
        DISRUPTED_AT: NOW_STAMP,  # 5 connections: a disruption, counted by maxDisruptions
    }


# --- abandoned, protect, unmanaged -----------------------------------------------------------


def test_abandoned_pending_color_is_retired() -> None:
    stale = deployment("c0ffee", created=ago(5 * H))
    fresh = deployment("0f0f0f", created=ago(H))
    live = deployment("9d2cc9", created=ago(10 * H), annotations={LIVE_AT: stamp(10 * H)})
    p = run(
        [live, stale, fresh],
        {"c0ffee": conns(0), "0f0f0f": conns(0)},
        pol=policy(abandoned_after=2 * H),
    )
    c = color(p, "c0ffee")
    assert c.state is State.DRAINING
    assert c.actions[0].reason is Reason.ABANDONED
    assert c.actions[0].annotations[RETIRED_AT] == NOW_STAMP
    assert color(p, "0f0f0f").state is State.PENDING


def test_abandoned_after_null_keeps_pending_forever() -> None:
    stale = deployment("c0ffee", created=ago(5000 * H))
    live = deployment("9d2cc9", created=ago(9000 * H), annotations={LIVE_AT: stamp(H)})
    p = run([live, stale], pol=policy(abandoned_after=None, max_colors=1))
    assert color(p, "c0ffee").state is State.PENDING and color(p, "c0ffee").actions == ()


def test_protected_color_is_never_scaled_but_bookkeeping_goes_on() -> None:
    d = old(annotations={PROTECT: "true", DRAINED_SINCE: stamp(10 * H)})
    p = run(
        [live_new(), d],
        {"3c3fdc": conns(0)},
        pol=policy(max_colors=1, max_retired_age=timedelta(0), min_retired_age=timedelta(0)),
    )
    c = color(p, "3c3fdc")
    assert c.state is State.PROTECTED
    assert kinds(c) == [(ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED)]


def test_unmanaged_deployments_are_never_touched() -> None:
    stray = old(labels={"team": "other"}, annotations={RETIRED_AT: stamp(500 * H)})
    p = run([live_new(), stray], {"3c3fdc": conns(0)}, pol=policy(max_colors=1))
    c = color(p, "3c3fdc")
    assert c.rule is None and c.actions == () and c.state is State.RETIRED
    assert color(p, "9d2cc9").rule == "rainbow"


def test_app_without_managed_color_is_left_out() -> None:
    p = run([old(labels={"team": "x"})], pol=policy())
    assert p.apps == ()


def test_rule_namespaces_limit_what_is_managed() -> None:
    pol = Policy(rules=(rule(namespaces=["chat"]),))
    p = run([live_new()], pol=pol)
    assert p.apps == ()


def test_app_knobs_come_from_the_newest_live_colors_rule() -> None:
    strict = rule("strict", app=APP, max_colors=1)
    loose = rule("loose", app=None, max_colors=10)
    live = deployment(
        "9d2cc9", created=ago(10 * H), annotations={LIVE_AT: stamp(H)}, labels={"app": APP}
    )
    other = old(labels={"tier": "x"}, annotations={RETIRED_AT: stamp(H)})
    p = run([live, other], {"3c3fdc": conns(0)}, pol=Policy(rules=(strict, loose)))
    assert app_plan(p).rule == "strict"
    assert color(p, "3c3fdc").rule == "loose"
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.SCALE, Reason.MAX_COLORS)]


# --- dry run, paused, shape of actions -------------------------------------------------------


def test_dry_run_plans_as_usual() -> None:
    p = run([live_new(), drained_old()], {"3c3fdc": conns(0)}, pol=policy(dry_run=True))
    assert p.dry_run
    assert kinds(color(p, "3c3fdc")) == [(ActionKind.SCALE, Reason.DRAINED)]


def test_paused_keeps_bookkeeping_and_holds_scale_downs() -> None:
    d = old(annotations={RETIRED_AT: stamp(5 * H), DRAINED_SINCE: stamp(H)})
    fresh = old("aaaaaa", created=15 * H)
    p = run(
        [live_new(), d, fresh], {"3c3fdc": conns(0), "aaaaaa": conns(9)}, pol=policy(paused=True)
    )
    assert p.paused
    c = color(p, "3c3fdc")
    assert c.actions == () and c.held is Reason.DRAINED
    assert note(p, c).startswith("paused: would scale to 0 (drained)")
    assert kinds(color(p, "aaaaaa")) == [(ActionKind.ANNOTATE, Reason.OBSERVED_RETIRED)]


def test_several_annotation_changes_merge_into_one_action() -> None:
    d = old(annotations={RETIRED_AT: "nonsense", DRAINED_SINCE: stamp(H)})
    p = run([live_new(), d], {"3c3fdc": conns(None)})
    (action,) = color(p, "3c3fdc").actions
    assert action.kind is ActionKind.ANNOTATE
    assert action.annotations == {RETIRED_AT: NOW_STAMP, DRAINED_SINCE: None}
    assert "clear drained-since" in action.message and "set retired-at" in action.message


def test_every_action_and_color_has_words_and_preconditions() -> None:
    p = run(
        [*four_retired(), drained_old()],
        {"aaaaaa": conns(5), "3c3fdc": conns(0)},
        pol=policy(max_colors=3),
    )
    assert p.actions
    for a in p.actions:
        assert a.message and "\n" not in a.message
        assert a.uid and a.resource_version
    for c in app_plan(p).colors:
        assert note(p, c) and "\n" not in note(p, c)


def test_replanning_the_applied_plan_is_a_no_op() -> None:
    snap = snapshot(
        [*four_retired(), drained_old(), deployment("c0ffee", created=ago(M))],
        [LIVE_SVC],
        {(NS, APP, "3c3fdc"): conns(0), (NS, APP, "bbbbbb"): conns(2)},
    )
    pol = policy(max_colors=3, max_disruptions=Budget(3, 10 * M), keep_scaled_down=1)
    first = plan(snap, pol, NOW)
    assert first.actions
    again = plan(apply_plan(snap, first), pol, NOW)
    assert again.actions == ()


def test_colors_are_listed_newest_first_and_apps_sorted() -> None:
    other = deployment("111111", app="chat", labels={"app": "chat"})
    pol = Policy(rules=(rule(app=None),))
    p = run([old(), live_new(), other], pol=pol)
    assert [(a.namespace, a.app) for a in p.apps] == [(NS, "chat"), (NS, APP)]
    assert [c.color for c in app_plan(p).colors] == ["9d2cc9", "3c3fdc"]


# --- consolidate -------------------------------------------------------------------------------

CONSOLIDATING: dict[str, Any] = {"consolidate": Consolidate(after=30 * M, every=5 * M, keep_pods=1)}
FOUR_PODS = PodConnections(pods={"p-a": 3, "p-b": 2, "p-c": 0, "p-d": 0})


def with_pods(
    deployments: list[Deployment],
    figures: Mapping[str, PodConnections],
    connections: Mapping[str, Connections],
) -> Snapshot:
    """A snapshot with the colors' per-pod figures, as the pipeline gives them."""
    snap = snapshot(deployments, [LIVE_SVC], {(NS, APP, c): v for c, v in connections.items()})
    ns = snap.namespaces[NS]
    pods = {(APP, c): f for c, f in figures.items()}
    return dataclasses.replace(snap, namespaces={NS: dataclasses.replace(ns, pods=pods)})


def consolidating(
    deployments: list[Deployment],
    figures: Mapping[str, PodConnections],
    *,
    connections: Mapping[str, Connections],
    pol: Policy | None = None,
) -> Plan:
    return plan(with_pods(deployments, figures, connections), pol or policy(**CONSOLIDATING), NOW)


def retired_four(color_: str = "3c3fdc", **annotations: str) -> Deployment:
    return old(color_, replicas=4, annotations={RETIRED_AT: stamp(H), **annotations})


def test_a_draining_color_gives_back_its_idle_pods_with_its_record() -> None:
    snap = with_pods(
        [live_new(), retired_four()], {"3c3fdc": FOUR_PODS}, {"3c3fdc": conns(5, series=4)}
    )
    p = plan(snap, policy(**CONSOLIDATING), NOW)
    c = color(p, "3c3fdc")
    (action,) = c.actions
    assert (action.kind, action.reason) == (ActionKind.CONSOLIDATE, Reason.IDLE_PODS)
    assert action.step is not None and action.step.removed == ("p-c", "p-d")
    assert action.annotations == {CONSOLIDATED_AT: NOW_STAMP, CONSOLIDATED_FROM: "4"}
    assert action.message == (
        "scale rainbow-deploys-3c3fdc from 4 to 2 pods: 2 of 4 pods hold no connections: "
        "4 -> 2 pods (keepPods 1), removing p-c (0), p-d (0)"
    )
    assert note(p, c).endswith("removing p-c (0), p-d (0)")
    (doc,) = [d for a in plan_to_document(p)["apps"] for d in a["colors"] if d["color"] == "3c3fdc"]
    assert doc["actions"][0]["step"] == {
        "replicas": 2,
        "removed": ["p-c", "p-d"],
        "pods": {"p-a": 3, "p-b": 2, "p-c": 0, "p-d": 0},
        "costs": {"p-a": 3, "p-b": 2, "p-c": 0, "p-d": 0},
    }
    # Applied, the next cycle waits `every` (the plan says when it next changes).
    after = plan(apply_plan(snap, p), policy(**CONSOLIDATING), NOW)
    assert color(after, "3c3fdc").replicas == 2
    assert color(after, "3c3fdc").actions == ()


def test_live_pending_protected_and_held_colors_are_never_consolidated() -> None:
    live = deployment(
        "9d2cc9", replicas=4, created=ago(10 * H), annotations={LIVE_AT: stamp(10 * H)}
    )
    pending = deployment("aaaaaa", replicas=4, created=ago(H))
    protected = retired_four("bbbbbb", **{PROTECT: "true"})
    held = retired_four("cccccc", **{HOLD_UNTIL: format_time(NOW + H)})
    figures = {c: FOUR_PODS for c in ("9d2cc9", "aaaaaa", "bbbbbb", "cccccc")}
    counts = {c: conns(5, series=4) for c in figures}
    p = consolidating([live, pending, protected, held], figures, connections=counts)
    for c in app_plan(p).colors:
        assert all(a.kind is not ActionKind.CONSOLIDATE for a in c.actions), c.color


def test_consolidation_without_complete_figures_says_why_and_does_nothing() -> None:
    unlabelled = PodConnections(unavailable='4 of its series have no "pod" label')
    p = consolidating(
        [live_new(), retired_four()],
        {"3c3fdc": unlabelled},
        connections={"3c3fdc": conns(5, series=4)},
    )
    c = color(p, "3c3fdc")
    assert c.actions == ()
    assert note(p, c) == (
        "draining: 5 connections > floor 0; consolidation unavailable: 4 of its series have no "
        '"pod" label'
    )
    # Coverage short (3 of 4 ready pods report): unknown, so unavailable too.
    p = consolidating(
        [live_new(), retired_four()],
        {"3c3fdc": FOUR_PODS},
        connections={"3c3fdc": conns(5, series=3)},
    )
    assert color(p, "3c3fdc").actions == ()
    assert "consolidation unavailable: connections unknown" in note(p, color(p, "3c3fdc"))


def test_paused_holds_a_consolidation() -> None:
    pol = policy(paused=True, **CONSOLIDATING)
    p = consolidating(
        [live_new(), retired_four()],
        {"3c3fdc": FOUR_PODS},
        connections={"3c3fdc": conns(5, series=4)},
        pol=pol,
    )
    c = color(p, "3c3fdc")
    assert c.actions == () and c.held is Reason.IDLE_PODS
    assert note(p, c).startswith("paused: would give back pods (idle-pods)")


def test_a_step_down_spends_the_disruption_budget_or_is_held() -> None:
    knobs: dict[str, Any] = {**CONSOLIDATING, "step_down": StepDown(every=H, max_pods=1)}
    busy = PodConnections(pods={"p-a": 3, "p-b": 1})
    two = old(replicas=2, annotations={RETIRED_AT: stamp(H)})
    p = consolidating(
        [live_new(), two],
        {"3c3fdc": busy},
        connections={"3c3fdc": conns(4, series=2)},
        pol=policy(**knobs),
    )
    (action,) = color(p, "3c3fdc").actions
    assert (action.kind, action.reason) == (ActionKind.CONSOLIDATE, Reason.STEP_DOWN)
    assert action.step is not None and action.step.removed == ("p-b",)
    assert action.annotations[DISRUPTED_AT] == NOW_STAMP
    assert action.annotations[STEPPED_DOWN_AT] == NOW_STAMP
    # Another color's disruption 2m ago spends the app's budget (1 per 10m): held.
    spent = old(
        "dddddd",
        created=30 * H,
        replicas=0,
        annotations={RETIRED_AT: stamp(9 * H), DISRUPTED_AT: stamp(2 * M)},
    )
    p = consolidating(
        [live_new(), two, spent],
        {"3c3fdc": busy},
        connections={"3c3fdc": conns(4, series=2)},
        pol=policy(**knobs),
    )
    c = color(p, "3c3fdc")
    assert c.actions == () and c.held is Reason.STEP_DOWN
    assert "but maxDisruptions (1 per 10m) is spent for this app" in note(p, c)
