"""Reading one field of a policy document: the error collector every parser adds to, values as
the user wrote them for messages, unknown-key suggestions and the scalar checks."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from rainbowd.core.durations import DurationError, parse_duration


def show(value: object) -> str:
    """A decoded YAML value as the user wrote it, short enough for one error line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


class Errors:
    """Collects every problem of a document: one bad field must not hide the next."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)

    def __len__(self) -> int:
        return len(self.items)


Parse = Callable[[object, str, Errors], Any]
"""A field parser: the raw value, its path, the errors to add to; the value or None."""


def key_path(path: str, key: object) -> str:
    name = key if isinstance(key, str) else show(key)
    return f"{path}.{name}" if path else name


def _normalized(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _unknown_key(key: object, known: Sequence[str]) -> str:
    if isinstance(key, str):
        # snake_case or wrong case is the commonest slip: suggest the exact camelCase key.
        for candidate in known:
            if _normalized(candidate) == _normalized(key):
                return f'unknown key (did you mean "{candidate}"?)'
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        if close:
            return f'unknown key (did you mean "{close[0]}"?)'
    return f"unknown key (expected one of: {', '.join(known)})"


def one_of(value: object, choices: Sequence[str], path: str, errors: Errors) -> str | None:
    """One of `choices`, else an error listing them (with a "did you mean" for a near miss)."""
    if isinstance(value, str) and value in choices:
        return value
    message = f"expected one of {', '.join(choices)}, got {show(value)}"
    if isinstance(value, str):
        close = difflib.get_close_matches(value.replace("_", "-").lower(), choices, n=1)
        if close:
            message += f' (did you mean "{close[0]}"?)'
    errors.add(path, message)
    return None


def mapping(value: object, path: str, errors: Errors) -> Mapping[Any, object] | None:
    """A section's mapping; null counts as empty so a section of commented-out lines is valid."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping, got {show(value)}")
        return None
    return value


def check_keys(
    section: Mapping[Any, object],
    known: Sequence[str],
    path: str,
    errors: Errors,
    *,
    hint: Callable[[str], str | None] | None = None,
) -> None:
    for key in section:
        if isinstance(key, str) and key in known:
            continue
        extra = hint(key) if hint is not None and isinstance(key, str) else None
        errors.add(key_path(path, key), extra or _unknown_key(key, known))


def boolean(value: object, path: str, errors: Errors) -> bool | None:
    if not isinstance(value, bool):
        errors.add(path, f"expected true or false, got {show(value)}")
        return None
    return value


def non_negative_int(value: object, path: str, errors: Errors) -> int | None:
    # bool is an int in Python; `connectionFloor: yes` must not mean 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors.add(path, f"expected a non-negative integer, got {show(value)}")
        return None
    return value


def positive_int(value: object, path: str, errors: Errors) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        errors.add(path, f"expected an integer >= 1, got {show(value)}")
        return None
    return value


def duration(value: object, path: str, errors: Errors) -> timedelta | None:
    try:
        return parse_duration(value)
    except DurationError as exc:
        errors.add(path, str(exc))
        return None


def positive_duration(value: object, path: str, errors: Errors) -> timedelta | None:
    parsed = duration(value, path, errors)
    if parsed is not None and parsed <= timedelta(0):
        errors.add(path, f"must be greater than 0, got {show(value)}")
        return None
    return parsed


def section(
    value: object,
    path: str,
    errors: Errors,
    fields: Sequence[tuple[str, str, Parse]],
    example: str,
) -> dict[str, Any] | None:
    """A small mapping of optional fields (key, field name, parser): the fields it sets, or
    None with its errors added."""
    if not isinstance(value, Mapping):
        errors.add(path, f"expected a mapping like {example}, or null for never, got {show(value)}")
        return None
    before = len(errors)
    check_keys(value, [key for key, _, _ in fields], path, errors)
    parsed: dict[str, Any] = {}
    for key, field, parse in fields:
        if key in value:
            parsed[field] = parse(value[key], key_path(path, key), errors)
    return None if len(errors) > before else parsed


def url(value: object, path: str, errors: Errors) -> str | None:
    expected = 'expected an http:// or https:// URL like "http://prometheus:9090"'
    if not isinstance(value, str):
        errors.add(path, f"{expected}, got {show(value)}")
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        errors.add(path, f"{expected}, got {show(value)} ({exc})")
        return None
    has_space = any(c.isspace() for c in value)
    if parts.scheme not in ("http", "https") or not parts.hostname or has_space:
        errors.add(path, f"{expected}, got {show(value)}")
        return None
    if parts.query or parts.fragment:
        errors.add(path, f"must not have a query or fragment, got {show(value)}")
        return None
    return value
