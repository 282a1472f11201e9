"""Go-style durations: what parses, what is rejected with which hint, and the human rendering."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rainbowd.core.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("300ms", timedelta(milliseconds=300)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("0", timedelta(0)),
        (0, timedelta(0)),
        (0.0, timedelta(0)),
        ("0s", timedelta(0)),
        ("+5m", timedelta(minutes=5)),
        ("72h", timedelta(hours=72)),
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5)),
        (".5s", timedelta(milliseconds=500)),
        ("1500us", timedelta(microseconds=1500)),
        ("1500µs", timedelta(microseconds=1500)),
        ("1500μs", timedelta(microseconds=1500)),
        ("2000ns", timedelta(microseconds=2)),
        ("1m1m", timedelta(minutes=2)),  # Go adds repeated units up
        (" 10s ", timedelta(seconds=10)),
    ],
)
def test_parses_go_durations(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (30, 'expected a duration like "90s" or "48h", got 30'),
        (1.5, 'expected a duration like "90s" or "48h", got 1.5'),
        ("30", 'expected a duration like "90s" or "48h", got "30" (missing unit)'),
        ("1h30", 'expected a duration like "90s" or "48h", got "1h30" (missing unit)'),
        ("2d", 'unknown unit "d" in duration "2d": durations stop at hours (h), write "48h"'),
        ("1.5d", 'unknown unit "d" in duration "1.5d": durations stop at hours (h), write "36h"'),
        ("1w", 'unknown unit "w" in duration "1w": durations stop at hours (h), write "168h"'),
        ("5min", 'unknown unit "min" in duration "5min" (units: ns, us, ms, s, m, h)'),
        ("-5s", 'must not be negative, got "-5s"'),
        ("1m 30s", 'expected a duration like "90s" or "48h", without spaces, got "1m 30s"'),
        ("", 'expected a duration like "90s" or "48h", got an empty string'),
        ("s", 'expected a duration like "90s" or "48h", got "s"'),
        (".s", 'expected a duration like "90s" or "48h", got ".s"'),
        (True, 'expected a duration like "90s" or "48h", got true'),
        (None, 'expected a duration like "90s" or "48h", got null'),
        (["1s"], 'expected a duration like "90s" or "48h", got a list'),
        ("2562048h", 'duration "2562048h" is too large'),
    ],
)
def test_rejects_with_a_hint(value: object, message: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=3), "72h"),
        (timedelta(minutes=1, seconds=0.5), "1m0.5s"),
        (timedelta(hours=1, seconds=5), "1h5s"),
        (timedelta(milliseconds=300), "300ms"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(microseconds=7), "7us"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_formats_compactly(td: timedelta, text: str) -> None:
    assert format_duration(td) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100_000)))
def test_format_then_parse_is_identity(td: timedelta) -> None:
    assert parse_duration(format_duration(td)) == td


@given(
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
)
def test_components_add_up(hours: int, minutes: int, seconds: int) -> None:
    text = f"{hours}h{minutes}m{seconds}s"
    assert parse_duration(text) == timedelta(hours=hours, minutes=minutes, seconds=seconds)
