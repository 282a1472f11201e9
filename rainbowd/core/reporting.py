"""Renders a Plan for people and programs: the plan table and a JSON-able document.

Pure: `rainbowd plan`, `rainbowd status` and the daemon's /status all print through here, so a
plan reads the same wherever it is shown.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

from rainbowd.core.forecast import ColorForecast, ColorKey
from rainbowd.core.model import (
    HOLD_UNTIL,
    PROTECT,
    Action,
    ActionKind,
    AppPlan,
    ColorPlan,
    Connections,
    Plan,
    PodStep,
    State,
    WorkloadKind,
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
    Found,
    Guard,
    Held,
    HeldBy,
    HeldUntil,
    HoldMalformed,
    IdlePods,
    KeptForRecord,
    Live,
    MinRetiredAge,
    Note,
    NotEvaluated,
    Outcome,
    OverMaxColors,
    OverMaxRetiredAge,
    Paused,
    Plain,
    RecordedDisruption,
    RevisionLimit,
    Said,
    ScaledBackUp,
    ScaleUpGrace,
    SteppedDown,
    UnknownConnections,
)
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


def format_count(value: float) -> str:
    """A connection count: `12`, `0.5`; whole numbers without a decimal point."""
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:g}"


# A color's note and an action's words, rendered from what the planner recorded (notes.py) against
# the plan's `now`, when they are read: a plan records figures, never words.

_PLAIN_WORDS = {
    Plain.PENDING: "pending: created after the live color and not selected yet",
    Plain.UNMANAGED: "no rule matches this Deployment: never touched",
    Plain.SCALED_DOWN: "scaled down: kept for a fast rollback",
    Plain.PROTECTED: f"protected ({PROTECT}): never scaled or deleted",
    Plain.SCALE_FIRST: "scaled down first, deleted once maxDisruptions.per has passed",
}


def render_note(note: Note | str, now: datetime) -> str:
    """A color's note in words, one line: its guards, its state, then what was decided about it
    (a note read back from a /status document is already words)."""
    if isinstance(note, str):
        return note
    parts = [_words(guard, now) for guard in note.guards]
    if note.found is not None:
        parts.append(_words(note.found, now))
    text = "; ".join(parts)
    for outcome in note.decided:
        if isinstance(outcome, Paused):  # what would have been done, first
            text = f"{_outcome_words(outcome, now)}; {text}"
        else:
            text = f"{text}; {_outcome_words(outcome, now)}"
    return text


def render_why(said: Sequence[Said], now: datetime) -> str:
    """Why an action is taken, in words: the rule's reason, then what resolve added."""
    return "; ".join([_words(part, now) for part in said])


def _outcome_words(outcome: Outcome, now: datetime) -> str:
    match outcome:
        case Forced():
            return f"forced: {_words(outcome, now)}"
        case Held():
            return f"held: {_words(outcome.why, now)}, but {_held_words(outcome.by)}"
        case Decided():
            why = outcome.why
            if isinstance(why, BeyondKeepScaledDown):
                return f"beyond keepScaledDown {why.keep}"
            return _words(why, now)
        case KeptForRecord():
            return (
                f"kept until {format_time(outcome.until)}: it records a disruption counted by "
                "maxDisruptions"
            )
        case Paused():  # rendered first by render_note
            return f"paused: would {_VERBS[outcome.kind]} ({outcome.reason})"
        case ConsolidationUnavailable():
            return f"consolidation unavailable: {outcome.why}"
        case RevisionLimit():
            return revision_limit_words(outcome)
    assert_never(outcome)


def revision_limit_words(outcome: RevisionLimit) -> str:
    """The revision limit's warning, in the note and in the plan's warnings alike."""
    return (
        f"warning: at the next promotion Rollout {outcome.rollout}'s "
        f"scaleDownDelayRevisionLimit {outcome.limit} scales it down at once, connections or "
        f"not; scaleDownDelayRevisionLimit {outcome.keeps} keeps it"
    )


_VERBS = {
    ActionKind.SCALE: "scale to 0",
    ActionKind.DELETE: "delete",
    ActionKind.CONSOLIDATE: "give back pods",
    ActionKind.ANNOTATE: "annotate",
}


def _removed_pods(removed: Sequence[tuple[str, float]]) -> str:
    return ", ".join(f"{name} ({format_count(value)})" for name, value in removed)


def _held_words(by: HeldBy) -> str:
    """What holds a forced scale-down (mypy checks that every holding record has its case)."""
    match by:
        case BudgetSpent():
            if by.cluster:
                return f"the cluster-wide maxDisruptions ({by.budget}) is spent"
            return f"maxDisruptions ({by.budget}) is spent for this app"
    assert_never(by)


def _guards_words(note: Note | str, now: datetime) -> list[str]:
    """What guards the color (protect, a hold with its reason, a grace), each in words naming
    its annotation; none for a note read back as words."""
    return [] if isinstance(note, str) else [_words(guard, now) for guard in note.guards]


def _hold_reason(reason: str) -> str:
    return f": {reason}" if reason else ""


def _words(part: Found | Guard | Said, now: datetime) -> str:
    """One part of a note or of an action's words (mypy checks that every kind has its case)."""
    match part:
        case Plain():
            return _PLAIN_WORDS[part]
        case (
            Live()
            | NotEvaluated()
            | UnknownConnections()
            | AboveFloor()
            | DrainHold()
            | MinRetiredAge()
            | Drained()
        ):
            return _found_words(part, now)
        case HoldMalformed() | HeldUntil() | ScaleUpGrace() | ScaledBackUp():
            return _guard_words(part, now)
        case (
            OverMaxRetiredAge()
            | OverMaxColors()
            | BeyondKeepScaledDown()
            | RecordedDisruption()
            | IdlePods()
            | SteppedDown()
        ):
            return _why_words(part, now)
        case Forced():
            return _words(part.why, now) + _disruption_words(part.disruption)
        case Directly():
            if isinstance(part.why, BeyondKeepScaledDown):
                return f"deleted directly, beyond keepScaledDown {part.why.keep}"
            return _words(part.why, now)
    assert_never(part)


def _found_words(
    part: Live
    | NotEvaluated
    | UnknownConnections
    | AboveFloor
    | DrainHold
    | MinRetiredAge
    | Drained,
    now: datetime,
) -> str:
    """What assess found, in words."""
    match part:
        case Live():
            return f"live: selected by Service {part.service}"
        case NotEvaluated():
            return f"{part.message}; not evaluated"
        case UnknownConnections():
            return f"connections unknown ({part.cause}): not evaluated for drain"
        case AboveFloor():
            return f"draining: {format_count(part.connections)} connections > floor {part.floor}"
        case DrainHold():
            return (
                f"draining: {format_count(part.connections)} <= floor {part.floor} for "
                f"{compact_duration(now - part.since)} of drainHold {compact_duration(part.hold)}"
            )
        case MinRetiredAge():
            return (
                f"draining: drained, but retired for {compact_duration(now - part.retired_at)} "
                f"of minRetiredAge {compact_duration(part.min_age)}"
            )
        case Drained():
            return (
                f"drained: {format_count(part.connections)} <= floor {part.floor} for "
                f"{compact_duration(now - part.since)}"
            )
    assert_never(part)


def _guard_words(
    part: HoldMalformed | HeldUntil | ScaleUpGrace | ScaledBackUp, now: datetime
) -> str:
    """A guard, in words."""
    match part:
        case HoldMalformed():
            return (
                f"held ({HOLD_UNTIL} {part.value!r} is not an RFC 3339 time)"
                f"{_hold_reason(part.reason)}"
            )
        case HeldUntil():
            return f"held until {format_time(part.until)} ({HOLD_UNTIL}){_hold_reason(part.reason)}"
        case ScaleUpGrace():
            return (
                f"scaled back up at {format_time(part.at)}: held for scaleUpGrace "
                f"{compact_duration(part.grace)}"
            )
        case ScaledBackUp():
            return (
                f"scaled back up from 0 to {part.replicas}: a new drain starts; held for "
                f"scaleUpGrace {compact_duration(part.grace)}"
            )
    assert_never(part)


def _why_words(
    part: OverMaxRetiredAge
    | OverMaxColors
    | BeyondKeepScaledDown
    | RecordedDisruption
    | IdlePods
    | SteppedDown,
    now: datetime,
) -> str:
    """A rule's reason with its figures, in words (the drained rule's is what assess found)."""
    match part:
        case OverMaxRetiredAge():
            return (
                f"retired for {compact_duration(now - part.retired_at)} > maxRetiredAge "
                f"{compact_duration(part.max_age)}"
            )
        case OverMaxColors():
            return f"{part.running} colors with replicas > maxColors {part.limit}"
        case BeyondKeepScaledDown():
            return f"scaled down, beyond the newest keepScaledDown {part.keep}"
        case RecordedDisruption():
            return (
                f"scaled down to record a disruption (maxDisruptions {part.budget}); action delete"
            )
        case IdlePods():
            return (
                f"{part.idle} of {part.pods} pods hold no connections: {part.pods} -> {part.to} "
                f"pods (keepPods {part.keep}), removing {_removed_pods(part.removed)}"
            )
        case SteppedDown():
            return (
                f"stepDown (maxPods {part.max_pods}): no pod is idle, {part.pods} -> {part.to} "
                f"pods, removing the least-connected {_removed_pods(part.removed)}"
            )
    assert_never(part)


def _disruption_words(disruption: Disruption | None) -> str:
    if disruption is None:
        return ""
    if disruption.connections is None:
        return " (connections unknown)"
    return (
        f" (still holds {format_count(disruption.connections)} connections > floor "
        f"{disruption.floor})"
    )


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


def _note(color: ColorPlan, now: datetime) -> str:
    note = render_note(color.note, now)
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
                    color_cell(color),
                    str(color.state),
                    f"{color.ready_replicas}/{color.replicas}",
                    _connections_cell(color),
                    "-" if retired_for is None else compact_duration(retired_for),
                    eta,
                    action,
                    reason,
                    _note(color, plan.now),
                )
            )
    return rows


def color_cell(color: ColorPlan) -> str:
    """The color, its kind said when it is not a Deployment's (an Argo Rollout's ReplicaSet)."""
    if color.kind is WorkloadKind.DEPLOYMENT:
        return color.color
    return f"{color.color} ({color.kind})"


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


def _step_document(step: PodStep | None) -> dict[str, Any] | None:
    """A consolidation step: the replicas it goes to, the pods removed, every pod's connections
    (null: unknown) and the deletion cost set on it."""
    if step is None:
        return None
    return {
        "replicas": step.replicas,
        "removed": list(step.removed),
        "pods": dict(step.pods),
        "costs": dict(step.costs),
    }


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
    apps = [
        {
            "namespace": app.namespace,
            "app": app.app,
            "rule": app.rule,
            "blocked": None if app.blocked is None else str(app.blocked),
            "message": app.message,
            "colors": [
                _color_document(color, plan.now, forecasts=forecasts, history=history)
                for color in app.colors
            ],
        }
        for app in plan.apps
    ]
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


def _color_document(
    color: ColorPlan,
    now: datetime,
    *,
    forecasts: Mapping[ColorKey, ColorForecast] | None,
    history: Mapping[ColorKey, Sequence[Sequence[float]]] | None,
) -> dict[str, Any]:
    """One color of `plan_to_document`, with its forecast and history when asked for."""
    retired_for = color.retired_for(now)
    key = (color.namespace, color.app, color.color)
    extra: dict[str, Any] = {}
    if forecasts is not None:
        found = forecasts.get(key)
        extra["forecast"] = None if found is None else forecast_to_document(found)
    if history is not None:
        extra["history"] = [list(p) for p in history.get(key, ())]
    return {
        "color": color.color,
        "deployment": color.name,
        "kind": str(color.kind),
        "state": str(color.state),
        "rule": color.rule,
        "replicas": color.replicas,
        "readyReplicas": color.ready_replicas,
        "connections": _connections_document(color.connections),
        "createdAt": format_time(color.created_at),
        "retiredAt": None if color.retired_at is None else format_time(color.retired_at),
        "retiredFor": None if retired_for is None else retired_for.total_seconds(),
        "drainedSince": (None if color.drained_since is None else format_time(color.drained_since)),
        "note": render_note(color.note, now),
        "guards": _guards_words(color.note, now),
        "held": None if color.held is None else str(color.held),
        "actions": [_action_document(action) for action in color.actions],
        **extra,
    }


def _action_document(action: Action) -> dict[str, Any]:
    return {
        "kind": str(action.kind),
        "reason": str(action.reason),
        "message": action.message,
        "uid": action.uid,
        "resourceVersion": action.resource_version,
        "annotations": dict(action.annotations),
        "connections": action.connections,
        "step": _step_document(action.step),
    }
