"""Argo Rollout colors: a blueGreen Rollout's ReplicaSets in the one model of a color (objects),
live and pending by its active and preview Services (grouping), and what the planner's
decisions mean for them (deadlines, actions): a scale-down is the ReplicaSet's
scale-down-deadline set to now, a held one has it kept ahead of now, never past what
maxRetiredAge allows; the rules are those of every color."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from rainbowd.core.model import (
    DRAINED_SINCE,
    LIVE_AT,
    ORIGINAL_REPLICAS,
    PROTECT,
    RETIRED_AT,
    ROLLOUT_HASH,
    ROLLOUT_REVISION,
    SCALE_DOWN_DEADLINE,
    SCALE_DOWN_GENERATION,
    ActionKind,
    ColorPlan,
    Deployment,
    Plan,
    Reason,
    Service,
    State,
    WorkloadKind,
)
from rainbowd.core.objects import (
    format_time,
    replicaset_from_k8s,
    rollout_colors,
    rollout_from_k8s,
)
from rainbowd.core.planner import Planner, plan
from rainbowd.core.policy import WORKLOAD_KINDS, CleanupAction, Policy
from rainbowd.core.snapshots import snapshot_from_document, snapshot_to_document
from tests.unit import strategies
from tests.unit.strategies import APP, NOW, NS, H, M, ago, conns, service, snapshot, stamp

NEW, OLD, OLDER = "6d4f8b9c7", "5c8d7e6f5", "4b7c6d5e4"
ACTIVE = service({"app": APP, ROLLOUT_HASH: NEW}, name=f"{APP}-active")


def policy(**knobs: Any) -> Policy:
    """The seed's rule, taking Argo Rollouts' colors too (a rule takes Deployments only unless
    its `kinds` says so)."""
    return strategies.policy(kinds=WORKLOAD_KINDS, **knobs)


def rollout_doc(
    name: str = APP,
    *,
    strategy: str = "blueGreen",
    preview: str | None = None,
    revision_limit: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    blue_green: dict[str, Any] = {"activeService": f"{name}-active", "scaleDownDelaySeconds": 30}
    if preview is not None:
        blue_green["previewService"] = preview
    if revision_limit is not None:
        blue_green["scaleDownDelayRevisionLimit"] = revision_limit
    spec = {"strategy": {"blueGreen": blue_green} if strategy == "blueGreen" else {"canary": {}}}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-rollout-{name}",
            "labels": {"app": APP} if labels is None else dict(labels),
        },
        "spec": spec,
    }


def rs_doc(
    hash_: str,
    *,
    rollout: str = APP,
    created: timedelta = 10 * H,
    replicas: int = 2,
    annotations: Mapping[str, str] | None = None,
    generation: int = 3,
    controller: bool = True,
    revision: int = 2,
) -> dict[str, Any]:
    """A ReplicaSet as Argo Rollouts makes it: labelled with its hash, owned by the Rollout."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{rollout}-{hash_}",
            "namespace": NS,
            "uid": f"uid-rs-{hash_}",
            "resourceVersion": "7",
            "generation": generation,
            "creationTimestamp": format_time(ago(created)),
            "labels": {"app": APP, ROLLOUT_HASH: hash_},
            "annotations": {
                ROLLOUT_REVISION: str(revision),
                "rollout.argoproj.io/desired-replicas": str(replicas),
                **(annotations or {}),
            },
            "ownerReferences": [
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Rollout",
                    "name": rollout,
                    "uid": f"uid-rollout-{rollout}",
                    "controller": controller,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": {"app": APP, ROLLOUT_HASH: hash_}}},
        },
        "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas},
    }


def colors(*replicasets: dict[str, Any], rollout: dict[str, Any] | None = None) -> list[Deployment]:
    r = rollout_from_k8s(rollout or rollout_doc())
    return rollout_colors([replicaset_from_k8s(d) for d in replicasets], {(r.namespace, r.name): r})


def live() -> dict[str, Any]:
    return rs_doc(NEW, created=2 * H, annotations={LIVE_AT: stamp(2 * H)}, revision=3)


def retired(
    hash_: str = OLD,
    *,
    deadline: datetime | None = None,
    drained: bool = True,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A color retired 5h ago, drained for 4h (due for the drained rule), or not drained."""
    stamps = {LIVE_AT: stamp(10 * H), RETIRED_AT: stamp(5 * H)}
    if drained:
        stamps[DRAINED_SINCE] = stamp(4 * H)
    if deadline is not None:
        stamps[SCALE_DOWN_DEADLINE] = format_time(deadline)
    return rs_doc(hash_, created=10 * H, annotations={**stamps, **(annotations or {})})


def run(
    deployments: list[Deployment],
    connections: Mapping[str, float | None] | None = None,
    services: list[Service] | None = None,
    pol: Policy | None = None,
    now: datetime = NOW,
) -> Plan:
    figures = {(NS, APP, c): conns(v, series=None) for c, v in (connections or {}).items()}
    snap = snapshot(deployments, [ACTIVE] if services is None else services, figures, now=now)
    return plan(snap, pol or policy(), now)


def color(p: Plan, hash_: str) -> ColorPlan:
    (found,) = [c for a in p.apps for c in a.colors if c.color == hash_]
    return found


# --- the model --------------------------------------------------------------------------------


def test_a_rollouts_replicaset_is_a_color_of_the_one_model() -> None:
    (c,) = colors(retired(deadline=NOW + M))
    assert c.kind is WorkloadKind.ROLLOUT
    assert c.name == f"{APP}-{OLD}"
    assert c.color_of("color") == OLD  # its color is the hash, whatever the color label
    assert c.labels == {"app": APP}  # the Rollout's: what rules select
    assert c.rollout is not None and c.rollout.active_service == f"{APP}-active"
    # Argo Rollouts' deadline is kept beside rainbowd's annotations, nothing else of theirs.
    assert c.annotations[SCALE_DOWN_DEADLINE] == format_time(NOW + M)
    assert c.annotations[ROLLOUT_REVISION] == "2"  # the order of the revision limit
    assert "rollout.argoproj.io/desired-replicas" not in c.annotations
    assert not c.annotating_bumps_generation
    # A ReplicaSet has no Available condition: its available pods say it.
    assert c.available


def test_only_the_replicasets_of_a_blue_green_rollout_are_colors() -> None:
    assert colors(retired(), rollout=rollout_doc(strategy="canary")) == []
    assert colors(rs_doc(OLD, rollout="other")) == []
    assert colors(rs_doc(OLD, controller=False)) == []


def test_a_rollout_color_reads_back_from_a_snapshot_file() -> None:
    p = policy()
    snap = snapshot([*colors(live(), retired(deadline=NOW))], [ACTIVE])
    again = snapshot_from_document(snapshot_to_document(snap), default_now=NOW)
    assert again.namespaces[NS].deployments == snap.namespaces[NS].deployments
    assert plan(again, p, NOW) == plan(snap, p, NOW)


# --- live, pending, retired -------------------------------------------------------------------


def test_live_is_what_the_active_service_selects_and_pending_what_the_preview_does() -> None:
    preview = service({"app": APP, ROLLOUT_HASH: OLD}, name=f"{APP}-preview")
    deployments = colors(live(), retired(), rollout=rollout_doc(preview=f"{APP}-preview"))
    p = run(deployments, {NEW: 0, OLD: 0}, services=[ACTIVE, preview])
    assert color(p, NEW).state is State.LIVE
    # An older color back in preview (a rollback on its way) is pending: never scaled down,
    # whatever its retired stamps say.
    assert color(p, OLD).state is State.PENDING
    assert color(p, OLD).actions == ()
    # Without the preview Service it is the retired, drained color it was.
    p = run(deployments, {NEW: 0, OLD: 0}, services=[ACTIVE])
    assert color(p, OLD).state is State.DRAINED


def test_a_service_other_than_the_active_one_does_not_make_a_color_live() -> None:
    other = service({"app": APP, ROLLOUT_HASH: OLD}, name="someone-elses")
    p = run(colors(live(), retired()), {NEW: 0, OLD: 0}, services=[ACTIVE, other])
    assert color(p, NEW).state is State.LIVE
    assert color(p, OLD).state is State.DRAINED


# --- what a scale-down means ------------------------------------------------------------------


def test_a_drained_rollout_color_gets_its_deadline_set_to_now() -> None:
    p = run(colors(live(), retired(deadline=NOW + 10 * M)), {NEW: 5, OLD: 0})
    (action,) = color(p, OLD).actions
    assert (action.kind, action.reason) == (ActionKind.SCALE, Reason.DRAINED)
    assert action.workload is WorkloadKind.ROLLOUT
    assert (action.rollout, action.rollout_uid) == (APP, f"uid-rollout-{APP}")
    assert action.annotations[SCALE_DOWN_DEADLINE] == format_time(NOW)
    assert action.annotations[ORIGINAL_REPLICAS] == "2"
    # Annotating a ReplicaSet leaves its generation: the marker is the generation as it is.
    assert action.annotations[SCALE_DOWN_GENERATION] == "3"
    assert "scale-down-deadline" in action.message
    assert color(p, NEW).actions == ()


def test_a_rule_that_does_not_name_rollouts_leaves_their_colors_alone() -> None:
    # The same drained color under a rule of Deployments only (no `kinds`): unmanaged.
    deployments = colors(live(), retired(deadline=NOW + 10 * M))
    assert run(deployments, {NEW: 5, OLD: 0}).actions  # taken by a rule naming Rollouts
    p = run(deployments, {NEW: 5, OLD: 0}, pol=strategies.policy())
    assert p.actions == ()
    assert all(c.rule is None for app in p.apps for c in app.colors)


def test_a_scale_down_already_asked_of_argo_rollouts_is_not_asked_again() -> None:
    asked = retired(
        deadline=NOW - M, annotations={ORIGINAL_REPLICAS: "2", SCALE_DOWN_GENERATION: "3"}
    )
    p = run(colors(live(), asked), {NEW: 5, OLD: 0})
    assert color(p, OLD).state is State.DRAINED
    assert color(p, OLD).actions == ()


def test_a_rollout_color_is_never_deleted_by_rainbowd() -> None:
    """Argo Rollouts deletes old ReplicaSets itself (revisionHistoryLimit): a delete due on a
    scaled-down color is nothing to do, and one due on a color with replicas is its deadline."""
    gone = [rs_doc(h, created=(20 + i) * H, replicas=0) for i, h in enumerate(("a1", "a2", "a3"))]
    for d in gone:
        d["metadata"]["annotations"].update({LIVE_AT: stamp(30 * H), RETIRED_AT: stamp(25 * H)})
    pol = policy(action=CleanupAction.DELETE, keep_scaled_down=0)
    p = run(colors(live(), retired(deadline=NOW + M), *gone), {NEW: 5, OLD: 0}, pol=pol)
    assert [a.kind for a in color(p, OLD).actions] == [ActionKind.SCALE]
    assert color(p, OLD).actions[0].annotations[SCALE_DOWN_DEADLINE] == format_time(NOW)
    assert all(a.kind is not ActionKind.DELETE for a in p.actions)
    assert all(color(p, h).actions == () for h in ("a1", "a2", "a3"))


# --- a held color's deadline ------------------------------------------------------------------


def test_a_color_holding_connections_has_its_deadline_kept_ahead() -> None:
    """Argo Rollouts stamped it 30 s ahead; it holds 4 connections: moved to deadlineAhead."""
    p = run(
        colors(live(), retired(drained=False, deadline=NOW + timedelta(seconds=30))),
        {NEW: 5, OLD: 4},
    )
    c = color(p, OLD)
    assert c.state is State.DRAINING
    (action,) = c.actions
    assert (action.kind, action.reason) == (ActionKind.ANNOTATE, Reason.DEADLINE_KEPT)
    assert action.annotations == {SCALE_DOWN_DEADLINE: format_time(NOW + 10 * M)}
    assert not action.disruptive


def test_a_deadline_far_enough_ahead_is_left_and_replanned_when_it_is_not() -> None:
    """More than half of deadlineAhead away: nothing written; the planner's memo plans again
    at the instant it is half away (the deadline is a threshold like any other)."""
    deployments = colors(live(), retired(drained=False, deadline=NOW + 8 * M))
    planner = Planner()
    figures = {(NS, APP, NEW): conns(5), (NS, APP, OLD): conns(4)}
    snap = snapshot(deployments, [ACTIVE], figures)
    assert planner.plan(snap, policy(), NOW).actions == ()

    def at(now: datetime) -> Plan:
        return planner.plan(snapshot(deployments, [ACTIVE], figures, now=now), policy(), now)

    assert at(NOW + 3 * M - timedelta(microseconds=1)).actions == ()
    (action,) = at(NOW + 3 * M).actions
    assert action.annotations == {SCALE_DOWN_DEADLINE: format_time(NOW + 13 * M)}


@pytest.mark.parametrize("value", [None, 3.0])
def test_unknown_connections_keep_the_deadline_too(value: float | None) -> None:
    p = run(colors(live(), retired(drained=False, deadline=NOW)), {NEW: 5, OLD: value})
    (action,) = color(p, OLD).actions
    assert action.reason is Reason.DEADLINE_KEPT


def test_the_deadline_is_kept_no_later_than_max_retired_age_allows() -> None:
    """Retired 5h ago, maxRetiredAge 5h20m, a lead of 30m: the deadline goes to the 20 minutes
    left, not the lead's; nearer than half the lead it is the lead again (the rule decides at
    maxRetiredAge, Argo Rollouts' timer never races it)."""
    pol = policy(max_retired_age=5 * H + 20 * M, deadline_ahead=30 * M)
    p = run(colors(live(), retired(drained=False, deadline=NOW)), {NEW: 5, OLD: 4}, pol=pol)
    (action,) = color(p, OLD).actions
    assert action.annotations[SCALE_DOWN_DEADLINE] == format_time(NOW + 20 * M)
    # 20 minutes left is less than half of a 1h lead: the lead.
    pol = policy(max_retired_age=5 * H + 20 * M, deadline_ahead=H)
    p = run(colors(live(), retired(drained=False, deadline=NOW)), {NEW: 5, OLD: 4}, pol=pol)
    (action,) = color(p, OLD).actions
    assert action.annotations[SCALE_DOWN_DEADLINE] == format_time(NOW + H)
    pol = policy(max_retired_age=5 * H + 20 * M, deadline_ahead=10 * M)
    p = run(colors(live(), retired(drained=False, deadline=NOW)), {NEW: 5, OLD: 4}, pol=pol)
    (action,) = color(p, OLD).actions
    assert action.annotations[SCALE_DOWN_DEADLINE] == format_time(NOW + 10 * M)
    pol = policy(max_retired_age=5 * H + 2 * M, deadline_ahead=10 * M)
    p = run(colors(live(), retired(drained=False, deadline=NOW)), {NEW: 5, OLD: 4}, pol=pol)
    (action,) = color(p, OLD).actions
    assert action.annotations[SCALE_DOWN_DEADLINE] == format_time(NOW + 10 * M)


def test_a_longer_deadline_is_left_even_past_max_retired_age() -> None:
    """Argo Rollouts' own timer (a long scaleDownDelaySeconds) is never shortened for a held
    color: only a scale-down moves a deadline earlier."""
    pol = policy(max_retired_age=5 * H + 20 * M, deadline_ahead=30 * M)
    p = run(colors(live(), retired(drained=False, deadline=NOW + 2 * H)), {NEW: 5, OLD: 4}, pol=pol)
    assert color(p, OLD).actions == ()


def test_without_a_deadline_argo_rollouts_timer_is_not_running_and_nothing_is_written() -> None:
    p = run(colors(live(), retired(drained=False)), {NEW: 5, OLD: 4})
    assert color(p, OLD).actions == ()


def test_protect_holds_a_drained_color_through_its_deadline() -> None:
    """Protected: never scaled down, as a Deployment; for a Rollout color that means its
    deadline kept ahead, whatever its connections and age."""
    guarded = retired(deadline=NOW + M, annotations={PROTECT: "true"})
    p = run(colors(live(), guarded), {NEW: 5, OLD: 0}, pol=policy(max_retired_age=H))
    c = color(p, OLD)
    assert c.state is State.PROTECTED
    (action,) = c.actions
    assert action.kind is ActionKind.ANNOTATE
    assert action.annotations == {SCALE_DOWN_DEADLINE: format_time(NOW + 10 * M)}


def test_paused_holds_the_scale_down_and_keeps_the_deadline_of_a_held_color() -> None:
    pol = policy(paused=True)
    p = run(colors(live(), retired(deadline=NOW + M)), {NEW: 5, OLD: 0}, pol=pol)
    assert color(p, OLD).actions == ()
    assert color(p, OLD).held is Reason.DRAINED
    p = run(colors(live(), retired(drained=False, deadline=NOW + M)), {NEW: 5, OLD: 4}, pol=pol)
    assert [a.reason for a in color(p, OLD).actions] == [Reason.DEADLINE_KEPT]


def test_a_bad_deadline_on_one_rollout_affects_only_it() -> None:
    other_app = "chat"
    other_rollout = rollout_doc("chat", labels={"app": APP})
    other = rs_doc("c0ffee", rollout="chat", annotations={LIVE_AT: stamp(H)})
    other["spec"]["template"]["metadata"]["labels"]["app"] = other_app
    other_old = retired("c0ffe0", deadline=NOW + M)
    other_old["metadata"]["name"] = "chat-c0ffe0"
    other_old["metadata"]["ownerReferences"][0]["name"] = "chat"
    other_old["spec"]["template"]["metadata"]["labels"]["app"] = other_app
    bad = retired(drained=False, annotations={SCALE_DOWN_DEADLINE: "tomorrow"})
    deployments = [
        *colors(live(), bad),
        *colors(other, other_old, rollout=other_rollout),
    ]
    chat_active = service({"app": other_app, ROLLOUT_HASH: "c0ffee"}, name="chat-active")
    figures = {
        (NS, APP, NEW): conns(5),
        (NS, APP, OLD): conns(4),
        (NS, other_app, "c0ffee"): conns(5),
        (NS, other_app, "c0ffe0"): conns(0),
    }
    p = plan(snapshot(deployments, [ACTIVE, chat_active], figures), policy(app=None), NOW)
    assert any(SCALE_DOWN_DEADLINE in w and "tomorrow" in w for w in p.warnings)
    assert all(f"{APP}-{OLD}" in w for w in p.warnings)
    (fixed,) = color(p, OLD).actions
    assert fixed.annotations == {SCALE_DOWN_DEADLINE: format_time(NOW + 10 * M)}
    (scaled,) = color(p, "c0ffe0").actions
    assert scaled.kind is ActionKind.SCALE
    assert scaled.annotations[SCALE_DOWN_DEADLINE] == format_time(NOW)


# --- scaleDownDelayRevisionLimit ---------------------------------------------------------------


def test_a_revision_limit_that_would_cut_a_held_color_is_warned_about() -> None:
    """Limit 1: at the next promotion the live color becomes the one old ReplicaSet kept on its
    deadline, and OLD, holding 4 connections, is scaled down at once: warned, with the limit
    that keeps it (2). OLDER holds none: nothing to warn about."""
    older = rs_doc(OLDER, created=20 * H, annotations={LIVE_AT: stamp(20 * H)}, revision=1)
    older["metadata"]["annotations"][RETIRED_AT] = stamp(10 * H)
    deployments = colors(
        live(), retired(drained=False), older, rollout=rollout_doc(revision_limit=1)
    )
    p = run(deployments, {NEW: 5, OLD: 4, OLDER: 0})
    (warning,) = p.warnings
    assert warning.startswith(f"{NS}/{APP}-{OLD}: warning: at the next promotion")
    assert "scaleDownDelayRevisionLimit 1 scales it down" in warning
    assert "scaleDownDelayRevisionLimit 2 keeps it" in warning
    from rainbowd.core.reporting import render_note

    assert "scaleDownDelayRevisionLimit 2 keeps it" in render_note(color(p, OLD).note, p.now)
    assert "RevisionLimit" not in render_note(color(p, OLDER).note, p.now)
    # A limit of 2 keeps it: no warning.
    deployments = colors(
        live(), retired(drained=False), older, rollout=rollout_doc(revision_limit=2)
    )
    assert run(deployments, {NEW: 5, OLD: 4, OLDER: 0}).warnings == ()


def test_a_revision_limit_of_zero_warns_about_the_live_color() -> None:
    deployments = colors(live(), rollout=rollout_doc(revision_limit=0))
    (warning,) = run(deployments, {NEW: 5}).warnings
    assert warning.startswith(f"{NS}/{APP}-{NEW}:")
    assert "scaleDownDelayRevisionLimit 1 keeps it" in warning


# --- the kind shown -----------------------------------------------------------------------------


def test_the_plan_table_status_document_and_metrics_show_the_kind() -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from rainbowd.core.reporting import plan_rows, plan_to_document
    from rainbowd.metrics import Metrics
    from rainbowd.status import plan_from_document
    from tests.unit.strategies import deployment

    plain = deployment("9d2cc9", annotations={LIVE_AT: stamp(H)})
    p = run(colors(live(), retired(drained=False, deadline=NOW + H)), {NEW: 5, OLD: 4})
    rows = {row[2] for row in plan_rows(p)}
    assert rows == {f"{NEW} (Rollout)", f"{OLD} (Rollout)"}
    document = plan_to_document(p)
    assert {c["kind"] for a in document["apps"] for c in a["colors"]} == {"Rollout"}
    again = plan_from_document(document)
    assert {c.kind for a in again.apps for c in a.colors} == {WorkloadKind.ROLLOUT}
    metrics = Metrics()
    metrics.observe_plan(p)
    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    info = {
        (s.labels["color"], s.labels["kind"], s.labels["name"])
        for s in families["rainbowd_color_info"].samples
    }
    assert info == {(NEW, "Rollout", f"{APP}-{NEW}"), (OLD, "Rollout", f"{APP}-{OLD}")}
    # A Deployment's color reads as before.
    d = plan(snapshot([plain], [service({"app": APP, "color": "9d2cc9"})]), policy(), NOW)
    assert [row[2] for row in plan_rows(d)] == ["9d2cc9"]


def test_argo_rollouts_revision_orders_colors_whatever_their_creation_times() -> None:
    """Promoted within the second the Rollout was created: the old color, never seen live by
    rainbowd, has the same creation time as the live one; its lower revision retires it. A
    higher revision (a new one, or one rolled back to) waiting without a preview Service is
    pending, whatever its stamps and age."""
    tie = 2 * H
    first = rs_doc(OLD, created=tie, revision=1)
    second = rs_doc(NEW, created=tie, revision=2)
    p = run(colors(first, second), {NEW: 5, OLD: 0})
    assert color(p, NEW).state is State.LIVE
    assert color(p, OLD).state is not State.PENDING
    assert [a.reason for a in color(p, OLD).actions] == [Reason.OBSERVED_RETIRED]
    back = retired(OLDER, drained=True)
    back["metadata"]["annotations"][ROLLOUT_REVISION] = "4"  # the live one is at 3
    p = run(colors(live(), back), {NEW: 5, OLDER: 0})
    assert color(p, OLDER).state is State.PENDING
    assert color(p, OLDER).actions == ()


# --- the daemon's Planner -----------------------------------------------------------------------


def _planned(deployments: list[Deployment], figures: list[Mapping[str, float | None]]) -> None:
    """Planner over cycles of the same objects with these connections, each equal to plan()."""
    planner = Planner()
    pol = policy()
    for i, connections in enumerate(figures):
        now = NOW + i * 30 * timedelta(seconds=1)
        on = {(NS, APP, c): conns(v, series=None) for c, v in connections.items()}
        snap = snapshot(deployments, [ACTIVE], on, now=now)
        assert planner.plan(snap, pol, now) == plan(snap, pol, now)


def test_a_live_rollout_colors_figure_crossing_the_floor_warns_or_not_as_plan_does() -> None:
    # With a revision limit of 0 the live color is warned about while it holds connections.
    deployments = colors(live(), rollout=rollout_doc(revision_limit=0))
    _planned(deployments, [{NEW: 5}, {NEW: 0}, {NEW: 3}])


def test_a_blocked_rollout_colors_figure_crossing_the_floor_keeps_its_deadline_as_plan_does() -> (
    None
):
    # No live color: the app is blocked, and a retired color holding connections still has its
    # scale-down-deadline kept ahead; one at the floor does not.
    old = retired(drained=False, deadline=NOW + M)
    _planned(colors(old), [{OLD: 0}, {OLD: 4}, {OLD: 0}])
