"""The knob table: every knob of `Knobs` once, with how its value is read from policy.yaml, written
back to the effective-policy document and shown by `check-policy`. Parsing, unknown-key errors,
`policy_to_document`, check-policy's rows and the tests' strategies all read `KNOBS`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar

from rainbowd.core.durations import format_duration
from rainbowd.core.policy.fields import (
    Errors,
    check_keys,
    duration,
    key_path,
    mapping,
    non_negative_int,
    one_of,
    positive_duration,
    positive_int,
    section,
    show,
)
from rainbowd.core.policy.types import Budget, CleanupAction, Consolidate, Knobs, StepDown

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Value(Generic[T]):
    """One type of knob value: how it is read, written back as a document value, and shown."""

    parse: Callable[[object, str, Errors], T | None]
    document: Callable[[T], object]
    text: Callable[[T], str] = str


def _max_colors(value: object, path: str, errors: Errors) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.add(path, f"expected an integer >= 1, or null for no cap, got {show(value)}")
        return None
    if value < 1:
        errors.add(path, f"must be >= 1, got {value}")
        return None
    return value


def _action(value: object, path: str, errors: Errors) -> CleanupAction | None:
    action = one_of(value, [a.value for a in CleanupAction], path, errors)
    return None if action is None else CleanupAction(action)


def budget(value: object, path: str, errors: Errors) -> Budget | None:
    """`{count: 1, per: 10m}`, both required: a knob, and the budget of all apps together."""
    fields = mapping(value, path, errors)
    if fields is None:
        return None
    before = len(errors)
    check_keys(fields, ("count", "per"), path, errors)
    for key in ("count", "per"):
        if key not in fields:
            errors.add(key_path(path, key), 'required, e.g. "maxDisruptions: {count: 1, per: 10m}"')
    count = (
        non_negative_int(fields["count"], key_path(path, "count"), errors)
        if "count" in fields
        else None
    )
    per = (
        positive_duration(fields["per"], key_path(path, "per"), errors) if "per" in fields else None
    )
    if len(errors) > before or count is None or per is None:
        return None
    return Budget(count=count, per=per)


def budget_document(value: Budget) -> dict[str, object]:
    return {"count": value.count, "per": format_duration(value.per)}


def _consolidate(value: object, path: str, errors: Errors) -> Consolidate | None:
    fields = section(
        value,
        path,
        errors,
        (
            ("after", "after", duration),
            ("every", "every", positive_duration),
            ("keepPods", "keep_pods", positive_int),
        ),
        '"{after: 30m, every: 5m, keepPods: 1}"',
    )
    return None if fields is None else Consolidate(**fields)


def _consolidate_document(value: Consolidate) -> dict[str, object]:
    return {
        "after": format_duration(value.after),
        "every": format_duration(value.every),
        "keepPods": value.keep_pods,
    }


def _step_down(value: object, path: str, errors: Errors) -> StepDown | None:
    fields = section(
        value,
        path,
        errors,
        (("every", "every", positive_duration), ("maxPods", "max_pods", positive_int)),
        '"{every: 1h, maxPods: 1}"',
    )
    return None if fields is None else StepDown(**fields)


def _step_down_document(value: StepDown) -> dict[str, object]:
    return {"every": format_duration(value.every), "maxPods": value.max_pods}


def _same(value: T) -> T:
    return value


DURATION: Value[timedelta] = Value(duration, format_duration, format_duration)
POSITIVE_DURATION: Value[timedelta] = Value(positive_duration, format_duration, format_duration)
COUNT: Value[int] = Value(non_negative_int, _same)
MAX_COLORS: Value[int] = Value(_max_colors, _same)
ACTION: Value[CleanupAction] = Value(_action, lambda action: action.value)
BUDGET: Value[Budget] = Value(budget, budget_document)
CONSOLIDATE: Value[Consolidate] = Value(_consolidate, _consolidate_document)
STEP_DOWN: Value[StepDown] = Value(_step_down, _step_down_document)


@dataclass(frozen=True, slots=True)
class Knob:
    """One knob: its key in policy.yaml, its `Knobs` field, the type of its value, and what
    null means for it (`never`, `no cap`), or None when null is not a value of this knob."""

    key: str
    field: str
    value: Value[Any]
    null: str | None = None

    def parse(self, raw: object, path: str, errors: Errors) -> object:
        if raw is None and self.null is not None:
            return None
        return self.value.parse(raw, path, errors)

    def document(self, knobs: Knobs) -> object:
        value = getattr(knobs, self.field)
        return None if value is None else self.value.document(value)

    def text(self, knobs: Knobs) -> str:
        value = getattr(knobs, self.field)
        if value is None:
            return self.null or "null"
        return self.value.text(value)


# In the order check-policy lists them and the effective-policy document writes them.
KNOBS = (
    Knob("minRetiredAge", "min_retired_age", DURATION),
    Knob("connectionFloor", "connection_floor", COUNT),
    Knob("drainHold", "drain_hold", DURATION),
    Knob("maxColors", "max_colors", MAX_COLORS, null="no cap"),
    Knob("maxRetiredAge", "max_retired_age", DURATION, null="never"),
    Knob("action", "action", ACTION),
    Knob("keepScaledDown", "keep_scaled_down", COUNT),
    Knob("maxDisruptions", "max_disruptions", BUDGET),
    Knob("abandonedAfter", "abandoned_after", DURATION, null="never"),
    Knob("scaleUpGrace", "scale_up_grace", DURATION),
    Knob("consolidate", "consolidate", CONSOLIDATE, null="never"),
    Knob("stepDown", "step_down", STEP_DOWN, null="never"),
    Knob("deadlineAhead", "deadline_ahead", POSITIVE_DURATION),
)
KNOB_KEYS = tuple(k.key for k in KNOBS)
BY_KEY: Mapping[str, Knob] = {k.key: k for k in KNOBS}


def knob_overrides(
    fields: Mapping[Any, object], path: str, errors: Errors
) -> tuple[dict[str, Any], set[str]]:
    """The knobs a section sets, by field name, and the keys whose value was bad."""
    overrides: dict[str, Any] = {}
    bad: set[str] = set()
    for knob in KNOBS:
        if knob.key not in fields:
            continue
        before = len(errors)
        parsed = knob.parse(fields[knob.key], key_path(path, knob.key), errors)
        if len(errors) > before:
            bad.add(knob.key)
        else:
            overrides[knob.field] = parsed
    return overrides, bad


def knobs_document(knobs: Knobs) -> dict[str, object]:
    """Every knob, by key, as the effective-policy document writes it."""
    return {knob.key: knob.document(knobs) for knob in KNOBS}
