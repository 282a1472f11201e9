"""Renders a Plan for people and programs: the plan table and a JSON-able document.

Pure: `rainbowd plan`, `rainbowd status` and the daemon's /status all print through here, so a
plan reads the same wherever it is shown.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rainbowd.core.forecast import ColorForecast, ColorKey
from rainbowd.core.model import ActionKind, AppPlan, ColorPlan, Connections, Plan, State
from rainbowd.core.objects import format_time

COLUMNS = (
    "NAMESPACE",
    "APP",
    "COLOR",
    "STATE",
    "REPLICAS",
    "CONNECTIONS",
    "RETIRED-FOR",
    "ETA",
    "ACTION",
    "REASON",
    "NOTE",
)
_STATE_ORDER = tuple(State)


def compact_duration(value: timedelta) -> str:
    """`2h5m`, `3d4h`, `45s`: the two largest units, for tables and notes."""
    seconds = int(value.total_seconds())
    if seconds < 0:
        return "-" + compact_duration(-value)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    shown = parts[:2]
    if len(shown) == 2 and shown[1][0] == 0:
        shown = shown[:1]
    return "".join(f"{n}{unit}" for n, unit in shown)


def compact_duration_changes_at(elapsed: timedelta) -> timedelta:
    """The first elapsed time after `elapsed` (not negative) at which `compact_duration` may read
    differently: it shows the two largest units, so hours once past a day, minutes past an hour,
    else seconds, and its text cannot change before the next multiple of that unit."""
    seconds = elapsed.days * 86400 + elapsed.seconds
    unit = 3600 if seconds >= 86400 else 60 if seconds >= 3600 else 1
    return timedelta(seconds=(seconds // unit + 1) * unit)


def format_count(value: float) -> str:
    """A connection count: `12`, `0.5`; whole numbers without a decimal point."""
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:g}"


# A color's note once the cleanup rules are resolved: the planner renders each decision about it
# here, after what assess noted of its state.


def decided_note(note: str, words: str) -> str:
    """A rule's decision to delete a color, in its `words`."""
    return f"{note}; {words}"


def forced_note(note: str, why: str) -> str:
    """A forced scale-down (or delete) granted."""
    return f"{note}; forced: {why}"


def held_note(note: str, why: str, spent: str) -> str:
    """A forced scale-down held: the disruption budget `spent`."""
    return f"{note}; held: {why}, but {spent}"


def kept_note(note: str, until: datetime) -> str:
    """A delete held while the Deployment records a disruption that still counts."""
    return (
        f"{note}; kept until {format_time(until)}: it records a disruption counted by "
        "maxDisruptions"
    )


def paused_note(note: str, kind: ActionKind, reason: str) -> str:
    """Paused: what would have been done, and why."""
    verb = "scale to 0" if kind is ActionKind.SCALE else "delete"
    return f"paused: would {verb} ({reason}); {note}"


def _not_evaluated(color: ColorPlan) -> bool:
    """At 0 replicas nothing is asked of the connections: a missing series is expected."""
    return color.replicas == 0 and color.connections.value is None


def _connections_cell(color: ColorPlan) -> str:
    if _not_evaluated(color):
        return "-"
    value = color.connections.value
    return "?" if value is None else format_count(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _action_cells(color: ColorPlan, app: AppPlan) -> tuple[str, str]:
    if app.blocked is not None:
        return "blocked", str(app.blocked)
    disruptive = [a for a in color.actions if a.kind is not ActionKind.ANNOTATE]
    shown = disruptive[0] if disruptive else (color.actions[0] if color.actions else None)
    if shown is not None:
        return str(shown.kind), str(shown.reason)
    if color.held is not None:
        return "held", str(color.held)
    return "-", "-"


def _note(color: ColorPlan) -> str:
    note = color.note
    if (
        color.connections.value is None
        and not _not_evaluated(color)
        and color.connections.cause not in note
    ):
        note = f"{note} (connections: {color.connections.cause})"
    return note


def _eta_cell(forecast: ColorForecast | None) -> str:
    """How long until the color reaches its floor, `~3h20m`; `-` without an estimate."""
    seconds = None if forecast is None else forecast.forecast.seconds
    return "-" if seconds is None else "~" + compact_duration(timedelta(seconds=seconds))


def plan_rows(
    plan: Plan, *, forecasts: Mapping[ColorKey, ColorForecast] | None = None
) -> list[tuple[str, ...]]:
    """One row of cells per color, in COLUMNS order: the plan table's body, for any renderer."""
    forecasts = forecasts or {}
    rows: list[tuple[str, ...]] = []
    for app in plan.apps:
        for color in app.colors:
            retired_for = color.retired_for(plan.now)
            eta = _eta_cell(forecasts.get((color.namespace, color.app, color.color)))
            action, reason = _action_cells(color, app)
            rows.append(
                (
                    app.namespace,
                    app.app,
                    color.color,
                    str(color.state),
                    f"{color.ready_replicas}/{color.replicas}",
                    _connections_cell(color),
                    "-" if retired_for is None else compact_duration(retired_for),
                    eta,
                    action,
                    reason,
                    _note(color),
                )
            )
    return rows


def render_plan_table(
    plan: Plan, *, forecasts: Mapping[ColorKey, ColorForecast] | None = None
) -> str:
    """The plan as an aligned table, one row per color, then a summary line and warnings."""
    rows = [COLUMNS, *plan_rows(plan, forecasts=forecasts)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    lines.append("")
    lines.extend(plan_footer(plan))
    return "\n".join(lines) + "\n"


def plan_footer(plan: Plan) -> list[str]:
    """The lines under the plan table: the summary, blocked apps, warnings."""
    lines = [summary_line(plan)]
    for app in plan.apps:
        if app.blocked is not None:
            lines.append(f"blocked: {app.namespace}/{app.app}: {app.message}")
    for warning in plan.warnings:
        lines.append(f"warning: {warning}")
    return lines


def summary_line(plan: Plan) -> str:
    """`3 apps (1 blocked), 9 colors: 3 live, ...; 4 actions: ...`, for tables and logs."""
    states: Counter[State] = Counter()
    colors = 0
    held = 0
    for app in plan.apps:
        for color in app.colors:
            colors += 1
            states[color.state] += 1
            if color.held is not None:
                held += 1
    actions = plan.actions
    kinds: Counter[ActionKind] = Counter(a.kind for a in actions)
    blocked = sum(1 for app in plan.apps if app.blocked is not None)
    parts = [_plural(len(plan.apps), "app")]
    if blocked:
        parts[0] += f" ({blocked} blocked)"
    state_text = ", ".join(f"{states[s]} {s}" for s in _STATE_ORDER if states[s])
    text = f"{parts[0]}, {_plural(colors, 'color')}" + (f": {state_text}" if state_text else "")
    action_text = ", ".join(f"{kinds[k]} {k}" for k in ActionKind if kinds[k])
    text += f"; {_plural(len(actions), 'action')}" + (f": {action_text}" if action_text else "")
    if held:
        text += f"; {held} held"
    if plan.dry_run:
        text += "; dry run: nothing will be applied"
    if plan.paused:
        text += "; paused: no scale-down or delete"
    return text


def _connections_document(connections: Connections) -> dict[str, Any]:
    return {
        "value": connections.value,
        "known": connections.value is not None,
        "series": connections.series,
        "cause": connections.cause or None,
    }


def forecast_to_document(forecast: ColorForecast) -> dict[str, Any]:
    """`{etaAt, etaSeconds, method, points, reason, floor, deadlineAt, late}`: the ETA fields
    are null (and `reason` says why) when there is no estimate."""
    f = forecast.forecast
    return {
        "etaAt": None if f.eta is None else _unix_to_time(f.eta),
        "etaSeconds": None if f.seconds is None else round(f.seconds, 1),
        "method": None if f.method is None else str(f.method),
        "points": f.points,
        "reason": None if f.reason is None else str(f.reason),
        "floor": forecast.floor,
        "deadlineAt": None if forecast.deadline is None else _unix_to_time(forecast.deadline),
        "late": forecast.late,
    }


def _unix_to_time(seconds: float) -> str:
    return format_time(datetime.fromtimestamp(seconds, UTC))


def plan_to_document(
    plan: Plan,
    *,
    forecasts: Mapping[ColorKey, ColorForecast] | None = None,
    history: Mapping[ColorKey, Sequence[Sequence[float]]] | None = None,
) -> dict[str, Any]:
    """The plan as plain JSON-able data: every color, every action, blocked apps, warnings.

    With `forecasts`, each draining color gets `forecast` (else null); with `history`, each
    color gets `history`, its recent `[unix time, connections]` points, oldest first.
    """
    apps = []
    for app in plan.apps:
        colors = []
        for color in app.colors:
            retired_for = color.retired_for(plan.now)
            key = (color.namespace, color.app, color.color)
            extra: dict[str, Any] = {}
            if forecasts is not None:
                found = forecasts.get(key)
                extra["forecast"] = None if found is None else forecast_to_document(found)
            if history is not None:
                extra["history"] = [list(p) for p in history.get(key, ())]
            colors.append(
                {
                    "color": color.color,
                    "deployment": color.name,
                    "state": str(color.state),
                    "rule": color.rule,
                    "replicas": color.replicas,
                    "readyReplicas": color.ready_replicas,
                    "connections": _connections_document(color.connections),
                    "createdAt": format_time(color.created_at),
                    "retiredAt": None
                    if color.retired_at is None
                    else format_time(color.retired_at),
                    "retiredFor": None if retired_for is None else retired_for.total_seconds(),
                    "drainedSince": (
                        None if color.drained_since is None else format_time(color.drained_since)
                    ),
                    "note": color.note,
                    "held": None if color.held is None else str(color.held),
                    "actions": [
                        {
                            "kind": str(action.kind),
                            "reason": str(action.reason),
                            "message": action.message,
                            "uid": action.uid,
                            "resourceVersion": action.resource_version,
                            "annotations": dict(action.annotations),
                            "connections": action.connections,
                        }
                        for action in color.actions
                    ],
                    **extra,
                }
            )
        apps.append(
            {
                "namespace": app.namespace,
                "app": app.app,
                "rule": app.rule,
                "blocked": None if app.blocked is None else str(app.blocked),
                "message": app.message,
                "colors": colors,
            }
        )
    return {
        "now": format_time(plan.now),
        "dryRun": plan.dry_run,
        "paused": plan.paused,
        "summary": summary_line(plan),
        "apps": apps,
        "blocked": [
            {"namespace": a.namespace, "app": a.app, "reason": str(a.blocked), "message": a.message}
            for a in plan.apps
            if a.blocked is not None
        ],
        "warnings": list(plan.warnings),
    }
