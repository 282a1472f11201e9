"""The plan table and the plan document: what people and /status read."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from rainbowd.core.model import DRAINED_SINCE, LIVE_AT, RETIRED_AT, State
from rainbowd.core.planner import plan
from rainbowd.core.policy import Policy
from rainbowd.core.reporting import (
    COLUMNS,
    compact_duration,
    compact_duration_changes_at,
    plan_to_document,
    render_plan_table,
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


@pytest.mark.parametrize(
    ("seconds", "changes_at"),
    [(0, 1), (59.5, 60), (3599, 3600), (3600, 3660), (3661, 3720), (86399, 86400), (86400, 90000)],
)
def test_compact_duration_changes_at(seconds: float, changes_at: int) -> None:
    elapsed = timedelta(seconds=seconds)
    after = compact_duration_changes_at(elapsed)
    assert after == timedelta(seconds=changes_at)
    # The text holds until then, and reads differently from then on.
    assert compact_duration(after - timedelta(microseconds=1)) == compact_duration(elapsed)
    assert compact_duration(after) != compact_duration(elapsed)


def story() -> object:
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
    p = plan(story(), Policy(rules=(rule(app=None),)), NOW)  # type: ignore[arg-type]
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
    p = plan(story(), Policy(rules=(rule(app=None),)), NOW)  # type: ignore[arg-type]
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
