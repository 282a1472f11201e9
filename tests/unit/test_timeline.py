"""The daemon's timeline of recent actions: what was attempted, newest last, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rainbowd.core.model import Action, ActionKind, Reason
from rainbowd.kube.executing import ActionOutcome, ActionResult
from rainbowd.timeline import Timeline

AT = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def result(color: str, outcome: ActionOutcome, *, error: str | None = None) -> ActionResult:
    action = Action(
        kind=ActionKind.SCALE,
        namespace="ns",
        name=f"chat-{color}",
        app="chat",
        color=color,
        uid="u",
        resource_version="1",
        reason=Reason.DRAINED,
        message="drained for 10m",
        connections=0.0,
    )
    return ActionResult(action=action, outcome=outcome, error=error)


def test_attempted_actions_are_kept_newest_last_and_skipped_ones_left_out() -> None:
    timeline = Timeline()
    timeline.record(
        AT, [result("aaaaaa", ActionOutcome.OK), result("bbbbbb", ActionOutcome.SKIPPED)]
    )
    timeline.record(
        AT + timedelta(seconds=1), [result("cccccc", ActionOutcome.ERROR, error="boom")]
    )
    assert timeline.document() == [
        {
            "at": "2026-03-04T05:06:07Z",
            "namespace": "ns",
            "app": "chat",
            "color": "aaaaaa",
            "deployment": "chat-aaaaaa",
            "kind": "scale",
            "reason": "drained",
            "message": "drained for 10m",
            "connections": 0.0,
            "outcome": "ok",
            "error": None,
        },
        {
            "at": "2026-03-04T05:06:08Z",
            "namespace": "ns",
            "app": "chat",
            "color": "cccccc",
            "deployment": "chat-cccccc",
            "kind": "scale",
            "reason": "drained",
            "message": "drained for 10m",
            "connections": 0.0,
            "outcome": "error",
            "error": "boom",
        },
    ]


def test_it_keeps_only_the_latest() -> None:
    timeline = Timeline(size=3)
    for i in range(5):
        timeline.record(AT + timedelta(seconds=i), [result(f"{i:06d}", ActionOutcome.OK)])
    assert [e["color"] for e in timeline.document()] == ["000002", "000003", "000004"]
