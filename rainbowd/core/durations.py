"""Go-style durations (`90s`, `1h30m`, `1.5h`), as the policy writes them.

`parse_duration` reads one from a decoded YAML value; `format_duration` renders a timedelta back
compactly for people (`72h`, not `3 days, 0:00:00`), in a form `parse_duration` reads again.
"""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

# Microseconds per unit: timedelta's resolution, so nanoseconds round to the nearest microsecond.
_UNITS: dict[str, Fraction] = {
    "ns": Fraction(1, 1000),
    "us": Fraction(1),
    "µs": Fraction(1),  # U+00B5 micro sign
    "μs": Fraction(1),  # U+03BC Greek mu: Go accepts both
    "ms": Fraction(1000),
    "s": Fraction(1_000_000),
    "m": Fraction(60_000_000),
    "h": Fraction(3_600_000_000),
}
# Units people reach for that Go does not have, in hours, so the error can suggest the fix.
_LONG_UNITS: dict[str, int] = {"d": 24, "w": 24 * 7}
# Go rejects durations beyond int64 nanoseconds (about 290 years); so do we, for the same files.
_MAX_MICROSECONDS = (2**63 - 1) // 1000

_COMPONENT = re.compile(r"(\d*(?:\.\d*)?)([^\d.]*)")
_HINT = 'expected a duration like "90s" or "48h"'


class DurationError(ValueError):
    """Not a Go duration; the message says what was expected and what was found."""


def _show(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _long_unit_error(text: str, number: str, unit: str) -> DurationError:
    hours = Fraction(number) * _LONG_UNITS[unit] if number and number != "." else None
    if hours is not None and hours.denominator == 1:
        suggestion = f'"{hours.numerator}h"'
    else:
        suggestion = '"48h" for two days'
    return DurationError(
        f'unknown unit "{unit}" in duration {_show(text)}: durations stop at hours (h), '
        f"write {suggestion}"
    )


def parse_duration(value: object) -> timedelta:
    """A Go duration string (or the number 0) to a non-negative timedelta.

    Bare numbers other than 0 are rejected: `30` could mean seconds or minutes, and guessing
    wrong in a burn-down policy deletes pods early.
    """
    if isinstance(value, bool) or value is None:
        raise DurationError(f"{_HINT}, got {_show(value)}")
    if isinstance(value, int | float):
        if value == 0:
            return timedelta(0)
        raise DurationError(f"{_HINT}, got {_show(value)}")
    if not isinstance(value, str):
        raise DurationError(f"{_HINT}, got a {type(value).__name__}")
    text = value.strip()
    if text in ("0", "+0", "-0"):
        return timedelta(0)
    if not text:
        raise DurationError(f"{_HINT}, got an empty string")
    if any(c.isspace() for c in text):
        raise DurationError(f"{_HINT}, without spaces, got {_show(value)}")
    body = text
    if body[0] in "+-":
        if body[0] == "-":
            raise DurationError(f"must not be negative, got {_show(value)}")
        body = body[1:]
    total = Fraction(0)
    pos = 0
    while pos < len(body):
        match = _COMPONENT.match(body, pos)
        assert match is not None  # the pattern matches the empty string
        number, unit = match.group(1), match.group(2)
        if not number or number == ".":
            raise DurationError(f"{_HINT}, got {_show(value)}")
        if not unit:
            raise DurationError(f"{_HINT}, got {_show(value)} (missing unit)")
        if unit not in _UNITS:
            if unit in _LONG_UNITS:
                raise _long_unit_error(text, number, unit)
            raise DurationError(
                f'unknown unit "{unit}" in duration {_show(value)} (units: ns, us, ms, s, m, h)'
            )
        total += Fraction(number) * _UNITS[unit]
        pos = match.end()
    microseconds = round(total)
    if microseconds > _MAX_MICROSECONDS:
        raise DurationError(f"duration {_show(value)} is too large")
    return timedelta(microseconds=microseconds)


def format_duration(td: timedelta) -> str:
    """`1h30m`, `45s`, `72h`, `1m0.5s`, `300ms`, `0s`: Go's form without the zero components."""
    micros = (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros < 1_000_000:
        if micros % 1000 == 0:
            return f"{sign}{micros // 1000}ms"
        if micros >= 1000:
            return f"{sign}{_decimal(micros, 1000)}ms"
        return f"{sign}{micros}us"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(f"{_decimal(rest, 1_000_000)}s")
    return sign + "".join(parts)


def _decimal(amount: int, unit: int) -> str:
    whole, frac = divmod(amount, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
