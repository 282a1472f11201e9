"""The plan table and the plan document: what people and /status read."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from rainbowd.core.model import (
    DRAINED_SINCE,
    LIVE_AT,
    RETIRED_AT,
    ActionKind,
    Reason,
    Snapshot,
    State,
)
from rainbowd.core.notes import (
    AboveFloor,
    BeyondKeepScaledDown,
    BudgetSpent,
    ConsolidationUnavailable,
    Decided,
    Directly,
    Disruption,
    Drained,
    DrainHold,
    Forced,
    Held,
    HeldUntil,
    HoldMalformed,
    IdlePods,
    KeptForRecord,
    Live,
    MinRetiredAge,
    Note,
    NotEvaluated,
    OverMaxColors,
    OverMaxRetiredAge,
    Paused,
    Plain,
    RecordedDisruption,
    Said,
    ScaledBackUp,
    ScaleUpGrace,
    SteppedDown,
    UnknownConnections,
)
from rainbowd.core.planner import plan
from rainbowd.core.policy import Budget, Policy
from rainbowd.core.reporting import (
    COLUMNS,
    compact_duration,
    plan_to_document,
    render_note,
    render_plan_table,
    render_why,
    summary_line,
)
from tests.unit.strategies import (
    APP,
    NOW,
    H,
    conns,
    deployment,
    policy,
    rule,
    service,
    snapshot,
    stamp,
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (60, "1m"),
        (330, "5m30s"),
        (7500, "2h5m"),
        (7200, "2h"),
        (273600, "3d4h"),
        (86400 + 59, "1d"),
        (-3600, "-1h"),
    ],
)
def test_compact_duration(seconds: int, text: str) -> None:
    assert compact_duration(timedelta(seconds=seconds)) == text


M = timedelta(minutes=1)
BUDGET = Budget(1, 10 * M)
FORCED = OverMaxRetiredAge(NOW - 100 * H, 72 * H)
IDLE = IdlePods(pods=4, idle=2, to=2, keep=1, removed=(("p-c", 0.0), ("p-d", 0.0)))


@pytest.mark.parametrize(
    ("note", "text"),
    [
        (Note(Live("chat")), "live: selected by Service chat"),
        (Note(Plain.PENDING), "pending: created after the live color and not selected yet"),
        (Note(Plain.UNMANAGED), "no rule matches this Deployment: never touched"),
        (Note(NotEvaluated("blocked: why")), "blocked: why; not evaluated"),
        (Note(Plain.SCALED_DOWN), "scaled down: kept for a fast rollback"),
        (
            Note(UnknownConnections("timeout")),
            "connections unknown (timeout): not evaluated for drain",
        ),
        (Note(AboveFloor(12.5, 3)), "draining: 12.5 connections > floor 3"),
        (
            Note(DrainHold(0, 0, NOW - 150 * timedelta(seconds=1), 5 * M)),
            "draining: 0 <= floor 0 for 2m30s of drainHold 5m",
        ),
        (
            Note(MinRetiredAge(NOW - 2 * H, 3 * H)),
            "draining: drained, but retired for 2h of minRetiredAge 3h",
        ),
        (Note(Drained(2, 2, NOW - 10 * M)), "drained: 2 <= floor 2 for 10m"),
        # Guards first; a scaled-down protected color says its guards only.
        (
            Note(None, (Plain.PROTECTED, HeldUntil(NOW + H, "incident 42"))),
            "protected (rainbowd.io/protect): never scaled or deleted; held until "
            "2026-11-21T13:00:00Z (rainbowd.io/hold-until): incident 42",
        ),
        (
            Note(AboveFloor(4, 0), (HoldMalformed("soon", ""),)),
            "held (rainbowd.io/hold-until 'soon' is not an RFC 3339 time); "
            "draining: 4 connections > floor 0",
        ),
        (
            Note(None, (ScaleUpGrace(NOW - M, 30 * M), ScaledBackUp(3, 30 * M))),
            "scaled back up at 2026-11-21T11:59:00Z: held for scaleUpGrace 30m; scaled back up "
            "from 0 to 3: a new drain starts; held for scaleUpGrace 30m",
        ),
        # What resolve decided follows; paused goes first.
        (
            Note(AboveFloor(4, 0), decided=(Forced(FORCED, Disruption(4, 0)),)),
            "draining: 4 connections > floor 0; forced: retired for 4d4h > maxRetiredAge 3d "
            "(still holds 4 connections > floor 0)",
        ),
        (
            Note(UnknownConnections("timeout"), decided=(Forced(OverMaxColors(5, 4), None),)),
            "connections unknown (timeout): not evaluated for drain; forced: 5 colors with "
            "replicas > maxColors 4",
        ),
        (
            Note(AboveFloor(4, 0), decided=(Held(FORCED, BudgetSpent(BUDGET, cluster=False)),)),
            "draining: 4 connections > floor 0; held: retired for 4d4h > maxRetiredAge 3d, but "
            "maxDisruptions (1 per 10m) is spent for this app",
        ),
        (
            Note(AboveFloor(4, 0), decided=(Held(FORCED, BudgetSpent(BUDGET, cluster=True)),)),
            "draining: 4 connections > floor 0; held: retired for 4d4h > maxRetiredAge 3d, but "
            "the cluster-wide maxDisruptions (1 per 10m) is spent",
        ),
        (
            Note(
                Plain.SCALED_DOWN,
                decided=(Decided(BeyondKeepScaledDown(2)), KeptForRecord(NOW + 5 * M)),
            ),
            "scaled down: kept for a fast rollback; beyond keepScaledDown 2; kept until "
            "2026-11-21T12:05:00Z: it records a disruption counted by maxDisruptions",
        ),
        (
            Note(Plain.SCALED_DOWN, decided=(Decided(RecordedDisruption(BUDGET)),)),
            "scaled down: kept for a fast rollback; scaled down to record a disruption "
            "(maxDisruptions 1 per 10m); action delete",
        ),
        (
            Note(
                Drained(0, 0, NOW - H),
                decided=(Paused(ActionKind.SCALE, Reason.DRAINED),),
            ),
            "paused: would scale to 0 (drained); drained: 0 <= floor 0 for 1h",
        ),
        (
            Note(AboveFloor(3, 0), decided=(Decided(IDLE),)),
            "draining: 3 connections > floor 0; 2 of 4 pods hold no connections: 4 -> 2 pods "
            "(keepPods 1), removing p-c (0), p-d (0)",
        ),
        (
            Note(AboveFloor(3, 0), decided=(ConsolidationUnavailable("why not"),)),
            "draining: 3 connections > floor 0; consolidation unavailable: why not",
        ),
        (
            Note(AboveFloor(3, 0), decided=(Paused(ActionKind.CONSOLIDATE, Reason.IDLE_PODS),)),
            "paused: would give back pods (idle-pods); draining: 3 connections > floor 0",
        ),
        ("words read back from /status", "words read back from /status"),
    ],
)
def test_render_note(note: Note | str, text: str) -> None:
    assert render_note(note, NOW) == text


@pytest.mark.parametrize(
    ("said", "text"),
    [
        ((Drained(0, 0, NOW - 6 * M),), "drained: 0 <= floor 0 for 6m"),
        (
            (Forced(FORCED, Disruption(None, 0)), Plain.SCALE_FIRST),
            "retired for 4d4h > maxRetiredAge 3d (connections unknown); scaled down first, "
            "deleted once maxDisruptions.per has passed",
        ),
        (
            (Drained(0, 0, NOW - 6 * M), Directly(BeyondKeepScaledDown(1))),
            "drained: 0 <= floor 0 for 6m; deleted directly, beyond keepScaledDown 1",
        ),
        (
            (BeyondKeepScaledDown(1),),
            "scaled down, beyond the newest keepScaledDown 1",
        ),
        (
            (Forced(SteppedDown(2, 1, 1, (("p-b", 1.0),)), Disruption(3, 0)),),
            "stepDown (maxPods 1): no pod is idle, 2 -> 1 pods, removing the least-connected "
            "p-b (1) (still holds 3 connections > floor 0)",
        ),
    ],
)
def test_render_why(said: tuple[Said, ...], text: str) -> None:
    assert render_why(said, NOW) == text


def story() -> Snapshot:
    return snapshot(
        [
            deployment("9d2cc9", created=NOW - 2 * H, annotations={LIVE_AT: stamp(2 * H)}),
            deployment(
                "3c3fdc",
                created=NOW - 9 * H,
                annotations={RETIRED_AT: stamp(2 * H + timedelta(minutes=5))},
            ),
            deployment(
                "5e1f0a",
                created=NOW - 20 * H,
                annotations={RETIRED_AT: stamp(9 * H), DRAINED_SINCE: stamp(H)},
            ),
            deployment(
                "b7a9e2", created=NOW - 40 * H, replicas=0, annotations={RETIRED_AT: stamp(20 * H)}
            ),
            deployment("0f0f0f", app="chat", labels={"app": "chat"}),
        ],
        [service({"app": APP, "color": "9d2cc9"})],
        {
            ("default", APP, "3c3fdc"): conns(None, cause="query timed out"),
            ("default", APP, "5e1f0a"): conns(0),
            ("default", APP, "9d2cc9"): conns(37),
        },
    )


def test_table_rows_columns_and_summary() -> None:
    p = plan(story(), Policy(rules=(rule(app=None),)), NOW)
    text = render_plan_table(p)
    lines = text.splitlines()
    assert lines[0].split() == list(COLUMNS)
    rows = {line.split()[2]: line for line in lines[1:] if line.startswith("default ")}
    assert set(rows) == {"9d2cc9", "3c3fdc", "5e1f0a", "b7a9e2", "0f0f0f"}
    assert rows["3c3fdc"].split()[5] == "?" and "query timed out" in rows["3c3fdc"]
    assert rows["3c3fdc"].split()[6] == "2h5m"
    assert rows["5e1f0a"].split()[8:10] == ["scale", "drained"]
    assert rows["b7a9e2"].split()[4:6] == ["0/0", "-"]
    assert rows["0f0f0f"].split()[8:10] == ["blocked", "no-live-color"]
    assert "blocked: default/chat:" in text
    assert summary_line(p) in text
    assert summary_line(p).startswith("2 apps (1 blocked), 5 colors: 1 live, ")
    # Columns line up: every row's COLOR cell starts where the header's does.
    start = lines[0].index("COLOR")
    assert all(row[start:].split()[0] in rows for row in rows.values())


def test_dry_run_paused_and_warnings_are_shown() -> None:
    snap = snapshot(
        [
            deployment("9d2cc9", annotations={LIVE_AT: stamp(H)}),
            deployment(
                "3c3fdc",
                created=NOW - 20 * H,
                annotations={RETIRED_AT: "soon", DRAINED_SINCE: stamp(H)},
            ),
        ],
        [service({"app": APP, "color": "9d2cc9"})],
        {("default", APP, "3c3fdc"): conns(0)},
    )
    text = render_plan_table(plan(snap, policy(dry_run=True, paused=True), NOW))
    assert "dry run" in text and "paused" in text
    assert "warning: default/rainbow-deploys-3c3fdc" in text and "'soon'" in text


def test_document_is_json_and_complete() -> None:
    p = plan(story(), Policy(rules=(rule(app=None),)), NOW)
    doc = json.loads(json.dumps(plan_to_document(p)))
    assert doc["now"] == "2026-11-21T12:00:00Z"
    assert [b["app"] for b in doc["blocked"]] == ["chat"]
    colors = {c["color"]: c for a in doc["apps"] for c in a["colors"]}
    assert colors["5e1f0a"]["state"] == str(State.DRAINED)
    assert colors["5e1f0a"]["retiredFor"] == 9 * 3600
    (action,) = colors["5e1f0a"]["actions"]
    assert action["kind"] == "scale" and action["reason"] == "drained" and action["message"]
    assert colors["3c3fdc"]["connections"] == {
        "value": None,
        "known": False,
        "series": None,
        "cause": "query timed out",
    }
    assert colors["9d2cc9"]["retiredFor"] is None
    assert doc["summary"] == summary_line(p)
