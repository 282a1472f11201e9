"""Times in annotations and objects are RFC 3339 date-times; nothing looser reads as a time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rainbowd.core.objects import format_time, parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T10:00:00Z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21t10:00:00z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21 10:00:00Z", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T12:00:00+02:00", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("2026-11-21T10:00:00.25Z", datetime(2026, 11, 21, 10, 0, 0, 250000, tzinfo=UTC)),
        (" 2026-11-21T10:00:00Z ", datetime(2026, 11, 21, 10, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_rfc3339_reads_as_utc(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01000-0000",  # any separator and a basic offset: Python's reader takes it
        "2026-11-21T10:00Z",  # no seconds
        "20261121T100000Z",  # basic format
        "2026-11-21T10:00:00",  # no offset
        "2026-11-21",
        "2026-11-21T10:00:00+0200",
        "2026-11-21T10:00:00Z 2026-11-21T11:00:00Z",
        "0001-01-01T00:00:00+05:00",  # before year 1 in UTC
        "",
        "yesterday",
    ],
)
def test_anything_looser_is_an_error_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_time(text)
    assert repr(text) in str(raised.value)


def test_what_rainbowd_writes_reads_back() -> None:
    at = datetime(2026, 11, 21, 10, 0, 7, tzinfo=UTC)
    assert parse_time(format_time(at)) == at
